"""Targets, README's benchmark section and two plots: what pytest-benchmark cannot do itself.

    python bench/report.py bench/results/latest.json                 # prints the targets
    python bench/report.py bench/results/latest.json --plot [DIR]    # ... and the two PNG plots
    python bench/report.py bench/results/latest.json --readme README.md

pytest-benchmark prints every group's table at the end of a run, and again from a saved run with
``pytest-benchmark compare RUN.json --group-by=group`` (``--histogram`` draws each group); this
script adds only what needs the rows' extra_info. It prints whether each target was met (the
issues' goals, stored with each row: nothing in the suite asserts on time). `--plot DIR` draws
keys/s against batch size (log-log, one line per library) and load spread (max/mean) against
vnodes (`--plot` alone: beside the JSON). `--readme README.md` writes the compact section a user
reads (the machine, Python and package versions, one table per capability, the two tables and
plots of the ring, the targets summary) between README's `<!-- bench:start -->` and
`<!-- bench:end -->` markers, draws the two plots into bench/plots/ beside it and keeps the JSON,
without the raw round timings, as bench/results/readme.json, from which
tests/test_bench_report.py re-renders the section and checks that README.md still holds exactly
it. To re-render after changing this file:
`python bench/report.py bench/results/readme.json --readme README.md`.

The report knows nothing about hashing or rings: it reads what bench/conftest.py's `measure`
fixture stores in each benchmark's extra_info (label, n_keys, n_bytes, per, reference, targets),
group by group, so a new bench file is in README's section by using `measure` and a benchmark
group. Rows that also record `series` and `batch_size` (bench_scaling.py) make the
keys/s-against-batch table and plot; rows that record `load_spread` are not timings and make the
load-spread table and plot. Benchmarks without extra_info are read with their median only.

In each group, every row is compared with each reference row (the alternatives a user would pick):
"vs X" is X's median over the row's median, so above 1 means the row is faster than X; per key
when the two rows process different numbers of keys (a Python loop of 100,000 beside a batch of
1,000,000).

Rendering uses the standard library only (the tests render README's section without the bench
dependencies); matplotlib is imported only to draw the plots.
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

README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"
# Beside README.md: where --readme draws the plots (committed) and keeps the JSON it rendered.
README_PLOTS = Path("bench/plots")
README_JSON = Path("bench/results/readme.json")
SCALING_PNG = "ring-scaling.png"
SPREAD_PNG = "ring-load-spread.png"


@dataclass(frozen=True)
class Figure:
    """A sweep: rows that record `series` and `batch_size` (and this `figure` name), drawn as a
    table and a log-log plot of their figure against the size."""
    intro: str
    png: str
    xlabel: str
    title: str
    alt: str                     # the image's text in README
    cell: str = "rate"           # "rate": items/s in the table and plot; "seconds": seconds


FIGURES = {
    "ring": Figure("Ring lookup, keys/s against batch size (one benchmark group per size; "
                   "100 nodes x 160 vnodes):", SCALING_PNG, "keys per call (batch size)",
                   "Ring lookup: keys/s against batch size (100 nodes x 160 vnodes)",
                   "keys/s against batch size"),
    "replication-batches": Figure(
        "Replicated batches, keys/s against batch size (3 redis-servers, replicas=3, W=2, "
        "R=2; one benchmark group per operation and size). \"raw pipeline\": redis-py, one "
        "pipeline per server of exactly the commands ringkit sends (the same scripts and "
        "blobs, built before the timing), the three sent at once from three threads: the "
        "wire's limit for this layout. MSET/MGET and pipelined SET/GET run on one server:",
        "replication-batches.png", "keys per call (batch size)",
        "Replicated batches: keys/s against batch size (3 redis-servers, replicas=3)",
        "replicated batches: keys/s against batch size"),
    "replication-repair": Figure(
        "repair() of a store of N keys on 3 redis-servers (replicas=3): seconds per pass, in "
        "sync, with 1% of the keys missing on one server, and with one server wiped (restarted "
        "empty, refilled by the pass):", "replication-repair.png", "keys in the store",
        "repair(): seconds against store size (3 redis-servers, replicas=3)",
        "repair: seconds against store size", cell="seconds"),
}

# The bench module of each capability, in the order README.md presents them; a module not named
# here gets a section titled after it, after these.
CAPABILITIES = (
    ("Hashing", ("bench_hashing.py",)),
    ("Ring", ("bench_ring.py", "bench_scaling.py")),
    ("Placements", ("bench_compat.py",)),
    ("Frames and Dask", ("bench_frame.py",)),
    ("Load balancing", ("bench_balancer.py",)),
    ("Locks", ("bench_lock.py",)),
    ("Replication", ("bench_replication.py",)),
    ("Slow servers", ("bench_faults.py",)),
)


@dataclass(frozen=True)
class Row:
    group: str
    label: str
    median: float  # seconds per call
    n_keys: int | None = None
    n_bytes: int | None = None
    reference: bool = False
    targets: tuple[dict[str, Any], ...] = ()
    per: str = "key"  # what n_keys counts: keys, or builds, operations...
    module: str = ""  # the bench file, e.g. "bench_ring.py"
    order: int = 0  # position in the JSON (the order the suite ran)
    series: str | None = None  # keys/s against batch size: the library ...
    batch_size: int | None = None  # ... and the batch of one call
    note: str | None = None  # a remark on the series (e.g. where it stops)
    # bench_compat.py's "which placement" rows: keys moved by a change, memory (not timed)
    moves: dict[str, float] | None = None
    n_nodes: int | None = None
    memory_bytes: int | None = None
    figure: str = "ring"  # the sweep a row with a batch_size belongs to (FIGURES)
    server_us: dict[str, float] | None = None  # server CPU per item (INFO commandstats)

    @property
    def seconds(self) -> float:
        return self.median

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

    @property
    def module(self) -> str:
        return min(self.rows, key=lambda r: r.order).module if self.rows else ""

    @property
    def is_scaling(self) -> bool:
        return bool(self.rows) and all(row.batch_size is not None for row in self.rows)

    def row(self, label: str) -> Row | None:
        return next((row for row in self.rows if row.label == label), None)

    def headline(self) -> Row | None:
        """The row a summary shows: the first (in the suite's order) non-reference row that has
        targets, else the first non-reference row."""
        ours = sorted((row for row in self.rows if not row.reference), key=lambda r: r.order)
        return next((row for row in ours if row.targets), ours[0] if ours else None)


@dataclass(frozen=True)
class Spread:
    """Load spread (max/mean keys per node) of one library against vnodes: not a timing."""
    group: str
    series: str
    n_nodes: int
    n_keys: int
    vnodes: tuple[int, ...]
    max_over_mean: tuple[float, ...]


@dataclass
class Results:
    data: dict[str, Any]
    groups: list[Group]
    spreads: list[Spread]


@dataclass(frozen=True)
class TargetCheck:
    group: str
    label: str
    wanted: str
    measured: str
    met: bool | None  # None: the figure could not be computed (a missing row or size)


# --------------------------------------------------------------------------------------------------
# Reading


def _module(bench: dict[str, Any]) -> str:
    path = (bench.get("fullname") or "").split("::")[0]
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def parse(data: dict[str, Any]) -> Results:
    groups: dict[str, Group] = {}
    spreads: list[Spread] = []
    for order, bench in enumerate(data.get("benchmarks", [])):
        stats = bench.get("stats") or {}
        info = bench.get("extra_info") or {}
        name = bench.get("group") or "(no group)"
        spread = info.get("load_spread")
        if spread:
            spreads.append(Spread(
                group=name, series=spread["series"], n_nodes=int(spread["n_nodes"]),
                n_keys=int(spread["n_keys"]), vnodes=tuple(int(v) for v in spread["vnodes"]),
                max_over_mean=tuple(float(x) for x in spread["max_over_mean"])))
            continue
        if "median" not in stats:
            continue
        row = Row(
            group=name,
            label=info.get("label") or bench.get("name", "?"),
            median=float(stats["median"]),
            n_keys=info.get("n_keys"),
            n_bytes=info.get("n_bytes"),
            reference=bool(info.get("reference", False)),
            targets=tuple(info.get("targets") or ()),
            per=info.get("per") or "key",
            module=_module(bench),
            order=order,
            series=info.get("series"),
            batch_size=info.get("batch_size"),
            note=info.get("series_note"),
            moves={k: float(v) for k, v in info.items() if k.startswith("moved_")} or None,
            n_nodes=info.get("n_nodes"),
            memory_bytes=info.get("memory_bytes"),
            figure=info.get("figure") or "ring",
            server_us=info.get("server_us_per_item"),
        )
        groups.setdefault(name, Group(name)).rows.append(row)
    for group in groups.values():
        group.rows.sort(key=lambda r: r.median)
    # Capability by capability (README's order), each in the order the suite ran.
    ordered = sorted(groups.values(), key=lambda g: capability_rank(g.module))
    return Results(data, ordered, spreads)


def load(path: Path) -> Results:
    return parse(json.loads(path.read_text(encoding="utf-8")))


# --------------------------------------------------------------------------------------------------
# Formatting


def fmt_num(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{fmt_num(seconds / scale)} {unit}"
    return f"{fmt_num(seconds * 1e9)} ns"


def fmt_rate(rate: float) -> str:
    """A rate with its SI prefix and no unit: "112 M", "3.4 k", "950"."""
    for prefix, scale in (("M", 1e6), ("k", 1e3)):
        if rate >= scale:
            return f"{fmt_num(rate / scale)} {prefix}"
    return fmt_num(rate)


def fmt_throughput(row: Row) -> str:
    if row.gb_per_s is not None:
        return f"{fmt_num(row.gb_per_s)} GB/s"
    if row.keys_per_s is None:
        return "—"
    return f"{fmt_rate(row.keys_per_s)} {row.per}s/s"


def fmt_per_item(row: Row) -> str:
    if row.ns_per_key is None:
        return "—"
    text = fmt_time(row.ns_per_key / 1e9)
    return text if row.per == "key" else f"{text}/{row.per}"


def fmt_ratio(ratio: float) -> str:
    return f"{ratio:.3g}x" if ratio < 100 else f"{ratio:.0f}x"


def fmt_count(n: int) -> str:
    return f"{n:,}"


def md_row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def md_rule(n_text: int, n_num: int) -> str:
    return "|" + "|".join(["---"] * n_text + ["---:"] * n_num) + "|"


def fmt_target(value: float, short: str) -> str:
    """A target's figure: with thousands separators from 10,000 up (40,000,000, not 4e+07)."""
    return f"{value:,.0f}" if abs(value) >= 10_000 else short


def ratio(ref: Row, row: Row) -> float:
    """ref's time over row's: per call, or per key when the two rows process different numbers
    of keys (a loop of 100,000 keys beside a batch of 1,000,000)."""
    if ref.n_keys and row.n_keys and ref.n_keys != row.n_keys:
        return (ref.median / ref.n_keys) / (row.median / row.n_keys)
    return ref.median / row.median


def mixed_sizes(groups: Sequence[Group]) -> bool:
    """Whether some group compares rows that process different numbers of keys."""
    return any(len({row.n_keys for row in g.rows if row.n_keys}) > 1
               for g in groups if not g.is_scaling)


METRIC_UNITS = {"ns_per_key": "ns/key", "keys_per_s": "keys/s", "gb_per_s": "GB/s", "speedup": "x",
                "seconds": "s"}


def check_target(group: Group, row: Row, target: dict[str, Any]) -> TargetCheck:
    metric, op, value, vs = target["metric"], target["op"], target["value"], target.get("vs")
    unit = METRIC_UNITS.get(metric, metric).replace("key", row.per)
    sep = "" if unit == "x" else " "
    wanted = (f"{'≤' if op == '<=' else '≥'} {fmt_target(value, f'{value:g}')}{sep}{unit}"
              + (f" vs {vs}" if vs else ""))
    figure: float | None
    if metric == "speedup":
        other = group.row(vs) if vs else None
        figure = ratio(other, row) if other else None
    else:
        figure = getattr(row, metric, None)
    if figure is None or math.isnan(figure):
        return TargetCheck(group.name, row.label, wanted, "—", None)
    met = figure <= value if op == "<=" else figure >= value
    measured = fmt_target(figure, fmt_num(figure))
    return TargetCheck(group.name, row.label, wanted, f"{measured}{sep}{unit}", met)


def target_checks(groups: Sequence[Group]) -> list[TargetCheck]:
    checks: list[TargetCheck] = []
    for group in groups:
        for row in group.rows:
            checks += [check_target(group, row, t) for t in row.targets]
    return checks


# The ring's two figures across sizes: keys/s against batch size, load spread against vnodes.


def scaling_rows(groups: Sequence[Group], figure: str | None = None) -> list[Row]:
    return [row for g in groups if g.is_scaling for row in g.rows
            if figure is None or row.figure == figure]


def scaling_figures(groups: Sequence[Group]) -> list[str]:
    """The sweeps present, in the order of FIGURES."""
    present = {row.figure for row in scaling_rows(groups)}
    return [name for name in FIGURES if name in present]


def scaling_series(rows: Sequence[Row]) -> dict[str, dict[int, Row]]:
    """series -> batch size -> row, series in the suite's order."""
    series: dict[str, dict[int, Row]] = {}
    for row in sorted(rows, key=lambda r: r.order):
        assert row.series is not None and row.batch_size is not None
        series.setdefault(row.series, {})[row.batch_size] = row
    return series


def _cell(row: Row, kind: str) -> float:
    if kind == "seconds":
        return row.median
    return row.keys_per_s or math.nan


def scaling_table(groups: Sequence[Group], figure: str = "ring") -> list[str]:
    rows = scaling_rows(groups, figure)
    if not rows:
        return []
    kind = FIGURES[figure].cell
    series = scaling_series(rows)
    sizes = sorted({row.batch_size for row in rows if row.batch_size is not None})
    per = rows[0].per
    head = "seconds at store size" if kind == "seconds" else f"{per}s/s at batch size"
    lines = [md_row([head, *(fmt_count(n) for n in sizes)]), md_rule(1, len(sizes))]
    for name, by_size in series.items():
        if kind == "seconds":
            cells = [f"{by_size[n].median:.3g}" if n in by_size else "—" for n in sizes]
        else:
            cells = [fmt_rate(_cell(by_size[n], kind)) if n in by_size else "—" for n in sizes]
        lines.append(md_row([name, *cells]))
    notes = {}
    for name, by_size in series.items():
        note = next((r.note for r in by_size.values() if r.note), None)
        if note:
            notes.setdefault(note, []).append(name)
    lines.append("")
    if kind == "seconds":
        lines.append("Each cell: the median seconds of one pass over a store of that size; "
                     "— : not measured.")
    else:
        lines.append(f"Each cell: {per}s answered per second by one call on a batch of that "
                     "size (batch size over the median time of a call); — : not measured.")
    for note, names in notes.items():
        lines.append(f"{', '.join(names)}: {note}.")
    return lines


def server_cpu_table(groups: Sequence[Group]) -> list[str]:
    """Server CPU per item from INFO commandstats, for the rows that recorded it."""
    rows = sorted((r for g in groups for r in g.rows if r.server_us),
                  key=lambda r: r.order)
    if not rows:
        return []
    lines = [md_row(["row", "server CPU per item", "commands"]), md_rule(1, 2)]
    for row in rows:
        assert row.server_us is not None
        total = row.server_us.get("total", math.nan)
        detail = ", ".join(f"{k} {v:.2f} µs" for k, v in row.server_us.items() if k != "total")
        lines.append(md_row([f"{row.label} ({fmt_count(row.n_keys or 0)} keys)",
                             f"{total:.2f} µs", detail]))
    lines += ["", "INFO commandstats' microseconds over the calls of one batch, summed over the "
                  "servers it went to, per key of the batch (a script's own figure includes the "
                  "commands it runs)."]
    return lines


def spread_table(spreads: Sequence[Spread]) -> list[str]:
    if not spreads:
        return []
    vnodes = sorted({v for s in spreads for v in s.vnodes})
    lines = [md_row(["max/mean at vnodes", *(str(v) for v in vnodes)]), md_rule(1, len(vnodes))]
    for s in spreads:
        by_vnodes = dict(zip(s.vnodes, s.max_over_mean))
        lines.append(md_row([s.series, *(f"{by_vnodes[v]:.3f}" if v in by_vnodes else "—"
                                         for v in vnodes)]))
    first = spreads[0]
    lines += ["", f"The busiest node's keys over the mean, {fmt_count(first.n_keys)} keys on "
                  f"{first.n_nodes} nodes (1.000 is perfect; sampling alone gives about "
                  f"{1 + 2 * math.sqrt(first.n_nodes / first.n_keys):.2f})."]
    return lines


# --------------------------------------------------------------------------------------------------
# The run's machine, and the targets


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
    if ours.get("redis_server"):
        lines.append(f"- redis-server: {ours['redis_server']} (on loopback, started by the "
                     "lock and replication benches)")
    if commit.get("id"):
        dirty = " (dirty tree)" if commit.get("dirty") else ""
        lines.append(f"- commit: {commit['id'][:12]}{dirty}")
    if data.get("datetime"):
        lines.append(f"- run: {data['datetime']}")
    return lines


def targets_table(checks: Sequence[TargetCheck]) -> list[str]:
    lines = [md_row(["group", "operation", "target", "measured", "met"]), md_rule(3, 1) + "---|"]
    for c in checks:
        met = "n/a" if c.met is None else ("yes" if c.met else "**no**")
        lines.append(md_row([c.group, c.label, c.wanted, c.measured, met]))
    return lines


def render_targets(results: Results) -> str:
    """Whether each target was met, every target of the run (what the script prints)."""
    checks = target_checks(results.groups)
    if not checks:
        return "No targets in this run."
    met = sum(c.met is True for c in checks)
    return "\n".join([f"{met} of {len(checks)} targets met.", "", *targets_table(checks)])


# --------------------------------------------------------------------------------------------------
# README.md's section: one table per capability, the ring's two figures, the targets summary


def capability_of(module: str) -> str:
    for title, modules in CAPABILITIES:
        if module in modules:
            return title
    return module.removeprefix("bench_").removesuffix(".py").replace("_", " ") or "other"


def capability_rank(module: str) -> int:
    titles = [title for title, _ in CAPABILITIES]
    title = capability_of(module)
    return titles.index(title) if title in titles else len(titles)


def summary_table(groups: Sequence[Group]) -> list[str]:
    """One line per group: ringkit's headline row, its figures, and its ratio to each peer."""
    lines = [md_row(["benchmark", "ringkit", "per call", "per item", "throughput", "vs peers"]),
             md_rule(2, 3) + "---|"]
    for group in groups:
        row = group.headline()
        if row is None:
            continue
        ratios = "; ".join(f"{fmt_ratio(ratio(ref, row))} {ref.label}"
                           for ref in group.references)
        lines.append(md_row([group.name, row.label, fmt_time(row.median), fmt_per_item(row),
                             fmt_throughput(row), ratios or "—"]))
    return lines


def placement_table(groups: Sequence[Group]) -> list[str]:
    """The "which placement" rows: keys moved by adding or removing one node, and memory."""
    rows = sorted((row for g in groups for row in g.rows if row.moves is not None),
                  key=lambda r: (r.n_nodes or 0, r.label))
    if not rows:
        return []

    def pct(row: Row, key: str) -> str:
        value = (row.moves or {}).get(key)
        return "—" if value is None else f"{value:.2%}"

    lines = [md_row(["placement", "nodes", "adding one moves", "removing one moves",
                     "memory beyond the names"]), "|---|---:|---:|---:|---:|"]
    for row in rows:
        moves = row.moves or {}
        removed = (pct(row, "moved_remove") if "moved_remove" in moves else
                   f"last: {pct(row, 'moved_remove_last')}, first: "
                   f"{pct(row, 'moved_remove_first')}")
        name = row.label.removeprefix("ringkit ").removesuffix(".get_many")
        lines.append(md_row([name, f"{row.n_nodes:,}" if row.n_nodes else "?",
                             pct(row, "moved_add"), removed,
                             f"{row.memory_bytes:,} B" if row.memory_bytes is not None
                             else "?"]))
    return lines


def render_readme(results: Results) -> str:
    """README.md's benchmark section (without the markers), ending with a newline."""
    checks = target_checks(results.groups)
    out = ["## Benchmarks", "",
           "Written by `bench/report.py --readme` from the run saved in "
           "`bench/results/readme.json` (tests check that this section is exactly what it "
           "renders); `python3 -m nox -s bench` reruns the suite (see `bench/README.md`). "
           "`pytest-benchmark compare bench/results/readme.json --group-by=group` prints every "
           "row of every group.",
           "", *machine_lines(results.data), "",
           "One line per benchmark group: ringkit's main row (the one the issue set targets "
           "for). Per call: the median of the benchmark's rounds (a Python loop of one call per "
           "key is timed whole); per item (key, pick, operation) and throughput come from it. "
           "\"vs peers\": each alternative's median over ringkit's in the same group, so above "
           "1 ringkit is faster"
           + ("; per key where the two process different numbers of keys (a loop beside a "
              "batch)" if mixed_sizes(results.groups) else "")
           + ". GB = 10^9 bytes.", ""]
    by_capability: dict[str, list[Group]] = {}
    for group in results.groups:  # already in capability order
        by_capability.setdefault(capability_of(group.module), []).append(group)
    for title, groups in by_capability.items():
        timing = [g for g in groups if not g.is_scaling]
        out += [f"### {title}", ""]
        if timing:
            out += [*summary_table(timing), ""]
        for name in scaling_figures(groups):
            figure = FIGURES[name]
            out += [figure.intro, "", *scaling_table(groups, name), "",
                    f"![{figure.alt}]({(README_PLOTS / figure.png).as_posix()})", ""]
        cpu = server_cpu_table(groups)
        if cpu:
            out += ["Server CPU per key, measured around one call of each row below "
                    "(untimed):", "", *cpu, ""]
        moved = placement_table(groups)
        if moved:
            out += ["Keys moved by a change of nodes (of the 1,000,000 keys) and memory, "
                    "measured beside the rows above:", "", *moved, ""]
        if title == "Ring" and results.spreads:
            out += ["Load spread against vnodes:", "", *spread_table(results.spreads), "",
                    f"![load spread against vnodes]({(README_PLOTS / SPREAD_PNG).as_posix()})",
                    ""]
    if checks:
        met = sum(c.met is True for c in checks)
        out += ["### Targets", "",
                f"{met} of {len(checks)} targets met (the issues' goals for each operation, "
                "checked by report.py; nothing in the suite asserts on time)."]
        missed = [c for c in checks if c.met is not True]
        if missed:
            out += ["", "Missed, or not measured in this run:", "", *targets_table(missed)]
        out.append("")
    return "\n".join(out)


def slim_json(path: Path) -> str:
    """The run as README.md keeps it: pytest-benchmark's JSON without each benchmark's raw round
    timings (stats["data"]: tens of MB for the fast rows), which the report never reads."""
    data = json.loads(path.read_text(encoding="utf-8"))
    for bench in data.get("benchmarks", []):
        (bench.get("stats") or {}).pop("data", None)
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def readme_section(text: str) -> str | None:
    """The text between README's markers (None if they are missing)."""
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return None
    return text[start + len(README_START):end].removeprefix("\n")


def write_readme(readme: Path, section: str) -> None:
    text = readme.read_text(encoding="utf-8") if readme.exists() else ""
    block = f"{README_START}\n{section}{README_END}"
    start, end = text.find(README_START), text.find(README_END)
    if start >= 0 and end > start:
        text = text[:start] + block + text[end + len(README_END):]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    readme.write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# Plots (matplotlib is optional: the `plot` and `bench` extras bring it)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# One color per library in both plots (the first word of a series: "ringkit get_many" -> ringkit).
LIBRARY_COLORS = {"ringkit": "C0", "numpy": "C1", "fastring": "C2", "uhashring": "C3",
                  "hashring": "C4"}


def _color(series: str) -> str | None:
    return LIBRARY_COLORS.get(re.split(r"[\s:]", series, maxsplit=1)[0])


def _subtitle(data: dict[str, Any]) -> str:
    ours = (data.get("machine_info") or {}).get("ringkit_bench") or {}
    return f"CPython {ours.get('python', '?')}, {ours.get('cpu_model', '?')}"


def plot_scaling(results: Results, path: Path, figure: str = "ring") -> Path | None:
    """A sweep's figure against its size, log-log, one line per series."""
    rows = scaling_rows(results.groups, figure)
    if not rows:
        return None
    spec = FIGURES[figure]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, by_size in scaling_series(rows).items():
        sizes = sorted(by_size)
        ours = name.startswith("ringkit")
        ax.plot(sizes, [_cell(by_size[n], spec.cell) for n in sizes], marker="o", label=name,
                color=_color(name) if figure == "ring" else None,
                linewidth=2.5 if ours else 1.5, zorder=3 if ours else 2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(spec.xlabel)
    ax.set_ylabel("seconds per pass (median)" if spec.cell == "seconds"
                  else f"{rows[0].per}s per second (median)")
    ax.set_title(spec.title + "\n" + _subtitle(results.data), fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path


def plot_spread(results: Results, path: Path) -> Path | None:
    """Load spread (max/mean) against vnodes, one line per library."""
    if not results.spreads:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for s in results.spreads:
        ours = s.series.startswith("ringkit")
        ax.plot(s.vnodes, s.max_over_mean, marker="o", label=s.series, color=_color(s.series),
                linewidth=2.5 if ours else 1.5, zorder=3 if ours else 2)
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xscale("log", base=2)
    vnodes = sorted({v for s in results.spreads for v in s.vnodes})
    ax.set_xticks(vnodes, [str(v) for v in vnodes])
    ax.set_xlabel("vnodes per node")
    ax.set_ylabel("max / mean keys per node")
    first = results.spreads[0]
    ax.set_title(f"Load spread: {first.n_keys:,} keys on {first.n_nodes} nodes\n"
                 + _subtitle(results.data), fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path


def plot_main(results: Results, outdir: Path) -> list[Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    written = [plot_scaling(results, outdir / FIGURES[name].png, name)
               for name in scaling_figures(results.groups)]
    written.append(plot_spread(results, outdir / SPREAD_PNG))
    return [p for p in written if p is not None]


# --------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("json", type=Path, help="pytest-benchmark JSON (--benchmark-json=...)")
    parser.add_argument("--plot", nargs="?", type=Path, const=True, default=None, metavar="DIR",
                        help="draw keys/s against batch size and load spread against vnodes "
                             "into DIR (default: beside the JSON)")
    parser.add_argument("--readme", type=Path, metavar="README.md",
                        help="write the benchmark section between README's markers, the two "
                             "plots into bench/plots/ and the JSON to bench/results/readme.json "
                             "beside it")
    args = parser.parse_args(argv)

    if not args.json.is_file():
        print(f"{args.json}: no such file (run the bench with --benchmark-json={args.json})",
              file=sys.stderr)
        return 1
    results = load(args.json)
    if not results.groups:
        print(f"{args.json}: no benchmark results (was the run --benchmark-disable?)",
              file=sys.stderr)
        return 1
    if args.readme is not None and not args.readme.is_file():
        print(f"{args.readme}: no such file", file=sys.stderr)
        return 1
    print(render_targets(results))
    print(f"(every row of every group: pytest-benchmark compare {args.json} --group-by=group)",
          file=sys.stderr)

    plot_dirs = []
    if args.plot is not None:
        plot_dirs.append(args.json.parent if args.plot is True else args.plot)
    if args.readme is not None:
        plot_dirs.append(args.readme.parent / README_PLOTS)
    try:
        for outdir in dict.fromkeys(plot_dirs):
            for path in plot_main(results, outdir):
                print(f"(plot: {path})", file=sys.stderr)
    except ImportError:
        print("plots need matplotlib (pip install 'ringkit[plot]')", file=sys.stderr)
        return 1

    if args.readme is not None:
        kept = args.readme.parent / README_JSON
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(slim_json(args.json), encoding="utf-8")
        write_readme(args.readme, render_readme(load(kept)))
        print(f"(README: benchmark section of {args.readme} rendered from {kept})",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
