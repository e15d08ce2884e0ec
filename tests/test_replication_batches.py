"""Issue 13: replicated batches at wire speed, repair by bucket digests, layout 2.

Oracles: a dict model of what was acknowledged; codec's pure-Python encoder for the kernel's
blobs; hiredis' pack_command for the kernel's RESP; HashRing.preference_many for the buckets'
replicas; a full scan of every bucket for the servers' digests.
"""

from __future__ import annotations

import random
import time
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from replication_checks import check_digests_match_a_full_scan

from ringkit import HashRing
from ringkit._records import (
    dict_read,
    dict_write,
    dict_write_if,
    encode_blobs,
    encode_keys,
    heads_of,
    merge_newest,
    next_counters,
    pack_apply,
    pack_hget,
    stale_of,
    values_of,
    versions_of,
)
from ringkit._redisio import pack_python
from ringkit.errors import PartialWriteError
from ringkit.replication import (
    LayoutError,
    MemoryNode,
    RedisNode,
    ReplicatedStore,
    Version,
    codec,
)
from ringkit.replication import redis as redis_node
from ringkit.replication.maintenance import bucket_owners

TIMEOUT = 2.0
writers = st.text("0123456789abcdef", min_size=1, max_size=16)


def wr(writer: str) -> str:
    return writer.rjust(codec.WRITER_DIGITS, "0")


def redis_nodes(servers: list[Any], **options: Any) -> dict[str, RedisNode]:
    return {f"r{i}": RedisNode(s.url, name=f"r{i}", socket_timeout=TIMEOUT, **options)
            for i, s in enumerate(servers)}


def new_store(nodes: dict[str, Any], **options: Any) -> ReplicatedStore:
    store = ReplicatedStore(nodes, **options)
    store.initialize()
    return store


# -- the blob layout ------------------------------------------------------------------------------


@given(st.lists(st.tuples(st.integers(0, 2**53 - 1), writers, st.integers(0, 2**48 - 1)),
                min_size=2, max_size=6), st.binary(max_size=40))
def test_blobs_order_as_their_versions(versions: list[tuple[int, str, int]], value: bytes) -> None:
    blobs = {}
    for counter, writer_id, seq in versions:
        version = Version(counter, codec.writer_name(writer_id, seq))
        blobs[version] = codec.encode_many([b"k"], [value], [counter], [version.writer], 0)[0]
    ordered = sorted(blobs)
    assert [blobs[v] for v in ordered] == sorted(blobs.values())
    for version, blob in blobs.items():
        assert codec.version_of(blob) == version
        assert codec.decode("k", blob).value == value


@given(st.lists(st.tuples(st.text(max_size=8), st.one_of(st.none(), st.binary(max_size=20)),
                          st.integers(0, 2**53 - 1)), max_size=20),
       writers, st.integers(0, 2**40), st.integers(0, 2**45))
def test_the_kernel_encodes_as_the_reference(items: list[Any], writer_id: str, first: int,
                                             deleted: int) -> None:
    fields = [k.encode() for k, _, _ in items]
    values = [v for _, v, _ in items]
    counters = [c for _, _, c in items]
    head = writer_id.rjust(16, codec.PAD)
    got = encode_blobs(fields, values, counters, head.encode(), first, deleted)
    names = [codec.writer_name(writer_id, first + i) for i in range(len(items))]
    assert got == codec.encode_many(fields, values, counters, names, deleted)
    assert versions_of(got, Version) == [Version(c, w) for c, w in zip(counters, names)]
    for (key, value, _), blob in zip(items, got):
        record = codec.decode(key, blob)
        assert record.value == value
        assert record.deleted_ms == (deleted if value is None else 0)
        # The item hash: xxh64 of the key's bytes and the blob's first 43 bytes.
        from ringkit import hash64
        expect = hash64(key.encode() + blob[:codec.HEAD])
        assert int.from_bytes(blob[codec.HEAD:codec.BLOB_HEAD], "big") == expect


@given(st.lists(st.tuples(st.binary(max_size=12), st.integers(0, 65535),
                          st.binary(max_size=30), st.binary(max_size=44)), max_size=30),
       st.integers(1, 7), st.integers(1, 200), st.booleans(), st.data())
@settings(max_examples=200)
def test_the_kernel_packs_resp_as_hiredis_does(items: list[Any], chunk: int, chunk_bytes: int,
                                               cas: bool, data: st.DataObject) -> None:
    fields = [f for f, _, _, _ in items]
    buckets = np.asarray([b for _, b, _, _ in items], dtype=np.uint64)
    blobs = [v for _, _, v, _ in items]
    expected = [e for _, _, _, e in items] if cas else None
    ix = data.draw(st.lists(st.integers(0, len(items) - 1), max_size=len(items))) \
        if items else []
    pos = np.asarray(ix, dtype=np.intp)
    got = pack_apply(b"sha1", b"p:", b"p:__floor__" if cas else None, fields, buckets, blobs,
                     expected, pos, chunk, chunk_bytes)
    commands = []
    start = 0
    while start < len(ix):
        stop, size = start, 0
        while stop < len(ix) and stop - start < chunk:
            size += len(blobs[ix[stop]])
            if size > chunk_bytes and stop > start:
                break
            stop += 1
        part = ix[start:stop]
        keys = [b"p:b:%04x" % int(buckets[i]) for i in part]
        args: list[Any] = []
        for i in part:
            args += [fields[i], blobs[i]] + ([expected[i]] if expected is not None else [])
        lead = [b"p:__floor__"] if cas else []
        commands.append(("EVALSHA", b"sha1", len(part) + len(lead), *lead, *keys, *args))
        start = stop
    assert got == [pack_python([c]) for c in commands]
    assert pack_hget(b"p:", fields, buckets, pos) == pack_python(
        [("HGET", b"p:b:%04x" % int(buckets[i]), fields[i]) for i in ix])


@pytest.mark.parametrize("call", [
    lambda: encode_blobs(["k"], [b"v"], [1], b"0" * 16, 0, 0),               # str key
    lambda: encode_blobs([b"k"], ["v"], [1], b"0" * 16, 0, 0),               # str value
    lambda: encode_blobs([b"k"], [b"v"], [2**53], b"0" * 16, 0, 0),          # counter too big
    lambda: encode_blobs([b"k"], [b"v"], [-1], b"0" * 16, 0, 0),
    lambda: encode_blobs([b"k"], [b"v"], [1, 2], b"0" * 16, 0, 0),           # lengths differ
    lambda: encode_blobs([b"k"], [b"v"], [1], b"0" * 15, 0, 0),              # writer head
    lambda: encode_blobs([b"k"], [b"v"], [1], b"0" * 16, 2**48 - 1, 0),      # sequence
    lambda: pack_apply(b"s", b"p", None, [b"k"], [1], [b"v"], None, [1], 10, 10),  # ix
    lambda: pack_apply(b"s", b"p", None, [b"k"], [1], [b"v"], None, [-1], 10, 10),
    lambda: pack_apply(b"s", b"p", None, [b"k"], [1, 2], [b"v"], None, None, 10, 10),
    lambda: pack_apply(b"s", b"p", None, [b"k"], [1], [b"v"], [b""], None, 10, 10),  # floor
    lambda: pack_apply(b"s", b"p", None, [b"k"], [1], [b"v"], None, None, 0, 10),
    lambda: pack_hget(b"p", [b"k", 3], [1, 2], None),
    lambda: versions_of([b"zz" * 30], Version),
    lambda: versions_of([b"00"], Version),
    lambda: next_counters([b"xyz"], [0]),
    lambda: next_counters([None], [0, 1]),
    lambda: dict_read({}, [b"k", "k"], None),                                # str field
    lambda: dict_write({}, [b"k"], [b"v", b"w"], None),                      # lengths differ
    lambda: dict_write({}, [b"k"], [b"v"], [1]),                             # ix
    lambda: dict_write_if({}, [b"k"], [b"v"], [b""], None, b"0"),            # floor
    lambda: dict_write_if({}, [b"k"], [b"v"], [None], None, b"0" * 14),      # expected
    lambda: merge_newest([None], [0], [b"a", b"b"]),                         # rows
    lambda: merge_newest([None], [0], ["a"]),
    lambda: stale_of([None], [3], [b"a"]),
    lambda: values_of([b"short"]),
    lambda: heads_of([b"short"]),
])
def test_the_kernels_refuse_bad_input(call: Any) -> None:
    with pytest.raises((TypeError, ValueError, IndexError, OverflowError)):
        call()


_small_blobs = st.binary(min_size=codec.BLOB_HEAD, max_size=codec.BLOB_HEAD + 3).map(
    lambda b: b"%014x" % (b[0] % 4) + b[14:])


@given(st.dictionaries(st.binary(max_size=3), _small_blobs, max_size=12),
       st.lists(st.tuples(st.binary(max_size=3), _small_blobs, st.booleans()), max_size=12),
       st.integers(0, 3), st.booleans())
def test_memory_node_kernels_do_what_the_python_did(held: dict[bytes, bytes], items: list[Any],
                                                    floor: int, subset: bool) -> None:
    fields = [f for f, _, _ in items]
    blobs = [b for _, b, _ in items]
    # expected: the held version head (some of them), or b"" (absent), or a wrong head
    expected = [held[f][:codec.VERSION_HEAD] if f in held and hit else b"" if hit else b[:1]
                for f, b, hit in items]
    ix = np.arange(0, len(items), 2, dtype=np.intp) if subset else None
    at = list(range(len(items))) if ix is None else ix.tolist()
    assert dict_read(held, fields, ix) == [held.get(fields[i]) for i in at]

    want, want_ok = dict(held), []
    for i in at:
        cur = want.get(fields[i])
        ok = cur is None or blobs[i] > cur
        if ok:
            want[fields[i]] = blobs[i]
        want_ok.append(ok)
    got = dict(held)
    assert dict_write(got, fields, blobs, ix) == want_ok and got == want

    want, want_ok = dict(held), []
    for i in at:
        cur = want.get(fields[i])
        if cur is None:
            ok = not expected[i] and blobs[i][:14] > b"%014x" % floor
        else:
            ok = cur[:codec.VERSION_HEAD] == expected[i]
        if ok:
            want[fields[i]] = blobs[i]
        want_ok.append(ok)
    got = dict(held)
    assert dict_write_if(got, fields, blobs, expected, ix, b"%014x" % floor) == want_ok
    assert got == want


@given(st.lists(st.one_of(st.none(), _small_blobs), min_size=1, max_size=10),
       st.lists(st.tuples(st.integers(0, 9), st.one_of(st.none(), _small_blobs)), max_size=10))
def test_the_batch_read_merge_kernels_do_what_the_python_did(best: list[Any],
                                                             rows: list[Any]) -> None:
    ix = np.asarray([i % len(best) for i, _ in rows], dtype=np.intp)
    replies = [r for _, r in rows]
    want = list(best)
    for i, row in zip(ix.tolist(), replies):
        if row is not None and (want[i] is None or row > want[i]):
            want[i] = row
    got = list(best)
    merge_newest(got, ix, replies)
    assert got == want
    stale = [i for i, row in zip(ix.tolist(), replies) if row != got[i] and got[i] is not None]
    assert stale_of(got, ix, replies).tolist() == stale
    assert values_of(got) == [None if b is None or b[codec.VERSION_HEAD] == 0x74
                              else b[codec.BLOB_HEAD:] for b in got]
    assert heads_of(got) == [None if b is None else b[:codec.VERSION_HEAD] for b in got]


def test_encode_keys_gives_up_on_what_is_not_a_utf8_str() -> None:
    assert encode_keys(["a", "é", ""]) == [b"a", "é".encode(), b""]
    assert encode_keys(["a", b"b"]) is None
    assert encode_keys(["a", "\ud800"]) is None
    store = ReplicatedStore({"a": MemoryNode("a")}, replicas=1, write_quorum=1, read_quorum=1)
    with pytest.raises(TypeError, match="key"):
        store.put_many({"a": b"1", 3: b"2"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="key"):
        store.put_many({"\ud800": b"1"})


def test_writer_ids_that_differ_by_leading_zeros_stay_apart() -> None:
    nodes = {f"m{i}": MemoryNode(f"m{i}") for i in range(3)}
    a = ReplicatedStore(nodes, writer_id="a")
    b = ReplicatedStore(nodes, writer_id="0a")
    assert a.put("k", b"1").writer != b.put("j", b"1").writer
    assert codec.writer_name("a", 0) != codec.writer_name("0a", 0)
    assert codec.writer_name("0123456789abcdef", 1) == "0123456789abcdef000000000001"


def test_a_version_writer_of_another_width_is_refused() -> None:
    with pytest.raises(ValueError, match="writer"):
        codec.header(1, "ab", False)
    with pytest.raises(ValueError, match="writer_id"):
        ReplicatedStore({"m": MemoryNode()}, replicas=1, write_quorum=1, read_quorum=1,
                        writer_id="0" * 17)


# -- buckets and their replicas ---------------------------------------------------------------


@pytest.mark.parametrize("n_nodes,replicas", [(3, 3), (5, 3), (10, 2), (4, 1)])
def test_a_uniform_buckets_replicas_are_every_keys_preference_list(n_nodes: int,
                                                                    replicas: int) -> None:
    ring = HashRing([f"node-{i}" for i in range(n_nodes)])
    uniform, owners = bucket_owners(ring, replicas)
    keys = [f"user:{i}" for i in range(20_000)]
    prefs = ring.preference_many(keys, replicas)
    buckets = codec.buckets_of(keys).astype(np.intp)
    assert uniform.mean() > 0.8
    for key_prefs, b in zip(prefs, buckets):
        if uniform[b]:
            assert set(key_prefs.tolist()) == set(owners[b].tolist())


# -- batches --------------------------------------------------------------------------------------


def _memory_store(**options: Any) -> tuple[dict[str, MemoryNode], ReplicatedStore]:
    nodes = {f"m{i}": MemoryNode(f"m{i}") for i in range(5)}
    return nodes, ReplicatedStore(nodes, **options)


def _check_against_model(store: ReplicatedStore, rng: random.Random, rounds: int) -> None:
    model: dict[str, bytes | None] = {}
    universe = [f"k{i}" for i in range(300)] + ["", "ключ", "a b"]
    for _ in range(rounds):
        size = rng.choice([1, 2, 10, 150])
        keys = rng.sample(universe, size)
        if rng.random() < 0.25:
            versions = store.delete_many(keys)
            for k in keys:
                model[k] = None
        else:
            items = {k: rng.randbytes(rng.randint(0, 40)) for k in keys}
            versions = store.put_many(items)
            model.update(items)
        assert len(versions) == len(keys)
        assert all(isinstance(v, Version) and len(v.writer) == 28 for v in versions)
        probe = rng.sample(universe, 50)
        assert store.get_many(probe) == [model.get(k) for k in probe]
        assert [store.get(k) for k in probe[:5]] == [model.get(k) for k in probe[:5]]


def test_batches_on_memory_nodes_read_what_was_acknowledged() -> None:
    _, store = _memory_store()
    _check_against_model(store, random.Random(13), 60)


def test_versions_of_a_batch_increase_and_deletes_are_tombstones() -> None:
    nodes, store = _memory_store()
    first = store.put_many({"a": b"1", "b": b"2"})
    again = store.put_many([("a", b"3"), ("b", b"4")])
    assert all(v2 > v1 for v1, v2 in zip(first, again))
    gone = store.delete_many(["a"])
    assert gone[0] > again[0]
    assert store.get_versioned("a") == (None, gone[0])
    assert store.get_many(["a", "b"]) == [None, b"4"]
    held = [n.read(["a"])[1][0] for n in nodes.values()]
    assert {r.version for r in held if r is not None} == {gone[0]}
    assert all(r is None or r.tombstone for r in held)


@pytest.mark.parametrize("call,error,text", [
    (lambda s: s.delete_many("abc"), TypeError, "keys"),
    (lambda s: s.delete_many(["a", "a"]), ValueError, "more than once"),
    (lambda s: s.delete_many([b"a"]), TypeError, "key"),
    (lambda s: s.put_many({"a": "str"}), TypeError, "value"),
    (lambda s: s.put_many([("a", b"1"), ("a", b"2")]), ValueError, "more than once"),
    (lambda s: s.put_many([("a",)]), TypeError, "items"),
    (lambda s: s.put_many({1: b"x"}), TypeError, "key"),
    (lambda s: s.get_many(["\ud800"]), ValueError, "key"),
    (lambda s: s.repair(batch=0), ValueError, "batch"),
    (lambda s: s.repair(progress=3), TypeError, "progress"),
])
def test_bad_batches_are_refused_naming_the_argument(call: Any, error: type, text: str) -> None:
    _, store = _memory_store()
    with pytest.raises(error, match=text):
        call(store)
    assert store.get_many([]) == [] and store.put_many({}) == [] and store.delete_many([]) == []


def test_a_failed_delete_many_reports_every_keys_outcome() -> None:
    nodes, store = _memory_store(down_backoff=0.0)
    keys = [f"k{i}" for i in range(100)]
    store.put_many({k: b"v" for k in keys})
    doomed = {k for k in keys if {"m0", "m1"} <= set(store.preference_list(k))}
    nodes["m0"].kill()
    nodes["m1"].kill()
    with pytest.raises(PartialWriteError) as caught:
        store.delete_many(keys)
    outcomes = caught.value.outcomes
    assert set(outcomes) == set(keys)
    for key, outcome in outcomes.items():
        if key in doomed:
            assert outcome.status in ("failed", "unknown")
        else:
            assert outcome.status == "acknowledged" and outcome.version is not None
    nodes["m0"].revive()
    nodes["m1"].revive()
    acked = [k for k, o in outcomes.items() if o.status == "acknowledged"]
    assert store.get_many(acked) == [None] * len(acked)


@pytest.mark.redis
def test_batches_on_redis_read_what_was_acknowledged(redis_servers) -> None:  # type: ignore[no-untyped-def]
    store = new_store(redis_nodes(redis_servers(3)))
    _check_against_model(store, random.Random(7), 40)
    big = {f"big:{i}": b"x" * 300_000 for i in range(3)}      # over CHUNK_BYTES each
    store.put_many(big)
    assert store.get_many(list(big)) == list(big.values())


@pytest.mark.redis
def test_a_script_call_carries_a_bounded_batch(redis_servers) -> None:  # type: ignore[no-untyped-def]
    """A 20,000-key put_many is sent as calls of at most CHUNK items (and about CHUNK_BYTES):
    no call holds a server for long. INFO commandstats counts the calls."""
    servers = redis_servers(3)
    store = new_store(redis_nodes(servers))
    for s in servers:
        s.client().config_resetstat()
    store.put_many({f"k{i}": b"v" * 10 for i in range(20_000)})
    for s in servers:
        stats = s.client().info("commandstats")
        calls = stats["cmdstat_evalsha"]["calls"]
        assert calls >= 20_000 // redis_node.CHUNK
        per = stats.get("cmdstat_hsetnx", {"calls": 0})["calls"] / calls
        assert per <= redis_node.CHUNK


# -- layout 1 data ---------------------------------------------------------------------------------


@pytest.mark.redis
def test_data_of_layout_1_is_refused_and_migrated(redis_servers) -> None:  # type: ignore[no-untyped-def]
    servers = redis_servers(3)
    for s in servers:                         # what ringkit 0.1 wrote
        c = s.client()
        c.set("ringkit:rep:__epoch__", "ready:default:abc")
        c.hset("ringkit:rep:{user:1}", mapping={"c": 4, "w": "ab" + "0" * 12, "v": b"old",
                                                  "d": 0})
        c.hset("ringkit:rep:{gone}", mapping={"c": 2, "w": "ab" + "0" * 12, "d": 1234})
    with pytest.raises(LayoutError, match="ringkit store migrate"):
        ReplicatedStore(redis_nodes(servers))
    for node in redis_nodes(servers).values():
        assert node.migrate() == 2
        assert node.migrate() == 0                     # again: nothing left to convert
    store = ReplicatedStore(redis_nodes(servers))
    old = ("ab" + "0" * 12).rjust(28, "z")            # padded as no writer id pads
    assert store.get_versioned("user:1") == (b"old", Version(4, old))
    assert store.get_versioned("gone") == (None, Version(2, old))
    assert store.put("user:1", b"new").counter == 5
    assert not any(k.startswith(b"ringkit:rep:{") for k in servers[0].client().keys("*"))


# -- repair ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_nodes,replicas", [(3, 3), (5, 3)])
def test_repair_skips_buckets_in_sync_and_repairs_exactly_what_diverged(
        n_nodes: int, replicas: int) -> None:
    nodes = {f"m{i}": MemoryNode(f"m{i}") for i in range(n_nodes)}
    store = ReplicatedStore(nodes, replicas=replicas)
    keys = [f"user:{i}" for i in range(3000)]
    store.put_many({k: b"%d" % i for i, k in enumerate(keys)})
    first = store.repair()
    synced = store.repair()
    assert synced.keys_checked == len(keys) and synced.keys_repaired == 0
    assert synced.replicas_repaired == 0 and synced.bytes_moved == 0
    if n_nodes == replicas:
        assert synced.keys_scanned == 0                 # every bucket agreed by digest
    assert first.keys_repaired == 0
    # Remove 30 keys from one node behind the store's back (a lost write).
    victim = nodes["m1"]
    lost = [k for k in keys if "m1" in store.preference_list(k)][:30]
    with victim._lock:
        blobs = {k: victim._items.pop(k.encode()) for k in lost}
        victim._changes += 1
    report = store.repair()
    assert report.keys_repaired == len(lost) and report.replicas_repaired == len(lost)
    assert report.bytes_moved == sum(len(b) for b in blobs.values())
    assert 0 < report.keys_scanned < len(keys)
    assert report.buckets_skipped > 0
    assert all(victim._items[k.encode()] == blobs[k] for k in lost)
    again = store.repair()
    assert again.keys_repaired == 0
    check_digests_match_a_full_scan(nodes)


def test_repair_refills_a_wiped_node_and_purges_settled_tombstones() -> None:
    nodes = {f"m{i}": MemoryNode(f"m{i}") for i in range(3)}
    store = ReplicatedStore(nodes, tombstone_grace=0.0)
    keys = [f"k{i}" for i in range(500)]
    store.put_many({k: b"v" for k in keys})
    store.delete_many(keys[:100])
    store.repair()                                   # third copies of the tombstones
    report = store.repair()
    assert report.tombstones_purged == 0 or store.repair().tombstones_purged == 0
    assert all(len(n) == 400 for n in nodes.values())
    nodes["m2"].kill()
    nodes["m2"].revive(empty=True)
    store.probe()
    report = store.repair()
    assert report.nodes_refilled == ["m2"]
    assert report.keys_repaired == 400 and len(nodes["m2"]) == 400
    assert store.status() == {"m0": "up", "m1": "up", "m2": "up"}


def test_progress_is_reported_per_round() -> None:
    nodes = {f"m{i}": MemoryNode(f"m{i}") for i in range(3)}
    store = ReplicatedStore(nodes)
    store.put_many({f"k{i}": b"v" for i in range(2000)})
    with nodes["m0"]._lock:
        nodes["m0"]._items.clear()
        nodes["m0"]._changes += 1
    seen: list[tuple[int, int]] = []
    report = store.repair(batch=64, progress=lambda done, total, r: seen.append((done, total)))
    assert seen[0][0] == 0 and seen[-1][0] == seen[-1][1] == report.buckets_scanned
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) > 3


@pytest.mark.redis
def test_redis_repair_by_digests_and_a_full_scan_agree(redis_servers) -> None:  # type: ignore[no-untyped-def]
    servers = redis_servers(3)
    nodes = redis_nodes(servers)
    store = new_store(nodes, tombstone_grace=3600.0)
    keys = [f"k{i}" for i in range(5000)]
    store.put_many({k: b"v%d" % i for i, k in enumerate(keys)})
    store.delete_many(keys[:50])
    time.sleep(0.2)
    store.repair()
    assert store.repair().keys_repaired == 0
    held = check_digests_match_a_full_scan(nodes)
    assert held > 1000
    status = store.digest_status()
    assert status.agreeing == status.buckets > 0
    assert status.items == {"r0": 5000, "r1": 5000, "r2": 5000}
    # One server loses everything: every bucket differs, repair refills it.
    servers[1].kill()
    servers[1].restart()
    nodes["r1"].reconnect()
    store.probe()
    report = store.repair()
    assert report.nodes_refilled == ["r1"] and report.keys_repaired == 5000
    assert report.bytes_moved > 5000 * codec.BLOB_HEAD
    check_digests_match_a_full_scan(nodes)
    assert store.get_many(keys[45:55]) == [None] * 5 + [b"v%d" % i for i in range(50, 55)]


@pytest.mark.redis
def test_a_batch_bigger_than_a_round_is_sent_in_rounds(redis_servers) -> None:  # type: ignore[no-untyped-def]
    """35,000 keys with the default socket timeout (0.5 s bounds every round): sent as rounds of
    ROUND_KEYS, each well within it."""
    from ringkit.replication import store as store_module

    servers = redis_servers(3)
    nodes = {f"r{i}": RedisNode(s.url, name=f"r{i}") for i, s in enumerate(servers)}
    store = new_store(nodes)
    keys = [f"k{i}" for i in range(35_000)]
    rounds: list[int] = []
    original = store._write_round

    def counted(*args: Any) -> None:
        rounds.append(len(args[0]))
        original(*args)

    store._write_round = counted  # type: ignore[method-assign]
    versions = store.put_many({k: b"v" * 20 for k in keys})
    assert len(versions) == len(keys)
    assert rounds == [store_module.ROUND_KEYS] * 3 + [5_000]
    assert store.get_many(keys) == [b"v" * 20] * len(keys)
    assert len(store.delete_many(keys)) == len(keys)
    assert store.get_many(keys[::1000]) == [None] * 35
