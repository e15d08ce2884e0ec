"""AsyncLock on AsyncMemoryBackend and on AsyncRedisBackend (real redis-server processes).

pytest-asyncio is not a dependency: each test runs its own event loop with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import math
import os
import time

import pytest
import redis

from ringkit import LockError, LockLostError, LockNotOwnedError, LockQuorumError, QuorumError
from ringkit.lock import AsyncLock, AsyncMemoryBackend, AsyncRedisBackend, LockEvent

PREFIX = "ringkit:lock:"


def unique(prefix: str = "alock") -> str:
    return f"{prefix}-{os.urandom(6).hex()}"


async def close_clients(clients) -> None:  # type: ignore[no-untyped-def]
    for client in clients:
        await client.aclose()


# -- the same checks on both backends -------------------------------------------------------------


async def exercise(make_backend) -> None:  # type: ignore[no-untyped-def]
    """acquire/release/token/extend/owned/validity/context manager/timeouts on one backend."""
    backend = await make_backend()
    lock = AsyncLock("a", backend, ttl=10.0)
    assert await lock.acquire(blocking=False)
    first = lock.token
    assert lock.locked and await lock.owned()
    assert 9.0 < lock.validity() <= 10.0
    await lock.extend(1.0)
    assert 0 < lock.validity() <= 1.0
    await lock.extend()
    assert 1.0 < lock.validity() <= 10.0
    other = AsyncLock("a", backend, ttl=10.0)
    assert not await other.acquire(blocking=False)
    assert not await other.acquire(timeout=0.1)
    with pytest.raises(LockNotOwnedError):
        await other.release()
    with pytest.raises(LockError):
        await lock.acquire(blocking=False)    # not reentrant
    await lock.release()
    assert not await lock.owned()
    with pytest.raises(LockNotOwnedError):
        await lock.release()
    tokens = [first]
    for _ in range(5):
        async with other:
            tokens.append(other.token)
    assert tokens == sorted(set(tokens))
    holder = AsyncLock("a", backend, ttl=10.0)
    await holder.acquire()
    with pytest.raises(LockError):
        async with AsyncLock("a", backend, blocking_timeout=0.05):
            pass  # pragma: no cover
    await holder.release()
    # A release after the lease ran out (and someone else took it) raises, leaving theirs.
    short = AsyncLock("a", backend, ttl=0.1)
    await short.acquire()
    await asyncio.sleep(0.2)
    assert await other.acquire(blocking=False)
    with pytest.raises(LockLostError):
        await short.release()
    assert await other.owned()
    await other.release()


async def release_wakes_waiter(backend) -> None:  # type: ignore[no-untyped-def]
    holder = AsyncLock("w", backend, ttl=30.0)
    await holder.acquire()
    # Parked with a 60 s retry timer and a 30 s timeout: only the release's wake-up lets it in
    # within the 10 s allowed here.
    waiter = AsyncLock("w", backend, ttl=30.0, retry_interval=60.0)
    task = asyncio.ensure_future(waiter.acquire(timeout=30.0))
    await asyncio.sleep(0.2)
    await holder.release()
    assert await asyncio.wait_for(task, 10.0)
    await waiter.release()
    # A holder that "crashed": its lease expires without a release; the fallback retry finds it.
    crashed = AsyncLock("w", backend, ttl=0.3)
    await crashed.acquire()
    late = AsyncLock("w", backend, ttl=5.0)
    assert await late.acquire(timeout=5.0)
    assert late.token > crashed.token
    await late.release()


async def auto_renewal(backend) -> None:  # type: ignore[no-untyped-def]
    events: list[LockEvent] = []
    lock = AsyncLock("r", backend, ttl=0.3, auto_renew=True, on_event=events.append)
    await lock.acquire()
    await asyncio.sleep(1.0)      # more than three ttls
    assert await lock.owned()
    assert not await AsyncLock("r", backend).acquire(blocking=False)
    await lock.release()
    assert [e.kind for e in events].count("renewed") >= 2
    # The cap: renewals stop, the lease runs out, on_lost (a coroutine here) is awaited.
    lost = asyncio.Event()

    async def on_lost(_: AsyncLock) -> None:
        lost.set()

    capped = AsyncLock("r", backend, ttl=0.3, auto_renew=True, max_renewals=1, on_lost=on_lost,
                       on_event=events.append)
    await capped.acquire()
    await asyncio.wait_for(lost.wait(), 5.0)
    assert events[-1].kind == "lost"
    assert not await capped.owned()
    with pytest.raises(LockLostError):
        await capped.release()


# -- AsyncMemoryBackend ---------------------------------------------------------------------------


def test_async_memory_lock() -> None:
    async def make() -> AsyncMemoryBackend:
        return AsyncMemoryBackend()

    asyncio.run(exercise(make))


def test_async_memory_waiting() -> None:
    asyncio.run(release_wakes_waiter(AsyncMemoryBackend()))


def test_async_memory_auto_renewal() -> None:
    asyncio.run(auto_renewal(AsyncMemoryBackend()))


def test_default_async_locks_exclude_each_other_across_tasks() -> None:
    name = unique()
    state = {"count": 0, "inside": 0, "overlaps": 0}

    async def work() -> None:
        lock = AsyncLock(name, ttl=30.0)
        for _ in range(50):
            async with lock:
                state["inside"] += 1
                state["overlaps"] += state["inside"] != 1
                value = state["count"]
                await asyncio.sleep(0)
                state["count"] = value + 1
                state["inside"] -= 1

    async def main() -> None:
        await asyncio.gather(*(work() for _ in range(4)))

    asyncio.run(main())
    assert state == {"count": 200, "inside": 0, "overlaps": 0}


def test_async_bad_input() -> None:
    async def main() -> None:
        lock = AsyncLock(unique(), AsyncMemoryBackend())
        with pytest.raises(ValueError, match="timeout"):
            await lock.acquire(blocking=False, timeout=1.0)
        with pytest.raises(ValueError, match="timeout"):
            await lock.acquire(timeout=-1)
        with pytest.raises(ValueError, match="ttl"):
            AsyncLock(unique(), ttl=math.nan)
        with pytest.raises(LockNotOwnedError):
            await lock.release()
        with pytest.raises(LockNotOwnedError):
            await lock.extend()
        assert not lock.locked

    asyncio.run(main())


# -- AsyncRedisBackend ----------------------------------------------------------------------------


def redis_backend_factory(servers, made: list):  # type: ignore[no-untyped-def]
    """Backends on clients we close ourselves, inside the loop that used them."""

    async def make(**options) -> AsyncRedisBackend:  # type: ignore[no-untyped-def]
        clients = [server.async_client() for server in servers]
        made.extend(clients)
        backend = AsyncRedisBackend(clients, **options)
        await backend.initialize()
        return backend

    return make


@pytest.mark.redis
@pytest.mark.parametrize("n", [1, 3])
def test_async_redis_lock(redis_servers, n) -> None:
    servers = redis_servers(n)

    async def main() -> None:
        made: list = []
        try:
            await exercise(redis_backend_factory(servers, made))
        finally:
            await close_clients(made)

    asyncio.run(main())
    keys = {k.decode() for k in servers[0].client().keys("*")}
    assert keys == {f"{PREFIX}{{a}}:fence", f"{PREFIX}__epoch__"}


@pytest.mark.redis
def test_async_redis_waiting_and_auto_renewal(redis_servers) -> None:
    servers = redis_servers(3)

    async def main() -> None:
        made: list = []
        try:
            make = redis_backend_factory(servers, made)
            await release_wakes_waiter(await make())
            await auto_renewal(await make())
        finally:
            await close_clients(made)

    asyncio.run(main())


@pytest.mark.redis
def test_async_redis_tokens_match_the_sync_backend(redis_servers) -> None:
    """Sync and async clients share the servers and the protocol: tokens interleave upwards."""
    from ringkit.lock import Lock, RedisBackend

    servers = redis_servers(3)
    sync_backend = RedisBackend([s.url for s in servers])
    sync_backend.initialize()
    tokens: list[int] = []

    async def main() -> None:
        clients = [server.async_client() for server in servers]
        try:
            backend = AsyncRedisBackend(clients)
            for _ in range(5):
                async with AsyncLock("mix", backend) as lock:
                    tokens.append(lock.token)
                with Lock("mix", sync_backend) as sync_lock:
                    tokens.append(sync_lock.token)
        finally:
            await close_clients(clients)

    asyncio.run(main())
    sync_backend.close()
    assert tokens == sorted(set(tokens))


@pytest.mark.redis
def test_async_redis_fresh_server_withholds_its_vote(redis_servers) -> None:
    (server,) = redis_servers(1)

    async def main() -> float:
        client = server.async_client()
        try:
            lock = AsyncLock("fresh", AsyncRedisBackend(client, max_ttl=0.5), ttl=0.5)
            started = time.monotonic()
            assert not await lock.acquire(blocking=False)
            assert await lock.acquire(timeout=5.0)
            await lock.release()
            return time.monotonic() - started
        finally:
            await client.aclose()

    assert asyncio.run(main()) >= 0.5 * 0.9


@pytest.mark.redis
def test_async_redis_unreachable_server(unused_port) -> None:
    async def main() -> None:
        client = redis.asyncio.Redis(host="127.0.0.1", port=unused_port, socket_timeout=0.5,
                                     socket_connect_timeout=0.5,
                                     retry=redis.asyncio.retry.Retry(redis.backoff.NoBackoff(), 0))
        events: list[LockEvent] = []
        try:
            lock = AsyncLock("u", AsyncRedisBackend(client), ttl=1.0, on_event=events.append)
            with pytest.raises(LockQuorumError) as info:
                await lock.acquire(blocking=False)
            assert isinstance(info.value, LockError) and isinstance(info.value, QuorumError)
            assert f"127.0.0.1:{unused_port}/0" in str(info.value)
            assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)
            started = time.monotonic()
            with pytest.raises(LockError):
                await lock.acquire(timeout=0.5)
            assert time.monotonic() - started < 0.5 + 2.0
            assert events and {e.kind for e in events} == {"quorum_failed"}
        finally:
            await client.aclose()

    asyncio.run(main())


@pytest.mark.redis
def test_async_redis_backend_from_urls(redis_servers) -> None:
    """URLs are the documented way in; the backend makes its own clients."""
    servers = redis_servers(3)

    async def main() -> None:
        backend = AsyncRedisBackend([s.url for s in servers])
        await backend.initialize()
        async with AsyncLock("url", backend) as lock:
            assert lock.token > 0
        await backend.aclose()

    asyncio.run(main())
