"""The ``ringkit`` command and ``python -m ringkit``, run as a user runs them: in a subprocess."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ringkit


def _subprocess_env() -> dict[str, str]:
    """This environment, with PYTHONPATH made absolute (the children run in another directory),
    so a child imports the same ringkit as this process."""
    env = dict(os.environ)
    if env.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.pathsep.join(
            os.path.abspath(entry) for entry in env["PYTHONPATH"].split(os.pathsep) if entry
        )
    env.pop("PYTHONSTARTUP", None)
    return env


def _installed_script() -> str | None:
    """The ``ringkit`` console script beside this interpreter, if there is one."""
    return shutil.which("ringkit", path=os.path.dirname(sys.executable))


def _recorded_script() -> Path | None:
    """The console script that the installed ringkit distribution recorded (in its RECORD), if
    the imported ringkit is that installed distribution. None when ringkit is built in place and
    imported from src/ (an in-tree egg-info records no files, and no script)."""
    try:
        dist = importlib.metadata.distribution("ringkit")
    except importlib.metadata.PackageNotFoundError:
        return None
    if dist.read_text("RECORD") is None:
        return None
    package = Path(str(dist.locate_file("ringkit/__init__.py"))).resolve()
    if package != Path(ringkit.__file__).resolve():
        return None
    for file in dist.files or ():
        if file.stem == "ringkit" and file.parent.name in ("bin", "Scripts"):
            return Path(str(dist.locate_file(file))).resolve()
    return None


def _commands() -> list[list[str]]:
    commands = [[sys.executable, "-m", "ringkit"]]
    script = _installed_script()
    if script is not None:
        commands.append([script])
    return commands


COMMANDS = _commands()
COMMAND_IDS = ["python-m-ringkit" if len(c) == 3 else "ringkit-script" for c in COMMANDS]


def _run(command: list[str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command, *args],
        cwd=cwd,
        env=_subprocess_env(),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
    )


def test_console_script_is_installed_with_the_package() -> None:
    # Built in place (imported from src/) there is no console script, and only `python -m
    # ringkit` is checked; installed (as in the nox session and CI) the script must be there, and
    # it is the one the tests run.
    recorded = _recorded_script()
    if recorded is not None:
        assert recorded.exists(), recorded
        script = _installed_script()
        assert script is not None, f"no `ringkit` script beside {sys.executable}"
        assert Path(script).resolve() == recorded
        assert [script] in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=COMMAND_IDS)
def test_demo_runs_and_shows_hashing(command: list[str], tmp_path: Path) -> None:
    result = _run(command, "demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "hash" in result.stdout.lower()
    for algorithm in ringkit.ALGORITHMS:
        assert algorithm in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", COMMANDS, ids=COMMAND_IDS)
def test_help_exits_0(command: list[str], tmp_path: Path) -> None:
    result = _run(command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()
    assert "demo" in result.stdout


@pytest.mark.parametrize("command", COMMANDS, ids=COMMAND_IDS)
def test_demo_help_exits_0(command: list[str], tmp_path: Path) -> None:
    result = _run(command, "demo", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()


@pytest.mark.parametrize("command", COMMANDS, ids=COMMAND_IDS)
def test_version(command: list[str], tmp_path: Path) -> None:
    result = _run(command, "--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert ringkit.__version__ in result.stdout


@pytest.mark.parametrize("command", COMMANDS, ids=COMMAND_IDS)
@pytest.mark.parametrize(
    "args",
    [["no-such-command"], [], ["demo", "--no-such-flag"]],
    ids=["unknown-subcommand", "no-subcommand", "unknown-flag"],
)
def test_usage_errors_exit_2(command: list[str], args: list[str], tmp_path: Path) -> None:
    result = _run(command, *args, cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "usage" in result.stderr.lower()
    assert "Traceback" not in result.stderr
