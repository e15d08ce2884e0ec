"""The ``ringkit`` command (also ``python -m ringkit``).

Exit codes: 0 on success, 1 on a runtime error, 2 on a usage error. Errors print as one line,
never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

import ringkit
from ringkit.validation import parse_node_list


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
        value = ringkit.hash64("user:42", algorithm)
        write(f"hash64('user:42', {algorithm!r:>10}) = {value:#018x}\n")
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
    write(f"100,000 keys by get_many: {spread} (worst node at "
          f"{stats.max_over_expected:.3f}x its weighted share)\n")
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


# -- inspect and route ----------------------------------------------------------------------------


class UsageError(Exception):
    """Bad arguments found after parsing (exit code 2)."""


def _parse_nodes(text: str, argname: str = "--nodes") -> dict[str, float]:
    """'a,b,10.0.0.2:11212=2.5' -> {'a': 1.0, 'b': 1.0, '10.0.0.2:11212': 2.5}."""
    try:
        return parse_node_list(text, argname)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None


def _make_ring(args: argparse.Namespace, nodes: dict[str, float]) -> ringkit.HashRing:
    try:
        if args.ketama:
            return ringkit.HashRing.ketama(nodes)
        return ringkit.HashRing(nodes, vnodes=args.vnodes)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--nodes/--vnodes: {exc}") from None


class _Source:
    """Where the placement comes from (--nodes, --twemproxy or --libmemcached), and how it is
    rebuilt for --add / --remove."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        given = [flag for flag, value in (("--nodes", args.nodes),
                                          ("--twemproxy", args.twemproxy),
                                          ("--libmemcached", args.libmemcached)) if value]
        if len(given) != 1:
            raise UsageError("give exactly one of --nodes, --twemproxy FILE and "
                             "--libmemcached SERVERS" + (f" (got {', '.join(given)})"
                                                         if given else ""))
        self.kind = given[0]
        if args.pool is not None and self.kind != "--twemproxy":
            raise UsageError("--pool goes with --twemproxy")
        if (args.hash is not None or args.unweighted) and self.kind != "--libmemcached":
            raise UsageError("--hash and --unweighted go with --libmemcached")
        if self.kind != "--nodes" and (args.ketama or args.vnodes != 160):
            raise UsageError(f"--ketama and --vnodes go with --nodes, not {self.kind}")
        self.pool: dict[str, Any] = {}
        self.servers: dict[str, float] = {}
        if self.kind == "--twemproxy":
            from ringkit.compat._twemproxy import load_pool
            try:
                _, pool = load_pool(args.twemproxy, args.pool)
            except (TypeError, ValueError) as exc:
                raise UsageError(f"--twemproxy: {exc}") from None
            self.pool = dict(pool)
        elif self.kind == "--libmemcached":
            self.servers = _parse_nodes(args.libmemcached, "--libmemcached")
        else:
            self.servers = _parse_nodes(args.nodes)

    def build(self, servers: Any = None) -> Any:
        """The placement, over `servers` (this source's form) if given."""
        from ringkit import compat
        try:
            if self.kind == "--twemproxy":
                pool = dict(self.pool)
                if servers is not None:
                    pool["servers"] = servers
                return compat.twemproxy(pool)
            chosen = self.servers if servers is None else servers
            if self.kind == "--libmemcached":
                weights = {}
                for name, weight in chosen.items():
                    if weight != int(weight):
                        raise ValueError(f"weight of {name!r} must be an integer, got {weight}")
                    weights[name] = int(weight)
                return compat.libmemcached(weights, weighted=not self.args.unweighted,
                                           hash=self.args.hash or "default")
        except (TypeError, ValueError, OSError) as exc:
            raise UsageError(f"{self.kind}: {exc}") from None
        return _make_ring(self.args, chosen)

    def changed(self, add: list[str], remove: list[str], names: Sequence[str]) -> Any:
        """The placement after --add and --remove (checked; UsageError naming the flag)."""
        if self.kind == "--twemproxy":
            from ringkit.compat._twemproxy import parse_server
            specs = list(self.pool.get("servers") or [])
            for name in remove:
                kept = [s for s in specs
                        if not isinstance(s, str) or parse_server(s, "servers").name != name]
                if len(kept) == len(specs):
                    raise UsageError(f"--remove: {name!r} is not one of the servers "
                                     f"({', '.join(names)})")
                specs = kept
            for spec in add:
                try:
                    new = parse_server(spec, "--add")
                except (TypeError, ValueError) as exc:
                    raise UsageError(str(exc)) from None
                if new.name in names:
                    raise UsageError(f"--add: {new.name!r} is already one of the servers")
                specs.append(spec)
            if not specs:
                raise UsageError("--remove: that would leave no server")
            return self.build(specs)
        changed = dict(self.servers)
        for name in remove:
            if name not in changed:
                raise UsageError(f"--remove: {name!r} is not one of the nodes")
            del changed[name]
        for item in add:
            for name, weight in _parse_nodes(item, "--add").items():
                if name in changed:
                    raise UsageError(f"--add: {name!r} is already one of the nodes")
                changed[name] = weight
        if not changed:
            raise UsageError("--remove: that would leave no node")
        return self.build(changed)


def _decoded(stream: Any, source: str) -> Iterator[str]:
    """The lines of a binary stream as text; a line that is not UTF-8 is an error naming its
    line number (not a byte offset in the whole input)."""
    for number, raw in enumerate(stream, 1):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{source}: line {number} is not UTF-8 ({exc.reason} at byte "
                             f"{exc.start + 1} of the line)") from None


def _source_name(path: str) -> str:
    return "standard input" if path == "-" else path


def _open_binary(path: str) -> Any:
    return sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115


def _read_lines(path: str) -> list[str]:
    stream = _open_binary(path)
    try:
        keys = [line.rstrip("\r\n") for line in _decoded(stream, _source_name(path))]
    finally:
        if path != "-":
            stream.close()
    keys = [k for k in keys if k]
    if not keys:
        raise ValueError(f"no keys in {_source_name(path)}")
    return keys


def _inspect(args: argparse.Namespace) -> int:
    import numpy as np

    source = _Source(args)
    placement = source.build()
    # Every argument is checked before anything is printed.
    after = None
    if args.add or args.remove:
        after = source.changed(args.add or [], args.remove or [], placement.nodes)
    if args.plot:
        _check_plot(args.plot)
    if args.keys_file is not None:
        keys = _read_lines(args.keys_file)
    else:
        if args.keys < 1:
            raise UsageError(f"--keys must be at least 1, got {args.keys}")
        keys = [f"key:{i}" for i in range(args.keys)]
    out = sys.stdout
    names = list(placement.nodes)
    weights = dict(getattr(placement, "weights", None) or {})
    shares = _shares_of(placement)
    counts = np.bincount(placement.get_many(keys), minlength=len(names))
    total = int(counts.sum())
    total_weight = sum(weights.values()) if weights else float(len(names))
    expected = [total * (weights.get(n, 1.0) if weights else 1.0) / total_weight for n in names]
    width = max(len(n) for n in names)
    out.write(f"{placement!r}\n{len(keys):,} keys\n\n")
    out.write(f"{'node':<{width}}  {'weight':>7}  {'ring share':>10}  {'keys':>10}  "
              f"{'key share':>9}  {'vs fair':>7}\n")
    for i, name in enumerate(names):
        count = int(counts[i])
        share = f"{shares[name]:>10.2%}" if shares else f"{'-':>10}"
        weight = f"{weights[name]:>7g}" if weights else f"{'-':>7}"
        out.write(f"{name:<{width}}  {weight}  {share}  {count:>10,}  {count / total:>9.2%}  "
                  f"{(count / expected[i] if expected[i] else 0.0):>6.3f}x\n")
    ratios = [c / e for c, e in zip(counts.tolist(), expected) if e > 0]
    out.write(f"\nmax/mean load: {counts.max() / (total / len(names)):.3f}  (worst node vs its "
              f"weighted share: {max(ratios) if ratios else 0.0:.3f})\n")
    if after is not None:
        moved, flows = _movement(placement, after, keys)
        out.write(f"\nafter the change: {moved:,} of {len(keys):,} keys move "
                  f"({moved / len(keys):.2%})\n")
        for (src, dst), count in sorted(flows.items(), key=lambda kv: -kv[1]):
            out.write(f"  {src} -> {dst}: {count:,}\n")
    if args.plot:
        _plot(args.plot, names, shares, counts, expected, np)
        out.write(f"\nplot written to {args.plot}\n")
    return 0


def _shares_of(placement: Any) -> dict[str, float]:
    """Each node's share of the hash space, for placements that have points (rings)."""
    from ringkit._ring import RingBase
    from ringkit.ring import _shares

    if isinstance(placement, RingBase):
        return _shares(placement._ring_state)
    return {}


def _movement(before: Any, after: Any, keys: list[str]) -> tuple[int, dict[tuple[str, str], int]]:
    """How many keys route to another node (by name) after the change, and the flows."""
    import numpy as np

    a = np.array(before.nodes, dtype=object)[before.get_many(keys)]
    b = np.array(after.nodes, dtype=object)[after.get_many(keys)]
    moved = a != b
    flows: dict[tuple[str, str], int] = {}
    for src, dst in zip(a[moved].tolist(), b[moved].tolist()):
        flows[(src, dst)] = flows.get((src, dst), 0) + 1
    return int(moved.sum()), flows


def _check_plot(path: str) -> None:
    """--plot: matplotlib is there and the file can be written (before any output)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'ringkit[plot]'") from None
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise UsageError(f"--plot: cannot write {path!r} (no such folder, or not writable)")


def _plot(path: str, names: list[str], shares: dict[str, float], counts: Any,
          expected: list[float], np: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    total = int(counts.sum())
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6, len(names) * 0.5), 4))
    if shares:
        ax.bar(x - 0.2, [shares[n] for n in names], 0.4, label="ring share")
    ax.bar(x + 0.2, counts / total, 0.4, label="key share")
    ax.set_xticks(x, names, rotation=45, ha="right")
    ax.set_ylabel("share")
    worst = max((c / e for c, e in zip(counts.tolist(), expected) if e > 0), default=0.0)
    ax.set_title(f"{len(names)} nodes, {total:,} keys: worst node at {worst:.3f}x its "
                 f"weighted share")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _route(args: argparse.Namespace) -> int:
    import csv

    ring = _Source(args).build()
    source = args.file
    stream = _open_binary(source)
    lines = _decoded(stream, _source_name(source))
    total_bytes = None
    if source != "-":
        total_bytes = os.fstat(stream.fileno()).st_size
    show_progress = sys.stderr.isatty() and (total_bytes is None or total_bytes > 1 << 20)
    out = sys.stdout
    nodes = ring.nodes
    routed = 0
    try:
        if args.column is not None:
            reader = csv.reader(lines)
            header = next(reader, None)
            if header is None:
                raise ValueError(f"no keys in {_source_name(source)}")
            if args.column not in header:
                raise UsageError(f"--column: {args.column!r} is not a column of the input "
                                 f"(columns: {', '.join(header)})")
            if args.node_column in header:
                raise UsageError(f"--node-column: the input already has a {args.node_column!r} "
                                 f"column; name the output column with --node-column NAME")
            col = header.index(args.column)
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow([*header, args.node_column])
            for rows in _chunks(reader, 65536):
                owners = ring.get_many([row[col] if col < len(row) else "" for row in rows])
                writer.writerows([*row, nodes[i]] for row, i in zip(rows, owners.tolist()))
                routed += len(rows)
                if show_progress:
                    _progress(routed, stream, total_bytes)
        else:
            for chunk in _chunks(lines, 65536):
                keys = [line.rstrip("\r\n") for line in chunk]
                owners = ring.get_many(keys)
                out.write("".join(f"{k}\t{nodes[i]}\n" for k, i in zip(keys, owners.tolist())))
                routed += len(keys)
                if show_progress:
                    _progress(routed, stream, total_bytes)
    finally:
        if stream is not sys.stdin:
            stream.close()
        if show_progress:
            sys.stderr.write("\n")
    if routed == 0:
        raise ValueError(f"no keys in {_source_name(source)}")
    return 0


def _chunks(iterable: Any, size: int) -> Any:
    chunk = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _progress(done: int, stream: Any, total: int | None) -> None:
    if total:
        try:
            fraction = min(1.0, stream.tell() / total)
        except (OSError, ValueError):
            fraction = 0.0
        filled = int(fraction * 30)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {fraction:6.1%} "
                         f"{done:,} keys")
    else:
        sys.stderr.write(f"\r{done:,} keys")
    sys.stderr.flush()


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (and exit code 2), not the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_ring_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "placement (exactly one of --nodes, --twemproxy, --libmemcached)")
    group.add_argument("--nodes", metavar="NAME[=WEIGHT],...",
                       help="a ringkit ring over these nodes, comma separated, each with an "
                            "optional =weight; a name may hold colons (memcached servers: "
                            "10.0.0.1, 10.0.0.2:11212=2)")
    group.add_argument("--vnodes", type=int, default=160,
                       help="with --nodes: points per unit of weight (default 160)")
    group.add_argument("--ketama", action="store_true",
                       help="with --nodes: libketama's continuum (HashRing.ketama)")
    group.add_argument("--twemproxy", metavar="FILE",
                       help="route as nutcracker does with this YAML configuration "
                            "(ringkit.compat.twemproxy); --add takes 'host:port:weight [name]'")
    group.add_argument("--pool", metavar="P", help="with --twemproxy: the pool (needed when "
                                                   "the file has several)")
    group.add_argument("--libmemcached", metavar="HOST:PORT[=WEIGHT],...",
                       help="route as libmemcached's ketama does (ringkit.compat.libmemcached): "
                            "KETAMA_WEIGHTED unless --unweighted; integer weights")
    group.add_argument("--unweighted", action="store_true",
                       help="with --libmemcached: plain KETAMA (100 key-hash points a server)")
    group.add_argument("--hash", metavar="NAME",
                       help="with --libmemcached: the key hash (default, md5, crc, fnv1_64, "
                            "fnv1a_64, fnv1_32, fnv1a_32, murmur, jenkins)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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

    inspect = commands.add_parser(
        "inspect", help="how a ring spreads the hash space and a set of keys",
        description="Per-node share of the ring and of a key set, max/mean load, and which "
                    "fraction of the keys a change (--add, --remove) moves.")
    _add_ring_options(inspect)
    keys = inspect.add_mutually_exclusive_group()
    keys.add_argument("--keys", type=int, default=100_000, metavar="N",
                      help="use N synthetic keys 'key:0' ... (default 100000)")
    keys.add_argument("--keys-file", metavar="FILE", help="read keys from FILE, one per line "
                                                          "('-' for standard input)")
    inspect.add_argument("--add", action="append", metavar="X[=WEIGHT]",
                         help="show what adding node X moves (repeatable)")
    inspect.add_argument("--remove", action="append", metavar="Y",
                         help="show what removing node Y moves (repeatable)")
    inspect.add_argument("--plot", metavar="OUT.png", help="also draw the shares to a PNG")
    inspect.set_defaults(run=_inspect)

    route = commands.add_parser(
        "route", help="write each key of a file with its node",
        description="Read keys (one per line, or one CSV column) and write each with the node "
                    "the ring routes it to, streaming. Plain lines give 'key<TAB>node'; CSV "
                    "input gives the same CSV with a 'node' column added.")
    _add_ring_options(route)
    route.add_argument("--column", metavar="NAME",
                       help="the input is CSV with a header; route the column NAME")
    route.add_argument("--node-column", metavar="NAME", default="node",
                       help="with --column: the name of the column added (default 'node'; "
                            "an input that has it already is refused)")
    route.add_argument("file", nargs="?", default="-", metavar="FILE",
                       help="input file, or '-' for standard input (the default)")
    route.set_defaults(run=_route)

    from ringkit._storecli import add_store_command

    add_store_command(commands, _Parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except UsageError as exc:
        print(f"ringkit {args.command}: error: {exc} (see ringkit {args.command} --help)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except (ringkit.RingkitError, OSError, ValueError, TypeError, RuntimeError) as exc:
        text = str(exc)
        if isinstance(exc, OSError) and exc.filename is not None:
            text = f"{exc.filename}: {exc.strerror or exc}"
        print(f"ringkit {args.command}: error: {text}", file=sys.stderr)
        return 1
