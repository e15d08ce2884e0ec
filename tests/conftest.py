"""Shared test configuration: hypothesis profiles and the Redis/signals gates.

RINGKIT_STRICT=1 (set by .ci/run and the Linux CI job) turns a missing ``redis-server`` into a
failure: the suite never passes by skipping what it could have run.
"""

from __future__ import annotations

import os
import shutil
import sys

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("dev", deadline=None, max_examples=100)
settings.register_profile(
    "ci", deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

STRICT = os.environ.get("RINGKIT_STRICT", "") not in ("", "0")


def _missing() -> dict[str, str]:
    missing: dict[str, str] = {}
    if shutil.which("redis-server") is None:
        missing["redis"] = "redis-server is not installed"
    if sys.platform == "win32":
        missing["signals"] = "POSIX signals are not available on Windows"
    return missing


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if STRICT:
        return  # pytest_runtest_setup turns what is missing into failures
    for item in items:
        for marker, reason in _missing().items():
            if marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=f"{reason} (RINGKIT_STRICT unset)"))


def pytest_runtest_setup(item: pytest.Item) -> None:
    if not STRICT:
        return
    for marker, reason in _missing().items():
        if marker in item.keywords:
            pytest.fail(f"RINGKIT_STRICT=1 but {reason}", pytrace=False)
