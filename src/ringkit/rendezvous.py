"""Weighted rendezvous (highest random weight) hashing."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from ringkit import _placement
from ringkit.errors import UnknownNodeError
from ringkit.validation import (
    check_algorithm,
    check_name,
    check_seed,
    check_weight,
    parse_nodes,
    short,
)

#: Nodes a rendezvous placement takes: each lookup scores every node.
MAX_NODES = 1_000_000


class Rendezvous(_placement.RendezvousBase):
    """Weighted rendezvous hashing (Thaler and Ravishankar's highest random weight, with
    Schindelhauer and Schomaker's logarithmic weights): each key scores every node and goes to
    the highest score.

    >>> from ringkit import Rendezvous
    >>> placement = Rendezvous({"a": 1, "b": 2})
    >>> placement.get("user:42") in ("a", "b")
    True

    ``nodes`` is an iterable of names (weight 1.0 each) or a ``{name: weight}`` mapping (finite
    weights > 0). A key is hashed with ``algorithm`` and ``seed`` (as :func:`ringkit.hash64`);
    node j draws ``u = xxh64(key hash, seed=xxh64(name))`` read as a number in (0, 1) and
    scores ``weight / -ln(u)``, so it wins a share of keys equal to its share of the weight.
    Equal scores go to the larger draw.

    Compared with :class:`ringkit.HashRing`: no points (memory is one seed per node), exact
    weight shares, and adding or removing a node moves only the keys it wins or held (the
    minimum, whatever the weights), but a lookup costs one hash per node, so it suits tens to
    hundreds of nodes, not tens of thousands. ``preference_list`` gives the next-best nodes,
    which are where a key moves when the ones before leave.

    Lookups read one immutable state and never block; ``add``, ``remove`` and ``set_weight``
    swap in a new one. Batch results index ``nodes`` (sorted names).
    """

    _write_lock: threading.Lock

    def __init__(self, nodes: Iterable[str] | Mapping[str, float] | None = None, *,
                 algorithm: str = "xxh64", seed: int = 0) -> None:
        algorithm = check_algorithm(algorithm)
        seed = check_seed(seed)
        self._write_lock = threading.Lock()
        weights = parse_nodes(nodes, "nodes")
        self._swap_state(self._build(weights, algorithm, int(seed)))

    @staticmethod
    def _build(weights: Mapping[str, float], algorithm: str,
               seed: int) -> _placement.RendezvousState:
        if len(weights) > MAX_NODES:
            raise ValueError(f"nodes: a rendezvous placement takes at most {MAX_NODES:,} nodes, "
                             f"got {len(weights):,}")
        names = sorted(weights)
        return _placement.build_rendezvous(names, [weights[n] for n in names], algorithm, seed)

    def _change(self, weights: dict[str, float]) -> None:
        state = self._placement_state
        self._swap_state(self._build(weights, state.algorithm, state.seed))

    def add(self, name: str, weight: float = 1.0) -> None:
        """Add a node; only the keys it now wins move, and only onto it."""
        check_name(name, "name")
        value = check_weight(weight, "weight")
        with self._write_lock:
            weights = self.weights
            if name in weights:
                raise ValueError(f"node {short(name)} is already in the placement")
            weights[name] = value
            self._change(weights)

    def remove(self, name: str) -> None:
        """Remove a node; only its keys move, each to its next-best node."""
        with self._write_lock:
            weights = self.weights
            if name not in weights:
                raise UnknownNodeError(name, f"node {short(name)} is not in the placement")
            del weights[name]
            self._change(weights)

    def set_weight(self, name: str, weight: float) -> None:
        """Change a node's weight; keys move only onto it (raised) or off it (lowered)."""
        value = check_weight(weight, "weight")
        with self._write_lock:
            weights = self.weights
            if name not in weights:
                raise UnknownNodeError(name, f"node {short(name)} is not in the placement")
            weights[name] = value
            self._change(weights)

    def snapshot(self) -> Rendezvous:
        """An independent copy of the current placement (later changes do not reach it)."""
        copy = Rendezvous.__new__(Rendezvous)
        copy._write_lock = threading.Lock()
        copy._swap_state(self._placement_state)
        return copy

    def __dask_tokenize__(self) -> object:
        """Dask's token: what the placement places (equal placements, equal tokens)."""
        return (type(self).__module__, type(self).__qualname__, self.__reduce__()[1])

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (self.weights, self.algorithm, self.seed))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Rendezvous):
            return NotImplemented
        return (self.weights, self.algorithm, self.seed) == (other.weights, other.algorithm,
                                                             other.seed)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Rendezvous({self.weights!r}, algorithm={self.algorithm!r}, seed={self.seed})"


def _restore(weights: dict[str, float], algorithm: str, seed: int) -> Rendezvous:
    return Rendezvous(weights, algorithm=algorithm, seed=seed)
