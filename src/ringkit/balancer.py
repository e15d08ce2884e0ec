"""Balancer: client-side weighted load balancing with health, leases and runtime changes.

The picks run in the compiled :class:`ringkit._select.Selector` (one C call per ``pick``); this
module holds what changes rarely: validation, the node set and weights, passive health (ejection
after consecutive failures, re-admission, slow start) and the events it reports.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from numbers import Real
from typing import Any, Literal

import numpy as np

from ringkit import _select
from ringkit._select import STRATEGIES, Selector
from ringkit.errors import UnknownNodeError
from ringkit.ring import HashRing
from ringkit.validation import (
    MAX_POINTS,
    check_name,
    check_vnodes,
    check_weight,
    parse_nodes,
    short,
)

__all__ = ["Balancer", "BalancerEvent", "NodeHealth", "STRATEGIES"]

log = logging.getLogger("ringkit.balancer")

# Slow start ramps a re-admitted node's weight up in this many equal steps.
SLOW_START_STEPS = 10

# The "ring" strategy's ring holds at most this many points (or vnodes per node, if more): about
# 12 MB, rebuilt in a tenth of a second when a weight changes, whatever the weights.
RING_POINTS = 2**20


@dataclass(frozen=True)
class BalancerEvent:
    """What ``on_event`` hears: ``kind`` is "ejected", "readmitted", "marked_down" or
    "marked_up"; ``until`` is when an ejection ends; ``ejections`` counts the node's ejections."""

    kind: str
    node: str
    at: float
    until: float | None = None
    ejections: int = 0


@dataclass(frozen=True)
class NodeHealth:
    """A node's health as :meth:`Balancer.health` reports it."""

    state: Literal["up", "ejected", "down"]
    failures: int
    ejections: int
    ejected_until: float | None
    weight: float
    effective_weight: float


@dataclass
class _Health:
    ejections: int = 0
    ejected_until: float | None = None
    down: bool = False
    readmitted_at: float | None = None


def _check_positive(value: object, argname: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{argname} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{argname} must be a finite number {bound}, got {value!r}")
    return number


def _ring_weights(weights: dict[str, float], vnodes: int) -> dict[str, float]:
    """The weights of the "ring" strategy's own HashRing (with `vnodes`): the balancer's weights
    scaled so that the smallest positive one is 1, which gives it `vnodes` points and every other
    node points in proportion (weights whose smallest is 1 build the HashRing of the weights
    themselves). Where that would pass RING_POINTS points (or vnodes per node, if more), the
    shares are scaled to that many points instead, and a node whose share comes to less than
    half a point is left off the ring (it still takes the keys of a ring whose nodes are all out,
    by weight). Zero weights are never on the ring. Raises ValueError if the nodes alone would
    pass MAX_POINTS."""
    positive = {name: w for name, w in weights.items() if w > 0}
    if vnodes * len(positive) + 2 * len(positive) > MAX_POINTS:
        raise ValueError(f"vnodes: {len(positive)} nodes x vnodes {vnodes} need more than the "
                         f"{MAX_POINTS:,} points a ring may hold (strategy='ring')")
    budget = max(RING_POINTS, vnodes * len(positive))
    low = min(positive.values())
    ideal = {name: w / low for name, w in positive.items()}
    if vnodes * sum(ideal.values()) <= budget:   # inf (tiny beside huge) is over
        return ideal
    # Shares computed against the largest weight: no sum of huge weights can overflow.
    top = max(positive.values())
    relative = {name: w / top for name, w in positive.items()}
    total = sum(relative.values())
    scaled = {name: r / total * budget / vnodes for name, r in relative.items()}
    return {name: w for name, w in scaled.items() if vnodes * w >= 0.5}


class Balancer(Selector):
    """Client-side load balancing over named nodes.

    >>> bal = Balancer({"a": 5, "b": 1, "c": 1})
    >>> "".join(bal.pick() for _ in range(7))
    'aabacaa'

    Strategies:

    - ``"smooth"`` (default): nginx's smooth weighted round robin, exactly, on the weights as
      given. Weights that are integers (or binary fractions such as 0.5 or 2.25) run the
      integer algorithm, whose sequence is periodic: it is laid out once per configuration and
      each pick is O(1). Other weights (0.1, 1/3, 1e-300) run the same algorithm in floating
      point, O(n) a pick: deterministic, and every node gets its share (within a pick or so over
      any run of picks).
    - ``"random"``: weighted random with Vose's alias table, O(1) a pick; ``seed`` makes the
      picks reproducible.
    - ``"least_request"``: power of two choices: a first candidate drawn in proportion to its
      weight and a second among the other nodes (uniformly); the one with fewer requests in
      flight per unit of weight wins, the first on ties, so with nothing in flight the picks
      follow the weights. In-flight counts come from :meth:`lease`.
    - ``"ring"``: key affinity with bounded load (Mirrokni, Thorup and Zadimoghaddam): a key goes
      to its node on a :class:`ringkit.HashRing`, unless that node already has
      ``ceil(load_factor * (m + 1) * its weight share)`` of the ``m`` requests in flight, in
      which case it walks clockwise to the next node with room. ``pick(key=...)``. The ring
      is the balancer's own: the smallest positive weight gets ``vnodes`` points and the others
      points in proportion, up to RING_POINTS (2**20) points in all, beyond which the shares
      are scaled to fit; so any weights, however far apart, build a small ring quickly.

    Weights: a node's weight is a finite number >= 0, at least one positive; names are
    non-empty str that encode to UTF-8. Every strategy gives a node the share of picks its weight
    has of the total of the eligible nodes' weights, exactly, whatever the scale: weights
    {"a": 1, "b": 1e-4} send b one pick in 10,001, and a weight of 1e-300 beside 1 is, in
    practice, never picked. Weight 0 means "never picked": the node stays configured (with its
    health and counts) but gets nothing until its weight is raised. Under load, "least_request"
    and "ring" compare in-flight counts per unit of weight, and a node with nothing in flight
    has load 0 whatever its weight: a tiny-weight node may hold one request in flight at a time
    (as with nginx's least_conn), never more than its share allows beyond that. A node whose
    share is below half of one of the ring's points is left off the ring.

    ``pick_many(n)`` (``pick_many(keys)`` for "ring") returns int32 indices into ``nodes`` and
    equals a loop of ``pick`` calls.

    Health: after ``max_failures`` consecutive failures (leases that raised, or
    ``report(node, False)``) a node is ejected for ``base_ejection`` seconds times the number of
    times it has been ejected, at most ``max_ejection``; never more than
    ``max_ejection_percent`` of the nodes are ejected at once, though always at least one may
    be. A re-admitted node's weight ramps up over ``slow_start`` seconds (0: at once).
    ``mark_down``/``mark_up`` take a node out and back by hand. When no node is left,
    ``when_all_down="panic"`` (the default) picks among all nodes as if all were healthy, and
    ``"raise"`` raises :class:`ringkit.NoAvailableNodeError`. ``on_event`` is called with a
    :class:`BalancerEvent` on every ejection, re-admission and manual change. ``clock`` (default
    ``time.monotonic``) can be replaced to test timelines without sleeping.

    Thread safe: picks, leases and reports from many threads share one state; changes (``add``,
    ``remove``, ``set_weight``, health) swap in a new immutable configuration, and the smooth
    sequence carries on from the same relative position, without a burst to a changed node.
    """

    def __init__(
        self,
        nodes: Iterable[str] | Mapping[str, float],
        *,
        strategy: str = "smooth",
        seed: int | None = None,
        max_failures: int = 5,
        base_ejection: float = 30.0,
        max_ejection: float = 300.0,
        max_ejection_percent: float = 50.0,
        slow_start: float = 0.0,
        when_all_down: Literal["panic", "raise"] = "panic",
        on_event: Callable[[BalancerEvent], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
        load_factor: float = 1.25,
        vnodes: int = 160,
    ) -> None:
        if not isinstance(strategy, str):
            raise TypeError(f"strategy must be a str, got {type(strategy).__name__}")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
        if isinstance(max_failures, bool) or not isinstance(max_failures, int):
            raise TypeError(f"max_failures must be an int, got {type(max_failures).__name__}")
        if max_failures < 1:
            raise ValueError(f"max_failures must be at least 1, got {max_failures}")
        pct = _check_positive(max_ejection_percent, "max_ejection_percent", allow_zero=True)
        if pct > 100:
            raise ValueError(f"max_ejection_percent must be at most 100, got "
                             f"{max_ejection_percent}")
        if when_all_down not in ("panic", "raise"):
            raise ValueError(f"when_all_down must be 'panic' or 'raise', got {when_all_down!r}")
        if on_event is not None and not callable(on_event):
            raise TypeError("on_event must be callable or None")
        if not callable(clock):
            raise TypeError("clock must be a callable returning seconds")
        lf = _check_positive(load_factor, "load_factor")
        if lf < 1.0:
            raise ValueError(f"load_factor must be >= 1, got {load_factor!r}")
        vnodes = check_vnodes(vnodes)
        self._strategy = strategy
        self._base_ejection = _check_positive(base_ejection, "base_ejection", allow_zero=True)
        self._max_ejection = _check_positive(max_ejection, "max_ejection", allow_zero=True)
        self._max_ejection_percent = pct
        self._slow_start = _check_positive(slow_start, "slow_start", allow_zero=True)
        self._panic = when_all_down == "panic"
        self._on_event = on_event
        self._load_factor = lf
        self._vnodes = vnodes
        self._lock = threading.RLock()
        self._weights = parse_nodes(nodes, "nodes", allow_zero=True, allow_empty=False)
        self._check_ring(self._weights)
        self._health = {name: _Health() for name in self._weights}
        self._ring: Any = None
        self._ring_weights: dict[str, float] | None = None
        config, deadline = self._configure(clock())
        self._init_selector(config, seed, clock, max_failures)
        self._set_deadline(deadline)

    # -- configuration ----------------------------------------------------------------------------

    def _check_ring(self, weights: dict[str, float]) -> None:
        """Refuse weights the "ring" strategy's ring cannot hold, before anything changes."""
        if self._strategy == "ring":
            _ring_weights(weights, self._vnodes)

    def _ring_state(self) -> Any:
        weights = _ring_weights(self._weights, self._vnodes)
        if self._ring is None or self._ring_weights != weights:
            self._ring = HashRing(weights, vnodes=self._vnodes)
            self._ring_weights = weights
        return self._ring._ring_state

    def _configure(self, now: float) -> tuple[Any, float | None]:
        """The configuration for the current nodes, weights and health; the next deadline."""
        names = tuple(self._weights)
        weights = np.array([self._weights[n] for n in names], dtype=np.float64)
        eligible = np.ones(len(names), dtype=bool)
        deadline: float | None = None
        for i, name in enumerate(names):
            health = self._health[name]
            if health.down:
                eligible[i] = False
                # An ejection still ends on time under a mark_down: else it would count
                # towards max_ejection_percent until the node is marked up.
                if health.ejected_until is not None:
                    deadline = _earliest(deadline, health.ejected_until)
            elif health.ejected_until is not None:
                eligible[i] = False
                deadline = _earliest(deadline, health.ejected_until)
            elif health.readmitted_at is not None and self._slow_start > 0:
                elapsed = now - health.readmitted_at
                if elapsed >= self._slow_start:
                    health.readmitted_at = None
                else:
                    step = int(elapsed / self._slow_start * SLOW_START_STEPS)
                    weights[i] *= (step + 1) / (SLOW_START_STEPS + 1)
                    step_at = (health.readmitted_at
                               + (step + 1) * self._slow_start / SLOW_START_STEPS)
                    deadline = _earliest(deadline, step_at)
        ring = self._ring_state() if self._strategy == "ring" else None
        config = _select.make_config(names, weights, eligible, self._strategy, ring,
                                     self._load_factor, self._panic)
        return config, deadline

    def _reconfigure(self, now: float | None = None) -> None:
        # Caller holds self._lock.
        config, deadline = self._configure(self.clock_now() if now is None else now)
        self._install(config)
        self._set_deadline(deadline)

    def clock_now(self) -> float:
        """The balancer's clock (``time.monotonic`` unless another was given)."""
        return float(self.clock())

    def _emit(self, events: list[BalancerEvent]) -> None:
        if self._on_event is None:
            return
        for event in events:
            try:
                self._on_event(event)
            except Exception:  # a broken hook must not break picking
                log.exception("ringkit balancer on_event hook raised on %s", event)

    # -- health -----------------------------------------------------------------------------------

    def _on_failures(self, node: str, count: int) -> None:
        """Called by the selector when `node` reached max_failures consecutive failures."""
        events = []
        with self._lock:
            health = self._health.get(node)
            if health is None or health.down or health.ejected_until is not None:
                return
            ejected = sum(1 for h in self._health.values() if h.ejected_until is not None)
            cap = max(1, math.floor(self._max_ejection_percent / 100.0 * len(self._health)))
            if self._max_ejection_percent == 0 or ejected >= cap:
                return
            now = self.clock_now()
            health.ejections += 1
            duration = min(self._base_ejection * health.ejections, self._max_ejection)
            health.ejected_until = now + duration
            health.readmitted_at = None
            self._reset_failures(node)
            self._reconfigure(now)
            events.append(BalancerEvent("ejected", node, now, health.ejected_until,
                                        health.ejections))
            log.info("ringkit balancer: ejected %s for %.3gs after %d failures",
                     node, duration, count)
        self._emit(events)

    def _on_deadline(self, now: float) -> None:
        """Called by the selector at the first pick after a deadline: re-admit, ramp up."""
        events = []
        with self._lock:
            for name, health in self._health.items():
                if health.ejected_until is not None and health.ejected_until <= now:
                    health.ejected_until = None
                    health.readmitted_at = now
                    # Failures of requests still in flight at the ejection must not count
                    # against the node's fresh start (mark_up resets them too).
                    self._reset_failures(name)
                    events.append(BalancerEvent("readmitted", name, now, None, health.ejections))
                    log.info("ringkit balancer: re-admitted %s", name)
            self._reconfigure(now)
        self._emit(events)

    def mark_down(self, node: str) -> None:
        """Take `node` out by hand until :meth:`mark_up` (not subject to the ejection cap)."""
        with self._lock:
            health = self._known(node)
            if health.down:
                return
            health.down = True
            now = self.clock_now()
            self._reconfigure(now)
        self._emit([BalancerEvent("marked_down", node, now, None, health.ejections)])

    def mark_up(self, node: str) -> None:
        """Bring `node` back: clears a mark_down and any running ejection."""
        with self._lock:
            health = self._known(node)
            if not health.down and health.ejected_until is None:
                return
            health.down = False
            health.ejected_until = None
            now = self.clock_now()
            health.readmitted_at = now
            self._reset_failures(node)
            self._reconfigure(now)
        self._emit([BalancerEvent("marked_up", node, now, None, health.ejections)])

    def _known(self, node: object) -> _Health:
        if not isinstance(node, str):
            raise TypeError(f"node must be a str node name, got {type(node).__name__}")
        health = self._health.get(node)
        if health is None:
            raise UnknownNodeError(node, f"node: unknown node {node!r}")
        return health

    def health(self) -> dict[str, NodeHealth]:
        """Each node's state ("up", "ejected" or "down"), failure and ejection counts."""
        with self._lock:
            config = self._select_config
            failures = self._failure_counts()
            effective = dict(zip(config.nodes, config.weights_array.tolist()))
            report = {}
            for name, h in self._health.items():
                state: Literal["up", "ejected", "down"] = (
                    "down" if h.down else "ejected" if h.ejected_until is not None else "up")
                report[name] = NodeHealth(state, failures.get(name, 0), h.ejections,
                                          h.ejected_until, self._weights[name],
                                          effective.get(name, 0.0))
            return report

    # -- runtime changes ------------------------------------------------------------------------

    def set_weight(self, node: str, weight: float) -> None:
        """Change a node's weight: a finite number >= 0 (0 keeps the node but sends it nothing);
        at least one node keeps a positive weight."""
        w = check_weight(weight, "weight", allow_zero=True)
        with self._lock:
            self._known(node)
            if w == 0 and not any(v for n, v in self._weights.items() if n != node):
                raise ValueError("weight: this would make every weight zero")
            self._check_ring({**self._weights, node: w})
            self._weights[node] = w
            self._reconfigure()

    def add(self, node: str, weight: float = 1.0) -> None:
        """Add a node (it starts with nothing in flight and a fresh health record). `node` is a
        non-empty str that encodes to UTF-8; `weight` a finite number >= 0."""
        check_name(node, "node")
        w = check_weight(weight, "weight", allow_zero=True)
        with self._lock:
            if node in self._weights:
                raise ValueError(f"node: {short(node)} is already in the balancer")
            self._check_ring({**self._weights, node: w})
            self._weights[node] = w
            self._health[node] = _Health()
            self._reconfigure()

    def remove(self, node: str) -> None:
        """Remove a node; leases still open on it finish without being counted."""
        with self._lock:
            self._known(node)
            if len(self._weights) == 1:
                raise ValueError("node: cannot remove the last node")
            rest = [w for n, w in self._weights.items() if n != node]
            if not any(rest):
                raise ValueError("node: removing it would leave only zero weights")
            del self._weights[node]
            del self._health[node]
            self._reconfigure()

    # -- description ------------------------------------------------------------------------------

    @property
    def nodes(self) -> tuple[str, ...]:
        """Node names in the order given; ``pick_many`` indices point into this tuple."""
        return tuple(self._select_config.nodes)

    @property
    def weights(self) -> dict[str, float]:
        """The configured weight of each node."""
        with self._lock:
            return dict(self._weights)

    @property
    def strategy(self) -> str:
        """The strategy picks follow: "smooth", "random", "least_request" or "ring"."""
        return self._strategy

    def __len__(self) -> int:
        """The number of nodes (whatever their weight or health)."""
        return len(self._select_config.nodes)

    def __contains__(self, node: object) -> bool:
        """Whether `node` is one of the nodes."""
        return node in self._select_config.positions

    def __repr__(self) -> str:
        return f"Balancer({self.weights!r}, strategy={self._strategy!r})"


def _earliest(current: float | None, candidate: float) -> float:
    return candidate if current is None else min(current, candidate)
