"""What every lock backend provides, and the arithmetic they share."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["Grant", "LockBackend", "AsyncLockBackend", "Waiter", "AsyncWaiter", "drift",
           "check_ttl", "check_name"]


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


def check_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if not name:
        raise ValueError("name must be a non-empty str")
    return name


def check_ttl(ttl: object, argname: str = "ttl") -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise TypeError(f"{argname} must be a number of seconds, got {type(ttl).__name__}")
    value = float(ttl)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{argname} must be a finite number of seconds > 0, got {ttl!r}")
    if value < 0.005:
        raise ValueError(f"{argname} must be at least 0.005 s (the drift allowance alone is "
                         f"2 ms), got {ttl!r}")
    return value


class Waiter(Protocol):
    def wait(self, timeout: float) -> None:
        """Block until a release of the lock may have happened, or `timeout` seconds passed."""

    def close(self) -> None: ...


class AsyncWaiter(Protocol):
    async def wait(self, timeout: float) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class LockBackend(Protocol):
    """Where locks live. Names are lock names; ``holder`` is a random id per acquisition.

    ``acquire`` returns a Grant, or None when another holder has the lock; it raises a
    LockQuorumError when too few servers answered. ``release``/``extend``/``owned`` return
    False (``extend``: None) when `holder` no longer holds the lock.
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
