"""The record-level node methods (``read``, ``write``, ``write_if``, ``remove``), written once
over the blob-level operations every node implements (``read_raw``, ``write_raw``,
``write_if_raw``, ``purge_raw``; see ringkit.replication.codec). The store's batch paths call the
blob-level operations; these are for maintenance of a few items, tests and tools."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ringkit.replication import codec
from ringkit.replication.base import NodeState, Record, Version

__all__ = ["RecordMethods"]


class RecordMethods:
    """Mixin: Record-level methods over the node's blob-level operations."""

    def _raw(self, op: str, *args: Any) -> tuple[NodeState, Any]:
        return getattr(self, op)(*args)  # type: ignore[no-any-return]

    def read(self, keys: Sequence[str]) -> tuple[NodeState, list[Record | None]]:
        """Each key's record (None where absent)."""
        fields = [k.encode() for k in keys]
        state, blobs = self._raw("read_raw", fields, codec.buckets_of(fields))
        return state, [None if b is None else codec.decode(k, b) for k, b in zip(keys, blobs)]

    def write(self, records: Sequence[Record]) -> tuple[NodeState, list[bool]]:
        """Apply each record whose version is newer than the stored one; for each record,
        whether it was applied (False: the node already had that version or a newer one)."""
        fields = [r.key.encode() for r in records]
        return self._raw("write_raw", fields, codec.buckets_of(fields),
                         [codec.encode(r) for r in records])

    def write_if(self, pairs: Sequence[tuple[Record, Version | None]]
                 ) -> tuple[NodeState, list[bool]]:
        """Apply each record only if the stored version is exactly its `expected` (None:
        absent, and the record's counter above the node's floor)."""
        fields = [r.key.encode() for r, _ in pairs]
        expected = [b"" if e is None else codec.header(e.counter, e.writer, False)[:-1]
                    for _, e in pairs]
        return self._raw("write_if_raw", fields, codec.buckets_of(fields),
                         [codec.encode(r) for r, _ in pairs], expected)

    def remove(self, records: Sequence[Record]) -> None:
        """Purge the given keys where they still hold exactly the given versions, raising the
        node's floor to their counters in the same step."""
        fields = [r.key.encode() for r in records]
        heads = [codec.header(r.version.counter, r.version.writer, False)[:-1] for r in records]
        self.purge_raw(fields, codec.buckets_of(fields), heads)  # type: ignore[attr-defined]
