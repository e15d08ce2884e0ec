"""README.md's Python examples run as shown.

Every ```python block runs, in order, in one namespace per block, except a block right after an
HTML comment that says it is not run (it needs servers at example addresses). The shell
commands are checked by the CI run itself (.ci/run runs the test command) and by test_cli.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"(<!--[^>]*-->\s*)?```python\n(.*?)```", re.S)


def _blocks() -> list[tuple[int, str, bool]]:
    text = README.read_text(encoding="utf-8")
    found = []
    for match in BLOCK.finditer(text):
        line = text.count("\n", 0, match.start(2)) + 1
        comment = match.group(1) or ""
        found.append((line, match.group(2), "not run" in comment))
    return found


def test_readme_has_examples() -> None:
    runnable = [b for b in _blocks() if not b[2]]
    assert len(runnable) >= 5, "README.md lost its runnable examples"
    # Blocks left out must say why, and stay few.
    assert len(_blocks()) - len(runnable) <= 2


@pytest.mark.parametrize(
    "line, code", [(line, code) for line, code, skipped in _blocks() if not skipped],
    ids=lambda value: f"line{value}" if isinstance(value, int) else "")
def test_readme_example_runs(line: int, code: str) -> None:
    namespace: dict[str, object] = {"__name__": f"readme_line_{line}"}
    exec(compile(code, f"README.md:{line}", "exec"), namespace)  # noqa: S102 - our own docs
