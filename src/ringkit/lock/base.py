"""What every lock backend provides, and the arithmetic they share."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ringkit.validation import check_name as _check_name

__all__ = ["Grant", "LockBackend", "AsyncLockBackend", "Waiter", "AsyncWaiter", "drift",
           "check_ttl", "check_name", "check_max_ttl", "TTL_LIMIT", "MIN_TTL"]

# Bounds on every lease, whatever the backend: below MIN_TTL the drift allowance alone (2 ms)
# eats the lease; above TTL_LIMIT (7 days) a lease is a configuration error, and a server that
# restarted empty would stay quiet for as long (see RedisBackend's max_ttl).
MIN_TTL = 0.005
TTL_LIMIT = 7 * 86400.0


@dataclass(frozen=True)
class Grant:
    """A granted lease: its fencing token and its validity at the time of the grant.

    ``validity`` is in seconds, measured from when the attempt started, on the client's
    monotonic clock, after the clock drift allowance (1% of the ttl + 2 ms) was taken off.
    """

    token: int
    validity: float


def drift(ttl: float) -> float:
    """Clock drift allowed between client and servers over one ttl: 1% of it plus 2 ms."""
    return ttl * 0.01 + 0.002


def check_name(name: object, argname: str = "name") -> str:
    """A lock name: a non-empty str that encodes to UTF-8 (no lone surrogates)."""
    return _check_name(name, argname)


def check_ttl(ttl: object, argname: str = "ttl", limit: float = TTL_LIMIT) -> float:
    """A lease length in seconds: finite, at least MIN_TTL, at most `limit`."""
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise TypeError(f"{argname} must be a number of seconds, got {type(ttl).__name__}")
    try:
        value = float(ttl)
    except OverflowError:
        value = math.inf
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{argname} must be a finite number of seconds > 0, got {ttl!r:.40}")
    if value < MIN_TTL:
        raise ValueError(f"{argname} must be at least {MIN_TTL} s (the drift allowance alone is "
                         f"2 ms), got {ttl!r}")
    if value > limit:
        raise ValueError(f"{argname} must be at most {limit:g} s (the backend's max_ttl; hold "
                         f"longer with auto_renew=True), got {value:g}")
    return value


def check_max_ttl(max_ttl: object) -> float:
    """A backend's maximum lease: MIN_TTL up to TTL_LIMIT seconds."""
    return check_ttl(max_ttl, "max_ttl")


class Waiter(Protocol):
    def wait(self, timeout: float) -> None:
        """Block until a release of the lock may have happened, or `timeout` seconds passed."""

    def close(self) -> None: ...


class AsyncWaiter(Protocol):
    async def wait(self, timeout: float) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class LockBackend(Protocol):
    """Where locks live. Names are lock names; ``holder`` is a random id per attempt.

    ``acquire`` returns a Grant, or None when another holder has the lock; it raises a
    LockQuorumError when too few servers answered. ``release``/``extend``/``owned`` return
    False (``extend``: None) when `holder` no longer holds the lock. A backend may have a
    ``max_ttl`` attribute: no lease (acquire or extend) may be longer.
    """

    def acquire(self, name: str, holder: str, ttl: float) -> Grant | None: ...

    def release(self, name: str, holder: str) -> bool: ...

    def extend(self, name: str, holder: str, ttl: float) -> float | None: ...

    def owned(self, name: str, holder: str) -> bool: ...

    def waiter(self, name: str) -> Waiter: ...


@runtime_checkable
class AsyncLockBackend(Protocol):
    async def acquire(self, name: str, holder: str, ttl: float) -> Grant | None: ...

    async def release(self, name: str, holder: str) -> bool: ...

    async def extend(self, name: str, holder: str, ttl: float) -> float | None: ...

    async def owned(self, name: str, holder: str) -> bool: ...

    async def waiter(self, name: str) -> AsyncWaiter: ...
