"""The .pyi stubs of the compiled modules agree with the modules (mypy.stubtest), run against the
ringkit this interpreter imports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

COMPILED_MODULES = ["ringkit._arrays", "ringkit._hashing", "ringkit._ring", "ringkit._select",
                    "ringkit._placement"]
# Cython adds pickling helpers (__reduce_cython__, ...) that no stub should declare.
ALLOWLIST = Path(__file__).with_name("stubtest-allowlist.txt")


def _subprocess_env() -> dict[str, str]:
    """This environment, with PYTHONPATH made absolute (the child runs in another directory), so
    the child imports the same ringkit as this process."""
    env = dict(os.environ)
    if env.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.pathsep.join(
            os.path.abspath(entry) for entry in env["PYTHONPATH"].split(os.pathsep) if entry
        )
    env.pop("MYPYPATH", None)
    return env


@pytest.mark.parametrize("module", COMPILED_MODULES)
def test_stubtest(module: str, tmp_path: Path) -> None:
    # In an empty directory: no project config, and the mypy cache lands in tmp_path.
    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", module, "--allowlist", str(ALLOWLIST),
         "--ignore-unused-allowlist"],
        cwd=tmp_path,
        env=_subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
