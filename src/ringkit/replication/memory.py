"""MemoryNode: the embedded storage node, with fault injection for tests and demos."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from ringkit.replication.base import Done, NodeDown, NodeState, Record, Version

__all__ = ["MemoryNode"]


class MemoryNode:
    """A storage node in this process's memory. Thread safe.

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
        self._items: dict[str, Record] = {}
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

    def read(self, keys: Sequence[str]) -> tuple[NodeState, list[Record | None]]:
        with self._lock:
            self._check()
            return self._state(), [self._items.get(k) for k in keys]

    def write(self, records: Sequence[Record]) -> tuple[NodeState, list[bool]]:
        with self._lock:
            self._check()
            applied = []
            for record in records:
                current = self._items.get(record.key)
                if current is None or record.version > current.version:
                    self._items[record.key] = record
                    applied.append(True)
                else:
                    applied.append(False)
            return self._state(), applied

    def write_if(self, pairs: Sequence[tuple[Record, Version | None]]
                 ) -> tuple[NodeState, list[bool]]:
        with self._lock:
            self._check()
            applied = []
            for record, expected in pairs:
                current = self._items.get(record.key)
                found = None if current is None else current.version
                if found != expected or (current is not None
                                         and record.version <= current.version) \
                        or (current is None and record.version.counter <= self._floor):
                    applied.append(False)
                else:
                    self._items[record.key] = record
                    applied.append(True)
            return self._state(), applied

    def remove(self, records: Sequence[Record]) -> None:
        with self._lock:
            self._check()
            for record in records:
                current = self._items.get(record.key)
                if current is not None and current.version == record.version:
                    del self._items[record.key]
                    self._floor = max(self._floor, record.version.counter)

    def raise_floor(self, floor: int) -> None:
        with self._lock:
            self._check()
            self._floor = max(self._floor, int(floor))

    def close(self) -> None:
        """Nothing to close (the same interface as RedisNode)."""

    def scan(self, count: int) -> Iterator[list[str]]:
        with self._lock:
            self._check()
            keys = list(self._items)
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
