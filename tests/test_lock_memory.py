"""MemoryBackend (and AsyncMemoryBackend) semantics on an injected fake clock: no test here sleeps.

The backend is driven directly (holder ids by hand) and through Lock with the same fake clock,
so expiry, the fencing counter, extend-sets-not-adds and validity are checked to the exact
number rather than against a stopwatch.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from ringkit import LockError, LockLostError, LockNotOwnedError
from ringkit.lock import AsyncLock, AsyncMemoryBackend, Grant, Lock, MemoryBackend
from ringkit.lock.base import drift


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def backend(clock: FakeClock) -> MemoryBackend:
    return MemoryBackend(clock=clock)


def test_drift_is_one_percent_plus_two_ms() -> None:
    assert drift(10.0) == pytest.approx(0.102)
    assert drift(1.0) == pytest.approx(0.012)


def test_grant_then_exclusion_then_expiry(backend: MemoryBackend, clock: FakeClock) -> None:
    grant = backend.acquire("x", "a", 10.0)
    assert grant == Grant(1, 10.0 - drift(10.0))
    assert backend.acquire("x", "b", 10.0) is None
    clock.advance(9.999)
    assert backend.acquire("x", "b", 10.0) is None
    assert backend.owned("x", "a")
    clock.advance(0.001)          # exactly at the expiry: gone
    assert not backend.owned("x", "a")
    grant_b = backend.acquire("x", "b", 10.0)
    assert grant_b is not None and grant_b.token == 2


def test_tokens_strictly_increase_per_name(backend: MemoryBackend, clock: FakeClock) -> None:
    tokens = {"x": [], "y": []}
    for i in range(50):
        name = "x" if i % 3 else "y"
        grant = backend.acquire(name, f"h{i}", 1.0)
        assert grant is not None
        tokens[name].append(grant.token)
        if i % 2:
            assert backend.release(name, f"h{i}")
        else:
            clock.advance(1.0)    # let it expire instead of releasing
    for seen in tokens.values():
        assert seen == sorted(set(seen))
        assert seen[0] == 1


def test_failed_attempts_do_not_consume_tokens(backend: MemoryBackend) -> None:
    assert backend.acquire("x", "a", 5.0).token == 1  # type: ignore[union-attr]
    for _ in range(5):
        assert backend.acquire("x", "b", 5.0) is None
    assert backend.release("x", "a")
    assert backend.acquire("x", "b", 5.0).token == 2  # type: ignore[union-attr]


def test_release_only_by_the_holder(backend: MemoryBackend, clock: FakeClock) -> None:
    backend.acquire("x", "a", 5.0)
    assert not backend.release("x", "b")
    assert backend.owned("x", "a")
    clock.advance(5.0)
    backend.acquire("x", "b", 5.0)
    assert not backend.release("x", "a")       # expired, then taken: a cannot delete b's lease
    assert backend.owned("x", "b")
    assert backend.release("x", "b")
    assert not backend.release("x", "b")       # twice: nothing left to release


def test_extend_sets_not_adds(backend: MemoryBackend, clock: FakeClock) -> None:
    backend.acquire("x", "a", 10.0)
    clock.advance(2.0)
    assert backend.extend("x", "a", 3.0) == pytest.approx(3.0 - drift(3.0))
    clock.advance(2.999)
    assert backend.owned("x", "a")
    clock.advance(0.001)                       # 3 s after the extend, not 8 s after acquire
    assert not backend.owned("x", "a")
    assert backend.extend("x", "a", 3.0) is None   # an expired lease cannot be revived
    backend.acquire("x", "b", 3.0)
    assert backend.extend("x", "a", 3.0) is None   # nor someone else's taken


def test_extend_can_shorten(backend: MemoryBackend, clock: FakeClock) -> None:
    backend.acquire("x", "a", 10.0)
    backend.extend("x", "a", 1.0)
    clock.advance(1.0)
    assert not backend.owned("x", "a")


def test_release_wakes_a_waiter(backend: MemoryBackend) -> None:
    backend.acquire("x", "a", 60.0)
    waiter = backend.waiter("x")
    woken = threading.Event()

    def wait() -> None:
        waiter.wait(60.0)
        woken.set()

    thread = threading.Thread(target=wait)
    thread.start()
    try:
        # The release may come before the thread waits (then it waits on): release until woken.
        for _ in range(200):
            backend.release("x", "a")
            if woken.wait(0.05):
                break
            backend.acquire("x", "a", 60.0)
        assert woken.is_set()
    finally:
        backend.release("x", "a")
        thread.join(5)
        waiter.close()
    assert not thread.is_alive()


# -- Lock on a MemoryBackend with the fake clock ---------------------------------------------------


def test_lock_validity_and_expiry(backend: MemoryBackend, clock: FakeClock) -> None:
    lock = Lock("x", backend, ttl=10.0, clock=clock)
    assert lock.validity() == 0.0
    assert lock.acquire(blocking=False)
    assert lock.validity() == pytest.approx(10.0 - drift(10.0))
    assert lock.locked
    clock.advance(4.0)
    assert lock.validity() == pytest.approx(6.0 - drift(10.0))
    assert lock.owned()
    clock.advance(6.0)
    assert lock.validity() == 0.0
    assert not lock.locked
    assert not lock.owned()                   # validity ran out: lost
    with pytest.raises(LockLostError):
        lock.release()
    with pytest.raises(LockNotOwnedError):    # and after that, it is simply not held
        lock.release()


def test_lock_extend_sets_validity(backend: MemoryBackend, clock: FakeClock) -> None:
    lock = Lock("x", backend, ttl=10.0, clock=clock)
    lock.acquire()
    clock.advance(8.0)
    lock.extend()
    assert lock.validity() == pytest.approx(10.0 - drift(10.0))
    lock.extend(2.0)
    assert lock.validity() == pytest.approx(2.0 - drift(2.0))
    clock.advance(2.0)
    other = Lock("x", backend, ttl=10.0, clock=clock)
    assert other.acquire(blocking=False)
    lost: list[Lock] = []
    lock.on_lost = lost.append
    with pytest.raises(LockLostError):
        lock.extend()
    assert lost == [lock]
    assert not lock.owned()
    other.release()


def test_lock_tokens_and_non_reentrance(backend: MemoryBackend, clock: FakeClock) -> None:
    lock = Lock("x", backend, ttl=10.0, clock=clock)
    tokens = []
    for _ in range(5):
        with lock:
            tokens.append(lock.token)
            with pytest.raises(LockError):
                lock.acquire(blocking=False)
    assert tokens == [1, 2, 3, 4, 5]
    with pytest.raises(LockNotOwnedError):
        _ = lock.token


def test_lock_timeout_on_fake_clock_returns_false(backend: MemoryBackend,
                                                  clock: FakeClock) -> None:
    """The fake clock makes the deadline pass at the first check: no real waiting needed."""
    holder = Lock("x", backend, ttl=10.0, clock=clock)
    holder.acquire()
    waiter = Lock("x", backend, ttl=10.0, clock=clock)
    assert waiter.acquire(timeout=0) is False
    assert not waiter.acquire(blocking=False)
    holder.release()
    assert waiter.acquire(timeout=0)


# -- AsyncMemoryBackend ---------------------------------------------------------------------------


def test_async_memory_backend_semantics(clock: FakeClock) -> None:
    async def main() -> None:
        backend = AsyncMemoryBackend(clock=clock)
        assert (await backend.acquire("x", "a", 5.0)).token == 1  # type: ignore[union-attr]
        assert await backend.acquire("x", "b", 5.0) is None
        assert await backend.extend("x", "a", 1.0) == pytest.approx(1.0 - drift(1.0))
        clock.advance(1.0)
        assert not await backend.owned("x", "a")
        assert not await backend.release("x", "a")
        assert (await backend.acquire("x", "b", 5.0)).token == 2  # type: ignore[union-attr]
        assert await backend.release("x", "b")

    asyncio.run(main())


def test_async_memory_waiters_in_successive_event_loops(clock: FakeClock) -> None:
    """One AsyncMemoryBackend (like the process-wide default) used by two event loops in turn:
    a waiter left behind by the first loop must not break waiting in the second."""
    backend = AsyncMemoryBackend(clock=clock)

    async def wait_in_vain() -> None:
        holder = AsyncLock("x", backend, ttl=5.0)
        await holder.acquire()
        assert not await AsyncLock("x", backend, ttl=5.0).acquire(timeout=0.05)

    async def wait_and_win() -> None:
        holder = AsyncLock("x", backend, ttl=5.0)
        await holder.acquire()
        waiter = AsyncLock("x", backend, ttl=5.0)
        task = asyncio.ensure_future(waiter.acquire(timeout=30.0))
        await asyncio.sleep(0.05)
        await holder.release()
        assert await task
        await waiter.release()

    asyncio.run(wait_in_vain())
    clock.advance(5.0)          # the first holder's lease runs out, with no release to wake anyone
    asyncio.run(wait_and_win())


def test_async_renewal_runs_in_virtual_time(clock: FakeClock) -> None:
    """AsyncLock's renewals wait through its sleeper: with one that moves a fake clock, three
    ttls of renewals (and a capped lease running out) take no real time."""
    backend = AsyncMemoryBackend(clock=clock)
    events: list[str] = []

    async def sleeper(seconds: float) -> None:
        clock.advance(seconds)
        await asyncio.sleep(0)

    async def main() -> None:
        lock = AsyncLock("v", backend, ttl=0.3, auto_renew=True, clock=clock, sleeper=sleeper,
                         on_event=lambda e: events.append(e.kind))
        await lock.acquire()
        while events.count("renewed") < 9:   # three ttls of virtual time
            await asyncio.sleep(0)
        assert await lock.owned()
        await lock.release()
        lost = asyncio.Event()
        capped = AsyncLock("w", backend, ttl=0.3, auto_renew=True, max_renewals=1, clock=clock,
                           sleeper=sleeper, on_lost=lambda _: lost.set())
        await capped.acquire()
        await asyncio.wait_for(lost.wait(), 5.0)
        with pytest.raises(LockLostError):
            await capped.release()

    asyncio.run(main())
    assert events[0] == "acquired" and "released" in events
