"""Lock and AsyncLock: leases with fencing tokens over a lock backend."""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import os
import random
import secrets
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any

from ringkit.errors import LockError, LockLostError, LockNotOwnedError, QuorumError
from ringkit.lock.base import (
    TTL_LIMIT,
    AsyncLockBackend,
    Grant,
    LockBackend,
    check_name,
    check_ttl,
)
from ringkit.lock.memory import AsyncMemoryBackend, MemoryBackend

__all__ = ["Lock", "AsyncLock", "LockEvent", "default_backend"]

log = logging.getLogger("ringkit.lock")

_DEFAULT: MemoryBackend | None = None
_DEFAULT_ASYNC: AsyncMemoryBackend | None = None
_DEFAULT_GUARD = threading.Lock()
# Locks whose state lock must be new in a forked child: another thread (a renewal) may have held
# it at the fork, and the child would then hang in release() or owned().
_LOCKS: weakref.WeakSet[_LockBase] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    global _DEFAULT_GUARD
    _DEFAULT_GUARD = threading.Lock()
    for lock in list(_LOCKS):
        lock._state = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def default_backend() -> MemoryBackend:
    """The process-wide MemoryBackend that ``Lock(name)`` uses when given no backend."""
    global _DEFAULT
    with _DEFAULT_GUARD:
        if _DEFAULT is None:
            _DEFAULT = MemoryBackend()
        return _DEFAULT


def _default_async_backend() -> AsyncMemoryBackend:
    global _DEFAULT_ASYNC
    with _DEFAULT_GUARD:
        if _DEFAULT_ASYNC is None:
            _DEFAULT_ASYNC = AsyncMemoryBackend()
        return _DEFAULT_ASYNC


@dataclass(frozen=True)
class LockEvent:
    """What ``on_event`` hears: ``kind`` is "acquired", "released", "renewed", "lost" or
    "quorum_failed"; ``error`` is the exception behind a loss or a quorum failure."""

    kind: str
    name: str
    token: int | None
    at: float
    error: BaseException | None = None


def _check_timeout(timeout: object, argname: str) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{argname} must be a number of seconds or None, got "
                        f"{type(timeout).__name__}")
    value = float(timeout)
    if math.isnan(value) or value < 0:
        raise ValueError(f"{argname} must be >= 0 seconds or None, got {timeout!r}")
    return value


def _wait_event(seconds: float, stop: threading.Event) -> bool:
    """The default renewal sleeper: wait `seconds`, or until renewal is stopped (True)."""
    return stop.wait(seconds)


def _max_ttl(backend: object) -> float:
    limit = getattr(backend, "max_ttl", None)
    if isinstance(limit, (int, float)) and not isinstance(limit, bool) and 0 < limit:
        return min(float(limit), TTL_LIMIT)
    return TTL_LIMIT


# The protocol's operations. A step yields one and receives its result; the driver (Lock or
# AsyncLock) performs it by calling its own do_* method (AsyncLock's are coroutines, awaited):
# validation in the public methods, I/O in do_*, as in redis-py's Lock.


class _Op:
    __slots__ = ()

    def perform(self, driver: Any) -> Any:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class _Acquire(_Op):
    holder: str

    def perform(self, driver: Any) -> Any:
        return driver.do_acquire(self.holder)


@dataclass(frozen=True, slots=True)
class _Release(_Op):
    holder: str

    def perform(self, driver: Any) -> Any:
        return driver.do_release(self.holder)


@dataclass(frozen=True, slots=True)
class _Extend(_Op):
    holder: str
    ttl: float

    def perform(self, driver: Any) -> Any:
        return driver.do_extend(self.holder, self.ttl)


@dataclass(frozen=True, slots=True)
class _Owned(_Op):
    holder: str

    def perform(self, driver: Any) -> Any:
        return driver.do_owned(self.holder)


@dataclass(frozen=True, slots=True)
class _Subscribe(_Op):
    def perform(self, driver: Any) -> Any:
        return driver.do_subscribe()


@dataclass(frozen=True, slots=True)
class _Wait(_Op):
    waiter: Any
    seconds: float

    def perform(self, driver: Any) -> Any:
        return driver.do_wait(self.waiter, self.seconds)


@dataclass(frozen=True, slots=True)
class _Unsubscribe(_Op):
    waiter: Any

    def perform(self, driver: Any) -> Any:
        return driver.do_unsubscribe(self.waiter)


@dataclass(frozen=True, slots=True)
class _Pause(_Op):
    """Wait between renewals; the result says whether renewal was stopped meanwhile."""

    seconds: float

    def perform(self, driver: Any) -> Any:
        return driver.do_pause(self.seconds)


@dataclass(frozen=True, slots=True)
class _OnLost(_Op):
    def perform(self, driver: Any) -> Any:
        return driver.do_on_lost()


@dataclass(frozen=True, slots=True)
class _StartRenewal(_Op):
    holder: str

    def perform(self, driver: Any) -> Any:
        return driver.do_start_renewal(self.holder)


@dataclass(frozen=True, slots=True)
class _StopRenewal(_Op):
    def perform(self, driver: Any) -> Any:
        return driver.do_stop_renewal()


# A lock operation's steps: they yield operations and receive their results.
Steps = Generator[_Op, Any, Any]


class _LockBase:
    """State and validation shared by Lock and AsyncLock."""

    def __init__(
        self,
        name: str,
        *,
        ttl: float,
        auto_renew: bool,
        on_lost: Callable[[Any], object] | None,
        blocking_timeout: float | None,
        max_renewals: int | None,
        on_event: Callable[[LockEvent], object] | None,
        retry_interval: float | None,
        clock: Callable[[], float],
        max_ttl: float,
    ) -> None:
        self.name = check_name(name)
        self._max_ttl = max_ttl
        self.ttl = check_ttl(ttl, limit=max_ttl)
        self.auto_renew = bool(auto_renew)
        if on_lost is not None and not callable(on_lost):
            raise TypeError("on_lost must be callable or None")
        if on_event is not None and not callable(on_event):
            raise TypeError("on_event must be callable or None")
        self.on_lost = on_lost
        self.on_event = on_event
        self.blocking_timeout = _check_timeout(blocking_timeout, "blocking_timeout")
        if max_renewals is not None and (isinstance(max_renewals, bool)
                                         or not isinstance(max_renewals, int) or max_renewals < 0):
            raise ValueError(f"max_renewals must be an int >= 0 or None, got {max_renewals!r}")
        self.max_renewals = max_renewals
        self.retry_interval = (min(0.1, self.ttl / 4) if retry_interval is None
                               else check_ttl(retry_interval, "retry_interval"))
        if not callable(clock):
            raise TypeError("clock must be a callable returning seconds")
        self._clock = clock
        self._state = threading.RLock()
        _LOCKS.add(self)
        self._holder: str | None = None
        self._token: int | None = None
        self._deadline = 0.0
        self._lost = False
        self._pid = 0
        self._renewals = 0

    # -- local state ------------------------------------------------------------------------------

    def _held(self) -> bool:
        return self._holder is not None and self._pid == os.getpid()

    def _check_acquire_args(self, blocking: bool, timeout: object) -> float | None:
        limit = _check_timeout(timeout, "timeout")
        if not blocking and limit is not None:
            raise ValueError("timeout: cannot wait with blocking=False")
        return limit

    def _granted(self, holder: str, grant: Grant) -> None:
        with self._state:
            self._holder = holder
            self._token = grant.token
            self._deadline = self._clock() + grant.validity
            self._lost = False
            self._pid = os.getpid()
            self._renewals = 0
        self._emit("acquired", grant.token)

    def _take_for_release(self) -> str:
        """Clear the local state for a release; raise if this Lock does not hold the lease."""
        with self._state:
            if self._holder is None or self._pid != os.getpid():
                raise LockNotOwnedError(
                    f"lock {self.name!r} is not held by this Lock object"
                    + (" (it was acquired in the parent process)" if self._holder else ""),
                    lock_name=self.name)
            holder, lost = self._holder, self._lost
            self._holder = None
            self._lost = False
            if lost:
                raise LockLostError(f"lock {self.name!r} was lost before release (its lease "
                                    f"ran out or could not be renewed)", lock_name=self.name)
            return holder

    def _check_held(self) -> str:
        with self._state:
            if not self._held():
                raise LockNotOwnedError(f"lock {self.name!r} is not held by this Lock object",
                                        lock_name=self.name)
            if self._lost:
                raise LockLostError(f"lock {self.name!r} was lost", lock_name=self.name)
            assert self._holder is not None
            return self._holder

    def _mark_lost(self, holder: str, error: BaseException | None) -> bool:
        """Mark the lease of `holder` lost; true if this call did (so it reports the loss)."""
        with self._state:
            if self._holder != holder or self._lost:
                return False
            self._lost = True
            token = self._token
        log.warning("ringkit lock %r (token %s) was lost: %s", self.name, token,
                    error or "its validity ran out")
        self._emit("lost", token, error)
        return True

    def _emit(self, kind: str, token: int | None, error: BaseException | None = None) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(LockEvent(kind, self.name, token, self._clock(), error))
        except Exception:  # a broken hook must not break locking
            log.exception("ringkit lock on_event hook raised")

    def _retry_wait(self, deadline: float | None) -> float:
        wait = self.retry_interval * random.uniform(0.5, 1.5)
        if deadline is not None:
            wait = min(wait, max(0.0, deadline - self._clock()))
        return wait

    # -- the protocol, without I/O -------------------------------------------------------------
    # Lock and AsyncLock run the same steps: a step yields an operation (_Acquire(holder),
    # _Wait(waiter, seconds), ...), which the class performs with its do_* method (calling or
    # awaiting the backend) and whose result (or exception) it sends back in.

    def _acquire_steps(self, blocking: bool, timeout: object) -> Steps:
        limit = self._check_acquire_args(blocking, timeout)
        with self._state:
            if self._held() and not self._lost:
                raise LockError(f"lock {self.name!r} is already held by this "
                                f"{type(self).__name__} object (locks are not reentrant)",
                                lock_name=self.name)
        start = self._clock()
        deadline = None if limit is None else start + limit
        quorum_limit = deadline if deadline is not None else start + self.ttl
        waiter = None
        try:
            while True:
                # A holder id per attempt: a late release of an abandoned attempt's grant can
                # never delete the lease of a later attempt.
                holder = secrets.token_hex(16)
                try:
                    grant = yield _Acquire(holder)
                except QuorumError as exc:
                    self._emit("quorum_failed", None, exc)
                    if not blocking or self._clock() >= quorum_limit:
                        raise
                    grant = None
                if grant is not None:
                    self._granted(holder, grant)
                    if self.auto_renew:
                        yield _StartRenewal(holder)
                    return True
                if not blocking:
                    return False
                if deadline is not None and self._clock() >= deadline:
                    return False
                if waiter is None:
                    # Subscribe, then try again at once: a release between the first attempt
                    # and the subscription is not missed.
                    waiter = yield _Subscribe()
                    continue
                yield _Wait(waiter, self._retry_wait(deadline))
        finally:
            if waiter is not None:
                yield _Unsubscribe(waiter)

    def _release_steps(self) -> Steps:
        holder = self._take_for_release()
        yield _StopRenewal()
        token = self._token
        if not (yield _Release(holder)):
            error = LockLostError(f"lock {self.name!r} had expired before release; another "
                                  f"holder may have had it", lock_name=self.name)
            self._emit("lost", token, error)
            raise error
        self._emit("released", token)

    def _extend_steps(self, ttl: float | None) -> Steps:
        new_ttl = self.ttl if ttl is None else check_ttl(ttl, limit=self._max_ttl)
        holder = self._check_held()
        validity = yield _Extend(holder, new_ttl)
        if validity is None:
            error = LockLostError(f"lock {self.name!r} was lost: it could not be extended",
                                  lock_name=self.name)
            yield from self._lost_steps(holder, error)
            raise error
        with self._state:
            if self._holder == holder:
                self._deadline = self._clock() + validity

    def _owned_steps(self) -> Steps:
        with self._state:
            if not self._held() or self._lost:
                return False
            holder = self._holder
            expired = self._clock() >= self._deadline
        assert holder is not None
        if expired:
            yield from self._lost_steps(holder, None)
            return False
        return bool((yield _Owned(holder)))

    def _lost_steps(self, holder: str, error: BaseException | None) -> Steps:
        if self._mark_lost(holder, error) and self.on_lost is not None:
            yield _OnLost()

    def _renew_steps(self, holder: str) -> Steps:
        """Renew every ttl/3 until released, lost, stopped, or out of renewals."""
        interval = self.ttl / 3
        pid = os.getpid()
        while not (yield _Pause(interval)):
            with self._state:
                if self._holder != holder or self._lost or os.getpid() != pid:
                    return
                deadline = self._deadline
                exhausted = self.max_renewals is not None and self._renewals >= self.max_renewals
            if exhausted:
                # No more renewals: the lease is lost when its validity runs out.
                if (yield _Pause(max(0.0, deadline - self._clock()))):
                    return
                yield from self._lost_steps(holder, LockLostError(
                    f"lock {self.name!r} ran out after max_renewals={self.max_renewals}",
                    lock_name=self.name))
                return
            try:
                validity = yield _Extend(holder, self.ttl)
            except LockError as exc:
                self._emit("quorum_failed", self._token, exc)
                if self._clock() >= deadline:
                    yield from self._lost_steps(holder, exc)
                    return
                interval = max(0.001, min(self.ttl / 3, (deadline - self._clock()) / 2))
                continue
            if validity is None:
                yield from self._lost_steps(holder, LockLostError(
                    f"lock {self.name!r} could not be renewed: another holder has it or it "
                    f"expired", lock_name=self.name))
                return
            with self._state:
                if self._holder != holder:
                    return
                self._deadline = self._clock() + validity
                self._renewals += 1
            self._emit("renewed", self._token)
            interval = self.ttl / 3

    def _on_lost_callback(self) -> Any:
        try:
            return self.on_lost(self) if self.on_lost is not None else None
        except Exception:
            log.exception("ringkit lock on_lost callback raised")
            return None

    @property
    def token(self) -> int:
        """The fencing token of the current lease: strictly increasing per lock name, across
        every holder. Pass it to the resource you protect and have it refuse smaller ones."""
        with self._state:
            if not self._held() or self._token is None:
                raise LockNotOwnedError(f"lock {self.name!r} is not held by this Lock object",
                                        lock_name=self.name)
            return self._token

    @property
    def locked(self) -> bool:
        """Whether this Lock object holds a lease it has not lost (local state; see owned())."""
        with self._state:
            return self._held() and not self._lost and self._clock() < self._deadline

    def validity(self) -> float:
        """Seconds left on the lease, on this process's monotonic clock, minus the drift
        allowance; 0.0 when not held."""
        with self._state:
            if not self._held() or self._lost:
                return 0.0
            return max(0.0, self._deadline - self._clock())

    def __repr__(self) -> str:
        state = "held" if self.locked else "lost" if self._lost else "free"
        return f"<{type(self).__name__} {self.name!r} {state} ttl={self.ttl}>"


class Lock(_LockBase):
    """A lease on a named lock, with a fencing token.

    >>> lock = Lock("orders")
    >>> with lock:
    ...     lock.token > 0
    True

    ``backend`` is a :class:`ringkit.lock.MemoryBackend` (default: one shared by the whole
    process, so two ``Lock("x")`` exclude each other) or a :class:`ringkit.lock.RedisBackend`.
    ``ttl`` is the lease in seconds; the holder must finish, ``extend()``, or use
    ``auto_renew=True`` (renews every ttl/3 in a background thread, at most ``max_renewals``
    times) before it runs out. When a lease is lost (renewal failed, or validity ran out),
    ``on_lost(lock)`` is called, ``owned()`` turns false and ``release()`` raises
    :class:`ringkit.LockLostError`. ``with lock:`` waits up to ``blocking_timeout`` (None:
    forever) and raises :class:`ringkit.LockError` if it could not acquire.

    Fork: a child process does not own its parent's lock (``release()`` there raises
    LockNotOwnedError) and renewal does not continue in the child.

    ``clock`` (seconds, default ``time.monotonic``) measures validity; ``sleeper(seconds,
    stop)`` makes the waits between renewals (default: ``stop.wait(seconds)``; it returns True
    once renewal was stopped). Tests pass a virtual clock and sleeper to run renewals without
    sleeping.
    """

    def __init__(
        self,
        name: str,
        backend: LockBackend | None = None,
        *,
        ttl: float = 10.0,
        auto_renew: bool = False,
        on_lost: Callable[[Lock], object] | None = None,
        blocking_timeout: float | None = None,
        max_renewals: int | None = None,
        on_event: Callable[[LockEvent], object] | None = None,
        retry_interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleeper: Callable[[float, threading.Event], bool] | None = None,
    ) -> None:
        if backend is None:
            backend = default_backend()
        elif not isinstance(backend, LockBackend) or inspect.iscoroutinefunction(backend.acquire):
            # The protocol check sees only method names, which the async backends share.
            raise TypeError(f"backend must be a lock backend (MemoryBackend, RedisBackend), got "
                            f"{type(backend).__name__}"
                            + (" (an async backend: use AsyncLock with it)"
                               if inspect.iscoroutinefunction(getattr(backend, "acquire", None))
                               else ""))
        super().__init__(name, ttl=ttl, auto_renew=auto_renew, on_lost=on_lost,
                         blocking_timeout=blocking_timeout, max_renewals=max_renewals,
                         on_event=on_event, retry_interval=retry_interval, clock=clock,
                         max_ttl=_max_ttl(backend))
        if sleeper is not None and not callable(sleeper):
            raise TypeError("sleeper must be callable or None")
        self.backend = backend
        self._sleeper = sleeper if sleeper is not None else _wait_event
        self._stop_renewal: threading.Event | None = None
        self._renewing = threading.local()

    def _run(self, steps: Steps) -> Any:
        """Perform the operations of `steps` until it returns."""
        result: Any = None
        error: BaseException | None = None
        while True:
            try:
                op = steps.throw(error) if error is not None else steps.send(result)
            except StopIteration as done:
                return done.value
            result, error = None, None
            try:
                result = op.perform(self)
            except BaseException as exc:  # noqa: BLE001 - handed to the steps, which decide
                error = exc

    # The I/O of each operation (the steps above decide; these do).

    def do_acquire(self, holder: str) -> Grant | None:
        return self.backend.acquire(self.name, holder, self.ttl)

    def do_release(self, holder: str) -> bool:
        return self.backend.release(self.name, holder)

    def do_extend(self, holder: str, ttl: float) -> float | None:
        return self.backend.extend(self.name, holder, ttl)

    def do_owned(self, holder: str) -> bool:
        return self.backend.owned(self.name, holder)

    def do_subscribe(self) -> Any:
        return self.backend.waiter(self.name)

    def do_wait(self, waiter: Any, seconds: float) -> None:
        waiter.wait(seconds)

    def do_unsubscribe(self, waiter: Any) -> None:
        waiter.close()

    def do_pause(self, seconds: float) -> bool:
        stop = self._renewing.stop
        return bool(self._sleeper(seconds, stop))

    def do_on_lost(self) -> None:
        self._on_lost_callback()

    def do_start_renewal(self, holder: str) -> None:
        self._start_renewal(holder)

    def do_stop_renewal(self) -> None:
        self._stop_renewing()

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take the lease; True when taken. ``blocking=False`` tries once; ``timeout`` bounds
        the wait (None: forever). Waiting is woken by releases, with a jittered fallback retry.

        Raises :class:`ringkit.errors.LockQuorumError` (a LockError and a QuorumError) when too
        few servers answer: at once without blocking, else when ``timeout`` (or, with no
        timeout, one ttl) has passed without a quorum.
        """
        return bool(self._run(self._acquire_steps(blocking, timeout)))

    def release(self) -> None:
        """Give the lease back. Raises LockNotOwnedError when this Lock does not hold it and
        LockLostError when it was lost (it ran out, or someone else holds the lock now)."""
        self._run(self._release_steps())

    def extend(self, ttl: float | None = None) -> None:
        """Set the lease's remaining time to `ttl` (default: the lock's ttl); not added."""
        self._run(self._extend_steps(ttl))

    def owned(self) -> bool:
        """Whether this Lock still holds its lease: asks the servers."""
        return bool(self._run(self._owned_steps()))

    # -- renewal ----------------------------------------------------------------------------------

    def _start_renewal(self, holder: str) -> None:
        stop = threading.Event()
        self._stop_renewal = stop
        thread = threading.Thread(target=self._renew, args=(holder, stop),
                                  name=f"ringkit-renew-{self.name}", daemon=True)
        thread.start()

    def _renew(self, holder: str, stop: threading.Event) -> None:
        self._renewing.stop = stop          # this thread's stop event, for do_pause
        self._run(self._renew_steps(holder))

    def _stop_renewing(self) -> None:
        if self._stop_renewal is not None:
            self._stop_renewal.set()
            self._stop_renewal = None

    # -- context manager --------------------------------------------------------------------------

    def __enter__(self) -> Lock:
        if not self.acquire(blocking=True, timeout=self.blocking_timeout):
            raise LockError(f"could not acquire lock {self.name!r} within "
                            f"{self.blocking_timeout} s", lock_name=self.name)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self.release()
        except LockLostError:
            if exc_type is None:
                raise
            log.warning("ringkit lock %r was lost while its block raised %s", self.name,
                        exc_type.__name__)


class AsyncLock(_LockBase):
    """:class:`Lock` for asyncio programs: the same semantics, awaited.

    ``backend`` is a :class:`ringkit.lock.AsyncRedisBackend` or (default, shared by the process)
    an :class:`ringkit.lock.AsyncMemoryBackend`. Renewal runs as an asyncio task, waiting with
    ``sleeper(seconds)`` (default ``asyncio.sleep``).
    """

    def __init__(
        self,
        name: str,
        backend: AsyncLockBackend | None = None,
        *,
        ttl: float = 10.0,
        auto_renew: bool = False,
        on_lost: Callable[[AsyncLock], object] | None = None,
        blocking_timeout: float | None = None,
        max_renewals: int | None = None,
        on_event: Callable[[LockEvent], object] | None = None,
        retry_interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleeper: Callable[[float], Awaitable[object]] | None = None,
    ) -> None:
        if backend is None:
            backend = _default_async_backend()
        elif not isinstance(backend, AsyncLockBackend) \
                or not inspect.iscoroutinefunction(backend.acquire):
            # Awaiting a sync backend's Grant would fail after the lease was already taken.
            raise TypeError(f"backend must be an async lock backend (AsyncMemoryBackend, "
                            f"AsyncRedisBackend), got {type(backend).__name__}")
        super().__init__(name, ttl=ttl, auto_renew=auto_renew, on_lost=on_lost,
                         blocking_timeout=blocking_timeout, max_renewals=max_renewals,
                         on_event=on_event, retry_interval=retry_interval, clock=clock,
                         max_ttl=_max_ttl(backend))
        if sleeper is not None and not callable(sleeper):
            raise TypeError("sleeper must be callable or None")
        self.backend = backend
        self._sleeper = sleeper if sleeper is not None else asyncio.sleep
        self._renewal: asyncio.Task[None] | None = None

    async def _run(self, steps: Steps) -> Any:
        """Perform the operations of `steps`, awaiting the backend, until it returns."""
        result: Any = None
        error: BaseException | None = None
        while True:
            try:
                op = steps.throw(error) if error is not None else steps.send(result)
            except StopIteration as done:
                return done.value
            result, error = None, None
            try:
                result = await op.perform(self)
            except BaseException as exc:  # noqa: BLE001 - handed to the steps (cancellation too)
                error = exc

    # The I/O of each operation, awaited.

    async def do_acquire(self, holder: str) -> Grant | None:
        return await self.backend.acquire(self.name, holder, self.ttl)

    async def do_release(self, holder: str) -> bool:
        return await self.backend.release(self.name, holder)

    async def do_extend(self, holder: str, ttl: float) -> float | None:
        return await self.backend.extend(self.name, holder, ttl)

    async def do_owned(self, holder: str) -> bool:
        return await self.backend.owned(self.name, holder)

    async def do_subscribe(self) -> Any:
        return await self.backend.waiter(self.name)

    async def do_wait(self, waiter: Any, seconds: float) -> None:
        await waiter.wait(seconds)

    async def do_unsubscribe(self, waiter: Any) -> None:
        await waiter.close()

    async def do_pause(self, seconds: float) -> bool:
        await self._sleeper(seconds)
        return False   # a cancelled renewal task stops by CancelledError instead

    async def do_on_lost(self) -> None:
        result = self._on_lost_callback()
        if isinstance(result, Awaitable):
            try:
                await result
            except Exception:
                log.exception("ringkit lock on_lost callback raised")

    async def do_start_renewal(self, holder: str) -> None:
        self._renewal = asyncio.ensure_future(self._run(self._renew_steps(holder)))

    async def do_stop_renewal(self) -> None:
        self._cancel_renewal()

    async def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """See :meth:`Lock.acquire`."""
        return bool(await self._run(self._acquire_steps(blocking, timeout)))

    async def release(self) -> None:
        """See :meth:`Lock.release`."""
        await self._run(self._release_steps())

    async def extend(self, ttl: float | None = None) -> None:
        """See :meth:`Lock.extend`."""
        await self._run(self._extend_steps(ttl))

    async def owned(self) -> bool:
        """See :meth:`Lock.owned`."""
        return bool(await self._run(self._owned_steps()))

    def _cancel_renewal(self) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
            self._renewal = None

    async def __aenter__(self) -> AsyncLock:
        if not await self.acquire(blocking=True, timeout=self.blocking_timeout):
            raise LockError(f"could not acquire lock {self.name!r} within "
                            f"{self.blocking_timeout} s", lock_name=self.name)
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            await self.release()
        except LockLostError:
            if exc_type is None:
                raise
            log.warning("ringkit lock %r was lost while its block raised %s", self.name,
                        exc_type.__name__)
