"""Weighted load balancing: ringkit.Balancer beside the roundrobin package, random and numpy.

One run measures every row of issue 4's "Speed" paragraph beside its peers, on 64 nodes with the
weights 1, 2, 3, 4, 5, 1, 2, ... (190 in all, so a smooth period is 190 picks):

- ``Balancer.pick()`` in a Python loop (per call, the loop included, as a user writes it) for the
  strategies "smooth", "random" and (for information) "least_request", beside ``roundrobin.smooth``
  (nginx's smooth weighted round robin, O(n) a pick in Python), ``roundrobin.weighted`` (LVS's
  weighted round robin) and ``random.choices(names, weights)`` (and with ``cum_weights=``);
- ``Balancer.pick(key=...)`` with strategy "ring" (for information), beside ``HashRing.get`` on
  the same weighted nodes: the bounded-load walk on top of the plain lookup;
- ``pick_many(1_000_000)`` beside ``numpy.random.Generator.choice(64, size=..., p=...)`` (and the
  inverse-CDF ``searchsorted`` that choice runs inside);
- ``with bal.lease(): pass`` (enter + exit: a pick, the in-flight count up and down, the outcome
  counted) for every strategy, beside ``pick()`` alone.

Each ringkit row first checks on a sample that it computes what it should: smooth's sequence is
nginx's (``aabacaa`` for {a: 5, b: 1, c: 1}, and roundrobin.smooth's own sequence on the 64 nodes),
random's frequencies fit the weights (chi-square), a batch equals the loop of single picks with the
same seed, "ring" answers the ring's owner while nothing is in flight, and a lease leaves nothing in
flight. The peers are checked the same way (their sequences or frequencies fit the weights).

Targets are the issue's; bench/report.py says whether they were met, nothing here asserts on time.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

import ringkit

N_NODES = 64
NAMES = [f"node-{i}" for i in range(N_NODES)]
WEIGHTS = [1 + i % 5 for i in range(N_NODES)]  # 1..5
NODES = dict(zip(NAMES, WEIGHTS, strict=True))
TOTAL = sum(WEIGHTS)  # 190: the smooth period
N_LOOP = 100_000  # calls per Python-loop row
N_BATCH = 1_000_000  # picks per pick_many row
N_SAMPLE = 200_000  # picks whose frequencies are checked against the weights
SEED = 20240604

# Fewest rounds, longest time per row (as bench_ring.py): about a second a row. Two warm-up rounds
# let the interpreter specialise the Python loops before they count.
TIMING: dict[str, Any] = dict(min_rounds=5, max_time=1.0, warmup=True, warmup_iterations=2)


def bench(group: str) -> pytest.MarkDecorator:
    return pytest.mark.benchmark(group=group, **TIMING)


# --------------------------------------------------------------------------------------------------
# The loops every per-call row times: the same for ringkit and its peers.


def pick_loop(pick: Callable[[], Any], n: int) -> None:
    for _ in range(n):
        pick()


def choices_loop(choices: Callable[..., Any], n: int, names: list[str],
                 weights: list[int]) -> None:
    for _ in range(n):
        choices(names, weights)


def cum_choices_loop(choices: Callable[..., Any], n: int, names: list[str],
                     cum_weights: list[int]) -> None:
    for _ in range(n):
        choices(names, cum_weights=cum_weights)


def keyed_loop(keys: Sequence[str], pick: Callable[..., Any]) -> None:
    for key in keys:
        pick(key)


def lease_loop(lease: Callable[[], Any], n: int) -> None:
    for _ in range(n):
        with lease():
            pass


def keyed_lease_loop(keys: Sequence[str], lease: Callable[[str], Any]) -> None:
    for key in keys:
        with lease(key):
            pass


# --------------------------------------------------------------------------------------------------
# Checks


def chi_square(counts: Sequence[int] | np.ndarray, weights: Sequence[float]) -> float:
    counts = np.asarray(counts, dtype=np.float64)
    expected = np.asarray(weights, dtype=np.float64) / float(np.sum(weights)) * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


# 63 degrees of freedom: mean 63, sd 11.2; 150 is beyond the 1e-8 quantile, so a fit that fails
# it is wrong, not unlucky.
CHI2_MAX = 150.0


def fits_weights(picked: Sequence[str]) -> None:
    counts = Counter(picked)
    assert set(counts) <= set(NAMES)
    stat = chi_square([counts[name] for name in NAMES], WEIGHTS)
    assert stat < CHI2_MAX, f"frequencies do not fit the weights: chi-square {stat:.1f}"


def indices_fit_weights(picked: np.ndarray) -> None:
    assert picked.dtype == np.int32 and picked.min() >= 0 and picked.max() < N_NODES
    stat = chi_square(np.bincount(picked, minlength=N_NODES), WEIGHTS)
    assert stat < CHI2_MAX, f"frequencies do not fit the weights: chi-square {stat:.1f}"


def one_period_per_weights(picked: Sequence[str]) -> None:
    """A deterministic weighted round robin picks each node `weight` times per period."""
    assert len(picked) % TOTAL == 0
    counts = Counter(picked)
    periods = len(picked) // TOTAL
    assert {name: counts[name] for name in NAMES} == {n: w * periods for n, w in NODES.items()}


def batch_equals_loop(strategy: str, n: int = 10_000) -> None:
    """pick_many(n) equals n single picks of a balancer built the same way (same seed)."""
    one = ringkit.Balancer(NODES, strategy=strategy, seed=SEED)
    many = ringkit.Balancer(NODES, strategy=strategy, seed=SEED)
    loop = [one.pick() for _ in range(n)]
    batch = many.pick_many(n)
    assert [many.nodes[i] for i in batch] == loop
    assert one.pick() == many.pick()  # and both went on from the same state


# --------------------------------------------------------------------------------------------------
# Balancers, one per strategy (built per test: their state moves).


def balancer(strategy: str) -> ringkit.Balancer:
    bal = ringkit.Balancer(NODES, strategy=strategy, seed=SEED)
    assert bal.nodes == tuple(NAMES) and bal.strategy == strategy
    return bal


@pytest.fixture(scope="module")
def loop_keys(short_str_keys: list[str]) -> list[str]:
    """100,000 short str keys ("user:0" ...): the first keys of bench/conftest.py's million."""
    return short_str_keys[:N_LOOP]


# --------------------------------------------------------------------------------------------------
# pick(): one call per pick in a Python loop

PICK = "Balancer.pick(): 64 nodes, weights 1..5, 100,000 calls in a Python loop"
RR_SMOOTH = "roundrobin.smooth"
RR_WEIGHTED = "roundrobin.weighted"
CHOICES = "random.choices(names, weights)"
CHOICES_CUM = "random.choices(names, cum_weights=)"


@bench(PICK)
def test_pick_ringkit_smooth(measure: Any) -> None:
    roundrobin = pytest.importorskip("roundrobin")
    small = ringkit.Balancer({"a": 5, "b": 1, "c": 1})
    assert "".join(small.pick() for _ in range(14)) == "aabacaa" * 2
    theirs = roundrobin.smooth([("a", 5), ("b", 1), ("c", 1)])
    assert "".join(theirs() for _ in range(14)) == "aabacaa" * 2
    bal = balancer("smooth")
    rr = roundrobin.smooth(list(NODES.items()))
    ours = [bal.pick() for _ in range(5 * TOTAL)]
    assert ours == [rr() for _ in range(5 * TOTAL)]  # nginx's sequence, pick for pick
    one_period_per_weights(ours)
    batch_equals_loop("smooth")
    measure(pick_loop, bal.pick, N_LOOP, label="ringkit pick() smooth", n_keys=N_LOOP,
            per="pick", targets=[("ns_per_key", "<=", 80)])
    # Still on nginx's sequence after the timing (5 * TOTAL + warm-up and rounds of N_LOOP picks).
    rest = [bal.pick() for _ in range(TOTAL)]
    one_period_per_weights(rest)


@bench(PICK)
def test_pick_ringkit_random(measure: Any) -> None:
    bal = balancer("random")
    fits_weights([bal.pick() for _ in range(N_SAMPLE)])
    batch_equals_loop("random")
    measure(pick_loop, bal.pick, N_LOOP, label="ringkit pick() random", n_keys=N_LOOP,
            per="pick", targets=[("ns_per_key", "<=", 80)])


@bench(PICK)
def test_pick_ringkit_least_request(measure: Any) -> None:
    bal = balancer("least_request")
    # Nothing in flight: every pair ties and the first candidate, drawn in proportion to weight,
    # wins, so the picks follow the weights as every strategy's do.
    picked = [bal.pick() for _ in range(N_SAMPLE)]
    counts = Counter(picked)
    assert set(counts) == set(NAMES)
    assert chi_square([counts[n] for n in NAMES], WEIGHTS) < CHI2_MAX
    batch_equals_loop("least_request")
    measure(pick_loop, bal.pick, N_LOOP, label="ringkit pick() least_request", n_keys=N_LOOP,
            per="pick")


@bench(PICK)
def test_pick_roundrobin_smooth(measure: Any) -> None:
    roundrobin = pytest.importorskip("roundrobin")
    rr = roundrobin.smooth(list(NODES.items()))
    one_period_per_weights([rr() for _ in range(2 * TOTAL)])
    measure(pick_loop, rr, N_LOOP, label=RR_SMOOTH, n_keys=N_LOOP, per="pick", reference=True)


@bench(PICK)
def test_pick_roundrobin_weighted(measure: Any) -> None:
    roundrobin = pytest.importorskip("roundrobin")
    rr = roundrobin.weighted(list(NODES.items()))
    one_period_per_weights([rr() for _ in range(2 * TOTAL)])
    measure(pick_loop, rr, N_LOOP, label=RR_WEIGHTED, n_keys=N_LOOP, per="pick", reference=True)


@bench(PICK)
def test_pick_random_choices(measure: Any) -> None:
    rng = random.Random(SEED)
    fits_weights(rng.choices(NAMES, WEIGHTS, k=N_SAMPLE))
    # One pick per call, as a balancer is asked: choices(...)[0] would add an index, not the work.
    measure(choices_loop, rng.choices, N_LOOP, NAMES, WEIGHTS, label=CHOICES, n_keys=N_LOOP,
            per="pick", reference=True)


@bench(PICK)
def test_pick_random_choices_cum(measure: Any) -> None:
    rng = random.Random(SEED)
    cum = np.cumsum(WEIGHTS).tolist()
    fits_weights(rng.choices(NAMES, cum_weights=cum, k=N_SAMPLE))
    measure(cum_choices_loop, rng.choices, N_LOOP, NAMES, cum, label=CHOICES_CUM, n_keys=N_LOOP,
            per="pick", reference=True)


# --------------------------------------------------------------------------------------------------
# pick(key=...) with strategy "ring": one call per key in a Python loop

RING = "Balancer.pick(key) 'ring': 64 nodes, weights 1..5, 100,000 str keys in a Python loop"


@pytest.fixture(scope="module")
def weighted_ring() -> ringkit.HashRing:
    return ringkit.HashRing(NODES)  # the ring a "ring" balancer builds (160 vnodes a unit)


@bench(RING)
def test_ring_ringkit_pick(measure: Any, weighted_ring: ringkit.HashRing,
                           loop_keys: list[str]) -> None:
    bal = balancer("ring")
    sample = loop_keys[:1000]
    # Nothing in flight: every node has room, so each key goes to its owner on the ring.
    assert [bal.pick(key=k) for k in sample] == [weighted_ring.get(k) for k in sample]
    assert [bal.nodes[i] for i in bal.pick_many(sample)] == [bal.pick(k) for k in sample]
    measure(keyed_loop, loop_keys, bal.pick, label="ringkit pick(key) ring", n_keys=N_LOOP,
            per="pick")
    assert all(v == 0 for v in bal.in_flight.values())


@bench(RING)
def test_ring_hashring_get(measure: Any, weighted_ring: ringkit.HashRing,
                           loop_keys: list[str]) -> None:
    measure(keyed_loop, loop_keys, weighted_ring.get, label="ringkit HashRing.get (same ring)",
            n_keys=N_LOOP, per="pick", reference=True)


# --------------------------------------------------------------------------------------------------
# pick_many(1,000,000)

BATCH = "pick_many: 64 nodes, weights 1..5, 1,000,000 picks in one call"
NP_CHOICE = "numpy Generator.choice(64, size, p=)"
NP_SEARCH = "numpy searchsorted(cumsum, Generator.random(size))"


@bench(BATCH)
def test_batch_ringkit_random(measure: Any) -> None:
    bal = balancer("random")
    indices_fit_weights(bal.pick_many(N_BATCH))
    batch_equals_loop("random")
    measure(bal.pick_many, N_BATCH, label="ringkit pick_many random", n_keys=N_BATCH, per="pick",
            targets=[("keys_per_s", ">=", 100e6)])


@bench(BATCH)
def test_batch_ringkit_random_out(measure: Any) -> None:
    # The output array reused: no 4 MB allocation (and its page faults) per call.
    bal = balancer("random")
    out = np.empty(N_BATCH, dtype=np.int32)
    measure(bal.pick_many, N_BATCH, out=out, label="ringkit pick_many random out=",
            n_keys=N_BATCH, per="pick")
    indices_fit_weights(out)


@bench(BATCH)
def test_batch_ringkit_smooth(measure: Any) -> None:
    bal = balancer("smooth")
    picked = bal.pick_many(N_BATCH)
    whole = picked[: N_BATCH // TOTAL * TOTAL]  # whole periods, from the start of one
    assert (np.bincount(whole, minlength=N_NODES) == np.array(WEIGHTS) * (N_BATCH // TOTAL)).all()
    batch_equals_loop("smooth")
    measure(bal.pick_many, N_BATCH, label="ringkit pick_many smooth", n_keys=N_BATCH, per="pick")


@bench(BATCH)
def test_batch_ringkit_least_request(measure: Any) -> None:
    bal = balancer("least_request")
    picked = bal.pick_many(N_BATCH)
    assert chi_square(np.bincount(picked, minlength=N_NODES), WEIGHTS) < CHI2_MAX
    batch_equals_loop("least_request")
    measure(bal.pick_many, N_BATCH, label="ringkit pick_many least_request", n_keys=N_BATCH,
            per="pick")


@bench(BATCH)
def test_batch_numpy_choice(measure: Any) -> None:
    rng = np.random.default_rng(SEED)
    p = np.array(WEIGHTS, dtype=np.float64) / TOTAL
    indices_fit_weights(rng.choice(N_NODES, size=N_BATCH, p=p).astype(np.int32))
    measure(lambda n: rng.choice(N_NODES, size=n, p=p), N_BATCH, label=NP_CHOICE,
            n_keys=N_BATCH, per="pick", reference=True)


@bench(BATCH)
def test_batch_numpy_searchsorted(measure: Any) -> None:
    rng = np.random.default_rng(SEED)
    cdf = np.cumsum(np.array(WEIGHTS, dtype=np.float64)) / TOTAL

    def draw(n: int) -> np.ndarray:
        return np.searchsorted(cdf, rng.random(n), side="right")

    indices_fit_weights(draw(N_BATCH).astype(np.int32))
    measure(draw, N_BATCH, label=NP_SEARCH, n_keys=N_BATCH, per="pick", reference=True)


# --------------------------------------------------------------------------------------------------
# lease(): enter + exit, one lease per call in a Python loop

LEASE = "Balancer.lease(): enter + exit ('with bal.lease(): pass'), 64 nodes, 100,000 in a loop"


def check_lease(bal: ringkit.Balancer, key: str | None = None) -> None:
    with bal.lease(key) as node:
        assert node in NAMES
        assert bal.in_flight[node] == 1 and sum(bal.in_flight.values()) == 1
    assert sum(bal.in_flight.values()) == 0


def check_no_leak(bal: ringkit.Balancer) -> None:
    assert sum(bal.in_flight.values()) == 0
    assert all(h.state == "up" and h.failures == 0 for h in bal.health().values())


@bench(LEASE)
@pytest.mark.parametrize("strategy", ["smooth", "random", "least_request"])
def test_lease_ringkit(measure: Any, strategy: str) -> None:
    bal = balancer(strategy)
    check_lease(bal)
    if strategy == "least_request":
        # Leases held open steer the next picks to the nodes with least in flight per weight.
        held = [bal.lease() for _ in range(TOTAL)]
        for lease in held:
            lease.__enter__()
        load = np.array([bal.in_flight[n] / w for n, w in NODES.items()])
        assert load.max() <= 2 * load.mean() + 1
        for lease in held:
            lease.__exit__(None, None, None)
    check_no_leak(bal)
    measure(lease_loop, bal.lease, N_LOOP, label=f"ringkit lease() {strategy}", n_keys=N_LOOP,
            per="lease", targets=[("ns_per_key", "<=", 400)])
    check_no_leak(bal)


@bench(LEASE)
def test_lease_ringkit_ring(measure: Any, loop_keys: list[str]) -> None:
    bal = balancer("ring")
    check_lease(bal, loop_keys[0])
    measure(keyed_lease_loop, loop_keys, bal.lease, label="ringkit lease(key) ring",
            n_keys=N_LOOP, per="lease")
    check_no_leak(bal)


@bench(LEASE)
def test_lease_ringkit_pick_only(measure: Any) -> None:
    # pick() alone, the same loop: what a lease adds to a pick.
    bal = balancer("smooth")
    measure(pick_loop, bal.pick, N_LOOP, label="ringkit pick() smooth (no lease)",
            n_keys=N_LOOP, per="pick")
