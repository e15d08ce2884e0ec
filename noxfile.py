"""Test sessions. Each builds ringkit into a fresh virtual environment, so a package installed by
hand elsewhere cannot hide a missing dependency, and runs the suite against the installed package.

    python3 -m nox -s tests          # the interpreter nox runs on (what CI runs)
    python3 -m nox -s matrix         # CPython 3.10, 3.11, 3.12 and 3.13, where installed
    python3 -m nox -s bench          # the benchmark suite and its report (Python 3.13 for fastring)
    RINGKIT_BENCH_README=1 python3 -m nox -s bench   # ... and README.md's benchmark section
"""

import glob
import os

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
