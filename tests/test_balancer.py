"""Balancer strategies against oracles: nginx's smooth weighted round robin as a slow Python model,
chi-square for weighted random, a queueing simulation for power of two choices, the ring's own
preference lists for bounded-load affinity; every batch against its scalar loop; bad input.

Everything runs on a seed and a fake clock: no sleeps, no timing assertions.
"""

from __future__ import annotations

import heapq
import math
import random
import tracemalloc
from collections import Counter
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ringkit
from ringkit import Balancer, NoAvailableNodeError, UnknownNodeError

STRATEGIES = ("smooth", "random", "least_request", "ring")
KEYS = [f"key-{i}" for i in range(300)]


# --------------------------------------------------------------------------------------------------
# Oracles


def nginx_swrr(weights: list[float], count: int) -> list[int]:
    """nginx's smooth weighted round robin (ngx_http_upstream_get_peer), literally: every peer's
    current weight grows by its weight, the largest (first on ties) is chosen and loses the
    total. Zero-weight peers stay in the loop: they can never be the largest."""
    current = [0.0] * len(weights)
    total = sum(weights)
    picks = []
    for _ in range(count):
        best = -1
        for i, weight in enumerate(weights):
            current[i] += weight
            if best < 0 or current[i] > current[best]:
                best = i
        current[best] -= total
        picks.append(best)
    return picks


def chi2_critical(df: int, z: float = 4.753) -> float:
    """Upper critical value of chi-square with `df` degrees of freedom at the standard normal
    quantile `z` (4.753: p = 1e-6), by the Wilson-Hilferty approximation."""
    h = 2.0 / (9.0 * df)
    return df * (1.0 - h + z * math.sqrt(h)) ** 3


def chi2_statistic(counts: np.ndarray, weights: list[float]) -> tuple[float, int]:
    w = np.asarray(weights, dtype=np.float64)
    positive = w > 0
    expected = counts.sum() * w[positive] / w[positive].sum()
    observed = counts[positive]
    return float(((observed - expected) ** 2 / expected).sum()), int(positive.sum()) - 1


def balancer_ring(weights: dict[str, float], vnodes: int = 160) -> ringkit.HashRing:
    """The ring the "ring" strategy builds (within its point budget): the weights scaled so the
    smallest positive one is 1."""
    low = min(w for w in weights.values() if w > 0)
    return ringkit.HashRing({n: w / low for n, w in weights.items() if w > 0}, vnodes=vnodes)


def names(n: int) -> list[str]:
    return [f"n{i}" for i in range(n)]


def window_excess(seq: list[str], node: str, share: float, longest: int) -> int:
    """The most that `node` gets, in any window of up to `longest` consecutive picks, above
    ceil(window length x share)."""
    hits = np.concatenate([[0], np.cumsum(np.array(seq) == node)])
    worst = -1
    for length in range(1, min(longest, len(seq)) + 1):
        most = int((hits[length:] - hits[:-length]).max())
        worst = max(worst, most - math.ceil(length * share - 1e-9))
    return worst


def twins(strategy: str, nodes: object = None, **kwargs: object) -> tuple[Balancer, Balancer]:
    nodes = nodes if nodes is not None else {"a": 3, "b": 1, "c": 2, "d": 5, "e": 0}
    return (Balancer(nodes, strategy=strategy, seed=7, **kwargs),  # type: ignore[arg-type]
            Balancer(nodes, strategy=strategy, seed=7, **kwargs))  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# smooth


def test_smooth_nginx_example() -> None:
    bal = Balancer({"a": 5, "b": 1, "c": 1})
    assert "".join(bal.pick() for _ in range(21)) == "aabacaa" * 3
    batch = Balancer({"a": 5, "b": 1, "c": 1}).pick_many(21)
    assert batch.dtype == np.int32
    assert "".join(bal.nodes[i] for i in batch) == "aabacaa" * 3


def test_smooth_is_the_default_and_nodes_keep_their_order() -> None:
    bal = Balancer({"c": 1, "a": 5, "b": 1})
    assert bal.strategy == "smooth"
    assert bal.nodes == ("c", "a", "b")
    assert "".join(bal.pick() for _ in range(7)) == "aacabaa"


def test_smooth_equal_weights_round_robin_in_node_order() -> None:
    bal = Balancer(["x", "y", "z"])
    assert [bal.pick() for _ in range(7)] == ["x", "y", "z", "x", "y", "z", "x"]


@given(st.lists(st.integers(0, 12), min_size=1, max_size=8).filter(any), st.integers(0, 40))
def test_smooth_matches_nginx_model(weights: list[int], extra: int) -> None:
    nodes = names(len(weights))
    count = 2 * sum(weights) + extra
    expected = [nodes[i] for i in nginx_swrr([float(w) for w in weights], count)]
    bal = Balancer(dict(zip(nodes, weights, strict=True)))
    assert [bal.pick() for _ in range(count)] == expected
    # The batch from a fresh balancer, and a batch that carries on from scalar picks.
    fresh = Balancer(dict(zip(nodes, weights, strict=True)))
    assert [nodes[i] for i in fresh.pick_many(count)] == expected
    mixed = Balancer(dict(zip(nodes, weights, strict=True)))
    head = [mixed.pick() for _ in range(extra)]
    assert head + [nodes[i] for i in mixed.pick_many(count - extra)] == expected


@given(st.lists(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.25, 1.5, 2.5, 3.75]), min_size=1,
                max_size=6).filter(any))
def test_smooth_non_integer_weights_match_the_model(weights: list[float]) -> None:
    # Dyadic fractions: the float model is exact, and so are thousandths.
    nodes = names(len(weights))
    count = int(8 * sum(weights)) + 5
    bal = Balancer(dict(zip(nodes, weights, strict=True)))
    assert [bal.pick() for _ in range(count)] == [nodes[i] for i in nginx_swrr(weights, count)]


def test_smooth_non_integer_weights_are_used_exactly() -> None:
    # Not rounded to thousandths: nginx's algorithm on the floats themselves.
    for weights in ([0.1, 0.2, 0.3], [0.001, 1.999], [1 / 3, 2 / 3, 1.0], [0.7, 1e-4, 2.2]):
        nodes = names(len(weights))
        count = 3000
        bal = Balancer(dict(zip(nodes, weights, strict=True)))
        assert bal._select_config.int_weights_array is None   # the float path
        expected = [nodes[i] for i in nginx_swrr(weights, count)]
        assert [bal.pick() for _ in range(count)] == expected
        fresh = Balancer(dict(zip(nodes, weights, strict=True)))
        assert [nodes[i] for i in fresh.pick_many(count)] == expected
    counts = Counter(Balancer({"a": 0.001, "b": 1.999}).pick_many(20_000).tolist())
    assert counts == {0: 10, 1: 19_990}


def test_smooth_binary_fractions_take_the_integer_path() -> None:
    # 0.25, 0.5, 2.75 are 1, 2, 11 quarters: the integer algorithm, laid out, is the float one.
    weights = [0.25, 0.5, 2.75]
    bal = Balancer(dict(zip("abc", weights, strict=True)))
    config = bal._select_config
    assert config.int_weights_array.tolist() == [1, 2, 11]
    assert config.sequence_array is not None
    assert [bal.pick() for _ in range(70)] == ["abc"[i] for i in nginx_swrr(weights, 70)]


def test_smooth_beyond_the_laid_out_table_matches_the_model() -> None:
    rng = random.Random(64)
    nodes = names(64)
    weights = [rng.randint(95_000, 105_000) for _ in nodes]
    assert sum(weights) * len(nodes) > 2**22
    bal = Balancer(dict(zip(nodes, weights, strict=True)))
    # The case this test is for: picks run the O(n) algorithm, no sequence is laid out.
    assert bal._select_config.sequence_array is None
    count = 3000
    expected = [nodes[i] for i in nginx_swrr([float(w) for w in weights], count)]
    assert [bal.pick() for _ in range(count)] == expected
    fresh = Balancer(dict(zip(nodes, weights, strict=True)))
    assert [nodes[i] for i in fresh.pick_many(count)] == expected


def test_smooth_huge_weights_keep_their_proportions() -> None:
    # Weights too big for int64 thousandths once scaled must not overflow.
    equal = Balancer({"a": 2.0**62, "b": 2.0**62})
    assert "".join(equal.pick() for _ in range(6)) == "ababab"
    doubled = Balancer({"a": 1e20, "b": 1e20, "c": 2e20})
    assert "".join(doubled.pick() for _ in range(8)) == "cabc" * 2
    big = Balancer({"a": 3e15 + 0.5, "b": 1.5e15})
    assert Counter(big.pick() for _ in range(300)) == {"a": 200, "b": 100}


CHANGES = [
    ("set_weight", "b", 6),     # up
    ("set_weight", "d", 1),     # down
    ("set_weight", "b", 0),     # out
    ("add", "new", 4),
    ("add", "heavy", 40),
    ("remove", "a", None),
    ("remove", "c", None),
]


def apply_change(bal: Balancer, op: str, node: str, weight: int | None) -> None:
    if op == "set_weight":
        bal.set_weight(node, weight)  # type: ignore[arg-type]
    elif op == "add":
        bal.add(node, weight)  # type: ignore[arg-type]
    else:
        bal.remove(node)


@pytest.mark.parametrize("op, node, weight", CHANGES)
@pytest.mark.parametrize("before", [0, 1, 5, 13, 22])
def test_smooth_change_carries_on_without_a_burst(op: str, node: str, weight: int | None,
                                                  before: int) -> None:
    bal = Balancer({"a": 7, "b": 2, "c": 3, "d": 5, "e": 1})
    for _ in range(before):
        bal.pick()
    apply_change(bal, op, node, weight)
    total = int(sum(bal.weights.values()))
    after = [bal.pick() for _ in range(3 * total)]
    if op != "remove":
        share = bal.weights[node] / total
        assert window_excess(after, node, share, longest=total) <= 1
    # Whole cycles of the new configuration hold the exact proportions.
    for cycle in range(3):
        counts = Counter(after[cycle * total:(cycle + 1) * total])
        assert {n: counts[n] for n in bal.nodes} == {n: int(w) for n, w in bal.weights.items()}


@given(weights=st.lists(st.integers(1, 9), min_size=2, max_size=6),
       changes=st.lists(st.tuples(st.integers(0, 40), st.sampled_from(["set_weight", "add",
                                                                       "remove"]),
                                  st.integers(0, 7), st.integers(0, 12)), min_size=1, max_size=4))
def test_smooth_changes_in_any_order_keep_cycles_exact(
        weights: list[int], changes: list[tuple[int, str, int, int]]) -> None:
    bal = Balancer(dict(zip(names(len(weights)), weights, strict=True)))
    last = None
    for picks, op, which, weight in changes:
        bal.pick_many(picks)
        nodes = bal.nodes
        if op == "add":
            last = f"added{len(nodes)}-{which}"
            if last in bal:
                continue
            bal.add(last, weight)
        elif op == "set_weight":
            last = nodes[which % len(nodes)]
            if weight == 0 and not any(w for n, w in bal.weights.items() if n != last):
                continue
            bal.set_weight(last, weight)
        else:
            gone = nodes[which % len(nodes)]
            if len(nodes) == 1 or not any(w for n, w in bal.weights.items() if n != gone):
                continue
            bal.remove(gone)
            last = None
    total = int(sum(bal.weights.values()))
    after = [bal.pick() for _ in range(2 * total)]
    if last is not None and last in bal:
        assert window_excess(after, last, bal.weights[last] / total, longest=total) <= 1
    for cycle in range(2):
        counts = Counter(after[cycle * total:(cycle + 1) * total])
        assert {n: counts[n] for n in bal.nodes} == {n: int(w) for n, w in bal.weights.items()}


@pytest.mark.parametrize("op, node, weight",
                         [("set_weight", "n3", 3000), ("set_weight", "n5", 0),
                          ("add", "new", 2500), ("remove", "n7", None)])
def test_smooth_change_without_a_table_carries_on_without_a_burst(
        op: str, node: str, weight: int | None) -> None:
    rng = random.Random(5)
    weights = {name: rng.randint(1050, 1200) for name in names(64)}
    bal = Balancer(weights)
    assert bal._select_config.sequence_array is None
    bal.pick_many(12_345)
    apply_change(bal, op, node, weight)
    assert bal._select_config.sequence_array is None
    total = int(sum(bal.weights.values()))
    after = [bal.nodes[i] for i in bal.pick_many(3 * total)]
    if op != "remove":
        assert window_excess(after, node, bal.weights[node] / total, longest=200) <= 1
    wanted = np.array([bal.weights[n] for n in bal.nodes])
    # A node taken out (removed, or weight 0) takes its current weight with it, as a peer that
    # nginx skips does, which can shift one pick in the first cycle; then every cycle is exact.
    first = Counter(after[:total])
    taken_out = op == "remove" or weight == 0
    assert max(abs(first[n] - bal.weights[n]) for n in bal.nodes) <= (1 if taken_out else 0)
    for cycle in (1, 2):
        counts = Counter(after[cycle * total:(cycle + 1) * total])
        assert np.array_equal([counts[n] for n in bal.nodes], wanted)


# --------------------------------------------------------------------------------------------------
# random


def test_random_is_reproducible_from_a_seed() -> None:
    weights = {"a": 1, "b": 2, "c": 3}
    one = Balancer(weights, strategy="random", seed=42)
    two = Balancer(weights, strategy="random", seed=42)
    other = Balancer(weights, strategy="random", seed=43)
    seq = [one.pick() for _ in range(500)]
    assert seq == [two.pick() for _ in range(500)]
    assert seq != [other.pick() for _ in range(500)]
    assert np.array_equal(Balancer(weights, strategy="random", seed=42).pick_many(500),
                          Balancer(weights, strategy="random", seed=np.int64(42)).pick_many(500))


@pytest.mark.parametrize("strategy", ["random", "least_request"])
@given(seed=st.integers(-(2**63), 2**64 - 1), head=st.integers(0, 50), n=st.integers(0, 300))
def test_random_batch_equals_scalar_loop(strategy: str, seed: int, head: int, n: int) -> None:
    weights = {"a": 1.5, "b": 0, "c": 3, "d": 0.25}
    one = Balancer(weights, strategy=strategy, seed=seed)
    two = Balancer(weights, strategy=strategy, seed=seed)
    scalar = [one.pick() for _ in range(head + n + 10)]
    batch = [two.pick() for _ in range(head)]
    batch += [two.nodes[i] for i in two.pick_many(n)]
    batch += [two.pick() for _ in range(10)]   # the shared state moved past the batch
    assert batch == scalar


@pytest.mark.parametrize("weights", [
    {"a": 1, "b": 2, "c": 3, "d": 4, "zero": 0},
    {"a": 0.01, "b": 1, "c": 100},
    dict.fromkeys("abcdefgh", 1),
])
def test_random_goodness_of_fit(weights: dict[str, float]) -> None:
    bal = Balancer(weights, strategy="random", seed=2024)
    picks = bal.pick_many(400_000)
    counts = np.bincount(picks, minlength=len(bal))
    statistic, df = chi2_statistic(counts, list(weights.values()))
    assert statistic < chi2_critical(df)
    for i, name in enumerate(bal.nodes):
        if weights[name] == 0:
            assert counts[i] == 0


def test_random_scalar_goodness_of_fit() -> None:
    weights = {"a": 5, "b": 1, "c": 1, "z": 0}
    bal = Balancer(weights, strategy="random", seed=99)
    counts = Counter(bal.pick() for _ in range(70_000))
    assert "z" not in counts
    observed = np.array([counts[n] for n in weights])
    statistic, df = chi2_statistic(observed, list(weights.values()))
    assert statistic < chi2_critical(df)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_random_goodness_of_fit_many_nodes(seed: int) -> None:
    rng = random.Random(seed)
    weights = {f"n{i}": rng.choice([0, 0.5, 1, 2, 3, 10, rng.random() * 5]) for i in range(64)}
    weights["n0"] = 1.0
    bal = Balancer(weights, strategy="random", seed=seed)
    counts = np.bincount(bal.pick_many(4_000_000), minlength=len(bal))
    statistic, df = chi2_statistic(counts, list(weights.values()))
    assert statistic < chi2_critical(df)
    zero = [i for i, name in enumerate(bal.nodes) if weights[name] == 0]
    assert not counts[zero].any()


@pytest.mark.parametrize("weights, exclude", [
    ({"a": 1000, "b": 1, "c": 1, "d": 2}, ["a"]),     # the alias table nearly always hits a
    ({"a": 1000, "b": 1, "c": 3}, ["a"]),
    ({"a": 1, "b": 2, "c": 3, "d": 4}, ["c"]),
    ({"a": 5, "b": 5, "c": 1, "d": 1, "e": 2}, ["a", "b"]),
])
def test_random_retries_follow_the_weights_of_the_rest(weights: dict[str, float],
                                                       exclude: list[str]) -> None:
    bal = Balancer(weights, strategy="random", seed=8)
    counts = Counter(bal.pick(exclude=exclude) for _ in range(40_000))
    rest = [n for n in weights if n not in exclude]
    assert set(counts) == set(rest)
    statistic, df = chi2_statistic(np.array([counts[n] for n in rest]),
                                   [weights[n] for n in rest])
    assert statistic < chi2_critical(df)


def test_random_pairs_are_independent() -> None:
    bal = Balancer({"a": 1, "b": 1, "c": 2}, strategy="random", seed=11)
    picks = bal.pick_many(300_001).astype(np.int64)
    pairs = np.bincount(3 * picks[:-1] + picks[1:], minlength=9)
    p = np.array([0.25, 0.25, 0.5])
    expected = (len(picks) - 1) * np.outer(p, p).ravel()
    statistic = float(((pairs - expected) ** 2 / expected).sum())
    assert statistic < chi2_critical(8)


# --------------------------------------------------------------------------------------------------
# least_request


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def simulate_queues(strategy: str, service: dict[str, float], *, arrivals: int,
                    rate: float, weights: dict[str, float] | None = None,
                    seed: int = 3) -> dict[str, float]:
    """A discrete-event simulation: requests arrive (Poisson, `rate`), take a lease, and wait in
    the chosen node's FIFO queue for its service time; a lease ends when its request is served.
    Returns the peak and time-averaged in-flight counts and the mean response time."""
    clock = FakeClock()
    bal = Balancer(weights or dict.fromkeys(service, 1), strategy=strategy, seed=seed, clock=clock)
    rng = random.Random(seed)
    free_at = dict.fromkeys(service, 0.0)
    done: list[tuple[float, int, object]] = []
    peak = 0
    area = dict.fromkeys(service, 0.0)
    last = 0.0
    response = 0.0
    arrival = 0.0
    for serial in range(arrivals):
        arrival += rng.expovariate(rate)
        while done and done[0][0] <= arrival:
            end, _, lease = heapq.heappop(done)
            _account(bal, area, last, end)
            last = clock.now = end
            lease.__exit__(None, None, None)  # type: ignore[attr-defined]
        _account(bal, area, last, arrival)
        last = clock.now = arrival
        lease = bal.lease()
        node = lease.__enter__()
        start = max(arrival, free_at[node])
        free_at[node] = start + service[node]
        response += free_at[node] - arrival
        heapq.heappush(done, (free_at[node], serial, lease))
        peak = max(peak, max(bal.in_flight.values()))
    while done:
        end, _, lease = heapq.heappop(done)
        lease.__exit__(None, None, None)  # type: ignore[attr-defined]
    assert all(v == 0 for v in bal.in_flight.values())
    result = {f"avg:{n}": a / last for n, a in area.items()}
    result["peak"] = peak
    result["response"] = response / arrivals
    return result


def _account(bal: Balancer, area: dict[str, float], since: float, until: float) -> None:
    for node, count in bal.in_flight.items():
        area[node] += count * (until - since)


def test_least_request_beats_random_with_a_slow_node() -> None:
    # Seven nodes serve in 1 time unit, one in 12; 6 requests arrive per unit (75% of the fast
    # capacity). Random sends the slow node 1/8 of the traffic, 9 times what it can serve.
    service = {f"fast{i}": 1.0 for i in range(7)} | {"slow": 12.0}
    p2c = simulate_queues("least_request", service, arrivals=6000, rate=6.0)
    rnd = simulate_queues("random", service, arrivals=6000, rate=6.0)
    assert p2c["peak"] * 5 < rnd["peak"]
    assert p2c["response"] * 5 < rnd["response"]
    assert p2c["avg:slow"] * 5 < rnd["avg:slow"]


def test_least_request_weighted_beats_unweighted_when_weights_match_capacity() -> None:
    # "big" serves three times as fast as each small node; with the weight to say so, it takes
    # more of the traffic and requests wait less than without weights, or with weighted random.
    service = {"big": 1.0, "s1": 3.0, "s2": 3.0, "s3": 3.0}
    weights = {"big": 3.0, "s1": 1.0, "s2": 1.0, "s3": 1.0}
    for seed in (3, 4):
        weighted = simulate_queues("least_request", service, arrivals=6000, rate=1.3,
                                   weights=weights, seed=seed)
        unweighted = simulate_queues("least_request", service, arrivals=6000, rate=1.3, seed=seed)
        rnd = simulate_queues("random", service, arrivals=6000, rate=1.3, weights=weights,
                              seed=seed)
        assert weighted["response"] < 0.95 * unweighted["response"]
        assert weighted["response"] < 0.9 * rnd["response"]


def test_least_request_weighted_keeps_held_leases_per_weight_even() -> None:
    weights = {"a": 3, "b": 1, "c": 1}
    for seed in range(3):
        bal = Balancer(weights, strategy="least_request", seed=seed)
        leases = [bal.lease() for _ in range(1000)]
        for lease in leases:
            lease.__enter__()
            per_weight = [count / weights[n] for n, count in bal.in_flight.items()]
            assert max(per_weight) - min(per_weight) < 15
        per_weight = [count / weights[n] for n, count in bal.in_flight.items()]
        assert max(per_weight) - min(per_weight) < 5   # unweighted: a would hold about 1/3
        for lease in leases:
            lease.__exit__(None, None, None)


def test_least_request_two_nodes_takes_the_lower_in_flight_per_weight() -> None:
    # With two nodes both are always compared, so every lease goes to the lower in-flight/weight.
    bal = Balancer({"a": 2, "b": 1}, strategy="least_request", seed=1)
    weights = {"a": Fraction(2), "b": Fraction(1)}
    leases = []
    for _ in range(60):
        before = bal.in_flight
        lease = bal.lease()
        node = lease.__enter__()
        other = "b" if node == "a" else "a"
        assert before[node] / weights[node] <= before[other] / weights[other]
        leases.append(lease)
    assert bal.in_flight == {"a": 40, "b": 20}
    for lease in leases:
        lease.__exit__(None, None, None)
    assert bal.in_flight == {"a": 0, "b": 0}


def test_least_request_spreads_held_leases() -> None:
    bal = Balancer(names(10), strategy="least_request", seed=5)
    leases = [bal.lease() for _ in range(1000)]
    for lease in leases:
        lease.__enter__()
    counts = bal.in_flight.values()
    assert sum(counts) == 1000
    assert max(counts) - min(counts) <= 4   # random alone spreads about +-30 here
    for lease in leases:
        lease.__exit__(None, None, None)


# --------------------------------------------------------------------------------------------------
# ring


RING_WEIGHTS = {"a": 3, "b": 5, "c": 7, "d": 11}


def test_ring_same_key_same_node_while_under_capacity() -> None:
    bal = Balancer(RING_WEIGHTS, strategy="ring")
    ring = balancer_ring(RING_WEIGHTS)
    for key in KEYS:
        assert bal.pick(key=key) == bal.pick(key=key) == ring.get(key)
    small = Balancer(RING_WEIGHTS, strategy="ring", vnodes=8)
    small_ring = balancer_ring(RING_WEIGHTS, vnodes=8)
    assert [small.pick(key=k) for k in KEYS] == [small_ring.get(k) for k in KEYS]
    # Leases on other keys that leave the key's node room do not move it.
    owner = ring.get("steady")
    others = [k for k in KEYS if ring.get(k) != owner][:3]
    held = [bal.lease(k) for k in others]
    for lease in held:
        lease.__enter__()
    assert bal.pick(key="steady") == owner
    for lease in held:
        lease.__exit__(None, None, None)


def test_ring_hot_key_walks_clockwise() -> None:
    nodes = names(4)
    bal = Balancer(nodes, strategy="ring")
    order = ringkit.HashRing(nodes, vnodes=160).preference_list("hot", 3)
    leases = [bal.lease("hot") for _ in range(4)]
    got = [lease.__enter__() for lease in leases]
    # caps ceil(1.25 (m+1) / 4) for m = 0, 1, 2, 3: 1, 1, 1, 2
    assert got == [order[0], order[1], order[2], order[0]]
    for lease in leases:
        lease.__exit__(None, None, None)


@pytest.mark.parametrize("load_factor", [1.0, 1.1, 1.2, 1.25, 1.5, 2.0])
def test_ring_bounded_load(load_factor: float) -> None:
    bal = Balancer(RING_WEIGHTS, strategy="ring", load_factor=load_factor)
    total = sum(RING_WEIGHTS.values())
    lf = Fraction(str(load_factor))
    rng = random.Random(1)
    leases = []
    for step in range(600):
        key = "hot" if step % 3 else rng.choice(KEYS[:20])
        lease = bal.lease(key)
        lease.__enter__()
        leases.append(lease)
        in_flight = bal.in_flight
        m = sum(in_flight.values())
        assert m == step + 1
        for name, weight in RING_WEIGHTS.items():
            assert in_flight[name] <= math.ceil(lf * m * Fraction(weight, total)), (name, m)
    for lease in leases:
        lease.__exit__(None, None, None)
    assert sum(bal.in_flight.values()) == 0


def test_ring_batch_equals_scalar_loop_under_load() -> None:
    bal = Balancer(RING_WEIGHTS, strategy="ring")
    held = [bal.lease(k) for k in ["hot"] * 30 + KEYS[:30]]
    for lease in held:
        lease.__enter__()
    keys: list[str | bytes | int] = [*KEYS, *["hot"] * 5, b"bytes", 12345]
    batch = bal.pick_many(keys)
    assert [bal.nodes[i] for i in batch] == [bal.pick(key=k) for k in keys]
    assert np.array_equal(bal.pick_many(np.array(keys[:300], dtype=object)), batch[:300])
    for lease in held:
        lease.__exit__(None, None, None)
    idle = Balancer(RING_WEIGHTS, strategy="ring")
    assert [idle.nodes[i] for i in idle.pick_many(keys)] == [idle.pick(key=k) for k in keys]
    assert idle.pick_many([]).shape == (0,)


def test_ring_needs_a_key() -> None:
    bal = Balancer(RING_WEIGHTS, strategy="ring")
    with pytest.raises(ValueError, match="key"):
        bal.pick()
    with pytest.raises(ValueError, match="key"):
        bal.lease().__enter__()
    with pytest.raises(TypeError, match="keys"):
        bal.pick_many(5)
    with pytest.raises(TypeError, match="keys"):
        bal.pick_many(None)  # type: ignore[arg-type]
    assert bal.in_flight == dict.fromkeys(RING_WEIGHTS, 0)


def test_ring_huge_load_factor_is_plain_affinity() -> None:
    bal = Balancer(RING_WEIGHTS, strategy="ring", load_factor=1e300)
    owner = balancer_ring(RING_WEIGHTS).get("hot")
    leases = [bal.lease("hot") for _ in range(50)]
    assert {lease.__enter__() for lease in leases} == {owner}
    assert [bal.nodes[i] for i in bal.pick_many(["hot"] * 3)] == [owner] * 3
    for lease in leases:
        lease.__exit__(None, None, None)


def test_ring_keys_of_a_node_taken_out_go_clockwise_and_come_back() -> None:
    bal = Balancer(RING_WEIGHTS, strategy="ring")
    ring = balancer_ring(RING_WEIGHTS)
    before = [bal.pick(key=k) for k in KEYS]
    bal.mark_down("c")
    for key, node in zip(KEYS, before, strict=True):
        order = ring.preference_list(key, 2)
        assert bal.pick(key=key) == (order[1] if order[0] == "c" else node)
    bal.mark_up("c")
    assert [bal.pick(key=k) for k in KEYS] == before


def test_ring_exclude_goes_to_the_next_node_clockwise() -> None:
    bal = Balancer(RING_WEIGHTS, strategy="ring")
    ring = balancer_ring(RING_WEIGHTS)
    for key in KEYS[:50]:
        order = ring.preference_list(key, 4)
        assert bal.pick(key=key, exclude=order[:1]) == order[1]
        assert bal.pick(key=key, exclude=order[:3]) == order[3]


# --------------------------------------------------------------------------------------------------
# every strategy


def batch_args(strategy: str, n: int) -> object:
    return KEYS[:n] if strategy == "ring" else n


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_batch_equals_scalar_loop(strategy: str) -> None:
    one, two = twins(strategy)
    for n in (0, 1, 7, 100, 300):
        batch = two.pick_many(batch_args(strategy, n))  # type: ignore[arg-type]
        keys = KEYS[:n] if strategy == "ring" else [None] * n
        assert [two.nodes[i] for i in batch] == [one.pick(key=k) for k in keys]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_batch_out_argument(strategy: str) -> None:
    one, two = twins(strategy)
    out = np.full(50, -1, dtype=np.int32)
    result = one.pick_many(batch_args(strategy, 50), out=out)  # type: ignore[arg-type]
    assert result is out
    assert np.array_equal(out, two.pick_many(batch_args(strategy, 50)))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="out"):
        one.pick_many(batch_args(strategy, 5), out=np.zeros(5, dtype=np.int64))  # type: ignore
    with pytest.raises(ValueError, match="out"):
        one.pick_many(batch_args(strategy, 5), out=np.zeros(4, dtype=np.int32))  # type: ignore


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_exclude_retries_onto_untried_nodes(strategy: str) -> None:
    weights = {"a": 3, "b": 1, "c": 2, "d": 5, "e": 0}
    bal = Balancer(weights, strategy=strategy, seed=3)
    for key in KEYS[:40]:
        tried: list[str] = []
        for _ in range(4):
            node = bal.pick(key=key, exclude=tried)
            assert node not in tried
            assert weights[node] > 0
            tried.append(node)
        with pytest.raises(NoAvailableNodeError, match="excluded"):
            bal.pick(key=key, exclude=tried)
        with pytest.raises(NoAvailableNodeError):
            bal.pick(key=key, exclude=list(weights))
    assert bal.pick(key="k", exclude="a") != "a"
    assert bal.pick(key="k", exclude=()) in weights
    with pytest.raises(UnknownNodeError, match="exclude") as info:
        bal.pick(key="k", exclude=["a", "nope"])
    assert info.value.node == "nope"
    assert isinstance(info.value, KeyError)
    with pytest.raises(TypeError, match="exclude"):
        bal.pick(key="k", exclude=[1])  # type: ignore[list-item]


def test_smooth_exclude_keeps_the_rest_of_the_sequence() -> None:
    bal = Balancer({"a": 5, "b": 1, "c": 1})
    assert bal.pick(exclude=["a"]) == "b"
    # A retry is an extra pick: the sequence itself carries on from one step further.
    assert "".join(bal.pick() for _ in range(6)) == "abacaa"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_description(strategy: str) -> None:
    bal = Balancer({"a": 2, "b": 1}, strategy=strategy)
    assert bal.strategy == strategy
    assert bal.nodes == ("a", "b")
    assert bal.weights == {"a": 2.0, "b": 1.0}
    assert len(bal) == 2 and "a" in bal and "z" not in bal
    assert repr(bal) == f"Balancer({{'a': 2.0, 'b': 1.0}}, strategy={strategy!r})"
    bal.add("c", 4)
    bal.set_weight("a", 0.5)
    bal.remove("b")
    assert bal.nodes == ("a", "c")
    assert bal.weights == {"a": 0.5, "c": 4.0}
    assert bal.in_flight == {"a": 0, "c": 0}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_zero_weight_nodes_are_never_picked(strategy: str) -> None:
    bal = Balancer({"a": 0, "b": 1, "c": 0, "d": 2}, strategy=strategy, seed=1)
    picks = {bal.pick(key=k) for k in KEYS}
    picks |= {bal.nodes[i] for i in bal.pick_many(batch_args(strategy, 300))}  # type: ignore
    assert picks == {"b", "d"}
    bal.set_weight("d", 0)
    assert {bal.pick(key=k) for k in KEYS[:50]} == {"b"}


# --------------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("nodes, error, match", [
    ([], ValueError, "nodes"),
    ({}, ValueError, "nodes"),
    ({"a": 0, "b": 0}, ValueError, "positive weight"),
    ({"a": -1}, ValueError, "nodes"),
    ({"a": 1, "b": float("nan")}, ValueError, "nodes"),
    ({"a": 1, "b": float("inf")}, ValueError, "nodes"),
    ({"a": 1, "b": "2"}, TypeError, "nodes"),
    ({"a": 1, "b": None}, TypeError, "nodes"),
    ({"a": True}, TypeError, "nodes"),
    ({1: 1}, TypeError, "nodes"),
    ({"": 1}, ValueError, "nodes"),
    (["a", "a"], ValueError, "duplicate"),
    ([1, 2], TypeError, "nodes"),
    ("ab", TypeError, "nodes"),
    (None, TypeError, "nodes"),
    (5, TypeError, "nodes"),
])
def test_bad_nodes(nodes: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        Balancer(nodes)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs, error, match", [
    ({"strategy": "fastest"}, ValueError, "strategy"),
    ({"strategy": 3}, TypeError, "strategy"),
    ({"strategy": "ring", "load_factor": 0.5}, ValueError, "load_factor"),
    ({"load_factor": 0.99}, ValueError, "load_factor"),
    ({"load_factor": float("nan")}, ValueError, "load_factor"),
    ({"load_factor": "1.5"}, TypeError, "load_factor"),
    ({"seed": "x"}, TypeError, "seed"),
    ({"seed": 1.5}, TypeError, "seed"),
    ({"max_failures": 0}, ValueError, "max_failures"),
    ({"max_failures": 2.0}, TypeError, "max_failures"),
    ({"base_ejection": -1}, ValueError, "base_ejection"),
    ({"max_ejection": float("inf")}, ValueError, "max_ejection"),
    ({"max_ejection_percent": 101}, ValueError, "max_ejection_percent"),
    ({"max_ejection_percent": -5}, ValueError, "max_ejection_percent"),
    ({"slow_start": -1}, ValueError, "slow_start"),
    ({"when_all_down": "ignore"}, ValueError, "when_all_down"),
    ({"on_event": 3}, TypeError, "on_event"),
    ({"clock": 3}, TypeError, "clock"),
    ({"vnodes": 0}, ValueError, "vnodes"),
])
def test_bad_options(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        Balancer(["a", "b"], **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("strategy", ["smooth", "random", "least_request"])
@pytest.mark.parametrize("n, error, match", [
    (-1, ValueError, "n must be >= 0"),
    (1.5, TypeError, "n must be an int"),
    (True, TypeError, "n must be an int"),
    ("3", TypeError, "n must be an int"),
    (None, TypeError, "n must be an int"),
    (["a"], TypeError, "n must be an int"),
])
def test_bad_count(strategy: str, n: object, error: type[Exception], match: str) -> None:
    bal = Balancer(["a", "b"], strategy=strategy)
    with pytest.raises(error, match=match):
        bal.pick_many(n)  # type: ignore[arg-type]
    assert bal.pick_many(np.int64(3)).shape == (3,)
    assert bal.pick_many(0).shape == (0,)


def test_unknown_and_bad_nodes_in_calls() -> None:
    bal = Balancer({"a": 5, "b": 1, "c": 1})
    twin = Balancer({"a": 5, "b": 1, "c": 1})
    calls: list[Callable[[], None]] = [
        lambda: bal.report("zz", True),
        lambda: bal.mark_down("zz"),
        lambda: bal.mark_up("zz"),
        lambda: bal.set_weight("zz", 1),
        lambda: bal.remove("zz"),
    ]
    for call in calls:
        with pytest.raises(UnknownNodeError, match="node") as info:
            call()
        assert info.value.node == "zz"
    for call in [lambda: bal.report(3, True), lambda: bal.mark_down(b"a"),  # type: ignore
                 lambda: bal.set_weight(None, 1), lambda: bal.remove(1.0),  # type: ignore
                 lambda: bal.add(7, 1)]:  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="node"):
            call()
    for weight, error in [(-1, ValueError), (float("nan"), ValueError), (float("-inf"), ValueError),
                          ("1", TypeError), (None, TypeError)]:
        with pytest.raises(error, match="weight"):
            bal.set_weight("a", weight)  # type: ignore[arg-type]
        with pytest.raises(error, match="weight"):
            bal.add("new", weight)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already"):
        bal.add("a", 1)
    with pytest.raises(ValueError, match="node"):
        bal.add("", 1)
    # Nothing above changed anything.
    assert bal.weights == {"a": 5.0, "b": 1.0, "c": 1.0}
    assert [bal.pick() for _ in range(21)] == [twin.pick() for _ in range(21)]


def test_changes_that_would_leave_nothing_to_pick() -> None:
    bal = Balancer({"a": 1, "b": 0})
    with pytest.raises(ValueError, match="zero"):
        bal.set_weight("a", 0)
    with pytest.raises(ValueError, match="zero"):
        bal.remove("a")
    bal.remove("b")
    with pytest.raises(ValueError, match="last"):
        bal.remove("a")
    assert bal.weights == {"a": 1.0}
    assert bal.pick() == "a"


# --------------------------------------------------------------------------------------------------
# One weight model: every strategy gives a node its weight's share, whatever the scale


TINY = [{"a": 1.0, "b": 1e-4}, {"a": 1.0, "b": 1e-300}, {"a": 3.0, "b": 1e-4, "c": 2.0}]


@pytest.mark.parametrize("weights", TINY, ids=["1e-4", "1e-300", "three"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_tiny_weights_get_their_share_in_every_strategy(strategy: str,
                                                        weights: dict[str, float]) -> None:
    n = 1_000_000
    bal = Balancer(weights, strategy=strategy, seed=12)
    batch = np.arange(n, dtype=np.uint64) if strategy == "ring" else n
    counts = np.bincount(bal.pick_many(batch), minlength=len(weights))  # type: ignore[arg-type]
    total = sum(weights.values())
    expected = {name: n * w / total for name, w in weights.items()}
    if strategy == "smooth":
        # Exact counting: smooth round robin keeps every node within a pick or two of its share.
        for i, name in enumerate(bal.nodes):
            assert abs(counts[i] - expected[name]) <= 2, (name, counts[i], expected[name])
    else:
        statistic, df = chi2_statistic(counts, list(weights.values()))
        assert statistic < chi2_critical(df)
    if weights["b"] < 1e-100:
        assert counts[bal.nodes.index("b")] == 0
    # The scalar picks agree with the batch.
    twin = Balancer(weights, strategy=strategy, seed=12)
    keys = [int(k) for k in range(2000)]
    scalar = [twin.pick(key=k) for k in keys]
    assert scalar == [bal.nodes[i] for i in Balancer(weights, strategy=strategy, seed=12)
                      .pick_many(keys if strategy == "ring" else 2000)]


def test_smooth_float_path_holds_every_share_over_any_run() -> None:
    rng = random.Random(7)
    weights = {f"n{i}": rng.uniform(0.01, 5) for i in range(12)} | {"tiny": 1e-3}
    bal = Balancer(weights)
    assert bal._select_config.int_weights_array is None
    picks = [bal.nodes[i] for i in bal.pick_many(200_000)]
    total = sum(weights.values())
    hits = {name: 0 for name in weights}
    for count, name in enumerate(picks, 1):
        hits[name] += 1
        if count % 997 == 0:
            for node, w in weights.items():
                assert abs(hits[node] - count * w / total) < 2.0, (node, count)
    # Deterministic: the same weights give the same sequence, pick by pick or in a batch.
    again = Balancer(weights)
    assert [again.pick() for _ in range(5000)] == picks[:5000]


def test_smooth_integer_weights_are_exactly_nginx() -> None:
    # The integer fast path, laid out or not, whatever the scale of the integers.
    for weights in ([5, 1, 1], [2**62, 2**62], [10**15, 3 * 10**15, 7]):
        nodes = names(len(weights))
        bal = Balancer(dict(zip(nodes, weights, strict=True)))
        # Integers beyond 2**40 (once divided by their gcd) run in floating point, where
        # integers below 2**53 add exactly: still nginx's sequence.
        assert (bal._select_config.int_weights_array is None) == (max(weights) == 3 * 10**15)
        expected = [nodes[i] for i in nginx_swrr([float(w) for w in weights], 500)]
        assert [bal.pick() for _ in range(500)] == expected


def test_least_request_tiny_weight_holds_at_most_one_lease() -> None:
    for weights in ({"a": 1.0, "b": 1e-4}, {"a": 1.0, "b": 1e-300}):
        bal = Balancer(weights, strategy="least_request", seed=3)
        leases = [bal.lease() for _ in range(1000)]
        for lease in leases:
            lease.__enter__()
        assert bal.in_flight["b"] <= 1
        for lease in leases:
            lease.__exit__(None, None, None)


def test_ring_strategy_weights_are_scale_free_and_small() -> None:
    keys = [f"k{i}" for i in range(2000)]
    one = Balancer({"a": 3, "b": 5, "c": 7}, strategy="ring")
    ten = Balancer({"a": 30, "b": 50, "c": 70}, strategy="ring")
    tiny = Balancer({"a": 3e-9, "b": 5e-9, "c": 7e-9}, strategy="ring")
    picks = one.pick_many(keys).tolist()
    assert picks == ten.pick_many(keys).tolist() == tiny.pick_many(keys).tolist()
    oracle = balancer_ring({"a": 3, "b": 5, "c": 7})
    assert [one.nodes[i] for i in picks][:100] == [oracle.get(k) for k in keys[:100]]
    # Weights a million apart build a ring of at most RING_POINTS points (quickly), and the
    # HashRing placement itself is untouched.
    import ringkit.balancer as balancer_module
    tracemalloc.start()
    try:
        skewed = Balancer({"a": 1e6, "b": 1}, strategy="ring")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200 * 2**20
    assert len(skewed._ring.points) <= balancer_module.RING_POINTS + 2
    shares = np.bincount(skewed.pick_many(np.arange(200_000)), minlength=2)
    assert shares[1] < 20
    assert len(ringkit.HashRing({"a": 3, "b": 5}).points) == 1280


def test_ring_strategy_node_left_off_the_ring_still_serves_when_the_rest_are_out() -> None:
    bal = Balancer({"a": 1, "b": 1e-300}, strategy="ring", when_all_down="raise")
    assert bal._ring.nodes == ("a",)
    assert set(bal.pick_many(KEYS).tolist()) == {0}
    bal.mark_down("a")
    assert {bal.pick(key=k) for k in KEYS} == {"b"}
    assert set(bal.pick_many(KEYS).tolist()) == {1}
    bal.mark_up("a")
    assert bal.pick(key="x") == "a"


def test_ring_strategy_refuses_more_points_than_a_ring_holds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from ringkit.validation import MAX_POINTS

    with pytest.raises(ValueError, match="vnodes"):
        Balancer(names(20), strategy="ring", vnodes=MAX_POINTS // 16)
    # The same check on add and set_weight, before anything changes (a small cap, for speed).
    monkeypatch.setattr("ringkit.balancer.MAX_POINTS", 1500)
    bal = Balancer({**dict.fromkeys(names(8), 1.0), "zero": 0.0}, strategy="ring")
    bal.add("ninth", 1)
    with pytest.raises(ValueError, match="vnodes"):
        bal.add("tenth", 1)
    with pytest.raises(ValueError, match="vnodes"):
        bal.set_weight("zero", 1)
    assert "tenth" not in bal and bal.weights["zero"] == 0 and len(bal._ring) == 9


def test_names_and_weights_are_checked_like_the_ring_does() -> None:
    for bad in ("\ud800", "x\udfff"):
        with pytest.raises(ValueError, match="nodes.*UTF-8"):
            Balancer([bad])
        with pytest.raises(ValueError, match="node.*UTF-8"):
            Balancer(["a"]).add(bad)
    with pytest.raises(ValueError, match=r"nodes\['a'\]") as info:
        Balancer({"a": 10**400})
    assert len(str(info.value)) < 200
    assert Balancer({"a": 1e308, "b": 1e308}).pick() in ("a", "b")
    assert Balancer({"a": 1e308, "b": 1e308}, strategy="random").pick() in ("a", "b")


def test_every_public_method_has_its_own_docstring() -> None:
    import inspect

    for cls in (Balancer, ringkit.HashRing, ringkit.RingSnapshot):
        for name, member in inspect.getmembers(cls):
            if name.startswith("_") and name not in ("__getitem__", "__len__", "__contains__",
                                                     "__iter__", "__enter__", "__exit__"):
                continue
            if not callable(member) and not isinstance(member, property):
                continue
            doc = inspect.getdoc(member) or ""
            assert doc and "see ringkit.Balancer" not in doc.lower(), (cls.__name__, name)
    assert "exclude" in (Balancer.pick.__doc__ or "")
    assert "key" in inspect.signature(Balancer.pick).parameters


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_weights_at_the_ends_of_the_double_range(strategy: str) -> None:
    # Weights are scale-free: 1e308 works as 1 does (no sum overflows), and a node whose weight
    # is too small beside the others to count still takes picks when it is all that is left.
    bal = Balancer({"a": 1e308, "b": 1e308, "c": 1e-300}, strategy=strategy, seed=4)
    batch = KEYS if strategy == "ring" else 3000
    counts = np.bincount(bal.pick_many(batch), minlength=3)  # type: ignore[arg-type]
    assert counts[2] == 0 and abs(int(counts[0]) - int(counts[1])) < 0.2 * counts.sum()
    assert bal.pick(key="k", exclude=["a", "b"]) == "c"
    bal.mark_down("a")
    bal.mark_down("b")
    assert {bal.pick(key=k) for k in KEYS[:20]} == {"c"}
    assert bal.health()["a"].effective_weight == 0.0
    assert bal.health()["c"].effective_weight == 1e-300
