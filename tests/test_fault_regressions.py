"""Regression tests for the broken promises found by trying the lock and replication layers
adversarially (issue 10, items a to h). Each test sets up the exact situation that broke a
promise, against real redis-server processes where the bug needed one, and checks the promise:

- a. a store made after a node restarted empty counted that node, and lost an acknowledged write;
- b. a partial tombstone purge let a version go backwards, and lost an acknowledged write;
- c. a lock server restarted empty granted a second holder while the first believed it held;
- d. sloppy quorums in strong mode read stale data; the first write after a replica died got no
  hint;
- e. a failed write's outcome was reported as if nothing had been written; put_many reported
  one key;
- f. grants that came after the caller gave up (cancelled, or timed out) stayed for a ttl;
- g. a ttl above what the restart check could handle made a free lock impossible to acquire;
- h. one server listed under two names counted twice; a lock name with a lone surrogate failed
  as a quorum error.

The workloads with a nemesis and a history checker are in test_lock_nemesis.py and
test_replication_nemesis.py.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

from ringkit import LockQuorumError, QuorumError
from ringkit.errors import PartialWriteError, WriteOutcome
from ringkit.lock import AsyncLock, AsyncRedisBackend, Lock, MemoryBackend, RedisBackend
from ringkit.lock.base import TTL_LIMIT
from ringkit.replication import (
    MemoryNode,
    NodeDown,
    Record,
    RedisNode,
    ReplicatedStore,
    Version,
)

PREFIX = "ringkit:lock:"
TIMEOUT = 0.3


def wr(writer: str) -> str:
    """A writer of a version as stores write them: 28 digits (ringkit.replication.codec)."""
    return writer.rjust(28, "0")


def redis_nodes(servers) -> dict[str, RedisNode]:  # type: ignore[no-untyped-def]
    return {f"r{i}": RedisNode(s.url, socket_timeout=TIMEOUT) for i, s in enumerate(servers)}


def wait_until(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    """Wait for what follows a round that was decided before every reply came (a late grant's
    release, a late copy); the bound is a hang guard, not a speed requirement."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def lease_keys(servers, name: str) -> list[Any]:  # type: ignore[no-untyped-def]
    return [s.client().get(f"{PREFIX}{{{name}}}") for s in servers]


# -- a. a node restarted empty, and a store made afterwards ---------------------------------------


@pytest.mark.redis
@pytest.mark.signals
def test_a_store_made_after_an_empty_restart_does_not_count_the_empty_node(redis_servers) -> None:  # type: ignore[no-untyped-def]
    """v2 is acknowledged by r0 and r1 (r2 missed it); r0 restarts empty; a new store (another
    process starting up, even one that calls initialize()) must not count r0: with r1 down, a
    put may not be acknowledged on r0 + r2 (it would be numbered at v2's counter, lose to v2
    on the tie-break, and vanish at the next repair)."""
    servers = redis_servers(3)
    first = ReplicatedStore(redis_nodes(servers), writer_id="ff")
    assert sorted(first.initialize()) == ["r0", "r1", "r2"]
    v1 = first.put("k", b"v1")
    v2 = Version(v1.counter + 1, wr("ff" + "f" * 12))
    acknowledged = {"r0", "r1"}        # r2 was partitioned away when v2 was acknowledged
    nodes = redis_nodes(servers)
    for name in acknowledged:
        nodes[name].write([Record("k", b"v2", v2)])
    wait_until(lambda: nodes["r2"].read(["k"])[1][0] is not None)
    assert nodes["r2"].read(["k"])[1][0].version == v1  # type: ignore[union-attr]
    servers[0].kill()
    servers[0].restart()                             # r0: empty, no marker
    second = ReplicatedStore(redis_nodes(servers), writer_id="aa", down_backoff=0.05)
    assert second.initialize() == []                 # r1 and r2 remember r0 as a member
    assert second.status()["r0"] == "recovering"
    servers[1].pause()                               # r1 (the other copy of v2) is away
    try:
        with pytest.raises(QuorumError) as info:
            second.put("k", b"v3")                   # r0 does not count: one replica left
        assert info.value.outcome in ("failed", "unknown")
        assert "r0" in info.value.failed
    finally:
        servers[1].resume()
    second.probe()
    report = second.repair()
    assert "r0" in report.nodes_refilled
    value, version = second.get_versioned("k")
    assert (value, version) == (b"v2", v2)           # the acknowledged v2 survived
    v3 = second.put("k", b"v3")
    assert v3 > v2
    second.repair()
    assert second.get_versioned("k") == (b"v3", v3)


def test_a_memory_node_revived_empty_is_not_new() -> None:
    """In-process nodes are new by construction; one revived empty is not, whoever asks."""
    nodes = {f"m{i}": MemoryNode(f"m{i}") for i in range(3)}
    store = ReplicatedStore(nodes)
    version = store.put("k", b"v")
    nodes["m0"].kill()
    nodes["m0"].revive(empty=True)
    again = ReplicatedStore(nodes)
    assert again.status()["m0"] == "recovering"
    assert again.initialize() == []                  # the others remember m0
    nodes["m1"].kill()
    with pytest.raises(QuorumError) as info:
        again.put("k", b"w")                         # m0 does not count: one replica left
    assert info.value.outcome == "unknown"           # m2 (and m0) stored it nonetheless
    nodes["m1"].revive()
    again.repair()
    value, final = again.get_versioned("k")
    assert final is not None and final >= version and value in (b"v", b"w")


# -- b. a partial tombstone purge -----------------------------------------------------------------


class _PurgeFails(MemoryNode):
    """A node whose link fails during a purge (every other call answers)."""

    def purge_raw(self, fields, buckets, heads):  # type: ignore[no-untyped-def]
        raise NodeDown(f"{self.name}: link failed during the purge")


def test_b_versions_never_go_backwards_after_a_partial_purge() -> None:
    """The purge of a tombstone reaches m0 and m1 but not m2. A store that never saw the key
    then writes "expecting absent": m0 and m1 agree, but the version it gets must still be
    above the purged tombstone's, or the next read returns None and repair deletes it."""
    nodes: dict[str, MemoryNode] = {"m0": MemoryNode("m0"), "m1": MemoryNode("m1"),
                                    "m2": _PurgeFails("m2")}
    store = ReplicatedStore(nodes, tombstone_grace=0.0)
    for i in range(5):
        store.put("k", b"%d" % i)
    tombstone = store.delete("k")
    report = store.repair()
    assert report.tombstones_purged == 2             # m0 and m1; m2 still holds it
    assert nodes["m0"].read(["k"])[1] == [None]
    fresh = ReplicatedStore(nodes, writer_id="01", tombstone_grace=0.0)
    version = fresh.put("k", b"new")
    assert version.counter > tombstone.counter
    assert fresh.get("k") == b"new"
    fresh.repair()
    assert fresh.get_versioned("k") == (b"new", version)
    assert store.get("k") == b"new"


@pytest.mark.redis
def test_b_redis_floors_survive_a_partial_purge_and_a_refill(redis_servers) -> None:  # type: ignore[no-untyped-def]
    """The same on Redis, batch path included, and with the node that purged restarting empty:
    its floor is restored by the refill before it counts again."""
    servers = redis_servers(3)
    nodes = redis_nodes(servers)
    store = ReplicatedStore(nodes, tombstone_grace=0.0, down_backoff=0.05)
    store.initialize()
    keys = [f"k{i}" for i in range(50)]
    for _ in range(3):
        store.put_many({k: b"x" for k in keys})
    tombstones = {k: store.delete(k) for k in keys}
    # A write returns at its quorum; the third copies follow: let them land.
    wait_until(lambda: all(r is not None and r.tombstone
                           for node in nodes.values() for r in node.read(keys)[1]))
    failing = nodes["r2"]
    original = failing.purge_raw
    failing.purge_raw = lambda *args: (_ for _ in ()).throw(  # type: ignore[method-assign]
        ConnectionError("link failed during the purge"))
    try:
        assert store.repair().tombstones_purged == 100
    finally:
        failing.purge_raw = original                 # type: ignore[method-assign]
    floor = max(t.counter for t in tombstones.values())
    assert nodes["r0"].get_floor() == nodes["r1"].get_floor() == floor
    servers[0].kill()
    servers[0].restart()
    store.probe()
    assert store.repair().nodes_refilled == ["r0"]
    assert nodes["r0"].get_floor() == floor           # restored before r0 counted again
    fresh = ReplicatedStore(redis_nodes(servers), writer_id="02")
    versions = fresh.put_many({k: b"new" for k in keys})
    assert all(v.counter > tombstones[k].counter for k, v in zip(keys, versions))
    one = fresh.put("extra", b"e")                   # a key never written: above the floor too
    assert one.counter > floor
    fresh.repair()
    assert fresh.get_many(keys) == [b"new"] * len(keys)


# -- c. a lock server restarted empty -------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.signals
def test_c_a_restarted_empty_server_grants_nothing_for_max_ttl(redis_servers) -> None:  # type: ignore[no-untyped-def]
    """A holds on a bare majority {0, 1} (2 held by an intruder that soon expires); server 1
    restarts empty. B asks with a short ttl, again and again: it must never hold while A
    believes it holds (the restarted server stays quiet for max_ttl, which bounds A's lease).
    A's renewal fails (1 of 3 still has its lease), and A is told (on_lost)."""
    servers = redis_servers(3)
    max_ttl = 3.0
    backend = RedisBackend([s.url for s in servers], max_ttl=max_ttl)
    backend.initialize()
    servers[2].client().set(f"{PREFIX}{{r}}", "intruder", px=300)
    lost: list[float] = []
    first = Lock("r", backend, ttl=max_ttl, auto_renew=True,
                 on_lost=lambda _: lost.append(time.monotonic()))
    assert first.acquire(blocking=False)
    first_until = time.monotonic() + first.validity()
    with pytest.raises(ValueError, match="max_ttl"):
        first.extend(30.0)                           # no lease past max_ttl, ever
    servers[1].kill()
    servers[1].restart()
    second = Lock("r", backend, ttl=0.5)
    while not second.acquire(timeout=0.05):
        pass
    started = time.monotonic()
    assert not lost or lost[0] <= started
    believed_until = min(first_until, lost[0] if lost else first_until)
    assert started >= believed_until or not first.locked
    assert first.validity() == 0.0
    wait_until(lambda: bool(lost))                   # A learnt it lost the lease
    assert second.token > first.token
    second.release()
    backend.close()


@pytest.mark.redis
def test_c_ttl_and_extend_above_max_ttl_are_value_errors(redis_servers) -> None:  # type: ignore[no-untyped-def]
    (server,) = redis_servers(1)
    backend = RedisBackend(server.url, max_ttl=5.0)
    backend.initialize()
    with pytest.raises(ValueError, match="max_ttl"):
        Lock("x", backend, ttl=6.0)
    lock = Lock("x", backend, ttl=5.0)
    with lock:
        with pytest.raises(ValueError, match="max_ttl"):
            lock.extend(5.5)
        lock.extend(5.0)
    with pytest.raises(ValueError, match="max_ttl"):
        backend.acquire("x", "h", 6.0)
    # Another client with another max_ttl is refused by servers set up with this one.
    other = RedisBackend(server.url, max_ttl=60.0)
    with pytest.raises(LockQuorumError, match="max_ttl mismatch"):
        Lock("x", other, ttl=1.0).acquire(blocking=False)
    other.close()
    backend.close()


# -- d. sloppy quorums ----------------------------------------------------------------------------


def test_d_sloppy_is_refused_in_strong_mode() -> None:
    nodes = {f"m{i}": MemoryNode(f"m{i}") for i in range(5)}
    with pytest.raises(ValueError, match="sloppy=True needs consistency='eventual'"):
        ReplicatedStore(nodes, sloppy=True)
    ReplicatedStore(nodes, sloppy=True, consistency="eventual")


@pytest.mark.parametrize("write_quorum", [1, 2])
def test_d_the_first_write_after_a_replica_dies_is_hinted(write_quorum: int) -> None:
    """The primary dies unnoticed: the very first put after it (not only later ones, once the
    store knows) leaves a hint on a stand-in, and handoff() delivers it when the node is back."""
    nodes = {f"m{i}": MemoryNode(f"m{i}") for i in range(5)}
    store = ReplicatedStore(nodes, sloppy=True, consistency="eventual", replicas=3,
                            write_quorum=write_quorum, read_quorum=1, down_backoff=0.0)
    key = "user:1"
    primary = store.preference_list(key)[0]
    nodes[primary].kill()
    version = store.put(key, b"v")
    store.flush(timeout=10.0)
    hinted = [n for n, node in nodes.items() if n != primary and node.hints(primary)]
    assert len(hinted) == 1
    assert [r.version for r in nodes[hinted[0]].hints(primary)] == [version]
    nodes[primary].revive()
    assert store.handoff() == 1
    assert nodes[primary].read([key])[1][0].version == version  # type: ignore[union-attr]
    store.close()


# -- e. outcomes of failed writes -----------------------------------------------------------------


def test_e_a_failed_put_says_its_outcome() -> None:
    nodes = {f"m{i}": MemoryNode(f"m{i}") for i in range(3)}
    store = ReplicatedStore(nodes)
    store.put("k", b"v1")
    nodes["m1"].kill()
    nodes["m2"].kill()
    with pytest.raises(QuorumError) as info:
        store.put("k", b"v2")                        # m0 stored it: it may become visible
    assert info.value.outcome == "unknown"
    assert "unknown" in str(info.value)
    nodes["m1"].revive()
    nodes["m2"].revive()
    store.repair()
    assert store.get("k") == b"v2"                   # ... and here it did
    nodes["m0"].kill()
    nodes["m1"].kill()
    nodes["m2"].kill()
    fresh = ReplicatedStore(nodes, down_backoff=30.0)
    with pytest.raises(QuorumError) as info:
        fresh.put("k", b"v3")                        # nothing reached any node
    assert info.value.outcome == "failed"


def test_e_put_many_reports_every_keys_outcome() -> None:
    nodes = {f"m{i}": MemoryNode(f"m{i}") for i in range(5)}
    store = ReplicatedStore(nodes)
    keys = [f"k{i}" for i in range(200)]
    nodes["m0"].kill()
    nodes["m1"].kill()
    with pytest.raises(PartialWriteError) as info:
        store.put_many({k: b"v" for k in keys})
    error = info.value
    assert isinstance(error, QuorumError)
    assert set(error.outcomes) == set(keys)
    assert all(isinstance(o, WriteOutcome) for o in error.outcomes.values())
    doomed = {k for k in keys if {"m0", "m1"} & set(store.preference_list(k)) == {"m0", "m1"}}
    assert doomed and set(error.failed_keys) | set(error.unknown_keys) == doomed
    acknowledged = error.acknowledged
    assert set(acknowledged) == set(keys) - doomed
    for key, version in acknowledged.items():
        assert store.get_versioned(key) == (b"v", version)
    assert error.outcome == "unknown"
    assert str(len(acknowledged)) in str(error)


# -- f. grants that come after the caller gave up -------------------------------------------------


@pytest.mark.redis
def test_f_cancelled_async_acquires_leave_no_lease(redis_servers) -> None:  # type: ignore[no-untyped-def]
    """40 acquires cancelled at random moments by asyncio.wait_for, many of them while their
    rounds were in flight: every lease they were granted is released (a plain acquire with
    blocking=False then succeeds at once, every time)."""
    servers = redis_servers(3)
    rng = random.Random(7)

    async def main() -> int:
        backend = AsyncRedisBackend([s.url for s in servers])
        await backend.initialize()
        cancelled = 0
        try:
            for _ in range(40):
                lock = AsyncLock("f", backend, ttl=30.0)
                try:
                    await asyncio.wait_for(lock.acquire(), rng.uniform(0.0, 0.004))
                    await lock.release()
                except asyncio.TimeoutError:
                    cancelled += 1
                    # Give the shielded attempt its rounds and its release.
                    for _ in range(200):
                        if all(v is None for v in lease_keys(servers, "f")):
                            break
                        await asyncio.sleep(0.005)
                probe = AsyncLock("f", backend, ttl=30.0)
                assert await probe.acquire(blocking=False), "a cancelled acquire left a lease"
                await probe.release()
        finally:
            await backend.aclose()
        return cancelled

    assert asyncio.run(main()) >= 5


@pytest.mark.redis
@pytest.mark.signals
def test_f_grants_of_servers_that_answered_too_late_are_released(redis_servers) -> None:  # type: ignore[no-untyped-def]
    """Two of three servers are paused: the acquire fails with a quorum error; when they
    resume they run the queued acquire scripts and grant a lease nobody will release, unless
    the client releases the late grants itself (it does, on the same connection)."""
    servers = redis_servers(3)
    backend = RedisBackend([s.url for s in servers], socket_timeout=0.3)
    backend.initialize()
    servers[1].pause()
    servers[2].pause()
    try:
        with pytest.raises(LockQuorumError):
            Lock("late", backend, ttl=30.0).acquire(blocking=False)
    finally:
        servers[1].resume()
        servers[2].resume()
    wait_until(lambda: all(v is None for v in lease_keys(servers, "late")))
    with Lock("late", backend, ttl=30.0) as lock:
        assert lock.token > 0
    backend.close()


@pytest.mark.redis
def test_f_grants_whose_replies_were_lost_in_transit_are_released(redis_servers, proxy) -> None:  # type: ignore[no-untyped-def]
    """The servers behind two links run the acquire script, but their replies are blackholed:
    the attempt fails with a quorum error. When the links heal, the replies arrive and the
    grants are released on the same connections (else they would stay for the whole ttl)."""
    servers = redis_servers(3)
    links = [proxy.link(s.port) for s in servers]
    backend = RedisBackend([link.url for link in links], socket_timeout=0.3)
    backend.initialize()
    with Lock("warm", backend):         # the servers have the scripts (no NOSCRIPT detour)
        pass
    links[1].blackhole("down")
    links[2].blackhole("down")
    with pytest.raises(LockQuorumError):
        Lock("lost", backend, ttl=30.0).acquire(blocking=False)
    held = lease_keys(servers, "lost")
    assert held[1] is not None and held[2] is not None    # they ran it: leases are there
    links[1].heal()
    links[2].heal()
    wait_until(lambda: all(v is None for v in lease_keys(servers, "lost")))
    backend.close()


def test_f_each_attempt_has_its_own_holder_id() -> None:
    backend = MemoryBackend()
    seen: list[str] = []
    real = backend.acquire

    def spy(name: str, holder: str, ttl: float):  # type: ignore[no-untyped-def]
        seen.append(holder)
        return real(name, holder, ttl)

    backend.acquire = spy  # type: ignore[method-assign]
    holder = Lock("h", backend, ttl=0.3)
    assert holder.acquire()
    waiter = Lock("h", backend, ttl=1.0, retry_interval=0.01)
    assert waiter.acquire(timeout=5.0)              # several attempts until the lease ran out
    assert len(seen) >= 3 and len(set(seen)) == len(seen)


# -- g. huge ttls ---------------------------------------------------------------------------------


@pytest.mark.redis
def test_g_the_longest_allowed_ttl_is_granted_and_longer_is_refused(redis_servers) -> None:  # type: ignore[no-untyped-def]
    (server,) = redis_servers(1)
    backend = RedisBackend(server.url, max_ttl=TTL_LIMIT)
    backend.initialize()
    lock = Lock("g", backend, ttl=TTL_LIMIT)
    assert lock.acquire(blocking=False)             # was never granted: the restart check
    assert lock.validity() > TTL_LIMIT * 0.98        # less the drift allowance (1%)
    lock.release()
    for ttl in (1e10, TTL_LIMIT * 2, float("inf"), 1e308 * 10):
        with pytest.raises(ValueError, match="ttl"):
            Lock("g", backend, ttl=ttl)
        with pytest.raises(ValueError, match="ttl"):
            Lock("g", ttl=ttl)                       # the memory backend too
    with pytest.raises(ValueError, match="max_ttl"):
        RedisBackend(server.url, max_ttl=1e10)
    backend.close()


# -- h. misconfiguration and bad input ------------------------------------------------------------


@pytest.mark.redis
def test_h_one_server_under_two_names_is_refused(redis_servers) -> None:  # type: ignore[no-untyped-def]
    servers = redis_servers(2)
    port = servers[0].port
    with pytest.raises(ValueError, match="same Redis server") as info:
        RedisBackend([f"redis://localhost:{port}/0", f"redis://127.0.0.1:{port}/0",
                      servers[1].url])
    assert f"localhost:{port}/0" in str(info.value) and f"127.0.0.1:{port}/0" in str(info.value)
    with pytest.raises(ValueError, match="same Redis server"):
        RedisBackend([f"redis://127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/1"])

    async def main() -> None:
        backend = AsyncRedisBackend([f"redis://localhost:{port}/0",
                                     f"redis://127.0.0.1:{port}/0", servers[1].url])
        try:
            with pytest.raises(ValueError, match="same Redis server"):
                await AsyncLock("h", backend).acquire(blocking=False)
            with pytest.raises(ValueError, match="same Redis server"):
                await AsyncLock("h", backend).acquire(blocking=False)   # every time
        finally:
            await backend.aclose()

    asyncio.run(main())
    for server in servers:
        assert server.client().get(f"{PREFIX}{{h}}") is None


@pytest.mark.redis
def test_h_a_lone_surrogate_is_a_value_error_naming_the_argument(redis_servers) -> None:  # type: ignore[no-untyped-def]
    (server,) = redis_servers(1)
    backend = RedisBackend(server.url)
    backend.initialize()
    for bad in ("a\ud800b", "\udfff"):
        with pytest.raises(ValueError, match="name"):
            Lock(bad, backend)
        with pytest.raises(ValueError, match="name"):
            backend.acquire(bad, "holder", 1.0)
        with pytest.raises(ValueError, match="name"):
            Lock(bad)
    store = ReplicatedStore({"m": MemoryNode("m")}, replicas=1, write_quorum=1, read_quorum=1)
    with pytest.raises(ValueError, match="key"):
        store.put("k\ud800", b"v")
    with pytest.raises(ValueError, match="key"):
        store.get("k\ud800")
    backend.close()


@pytest.mark.redis
def test_close_closes_every_connection_it_opened(redis_servers) -> None:  # type: ignore[no-untyped-def]
    """After rounds that left late replies behind, waits that subscribed, and a store's
    reads and writes, close() leaves no connection of ringkit's open on any server."""
    servers = redis_servers(3)

    def clients() -> int:
        return sum(len(s.client().client_list()) - 1 for s in servers)   # minus our own

    assert clients() == 0
    backend = RedisBackend([s.url for s in servers])
    backend.initialize()
    holder = Lock("c", backend, ttl=0.3)
    holder.acquire()
    waiter = Lock("c", backend, ttl=1.0)
    assert waiter.acquire(timeout=5.0)               # subscribed, woken by the expiry retry
    waiter.release()
    for _ in range(50):
        with Lock("c2", backend, ttl=5.0):
            pass
    assert clients() > 0
    backend.close()
    wait_until(lambda: clients() == 0)
    store = ReplicatedStore(redis_nodes(servers))
    store.initialize()
    store.put_many({f"k{i}": b"v" for i in range(300)})
    store.get_many([f"k{i}" for i in range(300)])
    store.get("k1")
    store.close()
    wait_until(lambda: clients() == 0)
    with Lock("c", backend, ttl=5.0):                 # a closed backend reconnects when used
        assert clients() > 0
    backend.close()
    wait_until(lambda: clients() == 0)


# -- rounds end when their outcome is decided -----------------------------------------------------


@pytest.mark.redis
def test_a_round_ends_by_one_deadline_whatever_the_number_of_silent_servers(redis_servers,  # type: ignore[no-untyped-def]
                                                                             proxy) -> None:
    """Five servers, every link blackholed: acquire(timeout=0) is one round, bounded by one
    socket timeout (it used to read the servers one after another: five timeouts)."""
    servers = redis_servers(5)
    links = [proxy.link(s.port) for s in servers]
    timeout = 0.4
    backend = RedisBackend([link.url for link in links], socket_timeout=timeout)
    backend.initialize()
    for link in links:
        link.blackhole("both")
    started = time.monotonic()
    with pytest.raises(LockQuorumError):
        Lock("silent", backend, ttl=5.0).acquire(timeout=0)
    assert time.monotonic() - started < timeout + 0.5      # one deadline, plus slack
    for link in links:
        link.heal()
    backend.close()


@pytest.mark.redis
@pytest.mark.signals
@pytest.mark.parametrize("fault", ["pause", "blackhole up", "blackhole down"])
def test_a_short_lease_is_granted_while_one_of_three_servers_is_silent(redis_servers, proxy,  # type: ignore[no-untyped-def]
                                                                       fault) -> None:
    """ttl=0.5 with one of three servers paused or blackholed: each acquire is decided by the
    two that answer, so the lease is granted with most of its validity left (a round that
    waited for the silent one would end after the validity, and never grant it)."""
    servers = redis_servers(3)
    links = [proxy.link(s.port) for s in servers]
    backend = RedisBackend([link.url for link in links], socket_timeout=0.5)
    backend.initialize()
    if fault == "pause":
        servers[2].pause()
    else:
        links[2].blackhole(fault.split()[1])
    try:
        for _ in range(20):
            lock = Lock("short", backend, ttl=0.5)
            assert lock.acquire(timeout=2.0)
            assert lock.validity() > 0.3
            lock.release()
    finally:
        if fault == "pause":
            servers[2].resume()
        links[2].heal()
    backend.close()


@pytest.mark.redis
@pytest.mark.signals
def test_store_rounds_do_not_wait_for_a_silent_replica(redis_servers, proxy) -> None:  # type: ignore[no-untyped-def]
    """put, get, put_many and get_many with one of three replicas blackholed, then paused:
    every call is decided by the two that answer; after healing, repair() converges."""
    servers = redis_servers(3)
    links = [proxy.link(s.port) for s in servers]
    nodes = {f"r{i}": RedisNode(link.url, socket_timeout=0.3) for i, link in enumerate(links)}
    store = ReplicatedStore(nodes)
    store.initialize()
    keys = [f"k{i}" for i in range(200)]
    for fault in ("blackhole", "pause"):
        if fault == "blackhole":
            links[1].blackhole("both")
        else:
            servers[1].pause()
        try:
            versions = store.put_many({k: fault.encode() for k in keys})
            assert store.get_many(keys) == [fault.encode()] * len(keys)
            for key in keys[:20]:
                version = store.put(key, b"one")
                assert store.get_versioned(key) == (b"one", version)
        finally:
            links[1].heal()
            if fault == "pause":
                servers[1].resume()
        assert len(versions) == len(keys)
    store.probe()
    store.repair()
    direct = redis_nodes(servers)
    for key in keys[::17]:
        assert len({n.read([key])[1][0].version for n in direct.values()}) == 1  # type: ignore[union-attr]
    store.close()
