"""Versions, records and the node interface that the replicated store drives."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

__all__ = ["Version", "Record", "Node", "NodeDown", "Pending", "Done", "MARKER_READY",
           "MARKER_RECOVERING"]

# Epoch marker states kept on every node (see ReplicatedStore: a node that lost its data does
# not count towards any quorum until repair() has refilled it).
MARKER_READY = "ready"
MARKER_RECOVERING = "recovering"


class Version(NamedTuple):
    """A value's version: totally ordered by (counter, writer). Two writers that raced to the
    same counter are ordered by writer id, so replicas never keep different values at an
    equal version."""

    counter: int
    writer: str

    def __str__(self) -> str:
        return f"{self.counter}:{self.writer}"


class Record(NamedTuple):
    """One stored item: its value (None for a tombstone), version, and deletion time in
    milliseconds since the epoch for tombstones (0 otherwise)."""

    key: str
    value: bytes | None
    version: Version
    deleted_ms: int = 0

    @property
    def tombstone(self) -> bool:
        return self.value is None


class NodeDown(ConnectionError):
    """A node did not answer (refused, timed out, or was taken down by fault injection)."""


class Pending(Protocol):
    """A call that was sent and may still be running: ``result()`` waits for its answer
    (the node's marker and the call's reply) or raises what it failed with."""

    def result(self) -> tuple[str | None, Any]: ...


class Done:
    """A Pending that finished at once (in-process nodes)."""

    __slots__ = ("_value", "_error")

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self._value = value
        self._error = error

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value


@runtime_checkable
class Node(Protocol):
    """A storage node. Every call is one round trip; it raises an exception (NodeDown or the
    client's own) when the node does not answer. Writes apply a record only when its version
    is newer than the stored one, so retries are idempotent.

    ``marker`` is returned by every read and write: the node's epoch marker, None when the
    node has no marker (a new node, or one that came back empty).
    """

    name: str

    def submit(self, op: str, *args: Any) -> Pending:
        """Start ``op`` ("read", "write" or "write_if", with that method's arguments) without
        waiting for it, so that the store can ask several nodes at once."""

    def read(self, keys: Sequence[str]) -> tuple[str | None, list[Record | None]]: ...

    def write(self, records: Sequence[Record]) -> tuple[str | None, list[bool]]:
        """Apply each record whose version is newer than the stored one; for each record,
        whether it was applied (False: the node already had that version or a newer one)."""

    def write_if(self, pairs: Sequence[tuple[Record, Version | None]]
                 ) -> tuple[str | None, list[bool]]:
        """Apply each record only if the stored version is exactly its `expected` (None:
        absent); for each, whether it was applied."""

    def remove(self, records: Sequence[Record]) -> None:
        """Delete the given keys where they still hold exactly the given versions."""

    def scan(self, count: int) -> Iterator[list[str]]: ...

    def set_marker(self, value: str, *, only_if_missing: bool) -> bool: ...

    def get_marker(self) -> str | None: ...

    def add_hints(self, target: str, records: Sequence[Record]) -> None: ...

    def hints(self, target: str) -> list[Record]: ...

    def drop_hints(self, target: str, records: Sequence[Record]) -> None: ...
