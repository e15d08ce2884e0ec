"""Balancer health on a fake clock: passive ejection and its timeline, the ejection cap,
re-admission at the first pick after the deadline, slow start, mark_down/mark_up, the on_event
hook, when_all_down, and leases that count requests in flight and report their outcome."""

from __future__ import annotations

import logging
from collections import Counter

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from ringkit import (
    Balancer,
    BalancerEvent,
    NoAvailableNodeError,
    NodeHealth,
    RingkitError,
    UnknownNodeError,
)

STRATEGIES = ("smooth", "random", "least_request", "ring")
KEYS = [f"key-{i}" for i in range(200)]


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def fail(bal: Balancer, node: str, times: int) -> None:
    for _ in range(times):
        bal.report(node, False)


def picked(bal: Balancer, count: int = 200) -> set[str]:
    return {bal.pick(key=KEYS[i % len(KEYS)]) for i in range(count)}


def states(bal: Balancer) -> dict[str, str]:
    return {name: h.state for name, h in bal.health().items()}


# --------------------------------------------------------------------------------------------------
# ejection


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_ejection_after_consecutive_failures(strategy: str) -> None:
    clock = FakeClock(100.0)
    events: list[BalancerEvent] = []
    bal = Balancer(["a", "b", "c"], strategy=strategy, seed=1, clock=clock, on_event=events.append)
    assert bal.health()["a"] == NodeHealth("up", 0, 0, None, 1.0, 1.0)
    fail(bal, "a", 4)
    bal.report("a", True)                       # a success resets the count
    assert bal.health()["a"].failures == 0
    fail(bal, "a", 4)
    assert bal.health()["a"] == NodeHealth("up", 4, 0, None, 1.0, 1.0)
    assert events == []
    bal.report("a", 0)                          # falsy is a failure
    assert bal.health()["a"] == NodeHealth("ejected", 0, 1, 130.0, 1.0, 0.0)
    assert events == [BalancerEvent("ejected", "a", 100.0, 130.0, 1)]
    assert picked(bal) == {"b", "c"}
    # Failures reported for an ejected node do not extend its ejection.
    fail(bal, "a", 12)
    assert bal.health()["a"].ejected_until == 130.0
    assert len(events) == 1


def test_failing_leases_eject_and_succeeding_ones_reset() -> None:
    clock = FakeClock()
    bal = Balancer({"a": 1}, clock=clock, max_failures=3, max_ejection_percent=100)
    for _ in range(2):
        with pytest.raises(ZeroDivisionError):
            with bal.lease() as node:
                assert bal.in_flight == {node: 1}
                1 / 0  # noqa: B018
    assert bal.health()["a"].failures == 2
    with bal.lease():
        pass
    assert bal.health()["a"].failures == 0
    for _ in range(3):
        with pytest.raises(KeyError):
            with bal.lease():
                raise KeyError("boom")
    assert bal.health()["a"].state == "ejected"
    assert bal.in_flight == {"a": 0}


def test_ejection_duration_grows_with_each_ejection_and_is_capped() -> None:
    clock = FakeClock(0.0)
    events: list[BalancerEvent] = []
    bal = Balancer(["a", "b"], clock=clock, max_failures=2, base_ejection=10.0, max_ejection=25.0,
                   on_event=events.append)
    expected_durations = [10.0, 20.0, 25.0, 25.0]
    for count, duration in enumerate(expected_durations, start=1):
        ejected_at = clock.now
        fail(bal, "a", 2)
        until = ejected_at + duration
        assert bal.health()["a"] == NodeHealth("ejected", 0, count, until, 1.0, 0.0)
        assert events[-1] == BalancerEvent("ejected", "a", ejected_at, until, count)
        clock.now = until - 0.5
        assert picked(bal, 10) == {"b"}
        clock.now = until
        # Re-admission happens at the first pick at or after the deadline, not before.
        assert bal.health()["a"].state == "ejected"
        bal.pick()
        assert bal.health()["a"] == NodeHealth("up", 0, count, None, 1.0, 1.0)
        assert events[-1] == BalancerEvent("readmitted", "a", until, None, count)
        assert picked(bal, 4) == {"a", "b"}
        clock.now += 3.0
    assert [e.kind for e in events] == ["ejected", "readmitted"] * 4


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_readmission_by_batch_and_lease(strategy: str) -> None:
    clock = FakeClock(5.0)
    bal = Balancer(["a", "b", "c", "d"], strategy=strategy, seed=2, clock=clock, max_failures=1)
    bal.report("b", False)
    assert states(bal)["b"] == "ejected"
    batch = KEYS if strategy == "ring" else 300
    assert "b" not in {bal.nodes[i] for i in bal.pick_many(batch)}
    clock.now = 35.0
    assert "b" in {bal.nodes[i] for i in bal.pick_many(batch)}
    assert states(bal)["b"] == "up"
    bal.report("b", False)
    assert states(bal)["b"] == "ejected"
    clock.now = 95.0                            # second ejection: 60 s
    with bal.lease(key="k"):
        assert states(bal)["b"] == "up"


def test_ejection_cap_three_nodes_at_fifty_percent() -> None:
    clock = FakeClock()
    events: list[BalancerEvent] = []
    bal = Balancer(["a", "b", "c"], clock=clock, on_event=events.append)
    fail(bal, "a", 5)
    fail(bal, "b", 7)
    assert states(bal) == {"a": "ejected", "b": "up", "c": "up"}
    assert bal.health()["b"].failures == 7
    assert [e.node for e in events] == ["a"]
    assert picked(bal, 20) == {"b", "c"}
    # Once a is back, b's next failure finds room under the cap.
    clock.now = 30.0
    bal.pick()
    bal.report("b", False)
    assert states(bal) == {"a": "up", "b": "ejected", "c": "up"}
    assert [(e.kind, e.node) for e in events] == [
        ("ejected", "a"), ("readmitted", "a"), ("ejected", "b")]


@pytest.mark.parametrize("percent, nodes, most", [
    (50.0, 4, 2), (50.0, 5, 2), (50.0, 2, 1), (50.0, 1, 1), (10.0, 5, 1), (34.0, 6, 2),
    (100.0, 3, 3), (0.0, 3, 0),
])
def test_ejection_cap(percent: float, nodes: int, most: int) -> None:
    names = [f"n{i}" for i in range(nodes)]
    bal = Balancer(names, clock=FakeClock(), max_failures=1, max_ejection_percent=percent)
    for name in names:
        bal.report(name, False)
    assert Counter(states(bal).values())["ejected"] == most


def test_an_ejection_ends_on_time_under_a_mark_down() -> None:
    clock = FakeClock(0.0)
    bal = Balancer(["a", "b", "c"], clock=clock, max_failures=1)
    bal.report("a", False)
    bal.mark_down("a")
    clock.now = 30.0
    bal.pick()
    assert bal.health()["a"] == NodeHealth("down", 0, 1, None, 1.0, 0.0)
    # Its ended ejection no longer holds the cap's one place.
    bal.report("b", False)
    assert states(bal) == {"a": "down", "b": "ejected", "c": "up"}
    bal.mark_up("a")
    assert states(bal) == {"a": "up", "b": "ejected", "c": "up"}


def test_marked_down_nodes_do_not_count_towards_the_cap() -> None:
    bal = Balancer(["a", "b", "c"], clock=FakeClock(), max_failures=1)
    bal.mark_down("b")
    bal.report("a", False)
    assert states(bal) == {"a": "ejected", "b": "down", "c": "up"}
    assert picked(bal, 10) == {"c"}
    # A down node is not ejected on top.
    bal.report("b", False)
    assert states(bal)["b"] == "down"


# --------------------------------------------------------------------------------------------------
# slow start


def test_slow_start_ramps_the_weight_back() -> None:
    clock = FakeClock(0.0)
    bal = Balancer({"a": 2, "b": 2}, clock=clock, max_failures=1, slow_start=10.0)
    bal.report("a", False)
    assert bal.health()["a"].effective_weight == 0.0
    clock.now = 30.0
    bal.pick()
    assert bal.health()["a"].state == "up"
    assert bal.health()["a"].effective_weight == pytest.approx(2.0 / 11)
    # A whole cycle at 2/11 against 2: in thousandths 182 against 2000.
    counts = Counter(bal.nodes[i] for i in bal.pick_many(1091))
    assert counts == {"a": 91, "b": 1000}
    seen = []
    for step in range(1, 12):
        clock.now = 30.0 + step
        bal.pick()
        health = bal.health()["a"]
        assert health.weight == 2.0
        seen.append(health.effective_weight)
    assert seen[:9] == pytest.approx([2.0 * (step + 1) / 11 for step in range(1, 10)])
    assert seen[9:] == [2.0, 2.0]
    assert bal.health()["b"].effective_weight == 2.0


def test_slow_start_ramp_moves_only_at_picks() -> None:
    clock = FakeClock(0.0)
    bal = Balancer({"a": 1, "b": 1}, clock=clock, slow_start=4.0)
    bal.mark_down("a")
    bal.mark_up("a")                           # mark_up ramps up too
    assert bal.health()["a"].effective_weight == pytest.approx(1 / 11)
    clock.now = 100.0
    assert bal.health()["a"].effective_weight == pytest.approx(1 / 11)
    bal.pick()
    assert bal.health()["a"].effective_weight == 1.0


def test_no_slow_start_means_full_weight_at_once() -> None:
    clock = FakeClock(0.0)
    bal = Balancer({"a": 3, "b": 1}, clock=clock, max_failures=1)
    bal.report("a", False)
    clock.now = 30.0
    bal.pick()
    assert bal.health()["a"].effective_weight == 3.0


# --------------------------------------------------------------------------------------------------
# mark_down / mark_up, events


def test_mark_down_and_up_with_events() -> None:
    clock = FakeClock(7.0)
    events: list[BalancerEvent] = []
    bal = Balancer({"a": 5, "b": 1, "c": 1}, clock=clock, max_failures=1, on_event=events.append)
    bal.mark_down("a")
    bal.mark_down("a")                          # already down: nothing new
    assert bal.health()["a"] == NodeHealth("down", 0, 0, None, 5.0, 0.0)
    assert picked(bal, 20) == {"b", "c"}
    clock.now = 8.0
    bal.mark_up("a")
    bal.mark_up("a")                            # already up: nothing new
    assert bal.health()["a"] == NodeHealth("up", 0, 0, None, 5.0, 5.0)
    assert "a" in picked(bal, 7)
    # mark_up also ends a running ejection.
    bal.report("b", False)
    assert states(bal)["b"] == "ejected"
    clock.now = 9.0
    bal.mark_up("b")
    assert states(bal)["b"] == "up"
    assert events == [
        BalancerEvent("marked_down", "a", 7.0, None, 0),
        BalancerEvent("marked_up", "a", 8.0, None, 0),
        BalancerEvent("ejected", "b", 8.0, 38.0, 1),
        BalancerEvent("marked_up", "b", 9.0, None, 1),
    ]
    # The ended ejection leaves no deadline behind that would re-admit it again.
    clock.now = 40.0
    bal.pick()
    assert len(events) == 4


def test_a_raising_hook_does_not_break_anything(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    def hook(event: BalancerEvent) -> None:
        calls.append(event.kind)
        raise RuntimeError("hook is broken")

    clock = FakeClock(0.0)
    bal = Balancer(["a", "b", "c"], clock=clock, max_failures=2, on_event=hook)
    with caplog.at_level(logging.ERROR, logger="ringkit.balancer"):
        fail(bal, "a", 2)
        assert picked(bal, 20) == {"b", "c"}
        clock.now = 30.0
        assert bal.pick() in ("a", "b", "c")
        bal.mark_down("c")
        bal.mark_up("c")
        with bal.lease():
            pass
    assert calls == ["ejected", "readmitted", "marked_down", "marked_up"]
    assert states(bal) == {"a": "up", "b": "up", "c": "up"}
    assert sum("hook raised" in r.getMessage() for r in caplog.records) == 4


# --------------------------------------------------------------------------------------------------
# when every node is out


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_all_down_panic_picks_among_all(strategy: str) -> None:
    weights = {"a": 5, "b": 1, "c": 1}
    bal = Balancer(weights, strategy=strategy, seed=4, clock=FakeClock())
    twin = Balancer(weights, strategy=strategy, seed=4)
    for name in weights:
        bal.mark_down(name)
    assert set(states(bal).values()) == {"down"}
    assert [bal.pick(key=k) for k in KEYS[:50]] == [twin.pick(key=k) for k in KEYS[:50]]
    with bal.lease(key="k") as node:
        assert node in weights
    bal.mark_up("b")
    assert picked(bal, 20) == {"b"}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_all_down_raise(strategy: str) -> None:
    bal = Balancer(["a", "b"], strategy=strategy, clock=FakeClock(), when_all_down="raise")
    bal.mark_down("a")
    bal.mark_down("b")
    with pytest.raises(NoAvailableNodeError) as info:
        bal.pick(key="k")
    assert isinstance(info.value, RingkitError)
    with pytest.raises(NoAvailableNodeError):
        bal.pick_many(KEYS[:3] if strategy == "ring" else 3)
    with pytest.raises(NoAvailableNodeError):
        with bal.lease(key="k"):
            pass
    assert bal.in_flight == {"a": 0, "b": 0}
    assert bal.pick_many([] if strategy == "ring" else 0).shape == (0,)
    bal.mark_up("b")
    assert picked(bal, 20) == {"b"}


@pytest.mark.parametrize("when_all_down", ["panic", "raise"])
def test_every_node_ejected(when_all_down: str) -> None:
    clock = FakeClock(0.0)
    bal = Balancer(["only"], clock=clock, max_failures=1,
                   when_all_down=when_all_down)  # type: ignore[arg-type]
    bal.report("only", False)                   # the cap always allows one node
    assert states(bal) == {"only": "ejected"}
    if when_all_down == "panic":
        assert bal.pick() == "only"
    else:
        with pytest.raises(NoAvailableNodeError):
            bal.pick()
    clock.now = 30.0                            # re-admitted before this pick is made
    assert bal.pick() == "only"
    assert states(bal) == {"only": "up"}


# --------------------------------------------------------------------------------------------------
# leases


def test_lease_counts_in_flight_and_reports() -> None:
    bal = Balancer({"a": 1, "b": 1}, strategy="least_request", seed=0)
    outer = bal.lease()
    assert outer.node is None
    with outer as first:
        assert outer.node == first
        assert bal.in_flight[first] == 1
        with bal.lease() as second:
            assert second != first              # least request sends it to the idle node
            assert sum(bal.in_flight.values()) == 2
        assert sum(bal.in_flight.values()) == 1
    assert bal.in_flight == {"a": 0, "b": 0}
    with pytest.raises(RuntimeError, match="once"):
        with outer:
            pass
    # Leaving by an exception counts a failure and lets the exception through.
    with pytest.raises(ValueError, match="inner"):
        with bal.lease() as node:
            raise ValueError("inner")
    assert bal.health()[node].failures == 1
    assert bal.in_flight == {"a": 0, "b": 0}


def test_lease_across_runtime_changes() -> None:
    bal = Balancer({"a": 1, "b": 1, "c": 1})
    on_a = bal.lease()
    assert on_a.__enter__() == "a"
    on_b = bal.lease()
    assert on_b.__enter__() == "b"
    bal.set_weight("a", 3)
    bal.add("d", 2)
    assert bal.in_flight == {"a": 1, "b": 1, "c": 0, "d": 0}
    bal.remove("b")
    assert bal.in_flight == {"a": 1, "c": 0, "d": 0}
    on_b.__exit__(None, None, None)             # its node is gone: nothing to count
    on_a.__exit__(RuntimeError, RuntimeError("x"), None)
    assert bal.in_flight == {"a": 0, "c": 0, "d": 0}
    assert bal.health()["a"].failures == 1
    # A node removed and added again starts afresh; the old lease does not drive it negative.
    again = bal.lease()
    node = again.__enter__()
    bal.remove(node)
    bal.add(node)
    assert bal.in_flight[node] == 0
    again.__exit__(None, None, None)
    assert bal.in_flight == {"a": 0, "c": 0, "d": 0}


def test_report_without_a_lease() -> None:
    bal = Balancer(["a", "b"], max_failures=2, clock=FakeClock())
    bal.report("a", False)
    assert bal.health()["a"].failures == 1
    bal.report("a", True)
    assert bal.health()["a"].failures == 0
    bal.remove("a")
    with pytest.raises(UnknownNodeError):
        bal.report("a", False)
    bal.add("a")
    assert bal.health()["a"] == NodeHealth("up", 0, 0, None, 1.0, 1.0)


def test_health_survives_weight_changes() -> None:
    clock = FakeClock(0.0)
    bal = Balancer({"a": 1, "b": 1, "c": 1}, clock=clock, max_failures=1)
    bal.report("a", False)
    bal.set_weight("a", 4)
    bal.add("d")
    assert states(bal) == {"a": "ejected", "b": "up", "c": "up", "d": "up"}
    assert bal.health()["a"].weight == 4.0
    assert picked(bal, 20) == {"b", "c", "d"}
    clock.now = 30.0
    bal.pick()
    assert bal.health()["a"].effective_weight == 4.0


def test_readmission_forgets_failures_counted_while_ejected() -> None:
    # Requests still in flight at the ejection fail later; the node's fresh start after the
    # ejection must not begin with their failures (one more would eject it at once).
    clock = FakeClock(0.0)
    bal = Balancer(["a", "b", "c"], clock=clock, max_failures=3)
    fail(bal, "a", 3)
    fail(bal, "a", 4)
    assert bal.health()["a"] == NodeHealth("ejected", 4, 1, 30.0, 1.0, 0.0)
    clock.now = 30.0
    bal.pick()
    assert bal.health()["a"] == NodeHealth("up", 0, 1, None, 1.0, 1.0)
    fail(bal, "a", 2)
    assert bal.health()["a"].state == "up"


# --------------------------------------------------------------------------------------------------
# a model of the health rules


POOL = ["a", "b", "c", "d", "e"]


class HealthMachine(RuleBasedStateMachine):
    """Reports, marks, weight changes and a moving clock against a plain-Python model of the
    rules: ejection after MAX consecutive failures, for BASE x count capped at CAP_SECONDS, at
    most half the nodes, re-admission (with a clean count) at the first pick after the deadline;
    picks only ever name a node that is up (or, in panic, any node with weight)."""

    MAX = 2
    BASE = 10.0
    CAP_SECONDS = 25.0

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(0.0)
        self.weights: dict[str, float] = {}
        self.down: set[str] = set()
        self.until: dict[str, float] = {}
        self.ejections: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.panic = True
        self.bal: Balancer | None = None

    @initialize(strategy=st.sampled_from(STRATEGIES), panic=st.booleans(),
                weights=st.lists(st.sampled_from([0, 1, 2, 5]), min_size=2, max_size=5)
                .filter(any))
    def start(self, strategy: str, panic: bool, weights: list[int]) -> None:
        self.weights = {POOL[i]: float(w) for i, w in enumerate(weights)}
        self.panic = panic
        self.bal = Balancer(dict(self.weights), strategy=strategy, seed=0, clock=self.clock,
                            max_failures=self.MAX, base_ejection=self.BASE,
                            max_ejection=self.CAP_SECONDS,
                            when_all_down="panic" if panic else "raise")

    @property
    def balancer(self) -> Balancer:
        assert self.bal is not None
        return self.bal

    def readmit(self) -> None:
        for name, until in list(self.until.items()):
            if until <= self.clock.now:
                del self.until[name]
                self.failures[name] = 0

    def check_pick(self, picks: list[str] | None) -> None:
        up = {n for n, w in self.weights.items() if w > 0 and n not in self.down
              and n not in self.until}
        if picks is None:
            assert not up and not self.panic
            return
        allowed = up or {n for n, w in self.weights.items() if w > 0}
        assert set(picks) <= allowed

    @rule(dt=st.sampled_from([1.0, 10.0, 30.0]))
    def advance(self, dt: float) -> None:
        self.clock.now += dt

    @rule(key=st.sampled_from(KEYS[:8]))
    def pick(self, key: str) -> None:
        self.readmit()
        try:
            picks: list[str] | None = [self.balancer.pick(key=key)]
        except NoAvailableNodeError:
            picks = None
        self.check_pick(picks)

    @rule()
    def pick_many(self) -> None:
        self.readmit()
        bal = self.balancer
        try:
            batch = bal.pick_many(KEYS[:5] if bal.strategy == "ring" else 5)
            picks: list[str] | None = [bal.nodes[i] for i in batch]
        except NoAvailableNodeError:
            picks = None
        self.check_pick(picks)

    @rule(node=st.sampled_from(POOL), ok=st.sampled_from([False, False, True]))
    def report(self, node: str, ok: bool) -> None:
        if node not in self.weights:
            with pytest.raises(UnknownNodeError):
                self.balancer.report(node, ok)
            return
        self.balancer.report(node, ok)
        if ok:
            self.failures[node] = 0
            return
        self.failures[node] += 1
        if (self.failures[node] >= self.MAX and node not in self.down
                and node not in self.until
                and len(self.until) < max(1, len(self.weights) // 2)):
            self.ejections[node] += 1
            self.until[node] = self.clock.now + min(self.BASE * self.ejections[node],
                                                    self.CAP_SECONDS)
            self.failures[node] = 0

    @rule(node=st.sampled_from(POOL))
    def mark_down(self, node: str) -> None:
        if node in self.weights:
            self.balancer.mark_down(node)
            self.down.add(node)

    @rule(node=st.sampled_from(POOL))
    def mark_up(self, node: str) -> None:
        if node in self.weights:
            self.balancer.mark_up(node)
            if node in self.down or node in self.until:
                self.failures[node] = 0
            self.down.discard(node)
            self.until.pop(node, None)

    @rule(node=st.sampled_from(POOL), weight=st.sampled_from([0, 1, 3]))
    def set_weight(self, node: str, weight: int) -> None:
        if node not in self.weights:
            return
        if weight == 0 and not any(w for n, w in self.weights.items() if n != node):
            with pytest.raises(ValueError):
                self.balancer.set_weight(node, weight)
            return
        self.balancer.set_weight(node, weight)
        self.weights[node] = float(weight)

    @rule(node=st.sampled_from(POOL), weight=st.sampled_from([0, 1, 2]))
    def add_or_remove(self, node: str, weight: int) -> None:
        if node not in self.weights:
            self.balancer.add(node, weight)
            self.weights[node] = float(weight)
            return
        rest = [w for n, w in self.weights.items() if n != node]
        if not any(rest):
            with pytest.raises(ValueError):
                self.balancer.remove(node)
            return
        self.balancer.remove(node)
        del self.weights[node]
        self.down.discard(node)
        self.until.pop(node, None)
        del self.ejections[node], self.failures[node]

    @invariant()
    def health_matches_the_model(self) -> None:
        if self.bal is None:
            return
        report = self.bal.health()
        assert list(report) == list(self.weights)
        assert self.bal.nodes == tuple(self.weights)
        for name, health in report.items():
            state = "down" if name in self.down else "ejected" if name in self.until else "up"
            assert health.state == state, name
            assert health.failures == self.failures[name], name
            assert health.ejections == self.ejections[name], name
            assert health.ejected_until == self.until.get(name), name
            assert health.weight == self.weights[name], name


TestHealthMachine = HealthMachine.TestCase
TestHealthMachine.settings = settings(stateful_step_count=40)
