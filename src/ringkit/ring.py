"""HashRing: a consistent-hash ring with vectorised batch lookups.

Placement is frozen (DESIGN.md, "Keys and hashes"): a node ``name`` with weight ``w`` gets
``max(1, round(vnodes * w))`` points, point ``i`` being
``hash64(name.encode() + i.to_bytes(4, "little"), algorithm, seed)``; the owner of a key is the
node of the first point >= ``hash64(key)``, wrapping to the first point; equal points go to the
node whose name sorts first. So two processes (or two languages) with the same nodes, weights,
vnodes, algorithm and seed route every key alike, whatever order nodes were added in.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
import numpy.typing as npt

from ringkit import _ring
from ringkit._hashing import ALGORITHMS
from ringkit._ring import RingBase, RingSnapshot
from ringkit.errors import UnknownNodeError

__all__ = ["HashRing", "RingSnapshot", "LoadStats", "Movement", "ketama_digests"]

DEFAULT_VNODES = 160
_DICT_FORMAT = 1


def _check_name(name: object, argname: str = "name") -> str:
    if not isinstance(name, str):
        raise TypeError(f"{argname} must be a str node name, got {type(name).__name__}")
    if not name:
        raise ValueError(f"{argname} must be a non-empty str")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{argname} {name!r} cannot be encoded as UTF-8") from None
    return name


def _check_weight(weight: object, argname: str = "weight") -> float:
    if isinstance(weight, bool) or not isinstance(weight, Real):
        raise TypeError(f"{argname} must be a number, got {type(weight).__name__}")
    value = float(weight)
    if not math.isfinite(value):
        raise ValueError(f"{argname} must be finite, got {weight!r}")
    if value <= 0:
        raise ValueError(f"{argname} must be positive, got {weight!r} "
                         f"(remove the node to drain it)")
    return value


def _check_vnodes(vnodes: object) -> int:
    if isinstance(vnodes, bool) or not isinstance(vnodes, (int, np.integer)):
        raise TypeError(f"vnodes must be an int, got {type(vnodes).__name__}")
    if vnodes < 1:
        raise ValueError(f"vnodes must be at least 1, got {vnodes}")
    if vnodes > _ring.MAX_POINTS:  # the core keeps vnodes in a C int
        raise ValueError(f"vnodes must be at most {_ring.MAX_POINTS}, got {vnodes}")
    return int(vnodes)


def _point_count(vnodes: int, weight: float) -> int:
    # Frozen: Python's round() (half to even), at least one point.
    return max(1, round(vnodes * weight))


def _parse_nodes(nodes: object) -> dict[str, float]:
    """{name: weight} from names or a mapping; raises TypeError/ValueError naming `nodes`."""
    if nodes is None:
        return {}
    if isinstance(nodes, (str, bytes)):
        raise TypeError("nodes must be an iterable of names or a {name: weight} mapping, "
                        f"not a single {type(nodes).__name__}")
    parsed: dict[str, float] = {}
    if isinstance(nodes, Mapping):
        for name, weight in nodes.items():
            parsed[_check_name(name, "nodes")] = _check_weight(weight, f"nodes[{name!r}]")
        return parsed
    if not isinstance(nodes, Iterable):
        raise TypeError("nodes must be an iterable of names or a {name: weight} mapping, "
                        f"got {type(nodes).__name__}")
    for name in nodes:
        _check_name(name, "nodes")
        if name in parsed:
            raise ValueError(f"nodes: duplicate node name {name!r}")
        parsed[name] = 1.0
    return parsed


def ketama_digests(weights: Mapping[str, float]) -> dict[str, int]:
    """Digests per server as libketama computes them: floorf(share * 40 * n), share in float32.

    libketama divides the server's weight by the total in single precision, multiplies by
    ``40.0 * numservers`` in double, and floors the result converted back to float.
    """
    # libketama sums the integer weights exactly (unsigned long) and converts the total once;
    # summing float32s instead rounds past 2**24 and changes digest counts.
    total = np.float32(math.fsum(weights.values()))
    count = np.float32(len(weights))
    digests = {}
    for name, weight in weights.items():
        share = np.float32(np.float32(weight) / total)
        product = float(share) * 40.0 * float(count)
        digests[name] = int(np.floor(np.float32(product)))
    return digests


@dataclass(frozen=True)
class LoadStats:
    """How a set of keys spreads over the nodes.

    ``expected`` is each node's fair count (total x its weight share); ``max_over_expected`` is
    the worst node's count over its fair count, the figure to watch on a weighted ring, and
    ``max_over_mean`` the plain peak-to-average ratio (the same thing when weights are equal).
    """

    counts: dict[str, int]
    expected: dict[str, float]
    total: int
    mean: float
    max: int
    min: int

    @property
    def max_over_mean(self) -> float:
        return self.max / self.mean if self.mean else 0.0

    @property
    def max_over_expected(self) -> float:
        ratios = [self.counts[n] / e for n, e in self.expected.items() if e > 0]
        return max(ratios) if ratios else 0.0


@dataclass(frozen=True)
class Movement:
    """Which keys route to a different node in one ring than in another."""

    moved: npt.NDArray[np.bool_]
    flows: dict[tuple[str, str], int]

    @property
    def count(self) -> int:
        return int(self.moved.sum())

    @property
    def total(self) -> int:
        return int(self.moved.shape[0])

    @property
    def fraction(self) -> float:
        return self.count / self.total if self.total else 0.0


class HashRing(RingBase):
    """A consistent-hash ring over named nodes, with optional weights.

    >>> ring = HashRing(["cache-a", "cache-b", "cache-c"])
    >>> ring.get("user:42") in ring.nodes
    True
    >>> ring.get_many(["user:1", "user:2"]).dtype
    dtype('int32')

    ``nodes`` is an iterable of names (weight 1.0 each) or a ``{name: weight}`` mapping.
    ``vnodes`` points per unit of weight (default 160), ``algorithm`` one of
    :data:`ringkit.ALGORITHMS` (default ``"xxh64"``) and ``seed`` its seed place the nodes; keys
    are hashed with the same algorithm and seed.

    Lookups (``get``, ``ring[key]``, ``get_many``, ``locate``, ``preference_list``,
    ``preference_many``, ``assign_bounded``) read one immutable snapshot and never block; batch
    lookups release the GIL. Changes (``add``, ``remove``, ``set_weight``) build a new snapshot
    by merging the changed node's points in or out and swap it in, so a concurrent reader sees
    the ring before or after the change, never half of it. Batch results are int32 indices into
    ``nodes``; if another thread may change the ring meanwhile, take ``snap = ring.snapshot()``
    and use ``snap.get_many`` with ``snap.nodes``.
    """

    def __init__(
        self,
        nodes: Iterable[str] | Mapping[str, float] | None = None,
        *,
        vnodes: int = DEFAULT_VNODES,
        algorithm: str = "xxh64",
        seed: int = 0,
    ) -> None:
        self._write_lock = threading.Lock()
        self._vnodes = _check_vnodes(vnodes)
        if not isinstance(algorithm, str):
            raise TypeError(f"algorithm must be a str, got {type(algorithm).__name__}")
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
        self._algorithm = algorithm
        self._seed = seed
        self._ketama = False
        self._swap_state(self._build(_parse_nodes(nodes)))

    @classmethod
    def ketama(cls, servers: Iterable[str] | Mapping[str, float]) -> HashRing:
        """A ring bit-compatible with libketama (memcached clients' consistent hashing).

        ``servers`` are names (``"10.0.0.1:11211"``) or ``{name: weight}``. Each server gets
        ``floorf(weight share * 40 * len(servers))`` md5 digests of ``"%s-%d" % (name, k)``, four
        little-endian uint32 points each; a key goes to the first point >= the first four bytes
        of its md5, read little-endian. Adding or removing a server changes every share, so
        changes rebuild the ring (as libketama does) instead of merging.
        """
        ring = cls.__new__(cls)
        ring._write_lock = threading.Lock()
        ring._vnodes = 0
        ring._algorithm = "md5"
        ring._seed = 0
        ring._ketama = True
        ring._swap_state(ring._build(_parse_nodes(servers)))
        return ring

    # -- building ---------------------------------------------------------------------------------

    def _build(self, weights: Mapping[str, float]) -> _ring.RingState:
        names = sorted(weights)
        values = [weights[n] for n in names]
        if self._ketama:
            digests = ketama_digests(dict(zip(names, values))) if names else {}
            return _ring.build_ketama(names, values, [digests[n] for n in names])
        counts = [_point_count(self._vnodes, w) for w in values]
        return _ring.build(names, values, counts, self._vnodes, self._algorithm, self._seed)

    def add(self, name: str, weight: float = 1.0) -> None:
        """Add a node; only keys that now hash to its points move, and only onto it."""
        _check_name(name)
        w = _check_weight(weight)
        with self._write_lock:
            state = self._ring_state
            if name in state.nodes:
                raise ValueError(f"name: node {name!r} is already in the ring")
            if self._ketama:
                new = self._build({**self.weights, name: w})
            else:
                new = _ring.with_node(state, name, w, _point_count(self._vnodes, w))
            self._swap_state(new)

    def remove(self, name: str) -> None:
        """Remove a node; only the keys it owned move, each to the next node clockwise."""
        with self._write_lock:
            state = self._ring_state
            if not isinstance(name, str) or name not in state.nodes:
                raise UnknownNodeError(name, f"node {name!r} is not in the ring")
            if self._ketama:
                weights = self.weights
                del weights[name]
                new = self._build(weights)
            else:
                new = _ring.without_node(state, name)
            self._swap_state(new)

    def set_weight(self, name: str, weight: float) -> None:
        """Change a node's weight (its point count becomes max(1, round(vnodes * weight)))."""
        w = _check_weight(weight)
        with self._write_lock:
            state = self._ring_state
            if not isinstance(name, str) or name not in state.nodes:
                raise UnknownNodeError(name, f"node {name!r} is not in the ring")
            if self._ketama:
                new = self._build({**self.weights, name: w})
            else:
                without = _ring.without_node(state, name)
                new = _ring.with_node(without, name, w, _point_count(self._vnodes, w))
            self._swap_state(new)

    def snapshot(self) -> RingSnapshot:
        """A frozen view: its ``nodes`` and lookups agree even while this ring changes."""
        return RingSnapshot._of(self._ring_state)

    # -- configuration ----------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> HashRing:
        """The ring that :meth:`to_dict` described (for configuration files)."""
        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a mapping, got {type(config).__name__}")
        known = {"format", "nodes", "vnodes", "algorithm", "seed", "ketama"}
        unknown = set(config) - known
        if unknown:
            raise ValueError(f"config: unknown keys {sorted(unknown)}")
        fmt = config.get("format", _DICT_FORMAT)
        if fmt != _DICT_FORMAT:
            raise ValueError(f"config: format {fmt!r} is not supported (expected {_DICT_FORMAT})")
        if "nodes" not in config:
            raise ValueError("config: 'nodes' is required")
        if config.get("ketama", False):
            return cls.ketama(config["nodes"])
        return cls(
            config["nodes"],
            vnodes=config.get("vnodes", DEFAULT_VNODES),
            algorithm=config.get("algorithm", "xxh64"),
            seed=config.get("seed", 0),
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__.from_dict, (self.to_dict(),))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RingBase):
            return NotImplemented
        return bool(self.to_dict() == other.to_dict())

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        weights = self.weights
        if len(weights) > 8:
            shown = f"<{len(weights)} nodes>"
        elif all(w == 1.0 for w in weights.values()):
            shown = repr(list(weights))
        else:
            shown = repr(weights)
        if self._ketama:
            return f"HashRing.ketama({shown})"
        return (f"HashRing({shown}, vnodes={self._vnodes}, algorithm={self._algorithm!r}, "
                f"seed={self.seed!r}) with {self.points.shape[0]} points")


def _state_to_dict(state: _ring.RingState) -> dict[str, Any]:
    config: dict[str, Any] = {
        "format": _DICT_FORMAT,
        "nodes": dict(zip(state.nodes, state.weight_values)),
    }
    if state.ketama:
        config["ketama"] = True
    else:
        config.update(vnodes=state.vnodes, algorithm=state.algorithm, seed=state.seed)
    return config


def _snapshot_from_dict(config: Mapping[str, Any]) -> RingSnapshot:
    return HashRing.from_dict(config).snapshot()
