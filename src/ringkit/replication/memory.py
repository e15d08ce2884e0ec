"""MemoryNode: the embedded storage node, with fault injection for tests and demos."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from ringkit._records import dict_read, dict_write, dict_write_if
from ringkit.replication import codec
from ringkit.replication.base import Done, NodeDown, NodeState, Record
from ringkit.replication.nodeapi import RecordMethods

__all__ = ["MemoryNode"]


class MemoryNode(RecordMethods):
    """A storage node in this process's memory. Thread safe.

    Items are kept as the blobs of ringkit.replication.codec (layout 2), the same bytes a
    RedisNode stores, so the store's batch path is the same for both.

    Fault injection: :meth:`kill` makes every call raise :class:`NodeDown` until
    :meth:`revive`; ``revive(empty=True)`` brings it back without its data (and without its
    epoch marker and floor), as a server restarted without persistence would come back.

    A MemoryNode is new by construction (:meth:`is_new`): a store counts it at once, where a
    Redis node without a marker needs ``ReplicatedStore.initialize()`` or a ``repair()``.
    """

    # The store calls an in-process node's methods directly instead of through submit().
    in_process = True

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"memory-{secrets.token_hex(3)}"
        self._lock = threading.Lock()
        self._items: dict[bytes, bytes] = {}     # key (UTF-8) -> blob
        self._changes = 0         # counts writes, for the cache of items by bucket (repair)
        self._groups: tuple[int, dict[int, list[tuple[bytes, bytes]]]] | None = None
        self._hints: dict[str, dict[str, Record]] = {}
        self._marker: str | None = None
        self._floor = 0
        self._last_state = NodeState(None, 0)     # replies share it until marker or floor change
        self._members: set[str] = set()
        self._down = False
        self._new = True      # never revived empty: nothing it ever acknowledged was lost

    # -- fault injection --------------------------------------------------------------------------

    def kill(self) -> None:
        """Stop answering (every call raises NodeDown)."""
        with self._lock:
            self._down = True

    def revive(self, *, empty: bool = False) -> None:
        """Answer again; with ``empty=True``, as a node that lost everything it stored."""
        with self._lock:
            self._down = False
            if empty:
                self._changes += 1
                self._items.clear()
                self._hints.clear()
                self._marker = None
                self._floor = 0
                self._members = set()
                self._new = False

    def _check(self) -> None:
        if self._down:
            raise NodeDown(f"{self.name} is down")

    def is_new(self) -> bool:
        """True until the node was revived empty: it cannot have lost an acknowledged write."""
        return self._new

    def _state(self) -> NodeState:
        state = self._last_state
        if state.marker != self._marker or state.floor != self._floor:
            state = self._last_state = NodeState(self._marker, self._floor)
        return state

    # -- the node interface -----------------------------------------------------------------------

    def submit(self, op: str, *args: Any) -> Done:
        try:
            return Done(getattr(self, op)(*args))
        except Exception as exc:  # noqa: BLE001 - delivered by result()
            return Done(error=exc)

    def read_raw(self, fields: Sequence[bytes], buckets: Any = None, ix: Any = None
                 ) -> tuple[NodeState, list[bytes | None]]:
        """The blob of each key at positions `ix` of `fields` (None: all), None where
        absent."""
        if ix is not None and len(ix) == len(fields):     # (ix ascending: all is everything)
            ix = None
        with self._lock:
            self._check()
            return self._state(), dict_read(self._items, list(fields), ix)

    def write_raw(self, fields: Sequence[bytes], buckets: Any, blobs: Sequence[bytes],
                  ix: Any = None) -> tuple[NodeState, list[bool]]:
        """Store each blob (at positions `ix`; None: all) that is newer than the one held (a
        greater blob is a newer version); whether each was applied."""
        if ix is not None and len(ix) == len(fields):
            ix = None
        with self._lock:
            self._check()
            self._changes += 1
            return self._state(), dict_write(self._items, list(fields), list(blobs), ix)

    def write_if_raw(self, fields: Sequence[bytes], buckets: Any, blobs: Sequence[bytes],
                     expected: Sequence[bytes], ix: Any = None) -> tuple[NodeState, list[bool]]:
        """Store each blob (at positions `ix`; None: all) only where the held version is
        exactly `expected` (its version head, codec.VERSION_HEAD bytes; b"" for absent, and
        then only above the floor)."""
        if ix is not None and len(ix) == len(fields):
            ix = None
        with self._lock:
            self._check()
            self._changes += 1
            # (the caller numbers each blob above its expected version, as for the Redis script)
            return self._state(), dict_write_if(self._items, list(fields), list(blobs),
                                                list(expected), ix, b"%014x" % self._floor)

    def purge_raw(self, fields: Sequence[bytes], buckets: Any, heads: Sequence[bytes]) -> None:
        """Delete each key while it holds exactly the version `head`, raising the floor to
        its counter in the same step."""
        with self._lock:
            self._check()
            self._changes += 1
            cut = codec.VERSION_HEAD
            for f, h in zip(fields, heads):
                cur = self._items.get(f)
                if cur is not None and cur[:cut] == h[:cut]:
                    del self._items[f]
                    self._floor = max(self._floor, int(h[:14], 16))

    def _grouped(self, buckets: Sequence[int]) -> dict[int, list[tuple[bytes, bytes]]]:
        """The node's items by bucket (of `buckets`), at one moment."""
        with self._lock:
            self._check()
            cached = self._groups
            if cached is not None and cached[0] == self._changes:
                groups = cached[1]
            else:
                pairs = list(self._items.items())
                groups = {}
                if pairs:
                    of = codec.buckets_of([f for f, _ in pairs]).tolist()
                    for b, pair in zip(of, pairs):
                        groups.setdefault(b, []).append(pair)
                self._groups = (self._changes, groups)
        return {b: groups[b] for b in buckets if b in groups}

    def digests(self, buckets: Sequence[int]) -> tuple[NodeState, list[tuple[int, int, int]]]:
        """Per bucket: (XOR of its items' hashes, items, tombstones)."""
        groups = self._grouped(buckets)
        out = []
        for b in buckets:
            x = n = t = 0
            for _, blob in groups.get(b, ()):
                x ^= int.from_bytes(blob[codec.HEAD:codec.BLOB_HEAD], "big")
                n += 1
                t += blob[codec.VERSION_HEAD] == 0x74
            out.append((x, n, t))
        return self._state(), out

    def versions(self, buckets: Sequence[int]
                 ) -> tuple[NodeState, list[tuple[int, list[bytes], list[bytes]]]]:
        """The items of each bucket that holds any: (bucket, keys, their blob heads of
        codec.BLOB_HEAD bytes; a tombstone's whole blob)."""
        groups = self._grouped(buckets)
        cut = codec.BLOB_HEAD
        out = []
        for b in buckets:
            items = groups.get(b)
            if items:
                out.append((b, [f for f, _ in items],
                            [blob if blob[codec.VERSION_HEAD] == 0x74 else blob[:cut]
                             for _, blob in items]))
        return self._state(), out

    def raise_floor(self, floor: int) -> None:
        with self._lock:
            self._check()
            self._floor = max(self._floor, int(floor))

    def close(self) -> None:
        """Nothing to close (the same interface as RedisNode)."""

    def scan(self, count: int) -> Iterator[list[str]]:
        with self._lock:
            self._check()
            keys = [f.decode() for f in self._items]
        for start in range(0, len(keys), count):
            yield keys[start:start + count]

    def set_marker(self, value: str, *, only_if_missing: bool) -> bool:
        with self._lock:
            self._check()
            if only_if_missing and self._marker is not None:
                return False
            self._marker = value
            return True

    def get_marker(self) -> str | None:
        with self._lock:
            self._check()
            return self._marker

    def members(self) -> set[str]:
        with self._lock:
            self._check()
            return set(self._members)

    def add_members(self, names: Sequence[str]) -> None:
        with self._lock:
            self._check()
            self._members.update(names)

    def add_hints(self, target: str, records: Sequence[Record]) -> None:
        with self._lock:
            self._check()
            bucket = self._hints.setdefault(target, {})
            for record in records:
                held = bucket.get(record.key)
                if held is None or record.version > held.version:
                    bucket[record.key] = record

    def hints(self, target: str) -> list[Record]:
        with self._lock:
            self._check()
            return list(self._hints.get(target, {}).values())

    def drop_hints(self, target: str, records: Sequence[Record]) -> None:
        with self._lock:
            self._check()
            bucket = self._hints.get(target, {})
            for record in records:
                held = bucket.get(record.key)
                if held is not None and held.version == record.version:
                    del bucket[record.key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __repr__(self) -> str:
        state = "down" if self._down else f"{len(self._items)} items"
        return f"<MemoryNode {self.name} {state}>"
