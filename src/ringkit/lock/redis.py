"""Locks on Redis servers: one server, or a quorum of several placed by the ring.

This module holds the two backends, :class:`RedisBackend` and :class:`AsyncRedisBackend`: their
arguments, and the drivers that run the protocol's rounds over ringkit's transport. The rest is
beside it: the Lua scripts and keys in scripts.py, the server list, placement and shared
settings in placement.py, the protocol's steps in protocol.py, waiting for a release in
waiting.py.

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
import time
from collections.abc import Callable
from typing import Any

from ringkit._redisio import AsyncCall, AsyncLink, Call, Link, client_from_url, gather, gather_async
from ringkit.lock.base import Grant, check_max_ttl, check_name, check_ttl
from ringkit.lock.placement import Placement
from ringkit.lock.protocol import (
    Outcome,
    Round,
    Steps,
    acquire_steps,
    decider,
    extend_steps,
    identify_steps,
    initialize_steps,
    outcome,
    owned_steps,
    release_steps,
)
from ringkit.lock.scripts import SCRIPTS
from ringkit.lock.waiting import AsyncRedisWaiter, RedisWaiter

__all__ = ["RedisBackend", "AsyncRedisBackend", "DEFAULT_MAX_TTL"]

log = logging.getLogger("ringkit.lock")

DEFAULT_MAX_TTL = 60.0


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

        self._placement = Placement(servers, replicas, prefix, limit, persistent, cluster,
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
                self._drive(identify_steps(self._placement, self._placement.servers))
            except ValueError:
                self.close()
                raise

    def _round(self, round_: Round) -> Outcome:
        calls = []
        for server in round_.servers:
            call = Call(server.link, [round_.command(server)], SCRIPTS,
                        late=round_.late(server) if round_.late is not None else None,
                        late_for=round_.late_for)
            call.limit = round_.limit
            call.must = round_.every
            calls.append(call)
        gather(calls, decider(round_, calls) if len(calls) > 1 else None)
        return outcome(round_, calls)

    def _drive(self, steps: Steps) -> Any:
        try:
            round_ = next(steps)
            while True:
                round_ = steps.send(self._round(round_))
        except StopIteration as done:
            return done.value

    def acquire(self, name: str, holder: str, ttl: float) -> Grant | None:
        p = self._placement
        grant: Grant | None = self._drive(acquire_steps(
            p, self._clock, check_name(name), holder, p.check_ttl(ttl)))
        return grant

    def release(self, name: str, holder: str) -> bool:
        return bool(self._drive(release_steps(self._placement, check_name(name), holder)))

    def extend(self, name: str, holder: str, ttl: float) -> float | None:
        p = self._placement
        validity: float | None = self._drive(extend_steps(
            p, self._clock, check_name(name), holder, p.check_ttl(ttl)))
        return validity

    def owned(self, name: str, holder: str) -> bool:
        return bool(self._drive(owned_steps(self._placement, check_name(name), holder)))

    def waiter(self, name: str) -> RedisWaiter:
        return RedisWaiter(self._placement.targets(check_name(name)),
                            self._placement.channel(name))

    def initialize(self) -> list[str]:
        """Mark servers that have no epoch marker as fresh, so they grant locks at once; returns
        the servers it marked. Raises LockQuorumError if a server does not answer.

        Only for servers that are new: on a server that restarted empty this would let it
        grant a lock that a live holder still has.
        """
        for server in self._placement.servers:
            server.link.revive()
        marked: list[str] = self._drive(initialize_steps(self._placement))
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

    async def _round(self, round_: Round) -> Outcome:
        calls = []
        for server in round_.servers:
            call = AsyncCall(server.link, [round_.command(server)], SCRIPTS,
                             late=round_.late(server) if round_.late is not None else None,
                             late_for=round_.late_for)
            calls.append(call)
        for call in calls:
            call.limit = round_.limit
            call.must = round_.every
        await gather_async(calls, decider(round_, calls))
        return outcome(round_, calls)

    async def _drive(self, steps: Steps) -> Any:
        try:
            round_ = next(steps)
            while True:
                round_ = steps.send(await self._round(round_))
        except StopIteration as done:
            return done.value

    async def acquire(self, name: str, holder: str, ttl: float) -> Grant | None:
        p = self._placement
        steps = acquire_steps(p, self._clock, check_name(name), holder, p.check_ttl(ttl))
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
            release_steps(self._placement, name, holder))))

    def _keep(self, task: asyncio.Task[Any]) -> None:
        self._background.add(task)

        def forget(done: asyncio.Task[Any]) -> None:
            self._background.discard(done)
            if not done.cancelled() and done.exception() is not None:
                log.debug("ringkit lock: background round failed: %s", done.exception())

        task.add_done_callback(forget)

    async def release(self, name: str, holder: str) -> bool:
        return bool(await self._drive(release_steps(self._placement, check_name(name), holder)))

    async def extend(self, name: str, holder: str, ttl: float) -> float | None:
        p = self._placement
        validity: float | None = await self._drive(extend_steps(
            p, self._clock, check_name(name), holder, p.check_ttl(ttl)))
        return validity

    async def owned(self, name: str, holder: str) -> bool:
        return bool(await self._drive(owned_steps(self._placement, check_name(name), holder)))

    async def waiter(self, name: str) -> AsyncRedisWaiter:
        waiter = AsyncRedisWaiter(self._placement.channel(name))
        await waiter.subscribe(self._placement.targets(check_name(name)))
        return waiter

    async def initialize(self) -> list[str]:
        """See :meth:`RedisBackend.initialize`."""
        marked: list[str] = await self._drive(initialize_steps(self._placement))
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
