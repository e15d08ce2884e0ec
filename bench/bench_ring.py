"""The consistent-hash ring: ringkit.HashRing beside uhashring, fastring, hashring, numpy and jump.

One run measures every row of issue 3's "Speed" table beside its peers:

- ``ring.get(str)`` in a Python loop, 100 nodes (per call, the loop included, as a user writes it);
- ``ring.get_many`` over a list of 1,000,000 str;
- ``ring.locate`` over 1,000,000 random uint64 on 16,000 points (100 nodes x 160 vnodes);
- building a ring of 100 nodes x 160 vnodes (per build), with the ring's memory per point
  (``nbytes / len(points)``, index included) recorded in that row's extra_info;
- adding or removing one node of 100 (an add + remove pair, reported per operation).

The peers answer the same question (the node of the first ring point at or after the key's hash,
wrapping; uhashring and hashring take the first point strictly after it), but most place nodes with
their own hash, so their answers differ from ringkit's for the same key: each row first checks, on a
sample of keys, that the peer answers as a model of its own placement (rebuilt here in Python from
its published scheme) says, and compares answers with ringkit directly only where the placement is
the same (libketama mode, numpy over ringkit's own points). The work per lookup is the same kind
everywhere: hash a short str (or take a ready uint64), find its point, return the owner.

fastring publishes wheels only for CPython >= 3.13: its rows are skipped on older Pythons (and the
ringkit targets measured against them then read "n/a" in bench/report.py). Every other peer is
in the ``bench`` extra.

Targets are the issue's; bench/report.py says whether they were met, nothing here asserts on time.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

import ringkit

N_NODES = 100
VNODES = 160
N_POINTS = N_NODES * VNODES
N_LOOP = 100_000  # keys per Python-loop row
N_BATCH = 1_000_000  # the size of bench/conftest.py's key sets
SAMPLE = 1000  # keys checked against a model (or against ringkit) before timing
NAMES = [f"node-{i}" for i in range(N_NODES)]
NEW = "node-new"

# Fewest rounds, longest time per row: about a second a row, so the file runs in well under a minute
# of timing. Two warm-up rounds let the interpreter specialise the Python loops before they count.
TIMING: dict[str, Any] = dict(min_rounds=5, max_time=1.0, warmup=True, warmup_iterations=2)


def bench(group: str) -> pytest.MarkDecorator:
    return pytest.mark.benchmark(group=group, **TIMING)


def lookup_loop(keys: Sequence[Any], get: Callable[[Any], Any]) -> None:
    """The loop every per-call row times: the same for ringkit and its peers."""
    for key in keys:
        get(key)


def jump_loop(keys: Sequence[int], jump_hash: Callable[[int, int], int]) -> None:
    """The same loop for jump.hash(key, buckets), which takes the bucket count on every call."""
    for key in keys:
        jump_hash(key, N_NODES)


# --------------------------------------------------------------------------------------------------
# Models of each peer's placement, rebuilt from its published scheme. Each returns key -> node name.


def _bisect_model(points: list[tuple[int, str]], key_hash: Callable[[str], int],
                  strict: bool) -> Callable[[str], str]:
    """Owner = node of the first point >= hash (``strict``: > hash), wrapping to the first point."""
    points = sorted(points)
    positions = [p for p, _ in points]
    find = bisect.bisect_right if strict else bisect.bisect_left

    def owner(key: str) -> str:
        i = find(positions, key_hash(key))
        return points[i % len(points)][1]

    return owner


def ringkit_model(ring: ringkit.HashRing) -> Callable[[str], str]:
    """DESIGN.md's frozen placement: point i of a node is hash64(name + i as 4 bytes LE)."""
    points = [(ringkit.hash64(name.encode() + i.to_bytes(4, "little")), name)
              for name in ring.nodes for i in range(VNODES)]
    # Equal points go to the name that sorts first: (point, name) tuples sort that way.
    return _bisect_model(points, ringkit.hash64, strict=False)


def fastring_model() -> Callable[[str], str]:
    """fastring 0.2: xxh3_64 of the key; point i = xxh3_64(name + b"#" + i as 4 bytes LE); >=."""
    import xxhash

    points = [(xxhash.xxh3_64_intdigest(name.encode() + b"#" + i.to_bytes(4, "little")), name)
              for name in NAMES for i in range(VNODES)]
    return _bisect_model(points, lambda k: xxhash.xxh3_64_intdigest(k.encode()), strict=False)


def _md5_int(text: str) -> int:
    return int(hashlib.md5(text.encode()).hexdigest(), 16)


def uhashring_model() -> Callable[[str], str]:
    """uhashring's default ring: 128-bit md5 of the key; point w = md5(f"{name}-{w}"); first >."""
    points = [(_md5_int(f"{name}-{w}"), name) for name in NAMES for w in range(VNODES)]
    return _bisect_model(points, _md5_int, strict=True)


def _md5_word(text: str, i: int) -> int:
    return int.from_bytes(hashlib.md5(text.encode()).digest()[4 * i : 4 * i + 4], "little")


def hashring_model() -> Callable[[str], str]:
    """hashring 1.5: libketama's 40 md5 digests per node, but only 3 of the 4 words of each
    (120 points a node, 12,000 in all: it cannot be given 160); the key's hash is its first 4 md5
    bytes; the owner is the first point > hash.
    """
    points = [(_md5_word(f"{name}-{j}", i), name)
              for name in NAMES for j in range(40) for i in range(3)]
    return _bisect_model(points, lambda k: _md5_word(k, 0), strict=True)


def check_sample(get: Callable[[str], Any], model: Callable[[str], str],
                 keys: Sequence[str]) -> None:
    got = [get(k) for k in keys[:SAMPLE]]
    want = [model(k) for k in keys[:SAMPLE]]
    assert got == want
    assert set(got) <= set(NAMES)


# --------------------------------------------------------------------------------------------------
# Rings and key sets, built once per module (the add/remove rows build their own, since they change)


@pytest.fixture(scope="module")
def loop_keys(short_str_keys: list[str]) -> list[str]:
    """100,000 short str keys ("user:0" ...): the first keys of bench/conftest.py's million."""
    return short_str_keys[:N_LOOP]


@pytest.fixture(scope="module")
def uint64_list(uint64_keys: np.ndarray) -> list[int]:
    """The 1,000,000 random uint64 of bench/conftest.py as Python ints, for the per-key loops."""
    return uint64_keys.tolist()


@pytest.fixture(scope="module")
def ring() -> ringkit.HashRing:
    r = ringkit.HashRing(NAMES)
    assert len(r) == N_NODES and r.points.shape[0] == N_POINTS
    return r


@pytest.fixture(scope="module")
def fastring_ring() -> Any:
    fastring = pytest.importorskip("fastring")  # wheels for CPython >= 3.13 only
    r = fastring.HashRing(VNODES)
    for name in NAMES:
        r.add_node(name)
    return r


@pytest.fixture(scope="module")
def uhashring_ring() -> Any:
    uhashring = pytest.importorskip("uhashring")
    return uhashring.HashRing(NAMES)  # 160 vnodes a node by default: 16,000 points


@pytest.fixture(scope="module")
def hashring_ring() -> Any:
    hashring = pytest.importorskip("hashring")
    return hashring.HashRing(NAMES)


# --------------------------------------------------------------------------------------------------
# ring.get(str): one call per key in a Python loop

GET = "ring.get(str): 100 nodes, 100,000 short str keys, one call per key in a Python loop"


@bench(GET)
def test_get_ringkit(measure: Any, ring: ringkit.HashRing, loop_keys: list[str]) -> None:
    check_sample(ring.get, ringkit_model(ring), loop_keys)
    measure(lookup_loop, loop_keys, ring.get, label="ringkit HashRing.get", n_keys=N_LOOP,
            targets=[("ns_per_key", "<=", 70),
                     ("speedup", ">=", 2, "fastring get_node"),
                     ("speedup", ">=", 25, "uhashring get_node")])


@bench(GET)
def test_get_fastring(measure: Any, fastring_ring: Any, loop_keys: list[str]) -> None:
    # Same scheme (first point >= hash, 160 points a node) with xxh3 instead of xxh64 and a "#"
    # between name and index: other owners than ringkit's, the same work per key.
    check_sample(fastring_ring.get_node, fastring_model(), loop_keys)
    measure(lookup_loop, loop_keys, fastring_ring.get_node, label="fastring get_node",
            n_keys=N_LOOP, reference=True)


@bench(GET)
def test_get_uhashring(measure: Any, uhashring_ring: Any, loop_keys: list[str]) -> None:
    # uhashring's default ring: 128-bit md5 points and keys, first point > hash; other owners.
    check_sample(uhashring_ring.get_node, uhashring_model(), loop_keys)
    measure(lookup_loop, loop_keys, uhashring_ring.get_node, label="uhashring get_node",
            n_keys=N_LOOP, reference=True)


@bench(GET)
def test_get_hashring(measure: Any, hashring_ring: Any, loop_keys: list[str]) -> None:
    # hashring: md5, 120 points a node (see hashring_model); other owners.
    check_sample(hashring_ring.get_node, hashring_model(), loop_keys)
    measure(lookup_loop, loop_keys, hashring_ring.get_node, label="hashring get_node",
            n_keys=N_LOOP, reference=True)


# --------------------------------------------------------------------------------------------------
# The same loop on a libketama ring: here the placement is the same, so the answers must be too.

KETAMA = "ring.get(str), libketama placement: 100 servers, 100,000 short str keys, Python loop"


@pytest.fixture(scope="module")
def ketama_rings() -> tuple[ringkit.HashRing, Any]:
    uhashring = pytest.importorskip("uhashring")
    return ringkit.HashRing.ketama(NAMES), uhashring.HashRing(NAMES, hash_fn="ketama")


@bench(KETAMA)
def test_ketama_ringkit(measure: Any, ketama_rings: tuple[Any, Any], loop_keys: list[str]) -> None:
    ours, theirs = ketama_rings
    # uhashring takes the first point > hash where libketama takes >=: they differ only for a key
    # whose hash equals a point, which no key of the sample does.
    assert [ours.get(k) for k in loop_keys[:SAMPLE]] == \
        [theirs.get_node(k) for k in loop_keys[:SAMPLE]]
    measure(lookup_loop, loop_keys, ours.get, label="ringkit HashRing.ketama get",
            n_keys=N_LOOP)


@bench(KETAMA)
def test_ketama_uhashring(measure: Any, ketama_rings: tuple[Any, Any],
                          loop_keys: list[str]) -> None:
    measure(lookup_loop, loop_keys, ketama_rings[1].get_node,
            label="uhashring (hash_fn='ketama') get_node", n_keys=N_LOOP, reference=True)


# --------------------------------------------------------------------------------------------------
# ring.get_many over 1,000,000 str

BATCH = "ring.get_many: 100 nodes, 1,000,000 short str keys in one call"


@bench(BATCH)
def test_batch_ringkit(measure: Any, ring: ringkit.HashRing, short_str_keys: list[str]) -> None:
    sample = short_str_keys[:SAMPLE]
    assert [ring.nodes[i] for i in ring.get_many(sample)] == [ring.get(k) for k in sample]
    measure(ring.get_many, short_str_keys, label="ringkit get_many (list)", n_keys=N_BATCH,
            targets=[("keys_per_s", ">=", 40e6),
                     ("speedup", ">=", 5, "fastring get_node_batch")])


@bench(BATCH)
def test_batch_ringkit_out(measure: Any, ring: ringkit.HashRing, short_str_keys: list[str]) -> None:
    # The int32 result reused: no 4 MB allocation per call.
    out = np.empty(N_BATCH, dtype=np.int32)
    measure(ring.get_many, short_str_keys, out=out, label="ringkit get_many (list) out=",
            n_keys=N_BATCH)
    assert out[:SAMPLE].tolist() == ring.get_many(short_str_keys[:SAMPLE]).tolist()


@bench(BATCH)
def test_batch_ringkit_arrow(measure: Any, ring: ringkit.HashRing, short_str_arrow: Any,
                             short_str_keys: list[str]) -> None:
    sample = short_str_keys[:SAMPLE]
    arrow_sample = short_str_arrow.slice(0, SAMPLE)
    assert ring.get_many(arrow_sample).tolist() == ring.get_many(sample).tolist()
    measure(ring.get_many, short_str_arrow, label="ringkit get_many (pyarrow string)",
            n_keys=N_BATCH)


@bench(BATCH)
def test_batch_fastring(measure: Any, fastring_ring: Any, short_str_keys: list[str]) -> None:
    # fastring's batch call returns a list of node names (ringkit: an int32 array of indices).
    sample = short_str_keys[:SAMPLE]
    assert fastring_ring.get_node_batch(sample) == [fastring_ring.get_node(k) for k in sample]
    measure(fastring_ring.get_node_batch, short_str_keys, label="fastring get_node_batch",
            n_keys=N_BATCH, reference=True)


# --------------------------------------------------------------------------------------------------
# ring.locate over 1,000,000 already-hashed uint64

LOCATE = "ring.locate: 1,000,000 random uint64 hashes, 16,000 points (100 nodes x 160 vnodes)"
NUMPY = "numpy searchsorted + wrap + gather"
NUMPY_PADDED = "numpy searchsorted + gather (owners padded)"


def numpy_locate(points: np.ndarray, owners: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """The numpy a user writes over the same sorted points: first point >= h, wrap, owner."""
    idx = np.searchsorted(points, hashes)
    idx[idx == points.shape[0]] = 0
    return owners[idx]


def numpy_locate_padded(points: np.ndarray, padded_owners: np.ndarray,
                        hashes: np.ndarray) -> np.ndarray:
    """The same with the wrap precomputed: owners + [owners[0]], indexed by searchsorted."""
    return padded_owners[np.searchsorted(points, hashes)]


@bench(LOCATE)
def test_locate_ringkit(measure: Any, ring: ringkit.HashRing, uint64_keys: np.ndarray) -> None:
    sample = uint64_keys[:SAMPLE * 100]
    expected = numpy_locate(np.asarray(ring.points), np.asarray(ring.owners), sample)
    assert np.array_equal(ring.locate(sample), expected)
    measure(ring.locate, uint64_keys, label="ringkit locate", n_keys=N_BATCH,
            targets=[("ns_per_key", "<=", 4),
                     ("speedup", ">=", 4, NUMPY),
                     ("speedup", ">=", 4, NUMPY_PADDED)])


@bench(LOCATE)
def test_locate_ringkit_out(measure: Any, ring: ringkit.HashRing, uint64_keys: np.ndarray) -> None:
    out = np.empty(N_BATCH, dtype=np.int32)
    measure(ring.locate, uint64_keys, out=out, label="ringkit locate out=", n_keys=N_BATCH)
    assert np.array_equal(out, ring.locate(uint64_keys))


@bench(LOCATE)
def test_locate_numpy(measure: Any, ring: ringkit.HashRing, uint64_keys: np.ndarray) -> None:
    points, owners = np.asarray(ring.points), np.asarray(ring.owners)
    measure(lambda h: numpy_locate(points, owners, h), uint64_keys, label=NUMPY,
            n_keys=N_BATCH, reference=True)


@bench(LOCATE)
def test_locate_numpy_padded(measure: Any, ring: ringkit.HashRing,
                             uint64_keys: np.ndarray) -> None:
    points, owners = np.asarray(ring.points), np.asarray(ring.owners)
    padded = np.append(owners, owners[:1])
    sample = uint64_keys[:SAMPLE * 100]
    assert np.array_equal(numpy_locate_padded(points, padded, sample),
                          numpy_locate(points, owners, sample))
    measure(lambda h: numpy_locate_padded(points, padded, h), uint64_keys, label=NUMPY_PADDED,
            n_keys=N_BATCH, reference=True)


@bench(LOCATE)
def test_locate_jump(measure: Any, uint64_list: list[int]) -> None:
    # Jump consistent hash (Lamping and Veach, 2014) maps an int to one of 100 buckets without a
    # ring: another placement (and no names, weights or preference lists), the same question
    # "which of 100 nodes owns this uint64", one call per key as its API offers.
    jump = pytest.importorskip("jump")
    sample = uint64_list[:SAMPLE]
    assert [jump.hash(k, N_NODES) for k in sample] == [jump.py_hash(k, N_NODES) for k in sample]
    measure(jump_loop, uint64_list, jump.hash, label="jump.hash loop", n_keys=N_BATCH,
            reference=True)


@bench(LOCATE)
def test_locate_ringkit_get_hash(measure: Any, ring: ringkit.HashRing,
                                 uint64_list: list[int], uint64_keys: np.ndarray) -> None:
    # ringkit one call per key, as the jump row does it.
    sample = uint64_list[:SAMPLE]
    assert [ring.get_hash(h) for h in sample] == \
        [ring.nodes[i] for i in ring.locate(uint64_keys[:SAMPLE])]
    measure(lookup_loop, uint64_list, ring.get_hash, label="ringkit get_hash loop",
            n_keys=N_BATCH)


# --------------------------------------------------------------------------------------------------
# Building a ring of 100 nodes x 160 vnodes (per build; "per key" below is per build)

BUILD = "build: 100 nodes x 160 vnodes (one build per call)"


@bench(BUILD)
def test_build_ringkit(measure: Any, benchmark: Any, ring: ringkit.HashRing) -> None:
    built = measure(lambda: ringkit.HashRing(NAMES), label="ringkit HashRing(nodes)", n_keys=1,
                    targets=[("ns_per_key", "<=", 500_000)])
    assert built.fingerprint() == ring.fingerprint()
    # Memory, index included: recorded here (bench/report.py reads no memory metric).
    npoints = built.points.shape[0]
    benchmark.extra_info.update(
        n_points=npoints, nbytes=built.nbytes, bytes_per_point=built.nbytes / npoints,
        memory_target={"metric": "bytes_per_point", "op": "<=", "value": 16,
                       "met": built.nbytes / npoints <= 16},
    )


@bench(BUILD)
def test_build_ringkit_ketama(measure: Any) -> None:
    built = measure(lambda: ringkit.HashRing.ketama(NAMES), label="ringkit HashRing.ketama(nodes)",
                    n_keys=1)
    assert built.points.shape[0] == N_POINTS  # 40 digests x 4 points a server


@bench(BUILD)
def test_build_uhashring(measure: Any) -> None:
    uhashring = pytest.importorskip("uhashring")
    built = measure(lambda: uhashring.HashRing(NAMES), label="uhashring HashRing(nodes)",
                    n_keys=1, reference=True)
    assert len(built.runtime._keys) == N_POINTS


@bench(BUILD)
def test_build_fastring(measure: Any) -> None:
    fastring = pytest.importorskip("fastring")

    def build() -> Any:
        r = fastring.HashRing(VNODES)  # no constructor that takes the nodes: one add_node each
        for name in NAMES:
            r.add_node(name)
        return r

    built = measure(build, label="fastring HashRing + 100 add_node", n_keys=1, reference=True)
    assert len(built) == N_NODES


@bench(BUILD)
def test_build_hashring(measure: Any) -> None:
    hashring = pytest.importorskip("hashring")
    # 12,000 points (120 a node; hashring has no vnodes setting), not 16,000.
    built = measure(lambda: hashring.HashRing(NAMES), label="hashring HashRing(nodes)",
                    n_keys=1, reference=True)
    assert len(built._sorted_keys) == 12_000


# --------------------------------------------------------------------------------------------------
# Adding and removing one node of 100 (an add + remove pair per call: "per key" is per operation)
#
# hashring has no add or remove (a change means a new HashRing: see the build group).

CHANGE = "add or remove one node of 100 (add + remove pair; per key = per operation)"


@bench(CHANGE)
def test_change_ringkit(measure: Any) -> None:
    r = ringkit.HashRing(NAMES)
    before = r.fingerprint()
    r.add(NEW)
    assert NEW in r and r.points.shape[0] == N_POINTS + VNODES
    assert r.fingerprint() == ringkit.HashRing([*NAMES, NEW]).fingerprint()  # merge == rebuild
    r.remove(NEW)
    assert r.fingerprint() == before

    def pair() -> None:
        r.add(NEW)
        r.remove(NEW)

    measure(pair, label="ringkit add + remove", n_keys=2, targets=[("ns_per_key", "<=", 50_000)])
    assert r.fingerprint() == before


@bench(CHANGE)
def test_change_uhashring(measure: Any) -> None:
    uhashring = pytest.importorskip("uhashring")
    r = uhashring.HashRing(NAMES)

    def pair() -> None:
        r.add_node(NEW)
        r.remove_node(NEW)

    measure(pair, label="uhashring add_node + remove_node", n_keys=2, reference=True)
    assert len(r.runtime._keys) == N_POINTS and NEW not in r.runtime._nodes


@bench(CHANGE)
def test_change_fastring(measure: Any) -> None:
    fastring = pytest.importorskip("fastring")
    r = fastring.HashRing(VNODES)
    for name in NAMES:
        r.add_node(name)

    def pair() -> None:
        r.add_node(NEW)
        r.remove_node(NEW)

    measure(pair, label="fastring add_node + remove_node", n_keys=2, reference=True)
    assert len(r) == N_NODES and NEW not in r
