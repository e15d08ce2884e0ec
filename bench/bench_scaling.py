"""How the ring's speed grows with the batch, and how evenly it spreads keys as vnodes grow.

(a) Lookup throughput against batch size. One call answers a batch of 1, 10, 100, 1,000, 10,000,
100,000 or 1,000,000 short str keys (``"user:%d"``, the first keys of bench/conftest.py's million)
on a ring of 100 nodes x 160 vnodes, for every library a user could pick:

- ringkit ``HashRing.get_many(keys)`` (an int32 array of node indices);
- fastring ``get_node_batch(keys)`` (a list of node names; wheels for CPython >= 3.13 only, so its
  rows are skipped on older Pythons);
- uhashring and hashring, which have no batch call: ``[ring.get_node(k) for k in keys]``. These
  loops cost about 1.5-3 µs a key, so a batch of 1,000,000 would take several seconds a round: they
  stop at 100,000 keys (``LOOP_CAP``), and their 1,000,000 cells stay empty;
- numpy over ringkit's own points, as a user would write it without ringkit's kernels: the keys
  hashed by an ``xxhash.xxh64_intdigest`` loop into a uint64 array, ``numpy.searchsorted`` on
  ``ring.points``, then the owner gathered from ``ring.owners`` (wrap included). Same placement as
  ringkit, so its answers are checked equal to ``get_many``'s.

There is one benchmark group per batch size (so each table compares the libraries on the same
batch, ringkit against each peer); every row records in its extra_info ``series`` (the library),
``batch_size`` and ``keys_per_s``, from which bench/report.py draws keys/s against batch size.

(b) Load spread against vnodes: the busiest node's keys over the mean (max/mean, 1.0 is perfect)
when 100,000 keys (``"user:%d"``) fall on 10 nodes with 10, 20, 40, 80, 160, 320 or 640 vnodes a
node, for ringkit, uhashring (its ``vnodes`` parameter) and fastring (its constructor's vnodes,
where installed). Not a timing: the test computes the spread and stores it in the extra_info
(``load_spread``) of a one-round benchmark row of a one-call lookup, which bench/report.py leaves
out of the timing tables and turns into a table and a plot. With 10,000 keys a node on average,
sampling noise alone puts max/mean near 1.02, whatever the ring.

Nothing here asserts on time; bench/report.py reports the figures.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

import ringkit

N_NODES = 100
VNODES = 160
NAMES = [f"node-{i}" for i in range(N_NODES)]
BATCH_SIZES = (1, 10, 100, 1_000, 10_000, 100_000, 1_000_000)
LOOP_CAP = 100_000  # largest batch for the per-key Python loops (uhashring, hashring)
SAMPLE = 1000

SPREAD_NODES = [f"node-{i}" for i in range(10)]
SPREAD_KEYS = 100_000
SPREAD_VNODES = (10, 20, 40, 80, 160, 320, 640)
SPREAD_GROUP = (f"ring load spread: max/mean keys per node, {len(SPREAD_NODES)} nodes, "
                f"{SPREAD_KEYS:,} keys")

RINGKIT = "ringkit get_many"
FASTRING = "fastring get_node_batch"
UHASHRING = "uhashring get_node loop"
HASHRING = "hashring get_node loop"
NUMPY = "numpy: xxhash loop + searchsorted + gather"

# About a second a row (as bench_ring.py); two warm-up rounds let the interpreter specialise the
# Python loops before they count.
TIMING: dict[str, Any] = dict(min_rounds=5, max_time=1.0, warmup=True, warmup_iterations=2)


def group_of(batch: int) -> str:
    return (f"ring lookup by batch size: {batch:,} short str keys per call, "
            f"{N_NODES} nodes x {VNODES} vnodes")


sizes = pytest.mark.parametrize("batch", BATCH_SIZES, ids=lambda n: f"{n}keys")
loop_sizes = pytest.mark.parametrize(
    "batch", [n for n in BATCH_SIZES if n <= LOOP_CAP], ids=lambda n: f"{n}keys")


@pytest.fixture
def timed(benchmark: Any, measure: Any) -> Callable[..., Any]:
    """measure(), in the batch's group, with the series and batch size in extra_info."""

    def run(fn: Callable[..., Any], keys: Sequence[Any], *, series: str, reference: bool,
            note: str | None = None) -> Any:
        batch = len(keys)
        benchmark.group = group_of(batch)
        benchmark.extra_info.update(series=series, batch_size=batch)
        if note:
            benchmark.extra_info["series_note"] = note
        return measure(fn, keys, label=series, n_keys=batch, reference=reference)

    return run


# --------------------------------------------------------------------------------------------------
# Rings, built once for the module


@pytest.fixture(scope="module")
def ring() -> ringkit.HashRing:
    return ringkit.HashRing(NAMES, vnodes=VNODES)


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
    return uhashring.HashRing(NAMES, vnodes=VNODES)


@pytest.fixture(scope="module")
def hashring_ring() -> Any:
    hashring = pytest.importorskip("hashring")
    return hashring.HashRing(NAMES)  # 120 points a node: hashring has no vnodes setting


def numpy_lookup(ring: ringkit.HashRing) -> Callable[[Sequence[str]], np.ndarray]:
    """The numpy a user writes over ringkit's sorted points: hash each key, first point >= hash
    (wrapping to the first point), owner. The wrap is precomputed: owners + [owners[0]]."""
    xxhash = pytest.importorskip("xxhash")
    hash_key = xxhash.xxh64_intdigest
    points = np.asarray(ring.points)
    owners = np.asarray(ring.owners)
    padded = np.append(owners, owners[:1])

    def lookup(keys: Sequence[str]) -> np.ndarray:
        hashes = np.fromiter((hash_key(k.encode()) for k in keys), dtype=np.uint64,
                             count=len(keys))
        return padded[np.searchsorted(points, hashes)]

    return lookup


# --------------------------------------------------------------------------------------------------
# (a) keys/s against batch size


@sizes
def test_batch_ringkit(timed: Any, ring: ringkit.HashRing, short_str_keys: list[str],
                       batch: int) -> None:
    keys = short_str_keys[:batch]
    sample = keys[:SAMPLE]
    assert [ring.nodes[i] for i in ring.get_many(sample)] == [ring.get(k) for k in sample]
    timed(ring.get_many, keys, series=RINGKIT, reference=False)


@sizes
def test_batch_numpy(timed: Any, ring: ringkit.HashRing, short_str_keys: list[str],
                     batch: int) -> None:
    keys = short_str_keys[:batch]
    lookup = numpy_lookup(ring)
    sample = keys[:SAMPLE]
    assert np.array_equal(lookup(sample), ring.get_many(sample))  # the same placement
    timed(lookup, keys, series=NUMPY, reference=True)


@sizes
def test_batch_fastring(timed: Any, fastring_ring: Any, short_str_keys: list[str],
                        batch: int) -> None:
    keys = short_str_keys[:batch]
    sample = keys[:SAMPLE]
    assert fastring_ring.get_node_batch(sample) == [fastring_ring.get_node(k) for k in sample]
    timed(fastring_ring.get_node_batch, keys, series=FASTRING, reference=True)


LOOP_NOTE = f"a per-key Python loop: measured up to {LOOP_CAP:,} keys a call"


def get_node_loop(get_node: Callable[[str], str]) -> Callable[[Sequence[str]], list[str]]:
    def lookup(keys: Sequence[str]) -> list[str]:
        return [get_node(k) for k in keys]

    return lookup


@loop_sizes
def test_batch_uhashring(timed: Any, uhashring_ring: Any, short_str_keys: list[str],
                         batch: int) -> None:
    keys = short_str_keys[:batch]
    assert set(get_node_loop(uhashring_ring.get_node)(keys[:SAMPLE])) <= set(NAMES)
    timed(get_node_loop(uhashring_ring.get_node), keys, series=UHASHRING, reference=True,
          note=LOOP_NOTE)


@loop_sizes
def test_batch_hashring(timed: Any, hashring_ring: Any, short_str_keys: list[str],
                        batch: int) -> None:
    keys = short_str_keys[:batch]
    assert set(get_node_loop(hashring_ring.get_node)(keys[:SAMPLE])) <= set(NAMES)
    timed(get_node_loop(hashring_ring.get_node), keys, series=HASHRING, reference=True,
          note=LOOP_NOTE)


# --------------------------------------------------------------------------------------------------
# (b) load spread against vnodes (computed, not timed)


def max_over_mean(counts: Sequence[int]) -> float:
    return max(counts) * len(counts) / sum(counts)


def record_spread(benchmark: Any, series: str, spreads: list[float],
                  lookup: Callable[[str], Any]) -> None:
    assert len(spreads) == len(SPREAD_VNODES) and all(s >= 1.0 for s in spreads)
    benchmark.extra_info.update(
        label=series,
        load_spread={"series": series, "n_nodes": len(SPREAD_NODES), "n_keys": SPREAD_KEYS,
                     "vnodes": list(SPREAD_VNODES), "max_over_mean": spreads})
    # The row itself: one lookup, once (the JSON needs a timed call to keep the row).
    benchmark.pedantic(lookup, args=("user:0",), rounds=1, iterations=1)


@pytest.fixture(scope="module")
def spread_keys(short_str_keys: list[str]) -> list[str]:
    return short_str_keys[:SPREAD_KEYS]


@pytest.mark.benchmark(group=SPREAD_GROUP)
def test_spread_ringkit(benchmark: Any, spread_keys: list[str]) -> None:
    spreads = []
    for vnodes in SPREAD_VNODES:
        r = ringkit.HashRing(SPREAD_NODES, vnodes=vnodes)
        assert r.points.shape[0] == vnodes * len(SPREAD_NODES)
        counts = np.bincount(r.get_many(spread_keys), minlength=len(SPREAD_NODES))
        spreads.append(max_over_mean(counts.tolist()))
    record_spread(benchmark, "ringkit HashRing", spreads, r.get)


@pytest.mark.benchmark(group=SPREAD_GROUP)
def test_spread_uhashring(benchmark: Any, spread_keys: list[str]) -> None:
    uhashring = pytest.importorskip("uhashring")
    spreads = []
    for vnodes in SPREAD_VNODES:
        r = uhashring.HashRing(SPREAD_NODES, vnodes=vnodes)
        assert len(r.runtime._keys) == vnodes * len(SPREAD_NODES)
        counts = Counter(r.get_node(k) for k in spread_keys)
        spreads.append(max_over_mean([counts[n] for n in SPREAD_NODES]))
    record_spread(benchmark, "uhashring HashRing", spreads, r.get_node)


@pytest.mark.benchmark(group=SPREAD_GROUP)
def test_spread_fastring(benchmark: Any, spread_keys: list[str]) -> None:
    fastring = pytest.importorskip("fastring")
    spreads = []
    for vnodes in SPREAD_VNODES:
        r = fastring.HashRing(vnodes)
        for name in SPREAD_NODES:
            r.add_node(name)
        counts = Counter(r.get_node_batch(spread_keys))
        spreads.append(max_over_mean([counts[n] for n in SPREAD_NODES]))
    record_spread(benchmark, "fastring HashRing", spreads, r.get_node)
