"""README.md's benchmark section is exactly what bench/report.py renders from the run it shows.

bench/results/readme.json is that run (pytest-benchmark's JSON, kept by ``report.py --readme``);
re-rendering it must give, character for character, the text between README's
``<!-- bench:start -->`` and ``<!-- bench:end -->`` markers, so no figure in the README can come
from anywhere else or drift from the report. The rest checks the report on a small hand-made run.

report.py renders with the standard library only, so this runs without the bench extra (the wheel
tests copy bench/ beside tests/ and README.md for it: see [tool.cibuildwheel] test-sources).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "bench" / "report.py"
README = ROOT / "README.md"
RUN = ROOT / "bench" / "results" / "readme.json"
CAPABILITY_MODULES = ("bench_hashing.py", "bench_ring.py", "bench_scaling.py",
                      "bench_compat.py", "bench_balancer.py", "bench_lock.py",
                      "bench_replication.py", "bench_faults.py")



@pytest.fixture(scope="module")
def report() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("ringkit_bench_report", REPORT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


# --------------------------------------------------------------------------------------------------
# README.md against the run it shows


def test_readme_section_is_what_report_renders(report: ModuleType) -> None:
    section = report.readme_section(README.read_text(encoding="utf-8"))
    assert section is not None, "README.md lost its <!-- bench:start --> / <!-- bench:end -->"
    assert RUN.is_file(), "bench/results/readme.json (the run README.md shows) is missing"
    expected = report.render_readme(report.load(RUN))
    assert section == expected, (
        "README.md's benchmark section is not bench/report.py's rendering of "
        "bench/results/readme.json; re-render it with "
        "`python bench/report.py bench/results/readme.json --readme README.md`")


def test_readme_run_is_a_whole_suite(report: ModuleType) -> None:
    """The README shows a run of every bench file, on the Python that has every peer."""
    data = json.loads(RUN.read_text(encoding="utf-8"))
    modules = {report._module(bench) for bench in data["benchmarks"]}
    assert set(CAPABILITY_MODULES) <= modules
    packages = data["machine_info"]["ringkit_bench"]["packages"]
    missing = [name for name, version in packages.items() if version is None and name != "Cython"]
    assert not missing, f"the run lacked {missing}"
    assert not any("data" in bench["stats"] for bench in data["benchmarks"])  # kept slim


def test_readme_plots_exist() -> None:
    section = README.read_text(encoding="utf-8").split("<!-- bench:start -->", 1)[1]
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", section)
    # The ring's two figures and the replication's two (batch sizes, repair against size).
    assert sorted(images) == sorted(f"bench/plots/{name}" for name in (
        "ring-scaling.png", "ring-load-spread.png", "replication-batches.png",
        "replication-repair.png"))
    for image in images:
        path = ROOT / image
        assert path.is_file(), f"{image} (shown in README.md) is missing"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_renders_with_the_standard_library_only() -> None:
    """Module-level imports are stdlib; matplotlib is imported inside the plotting code only."""
    tree = ast.parse(REPORT.read_text(encoding="utf-8"))
    allowed = set(sys.stdlib_module_names) | {"__future__"}
    for node in tree.body:
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        for name in names:
            assert name.split(".")[0] in allowed, f"report.py imports {name} at module level"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""])
            for name in names:
                assert name.split(".")[0] in allowed | {"matplotlib"}, name


# --------------------------------------------------------------------------------------------------
# The report on a small hand-made run


def bench(module: str, group: str, label: str, median: float, **info: Any) -> dict[str, Any]:
    return {"group": group, "name": f"test_{label}", "fullname": f"bench/{module}::test_{label}",
            "extra_info": {"label": label, **info},
            "stats": {"median": median, "min": median * 0.9, "rounds": 5, "data": [median] * 5}}


def small_run() -> dict[str, Any]:
    hashing = "hash: 1,000 keys"
    benches = [
        bench("bench_hashing.py", hashing, "ringkit hash", 1e-5, n_keys=1000,
              targets=[{"metric": "ns_per_key", "op": "<=", "value": 20, "vs": None},
                       {"metric": "speedup", "op": ">=", "value": 20, "vs": "loop"}]),
        bench("bench_hashing.py", hashing, "loop", 1e-4, n_keys=1000, reference=True),
        bench("bench_lock.py", "lock", "ringkit Lock", 2e-4, n_keys=1, per="op",
              targets=[{"metric": "keys_per_s", "op": ">=", "value": 1000, "vs": None}]),
    ]
    for series, scale, sizes in (("ringkit get_many", 1e-8, (1, 10, 100)),
                                 ("peer loop", 1e-6, (1, 10))):
        for n in sizes:
            benches.append(bench("bench_scaling.py", f"batch {n}", series, 1e-7 + n * scale,
                                 n_keys=n, series=series, batch_size=n,
                                 reference=series != "ringkit get_many",
                                 series_note="stops at 10 keys" if scale > 1e-7 else None))
    spread = {"series": "ringkit HashRing", "n_nodes": 10, "n_keys": 100_000,
              "vnodes": [10, 20], "max_over_mean": [1.5, 1.25]}
    benches.append(bench("bench_scaling.py", "spread", "ringkit HashRing", 1e-6,
                         load_spread=spread))
    return {"machine_info": {"ringkit_bench": {"cpu_model": "Test CPU", "logical_cpus": 2,
                                               "python": "3.13.0",
                                               "python_implementation": "CPython",
                                               "packages": {"ringkit": "0.1.0", "absent": None},
                                               "redis_server": "7.0.15"},
                             "system": "Linux", "release": "6.1"},
            "commit_info": {"id": "0123456789abcdef", "dirty": True},
            "datetime": "2026-01-01T00:00:00", "benchmarks": benches}


def test_targets(report: ModuleType) -> None:
    results = report.parse(small_run())
    # Capability by capability (hashing, ring, ..., locks), each in the order the suite ran.
    assert [g.name for g in results.groups] == [
        "hash: 1,000 keys", "batch 1", "batch 10", "batch 100", "lock"]
    assert [s.series for s in results.spreads] == ["ringkit HashRing"]  # not a timing row
    text = report.render_targets(results)
    assert text.startswith("2 of 3 targets met.\n")
    # Met, missed, and in the row's own unit ("ops/s" for per="op").
    assert "| hash: 1,000 keys | ringkit hash | ≤ 20 ns/key | 10 ns/key | yes |" in text
    assert "| ≥ 20x vs loop | 10x | **no** |" in text
    assert "| lock | ringkit Lock | ≥ 1000 ops/s | 5000 ops/s | yes |" in text
    big = report.check_target(results.groups[0], results.groups[0].rows[0],
                              {"metric": "keys_per_s", "op": ">=", "value": 4e7, "vs": None})
    assert (big.wanted, big.measured, big.met) == ("≥ 40,000,000 keys/s", "100,000,000 keys/s",
                                                   True)
    missing = report.check_target(results.groups[0], results.groups[0].rows[0],
                                  {"metric": "speedup", "op": ">=", "value": 2, "vs": "absent"})
    assert (missing.measured, missing.met) == ("—", None)
    assert report.render_targets(report.parse({"benchmarks": []})) == "No targets in this run."


def test_readme_rendering_is_compact(report: ModuleType) -> None:
    section = report.render_readme(report.parse(small_run()))
    assert section.startswith("## Benchmarks\n") and section.endswith("\n")
    assert section.index("### Hashing") < section.index("### Ring") < section.index("### Locks")
    # One line per timing group (its targeted ringkit row); batch groups only as the pivot table.
    assert ("| hash: 1,000 keys | ringkit hash | 10 µs | 10 ns | 100 M keys/s | 10x loop |"
            in section)
    assert "| batch 1 |" not in section
    # keys/s against batch size: one line per library, "—" where a size was not measured.
    assert "| keys/s at batch size | 1 | 10 | 100 |" in section
    assert "| ringkit get_many | 9.09 M | 50 M | 90.9 M |" in section
    assert "| peer loop | 909 k | 990 k | — |" in section
    assert "peer loop: stops at 10 keys." in section
    assert "| ringkit HashRing | 1.500 | 1.250 |" in section
    assert "![keys/s against batch size](bench/plots/ring-scaling.png)" in section
    assert "![load spread against vnodes](bench/plots/ring-load-spread.png)" in section
    assert "2 of 3 targets met" in section
    assert "| ≥ 20x vs loop | 10x | **no** |" in section
    assert "| ≤ 20 ns/key | 10 ns/key | yes |" not in section  # only what was missed
    assert "- packages: ringkit 0.1.0\n" in section
    assert "- redis-server: 7.0.15" in section
    assert "- commit: 0123456789ab (dirty tree)" in section


def test_write_readme_replaces_only_the_section(report: ModuleType, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\ntext\n", encoding="utf-8")
    report.write_readme(readme, "## Benchmarks\n\none\n")
    assert readme.read_text(encoding="utf-8") == (
        "# x\n\ntext\n\n<!-- bench:start -->\n## Benchmarks\n\none\n<!-- bench:end -->\n")
    readme.write_text(readme.read_text(encoding="utf-8") + "\nafter\n", encoding="utf-8")
    report.write_readme(readme, "## Benchmarks\n\ntwo\n")
    text = readme.read_text(encoding="utf-8")
    assert text == ("# x\n\ntext\n\n<!-- bench:start -->\n## Benchmarks\n\ntwo\n"
                    "<!-- bench:end -->\n\nafter\n")
    assert report.readme_section(text) == "## Benchmarks\n\ntwo\n"


def test_main_prints_the_targets(report: ModuleType, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run.json"
    run.write_text(json.dumps(small_run()), encoding="utf-8")
    assert report.main([str(run)]) == 0
    out = capsys.readouterr().out
    assert out == report.render_targets(report.parse(small_run())) + "\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]  # writes nothing
    assert report.main([str(tmp_path / "absent.json")]) == 1
    slim = json.loads(report.slim_json(run))
    assert all("data" not in b["stats"] for b in slim["benchmarks"])
    assert report.render_readme(report.parse(slim)) == report.render_readme(
        report.parse(small_run()))
