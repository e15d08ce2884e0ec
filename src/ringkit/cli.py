"""The ``ringkit`` command (also ``python -m ringkit``).

Exit codes: 0 on success, 1 on a runtime error, 2 on a usage error. Errors print as one line,
never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import ringkit


def _demo(args: argparse.Namespace) -> int:
    """A short tour of ringkit on its embedded defaults."""
    out = sys.stdout
    for step in _DEMO_STEPS:
        step(out.write)
    return 0


def _demo_hashing(write: Callable[[str], object]) -> None:
    import numpy as np

    write("== hashing ==\n")
    for algorithm in ringkit.ALGORITHMS:
        write(f"hash64('user:42', {algorithm!r:>10}) = {ringkit.hash64('user:42', algorithm):#018x}\n")
    keys = [f"user:{i}" for i in range(100_000)]
    hashes = ringkit.hash64_many(keys)
    write(f"hash64_many over {len(keys):,} keys -> {hashes.dtype}[{hashes.shape[0]:,}], "
          f"first {hashes[0]:#018x}\n")
    ids = np.arange(5, dtype=np.int64)
    write(f"hash64_many(numpy int64 {ids.tolist()}) = "
          f"{[f'{h:#x}' for h in ringkit.hash64_many(ids)][:2]} ...\n\n")


def _demo_ring(write: Callable[[str], object]) -> None:
    import numpy as np

    write("== consistent-hash ring ==\n")
    ring = ringkit.HashRing({"cache-a": 1.0, "cache-b": 1.0, "cache-c": 2.0})
    write(f"{ring!r}\n")
    write(f"ring.get('user:42') = {ring.get('user:42')!r}\n")
    write(f"ring.preference_list('user:42', 2) = {ring.preference_list('user:42', 2)}\n")
    keys = [f"user:{i}" for i in range(100_000)]
    stats = ring.load(keys)
    spread = ", ".join(f"{name}: {count:,}" for name, count in stats.counts.items())
    write(f"100,000 keys by get_many: {spread} (worst node at {stats.max_over_expected:.3f}x its weighted share)\n")
    bigger = ringkit.HashRing({**ring.weights, "cache-d": 1.0})
    moved = ring.movement(bigger, keys)
    write(f"adding cache-d moves {moved.fraction:.1%} of the keys, all onto cache-d: "
          f"{sorted({dst for _, dst in moved.flows})}\n")
    bounded = ring.assign_bounded(keys[:1000], load_factor=1.1)
    counts = {ring.nodes[i]: int(c) for i, c in enumerate(np.bincount(bounded))}
    write(f"assign_bounded(1,000 keys, load_factor=1.1): {counts}\n")
    memcached = ringkit.HashRing.ketama(["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"])
    write(f"ketama (libketama-compatible) routes 'foo' to {memcached.get('foo')!r}\n\n")


def _demo_balancer(write: Callable[[str], object]) -> None:
    write("== load balancing ==\n")
    smooth = ringkit.Balancer({"a": 5, "b": 1, "c": 1})
    write(f"smooth weighted round robin {{a: 5, b: 1, c: 1}}: "
          f"{''.join(smooth.pick() for _ in range(14))}\n")
    now = [0.0]
    events: list[ringkit.BalancerEvent] = []
    bal = ringkit.Balancer(["api-1", "api-2", "api-3"], strategy="least_request", seed=7,
                           max_failures=3, base_ejection=30.0, clock=lambda: now[0],
                           on_event=events.append)
    with bal.lease() as node:
        write(f"least_request lease -> {node}, in flight: {bal.in_flight}\n")
    for _ in range(3):  # three failed requests in a row (a lease that raised counts the same)
        bal.report("api-2", False)
    picks = [bal.pick() for _ in range(6)]
    write(f"api-2 failed 3 times in a row -> {bal.health()['api-2'].state}; picks now: "
          f"{picks}\n")
    now[0] = 31.0
    picks = [bal.pick() for _ in range(6)]
    write(f"31 s later it is re-admitted ({bal.health()['api-2'].state}); picks: {picks}\n")
    write("events: " + "; ".join(f"{e.kind} {e.node} at t={e.at:g}" for e in events) + "\n\n")


def _demo_lock(write: Callable[[str], object]) -> None:
    from ringkit.lock import Lock, MemoryBackend

    write("== locks with fencing tokens ==\n")
    backend = MemoryBackend()
    first = Lock("invoice-42", backend, ttl=5.0)
    with first:
        old_token = first.token
        write(f"held 'invoice-42' with fencing token {old_token}, "
              f"{first.validity():.2f} s of validity left\n")
        second = Lock("invoice-42", backend, ttl=5.0)
        write(f"a second holder's non-blocking acquire: {second.acquire(blocking=False)}\n")
    second.acquire()
    write(f"after release the second holder gets token {second.token} "
          f"(> {old_token}: a fenced store refuses the old one)\n")
    second.release()
    write("on Redis: Lock(name, RedisBackend(['redis://host-a', 'redis://host-b', "
          "'redis://host-c'])) holds it on a majority\n\n")


def _demo_replication(write: Callable[[str], object]) -> None:
    from ringkit.replication import MemoryNode, ReplicatedStore

    write("== replication ==\n")
    nodes = {f"node-{i}": MemoryNode(f"node-{i}") for i in range(5)}
    with ReplicatedStore(nodes, replicas=3, write_quorum=2, read_quorum=2) as store:
        version = store.put("user:42", b"alice")
        replicas = store.preference_list("user:42")
        write(f"put user:42 -> version {version.counter}, on {replicas} (primary first)\n")
        nodes[replicas[0]].kill()
        write(f"{replicas[0]} dies; get still answers {store.get('user:42')!r}; "
              f"put -> version {store.put('user:42', b'alice-2').counter}\n")
        nodes[replicas[0]].revive(empty=True)
        store.probe()
        write(f"{replicas[0]} comes back empty: {store.status()[replicas[0]]} "
              f"(counts for no quorum)\n")
        report = store.repair()
        held = nodes[replicas[0]].read(["user:42"])[1][0]
        write(f"repair(): {report.replicas_repaired} replicas repaired, refilled "
              f"{report.nodes_refilled}; {replicas[0]} is {store.status()[replicas[0]]} and "
              f"holds {None if held is None else held.value!r}\n\n")


_DEMO_STEPS: list[Callable[[Callable[[str], object]], None]] = [
    _demo_hashing,
    _demo_ring,
    _demo_balancer,
    _demo_lock,
    _demo_replication,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ringkit",
        description="Place work and data across many machines: hashing, rings, balancing, "
        "locks and replication.",
    )
    parser.add_argument("--version", action="version", version=f"ringkit {ringkit.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    demo = commands.add_parser("demo", help="a tour of ringkit on its embedded defaults",
                               description="A tour of ringkit on its embedded defaults.")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except (ringkit.RingkitError, OSError, ValueError, TypeError) as exc:
        print(f"ringkit {args.command}: error: {exc}", file=sys.stderr)
        return 1
