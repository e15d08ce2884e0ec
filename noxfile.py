"""Test sessions. Each builds ringkit into a fresh virtual environment, so a package installed by
hand elsewhere cannot hide a missing dependency, and runs the suite against the installed package.

    python3 -m nox -s tests          # the interpreter nox runs on (what CI runs)
    python3 -m nox -s matrix         # CPython 3.10, 3.11, 3.12 and 3.13, where installed
    python3 -m nox -s libmemcached   # the libmemcached compat proofs, pylibmc built from source
    python3 -m nox -s bench          # the benchmark suite and its report (Python 3.13 for fastring)
    python3 -m nox -s ubsan          # kernel tests under the UB and address sanitizers (Linux)
    RINGKIT_BENCH_README=1 python3 -m nox -s bench   # ... and README.md's benchmark section
"""

import glob
import os
import shutil
import subprocess
import sys

import nox

# pyenv's shims answer only for the selected version: put every installed CPython's own bin
# directory on PATH so that the matrix and bench sessions find python3.10 ... python3.13.
_PYENV_BINS = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin")))
if _PYENV_BINS:
    os.environ["PATH"] = os.pathsep.join([*_PYENV_BINS, os.environ.get("PATH", "")])

nox.options.default_venv_backend = "venv"
nox.options.error_on_missing_interpreters = False
nox.options.sessions = ["tests"]

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]


def _run_tests(session: nox.Session) -> None:
    session.install("--upgrade", "pip")
    session.install(".[test]")
    if sys.platform.startswith("linux") and os.path.exists(LIBMEMCACHED_HEADER):
        # The test extra takes pylibmc only where a wheel exists (CPython 3.10 and 3.11 on
        # x86-64); with libmemcached-dev present, every other Linux Python builds it from source,
        # so the compat proofs run there too (a no-op where the wheel is installed).
        session.install("pylibmc>=1.6.3")
    # The suite imports ringkit from the virtual environment, never from src/.
    session.run("python", "-m", "pytest", *(session.posargs or ["-q"]),
                env={"PYTHONDONTWRITEBYTECODE": "1"})


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite on the interpreter that runs nox."""
    _run_tests(session)


@nox.session(python=PYTHONS)
def matrix(session: nox.Session) -> None:
    """The whole suite on each supported CPython that is installed."""
    _run_tests(session)


@nox.session
def libmemcached(session: nox.Session) -> None:
    """tests/test_compat_models.py's libmemcached proofs against pylibmc compiled from source on
    the system's libmemcached (needs libmemcached-dev; Debian 12: 1.1.4).

    The ``tests`` session gets pylibmc's binary wheel, which bundles libmemcached 1.0.16, so the
    model of the other version is proved here. RINGKIT_LIBMEMCACHED_VERSION (e.g. 1.1.4, as
    .ci/run sets it) makes the tests fail unless pylibmc is linked to that version.

    Only the test extra's requirements are installed, not ringkit: the compat tests import none
    of it, and its build would take longer than the tests.
    """
    session.install("--upgrade", "pip")
    test = nox.project.load_toml("pyproject.toml")["project"]["optional-dependencies"]["test"]
    # pylibmc whatever the Python and platform (the extra takes it only where a wheel exists)
    requirements = [r.split(";")[0].strip() if r.startswith("pylibmc") else r for r in test]
    session.install("--no-binary", "pylibmc", *requirements)
    session.run("python", "-c", "import pylibmc; print('pylibmc', pylibmc.__version__, "
                "'linked to libmemcached', pylibmc.libmemcached_version)")
    session.run("python", "-m", "pytest",
                *(session.posargs or ["-q", "-k", "libmemcached", "tests/test_compat_models.py"]),
                env={"PYTHONDONTWRITEBYTECODE": "1"})


@nox.session(python="3.13")
def bench(session: nox.Session) -> None:
    """The benchmark suite beside the peer libraries, then the markdown tables and plots.

    With RINGKIT_BENCH_README=1 in the environment, the report also rewrites README.md's benchmark
    section from this run (and bench/plots/*.png, bench/results/readme.json): see bench/README.md.
    """
    session.install("--upgrade", "pip")
    session.install(".[bench]")
    os.makedirs("bench/results", exist_ok=True)
    session.run("python", "-m", "pytest", "bench", "-p", "no:cacheprovider",
                "--benchmark-json=bench/results/latest.json", *session.posargs)
    report = ["python", "bench/report.py", "bench/results/latest.json", "--plot"]
    if os.environ.get("RINGKIT_BENCH_README", "") not in ("", "0"):
        report += ["--readme", "README.md"]
    session.run(*report)


LIBMEMCACHED_HEADER = "/usr/include/libmemcached-1.0/memcached.h"

# The kernels' own tests: hashing, the ring (and ketama), the balancer, and the checked arrays.
KERNEL_TESTS = [
    "tests/test_hashing.py",
    "tests/test_hashing_views.py",
    "tests/test_ring_blocks.py",
    "tests/test_ring.py",
    "tests/test_ring_threads.py",
    "tests/test_ring_state_machine.py",
    "tests/test_ketama.py",
    "tests/test_balancer.py",
    "tests/test_balancer_health.py",
    "tests/test_balancer_threads.py",
    "tests/test_kernel_memory.py",
    "tests/test_compat.py",
    "tests/test_replication_batches.py",
]


@nox.session(python="3.11")
def ubsan(session: nox.Session) -> None:
    """The kernels built with -fsanitize=undefined,address, and their tests (Linux, gcc or clang).

    Undefined behaviour (a misaligned or out-of-range access, an overflow, a bad shift) aborts the
    run (-fno-sanitize-recover=undefined), as does any out-of-bounds or use-after-free access
    (AddressSanitizer). Python itself is not instrumented: the ASan runtime is preloaded
    (LD_PRELOAD, found with ``$CC -print-file-name=libasan.so``) and leak detection is off, since
    the interpreter keeps memory to the end on purpose. The build is made from a clean copy of
    the sources, so no object or extension compiled without the sanitizers can be reused.
    """
    if not sys.platform.startswith("linux"):
        session.skip("the sanitizer build is set up for Linux")
    cc = os.environ.get("CC", "gcc")
    libasan = subprocess.run([cc, "-print-file-name=libasan.so"], capture_output=True,
                             text=True, check=False).stdout.strip()
    if not os.path.isabs(libasan) or not os.path.exists(libasan):
        session.error(f"{cc} has no AddressSanitizer runtime (libasan.so); install it "
                      f"(Debian/Ubuntu: the gcc package brings libasan)")
    source = os.path.join(session.create_tmp(), "ringkit-src")
    shutil.rmtree(source, ignore_errors=True)
    shutil.copytree(".", source, ignore=shutil.ignore_patterns(
        ".git", ".nox", "build", "dist", "*.egg-info", "__pycache__", "*.so", "*.c", "*.o",
        ".hypothesis", ".mypy_cache", ".ruff_cache", "bench"))
    session.install("--upgrade", "pip")
    # The build dependencies, for a build without isolation (it must see RINGKIT_SANITIZE).
    session.install("setuptools>=77", "Cython>=3.1,<4", "numpy>=2")
    session.install("--no-build-isolation", "--no-cache-dir", "-v", f"{source}[test]",
                    env={"RINGKIT_SANITIZE": "undefined,address", "CC": cc})
    sanitized = {
        "LD_PRELOAD": libasan,
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "HYPOTHESIS_PROFILE": os.environ.get("HYPOTHESIS_PROFILE", "ci"),
    }
    # The instrumented kernels are the ones imported (each links the sanitizer runtimes).
    session.run("python", "-c", _CHECK_SANITIZED, env=sanitized)
    session.run("python", "-m", "pytest", "-p", "no:cacheprovider", "-m", "not redis",
                *(session.posargs or ["-q", *KERNEL_TESTS]), env=sanitized)


_CHECK_SANITIZED = """
import sys
import ringkit._arrays, ringkit._hashing, ringkit._placement, ringkit._records, ringkit._ring
import ringkit._select
for module in (ringkit._arrays, ringkit._hashing, ringkit._placement, ringkit._records,
               ringkit._ring, ringkit._select):
    data = open(module.__file__, "rb").read()
    if b"__ubsan_handle" not in data or b"__asan_" not in data:
        sys.exit(f"{module.__file__} is not built with the sanitizers")
    print("sanitized:", module.__file__)
"""
