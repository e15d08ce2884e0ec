"""ReplicatedStore on MemoryNodes: versions, compare-and-set, tombstones, eventual mode, read
repair, hinted handoff, nodes that come back empty, rebalancing, batch == scalar, and bad input.

Fault injection is MemoryNode.kill() / revive(empty=...); the store's clocks (``clock`` for the
down backoff, ``wall_clock`` for tombstone ages) are injected where time matters, so nothing here
sleeps. The fault workloads with a checker are in test_replication_faults.py, the Redis-specific
behaviour in test_replication_redis.py.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

import pytest

from ringkit import HashRing, QuorumError, UnknownNodeError
from ringkit.replication import (
    MemoryNode,
    Node,
    NodeDown,
    Record,
    ReplicatedStore,
    Version,
    VersionConflictError,
)


def wr(writer: str) -> str:
    """A writer of a version as stores write them: 28 digits (ringkit.replication.codec)."""
    return writer.rjust(28, "0")


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def memory_nodes(n: int, prefix: str = "m") -> dict[str, MemoryNode]:
    return {f"{prefix}{i}": MemoryNode(f"{prefix}{i}") for i in range(n)}


def held(node: Node, key: str) -> Record | None:
    """What one replica holds for `key`, read directly (not through the store)."""
    return node.read([key])[1][0]


def find_key(predicate: Callable[[str], bool], prefix: str = "key") -> str:
    for i in range(100_000):
        key = f"{prefix}{i}"
        if predicate(key):
            return key
    raise AssertionError("no key satisfies the predicate")


# -- item 1: placement ----------------------------------------------------------------------------


def test_replicas_equal_to_node_count_is_one_primary_with_full_replicas() -> None:
    nodes = memory_nodes(3)
    store = ReplicatedStore(nodes, replicas=3, write_quorum=2, read_quorum=2)
    for i in range(50):
        store.put(f"k{i}", b"v%d" % i)
    for node in nodes.values():
        assert len(node) == 50
    assert store.get("k7") == b"v7"


def test_keys_live_on_their_preference_list_from_the_ring() -> None:
    nodes = memory_nodes(6)
    store = ReplicatedStore(nodes, replicas=3)
    ring = HashRing(list(nodes))
    for i in range(200):
        store.put(f"k{i}", b"x")
    for i in range(200):
        key = f"k{i}"
        prefs = ring.preference_list(key, 3)
        assert store.preference_list(key) == prefs
        holders = [name for name, node in nodes.items() if held(node, key) is not None]
        assert sorted(holders) == sorted(prefs)


# -- item 2: versions -----------------------------------------------------------------------------


def test_nodes_apply_only_newer_versions_so_retries_are_idempotent() -> None:
    node = MemoryNode("n")
    v1, v2 = Record("k", b"1", Version(1, wr("aa"))), Record("k", b"2", Version(2, wr("aa")))
    assert node.write([v2])[1] == [True]
    assert node.write([v2])[1] == [False]          # the same write again: no effect
    assert node.write([v1])[1] == [False]          # an older one: no effect
    assert held(node, "k") == v2
    v3 = Record("k", b"3", Version(3, wr("aa")))
    assert node.write_if([(v3, v1.version)])[1] == [False]
    assert node.write_if([(v3, None)])[1] == [False]
    assert node.write_if([(v3, v2.version)])[1] == [True]
    assert node.write_if([(Record("new", b"x", Version(1, wr("aa"))), None)])[1] == [True]


def test_versions_strictly_increase_per_key_across_stores_and_failovers() -> None:
    rng = random.Random(7)
    nodes = memory_nodes(5)
    stores = [ReplicatedStore(nodes, writer_id=w, down_backoff=0.0) for w in ("a1", "b2", "c3")]
    keys = [f"k{i}" for i in range(8)]
    last: dict[str, Version] = {}
    empties = 0
    for step in range(400):
        key = rng.choice(keys)
        store = rng.choice(stores)
        if step % 10 == 3:
            # One replica of the key down (a failover when it is the primary), or back empty.
            victim = nodes[rng.choice(store.preference_list(key))]
            victim.kill()
            version = store.delete(key) if rng.random() < 0.2 else store.put(key, b"%d" % step)
            victim.revive(empty=rng.random() < 0.5)
            if len(victim) == 0:
                empties += 1
                stores[0].repair()
        else:
            version = store.delete(key) if rng.random() < 0.1 else store.put(key, b"%d" % step)
        if key in last:
            assert version > last[key], (key, last[key], version)
        last[key] = version
        # Every store reads the newest acknowledged version, whichever store wrote it.
        assert rng.choice(stores).get_versioned(key)[1] == version
    assert empties > 0


def test_equal_counters_are_ordered_by_writer_and_never_split_replicas() -> None:
    """Two writers that raced to the same counter: every replica keeps the one with the larger
    writer id, whichever order the writes arrive in."""
    nodes = memory_nodes(3)
    low = Record("k", b"low", Version(5, wr("aa")))
    high = Record("k", b"high", Version(5, wr("ab")))
    names = list(nodes)
    nodes[names[0]].write([low]), nodes[names[0]].write([high])
    nodes[names[1]].write([high]), nodes[names[1]].write([low])
    nodes[names[2]].write([low])
    store = ReplicatedStore(nodes)
    assert store.get_versioned("k") == (b"high", Version(5, wr("ab")))
    store.repair()
    assert {held(node, "k") for node in nodes.values()} == {high}
    assert Version(5, wr("ab")) > Version(5, wr("aa"))
    assert Version(6, wr("aa")) > Version(5, wr("ab"))


def test_concurrent_writers_get_distinct_increasing_versions() -> None:
    nodes = memory_nodes(5)
    stores = [ReplicatedStore(nodes, writer_id=f"{i:02x}") for i in range(4)]
    acked: list[tuple[Version, bytes]] = []
    guard = threading.Lock()

    def writer(index: int) -> None:
        store = stores[index % len(stores)]
        for seq in range(100):
            value = b"%d:%d" % (index, seq)
            version = store.put("hot", value)
            with guard:
                acked.append((version, value))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    versions = [v for v, _ in acked]
    assert len(set(versions)) == len(versions) == 800
    newest_version, newest_value = max(acked)
    for store in stores:
        assert store.get_versioned("hot") == (newest_value, newest_version)


# -- item 2: compare-and-set ----------------------------------------------------------------------


def test_compare_and_set() -> None:
    store = ReplicatedStore(memory_nodes(5))
    first = store.put("k", b"a", if_version=None)          # None: only if absent
    with pytest.raises(VersionConflictError) as info:
        store.put("k", b"b", if_version=None)
    assert info.value.current == first and info.value.key == "k"
    assert isinstance(info.value, ValueError)
    second = store.put("k", b"b", if_version=first)
    assert second > first
    with pytest.raises(VersionConflictError) as info:
        store.put("k", b"c", if_version=first)
    assert info.value.current == second
    assert store.get_versioned("k") == (b"b", second)
    # A (counter, writer) tuple is accepted as a version.
    third = store.put("k", b"d", if_version=tuple(second))
    assert store.get_versioned("k") == (b"d", third)
    # A deleted key has a version: CAS over the tombstone.
    gone = store.delete("k")
    with pytest.raises(VersionConflictError):
        store.put("k", b"e", if_version=None)
    assert store.put("k", b"e", if_version=gone) > gone


@pytest.mark.parametrize("stores", ["shared", "one per thread"])
def test_concurrent_cas_has_exactly_one_winner_per_version(stores: str) -> None:
    nodes = memory_nodes(5)
    shared = ReplicatedStore(nodes, writer_id="00")
    per_thread = [shared if stores == "shared" else
                  ReplicatedStore(nodes, writer_id=f"{i + 1:02x}") for i in range(8)]
    shared.put("cas", b"start")
    rounds = 30
    barrier = threading.Barrier(8)
    seen: list[list[Version]] = [[] for _ in range(rounds)]
    wins: list[list[tuple[Version, Version]]] = [[] for _ in range(rounds)]
    conflicts = [0] * rounds
    errors: list[BaseException] = []
    guard = threading.Lock()

    def contender(index: int) -> None:
        store = per_thread[index]
        try:
            for r in range(rounds):
                barrier.wait()
                _, expected = store.get_versioned("cas")
                assert expected is not None
                barrier.wait()             # everyone read before anyone writes
                try:
                    new = store.put("cas", b"%d:%d" % (index, r), if_version=expected)
                except VersionConflictError:
                    with guard:
                        conflicts[r] += 1
                        seen[r].append(expected)
                else:
                    with guard:
                        wins[r].append((expected, new))
                        seen[r].append(expected)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for r in range(rounds):
        assert len(set(seen[r])) == 1               # all contenders saw the same version
        assert len(wins[r]) == 1 and conflicts[r] == 7, (r, wins[r], conflicts[r])
    # The winners form one chain: each round's winner wrote over the previous winner's version.
    for r in range(1, rounds):
        assert wins[r][0][0] == wins[r - 1][0][1]
    assert shared.get_versioned("cas")[1] == wins[-1][0][1]


# -- item 2: deletes ------------------------------------------------------------------------------


def test_delete_is_a_versioned_tombstone_purged_after_the_grace() -> None:
    wall = FakeClock()
    nodes = memory_nodes(3)
    store = ReplicatedStore(nodes, tombstone_grace=60.0, wall_clock=wall)
    put = store.put("k", b"v")
    gone = store.delete("k")
    assert gone > put
    assert store.get("k") is None
    assert store.get_versioned("k") == (None, gone)
    for node in nodes.values():
        record = held(node, "k")
        assert record is not None and record.tombstone and record.version == gone
        assert record.deleted_ms == int(wall.now * 1000)
    wall.advance(59.0)
    assert store.repair().tombstones_purged == 0
    assert all(held(node, "k") is not None for node in nodes.values())
    wall.advance(1.0)
    report = store.repair()
    assert report.tombstones_purged == 3
    assert all(held(node, "k") is None for node in nodes.values())
    assert store.get_versioned("k") == (None, None)
    # Delete then write again: the new write is numbered above the tombstone.
    again = store.put("j", b"1")
    tomb = store.delete("j")
    assert store.put("j", b"2") > tomb > again


def test_a_stale_replica_does_not_resurrect_a_purged_delete() -> None:
    """A replica missed the delete (it was down) and still holds the old value: repair gives it
    the tombstone before any copy is purged, so the deleted value never comes back."""
    wall = FakeClock()
    nodes = memory_nodes(3)
    store = ReplicatedStore(nodes, tombstone_grace=10.0, wall_clock=wall, down_backoff=0.0)
    store.put("k", b"old")
    nodes["m2"].kill()
    store.delete("k")
    nodes["m2"].revive()                  # back with its data: it still holds b"old"
    record = held(nodes["m2"], "k")
    assert record is not None and record.value == b"old"
    wall.advance(3600.0)
    for _ in range(2):
        store.repair()
        assert store.get("k") is None
    assert all(held(node, "k") is None for node in nodes.values())
    assert ReplicatedStore(nodes).get("k") is None


# -- item 2: eventual mode ------------------------------------------------------------------------


class GatedNode(MemoryNode):
    """A MemoryNode whose writes from the background replicator wait for ``gate``."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def write(self, records):  # type: ignore[no-untyped-def]
        if threading.current_thread().name == "ringkit-replicator":
            self.entered.set()
            self.gate.wait()
        return super().write(records)


def test_strong_mode_refuses_quorums_that_do_not_overlap() -> None:
    nodes = memory_nodes(3)
    for w, r in [(1, 1), (1, 2), (2, 1)]:
        with pytest.raises(ValueError, match="consistency='eventual'"):
            ReplicatedStore(nodes, replicas=3, write_quorum=w, read_quorum=r)
        ReplicatedStore(nodes, replicas=3, write_quorum=w, read_quorum=r,
                        consistency="eventual").close()
    ReplicatedStore(nodes, replicas=3, write_quorum=1, read_quorum=3).close()


def test_eventual_mode_lag_flush_and_reading_its_own_writes() -> None:
    nodes = {f"g{i}": GatedNode(f"g{i}") for i in range(3)}
    store = ReplicatedStore(nodes, replicas=3, write_quorum=1, read_quorum=1,
                            consistency="eventual", down_backoff=0.0)
    other = ReplicatedStore(nodes, replicas=3, write_quorum=1, read_quorum=1,
                            consistency="eventual", down_backoff=0.0)
    try:
        assert store.lag() == 0 and store.flush(timeout=1.0)
        for node in nodes.values():
            node.gate.clear()
        store.put("k0", b"v0")
        # The replicator copies k0 to its replicas in preference order: it waits at the first.
        assert nodes[store.preference_list("k0")[1]].entered.wait(30.0)
        for i in range(1, 10):
            store.put(f"k{i}", b"v%d" % i)
        assert store.lag() == 9
        assert not store.flush(timeout=0.01)           # the replicator is held at the gate
        # The put returned once the primary alone stored it.
        primary = nodes[store.preference_list("k5")[0]]
        assert held(primary, "k5") is not None
        assert sum(held(node, "k5") is not None for node in nodes.values()) == 1
        # Its primary gone, this store still reads its own write; another store cannot.
        primary.kill()
        assert other.get("k5") is None
        assert store.get("k5") == b"v5"      # (and its read repair copies it on)
        assert other.get("k5") == b"v5"
        primary.revive()
        for node in nodes.values():
            node.gate.set()
        assert store.flush(timeout=30.0)
        assert store.lag() == 0
        for i in range(10):
            versions = {held(node, f"k{i}") for node in nodes.values()}
            assert len(versions) == 1 and None not in versions
        assert other.get("k5") == b"v5"
    finally:
        for node in nodes.values():
            node.gate.set()
        store.close()
        other.close()


def test_eventual_mode_queue_is_bounded() -> None:
    """A full replication queue does not block a put (beyond ``timeout``): the write is
    acknowledged by its primary and reaches the replicas at the next repair()."""
    nodes = {f"g{i}": GatedNode(f"g{i}") for i in range(3)}
    store = ReplicatedStore(nodes, write_quorum=1, read_quorum=1, consistency="eventual",
                            queue_size=2, timeout=0.0)
    try:
        for node in nodes.values():
            node.gate.clear()
        store.put("k0", b"0")
        assert nodes[store.preference_list("k0")[1]].entered.wait(30.0)
        for i in range(1, 8):
            store.put(f"k{i}", b"%d" % i)
        assert store.lag() == 2
        for node in nodes.values():
            node.gate.set()
        assert store.flush(timeout=30.0)
        store.repair()
        for i in range(8):
            assert all(held(node, f"k{i}") is not None for node in nodes.values())
    finally:
        for node in nodes.values():
            node.gate.set()
        store.close()


# -- item 3: reads --------------------------------------------------------------------------------


def test_read_repair_fixes_a_stale_replica() -> None:
    nodes = memory_nodes(3)
    store = ReplicatedStore(nodes, down_backoff=0.0)
    store.put("k", b"v1")
    nodes["m1"].kill()
    v2 = store.put("k", b"v2")
    nodes["m1"].revive()
    stale = held(nodes["m1"], "k")
    assert stale is not None and stale.value == b"v1"
    assert store.get("k") == b"v2"
    assert held(nodes["m1"], "k") == held(nodes["m0"], "k")
    assert held(nodes["m1"], "k").version == v2  # type: ignore[union-attr]
    # get_many repairs too.
    nodes["m2"].kill()
    store.put_many({"a": b"1", "b": b"2"})
    nodes["m2"].revive()
    assert store.get_many(["a", "b"]) == [b"1", b"2"]
    assert held(nodes["m2"], "a").value == b"1"  # type: ignore[union-attr]
    assert held(nodes["m2"], "b").value == b"2"  # type: ignore[union-attr]


def test_a_store_reads_its_own_writes_under_failures() -> None:
    rng = random.Random(3)
    nodes = memory_nodes(5)
    store = ReplicatedStore(nodes, down_backoff=0.0)
    for step in range(300):
        key = f"k{rng.randrange(20)}"
        victim = nodes[rng.choice(store.preference_list(key))]
        victim.kill()
        version = store.put(key, b"%d" % step)
        assert store.get_versioned(key) == (b"%d" % step, version)
        victim.revive()


# -- item 4: failures -----------------------------------------------------------------------------


def test_quorum_error_names_the_failed_nodes() -> None:
    nodes = memory_nodes(3)
    store = ReplicatedStore(nodes)
    store.put("k", b"v")
    nodes["m0"].kill()
    nodes["m2"].kill()
    with pytest.raises(QuorumError) as info:
        store.put("k", b"w")
    assert set(info.value.failed) == {"m0", "m2"}
    assert "m0" in str(info.value) and "m2" in str(info.value)
    with pytest.raises(QuorumError) as info:
        store.get("k")
    assert set(info.value.failed) == {"m0", "m2"}


def test_sloppy_quorum_hands_hints_back() -> None:
    clock = FakeClock()
    nodes = memory_nodes(5)
    store = ReplicatedStore(nodes, sloppy=True, consistency="eventual", down_backoff=30.0,
                            clock=clock)
    key = "user:1"
    replica = store.preference_list(key)[2]
    nodes[replica].kill()
    assert store.probe()[replica] == "down"
    version = store.put(key, b"v")
    standins = [name for name, node in nodes.items()
                if name not in store.preference_list(key) and held(node, key) is not None]
    assert len(standins) == 1
    standin = nodes[standins[0]]
    assert [r.version for r in standin.hints(replica)] == [version]
    nodes[replica].revive()
    assert store.handoff() == 0            # still inside its down backoff: not asked yet
    clock.advance(30.0)
    assert store.handoff() == 1
    record = held(nodes[replica], key)
    assert record is not None and record.version == version and record.value == b"v"
    assert standin.hints(replica) == []
    # repair() delivers hints too (it probes first, so no wait for the backoff).
    nodes[replica].kill()
    store.probe()
    later = store.put(key, b"w")
    nodes[replica].revive()
    assert store.repair().hints_delivered == 1
    assert held(nodes[replica], key).version == later  # type: ignore[union-attr]


def test_sloppy_quorum_takes_writes_that_a_strict_one_refuses() -> None:
    nodes = memory_nodes(5)
    strict = ReplicatedStore(nodes, down_backoff=30.0)
    sloppy = ReplicatedStore(nodes, sloppy=True, consistency="eventual", down_backoff=30.0)
    key = "k"
    for name in strict.preference_list(key)[1:]:
        nodes[name].kill()
    strict.probe()
    sloppy.probe()
    with pytest.raises(QuorumError):
        strict.put(key, b"v")
    version = sloppy.put(key, b"v")
    assert sloppy.get_versioned(key) == (b"v", version)
    for name in strict.preference_list(key)[1:]:
        nodes[name].revive()
    sloppy.repair()
    for name in strict.preference_list(key):
        assert held(nodes[name], key).version == version  # type: ignore[union-attr]


def test_a_node_back_empty_counts_for_no_quorum_until_repaired() -> None:
    clock = FakeClock()
    nodes = {name: MemoryNode(name) for name in "abc"}
    events: list[str] = []
    store = ReplicatedStore(nodes, down_backoff=30.0, clock=clock,
                            on_event=lambda e: events.append(f"{e.kind}:{e.node}"))
    store.put("k", b"v1")
    nodes["c"].kill()
    v2 = store.put("k", b"v2")             # on a and b; c is marked down
    nodes["c"].revive()                    # back with its data: v1, stale
    nodes["b"].kill()
    nodes["b"].revive(empty=True)          # b lost everything, v2 with it
    nodes["a"].kill()
    assert store.probe() == {"a": "down", "b": "recovering", "c": "up"}
    assert "node_empty:b" in events
    # b (empty) and c (stale) answer, but b does not count: no stale v1 comes back.
    with pytest.raises(QuorumError) as info:
        store.get("k")
    assert set(info.value.failed) == {"a", "b"}
    assert "recovering" in str(info.value.failed["b"])
    with pytest.raises(QuorumError):
        store.put("k", b"v3")
    # Another store instance learns the same from the node's marker.
    fresh = ReplicatedStore(nodes, down_backoff=30.0, clock=clock)
    assert fresh.status()["b"] == "recovering"
    with pytest.raises(QuorumError):
        fresh.get("k")
    nodes["a"].revive()
    store.probe()
    assert store.get_versioned("k") == (b"v2", v2)
    assert store.status()["b"] == "recovering"     # read repair alone does not refill it
    report = store.repair()
    assert report.nodes_refilled == ["b"]
    assert store.status() == {"a": "up", "b": "up", "c": "up"}
    assert held(nodes["b"], "k").version == v2  # type: ignore[union-attr]
    assert held(nodes["c"], "k").version == v2  # type: ignore[union-attr]
    fresh.probe()
    assert fresh.status()["b"] == "up"
    assert fresh.get("k") == b"v2"


def test_status_says_down_until_the_node_answers_again() -> None:
    nodes = memory_nodes(3)
    for backoff in (0.0, 30.0):
        events: list[tuple[str, str | None]] = []
        store = ReplicatedStore(nodes, down_backoff=backoff,
                                on_event=lambda e, seen=events: seen.append((e.kind, e.node)))
        nodes["m0"].kill()
        assert store.probe() == {"m0": "down", "m1": "up", "m2": "up"}
        assert store.status()["m0"] == "down"
        nodes["m0"].revive()
        assert store.probe()["m0"] == "up"
        assert events == [("node_down", "m0"), ("node_up", "m0")]
    # A node that never answered is down, not recovering, whatever the backoff says.
    clock = FakeClock()
    nodes["m2"].kill()
    store = ReplicatedStore(nodes, down_backoff=1.0, clock=clock)
    clock.advance(5.0)
    assert store.status()["m2"] == "down"


def test_an_empty_node_is_not_refilled_while_another_replica_is_unreachable() -> None:
    """The only other copy of an acknowledged write may be on the node that repair() cannot
    reach: the empty node must keep out of quorums until a pass reached every node."""
    nodes = {name: MemoryNode(name) for name in "abc"}
    store = ReplicatedStore(nodes, down_backoff=0.0)
    store.put("k", b"x1")
    nodes["c"].kill()
    x2 = store.put("k", b"x2")              # on a and b only
    nodes["c"].revive()                     # c holds x1
    nodes["a"].kill()
    nodes["a"].revive(empty=True)           # x2 is on b alone now
    nodes["b"].kill()
    report = store.repair()
    assert report.nodes_unreachable == ["b"] and report.nodes_refilled == []
    assert store.status() == {"a": "recovering", "b": "down", "c": "up"}
    with pytest.raises(QuorumError):        # not x1 from a and c
        store.get("k")
    nodes["b"].revive()
    assert store.repair().nodes_refilled == ["a"]
    assert store.get_versioned("k") == (b"x2", x2)
    assert {held(node, "k").version for node in nodes.values()} == {x2}  # type: ignore[union-attr]


def test_repair_refills_an_empty_node_with_every_key() -> None:
    nodes = memory_nodes(5)
    store = ReplicatedStore(nodes, down_backoff=0.0)
    items = {f"k{i}": b"%d" % i for i in range(500)}
    store.put_many(items)
    victim = nodes["m3"]
    expected = len(victim)
    victim.kill()
    victim.revive(empty=True)
    assert store.probe()["m3"] == "recovering"
    report = store.repair(batch=64)
    assert report.nodes_refilled == ["m3"]
    assert report.keys_checked == 500
    assert report.replicas_repaired == expected == len(victim)
    assert store.status()["m3"] == "up"


# -- item 4: membership ---------------------------------------------------------------------------


def changed_keys(keys: list[str], old: list[str], new: list[str], replicas: int = 3) -> int:
    old_ring, new_ring = HashRing(old), HashRing(new)
    return sum(old_ring.preference_list(k, replicas) != new_ring.preference_list(k, replicas)
               for k in keys)


def check_placement(store: ReplicatedStore, nodes: dict[str, MemoryNode],
                    expected: dict[str, bytes]) -> None:
    """Every key on exactly its preference list, at one version, with its expected value."""
    for key, value in expected.items():
        prefs = store.preference_list(key)
        records = {name: held(node, key) for name, node in nodes.items()}
        assert {name for name, r in records.items() if r is not None} == set(prefs), key
        assert len({records[name] for name in prefs}) == 1
        assert records[prefs[0]].value == value  # type: ignore[union-attr]


def test_add_node_and_rebalance_move_exactly_the_changed_keys() -> None:
    nodes = memory_nodes(5)
    store = ReplicatedStore(nodes, down_backoff=0.0)
    expected = {f"k{i}": b"%d" % i for i in range(600)}
    store.put_many(expected)
    old = list(nodes)
    nodes["m5"] = MemoryNode("m5")
    store.add_node("m5", nodes["m5"])
    # Pending window: m5 is empty, yet every acknowledged write is read, also with a replica
    # down, and writes made now survive the rebalance.
    assert store.get_many(list(expected)) == list(expected.values())
    nodes["m1"].kill()
    assert all(store.get(k) == v for k, v in expected.items())
    for i in range(0, 600, 7):
        expected[f"k{i}"] = b"pending %d" % i
        store.put(f"k{i}", expected[f"k{i}"])
    nodes["m1"].revive()
    store.repair()
    moved = store.rebalance()
    assert moved == changed_keys(list(expected), old, list(nodes)) > 0
    check_placement(store, nodes, expected)
    assert store.get_many(list(expected)) == list(expected.values())
    assert store.rebalance() == 0


def test_remove_node_and_rebalance_move_exactly_the_changed_keys() -> None:
    nodes = memory_nodes(6)
    store = ReplicatedStore(nodes, down_backoff=0.0)
    expected = {f"k{i}": b"%d" % i for i in range(600)}
    store.put_many(expected)
    old = list(nodes)
    had = len(nodes["m2"])
    store.remove_node("m2")
    assert "m2" not in store.nodes
    assert all(store.get(k) == v for k, v in expected.items())   # m2 still read until rebalance
    for i in range(3, 600, 11):
        expected[f"k{i}"] = b"pending %d" % i
        store.put(f"k{i}", expected[f"k{i}"])
    removed = nodes.pop("m2")
    moved = store.rebalance()
    assert moved == changed_keys(list(expected), old, list(nodes)) == had
    assert len(removed) == 0
    check_placement(store, nodes, expected)


def test_a_dead_node_can_be_removed_and_its_keys_rebalanced() -> None:
    nodes = memory_nodes(5)
    store = ReplicatedStore(nodes, down_backoff=0.0)
    expected = {f"k{i}": b"%d" % i for i in range(300)}
    store.put_many(expected)
    old = list(nodes)
    nodes["m1"].kill()                       # gone for good
    store.remove_node("m1")
    dead = nodes.pop("m1")
    assert store.rebalance() == changed_keys(list(expected), old, list(nodes)) > 0
    assert "m1" not in store.status()
    check_placement(store, nodes, expected)
    # With the dead node forgotten, a node back empty can be refilled again.
    nodes["m2"].kill()
    nodes["m2"].revive(empty=True)
    assert store.repair().nodes_refilled == ["m2"]
    check_placement(store, nodes, expected)
    assert len(dead) > 0                     # what it held was never needed


def test_a_write_in_the_pending_window_is_not_numbered_below_an_acknowledged_one() -> None:
    """Before rebalance() a new, empty node counts. A store that never saw the key must not
    take the one-round-trip path with the new node and a replica that missed the last write
    as its 'write quorum': its version would sort below that acknowledged write."""
    nodes = {name: MemoryNode(name) for name in "abc"}
    writer = ReplicatedStore(nodes, down_backoff=0.0)
    late = ReplicatedStore(dict(nodes), down_backoff=0.0)
    new_ring = HashRing(["a", "b", "c", "d"])
    key = find_key(lambda k: "d" in new_ring.preference_list(k, 3))
    kept = [n for n in new_ring.preference_list(key, 3) if n != "d"]
    nodes[kept[1]].kill()                       # misses the next writes
    for i in range(3):
        acked = writer.put(key, b"x%d" % i)
    nodes[kept[1]].revive()
    late.add_node("d", MemoryNode("d"))
    version = late.put(key, b"y")
    assert version > acked
    assert late.get_versioned(key) == (b"y", version)
    assert writer.get_versioned(key) == (b"y", version)


# -- batch calls ----------------------------------------------------------------------------------


def contents(nodes: dict[str, MemoryNode], keys: list[str]) -> dict[str, list[object]]:
    """What each node holds, with versions reduced to (counter, writer id without the store's
    sequence number), so two stores with the same writer id can be compared."""
    out: dict[str, list[object]] = {}
    for name, node in nodes.items():
        try:
            records = node.read(keys)[1]
        except NodeDown:
            continue
        out[name] = [None if r is None else (r.value, r.version.counter, r.version.writer[:-12])
                     for r in records]
    return out


def test_put_many_and_get_many_equal_the_scalar_loop() -> None:
    batch_nodes, loop_nodes = memory_nodes(5), memory_nodes(5)
    batch = ReplicatedStore(batch_nodes, writer_id="ab")
    loop = ReplicatedStore(loop_nodes, writer_id="ab")
    keys = [f"k{i}" for i in range(300)]
    rounds = [
        {k: b"first %s" % k.encode() for k in keys[:200]},
        {k: b"second %s" % k.encode() for k in keys[100:300]},   # half new, half updates
    ]
    for items in rounds:
        versions = batch.put_many(items)
        assert versions == [loop.put(k, v) for k, v in items.items()]
        assert contents(batch_nodes, keys) == contents(loop_nodes, keys)
    # Stores that never saw the keys (their one-round-trip guess fails): the same outcome.
    batch2 = ReplicatedStore(batch_nodes, writer_id="cd")
    loop2 = ReplicatedStore(loop_nodes, writer_id="cd")
    items = {k: b"third" for k in keys[::3]}
    batch_versions = batch2.put_many(list(items.items()))
    loop_versions = [loop2.put(k, v) for k, v in items.items()]
    assert [v.counter for v in batch_versions] == [v.counter for v in loop_versions]
    assert contents(batch_nodes, keys) == contents(loop_nodes, keys)
    # And with a replica down (the read-first path on some keys).
    batch_nodes["m1"].kill()
    loop_nodes["m1"].kill()
    items = {k: b"fourth" for k in keys[1::4]}
    assert [v.counter for v in batch2.put_many(items)] == \
        [loop2.put(k, v).counter for k, v in items.items()]
    assert contents(batch_nodes, keys) == contents(loop_nodes, keys)
    wanted = keys + ["missing", "k5"]
    assert batch.get_many(wanted) == [batch.get(k) for k in wanted]
    assert loop.get_many(wanted) == [loop.get(k) for k in wanted]
    assert batch.get_many(wanted) == loop.get_many(wanted)
    assert batch.get_many([]) == [] and batch.put_many({}) == []


# -- item 6: bad input ----------------------------------------------------------------------------


@pytest.fixture
def store() -> ReplicatedStore:
    return ReplicatedStore(memory_nodes(4))


@pytest.mark.parametrize("value", ["text", 5, 1.5, None, [b"x"], object()])
def test_values_must_be_bytes_like(store: ReplicatedStore, value: object) -> None:
    with pytest.raises(TypeError, match="value"):
        store.put("k", value)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="value"):
        store.put_many({"a": b"fine", "k": value})  # type: ignore[dict-item]
    assert store.get_many(["a", "k"]) == [None, None]   # nothing of the batch was written


def test_bytes_like_values_are_stored_as_bytes(store: ReplicatedStore) -> None:
    store.put("a", bytearray(b"ba"))
    store.put("b", memoryview(b"mv"))
    store.put("c", b"")
    assert store.get_many(["a", "b", "c"]) == [b"ba", b"mv", b""]


@pytest.mark.parametrize("key", [1, b"k", None, ("k",), 1.0])
def test_keys_must_be_str(store: ReplicatedStore, key: object) -> None:
    for call in (lambda: store.put(key, b"v"), lambda: store.get(key),
                 lambda: store.get_versioned(key), lambda: store.delete(key),
                 lambda: store.get_many(["ok", key]), lambda: store.put_many([(key, b"v")]),
                 lambda: store.preference_list(key)):
        with pytest.raises(TypeError, match="key"):
            call()  # type: ignore[no-untyped-call]


@pytest.mark.parametrize("options, error, pattern", [
    ({"replicas": 5}, ValueError, "replicas .* larger than the number of nodes"),
    ({"replicas": 0}, ValueError, "replicas"),
    ({"replicas": -1}, ValueError, "replicas"),
    ({"replicas": "3"}, TypeError, "replicas"),
    ({"replicas": True}, TypeError, "replicas"),
    ({"write_quorum": 4}, ValueError, "write_quorum .* larger than replicas"),
    ({"read_quorum": 4}, ValueError, "read_quorum .* larger than replicas"),
    ({"replicas": 2, "write_quorum": 3, "read_quorum": 1}, ValueError, "write_quorum"),
    ({"write_quorum": 0}, ValueError, "write_quorum"),
    ({"read_quorum": 0}, ValueError, "read_quorum"),
    ({"read_quorum": 2.0}, TypeError, "read_quorum"),
    ({"consistency": "linearizable"}, ValueError, "consistency"),
    ({"writer_id": ""}, ValueError, "writer_id"),
    ({"writer_id": "XYZ"}, ValueError, "writer_id"),
    ({"writer_id": "ab cd"}, ValueError, "writer_id"),
    ({"writer_id": "ABC"}, ValueError, "writer_id"),
    ({"writer_id": 123}, TypeError, "writer_id"),
    ({"writer_id": b"ab"}, TypeError, "writer_id"),
    ({"tombstone_grace": -1.0}, ValueError, "tombstone_grace"),
    ({"down_backoff": float("nan")}, ValueError, "down_backoff"),
    ({"timeout": float("inf")}, ValueError, "timeout"),
])
def test_bad_configuration(options: dict[str, object], error: type[Exception],
                           pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        ReplicatedStore(memory_nodes(4), **options)  # type: ignore[arg-type]


def test_bad_nodes() -> None:
    with pytest.raises(TypeError, match="nodes"):
        ReplicatedStore([MemoryNode("a")])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nodes"):
        ReplicatedStore({})
    with pytest.raises(TypeError, match="nodes"):
        ReplicatedStore({"a": MemoryNode(), "b": MemoryNode(), "c": object()})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="nodes"):
        ReplicatedStore({"a": MemoryNode(), "b": MemoryNode(), 3: MemoryNode()})  # type: ignore[dict-item]


def test_bad_membership_changes(store: ReplicatedStore) -> None:
    with pytest.raises(UnknownNodeError) as info:
        store.remove_node("nope")
    assert isinstance(info.value, KeyError) and info.value.node == "nope"
    assert "nope" in str(info.value)
    with pytest.raises(ValueError, match="already"):
        store.add_node("m0", MemoryNode())
    with pytest.raises(TypeError, match="node"):
        store.add_node("x", object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        store.add_node("", MemoryNode())        # (an empty name is a bad value, as in the ring)
    with pytest.raises(TypeError, match="name"):
        store.add_node(3, MemoryNode())  # type: ignore[arg-type]
    store.remove_node("m3")
    with pytest.raises(ValueError, match="fewer nodes than replicas"):
        store.remove_node("m2")
    assert store.rebalance() == 0


def test_bad_calls_leave_the_store_working(store: ReplicatedStore) -> None:
    version = store.put("k", b"v")
    with pytest.raises(TypeError, match="if_version"):
        store.put("k", b"w", if_version="1:ab")
    with pytest.raises(ValueError, match="more than once"):
        store.put_many([("a", b"1"), ("a", b"2")])
    with pytest.raises(TypeError):
        store.put("k", "w")  # type: ignore[arg-type]
    assert store.get_versioned("k") == (b"v", version)
    assert store.get_many(["a"]) == [None]
    assert store.put("k", b"w") > version
