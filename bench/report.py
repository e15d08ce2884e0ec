"""Turn a pytest-benchmark JSON file into bench/README.md's markdown table (and, optionally, plots).

    python bench/report.py bench/results/latest.json                 # prints and writes report.md
    python bench/report.py bench/results/latest.json --plot          # also one PNG per group

The report knows nothing about hashing: it reads what bench/conftest.py's `measure` fixture stores
in each benchmark's extra_info (label, n_keys, n_bytes, reference, targets), group by group, so a
new bench file (ring, balancer, locks) gets its table by using `measure` and a benchmark group.
Benchmarks without that extra_info still get a row (median only).

In each group, every row is compared with each reference row (the alternatives a user would pick):
"vs X" is X's median over the row's median, so above 1 means the row is faster than X.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Row:
    group: str
    label: str
    median: float  # seconds per call
    minimum: float
    rounds: int
    n_keys: int | None = None
    n_bytes: int | None = None
    reference: bool = False
    targets: tuple[dict[str, Any], ...] = ()
    per: str = "key"  # what n_keys counts: keys, or builds, operations...

    @property
    def ns_per_key(self) -> float | None:
        return self.median / self.n_keys * 1e9 if self.n_keys else None

    @property
    def keys_per_s(self) -> float | None:
        return self.n_keys / self.median if self.n_keys else None

    @property
    def gb_per_s(self) -> float | None:
        return self.n_bytes / self.median / 1e9 if self.n_bytes else None


@dataclass
class Group:
    name: str
    rows: list[Row] = field(default_factory=list)

    @property
    def references(self) -> list[Row]:
        return [row for row in self.rows if row.reference]

    def row(self, label: str) -> Row | None:
        return next((row for row in self.rows if row.label == label), None)


@dataclass(frozen=True)
class TargetCheck:
    group: str
    label: str
    wanted: str
    measured: str
    met: bool | None  # None: the figure could not be computed (a missing row or size)


# --------------------------------------------------------------------------------------------------
# Reading


def load(path: Path) -> tuple[dict[str, Any], list[Group]]:
    data = json.loads(path.read_text())
    groups: dict[str, Group] = {}
    for bench in data.get("benchmarks", []):
        stats = bench.get("stats") or {}
        if "median" not in stats:
            continue
        info = bench.get("extra_info") or {}
        name = bench.get("group") or "(no group)"
        row = Row(
            group=name,
            label=info.get("label") or bench.get("name", "?"),
            median=float(stats["median"]),
            minimum=float(stats.get("min", stats["median"])),
            rounds=int(stats.get("rounds", 0)),
            n_keys=info.get("n_keys"),
            n_bytes=info.get("n_bytes"),
            reference=bool(info.get("reference", False)),
            targets=tuple(info.get("targets") or ()),
            per=info.get("per") or "key",
        )
        groups.setdefault(name, Group(name)).rows.append(row)
    for group in groups.values():
        group.rows.sort(key=lambda r: r.median)
    return data, list(groups.values())


# --------------------------------------------------------------------------------------------------
# Formatting


def fmt_num(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{fmt_num(seconds / scale)} {unit}"
    return f"{fmt_num(seconds * 1e9)} ns"


def fmt_throughput(row: Row) -> str:
    if row.gb_per_s is not None:
        return f"{fmt_num(row.gb_per_s)} GB/s"
    if row.keys_per_s is None:
        return "—"
    rate = row.keys_per_s
    for prefix, scale in (("M ", 1e6), ("k ", 1e3), ("", 1.0)):
        if rate >= scale or not prefix:
            return f"{fmt_num(rate / scale)} {prefix}{row.per}s/s"
    raise AssertionError("unreachable")


def fmt_per_item(row: Row) -> str:
    if row.ns_per_key is None:
        return "—"
    text = fmt_time(row.ns_per_key / 1e9)
    return text if row.per == "key" else f"{text}/{row.per}"


def fmt_ratio(ratio: float) -> str:
    return f"{ratio:.3g}x" if ratio < 100 else f"{ratio:.0f}x"


METRIC_UNITS = {"ns_per_key": "ns/key", "keys_per_s": "keys/s", "gb_per_s": "GB/s", "speedup": "x"}


def check_target(group: Group, row: Row, target: dict[str, Any]) -> TargetCheck:
    metric, op, value, vs = target["metric"], target["op"], target["value"], target.get("vs")
    unit = METRIC_UNITS.get(metric, metric)
    sep = "" if unit == "x" else " "
    wanted = f"{'≤' if op == '<=' else '≥'} {value:g}{sep}{unit}" + (f" vs {vs}" if vs else "")
    figure: float | None
    if metric == "speedup":
        other = group.row(vs) if vs else None
        figure = other.median / row.median if other else None
    else:
        figure = getattr(row, metric, None)
    if figure is None or math.isnan(figure):
        return TargetCheck(group.name, row.label, wanted, "—", None)
    met = figure <= value if op == "<=" else figure >= value
    return TargetCheck(group.name, row.label, wanted, f"{fmt_num(figure)}{sep}{unit}", met)


def table(group: Group) -> list[str]:
    refs = group.references
    head = ["operation", "median", "min", "per key", "throughput",
            *(f"vs {r.label}" for r in refs)]
    rule = "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"
    lines = ["| " + " | ".join(head) + " |", rule]
    for row in group.rows:
        cells = [row.label, fmt_time(row.median), fmt_time(row.minimum), fmt_per_item(row),
                 fmt_throughput(row)]
        cells += ["—" if ref is row else fmt_ratio(ref.median / row.median) for ref in refs]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def machine_lines(data: dict[str, Any]) -> list[str]:
    machine = data.get("machine_info") or {}
    ours = machine.get("ringkit_bench") or {}
    cpu = ours.get("cpu_model") or (machine.get("cpu") or {}).get("brand_raw") or "unknown CPU"
    cpus = ours.get("logical_cpus") or (machine.get("cpu") or {}).get("count")
    python = ours.get("python") or machine.get("python_version", "?")
    impl = ours.get("python_implementation") or machine.get("python_implementation", "")
    versions = (ours.get("packages") or {}).items()
    packages = ", ".join(f"{name} {version}" for name, version in versions if version)
    commit = data.get("commit_info") or {}
    lines = [f"- machine: {cpu}, {cpus} logical CPUs, {machine.get('system', '')} "
             f"{machine.get('release', '')}".rstrip(),
             f"- Python: {impl} {python}"]
    if packages:
        lines.append(f"- packages: {packages}")
    if commit.get("id"):
        dirty = " (dirty tree)" if commit.get("dirty") else ""
        lines.append(f"- commit: {commit['id'][:12]}{dirty}")
    if data.get("datetime"):
        lines.append(f"- run: {data['datetime']}")
    return lines


def render(data: dict[str, Any], groups: Sequence[Group]) -> str:
    out = ["# ringkit benchmarks", "", *machine_lines(data), "",
           "Per call: the median (and the fastest) of each benchmark's rounds; per key, "
           "throughput and \"vs X\" (X's median over the row's median: above 1, the row is "
           "faster than X) come from the median. GB = 10^9 bytes.", ""]
    checks: list[TargetCheck] = []
    for group in groups:
        out += [f"## {group.name}", "", *table(group), ""]
        for row in group.rows:
            checks += [check_target(group, row, t) for t in row.targets]
    if checks:
        out += ["## Targets", "", "| group | operation | target | measured | met |",
                "|---|---|---|---:|---|"]
        for c in checks:
            met = "n/a" if c.met is None else ("yes" if c.met else "**no**")
            out.append(f"| {c.group} | {c.label} | {c.wanted} | {c.measured} | {met} |")
        out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------
# Plots (matplotlib is optional: the `plot` and `bench` extras bring it)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:80] or "group"


def plot_groups(groups: Iterable[Group], outdir: Path) -> list[Path]:
    """One horizontal bar chart per group (per-key time where known, else median), log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for group in groups:
        per_key = all(row.ns_per_key is not None for row in group.rows)
        values = [row.ns_per_key if per_key else row.median * 1e9 for row in group.rows]
        labels = [row.label for row in group.rows]
        fig, ax = plt.subplots(figsize=(8, 0.5 * len(labels) + 1.2))
        colors = ["#999999" if row.reference else "#1f77b4" for row in group.rows]
        ax.barh(labels[::-1], values[::-1], color=colors[::-1])
        ax.set_xscale("log")
        ax.set_xlabel("ns per key (median)" if per_key else "ns per call (median)")
        ax.set_title(group.name, fontsize=10)
        fig.tight_layout()
        path = outdir / f"{slug(group.name)}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


# --------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="pytest-benchmark JSON (--benchmark-json=...)")
    parser.add_argument("-o", "--output", type=Path,
                        help="markdown file to write (default: report.md beside the JSON)")
    parser.add_argument("--plot", action="store_true", help="also write one PNG per group")
    args = parser.parse_args(argv)

    if not args.json.is_file():
        print(f"{args.json}: no such file (run the bench with --benchmark-json={args.json})",
              file=sys.stderr)
        return 1
    data, groups = load(args.json)
    if not groups:
        print(f"{args.json}: no benchmark results (was the run --benchmark-disable?)",
              file=sys.stderr)
        return 1
    text = render(data, groups)
    output = args.output or args.json.with_name("report.md")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    print(text)
    print(f"(written to {output})", file=sys.stderr)
    if args.plot:
        try:
            paths = plot_groups(groups, output.parent)
        except ImportError:
            print("--plot needs matplotlib (pip install 'ringkit[plot]')", file=sys.stderr)
            return 1
        for path in paths:
            print(f"(plot: {path})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
