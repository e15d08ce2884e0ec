"""Lock on the embedded backend: the public API, bad input, threads, auto renewal, fork, events.

Expiry arithmetic is checked on a fake clock in test_lock_memory.py; here the renewal thread
runs for real on short ttls (0.3 s), and every wait is bounded by an event with a generous
timeout, never by a measured latency.
"""

from __future__ import annotations

import math
import os
import threading
import time
import warnings

import pytest

import ringkit
from ringkit import (
    LockError,
    LockLostError,
    LockNotOwnedError,
    LockQuorumError,
    QuorumError,
    RingkitError,
)
from ringkit.lock import (
    AsyncLock,
    AsyncMemoryBackend,
    Lock,
    LockEvent,
    MemoryBackend,
    default_backend,
)


def unique(prefix: str = "lock") -> str:
    """Lock names for the process-wide default backend, which outlives each test."""
    return f"{prefix}-{os.urandom(6).hex()}"


# -- the API of DESIGN.md -------------------------------------------------------------------------


def test_public_names() -> None:
    assert ringkit.Lock is Lock
    assert ringkit.lock.MemoryBackend is MemoryBackend
    assert issubclass(LockQuorumError, LockError)
    assert issubclass(LockQuorumError, QuorumError)
    for error in (LockError, LockNotOwnedError, LockLostError, LockQuorumError):
        assert issubclass(error, RingkitError)


def test_context_manager_and_token() -> None:
    lock = Lock(unique(), ttl=5.0)
    with lock as entered:
        assert entered is lock
        assert lock.locked and lock.owned()
        first = lock.token
        assert isinstance(first, int) and first > 0
        assert 0 < lock.validity() <= 5.0
    assert not lock.locked and not lock.owned()
    assert lock.validity() == 0.0
    with lock:
        assert lock.token > first


def test_two_default_locks_exclude_each_other_across_threads() -> None:
    name = unique()
    assert Lock(name).backend is default_backend()
    counter = {"value": 0, "inside": 0, "overlaps": 0}
    tokens: list[int] = []

    def work() -> None:
        lock = Lock(name, ttl=30.0)  # a new Lock object per thread, same name
        for _ in range(200):
            with lock:
                counter["inside"] += 1
                if counter["inside"] != 1:
                    counter["overlaps"] += 1
                value = counter["value"]
                time.sleep(0)          # invite a switch inside the critical section
                counter["value"] = value + 1
                tokens.append(lock.token)
                counter["inside"] -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    assert counter["value"] == 800
    assert counter["overlaps"] == 0
    assert tokens == sorted(set(tokens))  # appended inside the lock: strictly increasing


def test_context_manager_gives_up_after_blocking_timeout() -> None:
    name = unique()
    holder = Lock(name, ttl=30.0)
    holder.acquire()
    try:
        with pytest.raises(LockError) as info, Lock(name, blocking_timeout=0.05):
            pass  # pragma: no cover - never entered
        assert info.value.lock_name == name
        assert not isinstance(info.value, LockNotOwnedError)
    finally:
        holder.release()


def test_release_wakes_a_blocked_waiter() -> None:
    """The waiter is parked in acquire(timeout=30) with a 60 s retry timer: only the release's
    wake-up can let it in within the 10 s this test waits for it."""
    backend = MemoryBackend()
    holder = Lock("w", backend, ttl=30.0)
    holder.acquire()
    waiter = Lock("w", backend, ttl=30.0, retry_interval=60.0)
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(waiter.acquire(timeout=30.0)),
                              daemon=True)
    thread.start()
    time.sleep(0.1)  # let it block (if it is not yet waiting, it will find the lock free)
    holder.release()
    thread.join(10)
    assert result == [True]
    waiter.release()


def test_waiter_takes_an_expired_lease_by_the_fallback_retry() -> None:
    """The holder 'crashes' (never releases); nothing wakes the waiter but its retry timer."""
    backend = MemoryBackend()
    crashed = Lock("c", backend, ttl=0.2)
    crashed.acquire()
    waiter = Lock("c", backend, ttl=5.0, retry_interval=0.05)
    assert waiter.acquire(timeout=5.0)
    assert waiter.token > crashed.token
    with pytest.raises(LockLostError):
        crashed.release()
    waiter.release()


def test_timeout_bounds_the_wait() -> None:
    backend = MemoryBackend()
    holder = Lock("t", backend, ttl=30.0)
    holder.acquire()
    started = time.monotonic()
    assert Lock("t", backend, ttl=30.0).acquire(timeout=0.2) is False
    assert time.monotonic() - started < 0.2 + 2.0
    assert Lock("t", backend).acquire(blocking=False) is False
    holder.release()


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, error", [("", ValueError), (None, TypeError), (b"x", TypeError),
                                         (7, TypeError)])
def test_bad_names(name: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="name"):
        Lock(name)  # type: ignore[arg-type]
    with pytest.raises(error, match="name"):
        AsyncLock(name)  # type: ignore[arg-type]
    with pytest.raises(error, match="name"):
        MemoryBackend().acquire(name, "holder", 1.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("ttl, error", [(0, ValueError), (-1, ValueError), (math.nan, ValueError),
                                        (math.inf, ValueError), (0.001, ValueError),
                                        ("10", TypeError), (True, TypeError), (None, TypeError)])
def test_bad_ttl(ttl: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="ttl"):
        Lock(unique(), ttl=ttl)  # type: ignore[arg-type]
    with pytest.raises(error, match="ttl"):
        AsyncLock(unique(), ttl=ttl)  # type: ignore[arg-type]
    if ttl is None:
        return  # extend(None) means "the lock's ttl"
    lock = Lock(unique(), MemoryBackend())
    lock.acquire()
    with pytest.raises(error, match="ttl"):
        lock.extend(ttl)  # type: ignore[arg-type]
    assert lock.owned()  # a rejected extend left the lease alone
    lock.release()


@pytest.mark.parametrize("timeout, error", [(-1, ValueError), (-0.5, ValueError),
                                            (math.nan, ValueError), ("1", TypeError)])
def test_bad_timeout(timeout: object, error: type[Exception]) -> None:
    lock = Lock(unique(), MemoryBackend())
    with pytest.raises(error, match="timeout"):
        lock.acquire(timeout=timeout)  # type: ignore[arg-type]
    with pytest.raises(error, match="blocking_timeout"):
        Lock(unique(), blocking_timeout=timeout)  # type: ignore[arg-type]
    assert not lock.locked  # nothing was acquired on the way


def test_timeout_without_blocking_is_refused() -> None:
    lock = Lock(unique(), MemoryBackend())
    with pytest.raises(ValueError, match="timeout"):
        lock.acquire(blocking=False, timeout=1.0)
    assert not lock.locked


def test_release_and_extend_of_a_lock_not_held() -> None:
    lock = Lock(unique(), MemoryBackend())
    with pytest.raises(LockNotOwnedError) as info:
        lock.release()
    assert info.value.lock_name == lock.name
    with pytest.raises(LockNotOwnedError):
        lock.extend()
    with pytest.raises(LockNotOwnedError):
        _ = lock.token
    lock.acquire()
    lock.release()
    with pytest.raises(LockNotOwnedError):
        lock.release()  # a second release


def test_release_of_a_lock_someone_else_holds() -> None:
    backend = MemoryBackend()
    holder = Lock("o", backend)
    holder.acquire()
    stranger = Lock("o", backend)
    with pytest.raises(LockNotOwnedError):
        stranger.release()
    assert holder.owned()
    holder.release()


@pytest.mark.parametrize("kwargs", [{"max_renewals": -1}, {"max_renewals": 1.5},
                                    {"max_renewals": True}, {"retry_interval": 0},
                                    {"retry_interval": math.nan}])
def test_bad_options_are_value_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Lock(unique(), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{"on_lost": 3}, {"on_event": "log"}, {"clock": 1.0}])
def test_bad_callables_are_type_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(TypeError):
        Lock(unique(), **kwargs)  # type: ignore[arg-type]


def test_backend_of_the_wrong_kind() -> None:
    with pytest.raises(TypeError, match="backend"):
        Lock(unique(), backend="redis://localhost")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="AsyncLock"):
        Lock(unique(), backend=AsyncMemoryBackend())  # type: ignore[arg-type]
    memory = MemoryBackend()
    with pytest.raises(TypeError, match="backend"):
        AsyncLock(unique(), backend=memory)  # type: ignore[arg-type]
    assert "0 held" in repr(memory)


def test_lock_errors_are_caught_as_lock_error() -> None:
    """Every lock failure is a LockError (the quorum one too: see test_lock_redis.py)."""
    backend = MemoryBackend()
    caught = []
    for action in (lambda: Lock("e", backend).release(),
                   lambda: Lock("e", backend).extend()):
        try:
            action()
        except LockError as exc:
            caught.append(type(exc))
    assert caught == [LockNotOwnedError, LockNotOwnedError]


# -- auto renewal ---------------------------------------------------------------------------------


def wait_for(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    """The renewal thread runs ahead in virtual time at once; this only waits for it to be
    scheduled (a hang guard, not a speed requirement)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


def test_auto_renewal_keeps_the_lease_past_several_ttls(virtual_time) -> None:  # type: ignore[no-untyped-def]
    """Four ttls of virtual time, no real sleeping: renewals every ttl/3 keep the lease."""
    backend = MemoryBackend(clock=virtual_time.clock)
    events: list[LockEvent] = []
    lost: list[Lock] = []
    lock = Lock("r", backend, ttl=0.3, auto_renew=True, on_lost=lost.append,
                on_event=events.append, clock=virtual_time.clock, sleeper=virtual_time.sleep)
    lock.acquire()
    token = lock.token
    virtual_time.advance(1.25)  # four ttls and a bit
    assert lock.owned()
    assert not Lock("r", backend, clock=virtual_time.clock).acquire(blocking=False)
    assert lock.token == token  # a renewal is not a new lease
    lock.release()
    assert lost == []
    kinds = [event.kind for event in events]
    assert kinds[0] == "acquired" and kinds[-1] == "released"
    assert kinds.count("renewed") == 12  # one every ttl/3 (0.1 ... 1.2), exactly: virtual time
    assert all(event.name == "r" and event.token == token for event in events)


def test_max_renewals_cap_leads_to_loss(virtual_time) -> None:  # type: ignore[no-untyped-def]
    backend = MemoryBackend(clock=virtual_time.clock)
    seen: list[Lock] = []
    events: list[LockEvent] = []
    lock = Lock("m", backend, ttl=0.3, auto_renew=True, max_renewals=2, on_lost=seen.append,
                on_event=events.append, clock=virtual_time.clock, sleeper=virtual_time.sleep)
    lock.acquire()
    virtual_time.advance(0.25)             # two renewals (at 0.1 and 0.2)
    assert seen == [] and lock.owned()
    virtual_time.advance(1.0, sleepers=0)  # no third: the lease runs out, and is lost
    wait_for(lambda: seen == [lock])
    assert [e.kind for e in events].count("renewed") == 2
    assert events[-1].kind == "lost" and isinstance(events[-1].error, LockLostError)
    assert not lock.owned() and not lock.locked and lock.validity() == 0.0
    with pytest.raises(LockLostError):
        lock.release()
    other = Lock("m", backend, clock=virtual_time.clock)
    assert other.acquire(blocking=False)   # the lease really ran out
    other.release()


def test_renewal_loss_when_another_holder_took_over() -> None:
    """The lease is taken from under the holder (here by brute force on the backend): the
    next renewal fails, on_lost runs, release raises LockLostError and leaves the other's lease."""
    backend = MemoryBackend()
    lost = threading.Event()
    lock = Lock("h", backend, ttl=0.3, auto_renew=True, on_lost=lambda _: lost.set())
    lock.acquire()
    backend.release("h", lock._holder)  # type: ignore[arg-type]
    intruder = Lock("h", backend, ttl=30.0)
    assert intruder.acquire(blocking=False)
    assert lost.wait(5.0)
    with pytest.raises(LockLostError):
        lock.release()
    assert intruder.owned()
    intruder.release()


def test_on_lost_that_raises_does_not_break_the_lock(virtual_time) -> None:  # type: ignore[no-untyped-def]
    backend = MemoryBackend(clock=virtual_time.clock)
    events: list[LockEvent] = []

    def broken(_: Lock) -> None:
        raise RuntimeError("hook failure")

    lock = Lock("b", backend, ttl=0.3, auto_renew=True, max_renewals=0, on_lost=broken,
                on_event=events.append, clock=virtual_time.clock, sleeper=virtual_time.sleep)
    lock.acquire()
    virtual_time.advance(1.0, sleepers=0)
    wait_for(lambda: any(e.kind == "lost" for e in events))
    with pytest.raises(LockLostError):
        lock.release()


# -- fork -----------------------------------------------------------------------------------------


@pytest.mark.signals
def test_fork_child_does_not_own_the_parents_lock() -> None:
    backend = MemoryBackend()
    lock = Lock("f", backend, ttl=0.3, auto_renew=True)
    lock.acquire()
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: intended here
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        report = []
        try:
            try:
                lock.release()
                report.append("released")
            except LockNotOwnedError:
                report.append("not-owned")
            report.append("owned" if lock.owned() else "not-owned-now")
            report.append("locked" if lock.locked else "unlocked")
            # The child's copy of the memory backend still has the lease; with no renewal in
            # the child it runs out there within a ttl, and a child Lock can then take it.
            report.append("free" if Lock("f", backend).acquire(timeout=3.0) else "still-held")
        except BaseException as exc:  # noqa: BLE001
            report.append(f"error {exc!r}")
        os.write(write, " ".join(report).encode())
        os._exit(0)
    os.close(write)
    try:
        with os.fdopen(read, "rb") as pipe:
            report = pipe.read().decode()
    finally:
        os.waitpid(pid, 0)
    assert report == "not-owned not-owned-now unlocked free"
    time.sleep(0.4)  # past a ttl: the parent's renewal went on
    assert lock.owned()
    lock.release()


@pytest.mark.signals
def test_fork_while_another_thread_is_inside_the_backend() -> None:
    """A thread sits inside the backend (holding its internal lock) at the moment of the fork:
    the child must still be able to use the backend and its Lock objects, not deadlock."""
    backend = MemoryBackend()
    lock = Lock("g", backend, ttl=30.0)
    lock.acquire()
    inside = threading.Event()
    leave = threading.Event()

    def occupy() -> None:
        with backend._changed, lock._state:
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=occupy)
    thread.start()
    assert inside.wait(5)
    read, write = os.pipe()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe
            signal_alarm = __import__("signal")
            signal_alarm.alarm(5)  # a deadlocked child dies instead of hanging the test
            report = []
            try:
                try:
                    lock.release()
                except LockNotOwnedError:
                    report.append("not-owned")
                report.append("held" if not Lock("g", backend).acquire(blocking=False)
                              else "free")
            except BaseException as exc:  # noqa: BLE001
                report.append(f"error {exc!r}")
            os.write(write, " ".join(report).encode())
            os._exit(0)
    finally:
        leave.set()
        thread.join(10)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        report = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert report == "not-owned held", f"child status {status}"
    lock.release()
