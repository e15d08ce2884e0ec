"""A hypothesis state machine: HashRing under adds, removes and reweights, against a slow model.

The model is DESIGN.md's definition in plain Python: every node's points from ringkit.hash64 of
``name.encode() + i.to_bytes(4, "little")``, a sorted list of (point, name), and ``bisect``. After
every step each lookup (get, ring[key], get_many, locate, get_hash, preference_list,
preference_many) is checked against it, for a fixed set of keys and for uint64 hashes drawn by
hypothesis next to the ring's own points (exact hits, neighbours, both ends of the ring).
"""

from __future__ import annotations

import bisect
import pickle

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from ringkit import EmptyRingError, HashRing, UnknownNodeError, hash64

NAMES = ["n0", "n1", "n2", "n3", "n4", "n5", "a", "aa", "b", "ключ", "🙂", "node-with-a-long-name"]
KEYS = [f"k{i}" for i in range(40)] + ["", "ключ", b"\x00\xff", 0, -1, 2**64 - 1]
KEY_HASH_INPUTS = KEYS

names = st.sampled_from(NAMES)
weights = st.one_of(
    st.sampled_from([0.01, 0.1, 0.5, 1.0, 1.0, 1.5, 2.5, 3.0]),
    st.floats(min_value=0.01, max_value=4.0, allow_nan=False, allow_infinity=False),
)
uint64s = st.integers(min_value=0, max_value=2**64 - 1)


class RingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.weights: dict[str, float] = {}
        self.hashes: list[int] = [0, 1, 2**63, 2**64 - 1]
        self._points_cache: dict[tuple[str, int], list[int]] = {}

    # -- the model ------------------------------------------------------------------------------

    def node_points(self, name: str, weight: float) -> list[int]:
        count = max(1, round(self.vnodes * weight))
        cached = self._points_cache.get((name, count))
        if cached is None:
            prefix = name.encode("utf-8")
            cached = [hash64(prefix + i.to_bytes(4, "little"), self.algorithm, self.seed)
                      for i in range(count)]
            self._points_cache[(name, count)] = cached
        return cached

    def model(self) -> list[tuple[int, str]]:
        return sorted((p, name) for name, w in self.weights.items()
                      for p in self.node_points(name, w))

    @staticmethod
    def position(pairs, h):
        i = bisect.bisect_left(pairs, (h,))
        return i if i < len(pairs) else 0

    def preference(self, pairs, h, n):
        start = self.position(pairs, h)
        found: list[str] = []
        for step in range(len(pairs)):
            name = pairs[(start + step) % len(pairs)][1]
            if name not in found:
                found.append(name)
                if len(found) == n:
                    break
        return found

    # -- setup and rules ------------------------------------------------------------------------

    @initialize(
        vnodes=st.integers(min_value=1, max_value=20),
        algorithm=st.sampled_from(["xxh64", "murmur3", "fnv1a64", "md5"]),
        seed=st.one_of(st.just(0), st.integers(min_value=0, max_value=2**32 - 1)),
        initial=st.dictionaries(names, weights, max_size=5),
    )
    def setup(self, vnodes, algorithm, seed, initial):
        self.vnodes = vnodes
        self.algorithm = algorithm
        self.seed = seed if algorithm in ("xxh64", "murmur3") else 0  # the others take no seed
        self.weights = dict(initial)
        self.ring = HashRing(self.weights, vnodes=vnodes, algorithm=algorithm, seed=self.seed)

    @rule(name=names, weight=weights)
    def add(self, name, weight):
        if name in self.weights:
            before = self.ring.fingerprint()
            try:
                self.ring.add(name, weight)
            except ValueError:
                assert self.ring.fingerprint() == before
                return
            raise AssertionError(f"adding existing node {name!r} did not raise")
        self.ring.add(name, weight)
        self.weights[name] = weight

    @rule(name=names)
    def remove(self, name):
        if name not in self.weights:
            try:
                self.ring.remove(name)
            except UnknownNodeError:
                return
            raise AssertionError(f"removing unknown node {name!r} did not raise")
        self.ring.remove(name)
        del self.weights[name]

    @rule(name=names, weight=weights)
    def reweight(self, name, weight):
        if name not in self.weights:
            try:
                self.ring.set_weight(name, weight)
            except UnknownNodeError:
                return
            raise AssertionError(f"reweighting unknown node {name!r} did not raise")
        self.ring.set_weight(name, weight)
        self.weights[name] = weight

    @rule(how=st.sampled_from(["scratch", "from_dict", "pickle", "snapshot"]))
    def rebuild(self, how):
        """Switch between the incrementally changed ring and one built from scratch."""
        if how == "scratch":
            self.ring = HashRing(self.weights, vnodes=self.vnodes, algorithm=self.algorithm,
                                 seed=self.seed)
        elif how == "from_dict":
            self.ring = HashRing.from_dict(self.ring.to_dict())
        elif how == "pickle":
            self.ring = pickle.loads(pickle.dumps(self.ring))
        else:
            # A snapshot taken now must keep answering for the ring as it is now.
            self.frozen = (self.ring.snapshot(), self.model())

    @rule(drawn=st.lists(uint64s, max_size=12), offsets=st.lists(st.integers(-2, 2), max_size=6))
    def new_hashes(self, drawn, offsets):
        near = []
        points = self.ring.points.tolist()
        for k, off in enumerate(offsets):
            if points:
                p = points[(k * 7919) % len(points)] + off
                near.append(min(max(p, 0), 2**64 - 1))
        self.hashes = [0, 2**64 - 1, *drawn, *near]

    # -- checks ---------------------------------------------------------------------------------

    @invariant()
    def matches_model(self):
        if not hasattr(self, "ring"):
            return
        ring = self.ring
        pairs = self.model()
        assert ring.nodes == tuple(sorted(self.weights))
        assert ring.weights == self.weights
        assert len(ring) == len(self.weights)
        assert ring.points.tolist() == [p for p, _ in pairs]
        assert [ring.nodes[o] for o in ring.owners.tolist()] == [n for _, n in pairs]
        if not pairs:
            for call in (lambda: ring.get("k"), lambda: ring.get_many(["k"]),
                         lambda: ring.preference_list("k", 1)):
                try:
                    call()
                except EmptyRingError:
                    continue
                raise AssertionError("lookup on an empty ring did not raise EmptyRingError")
            return
        key_hashes = [hash64(k, self.algorithm, self.seed) for k in KEYS]
        expected = [pairs[self.position(pairs, h)][1] for h in key_hashes]
        assert [ring.get(k) for k in KEYS] == expected
        assert [ring[k] for k in KEYS[:5]] == expected[:5]
        assert [ring.nodes[i] for i in ring.get_many(KEYS).tolist()] == expected

        hashes = np.array(self.hashes, dtype=np.uint64)
        located = [pairs[self.position(pairs, h)][1] for h in self.hashes]
        assert [ring.nodes[i] for i in ring.locate(hashes).tolist()] == located
        assert [ring.get_hash(h) for h in self.hashes] == located

        total = len(self.weights)
        for n in sorted({1, min(2, total), total}):
            prefs = [self.preference(pairs, h, n) for h in key_hashes]
            assert [ring.preference_list(k, n) for k in KEYS] == prefs
            many = ring.preference_many(KEYS, n)
            assert [[ring.nodes[i] for i in row] for row in many.tolist()] == prefs

    @invariant()
    def frozen_snapshot_unchanged(self):
        frozen = getattr(self, "frozen", None)
        if frozen is None:
            return
        snap, pairs = frozen
        assert snap.points.tolist() == [p for p, _ in pairs]
        if pairs:
            hashes = [hash64(k, self.algorithm, self.seed) for k in KEYS[:10]]
            assert [snap.nodes[i] for i in snap.get_many(KEYS[:10]).tolist()] == [
                pairs[self.position(pairs, h)][1] for h in hashes]


RingMachine.TestCase.settings = settings(settings(), stateful_step_count=20)
TestRingMachine = RingMachine.TestCase
