"""Locks on Redis servers: one server, or a quorum of several placed by the ring.

Keys (``prefix`` defaults to ``"ringkit:lock:"``; ``{name}`` is the Redis Cluster hash tag, so
one lock's keys share a slot):

- ``<prefix>{<name>}``          the lease: the holder's random id, with a PX expiry;
- ``<prefix>{<name>}:fence``    the fencing counter of the name (never expires);
- ``<prefix>__epoch__``         per server: when ringkit first saw it empty (restart detection).

One server: an acquire is one script (SET NX PX, then the fencing counter moves to
max(counter + 1, the server's clock in microseconds), so a server restarted without persistence
does not hand out a token it handed out before, unless its clock was set back); a release is one
compare-and-delete script that also publishes a wake-up to waiters.

Several servers (``replicas`` > 1 for the name): the lease is asked of every replica in
parallel and is held when a majority granted it with validity (ttl - elapsed - drift, drift =
1% of ttl + 2 ms) left. The token is the largest counter read from every server that answered,
plus one (and at least the largest server clock), written back to a majority with a write that
never lowers a counter while the lease is still held there; only then does acquire return.
Since any two majorities meet, the next holder reads a counter at least as high, so tokens
strictly increase from holder to holder, even after attempts that only a minority granted.

A server found without its epoch marker (new, or restarted empty) grants nothing for one ttl of
the lock asked for (``restart_delay`` overrides): a lease it had granted before the restart has
run out by then (Redlock's delayed restart). :meth:`RedisBackend.initialize` marks new servers
as fresh, to skip that wait once when they are first deployed.

Persistence: the guarantees assume a server either keeps its data across restarts (AOF with
fsync, or the restart detection above for one that comes back empty) and that server clocks
do not jump backwards by more than the tokens have advanced. Changing the server list moves
lock names to other servers: a lock held under the old list is invisible to clients using the
new one, so change the list only when no lock is held, or wait one ttl with locking paused.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any

from ringkit._redisio import Batch, client_from_url, script_sha
from ringkit.errors import LockQuorumError
from ringkit.lock.base import Grant, check_name, check_ttl, drift
from ringkit.ring import HashRing

__all__ = ["RedisBackend", "AsyncRedisBackend"]

log = logging.getLogger("ringkit.lock")

# KEYS: lease, fence, epoch marker. ARGV: holder, ttl_ms, restart_delay_ms, check_epoch (0/1),
# assign_token (0/1). Reply: {granted, token (assigned) or fence counter, server time in us,
# restarting (0/1)}.
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local fence = tonumber(redis.call('GET', KEYS[2]) or '0')
if ARGV[4] == '1' then
  local epoch = redis.call('GET', KEYS[3])
  if not epoch then
    redis.call('SET', KEYS[3], string.format('%.0f', now))
    return {0, fence, now, 1}
  end
  if now < tonumber(epoch) + tonumber(ARGV[3]) * 1000 then
    return {0, fence, now, 1}
  end
end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {0, fence, now, 0}
end
if ARGV[5] == '1' then
  local token = math.max(fence + 1, now)
  redis.call('SET', KEYS[2], string.format('%.0f', token))
  return {1, token, now, 0}
end
return {1, fence, now, 0}
"""

# KEYS: lease, fence. ARGV: holder, token. Raises the counter to token, never lowers it, and only
# while holder still holds the lease. Reply: 1, or 0 when the lease is gone.
FENCE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local fence = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[2]) > fence then redis.call('SET', KEYS[2], ARGV[2]) end
return 1
"""

# KEYS: lease. ARGV: holder, channel. Compare and delete, then wake the waiters.
RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], '1')
return 1
"""

# KEYS: lease. ARGV: holder, ttl_ms. Sets (not adds) the remaining time.
EXTEND = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""


_SOURCES = {"acquire": ACQUIRE, "fence": FENCE, "release": RELEASE, "extend": EXTEND}
_SHA = {name: script_sha(source) for name, source in _SOURCES.items()}
SCRIPTS = {_SHA[name]: source for name, source in _SOURCES.items()}


def _eval(sha: str, keys: Sequence[str], args: Sequence[Any]) -> tuple[Any, ...]:
    return ("EVALSHA", sha, len(keys), *keys, *args)


def _server_name(client: Any) -> str:
    kwargs = getattr(client, "connection_pool", None)
    kwargs = getattr(kwargs, "connection_kwargs", {}) if kwargs is not None else {}
    if "path" in kwargs:
        return f"unix:{kwargs['path']}/{kwargs.get('db', 0)}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"



class _Server:
    """One Redis server: its client, its name, and the shas of the lock scripts."""

    def __init__(self, client: Any, name: str, *, owned: bool = False) -> None:
        self.client = client
        self.name = name
        self.owned = owned     # made here from a URL: close() closes it
        # Scripts are sent by sha (EVALSHA); Batch loads them where the server lacks them.
        self.acquire = _SHA["acquire"]
        self.fence = _SHA["fence"]
        self.release = _SHA["release"]
        self.extend = _SHA["extend"]

    def __repr__(self) -> str:
        return f"<redis {self.name}>"


def _as_list(servers: object) -> list[Any]:
    if isinstance(servers, (str, bytes)) or not isinstance(servers, Iterable):
        return [servers]
    return list(servers)


class _Placement:
    """Server list, names, ring placement and keys: what the sync and async backends share."""

    def __init__(self, servers: object, replicas: int | None, prefix: str,
                 restart_delay: float | None, cluster: bool,
                 make_client: Callable[[str], Any]) -> None:
        items = _as_list(servers)
        if not items:
            raise ValueError("servers must name at least one Redis server (client or URL)")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        if restart_delay is not None:
            if isinstance(restart_delay, bool) or not isinstance(restart_delay, (int, float)) \
                    or not math.isfinite(restart_delay) or restart_delay < 0:
                raise ValueError(f"restart_delay must be seconds >= 0 or None, got "
                                 f"{restart_delay!r}")
        self.servers: list[_Server] = []
        for item in items:
            owned = isinstance(item, str)
            if owned:
                client = make_client(item)
            elif hasattr(item, "execute_command"):
                client = item
            else:
                raise TypeError("servers must be redis clients or redis:// URLs, got "
                                f"{type(item).__name__}")
            name = _server_name(client)
            if any(s.name == name for s in self.servers):
                raise ValueError(f"servers: {name} is listed twice")
            self.servers.append(_Server(client, name, owned=owned))
        n = len(self.servers)
        if replicas is None:
            replicas = n if n <= 5 else 5
        if isinstance(replicas, bool) or not isinstance(replicas, int):
            raise TypeError(f"replicas must be an int, got {type(replicas).__name__}")
        if not 1 <= replicas <= n:
            raise ValueError(f"replicas must be between 1 and the number of servers ({n}), "
                             f"got {replicas}")
        self.replicas = replicas
        self.prefix = prefix
        self.restart_delay = restart_delay
        self.cluster = cluster
        self.by_name = {s.name: s for s in self.servers}
        self.ring = HashRing([s.name for s in self.servers])
        self.epoch_key = f"{prefix}__epoch__"

    def targets(self, name: str) -> list[_Server]:
        if self.replicas == len(self.servers):
            return self.servers
        return [self.by_name[n] for n in self.ring.preference_list(name, self.replicas)]

    def keys(self, name: str) -> tuple[str, str]:
        lease = f"{self.prefix}{{{name}}}"
        return lease, lease + ":fence"

    def channel(self, name: str) -> str:
        return f"{self.prefix}{{{name}}}:released"

    def acquire_args(self, name: str, holder: str, ttl: float,
                     single: bool) -> tuple[list[str], list[object]]:
        lease, fence = self.keys(name)
        delay = ttl if self.restart_delay is None else self.restart_delay
        # In Cluster mode the epoch key lives in another slot: restart detection is off.
        keys = [lease, fence, lease if self.cluster else self.epoch_key]
        args: list[object] = [holder, max(1, math.ceil(ttl * 1000)), math.ceil(delay * 1000),
                              0 if self.cluster else 1, 1 if single else 0]
        return keys, args


def _quorum_error(action: str, name: str, failed: dict[str, BaseException],
                  targets: Sequence[_Server]) -> LockQuorumError:
    detail = "; ".join(f"{server}: {type(exc).__name__}: {exc}" for server, exc in failed.items())
    majority = len(targets) // 2 + 1
    error = LockQuorumError(
        f"lock {name!r}: {action} reached {len(targets) - len(failed)} of {len(targets)} "
        f"servers, needs {majority} ({detail})",
        lock_name=name, failed=dict(failed))
    first = next(iter(failed.values()), None)
    if first is not None:
        error.__cause__ = first
    return error


class _Outcome:
    """Replies of one round of calls: per server, a reply or the exception it failed with."""

    def __init__(self, targets: Sequence[_Server]) -> None:
        self.targets = targets
        self.replies: dict[str, Any] = {}
        self.failed: dict[str, BaseException] = {}

    @property
    def majority(self) -> int:
        return len(self.targets) // 2 + 1


def _assess_acquire(out: _Outcome) -> tuple[list[str], int | None, int]:
    """(servers that granted, token for one server or None, token candidate for a quorum)."""
    granted = [s for s, r in out.replies.items() if int(r[0]) == 1]
    restarting = [s for s, r in out.replies.items() if int(r[3]) == 1]
    if restarting:
        log.warning("ringkit lock: %s came back empty (or is new); it grants no lock until its "
                    "quiet period ends", ", ".join(restarting))
    counters = [int(r[1]) for r in out.replies.values()]
    clocks = [int(out.replies[s][2]) for s in granted]
    candidate = max(max(counters, default=0) + 1, max(clocks, default=0))
    single = int(out.replies[granted[0]][1]) if len(out.targets) == 1 and granted else None
    return granted, single, candidate


# A round: the servers to ask, and the command to send each of them.
Round = tuple[Sequence[_Server], Callable[[_Server], tuple[Any, ...]]]
Steps = Generator[Round, _Outcome, Any]


def _release_round(p: _Placement, name: str, holder: str, servers: Iterable[str]) -> Round:
    lease, _ = p.keys(name)
    channel = p.channel(name)
    return ([p.by_name[s] for s in servers],
            lambda s: _eval(s.release, [lease], [holder, channel]))


def _acquire_steps(p: _Placement, clock: Callable[[], float], name: str, holder: str,
                   ttl: float) -> Steps:
    """The acquire protocol, without I/O: yields rounds of calls, receives their outcomes."""
    targets = p.targets(name)
    single = len(targets) == 1
    keys, args = p.acquire_args(name, holder, ttl, single)
    start = clock()
    out = yield targets, lambda s: _eval(s.acquire, keys, args)
    granted, token, candidate = _assess_acquire(out) if out.replies else ([], None, 0)
    if len(out.replies) < out.majority:
        if granted:
            yield _release_round(p, name, holder, granted)
        raise _quorum_error("acquire", name, out.failed, targets)
    if len(granted) < out.majority:
        if granted:
            yield _release_round(p, name, holder, granted)
        return None
    if token is None:
        lease, fence = p.keys(name)
        written = yield ([p.by_name[s] for s in granted],
                         lambda s: _eval(s.fence, [lease, fence], [holder, candidate]))
        if sum(1 for r in written.replies.values() if int(r) == 1) < out.majority:
            yield _release_round(p, name, holder, granted)
            return None
        token = candidate
    validity = ttl - (clock() - start) - drift(ttl)
    if validity <= 0:
        yield _release_round(p, name, holder, granted)
        return None
    return Grant(token, validity)


def _release_steps(p: _Placement, name: str, holder: str) -> Steps:
    targets = p.targets(name)
    out = yield _release_round(p, name, holder, [s.name for s in targets])
    deleted = sum(1 for r in out.replies.values() if int(r) == 1)
    if deleted >= out.majority:
        return True
    if len(out.replies) < out.majority:
        raise _quorum_error("release", name, out.failed, targets)
    # A majority answered. The lease was lost only if a majority says it was not there: a
    # holder granted by a bare majority that then lost a server to a crash still held the lock
    # (nobody else could reach a majority past its lease), and its release is no loss.
    return deleted + len(out.failed) >= out.majority


def _extend_steps(p: _Placement, clock: Callable[[], float], name: str, holder: str,
                  ttl: float) -> Steps:
    targets = p.targets(name)
    lease, _ = p.keys(name)
    start = clock()
    ms = max(1, math.ceil(ttl * 1000))
    out = yield targets, lambda s: _eval(s.extend, [lease], [holder, ms])
    if sum(1 for r in out.replies.values() if int(r) == 1) < out.majority:
        if len(out.replies) < out.majority:
            raise _quorum_error("extend", name, out.failed, targets)
        return None
    validity = ttl - (clock() - start) - drift(ttl)
    return validity if validity > 0 else None


def _owned_steps(p: _Placement, name: str, holder: str) -> Steps:
    targets = p.targets(name)
    lease, _ = p.keys(name)
    out = yield targets, lambda s: ("GET", lease)
    if sum(1 for r in out.replies.values() if r is not None and _text(r) == holder) \
            >= out.majority:
        return True
    if len(out.replies) < out.majority:
        raise _quorum_error("owned", name, out.failed, targets)
    return False


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _BackendBase:
    """What the sync and async Redis lock backends share: arguments, placement, description."""

    _asynchronous = False

    def __init__(
        self,
        servers: object,
        *,
        replicas: int | None = None,
        prefix: str = "ringkit:lock:",
        socket_timeout: float = 0.5,
        restart_delay: float | None = None,
        cluster: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        timeout = check_ttl(socket_timeout, "socket_timeout")

        def make_client(url: str) -> Any:
            return client_from_url(url, timeout, asynchronous=self._asynchronous)

        self._placement = _Placement(servers, replicas, prefix, restart_delay, cluster,
                                     make_client)
        self._timeout = timeout
        self._clock = clock

    @property
    def servers(self) -> list[str]:
        """Server names, as errors and events report them."""
        return [s.name for s in self._placement.servers]

    @property
    def replicas(self) -> int:
        """How many servers hold each lock."""
        return self._placement.replicas

    def servers_for(self, name: str) -> list[str]:
        """The servers that hold lock `name`."""
        return [s.name for s in self._placement.targets(check_name(name))]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.servers!r}, replicas={self.replicas})"


class RedisBackend(_BackendBase):
    """Locks on one or several Redis servers, through redis-py.

    ``servers`` is a redis client, a ``redis://`` URL, or a list of them. Each lock name lives
    on ``replicas`` of them, chosen by a :class:`ringkit.HashRing` (default: all servers when
    there are at most 5, else 5), so lock traffic spreads over many servers. With one replica a
    lock is one server's; with more it is held by a majority (see the module docs).

    Clients made from URLs get ``socket_timeout`` (default 0.5 s) on connect and on every call,
    so nothing hangs on a dead or paused server; pass clients configured the same way, and
    without retries (``retry=Retry(NoBackoff(), 0)``): redis-py 6+ clients built with
    ``redis.Redis(host, port)`` retry a refused connection several times with backoff, which
    turns one dead server into seconds per lock call.
    ``prefix`` starts every key; ``cluster=True`` (for Redis Cluster) turns off restart
    detection, whose per-server key would live in another slot.
    """

    def _round(self, targets: Sequence[_Server],
               command: Callable[[_Server], tuple[Any, ...]]) -> _Outcome:
        """Send each server its command, then read the replies: the servers work in parallel
        without a thread per server; each read is bounded by the client's socket timeout."""
        out = _Outcome(targets)
        sent = {}
        for server in targets:
            try:
                sent[server.name] = Batch(server.client, [command(server)], SCRIPTS).send()
            except Exception as exc:  # noqa: BLE001 - every failure counts against quorum
                out.failed[server.name] = exc
        for name, batch in sent.items():
            try:
                reply = batch.replies()[0]
            except Exception as exc:  # noqa: BLE001
                out.failed[name] = exc
                continue
            if isinstance(reply, Exception):
                out.failed[name] = reply
            else:
                out.replies[name] = reply
        return out

    def _drive(self, steps: Steps) -> Any:
        try:
            round_ = next(steps)
            while True:
                round_ = steps.send(self._round(*round_))
        except StopIteration as done:
            return done.value

    def acquire(self, name: str, holder: str, ttl: float) -> Grant | None:
        grant: Grant | None = self._drive(_acquire_steps(
            self._placement, self._clock, check_name(name), holder, check_ttl(ttl)))
        return grant

    def release(self, name: str, holder: str) -> bool:
        return bool(self._drive(_release_steps(self._placement, check_name(name), holder)))

    def extend(self, name: str, holder: str, ttl: float) -> float | None:
        validity: float | None = self._drive(_extend_steps(
            self._placement, self._clock, check_name(name), holder, check_ttl(ttl)))
        return validity

    def owned(self, name: str, holder: str) -> bool:
        return bool(self._drive(_owned_steps(self._placement, check_name(name), holder)))

    def waiter(self, name: str) -> _RedisWaiter:
        return _RedisWaiter(self._placement.targets(check_name(name)),
                            self._placement.channel(name))

    def initialize(self) -> list[str]:
        """Mark servers that have no epoch marker as fresh, so they grant locks at once.

        Only for servers that are new: on a server that restarted empty this would let it
        grant a lock that a live holder still has. Returns the servers it marked.
        """
        marked = []
        for server in self._placement.servers:
            if server.client.set(self._placement.epoch_key, "0", nx=True):
                marked.append(server.name)
        return marked

    def close(self) -> None:
        """Close the connections of clients this backend made from URLs."""
        for server in self._placement.servers:
            if server.owned:
                server.client.close()


class _RedisWaiter:
    """Waits for a release published on the lock's channel; falls back to a plain timed wait
    when no server can be subscribed to."""

    def __init__(self, targets: Sequence[_Server], channel: str) -> None:
        self._pubsub = None
        for server in targets:
            try:
                pubsub = server.client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(channel)
                self._pubsub = pubsub
                break
            except Exception:  # noqa: BLE001 - try the next replica
                continue
        self._sleeper = threading.Event()

    def wait(self, timeout: float) -> None:
        timeout = max(0.0, timeout)
        if self._pubsub is not None:
            try:
                deadline = time.monotonic() + timeout
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    message = self._pubsub.get_message(timeout=left)
                    if message is not None and message.get("type") == "message":
                        return
                    if message is None:
                        return
            except Exception:  # noqa: BLE001 - a dead subscription degrades to polling
                self._pubsub = None
        self._sleeper.wait(timeout)

    def close(self) -> None:
        if self._pubsub is not None:
            try:
                self._pubsub.close()
            except Exception:  # noqa: BLE001
                pass
            self._pubsub = None


class AsyncRedisBackend(_BackendBase):
    """:class:`RedisBackend` for asyncio programs, on ``redis.asyncio`` clients or URLs."""

    _asynchronous = True

    async def _round(self, targets: Sequence[_Server],
                     command: Callable[[_Server], tuple[Any, ...]]) -> _Outcome:
        out = _Outcome(targets)

        async def one(server: _Server) -> Any:
            from redis.exceptions import NoScriptError

            args = command(server)
            try:
                return await asyncio.wait_for(server.client.execute_command(*args),
                                              self._timeout * 4 + 1.0)
            except NoScriptError:
                for source in SCRIPTS.values():
                    await server.client.script_load(source)
                return await asyncio.wait_for(server.client.execute_command(*args),
                                              self._timeout * 4 + 1.0)

        results = await asyncio.gather(*(one(s) for s in targets), return_exceptions=True)
        for server, result in zip(targets, results):
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                out.failed[server.name] = result
            else:
                out.replies[server.name] = result
        return out

    async def _drive(self, steps: Steps) -> Any:
        try:
            round_ = next(steps)
            while True:
                round_ = steps.send(await self._round(*round_))
        except StopIteration as done:
            return done.value

    async def acquire(self, name: str, holder: str, ttl: float) -> Grant | None:
        grant: Grant | None = await self._drive(_acquire_steps(
            self._placement, self._clock, check_name(name), holder, check_ttl(ttl)))
        return grant

    async def release(self, name: str, holder: str) -> bool:
        return bool(await self._drive(_release_steps(self._placement, check_name(name), holder)))

    async def extend(self, name: str, holder: str, ttl: float) -> float | None:
        validity: float | None = await self._drive(_extend_steps(
            self._placement, self._clock, check_name(name), holder, check_ttl(ttl)))
        return validity

    async def owned(self, name: str, holder: str) -> bool:
        return bool(await self._drive(_owned_steps(self._placement, check_name(name), holder)))

    async def waiter(self, name: str) -> _AsyncRedisWaiter:
        waiter = _AsyncRedisWaiter(self._placement.channel(name))
        await waiter.subscribe(self._placement.targets(check_name(name)))
        return waiter

    async def initialize(self) -> list[str]:
        marked = []
        for server in self._placement.servers:
            if await server.client.set(self._placement.epoch_key, "0", nx=True):
                marked.append(server.name)
        return marked

    async def aclose(self) -> None:
        """Close the connections of clients this backend made from URLs (in the event loop
        that used them; clients passed in are left open)."""
        for server in self._placement.servers:
            if server.owned:
                await server.client.aclose()



class _AsyncRedisWaiter:
    def __init__(self, channel: str) -> None:
        self._channel = channel
        self._pubsub: Any = None

    async def subscribe(self, targets: Sequence[_Server]) -> None:
        for server in targets:
            try:
                pubsub = server.client.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(self._channel)
                self._pubsub = pubsub
                return
            except Exception:  # noqa: BLE001 - try the next replica
                continue

    async def wait(self, timeout: float) -> None:
        timeout = max(0.0, timeout)
        if self._pubsub is not None:
            try:
                await self._pubsub.get_message(timeout=timeout)
                return
            except Exception:  # noqa: BLE001 - degrade to polling
                self._pubsub = None
        await asyncio.sleep(timeout)

    async def close(self) -> None:
        if self._pubsub is not None:
            try:
                await self._pubsub.aclose()
            except Exception:  # noqa: BLE001
                pass
            self._pubsub = None
