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


# -- Redis servers (lock and replication tests) ---------------------------------------------------
# tests/redis_procs.py and tests/netproxy.py are helper modules, not test files. Under
# --import-mode=importlib the tests folder is not on sys.path, so they are loaded here once, by
# path, and registered under their names: test files can then ``import redis_procs`` or
# ``import netproxy`` (conftest.py is always imported before them).


def _load_helper(name: str):  # type: ignore[no-untyped-def]
    """Load tests/<name>.py by path, once, and register it as module `name`."""
    import importlib.util

    if name in sys.modules:
        return sys.modules[name]
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


redis_procs = _load_helper("redis_procs")
netproxy = _load_helper("netproxy")
replication_checks = _load_helper("replication_checks")
# The slow models of other programs' placements (the oracles of ringkit.compat) and the
# memcached/nutcracker processes that prove them.
compat_models = _load_helper("compat_models")
memcached_procs = _load_helper("memcached_procs")


@pytest.fixture
def proxy():  # type: ignore[no-untyped-def]
    """A netproxy.Proxy (one proxy process, any number of links); closed, its pid gone, when
    the test ends."""
    with netproxy.Proxy() as p:
        yield p


@pytest.fixture
def redis_servers(tmp_path_factory):  # type: ignore[no-untyped-def]
    """Factory: ``redis_servers(n)`` starts n empty redis-server processes on free loopback ports
    and returns their :class:`redis_procs.RedisProc` handles; every one is killed (by pid) when
    the test ends, whatever state it was left in (paused, killed, restarted)."""
    started: list = []

    def start(n: int = 1) -> list:
        servers = redis_procs.start_servers(n, tmp_path_factory.mktemp("redis"))
        started.extend(servers)
        return servers

    yield start
    redis_procs.stop_all(started)


@pytest.fixture
def unused_port() -> int:
    """A loopback port that no server listens on (for unreachable-server tests)."""
    return redis_procs.free_port()


# -- virtual time (lock renewals without sleeping) ------------------------------------------------


class VirtualTime:
    """A clock and a sleeper for Lock(clock=..., sleeper=...) and MemoryBackend(clock=...).

    A sleeper runs ahead instantly while its wake-up time is within ``limit``, and parks once it
    is past it; :meth:`run_until` moves the limit and returns once every sleeper has parked
    again (or ``timeout`` real seconds passed: a renewal that ended parks no more). So a test
    drives a renewal thread through virtual seconds, deterministically, in no real time.
    """

    def __init__(self, start: float = 1000.0) -> None:
        import threading

        self.now = start
        self.limit = start
        self._epoch = 0
        self._parked: dict[int, int] = {}
        self._cond = threading.Condition()

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float, stop) -> bool:  # type: ignore[no-untyped-def]
        import threading

        me = threading.get_ident()
        with self._cond:
            target = self.now + seconds
            try:
                while not stop.is_set():
                    if target <= self.limit:
                        self.now = max(self.now, target)
                        return False
                    self._parked[me] = self._epoch
                    self._cond.notify_all()
                    self._cond.wait(0.005)
                return True
            finally:
                self._parked.pop(me, None)
                self._cond.notify_all()

    def run_until(self, moment: float, sleepers: int = 1, timeout: float = 5.0) -> None:
        import time as _time

        with self._cond:
            self._epoch += 1
            self.limit = moment
            self._cond.notify_all()
            deadline = _time.monotonic() + timeout
            while sum(1 for e in self._parked.values() if e == self._epoch) < sleepers:
                left = deadline - _time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(min(left, 0.005))
            if self.now < moment:
                self.now = moment

    def advance(self, seconds: float, sleepers: int = 1) -> None:
        self.run_until(self.limit + seconds, sleepers)


@pytest.fixture
def virtual_time() -> VirtualTime:
    """A :class:`VirtualTime` starting at t=1000."""
    return VirtualTime()
