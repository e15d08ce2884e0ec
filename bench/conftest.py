"""pytest-benchmark setup shared by the bench_*.py files.

The repository's pytest configuration (pyproject.toml) collects only ``tests/``; this conftest makes
``python -m pytest bench`` collect ``bench_*.py`` as well, so the suite runs with the project's own
pytest options and nothing else to remember. Each benchmark records, in ``benchmark.extra_info``,
what ``bench/report.py`` needs for README's section and the targets: a display label, the work done
(keys, bytes), the per-key and throughput figures of the median round, whether the row is a
reference that the other rows of its group are compared with, and the issue's targets for the row.

The benches that need ``redis-server`` processes get them from the ``redis_servers`` fixture, which
starts and stops them with tests/redis_procs.py, the helper the tests use (and the slow-server
bench its proxy from tests/netproxy.py, through the ``proxy`` fixture).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

# Versions recorded in the JSON beside the figures, so a table always says what it measured.
# Every peer a bench file compares with is here, so the README names the version it beat (or not).
PACKAGES = ("ringkit", "numpy", "pyarrow", "xxhash", "mmh3", "uhashring", "fastring", "hashring",
            "jump-consistent-hash", "pymemcache", "roundrobin", "redis", "hiredis",
            "python-redis-lock", "pottery", "matplotlib", "pytest-benchmark", "Cython")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    # A file named on the command line is collected by pytest itself, whatever its name.
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name":
            return value.strip()
    return "unknown"


def _redis_server_version() -> str | None:
    """The version of the redis-server binary the lock and replication benches start."""
    try:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True,
                             check=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"\bv=(\S+)", out)
    return found.group(1) if found else None


def package_versions(names: Iterable[str]) -> dict[str, str | None]:
    """The installed version of each distribution (None: not installed)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def pytest_benchmark_update_machine_info(
    config: pytest.Config, machine_info: dict[str, Any]
) -> None:
    machine_info["ringkit_bench"] = {
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "packages": package_versions(PACKAGES),
        "redis_server": _redis_server_version(),
    }


# --------------------------------------------------------------------------------------------------
# Key sets. Built once per session: building 1,000,000 str keys costs more than hashing them.

N_SHORT = 1_000_000
N_LONG = 100_000
LONG_KEY_SIZE = 1024


@pytest.fixture(scope="session")
def short_str_keys() -> list[str]:
    """1,000,000 short ASCII str keys, as a user's cache or shard keys look: "user:0" ... ."""
    return [f"user:{i}" for i in range(N_SHORT)]


@pytest.fixture(scope="session")
def short_str_arrow(short_str_keys: list[str]) -> Any:
    """The same keys as a pyarrow string array (one data buffer, int32 offsets)."""
    pa = pytest.importorskip("pyarrow")
    return pa.array(short_str_keys, type=pa.string())


@pytest.fixture(scope="session")
def uint64_keys() -> np.ndarray:
    """1,000,000 random uint64 ids in a numpy array."""
    rng = np.random.default_rng(20240601)
    return rng.integers(0, 2**64 - 1, size=N_SHORT, dtype=np.uint64, endpoint=True)


@pytest.fixture(scope="session")
def kib_keys() -> list[bytes]:
    """100,000 random keys of 1 KiB each (bytes), about 100 MB in all."""
    rng = np.random.default_rng(20240602)
    blob = rng.integers(0, 256, size=N_LONG * LONG_KEY_SIZE, dtype=np.uint8).tobytes()
    return [blob[i : i + LONG_KEY_SIZE] for i in range(0, len(blob), LONG_KEY_SIZE)]


@pytest.fixture(scope="session")
def kib_arrow(kib_keys: list[bytes]) -> Any:
    """The 1 KiB keys as a pyarrow binary array."""
    pa = pytest.importorskip("pyarrow")
    return pa.array(kib_keys, type=pa.binary())


# --------------------------------------------------------------------------------------------------
# Recording


METRICS = ("ns_per_key", "keys_per_s", "gb_per_s", "speedup", "seconds")


def _target(spec: Sequence[Any]) -> dict[str, Any]:
    """(metric, op, value[, vs]): a figure the issue asks for, checked by the report, never asserted
    here (speed is reported, not tested). For "speedup", `vs` names the reference row's label and
    the figure is that row's median over this row's median.
    """
    metric, op, value, *rest = spec
    if metric not in METRICS or op not in ("<=", ">=") or len(rest) > 1:
        raise ValueError(f"bad target {spec!r}: want (metric, '<=' or '>=', value[, vs])")
    if (metric == "speedup") != bool(rest):
        raise ValueError(f"bad target {spec!r}: a speedup names the row it is measured against")
    return {"metric": metric, "op": op, "value": value, "vs": rest[0] if rest else None}


Measure = Callable[..., Any]


@pytest.fixture
def measure(benchmark: Any) -> Measure:
    """Run one benchmark and record its figures; returns what the measured call returned.

        measure(fn, *args, label="ringkit hash64_many", n_keys=1_000_000, n_bytes=None,
                reference=False, targets=[("ns_per_key", "<=", 10)])

    n_keys is the number of items one call processes (keys, or builds, or operations: `per` names
    the item for the report, "key" by default; the figures keep their *_per_key names).

    By default pytest-benchmark calibrates (``benchmark(fn, ...)``). With ``pedantic={"rounds":
    25, "iterations": 200, "warmup_rounds": 1}`` (and any other argument of
    ``benchmark.pedantic``: setup, teardown) it runs that many rounds of that many calls instead:
    for calls to servers, where a row should do a set amount of work (calibrating would time one
    noisy round trip to choose it) and may need untimed work around each round. Either way the
    figures are pytest-benchmark's own statistics, per call (a round's time over its
    iterations). ``versions=("redis", ...)`` also records those packages' versions in the row.
    """

    def run(
        fn: Callable[..., Any],
        *args: Any,
        label: str,
        n_keys: int,
        n_bytes: int | None = None,
        reference: bool = False,
        targets: Iterable[Sequence[Any]] = (),
        per: str = "key",
        pedantic: Mapping[str, Any] | None = None,
        versions: Iterable[str] = (),
        **kwargs: Any,
    ) -> Any:
        if args and hasattr(args[0], "__len__") and len(args[0]) != n_keys:
            raise ValueError(f"n_keys={n_keys} but the keys hold {len(args[0])}")
        info = benchmark.extra_info
        info.update(label=label, n_keys=n_keys, n_bytes=n_bytes, reference=reference,
                    targets=[_target(t) for t in targets], per=per)
        if versions:
            info["versions"] = package_versions(versions)
        if pedantic is None:
            result = benchmark(fn, *args, **kwargs)
        else:
            result = benchmark.pedantic(fn, args=args, kwargs=kwargs, **pedantic)
        stats = getattr(benchmark, "stats", None)
        if stats is not None:  # absent under --benchmark-disable
            median = stats.stats.median
            info["median_s"] = median
            info["ns_per_key"] = median / n_keys * 1e9
            info["keys_per_s"] = n_keys / median
            if n_bytes is not None:
                info["gb_per_s"] = n_bytes / median / 1e9
        return result

    return run


# --------------------------------------------------------------------------------------------------
# redis-server processes and the loopback proxy: tests/redis_procs.py and tests/netproxy.py, the
# helpers the tests use. tests/ is not a package, so they are loaded by path, as tests/conftest.py
# loads them, and registered under the same module names: a session that collects both folders
# loads each once.


def load_test_helper(name: str) -> ModuleType:
    """tests/<name>.py, loaded by path once and registered as module `name`."""
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parent.parent / "tests" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


redis_procs = load_test_helper("redis_procs")


@pytest.fixture(scope="session")
def redis_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[int], list[Any]]]:
    """start(n): n empty redis-server processes on free loopback ports, as redis_procs.RedisProc
    handles (``.port``, ``.url``, ``.pid``, ``.pause()``, ``.resume()``, ...); every one is
    stopped (by pid) when the session ends."""
    pytest.importorskip("redis")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    started: list[Any] = []

    def start(n: int) -> list[Any]:
        servers = redis_procs.start_servers(n, tmp_path_factory.mktemp("redis"))
        started.extend(servers)
        return servers

    yield start
    redis_procs.stop_all(started)


@pytest.fixture(scope="module")
def proxy() -> Iterator[Any]:
    """A netproxy.Proxy (one proxy process, any number of links), closed at the end of the
    module."""
    netproxy = load_test_helper("netproxy")
    with netproxy.Proxy() as p:
        yield p
