"""Locks on Redis servers: one server, or a quorum of several placed by the ring.

Keys (``prefix`` defaults to ``"ringkit:lock:"``; ``{name}`` is the Redis Cluster hash tag, so
one lock's keys share a slot):

- ``<prefix>{<name>}``          the lease: the holder's random id (one per attempt), with a PX
  expiry;
- ``<prefix>{<name>}:fence``    the fencing counter of the name (never expires);
- ``<prefix>__epoch__``         per server: ``<since>:<max_ttl_ms>``, when ringkit first saw it
  empty (restart detection) and the max_ttl its clients agreed on.

One server: an acquire is one script (SET NX PX, then the fencing counter moves to
max(counter + 1, the server's clock in microseconds), so a server restarted without persistence
does not hand out a token it handed out before, unless its clock was set back); a release is one
compare-and-delete script that also publishes a wake-up to waiters.

Several servers (``replicas`` > 1 for the name): the lease is asked of every replica at once and
is held when a majority granted it with validity (ttl - elapsed - drift, drift = 1% of ttl +
2 ms) left. The token is the largest counter read from the servers that answered, plus one (and
at least the largest server clock), written back to a majority with a write that never lowers a
counter while the lease is still held there; only then does acquire return. Since any two
majorities meet, the next holder reads a counter at least as high, so tokens strictly increase
from holder to holder, even after attempts that only a minority granted.

Rounds end when their outcome is decided (ringkit._redisio): an acquire returns as soon as a
majority granted, without waiting for a slow server; a grant that comes after its attempt was
decided, or after the caller gave up, is released on the same connection right after it.

Restarts: no lease is longer than ``max_ttl`` (the same for every client of a set of servers:
each server records it, and a client with another value is refused there). A server found
without its epoch marker (new, or restarted empty) grants nothing for ``max_ttl``, by which time
every lease it could have granted before the restart has run out; ``persistent=True`` declares
servers that never lose what they acknowledged (AOF with ``appendfsync always``), which skip
that wait. :meth:`RedisBackend.initialize` marks new servers as fresh once, when first deployed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ringkit._redisio import (
    AsyncCall,
    AsyncLink,
    Call,
    Late,
    Link,
    client_from_url,
    gather,
    gather_async,
    script_sha,
    server_name,
)
from ringkit.errors import LockQuorumError
from ringkit.lock.base import Grant, check_max_ttl, check_name, check_ttl, drift
from ringkit.ring import HashRing

__all__ = ["RedisBackend", "AsyncRedisBackend", "DEFAULT_MAX_TTL"]

log = logging.getLogger("ringkit.lock")

DEFAULT_MAX_TTL = 60.0

# KEYS: lease, fence, epoch marker. ARGV: holder, ttl_ms, max_ttl_ms, check_epoch (0/1),
# assign_token (0/1), persistent (0/1). Reply: {granted, token (assigned) or fence counter,
# server time in us, restarting (0/1)}; an error when the server's max_ttl is another.
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local fence = tonumber(redis.call('GET', KEYS[2]) or '0')
if ARGV[4] == '1' then
  local epoch = redis.call('GET', KEYS[3])
  if not epoch then
    if ARGV[6] == '1' then
      redis.call('SET', KEYS[3], '0:' .. ARGV[3])
    else
      redis.call('SET', KEYS[3], string.format('%.0f', now) .. ':' .. ARGV[3])
      return {0, fence, now, 1}
    end
  else
    local since, limit = string.match(epoch, '^(%d+):(%d+)$')
    if not since then
      since = epoch
      limit = ARGV[3]
    end
    if limit ~= ARGV[3] then
      return redis.error_reply('RINGKIT max_ttl mismatch: this server was set up with max_ttl=' ..
        limit .. ' ms, the client has ' .. ARGV[3] .. ' ms')
    end
    if now < tonumber(since) + tonumber(limit) * 1000 then
      return {0, fence, now, 1}
    end
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


class _Server:
    """One Redis server: its client, its name, and ringkit's connections to it."""

    __slots__ = ("client", "name", "owned", "link", "run_id")

    def __init__(self, client: Any, name: str, link: Any, *, owned: bool) -> None:
        self.client = client
        self.name = name
        self.owned = owned     # made here from a URL: close() closes it
        self.link = link
        self.run_id: str | None = None

    def __repr__(self) -> str:
        return f"<redis {self.name}>"


def _as_list(servers: object) -> list[Any]:
    if isinstance(servers, (str, bytes)) or not isinstance(servers, Iterable):
        return [servers]
    return list(servers)


class _Placement:
    """Server list, names, ring placement, keys and settings: what the sync and async backends
    share."""

    def __init__(self, servers: object, replicas: int | None, prefix: str, max_ttl: float,
                 persistent: bool, cluster: bool, timeout: float,
                 make_client: Callable[[str], Any], make_link: Callable[[Any, str], Any]) -> None:
        items = _as_list(servers)
        if not items:
            raise ValueError("servers must name at least one Redis server (client or URL)")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        check_name(prefix or "x", "prefix")
        self.servers: list[_Server] = []
        for item in items:
            owned = isinstance(item, str)
            if not owned and not hasattr(item, "execute_command"):
                raise TypeError("servers must be redis clients or redis:// URLs, got "
                                f"{type(item).__name__}")
            client = make_client(item) if owned else item
            name = server_name(client)
            if any(s.name == name for s in self.servers):
                raise ValueError(f"servers: {name} is listed twice")
            self.servers.append(_Server(client, name, make_link(client, name), owned=owned))
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
        self.max_ttl = max_ttl
        self.max_ttl_ms = max(1, math.ceil(max_ttl * 1000))
        self.persistent = persistent
        self.cluster = cluster
        self.timeout = timeout
        self.by_name = {s.name: s for s in self.servers}
        self.ring = HashRing([s.name for s in self.servers])
        self.epoch_key = f"{prefix}__epoch__"
        self.duplicate: ValueError | None = None
        self.identified_all = len(self.servers) == 1    # one server cannot be listed twice
        self._identity_guard = threading.Lock()
        # Leases this process holds, (name, holder) -> when they run out (monotonic): a grant
        # that comes late for one of them is kept (the release reaches it); any other late
        # grant is released at once.
        self._holding: dict[tuple[str, str], float] = {}
        self._warned: dict[str, float] = {}
        self._holding_guard = threading.Lock()

    def warn_restarting(self, names: Sequence[str]) -> None:
        """Log, once per max_ttl per server, that a server grants nothing while it is quiet."""
        now = time.monotonic()
        fresh = [n for n in names if self._warned.get(n, -math.inf) + self.max_ttl <= now]
        if fresh:
            for name in fresh:
                self._warned[name] = now
            log.warning("ringkit lock: %s came back empty (or is new and not initialized); it "
                        "grants no lock until max_ttl (%g s) has passed", ", ".join(fresh),
                        self.max_ttl)

    def hold(self, name: str, holder: str, ttl: float) -> None:
        now = time.monotonic()
        with self._holding_guard:
            if len(self._holding) > 10_000:
                self._holding = {k: t for k, t in self._holding.items() if t > now}
            self._holding[(name, holder)] = now + ttl

    def unhold(self, name: str, holder: str) -> None:
        with self._holding_guard:
            self._holding.pop((name, holder), None)

    def holds(self, name: str, holder: str) -> bool:
        with self._holding_guard:
            until = self._holding.get((name, holder))
        return until is not None and until > time.monotonic()

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
        # In Cluster mode the epoch key lives in another slot: restart detection is off.
        keys = [lease, fence, lease if self.cluster else self.epoch_key]
        args: list[object] = [holder, max(1, math.ceil(ttl * 1000)), self.max_ttl_ms,
                              0 if self.cluster else 1, 1 if single else 0,
                              1 if self.persistent else 0]
        return keys, args

    def check_ttl(self, ttl: object) -> float:
        return check_ttl(ttl, limit=self.max_ttl)

    # -- server identity --------------------------------------------------------------------------

    def unidentified(self, targets: Sequence[_Server]) -> list[_Server]:
        if self.duplicate is not None:
            raise self.duplicate
        if self.identified_all:
            return []
        missing = [s for s in targets if s.run_id is None]
        if not missing and all(s.run_id is not None for s in self.servers):
            self.identified_all = True
        return missing

    def identified(self, out: _Outcome) -> None:
        """Record the run_ids that answered; refuse two names for one server process."""
        with self._identity_guard:
            for name, reply in out.replies.items():
                run_id = _run_id(reply)
                if run_id is None:
                    continue
                same = [s.name for s in self.servers if s.run_id == run_id and s.name != name]
                self.by_name[name].run_id = run_id
                if same and self.duplicate is None:
                    self.duplicate = ValueError(
                        f"servers: {same[0]} and {name} are the same Redis server (run_id "
                        f"{run_id}): one server counted twice would make a minority look like "
                        f"a majority")
            if self.duplicate is not None:
                raise self.duplicate


def _run_id(reply: Any) -> str | None:
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
    for line in text.splitlines():
        if line.startswith("run_id:"):
            return line[7:].strip()
    return None


# -- rounds ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class Round:
    """The servers to ask, the command to send each, and when the round is decided: as soon
    as ``need`` replies satisfy ``ok``, or enough refused or failed that none can. A reply that
    comes after the round was decided goes to ``late`` (if given), up to ``late_for`` seconds
    after the round began; ``limit`` shortens the round's deadline below the socket timeout."""

    servers: Sequence[_Server]
    command: Callable[[_Server], tuple[Any, ...]]
    need: int
    ok: Callable[[Any], bool]
    late: Callable[[_Server], Late] | None = None
    late_for: float | None = None
    limit: float | None = None
    every: bool = False     # ask every server, even one a quorum round would skip


class _Outcome:
    """Replies of one round: per server, a reply or the exception it failed with (a server that
    had not answered when the round was decided counts as failed)."""

    def __init__(self, targets: Sequence[_Server]) -> None:
        self.targets = targets
        self.replies: dict[str, Any] = {}
        self.failed: dict[str, BaseException] = {}
        self.late: list[str] = []       # (also in failed) had not answered when decided

    @property
    def majority(self) -> int:
        return len(self.targets) // 2 + 1


def _decider(round_: Round, calls: Sequence[Any]) -> Callable[[], bool]:
    need, ok = round_.need, round_.ok

    def decided() -> bool:
        good = answered = pending = 0
        for call in calls:
            if call.error is not None:
                continue
            if not call.ok:
                pending += 1
                continue
            reply = call.replies[0]
            if isinstance(reply, Exception):
                continue
            answered += 1
            if ok(reply):
                good += 1
        if good >= need:
            return True
        # Success is out of reach; what is left to learn is whether a majority answered (a
        # refusal) or cannot (a quorum error).
        return good + pending < need and (answered >= need or answered + pending < need)

    return decided


def _outcome(round_: Round, calls: Sequence[Any]) -> _Outcome:
    out = _Outcome(round_.servers)
    for server, call in zip(round_.servers, calls):
        if call.state == "ok":
            reply = call.replies[0]
            if isinstance(reply, Exception):
                out.failed[server.name] = reply
            else:
                out.replies[server.name] = reply
        elif call.state == "late":
            out.late.append(server.name)
            out.failed[server.name] = TimeoutError(
                f"{server.name}: had not answered when the round was decided")
        else:
            assert call.error is not None
            out.failed[server.name] = call.error
    return out


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


def _granted(reply: Any) -> bool:
    return int(reply[0]) == 1


def _one(reply: Any) -> bool:
    return int(reply) == 1


def _anything(reply: Any) -> bool:
    return True


Steps = Generator[Round, _Outcome, Any]


def _release_command(p: _Placement, name: str, holder: str, server: _Server) -> tuple[Any, ...]:
    lease, _ = p.keys(name)
    return _eval(_SHA["release"], [lease], [holder, p.channel(name)])


def _release_round(p: _Placement, name: str, holder: str, servers: Iterable[str],
                   *, need: int) -> Round:
    chosen = [p.by_name[s] for s in servers]
    return Round(chosen, lambda s: _release_command(p, name, holder, s), need=need, ok=_one)


def _late_grant(p: _Placement, name: str, holder: str) -> Callable[[_Server], Late]:
    """A grant that comes after its attempt was decided is given back at once, on the same
    connection (so the release cannot overtake it), unless the attempt succeeded and still
    holds the lease (then its release reaches this grant too). Each attempt has its own holder
    id, so this never touches a later attempt's lease."""

    def for_server(server: _Server) -> Late:
        def late(replies: list[Any]) -> list[tuple[Any, ...]] | None:
            reply = replies[0]
            if isinstance(reply, Exception) or not _granted(reply) or p.holds(name, holder):
                return None
            log.debug("ringkit lock %r: releasing a late grant of %s", name, server.name)
            return [_release_command(p, name, holder, server)]
        return late

    return for_server


def _identify_steps(p: _Placement, servers: Sequence[_Server]) -> Steps:
    out = yield Round(servers, lambda s: ("INFO", "server"), need=len(servers), ok=_anything,
                      every=True)
    p.identified(out)


def _acquire_steps(p: _Placement, clock: Callable[[], float], name: str, holder: str,
                   ttl: float) -> Steps:
    """The acquire protocol, without I/O: yields rounds, receives their outcomes.

    The attempt counts as holding from its start: a grant that comes after the first round was
    decided is kept (and written the token, and released with the lease); once the attempt
    fails, every grant it may have, in time or late, is released."""
    targets = p.targets(name)
    if not p.identified_all:
        unknown = p.unidentified(targets)
        if unknown:
            yield from _identify_steps(p, unknown)
    elif p.duplicate is not None:
        raise p.duplicate
    majority = len(targets) // 2 + 1
    single = len(targets) == 1
    keys, args = p.acquire_args(name, holder, ttl, single)
    start = clock()
    if not single:          # one server: no round is decided before its only reply
        p.hold(name, holder, ttl)
    try:
        out = yield Round(targets, lambda s: _eval(_SHA["acquire"], keys, args), need=majority,
                          ok=_granted, late=_late_grant(p, name, holder), late_for=ttl,
                          limit=max(0.001, ttl - drift(ttl)))
    except BaseException:
        p.unhold(name, holder)
        raise
    granted = [s for s, r in out.replies.items() if _granted(r)]
    restarting = [s for s, r in out.replies.items() if int(r[3]) == 1]
    if restarting:
        p.warn_restarting(restarting)
    # Every server that may hold a grant of this attempt: those that granted in time, and
    # those that had not answered (their grant may come, or have come, late).
    holding = granted + out.late

    def give_back() -> Round:
        p.unhold(name, holder)      # first: a late grant seen from now on is released
        return _release_round(p, name, holder, holding, need=len(granted))

    if len(granted) < majority:
        p.unhold(name, holder)
        if holding:
            yield give_back()
        if len(out.replies) < majority:
            raise _quorum_error("acquire", name, out.failed, targets)
        return None
    if single:
        token = int(out.replies[granted[0]][1])
    else:
        counters = [int(r[1]) for r in out.replies.values()]
        clocks = [int(out.replies[s][2]) for s in granted]
        token = max(max(counters) + 1, max(clocks))
        lease, fence = p.keys(name)
        written = yield Round([p.by_name[s] for s in holding],
                              lambda s: _eval(_SHA["fence"], [lease, fence], [holder, token]),
                              need=majority, ok=_one)
        if sum(1 for r in written.replies.values() if _one(r)) < majority:
            yield give_back()
            return None
    validity = ttl - (clock() - start) - drift(ttl)
    if validity <= 0:
        yield give_back()
        return None
    if single:
        p.hold(name, holder, ttl)
    return Grant(token, validity)


def _release_steps(p: _Placement, name: str, holder: str) -> Steps:
    p.unhold(name, holder)
    targets = p.targets(name)
    majority = len(targets) // 2 + 1
    out = yield _release_round(p, name, holder, [s.name for s in targets], need=majority)
    deleted = sum(1 for r in out.replies.values() if _one(r))
    if deleted >= majority:
        return True
    if len(out.replies) < majority:
        raise _quorum_error("release", name, out.failed, targets)
    # A majority answered. The lease was lost only if a majority says it was not there: a
    # holder granted by a bare majority that then lost a server to a crash still held the lock
    # (nobody else could reach a majority past its lease), and its release is no loss.
    return deleted + len(out.failed) >= majority


def _extend_steps(p: _Placement, clock: Callable[[], float], name: str, holder: str,
                  ttl: float) -> Steps:
    targets = p.targets(name)
    majority = len(targets) // 2 + 1
    lease, _ = p.keys(name)
    start = clock()
    ms = max(1, math.ceil(ttl * 1000))
    out = yield Round(targets, lambda s: _eval(_SHA["extend"], [lease], [holder, ms]),
                      need=majority, ok=_one, limit=max(0.001, ttl - drift(ttl)))
    if sum(1 for r in out.replies.values() if _one(r)) < majority:
        if len(out.replies) < majority:
            raise _quorum_error("extend", name, out.failed, targets)
        return None
    validity = ttl - (clock() - start) - drift(ttl)
    if validity <= 0:
        return None
    p.hold(name, holder, ttl)
    return validity


def _owned_steps(p: _Placement, name: str, holder: str) -> Steps:
    targets = p.targets(name)
    majority = len(targets) // 2 + 1
    lease, _ = p.keys(name)

    def mine(reply: Any) -> bool:
        return reply is not None and _text(reply) == holder

    out = yield Round(targets, lambda s: ("GET", lease), need=majority, ok=mine)
    if sum(1 for r in out.replies.values() if mine(r)) >= majority:
        return True
    if len(out.replies) < majority:
        raise _quorum_error("owned", name, out.failed, targets)
    return False


def _initialize_steps(p: _Placement) -> Steps:
    servers = p.servers
    unknown = p.unidentified(servers)
    if unknown:
        yield from _identify_steps(p, unknown)
    marker = f"0:{p.max_ttl_ms}"
    out = yield Round(servers, lambda s: ("SET", p.epoch_key, marker, "NX"),
                      need=len(servers), ok=_anything, every=True)
    if out.failed:
        detail = "; ".join(f"{n}: {type(e).__name__}: {e}" for n, e in out.failed.items())
        raise LockQuorumError(f"initialize: {len(out.failed)} servers did not answer ({detail})",
                              failed=dict(out.failed))
    return [s.name for s in servers if out.replies.get(s.name) is not None]


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
        max_ttl: float = DEFAULT_MAX_TTL,
        persistent: bool = False,
        socket_timeout: float = 0.5,
        cluster: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        timeout = check_ttl(socket_timeout, "socket_timeout")
        if not isinstance(persistent, bool):
            raise TypeError(f"persistent must be a bool, got {type(persistent).__name__}")
        if not isinstance(cluster, bool):
            raise TypeError(f"cluster must be a bool, got {type(cluster).__name__}")
        if not callable(clock):
            raise TypeError("clock must be a callable returning seconds")
        limit = check_max_ttl(max_ttl)
        asynchronous = self._asynchronous

        def make_client(url: str) -> Any:
            return client_from_url(url, timeout, asynchronous=asynchronous)

        def make_link(client: Any, name: str) -> Any:
            return (AsyncLink if asynchronous else Link)(client, timeout, name)

        self._placement = _Placement(servers, replicas, prefix, limit, persistent, cluster,
                                     timeout, make_client, make_link)
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

    @property
    def max_ttl(self) -> float:
        """The longest lease any client of these servers may hold, in seconds."""
        return self._placement.max_ttl

    @property
    def persistent(self) -> bool:
        """Whether the servers are declared to keep what they acknowledged across restarts."""
        return self._placement.persistent

    def servers_for(self, name: str) -> list[str]:
        """The servers that hold lock `name`."""
        return [s.name for s in self._placement.targets(check_name(name))]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.servers!r}, replicas={self.replicas}, "
                f"max_ttl={self.max_ttl:g})")


class RedisBackend(_BackendBase):
    """Locks on one or several Redis servers, through redis-py.

    ``servers`` is a redis client, a ``redis://`` URL, or a list of them. Each lock name lives
    on ``replicas`` of them, chosen by a :class:`ringkit.HashRing` (default: all servers when
    there are at most 5, else 5), so lock traffic spreads over many servers. With one replica a
    lock is one server's; with more it is held by a majority (see the module docs).

    ``max_ttl`` (default 60 s) is the longest lease any client of these servers may take or
    extend to; it must be the same for all of them (each server records it, and refuses a
    client with another). A server that restarted empty grants nothing for ``max_ttl``, unless
    ``persistent=True`` declares that the servers keep what they acknowledge across restarts
    (AOF with ``appendfsync always``).

    ``socket_timeout`` (default 0.5 s) bounds every round: a server that has not answered by
    then counts as failed, and a round is over as soon as its outcome is decided. ringkit uses
    connections of its own, made with each client's settings (redis-py's connection class,
    credentials, TLS), so a client passed in may be shared with the application. ``prefix``
    starts every key; ``cluster=True`` (for Redis Cluster) turns off restart detection, whose
    per-server key would live in another slot.

    Two entries for one server process (``localhost`` and ``127.0.0.1``, or two databases of
    one server) are refused with a ValueError, told apart by the run_id the servers report.
    """

    def __init__(self, servers: object, **options: Any) -> None:
        super().__init__(servers, **options)
        if len(self._placement.servers) > 1:
            try:
                # Identify the servers that answer now, so that a duplicate is refused at once.
                self._drive(_identify_steps(self._placement, self._placement.servers))
            except ValueError:
                self.close()
                raise

    def _round(self, round_: Round) -> _Outcome:
        calls = []
        for server in round_.servers:
            call = Call(server.link, [round_.command(server)], SCRIPTS,
                        late=round_.late(server) if round_.late is not None else None,
                        late_for=round_.late_for)
            call.limit = round_.limit
            call.must = round_.every
            calls.append(call)
        gather(calls, _decider(round_, calls) if len(calls) > 1 else None)
        return _outcome(round_, calls)

    def _drive(self, steps: Steps) -> Any:
        try:
            round_ = next(steps)
            while True:
                round_ = steps.send(self._round(round_))
        except StopIteration as done:
            return done.value

    def acquire(self, name: str, holder: str, ttl: float) -> Grant | None:
        p = self._placement
        grant: Grant | None = self._drive(_acquire_steps(
            p, self._clock, check_name(name), holder, p.check_ttl(ttl)))
        return grant

    def release(self, name: str, holder: str) -> bool:
        return bool(self._drive(_release_steps(self._placement, check_name(name), holder)))

    def extend(self, name: str, holder: str, ttl: float) -> float | None:
        p = self._placement
        validity: float | None = self._drive(_extend_steps(
            p, self._clock, check_name(name), holder, p.check_ttl(ttl)))
        return validity

    def owned(self, name: str, holder: str) -> bool:
        return bool(self._drive(_owned_steps(self._placement, check_name(name), holder)))

    def waiter(self, name: str) -> _RedisWaiter:
        return _RedisWaiter(self._placement.targets(check_name(name)),
                            self._placement.channel(name))

    def initialize(self) -> list[str]:
        """Mark servers that have no epoch marker as fresh, so they grant locks at once; returns
        the servers it marked. Raises LockQuorumError if a server does not answer.

        Only for servers that are new: on a server that restarted empty this would let it
        grant a lock that a live holder still has.
        """
        for server in self._placement.servers:
            server.link.revive()
        marked: list[str] = self._drive(_initialize_steps(self._placement))
        return marked

    def close(self) -> None:
        """Close every connection this backend opened (ringkit's own connections to every
        server, and the clients it made from URLs). It reconnects if used again."""
        for server in self._placement.servers:
            server.link.close()
            if server.owned:
                server.client.close()

    def __enter__(self) -> RedisBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _RedisWaiter:
    """Waits for a release published on the lock's channel; falls back to a plain timed wait
    when no server can be subscribed to."""

    def __init__(self, targets: Sequence[_Server], channel: str) -> None:
        self._pubsub: Any = None
        for server in sorted(targets, key=lambda s: s.link.skipped):
            if server.link.skipped:
                break        # not a server that just failed: a subscribe there would hang
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
        deadline = time.monotonic() + timeout
        if self._pubsub is not None:
            try:
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    message = self._pubsub.get_message(timeout=left)
                    # None: timed out, or a subscribe confirmation (ignored): wait on.
                    if message is not None and message.get("type") == "message":
                        return
            except Exception:  # noqa: BLE001 - a dead subscription degrades to polling
                self._close_pubsub()
        self._sleeper.wait(max(0.0, deadline - time.monotonic()))

    def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:  # noqa: BLE001
                pass

    def close(self) -> None:
        self._close_pubsub()


class AsyncRedisBackend(_BackendBase):
    """:class:`RedisBackend` for asyncio programs, on ``redis.asyncio`` clients or URLs.

    An acquire runs to its end even when its caller is cancelled (``asyncio.wait_for``): the
    rounds finish shielded from the cancellation, and a lease they were granted is released at
    once. Duplicate servers are detected on first use.
    """

    _asynchronous = True

    def __init__(self, servers: object, **options: Any) -> None:
        super().__init__(servers, **options)
        self._background: set[asyncio.Task[Any]] = set()

    async def _round(self, round_: Round) -> _Outcome:
        calls = []
        for server in round_.servers:
            call = AsyncCall(server.link, [round_.command(server)], SCRIPTS,
                             late=round_.late(server) if round_.late is not None else None,
                             late_for=round_.late_for)
            calls.append(call)
        for call in calls:
            call.limit = round_.limit
            call.must = round_.every
        await gather_async(calls, _decider(round_, calls))
        return _outcome(round_, calls)

    async def _drive(self, steps: Steps) -> Any:
        try:
            round_ = next(steps)
            while True:
                round_ = steps.send(await self._round(round_))
        except StopIteration as done:
            return done.value

    async def acquire(self, name: str, holder: str, ttl: float) -> Grant | None:
        p = self._placement
        steps = _acquire_steps(p, self._clock, check_name(name), holder, p.check_ttl(ttl))
        attempt = asyncio.ensure_future(self._drive(steps))
        try:
            return await asyncio.shield(attempt)
        except asyncio.CancelledError:
            # The caller gave up; the attempt goes on, and gives back what it was granted.
            attempt.add_done_callback(lambda task: self._abandoned(task, name, holder))
            self._keep(attempt)
            raise

    def _abandoned(self, attempt: asyncio.Task[Any], name: str, holder: str) -> None:
        if attempt.cancelled() or attempt.exception() is not None or attempt.result() is None:
            return
        log.debug("ringkit lock %r: releasing the lease of a cancelled acquire", name)
        self._keep(asyncio.ensure_future(self._drive(
            _release_steps(self._placement, name, holder))))

    def _keep(self, task: asyncio.Task[Any]) -> None:
        self._background.add(task)

        def forget(done: asyncio.Task[Any]) -> None:
            self._background.discard(done)
            if not done.cancelled() and done.exception() is not None:
                log.debug("ringkit lock: background round failed: %s", done.exception())

        task.add_done_callback(forget)

    async def release(self, name: str, holder: str) -> bool:
        return bool(await self._drive(_release_steps(self._placement, check_name(name), holder)))

    async def extend(self, name: str, holder: str, ttl: float) -> float | None:
        p = self._placement
        validity: float | None = await self._drive(_extend_steps(
            p, self._clock, check_name(name), holder, p.check_ttl(ttl)))
        return validity

    async def owned(self, name: str, holder: str) -> bool:
        return bool(await self._drive(_owned_steps(self._placement, check_name(name), holder)))

    async def waiter(self, name: str) -> _AsyncRedisWaiter:
        waiter = _AsyncRedisWaiter(self._placement.channel(name))
        await waiter.subscribe(self._placement.targets(check_name(name)))
        return waiter

    async def initialize(self) -> list[str]:
        """See :meth:`RedisBackend.initialize`."""
        marked: list[str] = await self._drive(_initialize_steps(self._placement))
        return marked

    async def aclose(self) -> None:
        """Close every connection this backend opened (in the event loop that used them; clients
        passed in are left open), after the background releases of cancelled acquires."""
        if self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        for server in self._placement.servers:
            await server.link.aclose()
            if server.owned:
                await server.client.aclose()


class _AsyncRedisWaiter:
    def __init__(self, channel: str) -> None:
        self._channel = channel
        self._pubsub: Any = None

    async def subscribe(self, targets: Sequence[_Server]) -> None:
        for server in targets:
            if server.link.skipped:
                continue
            try:
                pubsub = server.client.pubsub(ignore_subscribe_messages=True)
                await asyncio.wait_for(pubsub.subscribe(self._channel),
                                       server.link.timeout)
                self._pubsub = pubsub
                return
            except Exception:  # noqa: BLE001 - try the next replica
                continue

    async def wait(self, timeout: float) -> None:
        timeout = max(0.0, timeout)
        deadline = time.monotonic() + timeout
        if self._pubsub is not None:
            try:
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    message = await self._pubsub.get_message(timeout=left)
                    if message is not None and message.get("type") == "message":
                        return
            except Exception:  # noqa: BLE001 - degrade to polling
                self._pubsub = None
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))

    async def close(self) -> None:
        if self._pubsub is not None:
            try:
                await self._pubsub.aclose()
            except Exception:  # noqa: BLE001
                pass
            self._pubsub = None
