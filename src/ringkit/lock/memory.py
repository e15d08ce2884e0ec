"""The embedded lock backend: one process, many threads (or one event loop)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections.abc import Callable

from ringkit.lock.base import TTL_LIMIT, Grant, check_max_ttl, check_name, check_ttl, drift

__all__ = ["MemoryBackend", "AsyncMemoryBackend"]

# A fork can happen while another thread is inside a backend, holding its condition's lock; the
# child would inherit that lock held by a thread that does not exist there, and hang on first use.
_BACKENDS: weakref.WeakSet[MemoryBackend] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for backend in list(_BACKENDS):
        backend._changed = threading.Condition()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class MemoryBackend:
    """Locks in this process's memory, with the semantics of the Redis backend: leases expire
    after their ttl, fencing tokens strictly increase per lock name, a release wakes waiters.

    Thread safe. ``clock`` (default ``time.monotonic``) can be replaced to test expiry without
    sleeping. ``Lock(name)`` without a backend uses one MemoryBackend shared by the process.
    ``max_ttl`` (default 7 days) bounds every lease, as it does on Redis.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 max_ttl: float = TTL_LIMIT) -> None:
        if not callable(clock):
            raise TypeError("clock must be a callable returning seconds")
        self.max_ttl = check_max_ttl(max_ttl)
        self._clock = clock
        self._held: dict[str, tuple[str, float]] = {}   # name -> (holder, expires at)
        self._fences: dict[str, int] = {}
        self._changed = threading.Condition()
        _BACKENDS.add(self)

    def _holder(self, name: str, now: float) -> str | None:
        entry = self._held.get(name)
        if entry is None:
            return None
        if entry[1] <= now:
            del self._held[name]
            return None
        return entry[0]

    def acquire(self, name: str, holder: str, ttl: float) -> Grant | None:
        check_name(name)
        ttl = check_ttl(ttl, limit=self.max_ttl)
        with self._changed:
            now = self._clock()
            if self._holder(name, now) is not None:
                return None
            token = self._fences.get(name, 0) + 1
            self._fences[name] = token
            self._held[name] = (holder, now + ttl)
            return Grant(token, ttl - drift(ttl))

    def release(self, name: str, holder: str) -> bool:
        with self._changed:
            if self._holder(name, self._clock()) != holder:
                return False
            del self._held[name]
            self._changed.notify_all()
            return True

    def extend(self, name: str, holder: str, ttl: float) -> float | None:
        ttl = check_ttl(ttl, limit=self.max_ttl)
        with self._changed:
            now = self._clock()
            if self._holder(name, now) != holder:
                return None
            self._held[name] = (holder, now + ttl)
            return ttl - drift(ttl)

    def owned(self, name: str, holder: str) -> bool:
        with self._changed:
            return self._holder(name, self._clock()) == holder

    def waiter(self, name: str) -> _MemoryWaiter:
        return _MemoryWaiter(self._changed)

    def __repr__(self) -> str:
        return f"<MemoryBackend with {len(self._held)} held>"


class _MemoryWaiter:
    def __init__(self, changed: threading.Condition) -> None:
        self._changed = changed

    def wait(self, timeout: float) -> None:
        with self._changed:
            self._changed.wait(max(0.0, timeout))

    def close(self) -> None:
        pass


class AsyncMemoryBackend:
    """The embedded backend for :class:`ringkit.lock.AsyncLock`: one event loop's memory."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 max_ttl: float = TTL_LIMIT) -> None:
        self._sync = MemoryBackend(clock=clock, max_ttl=max_ttl)
        self.max_ttl = self._sync.max_ttl
        # One event per waiting call, made inside its own event loop: an Event kept per name
        # would stay bound to the first loop that waited on it, and a later loop (the shared
        # default backend outlives asyncio.run) would get "bound to a different event loop".
        self._events: dict[str, set[asyncio.Event]] = {}

    async def acquire(self, name: str, holder: str, ttl: float) -> Grant | None:
        return self._sync.acquire(name, holder, ttl)

    async def release(self, name: str, holder: str) -> bool:
        released = self._sync.release(name, holder)
        if released:
            for event in self._events.pop(name, ()):
                event.set()
        return released

    async def extend(self, name: str, holder: str, ttl: float) -> float | None:
        return self._sync.extend(name, holder, ttl)

    async def owned(self, name: str, holder: str) -> bool:
        return self._sync.owned(name, holder)

    async def waiter(self, name: str) -> _AsyncMemoryWaiter:
        return _AsyncMemoryWaiter(self._events, name)


class _AsyncMemoryWaiter:
    def __init__(self, events: dict[str, set[asyncio.Event]], name: str) -> None:
        self._events = events
        self._name = name

    async def wait(self, timeout: float) -> None:
        event = asyncio.Event()
        self._events.setdefault(self._name, set()).add(event)
        try:
            await asyncio.wait_for(event.wait(), max(0.0, timeout))
        except asyncio.TimeoutError:
            pass
        finally:
            waiting = self._events.get(self._name)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._events[self._name]

    async def close(self) -> None:
        pass
