"""Balancer under threads: shared smooth state keeps exact proportions, leases from many threads
balance out, picks during runtime changes never raise and name nodes that exist, and a batch
that runs without the GIL survives changes made meanwhile.

No sleeps: threads start together at a barrier and run a fixed amount of work.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ringkit import Balancer

THREADS = 8
STRATEGIES = ("smooth", "random", "least_request", "ring")


@pytest.fixture(autouse=True)
def eager_switching() -> Iterator[None]:
    """Switch threads often, so that picks interleave finely."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def run_together(work: Callable[[int], object], threads: int = THREADS) -> list[Any]:
    """Run work(0..threads-1) in threads started at one barrier; re-raise the first error."""
    barrier = threading.Barrier(threads)
    results: list[Any] = [None] * threads
    errors: list[BaseException] = []

    def body(index: int) -> None:
        try:
            barrier.wait()
            results[index] = work(index)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    pool = [threading.Thread(target=body, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if errors:
        raise errors[0]
    return results


def test_smooth_threads_keep_exact_proportions() -> None:
    weights = {"a": 5, "b": 3, "c": 1, "d": 7}
    period = sum(weights.values())
    bal = Balancer(weights)
    rounds = 400

    def work(index: int) -> Counter[str]:
        counts: Counter[str] = Counter()
        for r in range(rounds):
            # Whole periods per thread, in single picks and batches of odd sizes.
            for _ in range(period - 5):
                counts[bal.pick()] += 1
            counts.update(bal.nodes[i] for i in bal.pick_many(5))
            counts.update(bal.nodes[i] for i in bal.pick_many(period * (r % 3)))
        return counts

    total: Counter[str] = Counter()
    for counts in run_together(work):
        total.update(counts)
    cycles = sum(total.values()) // period
    assert sum(total.values()) == cycles * period
    assert total == {name: weight * cycles for name, weight in weights.items()}
    # The shared position went round whole periods: the next picks start a period afresh.
    fresh = Balancer(weights)
    assert [bal.pick() for _ in range(period)] == [fresh.pick() for _ in range(period)]


def test_smooth_threads_keep_exact_proportions_without_a_table() -> None:
    # 64 nodes whose total is a multiple of 8, too big to lay out: picks run the algorithm
    # on shared current weights.
    weights = {f"n{i}": 1100 + i for i in range(64)}
    total_weight = sum(weights.values())
    bal = Balancer(weights)
    assert bal._select_config.sequence_array is None
    share = total_weight // THREADS

    def work(index: int) -> np.ndarray:
        counts = np.zeros(64, dtype=np.int64)
        done = 0
        while done + 997 <= share:
            counts += np.bincount(bal.pick_many(997), minlength=64)
            done += 997
        for _ in range(share - done):
            counts[bal.nodes.index(bal.pick())] += 1
        return counts

    total = sum(run_together(work))
    assert np.array_equal(total, [weights[name] for name in bal.nodes])


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_leases_from_many_threads_leave_nothing_in_flight(strategy: str) -> None:
    bal = Balancer({"a": 3, "b": 1, "c": 2, "d": 1}, strategy=strategy, seed=9,
                   max_failures=10**9)
    observed_negative = []

    def work(index: int) -> int:
        failures = 0
        for i in range(1500):
            key = f"k{(index * 7 + i) % 50}"
            try:
                with bal.lease(key=key) as node:
                    with bal.lease(key=node):
                        if min(bal.in_flight.values()) < 0:
                            observed_negative.append(node)
                    if i % 10 == 0:
                        raise LookupError(node)
            except LookupError:
                failures += 1
        return failures

    failures = run_together(work)
    assert failures == [150] * THREADS
    assert not observed_negative
    assert bal.in_flight == {"a": 0, "b": 0, "c": 0, "d": 0}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_picks_during_runtime_changes(strategy: str) -> None:
    core = {"a": 3, "b": 1, "c": 2}
    extra = [f"x{i}" for i in range(4)]
    every = set(core) | set(extra)
    bal = Balancer(core, strategy=strategy, seed=1, max_failures=3)
    keys = [f"k{i}" for i in range(64)]
    done = threading.Event()

    def change() -> int:
        try:
            for step in range(300):
                name = extra[step % len(extra)]
                if name in bal:
                    bal.remove(name)
                else:
                    bal.add(name, 1 + step % 5)
                bal.set_weight("abc"[step % 3], 1 + step % 7)
                if step % 4 == 0:
                    bal.mark_down("b")
                elif step % 4 == 2:
                    bal.mark_up("b")
            return 300
        finally:
            done.set()

    def pick(index: int) -> int:
        count = 0
        while not done.is_set() or count < 50:
            key = keys[count % len(keys)]
            assert bal.pick(key=key) in every
            assert bal.pick(key=key, exclude=["a"]) in every
            batch = bal.pick_many(keys[:16] if strategy == "ring" else 16)
            assert batch.shape == (16,) and 0 <= batch.min() and batch.max() < len(every)
            with bal.lease(key=key) as node:
                assert node in every
            if count % 5 == 0:
                bal.report("c", count % 2 == 0)
            count += 1
        return count

    def work(index: int) -> int:
        return change() if index == 0 else pick(index)

    results = run_together(work)
    assert results[0] == 300
    assert sum(bal.in_flight.values()) == 0
    assert set(bal.nodes) <= every


def test_batches_without_the_gil_survive_changes() -> None:
    # pick_many releases the GIL; a change in another thread meanwhile swaps (and frees) the
    # in-flight counts it reads. With a low mmap threshold glibc unmaps freed arrays at once, so
    # reading a freed one crashes the process instead of passing unnoticed. Run in a child.
    script = textwrap.dedent("""
        import threading
        import ringkit

        bal = ringkit.Balancer({f"n{i}": 1 for i in range(40000)}, strategy="least_request",
                               seed=1)
        done = threading.Event()

        def change():
            i = 0
            while not done.is_set():
                bal.set_weight("n0", 1 + i % 3)
                i += 1

        thread = threading.Thread(target=change)
        thread.start()
        try:
            for _ in range(30):
                assert bal.pick_many(500_000).max() < 40000
        finally:
            done.set()
            thread.join()
        print("survived")
    """)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    if env.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.pathsep.join(
            os.path.abspath(p) for p in env["PYTHONPATH"].split(os.pathsep) if p)
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=Path(__file__).parent,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "survived"
