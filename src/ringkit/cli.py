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


_DEMO_STEPS: list[Callable[[Callable[[str], object]], None]] = [_demo_hashing]


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
