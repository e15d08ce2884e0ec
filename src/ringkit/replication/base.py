"""Versions, records and the node interface that the replicated store drives."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

__all__ = ["Version", "Record", "Node", "NodeDown", "NodeState", "Pending", "Done",
           "MARKER_READY", "MARKER_RECOVERING", "MAX_COUNTER"]

# Epoch marker states kept on every node, as "<state>:<store id>:<epoch>" (see ReplicatedStore:
# a node counts towards quorums only when its marker says it is ready and belongs to the store;
# a node that lost its data does not count until repair() has refilled it).
MARKER_READY = "ready"
MARKER_RECOVERING = "recovering"

# Version counters stay below 2**53: Redis Lua compares numbers as doubles.
MAX_COUNTER = 2**53 - 1


class NodeState(NamedTuple):
    """What a node reports with every reply: its epoch marker (None when it has none: new, or
    back without its data) and its version floor, the largest counter of any tombstone it
    purged (new versions of a key it no longer holds must be above it)."""

    marker: str | None
    floor: int = 0


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
    """A call that may still be running: ``result()`` waits for its answer (the node's state
    and the call's reply) or raises what it failed with. A pending call of a node on the
    network may also have a ``call`` attribute (a :class:`ringkit._redisio.Call`), which lets
    the store wait on several nodes at once and end the round when its outcome is decided."""

    def result(self) -> tuple[NodeState, Any]: ...


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

    A :class:`NodeState` is returned by every read and write: the node's epoch marker (None
    when the node has none: a new node, or one that came back empty) and its version floor.
    """

    name: str

    def submit(self, op: str, *args: Any) -> Pending:
        """Prepare ``op`` ("read", "write" or "write_if", with that method's arguments) so that
        the store can ask several nodes at once."""

    def read(self, keys: Sequence[str]) -> tuple[NodeState, list[Record | None]]: ...

    def write(self, records: Sequence[Record]) -> tuple[NodeState, list[bool]]:
        """Apply each record whose version is newer than the stored one; for each record,
        whether it was applied (False: the node already had that version or a newer one)."""

    def write_if(self, pairs: Sequence[tuple[Record, Version | None]]
                 ) -> tuple[NodeState, list[bool]]:
        """Apply each record only if the stored version is exactly its `expected` (None:
        absent, and the record's counter above the node's floor); for each, whether it was
        applied."""

    def remove(self, records: Sequence[Record]) -> None:
        """Purge the given keys where they still hold exactly the given versions, raising the
        node's floor to their counters in the same step."""

    # The blob-level operations (ringkit.replication.codec) the store's batches, and repair,
    # use; `ix` picks the positions of the batch this node gets (None: all).

    def read_raw(self, fields: list[bytes], buckets: Any, ix: Any = None
                 ) -> tuple[NodeState, list[bytes | None]]: ...

    def write_raw(self, fields: list[bytes], buckets: Any, blobs: list[bytes], ix: Any = None
                  ) -> tuple[NodeState, list[bool]]: ...

    def write_if_raw(self, fields: list[bytes], buckets: Any, blobs: list[bytes],
                     expected: list[bytes], ix: Any = None) -> tuple[NodeState, list[bool]]: ...

    def purge_raw(self, fields: list[bytes], buckets: Any, heads: list[bytes]) -> None: ...

    def digests(self, buckets: Sequence[int]) -> tuple[NodeState, list[tuple[int, int, int]]]:
        """Per bucket: (XOR of its items' hashes, items, tombstones)."""

    def versions(self, buckets: Sequence[int]
                 ) -> tuple[NodeState, list[tuple[int, list[bytes], list[bytes]]]]:
        """The items of each bucket that holds any: (bucket, keys, blob heads)."""

    def raise_floor(self, floor: int) -> None:
        """Raise the node's version floor to at least `floor`."""

    def scan(self, count: int) -> Iterator[list[str]]: ...

    def set_marker(self, value: str, *, only_if_missing: bool) -> bool: ...

    def get_marker(self) -> str | None: ...

    def add_hints(self, target: str, records: Sequence[Record]) -> None: ...

    def hints(self, target: str) -> list[Record]: ...

    def drop_hints(self, target: str, records: Sequence[Record]) -> None: ...
