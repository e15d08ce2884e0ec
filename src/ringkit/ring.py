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
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from numbers import Integral
from typing import Any, final

import numpy as np
import numpy.typing as npt

from ringkit import _ring
from ringkit._ring import RingBase
from ringkit.errors import UnknownNodeError
from ringkit.validation import (
    MAX_POINTS,
    check_algorithm,
    check_name,
    check_seed,
    check_vnodes,
    check_weight,
    count_points,
    parse_nodes,
    short,
)

__all__ = ["HashRing", "RingSnapshot", "LoadStats", "Movement", "ketama_digests"]

DEFAULT_VNODES = 160
_DICT_FORMAT = 1
# float32's largest finite value: libketama computes shares in single precision.
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _point_count(vnodes: int, weight: float) -> int:
    # Frozen: Python's round() (half to even), at least one point.
    return max(1, round(vnodes * weight))


def ketama_digests(weights: Mapping[str, float], argname: str = "servers") -> dict[str, int]:
    """Digests per server as libketama computes them: floorf(share * 40 * n), share in float32.

    libketama divides the server's weight by the total in single precision, multiplies by
    ``40.0 * numservers`` in double, and floors the result converted back to float. Weights
    whose total does not fit a float32 (above about 3.4e38), or rounds to 0 in one, have no
    float32 share: they are refused with a ValueError naming `argname`, as are rings of more
    than :data:`ringkit.validation.MAX_POINTS` points (four per digest).
    """
    if not weights:
        return {}
    # libketama sums the integer weights exactly (unsigned long) and converts the total once;
    # summing float32s instead rounds past 2**24 and changes digest counts.
    exact_total = math.fsum(weights.values())
    if not exact_total <= _FLOAT32_MAX:
        raise ValueError(f"{argname}: the weights add up to {short(exact_total)}, more than a "
                         f"float32 holds (libketama computes shares in single precision); "
                         f"scale them down")
    with np.errstate(over="ignore", under="ignore"):
        total = np.float32(exact_total)
    if total == 0:
        raise ValueError(f"{argname}: the weights add up to {short(exact_total)}, which is 0 "
                         f"in float32 (libketama computes shares in single precision); scale "
                         f"them up")
    count = np.float32(len(weights))
    digests = {}
    points = 0
    for name, weight in weights.items():
        with np.errstate(over="ignore", under="ignore"):
            share = np.float32(np.float32(weight) / total)
        product = float(share) * 40.0 * float(count)
        digests[name] = int(np.floor(np.float32(product)))
        points += 4 * digests[name]
    if points > MAX_POINTS:
        raise ValueError(f"{argname}: {len(weights)} servers give {points:,} points, more than "
                         f"the {MAX_POINTS:,} a ring may hold")
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


def _shares(state: _ring.RingState) -> dict[str, float]:
    points = state.points_array
    if points.shape[0] == 0:
        return {}
    # Point i owns (points[i-1], points[i]]; uint64 subtraction wraps around the ring.
    arcs = np.empty(points.shape[0], dtype=np.float64)
    if points.shape[0] == 1:
        arcs[0] = 2.0**64
    else:
        gaps = np.empty(points.shape[0], dtype=np.uint64)
        last = points.shape[0] - 1
        gaps[1:] = points[1:] - points[:last]
        gaps[:1] = points[:1] - points[last:]
        arcs[:] = gaps
    sums = np.bincount(state.owners_array, weights=arcs, minlength=len(state.nodes)) / 2.0**64
    return dict(zip(state.nodes, sums.tolist()))


class _RingView(RingBase):
    """What HashRing and RingSnapshot add above the compiled lookups: inspection (shares, load,
    movement) and serialisation (to_dict, equality, pickling)."""

    __slots__ = ()

    def _frozen(self) -> RingSnapshot:
        """A snapshot of the current state: its lookups and its nodes agree."""
        return RingSnapshot._of(self._ring_state)

    def shares(self) -> dict[str, float]:
        """Each node's share of the hash space (the arcs its points close), summing to 1.

        >>> ring = HashRing({"a": 1, "b": 3})
        >>> round(ring.shares()["b"], 1)
        0.8
        """
        return _shares(self._ring_state)

    def load(self, keys: Iterable[Any] | npt.ArrayLike) -> LoadStats:
        """How `keys` spread over the nodes: a LoadStats with counts, expected counts (total x
        weight share), mean, max and min."""
        snap = self._frozen()
        state = snap._ring_state
        counts = np.bincount(snap.get_many(keys), minlength=len(state.nodes))
        total = int(counts.sum())
        total_weight = sum(state.weight_values)
        expected = {name: total * w / total_weight
                    for name, w in zip(state.nodes, state.weight_values)}
        return LoadStats(counts=dict(zip(state.nodes, counts.tolist())), expected=expected,
                         total=total, mean=total / len(state.nodes), max=int(counts.max()),
                         min=int(counts.min()))

    def movement(self, other: RingBase, keys: Iterable[Any] | npt.ArrayLike) -> Movement:
        """Which of `keys` route to a different node in `other` (e.g. after an add or remove):
        a Movement with the moved mask and the flows between nodes."""
        if not isinstance(other, RingBase):
            raise TypeError(f"other must be a HashRing or RingSnapshot, got {type(other).__name__}")
        mine = self._frozen()
        theirs = RingSnapshot._of(other._ring_state)
        # An iterator is read once, into a list both rings look up.
        batch = list(keys) if isinstance(keys, Iterator) else keys
        a = mine.get_many(batch)
        b = theirs.get_many(batch)
        position = {name: i for i, name in enumerate(theirs.nodes)}
        translate = np.array([position.get(name, -1) for name in mine.nodes], dtype=np.int32)
        moved = translate[a] != b
        flows: dict[tuple[str, str], int] = {}
        if moved.any():
            pairs, counts = np.unique(np.stack([a[moved], b[moved]]), axis=1, return_counts=True)
            for (i, j), c in zip(pairs.T.tolist(), counts.tolist()):
                flows[(mine.nodes[i], theirs.nodes[j])] = c
        return Movement(moved=moved, flows=flows)

    def __dask_tokenize__(self) -> object:
        """Dask's token: the placement's fingerprint, so a ring and its snapshot, or two rings
        built alike, tokenize the same (and a changed ring differently)."""
        return ("ringkit.HashRing", self.fingerprint())

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (JSON-ready) that :meth:`HashRing.from_dict` turns back into an equal
        ring: ``format``, ``nodes`` ({name: weight}) and ``vnodes``, ``algorithm``, ``seed``,
        or ``ketama: True``."""
        return _state_to_dict(self._ring_state)


class HashRing(_RingView):
    """A consistent-hash ring over named nodes, with optional weights.

    >>> ring = HashRing(["cache-a", "cache-b", "cache-c"])
    >>> ring.get("user:42") in ring.nodes
    True
    >>> ring.get_many(["user:1", "user:2"]).dtype
    dtype('int32')

    ``nodes`` is an iterable of names (weight 1.0 each) or a ``{name: weight}`` mapping; a name
    is a non-empty str that encodes to UTF-8, a weight a finite number > 0 (remove a node to
    drain it). ``vnodes`` points per unit of weight (default 160), ``algorithm`` one of
    :data:`ringkit.ALGORITHMS` (default ``"xxh64"``) and ``seed`` its seed place the nodes; keys
    are hashed with the same algorithm and seed. A node of weight ``w`` gets
    ``max(1, round(vnodes * w))`` points.

    Size: a ring holds at most :data:`ringkit.validation.MAX_POINTS` (2**24, 16,777,216) points,
    all nodes together, about 200 MB with its index. Nodes, weights and vnodes that would give
    more are refused with a ValueError naming the argument, before anything is built (and so
    are ``add`` and ``set_weight`` calls that would).

    Lookups (``get``, ``ring[key]``, ``get_many``, ``locate``, ``preference_list``,
    ``preference_many``, ``assign_bounded``) read one immutable snapshot and never block; batch
    lookups release the GIL. Changes (``add``, ``remove``, ``set_weight``) build a new snapshot
    by merging the changed node's points in or out and swap it in, so a concurrent reader sees
    the ring before or after the change, never half of it. Batch results are int32 indices into
    ``nodes``; if another thread may change the ring meanwhile, take ``snap = ring.snapshot()``
    and use ``snap.get_many`` with ``snap.nodes``.
    """

    _write_lock: threading.Lock
    _vnodes: int
    _algorithm: str
    _seed: int
    _ketama: bool

    def __init__(
        self,
        nodes: Iterable[str] | Mapping[str, float] | None = None,
        *,
        vnodes: int = DEFAULT_VNODES,
        algorithm: str = "xxh64",
        seed: int = 0,
    ) -> None:
        self._write_lock = threading.Lock()
        self._vnodes = check_vnodes(vnodes)
        self._algorithm = check_algorithm(algorithm)
        self._seed = check_seed(seed)
        self._ketama = False
        weights = parse_nodes(nodes, "nodes")
        count_points(self._vnodes, weights, "nodes")
        self._swap_state(self._build(weights))

    @classmethod
    def ketama(cls, servers: Iterable[str] | Mapping[str, float]) -> HashRing:
        """A ring bit-compatible with libketama (memcached clients' consistent hashing).

        ``servers`` are names (``"10.0.0.1:11211"``) or ``{name: weight}``. Each server gets
        ``floorf(weight share * 40 * len(servers))`` md5 digests of ``"%s-%d" % (name, k)``, four
        little-endian uint32 points each; a key goes to the first point >= the first four bytes
        of its md5, read little-endian. Adding or removing a server changes every share, so
        changes rebuild the ring (as libketama does) instead of merging. libketama computes the
        shares in single precision: weights whose total overflows or underflows a float32 are
        refused with a ValueError.

        This is libketama's continuum. twemproxy and libmemcached compute their digest counts
        differently (in single precision throughout, which drops a digest at 25, 50, 100, ...
        equal servers), libmemcached's plain KETAMA is another continuum altogether, and
        uhashring's ketama takes the first point strictly above the key: to route exactly like
        one of them, use :mod:`ringkit.compat` (``twemproxy``, ``libmemcached``, ``uhashring``).
        """
        ring = cls.__new__(cls)
        ring._write_lock = threading.Lock()
        ring._vnodes = 0
        ring._algorithm = "md5"
        ring._seed = 0
        ring._ketama = True
        ring._swap_state(ring._build(parse_nodes(servers, "servers"), "servers"))
        return ring

    # -- building ---------------------------------------------------------------------------------

    def _build(self, weights: Mapping[str, float], argname: str = "nodes") -> _ring.RingState:
        """The state for `weights` (validated, and within MAX_POINTS for a vnodes ring)."""
        names = sorted(weights)
        values = [weights[n] for n in names]
        if self._ketama:
            digests = ketama_digests(dict(zip(names, values)), argname)
            return _ring.build_ketama(names, values, [digests[n] for n in names])
        counts = [_point_count(self._vnodes, w) for w in values]
        return _ring.build(names, values, counts, self._vnodes, self._algorithm, self._seed)

    def add(self, name: str, weight: float = 1.0) -> None:
        """Add a node; only keys that now hash to its points move, and only onto it.

        Raises ValueError if `name` is already a node, or if the ring would pass MAX_POINTS.
        """
        check_name(name)
        w = check_weight(weight)
        with self._write_lock:
            state = self._ring_state
            if name in state.nodes:
                raise ValueError(f"name: node {short(name)} is already in the ring")
            if self._ketama:
                new = self._build({**self.weights, name: w}, "weight")
            else:
                _check_points(self._vnodes, {**self.weights, name: w}, "weight")
                new = _ring.with_node(state, name, w, _point_count(self._vnodes, w))
            self._swap_state(new)

    def remove(self, name: str) -> None:
        """Remove a node; only the keys it owned move, each to the next node clockwise.

        Raises UnknownNodeError (a KeyError) if `name` is not a node.
        """
        with self._write_lock:
            state = self._ring_state
            if not isinstance(name, str) or name not in state.nodes:
                raise UnknownNodeError(name, f"node {short(name)} is not in the ring")
            if self._ketama:
                weights = self.weights
                del weights[name]
                new = self._build(weights)
            else:
                new = _ring.without_node(state, name)
            self._swap_state(new)

    def set_weight(self, name: str, weight: float) -> None:
        """Change a node's weight (its point count becomes max(1, round(vnodes * weight)));
        the keys that move are those its old or new points decide."""
        w = check_weight(weight)
        with self._write_lock:
            state = self._ring_state
            if not isinstance(name, str) or name not in state.nodes:
                raise UnknownNodeError(name, f"node {short(name)} is not in the ring")
            if self._ketama:
                new = self._build({**self.weights, name: w}, "weight")
            else:
                _check_points(self._vnodes, {**self.weights, name: w}, "weight")
                without = _ring.without_node(state, name)
                new = _ring.with_node(without, name, w, _point_count(self._vnodes, w))
            self._swap_state(new)

    def snapshot(self) -> RingSnapshot:
        """A frozen view: its ``nodes`` and lookups agree even while this ring changes."""
        return self._frozen()

    # -- configuration ----------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> HashRing:
        """The ring that :meth:`to_dict` described (for configuration files).

        Every field is checked: ``format`` (1), ``nodes`` (names or {name: weight}), and either
        ``ketama: True`` alone or ``vnodes`` (int), ``algorithm`` (str) and ``seed`` (int), with
        ``ketama`` (a bool) false or absent. A field of the wrong type is a TypeError naming it.
        """
        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a mapping, got {type(config).__name__}")
        known = {"format", "nodes", "vnodes", "algorithm", "seed", "ketama"}
        unknown = set(config) - known
        if unknown:
            raise ValueError(f"config: unknown keys {short(sorted(map(str, unknown)), 200)}")
        fmt = config.get("format", _DICT_FORMAT)
        if isinstance(fmt, bool) or not isinstance(fmt, Integral):
            raise TypeError(f"config['format'] must be an int, got {type(fmt).__name__}")
        if fmt != _DICT_FORMAT:
            raise ValueError(f"config['format']: {short(fmt)} is not supported "
                             f"(expected {_DICT_FORMAT})")
        if "nodes" not in config:
            raise ValueError("config: 'nodes' is required")
        ketama = config.get("ketama", False)
        if not isinstance(ketama, bool):
            raise TypeError(f"config['ketama'] must be a bool, got {type(ketama).__name__}")
        if ketama:
            extra = sorted({"vnodes", "algorithm", "seed"} & set(config))
            if extra:
                raise ValueError(f"config: {', '.join(extra)} cannot be set on a ketama ring "
                                 f"(libketama fixes them)")
            return cls.ketama(_config_nodes(config["nodes"]))
        vnodes = config.get("vnodes", DEFAULT_VNODES)
        if isinstance(vnodes, bool) or not isinstance(vnodes, Integral):
            raise TypeError(f"config['vnodes'] must be an int, got {type(vnodes).__name__}")
        algorithm = config.get("algorithm", "xxh64")
        if not isinstance(algorithm, str):
            raise TypeError(f"config['algorithm'] must be a str, got {type(algorithm).__name__}")
        seed = config.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, Integral):
            raise TypeError(f"config['seed'] must be an int, got {type(seed).__name__}")
        return cls(_config_nodes(config["nodes"]), vnodes=int(vnodes), algorithm=algorithm,
                   seed=int(seed))

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__.from_dict, (self.to_dict(),))

    def __eq__(self, other: object) -> bool:
        """Rings are equal when they place every key alike: same nodes, weights and settings."""
        if not isinstance(other, RingBase):
            return NotImplemented
        return _state_to_dict(self._ring_state) == _state_to_dict(other._ring_state)

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


@final
class RingSnapshot(_RingView):
    """A frozen view of a ring (``HashRing.snapshot()``): its ``nodes`` and its lookups always
    agree, whatever happens to the ring it came from. Equal snapshots route every key alike;
    snapshots hash and pickle."""

    __slots__ = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("RingSnapshot is made by HashRing.snapshot()")

    def __repr__(self) -> str:
        state = self._ring_state
        return (f"<RingSnapshot nodes={len(state.nodes)} points={state.points_array.shape[0]} "
                f"fingerprint={self.fingerprint()[:16]}>")

    def __eq__(self, other: object) -> bool:
        """Equal when both place every key alike: same nodes, weights and settings."""
        if not isinstance(other, RingBase):
            return NotImplemented
        return _state_to_dict(self._ring_state) == _state_to_dict(other._ring_state)

    def __hash__(self) -> int:
        return hash(self.fingerprint())

    def __reduce__(self) -> tuple[Any, ...]:
        return (_snapshot_from_dict, (self.to_dict(),))


def _check_points(vnodes: int, weights: Mapping[str, float], argname: str) -> None:
    """Refuse a change that would take the ring past MAX_POINTS, naming the argument."""
    try:
        count_points(vnodes, weights, "nodes")
    except ValueError as exc:
        raise ValueError(f"{argname}: {exc}") from None



def _config_nodes(nodes: object) -> Iterable[str] | Mapping[str, float]:
    if isinstance(nodes, (Mapping, list, tuple)):
        return nodes  # the constructor checks every item
    raise TypeError(f"config['nodes'] must be a list of names or a {{name: weight}} mapping, "
                    f"got {type(nodes).__name__}")


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
