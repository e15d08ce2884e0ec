"""The lock protocol, without I/O: each operation (acquire, release, extend, owned,
initialize) is a generator of rounds that receives their outcomes; RedisBackend and
AsyncRedisBackend drive the same steps over their transports (ringkit._redisio).

A round asks its servers at once and is decided as soon as ``need`` replies say yes, or enough
refused or failed that none can; see :class:`Round`. One server: an acquire is one script (SET NX
PX, then the fencing counter moves to max(counter + 1, the server's clock in microseconds), so a
server restarted without persistence does not hand out a token it handed out before, unless its
clock was set back). Several servers: the lease is held when a majority granted it with validity
left (ttl - elapsed - drift); the token is the largest counter read from the servers that
answered, plus one (and at least the largest server clock), written back to a majority before
acquire returns, so tokens strictly increase from holder to holder. A grant that comes after
its attempt was decided, or after the attempt gave up, is released right after it, on the same
connection.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ringkit._redisio import Late
from ringkit.errors import LockQuorumError
from ringkit.lock.base import Grant, drift
from ringkit.lock.placement import Placement, Server
from ringkit.lock.scripts import SHA, evalsha

__all__ = ["Round", "Outcome", "decider", "outcome", "quorum_error", "acquire_steps",
           "release_steps", "extend_steps", "owned_steps", "identify_steps", "initialize_steps",
           "Steps"]

log = logging.getLogger("ringkit.lock")


@dataclass(slots=True)
class Round:
    """The servers to ask, the command to send each, and when the round is decided: as soon
    as ``need`` replies satisfy ``ok``, or enough refused or failed that none can. A reply that
    comes after the round was decided goes to ``late`` (if given), up to ``late_for`` seconds
    after the round began; ``limit`` shortens the round's deadline below the socket timeout."""

    servers: Sequence[Server]
    command: Callable[[Server], tuple[Any, ...]]
    need: int
    ok: Callable[[Any], bool]
    late: Callable[[Server], Late] | None = None
    late_for: float | None = None
    limit: float | None = None
    every: bool = False     # ask every server, even one a quorum round would skip


class Outcome:
    """Replies of one round: per server, a reply or the exception it failed with (a server that
    had not answered when the round was decided counts as failed)."""

    def __init__(self, targets: Sequence[Server]) -> None:
        self.targets = targets
        self.replies: dict[str, Any] = {}
        self.failed: dict[str, BaseException] = {}
        self.late: list[str] = []       # (also in failed) had not answered when decided

    @property
    def majority(self) -> int:
        return len(self.targets) // 2 + 1


def decider(round_: Round, calls: Sequence[Any]) -> Callable[[], bool]:
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


def outcome(round_: Round, calls: Sequence[Any]) -> Outcome:
    out = Outcome(round_.servers)
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


def quorum_error(action: str, name: str, failed: dict[str, BaseException],
                  targets: Sequence[Server]) -> LockQuorumError:
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


Steps = Generator[Round, Outcome, Any]


def _release_command(p: Placement, name: str, holder: str, server: Server) -> tuple[Any, ...]:
    lease, _ = p.keys(name)
    return evalsha(SHA["release"], [lease], [holder, p.channel(name)])


def _release_round(p: Placement, name: str, holder: str, servers: Iterable[str],
                   *, need: int) -> Round:
    chosen = [p.by_name[s] for s in servers]
    return Round(chosen, lambda s: _release_command(p, name, holder, s), need=need, ok=_one)


def _late_grant(p: Placement, name: str, holder: str) -> Callable[[Server], Late]:
    """A grant that comes after its attempt was decided is given back at once, on the same
    connection (so the release cannot overtake it), unless the attempt succeeded and still
    holds the lease (then its release reaches this grant too). Each attempt has its own holder
    id, so this never touches a later attempt's lease."""

    def for_server(server: Server) -> Late:
        def late(replies: list[Any]) -> list[tuple[Any, ...]] | None:
            reply = replies[0]
            if isinstance(reply, Exception) or not _granted(reply) or p.holds(name, holder):
                return None
            log.debug("ringkit lock %r: releasing a late grant of %s", name, server.name)
            return [_release_command(p, name, holder, server)]
        return late

    return for_server


def identify_steps(p: Placement, servers: Sequence[Server]) -> Steps:
    out = yield Round(servers, lambda s: ("INFO", "server"), need=len(servers), ok=_anything,
                      every=True)
    p.identified(out)


def acquire_steps(p: Placement, clock: Callable[[], float], name: str, holder: str,
                   ttl: float) -> Steps:
    """The acquire protocol, without I/O: yields rounds, receives their outcomes.

    The attempt counts as holding from its start: a grant that comes after the first round was
    decided is kept (and written the token, and released with the lease); once the attempt
    fails, every grant it may have, in time or late, is released."""
    targets = p.targets(name)
    if not p.identified_all:
        unknown = p.unidentified(targets)
        if unknown:
            yield from identify_steps(p, unknown)
    elif p.duplicate is not None:
        raise p.duplicate
    majority = len(targets) // 2 + 1
    single = len(targets) == 1
    keys, args = p.acquire_args(name, holder, ttl, single)
    start = clock()
    if not single:          # one server: no round is decided before its only reply
        p.hold(name, holder, ttl)
    try:
        out = yield Round(targets, lambda s: evalsha(SHA["acquire"], keys, args), need=majority,
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
            raise quorum_error("acquire", name, out.failed, targets)
        return None
    if single:
        token = int(out.replies[granted[0]][1])
    else:
        counters = [int(r[1]) for r in out.replies.values()]
        clocks = [int(out.replies[s][2]) for s in granted]
        token = max(max(counters) + 1, max(clocks))
        lease, fence = p.keys(name)
        written = yield Round([p.by_name[s] for s in holding],
                              lambda s: evalsha(SHA["fence"], [lease, fence], [holder, token]),
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


def release_steps(p: Placement, name: str, holder: str) -> Steps:
    p.unhold(name, holder)
    targets = p.targets(name)
    majority = len(targets) // 2 + 1
    out = yield _release_round(p, name, holder, [s.name for s in targets], need=majority)
    deleted = sum(1 for r in out.replies.values() if _one(r))
    if deleted >= majority:
        return True
    if len(out.replies) < majority:
        raise quorum_error("release", name, out.failed, targets)
    # A majority answered. The lease was lost only if a majority says it was not there: a
    # holder granted by a bare majority that then lost a server to a crash still held the lock
    # (nobody else could reach a majority past its lease), and its release is no loss.
    return deleted + len(out.failed) >= majority


def extend_steps(p: Placement, clock: Callable[[], float], name: str, holder: str,
                  ttl: float) -> Steps:
    targets = p.targets(name)
    majority = len(targets) // 2 + 1
    lease, _ = p.keys(name)
    start = clock()
    ms = max(1, math.ceil(ttl * 1000))
    out = yield Round(targets, lambda s: evalsha(SHA["extend"], [lease], [holder, ms]),
                      need=majority, ok=_one, limit=max(0.001, ttl - drift(ttl)))
    if sum(1 for r in out.replies.values() if _one(r)) < majority:
        if len(out.replies) < majority:
            raise quorum_error("extend", name, out.failed, targets)
        return None
    validity = ttl - (clock() - start) - drift(ttl)
    if validity <= 0:
        return None
    p.hold(name, holder, ttl)
    return validity


def owned_steps(p: Placement, name: str, holder: str) -> Steps:
    targets = p.targets(name)
    majority = len(targets) // 2 + 1
    lease, _ = p.keys(name)

    def mine(reply: Any) -> bool:
        return reply is not None and _text(reply) == holder

    out = yield Round(targets, lambda s: ("GET", lease), need=majority, ok=mine)
    if sum(1 for r in out.replies.values() if mine(r)) >= majority:
        return True
    if len(out.replies) < majority:
        raise quorum_error("owned", name, out.failed, targets)
    return False


def initialize_steps(p: Placement) -> Steps:
    servers = p.servers
    unknown = p.unidentified(servers)
    if unknown:
        yield from identify_steps(p, unknown)
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
