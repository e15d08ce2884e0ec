"""The exception hierarchy of ringkit.

Every exception ringkit raises on purpose derives from :class:`RingkitError`, and also from the
builtin that code already catches for that kind of failure (``LookupError``, ``KeyError``), so
``except KeyError`` keeps working around a ring lookup. Bad arguments raise plain ``TypeError`` or
``ValueError`` naming the argument.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

__all__ = [
    "RingkitError",
    "EmptyRingError",
    "UnknownNodeError",
    "ColumnNotFoundError",
    "NoAvailableNodeError",
    "QuorumError",
    "LockError",
    "LockNotOwnedError",
    "LockLostError",
    "LockQuorumError",
    "PartialWriteError",
    "WriteOutcome",
]


class RingkitError(Exception):
    """Root of every error ringkit raises on purpose."""


class EmptyRingError(RingkitError, LookupError):
    """A lookup on a ring (or balancer) that has no nodes."""


class UnknownNodeError(RingkitError, KeyError):
    """A node name that is not part of the ring or balancer."""

    def __init__(self, node: object, message: str | None = None) -> None:
        self.node = node
        super().__init__(message or f"unknown node {node!r}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class ColumnNotFoundError(RingkitError, KeyError, ValueError):
    """A column that the data frame given to :mod:`ringkit.frame` or :mod:`ringkit.dask` does not
    have. Both a ``KeyError`` (what pandas raises for a missing column) and a ``ValueError`` (bad
    input)."""

    def __init__(self, column: object, message: str) -> None:
        self.column = column
        super().__init__(message)

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class NoAvailableNodeError(RingkitError):
    """Every node is ejected or marked down, and the caller asked not to panic."""


class QuorumError(RingkitError):
    """Fewer nodes than the quorum answered.

    ``failed`` maps each node that failed to the exception (or reason) it failed with.
    ``outcome`` tells what became of a write: ``"failed"`` (nothing was written anywhere),
    ``"unknown"`` (some replica may have stored it: a write that did not reach its quorum may
    still become the visible value later, or be overwritten), or None for a read.
    """

    def __init__(self, message: str, *, failed: dict[str, object] | None = None,
                 outcome: Literal["failed", "unknown"] | None = None) -> None:
        self.failed = dict(failed or {})
        self.outcome = outcome
        super().__init__(message)


class WriteOutcome(NamedTuple):
    """What became of one key of a batch write: ``status`` is ``"acknowledged"`` (with its
    ``version``), ``"failed"`` (nothing was written) or ``"unknown"`` (some replica may have
    stored it; it may become visible later, or be overwritten)."""

    status: Literal["acknowledged", "failed", "unknown"]
    version: Any = None


class PartialWriteError(QuorumError):
    """A batch write (``put_many``) in which some keys did not reach their quorum.

    ``outcomes`` maps every key of the batch to its :class:`WriteOutcome`; ``acknowledged``,
    ``failed_keys`` and ``unknown_keys`` sort them.
    """

    def __init__(self, message: str, *, outcomes: dict[str, WriteOutcome],
                 failed: dict[str, object] | None = None) -> None:
        self.outcomes = dict(outcomes)
        unknown = any(o.status == "unknown" for o in outcomes.values())
        super().__init__(message, failed=failed, outcome="unknown" if unknown else "failed")

    @property
    def acknowledged(self) -> dict[str, Any]:
        """Keys that were stored by a write quorum, with their versions."""
        return {k: o.version for k, o in self.outcomes.items() if o.status == "acknowledged"}

    @property
    def failed_keys(self) -> list[str]:
        """Keys that were written nowhere."""
        return [k for k, o in self.outcomes.items() if o.status == "failed"]

    @property
    def unknown_keys(self) -> list[str]:
        """Keys that some replica may have stored."""
        return [k for k, o in self.outcomes.items() if o.status == "unknown"]


class LockError(RingkitError):
    """Any failure of a lock; ``lock_name`` names the lock."""

    def __init__(self, message: str, *, lock_name: str | None = None) -> None:
        self.lock_name = lock_name
        super().__init__(message)


class LockNotOwnedError(LockError):
    """Release or extend of a lock that this holder does not own."""


class LockLostError(LockError):
    """The lease ran out or was taken over while the holder thought it held the lock."""


class LockQuorumError(LockError, QuorumError):
    """A lock could not reach a majority of its servers: both a LockError and a QuorumError."""

    def __init__(
        self,
        message: str,
        *,
        lock_name: str | None = None,
        failed: dict[str, object] | None = None,
    ) -> None:
        self.lock_name = lock_name
        self.failed = dict(failed or {})
        RingkitError.__init__(self, message)
