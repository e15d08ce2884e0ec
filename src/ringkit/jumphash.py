"""Lamping and Veach's jump consistent hash."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from ringkit import _placement
from ringkit.errors import UnknownNodeError
from ringkit.validation import check_algorithm, check_name, check_seed, short


class JumpHash(_placement.JumpBase):
    """Jump consistent hashing (Lamping and Veach, 2014): a key picks one of ``len(nodes)``
    buckets with no table at all, and ``nodes`` names the buckets in order.

    >>> from ringkit import JumpHash
    >>> placement = JumpHash(["a", "b", "c"])
    >>> placement.get(42) == placement.nodes[__import__("ringkit")._placement.jump_hash(42, 3)]
    True

    An int key goes in as the ``jump-consistent-hash`` package takes it (its value modulo
    2**64): ``JumpHash(nodes).get(k)`` is ``nodes[jump.hash(k, len(nodes))]``. Other keys (str,
    bytes-like) are hashed with ``algorithm`` and ``seed`` (as :func:`ringkit.hash64`) first.

    ``nodes`` keep the given order, which is their bucket order: ``add`` appends a bucket and
    moves the minimum (1/(n+1) of the keys, all onto the new node); removing the *last* node
    moves only its keys. Removing any other node renumbers the buckets after it and moves far
    more: jump hashing suits shards that grow and shrink at the end (storage shards, numbered
    partitions), not a set of cache servers that fail at random. No weights, no memory beyond
    the names, and a lookup costs about ln(n) steps.
    """

    _write_lock: threading.Lock

    def __init__(self, nodes: Iterable[str] | None = None, *, algorithm: str = "xxh64",
                 seed: int = 0) -> None:
        algorithm = check_algorithm(algorithm)
        seed = check_seed(seed)
        if isinstance(nodes, Mapping):
            raise TypeError("nodes must be an iterable of names: jump hashing has no weights")
        if isinstance(nodes, (str, bytes)):
            raise TypeError(f"nodes must be an iterable of names, got {type(nodes).__name__}")
        names: list[str] = []
        seen: set[str] = set()
        for name in nodes or ():
            check_name(name, "nodes")
            if name in seen:
                raise ValueError(f"nodes: duplicate node name {short(name)}")
            seen.add(name)
            names.append(name)
        self._write_lock = threading.Lock()
        self._swap_state(_placement.build_jump(names, algorithm, int(seed)))

    def _change(self, names: list[str]) -> None:
        state = self._placement_state
        self._swap_state(_placement.build_jump(names, state.algorithm, state.seed))

    def add(self, name: str) -> None:
        """Append a node as the last bucket: 1/(n+1) of the keys move, all onto it."""
        check_name(name, "name")
        with self._write_lock:
            if name in self:
                raise ValueError(f"node {short(name)} is already in the placement")
            self._change([*self.nodes, name])

    def remove(self, name: str) -> None:
        """Remove a node. Removing the last moves only its keys; removing another renumbers
        the buckets after it (their keys move too)."""
        with self._write_lock:
            if name not in self:
                raise UnknownNodeError(name, f"node {short(name)} is not in the placement")
            self._change([n for n in self.nodes if n != name])

    def snapshot(self) -> JumpHash:
        """An independent copy of the current placement (later changes do not reach it)."""
        copy = JumpHash.__new__(JumpHash)
        copy._write_lock = threading.Lock()
        copy._swap_state(self._placement_state)
        return copy

    def __dask_tokenize__(self) -> object:
        """Dask's token: what the placement places (equal placements, equal tokens)."""
        return (type(self).__module__, type(self).__qualname__, self.__reduce__()[1])

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (list(self.nodes), self.algorithm, self.seed))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, JumpHash):
            return NotImplemented
        return (self.nodes, self.algorithm, self.seed) == (other.nodes, other.algorithm,
                                                           other.seed)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"JumpHash({list(self.nodes)!r}, algorithm={self.algorithm!r}, seed={self.seed})"


def _restore(nodes: list[str], algorithm: str, seed: int) -> JumpHash:
    return JumpHash(nodes, algorithm=algorithm, seed=seed)
