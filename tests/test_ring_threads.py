"""HashRing shared between threads: 4 readers look up while a writer adds, removes and reweights.

Every answer must be a node that was in the ring at some moment of the reader's call, nothing may
raise, and a snapshot's batch indices always index that snapshot's own ``nodes``. The writer
records each node set *before* applying it, so a reader that saw ``v0`` entries in the history
before its call and ``v1`` after it knows the ring was at one of ``history[v0 - 2 : v1]``.
No test here measures time; loops end on counts.
"""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest

from ringkit import HashRing

POOL = [f"node-{i:02d}" for i in range(12)]
MIN_NODES = 3
KEYS = [f"key:{i}" for i in range(2000)]
KEY_ARRAY = np.array(KEYS, dtype="U")
HASHES = np.random.default_rng(7).integers(0, 2**64, size=20_000, dtype=np.uint64, endpoint=False)


class History:
    """The node sets the ring has had, in order (appended before each change is applied)."""

    def __init__(self, nodes) -> None:
        self.sets: list[frozenset[str]] = [frozenset(nodes)]
        self.tuples: set[tuple[str, ...]] = {tuple(sorted(nodes))}

    def record(self, nodes) -> None:
        self.tuples.add(tuple(sorted(nodes)))
        self.sets.append(frozenset(nodes))

    def mark(self) -> int:
        return len(self.sets)

    def window(self, v0: int, v1: int) -> frozenset[str]:
        return frozenset().union(*self.sets[max(0, v0 - 2):v1])

    def max_len(self, v0: int, v1: int) -> int:
        return max(len(s) for s in self.sets[max(0, v0 - 2):v1])


def _writer(ring, history, weights, stop, min_changes, readers_done, errors, seed):
    rnd = random.Random(seed)
    changes = 0
    try:
        while changes < min_changes or not all(e.is_set() for e in readers_done):
            absent = [n for n in POOL if n not in weights]
            op = rnd.random()
            if op < 0.4 and absent:
                name, w = rnd.choice(absent), rnd.choice([0.5, 1.0, 2.0])
                history.record([*weights, name])
                weights[name] = w
                ring.add(name, w)
            elif op < 0.75 and len(weights) > MIN_NODES:
                name = rnd.choice(sorted(weights))
                del weights[name]
                history.record(weights)
                ring.remove(name)
            else:
                name, w = rnd.choice(sorted(weights)), rnd.choice([0.25, 1.0, 3.0])
                history.record(weights)
                weights[name] = w
                ring.set_weight(name, w)
            changes += 1
    except BaseException as exc:  # pragma: no cover - reported below
        errors.append(("writer", exc))
    finally:
        stop.set()


def _reader(ring, history, stop, done, min_rounds, errors, seed):
    rnd = random.Random(seed)
    rounds = 0
    try:
        while rounds < min_rounds or not stop.is_set():
            key = KEYS[rnd.randrange(len(KEYS))]
            v0 = history.mark()
            answer = ring.get(key)
            prefs = ring.preference_list(key, MIN_NODES)
            v1 = history.mark()
            allowed = history.window(v0, v1)
            assert answer in allowed, (answer, allowed)
            assert len(set(prefs)) == MIN_NODES and set(prefs) <= allowed

            v0 = history.mark()
            batch = ring.get_many(KEY_ARRAY) if rounds % 2 else ring.locate(HASHES)
            pm = ring.preference_many(KEYS[:200], 2)
            v1 = history.mark()
            limit = history.max_len(v0, v1)
            assert batch.dtype == np.int32 and 0 <= batch.min() and batch.max() < limit
            assert 0 <= pm.min() and pm.max() < limit
            assert (pm[:, 0] != pm[:, 1]).all()

            snap = ring.snapshot()
            nodes = snap.nodes
            assert nodes in history.tuples
            indices = snap.get_many(KEYS[:500])
            assert indices.max() < len(nodes)
            for i in range(0, 500, 50):
                assert nodes[indices[i]] == snap.get(KEYS[i])
            located = snap.locate(HASHES[:1000])
            assert [nodes[j] for j in located[:50].tolist()] == [
                snap.get_hash(h) for h in HASHES[:50].tolist()]
            rounds += 1
            if rounds == min_rounds:
                done.set()
    except BaseException as exc:
        errors.append(("reader", exc))
        done.set()


@pytest.mark.parametrize("kind", ["plain", "ketama"])
def test_readers_see_whole_rings_while_a_writer_changes_it(kind):
    weights = {name: 1.0 for name in POOL[:6]}
    ring = HashRing(weights, vnodes=40) if kind == "plain" else HashRing.ketama(weights)
    history = History(weights)
    stop = threading.Event()
    errors: list = []
    done = [threading.Event() for _ in range(4)]
    readers = [threading.Thread(target=_reader, args=(ring, history, stop, done[i], 60, errors, i))
               for i in range(4)]
    writer = threading.Thread(target=_writer,
                              args=(ring, history, weights, stop, 400, done, errors, 99))
    for t in readers:
        t.start()
    writer.start()
    writer.join()
    for t in readers:
        t.join()
    assert not errors, errors
    # The ring ends exactly where the writer's own bookkeeping says it should.
    rebuilt = HashRing(weights, vnodes=40) if kind == "plain" else HashRing.ketama(weights)
    assert ring == rebuilt and ring.fingerprint() == rebuilt.fingerprint()
    assert len(history.sets) > 400


def test_concurrent_writers_do_not_lose_changes():
    ring = HashRing([], vnodes=20)
    barrier = threading.Barrier(4)
    errors: list = []

    def add_many(offset):
        try:
            barrier.wait()
            for i in range(offset, 200, 4):
                ring.add(f"w{i:03d}", 1.0 + (i % 3))
            for i in range(offset, 200, 8):
                ring.remove(f"w{i:03d}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add_many, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    # Thread k added each i = k (mod 4) and removed each i = k (mod 8): i mod 8 >= 4 stays.
    expected = {f"w{i:03d}": 1.0 + (i % 3) for i in range(200) if i % 8 >= 4}
    assert ring == HashRing(expected, vnodes=20)


def test_duplicate_add_race_has_one_winner():
    for round_ in range(20):
        ring = HashRing(["base"], vnodes=5)
        barrier = threading.Barrier(4)
        outcomes: list = []

        def racer(ring, barrier, outcomes):
            barrier.wait()
            try:
                ring.add("contested", 2.0)
                outcomes.append("added")
            except ValueError:
                outcomes.append("refused")

        threads = [threading.Thread(target=racer, args=(ring, barrier, outcomes))
                   for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["added", "refused", "refused", "refused"], round_
        assert ring == HashRing({"base": 1.0, "contested": 2.0}, vnodes=5)
