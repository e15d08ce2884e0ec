"""The exception hierarchy of ringkit.

Every exception ringkit raises on purpose derives from :class:`RingkitError`, and also from the
builtin that code already catches for that kind of failure (``LookupError``, ``KeyError``), so
``except KeyError`` keeps working around a ring lookup. Bad arguments raise plain ``TypeError`` or
``ValueError`` naming the argument.
"""

from __future__ import annotations

__all__ = [
    "RingkitError",
    "EmptyRingError",
    "UnknownNodeError",
    "NoAvailableNodeError",
    "QuorumError",
    "LockError",
    "LockNotOwnedError",
    "LockLostError",
    "LockQuorumError",
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


class NoAvailableNodeError(RingkitError):
    """Every node is ejected or marked down, and the caller asked not to panic."""


class QuorumError(RingkitError):
    """Fewer nodes than the quorum answered.

    ``failed`` maps each node that failed to the exception (or reason) it failed with.
    """

    def __init__(self, message: str, *, failed: dict[str, object] | None = None) -> None:
        self.failed = dict(failed or {})
        super().__init__(message)


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
