"""ReplicatedStore: primary/replica storage over the ring that loses no acknowledged write.

Every key has a preference list from the ring: its primary first, then its replicas. A write
reads the key's current version from a read quorum, takes the next counter (with this store's
writer id as tie-break), sends the value to all replicas at once and returns once a write
quorum stored it. With ``read_quorum + write_quorum > replicas`` every read quorum meets every
write quorum, so a read sees the newest acknowledged version and a new write is numbered above
every acknowledged one, also after a failover: that is what the default (strong) mode enforces.

A round asks its nodes at once and ends as soon as its outcome is decided (every key has its
quorum, or can no longer get it), never later than the nodes' socket timeouts; replies that
come later feed read repair (see ringkit._redisio).
"""

from __future__ import annotations

import logging
import math
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ringkit._redisio import gather
from ringkit.errors import (
    PartialWriteError,
    QuorumError,
    RingkitError,
    UnknownNodeError,
    WriteOutcome,
)
from ringkit.replication.base import (
    MARKER_READY,
    MARKER_RECOVERING,
    MAX_COUNTER,
    Node,
    NodeDown,
    NodeState,
    Record,
    Version,
)
from ringkit.ring import HashRing

__all__ = ["ReplicatedStore", "VersionConflictError", "RepairReport", "ReplicationEvent"]

log = logging.getLogger("ringkit.replication")

_ABSENT = object()


class VersionConflictError(RingkitError, ValueError):
    """``put(..., if_version=v)`` found another version than `v`; ``current`` is what it found."""

    def __init__(self, message: str, *, key: str, current: Version | None) -> None:
        self.key = key
        self.current = current
        super().__init__(message)


@dataclass(frozen=True)
class ReplicationEvent:
    """What ``on_event`` hears: ``kind`` is "node_down", "node_up", "node_empty" (a node came
    back without its data: it counts towards no quorum until repaired), "node_foreign" (its
    marker belongs to another store id), "node_refilled", "quorum_failed" or
    "hints_delivered"."""

    kind: str
    node: str | None
    detail: str = ""


@dataclass
class RepairReport:
    """What :meth:`ReplicatedStore.repair` did."""

    keys_checked: int = 0
    replicas_repaired: int = 0
    tombstones_purged: int = 0
    hints_delivered: int = 0
    nodes_refilled: list[str] = field(default_factory=list)
    nodes_unreachable: list[str] = field(default_factory=list)


@dataclass
class _Outcome:
    replies: dict[str, Any] = field(default_factory=dict)
    failed: dict[str, BaseException] = field(default_factory=dict)
    # Nodes whose reply counts towards a quorum: decided by the marker that came back with
    # that reply, not by what the store believes later (a repair may have marked the node
    # refilled after it answered from before the refill).
    counted: set[str] = field(default_factory=set)
    # Nodes that had not answered when the round was decided (their replies come later).
    late: set[str] = field(default_factory=set)
    # Failed nodes that were never sent the operation (marked down, skipped, not connected).
    unsent: set[str] = field(default_factory=set)
    floors: dict[str, int] = field(default_factory=dict)

    def reached(self, names: Iterable[str]) -> bool:
        """Whether the operation may have been applied by one of `names` (it answered, is
        late, or failed after it was sent)."""
        return any(n in self.replies or n in self.late
                   or (n in self.failed and n not in self.unsent) for n in names)

    def floor(self, names: Iterable[str] | None = None) -> int:
        """The largest version floor among the nodes that answered (of `names`)."""
        if names is None:
            return max(self.floors.values(), default=0)
        return max((self.floors[n] for n in names if n in self.floors), default=0)


class _OneTally:
    """_Tally for a round about one key (no numpy: a single put or get pays nothing for it)."""

    __slots__ = ("need", "nodes", "ok", "good", "pending", "seen", "extra")

    def __init__(self, need: int, nodes: Iterable[str],
                 ok: Callable[[Any], Sequence[bool]] | None = None,
                 extra: Iterable[str] = ()) -> None:
        self.need = need
        self.nodes = set(nodes)
        self.ok = ok
        self.good = 0
        self.pending = len(self.nodes)
        self.seen: set[str] = set()
        self.extra = extra

    def answer(self, name: str, counted: bool, reply: Any) -> None:
        if name not in self.nodes or name in self.seen:
            return
        self.seen.add(name)
        self.pending -= 1
        if (counted or name in self.extra) and (self.ok is None or self.ok(reply)[0]):
            self.good += 1

    def fail(self, name: str) -> None:
        if name in self.nodes and name not in self.seen:
            self.seen.add(name)
            self.pending -= 1

    def decided(self) -> bool:
        return self.good >= self.need or self.good + self.pending < self.need


class _Tally:
    """Counts, per key of a round, the replies that count towards its quorum, so that the round
    can end as soon as every key has its quorum or can no longer get it.

    ``index`` maps each node to the positions of its keys; ``ok(reply)`` says, per key of a
    node's reply, whether it counts (None: every key of a counted node counts).
    """

    __slots__ = ("need", "index", "ok", "good", "pending", "seen", "extra")

    def __init__(self, need: int, n_keys: int, index: Mapping[str, Sequence[int]],
                 ok: Callable[[Any], Sequence[bool]] | None = None,
                 extra: Iterable[str] = ()) -> None:
        self.need = need
        self.index = {n: np.asarray(ix, dtype=np.intp) for n, ix in index.items()}
        self.ok = ok
        self.good = np.zeros(n_keys, dtype=np.int64)
        self.pending = np.zeros(n_keys, dtype=np.int64)
        for ix in self.index.values():
            self.pending[ix] += 1
        self.seen: set[str] = set()
        self.extra = set(extra)     # nodes that count whatever their marker (stand-ins)

    @staticmethod
    def single(need: int, nodes: Iterable[str], ok: Callable[[Any], Sequence[bool]] | None
               = None, extra: Iterable[str] = ()) -> _OneTally:
        return _OneTally(need, nodes, ok, extra)

    def answer(self, name: str, counted: bool, reply: Any) -> None:
        ix = self.index.get(name)
        if ix is None or name in self.seen:
            return
        self.seen.add(name)
        self.pending[ix] -= 1
        if counted or name in self.extra:
            if self.ok is None:
                self.good[ix] += 1
            else:
                self.good[ix] += np.asarray(self.ok(reply), dtype=np.int64)

    def fail(self, name: str) -> None:
        ix = self.index.get(name)
        if ix is None or name in self.seen:
            return
        self.seen.add(name)
        self.pending[ix] -= 1

    def decided(self) -> bool:
        return bool(np.all((self.good >= self.need) | (self.good + self.pending < self.need)))


_NOW = _Tally(0, 0, {})        # a round that is decided at once: fire and forget (read repair)


def _check_key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, got {type(key).__name__}")
    if not key.isascii():
        try:
            key.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"key must encode to UTF-8: {exc.reason} at position "
                             f"{exc.start}") from None
    return key


def _check_value(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"value must be bytes-like, got {type(value).__name__}")


def _check_count(value: object, argname: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{argname} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{argname} must be at least 1, got {value}")
    return value


def _newest(records: Iterable[Record | None]) -> Record | None:
    return max((r for r in records if r is not None), key=lambda r: r.version, default=None)


class ReplicatedStore:
    """Primary/replica key-value storage over a consistent-hash ring.

    ``nodes`` maps names to node backends (:class:`MemoryNode`, :class:`RedisNode`). Each key
    lives on ``replicas`` nodes, its preference list on the ring; ``replicas=len(nodes)`` is
    the classic single primary with replicas holding everything. ``put`` returns once
    ``write_quorum`` nodes stored the value, ``get`` asks ``read_quorum`` nodes and returns the
    newest version, repairing stale replicas it saw.

    ``consistency="strong"`` (default) requires ``read_quorum + write_quorum > replicas``.
    ``"eventual"`` allows less; there, with ``write_quorum=1``, a put returns once one replica
    (the key's first live one) stored it and a background thread copies it to the others
    through a bounded queue (:meth:`lag`). Eventual mode can lose acknowledged writes (a node
    that dies before its queue drained) and can read stale values from other store instances;
    this instance always reads its own writes. ``sloppy=True`` (eventual mode only: it would
    break strong mode's promise) lets the next live node along the ring take the writes of a
    replica that is down, with a hint, and hand them back (:meth:`handoff`, also run by
    :meth:`repair`).

    Which nodes count: a node counts towards a quorum only while its epoch marker says it is
    ready and belongs to this store (``store_id``, which every process of a deployment must
    share). A node that comes back empty (its marker vanished) counts for nothing until
    :meth:`repair` refilled it. Redis nodes that are new need :meth:`initialize` once (or a
    :meth:`repair`); in-process :class:`MemoryNode` s are new by construction.

    A failed write raises :class:`ringkit.QuorumError` whose ``outcome`` says whether the
    value may have been stored anyway ("unknown": it may become visible later) or was written
    nowhere ("failed"); a failed ``put_many`` raises :class:`ringkit.errors.PartialWriteError`
    with every key's outcome.

    A dead node is skipped (every round is bounded by the nodes' socket timeouts, and a node
    that failed is not asked again for ``down_backoff`` seconds).
    """

    def __init__(
        self,
        nodes: Mapping[str, Node],
        *,
        replicas: int = 3,
        write_quorum: int = 2,
        read_quorum: int = 2,
        consistency: Literal["strong", "eventual"] = "strong",
        sloppy: bool = False,
        store_id: str = "default",
        writer_id: str | None = None,
        tombstone_grace: float = 86400.0,
        down_backoff: float = 1.0,
        timeout: float = 2.0,
        queue_size: int = 100_000,
        vnodes: int = 160,
        on_event: Callable[[ReplicationEvent], object] | None = None,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(nodes, Mapping):
            raise TypeError(f"nodes must map names to nodes, got {type(nodes).__name__}")
        if not nodes:
            raise ValueError("nodes must not be empty")
        for name, node in nodes.items():
            if not isinstance(name, str) or not name:
                raise TypeError(f"nodes: names must be non-empty str, got {name!r}")
            if not isinstance(node, Node):
                raise TypeError(f"nodes[{name!r}] must be a node (MemoryNode, RedisNode), got "
                                f"{type(node).__name__}")
        self.replicas = _check_count(replicas, "replicas")
        self.write_quorum = _check_count(write_quorum, "write_quorum")
        self.read_quorum = _check_count(read_quorum, "read_quorum")
        if self.replicas > len(nodes):
            raise ValueError(f"replicas ({replicas}) is larger than the number of nodes "
                             f"({len(nodes)})")
        if self.write_quorum > self.replicas:
            raise ValueError(f"write_quorum ({write_quorum}) is larger than replicas ({replicas})")
        if self.read_quorum > self.replicas:
            raise ValueError(f"read_quorum ({read_quorum}) is larger than replicas ({replicas})")
        if consistency not in ("strong", "eventual"):
            raise ValueError(f"consistency must be 'strong' or 'eventual', got {consistency!r}")
        if consistency == "strong" and self.read_quorum + self.write_quorum <= self.replicas:
            raise ValueError(
                f"read_quorum + write_quorum ({read_quorum} + {write_quorum}) must exceed "
                f"replicas ({replicas}) for reads to see every acknowledged write; pass "
                f"consistency='eventual' to accept stale reads and lost writes")
        if not isinstance(sloppy, bool):
            raise TypeError(f"sloppy must be a bool, got {type(sloppy).__name__}")
        if sloppy and consistency == "strong":
            raise ValueError(
                "sloppy=True needs consistency='eventual': a stand-in's copy counted towards "
                "the write quorum is not found by a later read quorum of the key's replicas, "
                "so strong mode's promise (a read sees every acknowledged write) would not hold")
        if not isinstance(store_id, str):
            raise TypeError(f"store_id must be a str, got {type(store_id).__name__}")
        if not store_id or not all(c.isalnum() or c in "-_." for c in store_id) \
                or not store_id.isascii():
            raise ValueError(f"store_id must be a non-empty str of letters, digits, '-', '_' "
                             f"and '.', got {store_id!r}")
        if writer_id is None:
            writer_id = secrets.token_hex(8)
        elif not isinstance(writer_id, str):
            raise TypeError(f"writer_id must be a str, got {type(writer_id).__name__}")
        elif not writer_id or any(c not in "0123456789abcdef" for c in writer_id):
            raise ValueError("writer_id must be a non-empty str of lowercase hex digits")
        for argname, value in (("tombstone_grace", tombstone_grace),
                               ("down_backoff", down_backoff), ("timeout", timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value < 0:
                raise ValueError(f"{argname} must be a finite number of seconds >= 0, got "
                                 f"{value!r}")
        self.consistency = consistency
        self.sloppy = sloppy
        self.store_id = store_id
        self.writer_id = writer_id
        self.tombstone_grace = float(tombstone_grace)
        self._ready = f"{MARKER_READY}:{store_id}:"
        self._down_backoff = float(down_backoff)
        self._timeout = float(timeout)
        self._vnodes = vnodes
        self._on_event = on_event
        self._wall = wall_clock
        self._clock = clock
        self._state = threading.RLock()
        self._nodes: dict[str, Node] = dict(nodes)
        self._everyone: dict[str, Node] = dict(nodes)
        self._ring = HashRing(list(self._nodes), vnodes=vnodes)
        self._pending: tuple[HashRing, dict[str, Node]] | None = None   # before rebalance()
        self._markers: dict[str, str | None] = {}
        self._counting: dict[str, bool] = {}
        self._floors: dict[str, int] = {}
        self._down_until: dict[str, float] = {}
        self._own: dict[str, Record] = {}          # eventual mode: this instance's writes
        self._known: dict[str, Version | None] = {}  # last version seen per key (bounded)
        self._seq = 0     # per-write sequence number, the tie-break's second half
        self._fast = 2 * self.write_quorum > self.replicas
        self._queue: queue.Queue[tuple[Record, list[str]] | None] | None = None
        if consistency == "eventual" and self.write_quorum == 1 and self.replicas > 1:
            self._queue = queue.Queue(maxsize=queue_size)
            self._replicator = threading.Thread(target=self._replicate_loop,
                                                name="ringkit-replicator", daemon=True)
            self._replicator.start()
        for name, node in self._nodes.items():
            self._adopt(name, node)
        if any(self._counting.values()):
            self._remember_members()

    # -- node state -------------------------------------------------------------------------------

    def _emit(self, kind: str, node: str | None, detail: str = "") -> None:
        log.info("ringkit replication: %s %s %s", kind, node or "", detail)
        if self._on_event is not None:
            try:
                self._on_event(ReplicationEvent(kind, node, detail))
            except Exception:
                log.exception("ringkit replication on_event hook raised")

    def _marker(self, state: str) -> str:
        return f"{state}:{self.store_id}:{secrets.token_hex(6)}"

    def _counted(self, marker: str | None) -> bool:
        """Whether a reply that came with `marker` counts towards a quorum of this store."""
        if marker is None:
            return False
        if marker.startswith(self._ready):
            return True
        # Markers written by ringkit 0.1 ("ready:<epoch>") belong to the default store id.
        return (self.store_id == "default" and marker.startswith(MARKER_READY + ":")
                and marker.count(":") == 1)

    def _foreign(self, marker: str | None) -> bool:
        if marker is None or marker.count(":") < 2:
            return False
        return marker.split(":", 2)[1] != self.store_id

    def _adopt(self, name: str, node: Node) -> None:
        """Learn a node's marker. A node without one counts only if it is new by construction
        (an in-process MemoryNode); a Redis node needs initialize() or repair()."""
        try:
            marker = node.get_marker()
            if marker is None and getattr(node, "is_new", lambda: False)():
                node.set_marker(self._marker(MARKER_READY), only_if_missing=True)
                marker = node.get_marker()
        except Exception as exc:  # noqa: BLE001 - an unreachable node is adopted later
            self._mark_down(name, exc)
            return
        if marker is None:
            log.info("ringkit replication: %s has no marker: it counts once initialize() or "
                     "repair() made it ready", name)
            with self._state:
                self._markers[name] = None
                self._counting[name] = False
            return
        self._observe(name, marker)

    def _observe(self, name: str, marker: str | None) -> None:
        """Update what we know of a node from the marker it answered with."""
        if marker is not None and self._markers.get(name) == marker \
                and name not in self._down_until:
            return  # nothing changed: the common case, without taking the lock
        if marker is None:
            # The node lost its data (restarted empty): it counts for nothing until repaired.
            node = self._all_nodes().get(name)
            if node is not None:
                try:
                    node.set_marker(self._marker(MARKER_RECOVERING), only_if_missing=True)
                    marker = node.get_marker()
                except Exception as exc:  # noqa: BLE001
                    self._mark_down(name, exc)
                    return
            self._emit("node_empty", name, "epoch marker vanished: excluded from quorums "
                                           "until repair()")
        elif self._foreign(marker) and self._markers.get(name) != marker:
            self._emit("node_foreign", name, f"its marker {marker!r} belongs to another store "
                                             f"id: it counts towards no quorum of "
                                             f"{self.store_id!r}")
        with self._state:
            counting = self._counted(marker)
            self._markers[name] = marker
            was = self._counting.get(name)
            self._counting[name] = counting
            if name in self._down_until:
                del self._down_until[name]
                self._emit("node_up", name)
        if was and not counting and marker is not None:
            log.warning("ringkit replication: %s is recovering; not counted until repaired", name)

    def _note_floor(self, name: str, floor: int) -> None:
        if floor > self._floors.get(name, 0):
            with self._state:
                if floor > self._floors.get(name, 0):
                    self._floors[name] = floor

    def _mark_down(self, name: str, exc: BaseException) -> None:
        with self._state:
            first = name not in self._down_until
            self._down_until[name] = self._clock() + self._down_backoff
        if first:
            self._emit("node_down", name, f"{type(exc).__name__}: {exc}")

    def probe(self) -> dict[str, str]:
        """Ask every node now (ignoring the down backoff, and reconnecting to nodes that
        failed) and return :meth:`status`."""
        with self._state:
            self._down_until = {n: 0.0 for n in self._down_until}
        for node in self._all_nodes().values():
            reconnect = getattr(node, "reconnect", None)
            if reconnect is not None:
                reconnect()
        self._round("read", {name: ([],) for name in self._all_nodes()}, every=True)
        return self.status()

    def _is_live(self, name: str) -> bool:
        until = self._down_until.get(name)
        return until is None or self._clock() >= until

    def _counts(self, name: str) -> bool:
        return self._counting.get(name, False)

    def _all_nodes(self) -> dict[str, Node]:
        """Every node a call may go to (the current ones, and the old ones until rebalance());
        a snapshot replaced on membership changes, never changed in place."""
        return self._everyone

    def _membership_changed(self) -> None:
        # Caller holds self._state.
        nodes = dict(self._nodes)
        if self._pending is not None:
            nodes.update(self._pending[1])
        self._everyone = nodes

    def initialize(self) -> list[str]:
        """Mark the nodes that have no marker and are new as ready, so that they count at once;
        returns the nodes it marked.

        Call it once when a deployment's Redis nodes are new (in-process MemoryNodes need it
        not), before the store is used. A node without a marker that the other nodes remember
        as a member of this store (it restarted empty) is not marked: :meth:`repair` refills
        it first. Never clear the nodes' ``__members__`` keys to get around this.
        """
        nodes = self._all_nodes()
        markers: dict[str, str | None] = {}
        remembered: set[str] = set()
        for name, node in nodes.items():
            try:
                markers[name] = node.get_marker()
                if hasattr(node, "members"):
                    remembered |= set(node.members())
            except Exception as exc:  # noqa: BLE001
                self._mark_down(name, exc)
        marked = []
        for name, marker in markers.items():
            if marker is not None:
                self._observe(name, marker)
                continue
            node = nodes[name]
            if name in remembered:
                log.warning("ringkit replication: %s was a member of this store and lost its "
                            "data; repair() refills it", name)
                self._observe(name, None)
                continue
            try:
                if node.set_marker(self._marker(MARKER_READY), only_if_missing=True):
                    marked.append(name)
                self._observe(name, node.get_marker())
            except Exception as exc:  # noqa: BLE001
                self._mark_down(name, exc)
        self._remember_members()
        return marked

    def _remember_members(self) -> None:
        """Record on every node the names of this store's ready nodes (initialize() refuses to
        mark a node that the others remember, since it must have lost its data)."""
        ready = sorted(n for n in self._all_nodes() if self._counts(n))
        for name, node in self._all_nodes().items():
            if hasattr(node, "add_members") and self._is_live(name):
                try:
                    node.add_members(ready)
                except Exception as exc:  # noqa: BLE001
                    self._mark_down(name, exc)

    # -- placement --------------------------------------------------------------------------------

    def preference_list(self, key: str) -> list[str]:
        """The key's replica nodes, primary first."""
        return self._ring.preference_list(_check_key(key), self.replicas)

    def _targets(self, key: str) -> tuple[list[str], dict[str, str]]:
        """Nodes to ask for `key`: its replicas (plus, before rebalance(), its old replicas),
        with stand-ins for down replicas when sloppy; and {stand-in: replica it stands for}."""
        with self._state:
            ring, pending = self._ring, self._pending
        prefs = ring.preference_list(key, self.replicas)
        targets = list(prefs)
        if pending is not None:
            for name in pending[0].preference_list(key, min(self.replicas, len(pending[0]))):
                if name not in targets:
                    targets.append(name)
        standins: dict[str, str] = {}
        if self.sloppy:
            down = [n for n in prefs if not self._is_live(n)]
            if down:
                extra = [n for n in ring.preference_list(key, len(ring))
                         if n not in targets and self._is_live(n)]
                for replica, standin in zip(down, extra):
                    standins[standin] = replica
                    targets.append(standin)
        return targets, standins

    def _targets_many(self, keys: Sequence[str]) -> list[list[str]]:
        """_targets for a batch: one vectorised ring lookup when no rebalance is pending and
        no stand-in is needed."""
        with self._state:
            ring, pending = self._ring, self._pending
        if pending is None and not self.sloppy and keys:
            names = ring.nodes
            rows = ring.preference_many(list(keys), self.replicas).tolist()
            return [[names[i] for i in row] for row in rows]
        return [self._targets(key)[0] for key in keys]

    def _standin(self, key: str, exclude: Iterable[str]) -> str | None:
        """The next live node along the ring for `key` that is not in `exclude`."""
        skip = set(exclude)
        for name in self._ring.preference_list(key, len(self._ring)):
            if name not in skip and self._is_live(name):
                return name
        return None

    # -- parallel calls ---------------------------------------------------------------------------

    def _round(self, op: str, args: Mapping[str, tuple[Any, ...]], *,
               tally: _Tally | _OneTally | None = None,
               late: Callable[[str, Node], Any] | None = None,
               every: bool = False) -> _Outcome:
        """Send ``op`` to every node named in `args` at once and collect the answers, until
        `tally` says the outcome is decided (None: every node answered or timed out). A node
        that is marked down, or fails, lands in ``failed``; one that had not answered when the
        round was decided in ``late``, and its reply goes to ``late(name, node)``'s handler.
        In-process nodes are simply called. `every` (maintenance: repair, probe) asks even
        a node that a quorum round would skip for owing replies or having just failed."""
        out = _Outcome()
        nodes = self._everyone
        down = self._down_until
        network: list[tuple[str, Any]] = []
        blocking: list[tuple[str, Any]] = []
        for name, node_args in args.items():
            node = nodes.get(name)
            if node is None:
                out.failed[name] = UnknownNodeError(name)
                out.unsent.add(name)
            elif name in down and not self._is_live(name):
                out.failed[name] = NodeDown(f"{name} is marked down (asked again after "
                                            f"{self._down_backoff} s)")
                out.unsent.add(name)
            elif getattr(node, "in_process", False):
                try:
                    state, reply = getattr(node, op)(*node_args)
                except Exception as exc:  # noqa: BLE001 - counted against the quorum
                    out.failed[name] = exc
                    if isinstance(exc, NodeDown):
                        out.unsent.add(name)
                    self._mark_down(name, exc)
                else:
                    self._answered(out, name, state, reply)
                    if tally is not None:
                        tally.answer(name, name in out.counted, reply)
                continue
            else:
                try:
                    pending = node.submit(op, *node_args)
                except Exception as exc:  # noqa: BLE001
                    out.failed[name] = exc
                    out.unsent.add(name)
                    self._mark_down(name, exc)
                else:
                    call = getattr(pending, "call", None)
                    if call is None:
                        blocking.append((name, pending))
                    else:
                        call.must = every
                        if late is not None:
                            call.late = late(name, node)
                        network.append((name, pending))
                continue
            if tally is not None:
                tally.fail(name)
        if network:
            self._gather(network, tally, out)
        for name, pending in blocking:
            try:
                state, reply = pending.result()
            except Exception as exc:  # noqa: BLE001 - counted against the quorum
                out.failed[name] = exc
                self._mark_down(name, exc)
            else:
                self._answered(out, name, state, reply)
        return out

    def _gather(self, network: list[tuple[str, Any]], tally: _Tally | _OneTally | None,
                out: _Outcome) -> None:
        decided = None
        if tally is not None:
            def decided() -> bool:
                for name, pending in network:
                    if name in tally.seen:
                        continue
                    call = pending.call
                    if call.error is not None:
                        tally.fail(name)
                    elif call.ok:
                        try:
                            state, reply = pending.parse()
                        except Exception:  # noqa: BLE001
                            tally.fail(name)
                            continue
                        tally.answer(name, self._counted(state.marker), reply)
                return tally.decided()
        gather([pending.call for _, pending in network], decided)
        for name, pending in network:
            state_of = pending.call.state
            if state_of == "late":
                out.late.add(name)
                continue
            try:
                state, reply = pending.parse()
            except Exception as exc:  # noqa: BLE001 - counted against the quorum
                out.failed[name] = exc
                if not pending.call.sent:
                    out.unsent.add(name)
                if not getattr(exc, "busy", False):
                    # (a node skipped for owing replies is slow, not down: not marked)
                    self._mark_down(name, exc)
            else:
                self._answered(out, name, state, reply)

    def _answered(self, out: _Outcome, name: str, state: NodeState, reply: Any) -> None:
        marker = state.marker
        if marker is None or self._markers.get(name) != marker or name in self._down_until:
            self._observe(name, marker)
        if state.floor:
            self._note_floor(name, state.floor)
        out.floors[name] = state.floor
        out.replies[name] = reply
        if self._counted(marker):
            out.counted.add(name)

    def _late_repair(self, keys_of: Mapping[str, Sequence[str]], newest: dict[str, Record]
                     ) -> Callable[[str, Node], Any]:
        """Late handlers for a read: a node whose replies come after the read was decided is
        written the newest versions the read found, where it holds older ones."""

        def for_node(name: str, node: Node) -> Any:
            repair = getattr(node, "read_repair", None)
            return None if repair is None else repair(keys_of[name], newest)

        return for_node

    def _quorum_error(self, action: str, key: str, need: int, got: int,
                      out: _Outcome, outcome: Literal["failed", "unknown"] | None = None
                      ) -> QuorumError:
        failed: dict[str, object] = dict(out.failed)
        for name in out.replies:
            if name not in out.counted:
                failed[name] = "recovering (came back empty, or not initialized; not counted " \
                               "until repaired)"
        names = ", ".join(f"{n} ({type(e).__name__ if isinstance(e, BaseException) else e})"
                          for n, e in failed.items()) or "none"
        self._emit("quorum_failed", None, f"{action} {key!r}: {got} of {need}")
        message = f"{action} {key!r}: {got} nodes answered, {need} needed; failed: {names}"
        if outcome == "unknown":
            message += ("; the outcome is unknown: some replicas may have stored the value, "
                        "which may become visible later (or be overwritten)")
        elif outcome == "failed":
            message += "; nothing was written"
        return QuorumError(message, failed=failed, outcome=outcome)

    # -- versions ---------------------------------------------------------------------------------

    def _next_version(self, current: Version | None, floor: int = 0) -> Version:
        """The version after `current` (and above `floor`, the largest counter of a purged
        tombstone the replicas reported): counter + 1, and as tie-break this store's writer id
        with a sequence number, so that no two writes (not even two threads of one store) ever
        share a version."""
        with self._state:
            seq = self._seq
            self._seq += 1
        counter = max(current.counter if current else 0, floor) + 1
        if counter > MAX_COUNTER:
            raise RingkitError(f"version counter would pass 2**53 - 1 ({counter})")
        return Version(counter, f"{self.writer_id}{seq:012x}")

    def _learn(self, key: str, version: Version | None) -> None:
        with self._state:
            known = self._known
            if key in known:
                del known[key]
            elif len(known) >= 100_000:
                del known[next(iter(known))]
            known[key] = version

    # -- reads ------------------------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        """The newest value of `key`, or None when absent or deleted."""
        return self.get_versioned(key)[0]

    def get_versioned(self, key: str) -> tuple[bytes | None, Version | None]:
        """(value, version) of `key`; (None, version) for a deleted key, (None, None) if absent."""
        newest = self._read_newest(_check_key(key))
        if newest is None:
            return None, None
        return newest.value, newest.version

    def _read_newest(self, key: str) -> Record | None:
        targets, _ = self._targets(key)
        found: dict[str, Record] = {}
        out = self._round("read", {n: ([key],) for n in targets},
                          tally=_Tally.single(self.read_quorum, targets),
                          late=self._late_repair({n: [key] for n in targets}, found))
        counted = [n for n in out.replies if n in out.counted]
        if len(counted) < self.read_quorum:
            raise self._quorum_error("get", key, self.read_quorum, len(counted), out)
        records = {n: out.replies[n][0] for n in out.replies}
        newest = _newest(records.values())
        own = self._own.get(key)
        if own is not None and (newest is None or own.version > newest.version):
            newest = own
        self._learn(key, None if newest is None else newest.version)
        if newest is not None:
            found[key] = newest
            stale = [n for n, r in records.items() if r is None or r.version < newest.version]
            if stale:
                self._round("write", {n: ([newest],) for n in stale}, tally=_NOW)
        return newest

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Values of many keys, one pipelined call per node."""
        records = self._read_many([_check_key(k) for k in keys])
        return [None if r is None else r.value for r in records]

    def _read_many(self, keys: Sequence[str]) -> list[Record | None]:
        per_node: dict[str, list[str]] = {}
        index: dict[str, list[int]] = {}
        for i, (key, targets) in enumerate(zip(keys, self._targets_many(keys))):
            for n in targets:
                per_node.setdefault(n, []).append(key)
                index.setdefault(n, []).append(i)
        found: dict[str, Record] = {}
        out = self._round("read", {n: (ks,) for n, ks in per_node.items()},
                          tally=_Tally(self.read_quorum, len(keys), index),
                          late=self._late_repair(per_node, found))
        answers: dict[str, dict[str, Record | None]] = {}
        for n, records in out.replies.items():
            for key, record in zip(per_node[n], records):
                answers.setdefault(key, {})[n] = record
        results: list[Record | None] = []
        repairs: dict[str, list[Record]] = {}
        for key in keys:
            got = answers.get(key, {})
            counted = sum(1 for n in got if n in out.counted)
            if counted < self.read_quorum:
                raise self._quorum_error("get_many", key, self.read_quorum, counted, out)
            newest = _newest(got.values())
            own = self._own.get(key)
            if own is not None and (newest is None or own.version > newest.version):
                newest = own
            results.append(newest)
            self._learn(key, None if newest is None else newest.version)
            if newest is not None:
                found[key] = newest
                for n, r in got.items():
                    if r is None or r.version < newest.version:
                        repairs.setdefault(n, []).append(newest)
        if repairs:
            self._round("write", {n: (rs,) for n, rs in repairs.items()}, tally=_NOW)
        return results

    # -- writes -----------------------------------------------------------------------------------

    def put(self, key: str, value: bytes, *, if_version: Any = _ABSENT) -> Version:
        """Store `value` under `key`; returns the new version once a write quorum stored it.

        ``if_version=v`` makes it a compare-and-set: it raises VersionConflictError unless the
        newest version is `v` (None: the key must be absent). It is atomic against writers
        going through the same primary (the primary applies it only over exactly `v`); across
        a failover, two writers may each see `v` on different primaries, and the one with the
        higher version wins on every replica.

        Raises :class:`ringkit.QuorumError` when too few replicas answered. Its ``outcome`` is
        "failed" when nothing was written, else "unknown": a replica may have stored the
        value, and it may become visible later (quorum writes cannot take back a partial
        write), or be overwritten by a later write.
        """
        return self._write(_check_key(key), _check_value(value), if_version)

    def delete(self, key: str) -> Version:
        """Delete `key` (a versioned tombstone, purged by repair() after tombstone_grace).
        Failures raise as for :meth:`put`."""
        return self._write(_check_key(key), None, _ABSENT)

    def _record(self, key: str, value: bytes | None, version: Version) -> Record:
        return Record(key, value, version, 0 if value is not None else int(self._wall() * 1000))

    def _write(self, key: str, value: bytes | None, if_version: Any) -> Version:
        if if_version is not _ABSENT and if_version is not None \
                and not isinstance(if_version, Version):
            if isinstance(if_version, tuple) and len(if_version) == 2 \
                    and isinstance(if_version[0], int) and isinstance(if_version[1], str):
                if_version = Version(if_version[0], if_version[1])
            else:
                raise TypeError("if_version must be a Version (from put or get_versioned) or "
                                "None")
        targets, standins = self._targets(key)
        if self._queue is not None and if_version is _ABSENT:
            return self._write_async(key, value, targets)
        maybe = False          # a write that may have been applied somewhere was sent
        # Not before rebalance(): a new node counts but is still empty, so two write quorums
        # over the old and new replicas need not meet (see _write_fast).
        if if_version is _ABSENT and not standins and self._fast and self._pending is None:
            version, maybe = self._write_fast(key, value, targets)
            if version is not None:
                return version
        out = self._round("read", {n: ([key],) for n in targets},
                          tally=_Tally.single(self.read_quorum, targets))
        counted = [n for n in out.replies if n in out.counted]
        if len(counted) < self.read_quorum:
            raise self._quorum_error("put", key, self.read_quorum, len(counted), out,
                                     "unknown" if maybe else "failed")
        current = max((out.replies[n][0].version for n in out.replies
                       if out.replies[n][0] is not None), default=None)
        if if_version is not _ABSENT and current != if_version:
            raise VersionConflictError(f"put {key!r}: expected version {if_version}, found "
                                       f"{current}", key=key, current=current)
        own = self._own.get(key)
        if own is not None and (current is None or own.version > current):
            current = own.version
        version = self._next_version(current, out.floor())
        record = self._record(key, value, version)
        live = [n for n in targets if n not in out.failed]
        acked: list[str] = []
        if if_version is not _ABSENT:
            primary = next((n for n in live if n in out.counted), None)
            if primary is None:
                raise self._quorum_error("put", key, self.write_quorum, 0, out,
                                         "unknown" if maybe else "failed")
            first = self._round("write_if", {primary: ([(record, if_version)],)})
            if primary not in first.replies:
                raise self._quorum_error("put", key, self.write_quorum, 0, first, "unknown")
            if not first.replies[primary][0]:
                raise VersionConflictError(f"put {key!r}: version changed under the primary "
                                           f"{primary}", key=key, current=None)
            acked.append(primary)
            live = [n for n in live if n != primary]
        need = self.write_quorum - len(acked)
        written = self._round("write", {n: ([record],) for n in live},
                              tally=_Tally.single(need, live, extra=standins))
        acked += [n for n in written.replies if n in written.counted or n in standins]
        self._hint(standins, written, [record])
        if self.sloppy:
            self._hint_failed({n: [record] for n in live if n in written.failed
                               and n not in standins}, targets)
        if self.consistency == "eventual":
            self._remember(record)
        self._learn(key, version)
        if len(acked) < self.write_quorum:
            failed = _Outcome(written.replies, {**out.failed, **written.failed},
                              written.counted)
            reached = maybe or bool(acked) or written.reached(live)
            raise self._quorum_error("put", key, self.write_quorum, len(acked), failed,
                                     "unknown" if reached else "failed")
        return version

    def _write_fast(self, key: str, value: bytes | None, targets: list[str]
                    ) -> tuple[Version | None, bool]:
        """One round trip instead of two, where it is safe: write the next version after the
        last one this store saw, to every replica, applied only where that is exactly what the
        replica holds (absent, for a key never seen: then above every floor the replicas
        reported). When a write quorum applied it, every earlier acknowledged write was on one
        of those replicas (two write quorums meet, since 2 * write_quorum > replicas), so the
        new version is above all of them. Otherwise returns None (and whether the write may
        have been applied somewhere) and the caller reads the versions first."""
        with self._state:
            guess = self._known.get(key)
            floor = 0 if guess is not None else max(
                (self._floors.get(n, 0) for n in targets), default=0)
        version = self._next_version(guess, floor)
        record = self._record(key, value, version)
        out = self._round("write_if", {n: ([(record, guess)],) for n in targets},
                          tally=_Tally.single(self.write_quorum, targets, ok=lambda r: r))
        applied = sum(1 for n, ok in out.replies.items() if ok[0] and n in out.counted)
        if applied < self.write_quorum:
            maybe = any(ok[0] for ok in out.replies.values()) or bool(out.late) \
                or any(n in out.failed and n not in out.unsent for n in targets)
            return None, maybe
        if self.sloppy:
            self._hint_failed({n: [record] for n in targets if n in out.failed}, targets)
        self._learn(key, version)
        return version, True

    def put_many(self, items: Mapping[str, bytes] | Iterable[tuple[str, bytes]]) -> list[Version]:
        """Store many values, pipelined: one round trip per node where put's one-round-trip
        path applies, else a pipelined read and a pipelined write. Returns the versions in the
        order of `items`.

        When some keys miss their quorum, raises :class:`ringkit.errors.PartialWriteError`
        (a QuorumError) whose ``outcomes`` give every key's fate: acknowledged (with its
        version), failed (written nowhere) or unknown (see :meth:`put`).
        """
        pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
        keys = [_check_key(k) for k, _ in pairs]
        values = [_check_value(v) for _, v in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError("items: a key appears more than once")
        if not keys:
            return []
        done: dict[str, Version] = {}
        maybe: set[str] = set()
        failures: dict[str, object] = {}
        if self._fast and self._queue is None and not self.sloppy and self._pending is None:
            done, maybe = self._put_many_fast(keys, values)
        rest = [(k, v) for k, v in zip(keys, values) if k not in done]
        outcomes: dict[str, WriteOutcome] = {}
        if rest:
            acked, refused, unknown, failures = self._put_many_read_first(
                [k for k, _ in rest], [v for _, v in rest])
            done.update(acked)
            for key in refused:
                outcomes[key] = WriteOutcome("unknown" if key in maybe else "failed")
            for key in unknown:
                outcomes[key] = WriteOutcome("unknown")
        if outcomes:
            for key in keys:
                if key in done:
                    outcomes[key] = WriteOutcome("acknowledged", done[key])
            unknown_n = sum(1 for o in outcomes.values() if o.status == "unknown")
            failed_n = sum(1 for o in outcomes.values() if o.status == "failed")
            detail = ", ".join(f"{n} ({type(e).__name__ if isinstance(e, BaseException) else e})"
                               for n, e in failures.items()) or "none"
            self._emit("quorum_failed", None, f"put_many: {len(outcomes) - unknown_n - failed_n}"
                                              f" of {len(keys)} acknowledged")
            raise PartialWriteError(
                f"put_many: {len(done)} of {len(keys)} keys acknowledged, {failed_n} failed "
                f"(written nowhere), {unknown_n} unknown (some replicas may have stored them; "
                f"they may become visible later); failed nodes: {detail}",
                outcomes={k: outcomes[k] for k in keys}, failed=failures)
        return [done[k] for k in keys]

    def _put_many_fast(self, keys: list[str], values: list[bytes]
                       ) -> tuple[dict[str, Version], set[str]]:
        """put_many's one-round-trip path (see _write_fast); returns the keys it wrote, and the
        keys it may have written somewhere without a quorum."""
        records = []
        per_node: dict[str, list[tuple[Record, Version | None]]] = {}
        index: dict[str, list[int]] = {}
        all_targets = self._targets_many(keys)
        with self._state:
            guesses = [self._known.get(key) for key in keys]
            first = self._seq                # a block of sequence numbers, one lock taken
            self._seq += len(keys)
            floors = dict(self._floors)
        for offset, (key, value, guess, targets) in enumerate(
                zip(keys, values, guesses, all_targets)):
            floor = 0 if guess is not None else max((floors.get(n, 0) for n in targets),
                                                    default=0)
            counter = max(guess.counter if guess else 0, floor) + 1
            if counter > MAX_COUNTER:
                raise RingkitError(f"version counter would pass 2**53 - 1 ({counter})")
            record = Record(key, value, Version(counter, f"{self.writer_id}{first + offset:012x}"))
            records.append(record)
            pair = (record, guess)
            for n in targets:
                per_node.setdefault(n, []).append(pair)
                index.setdefault(n, []).append(offset)
        out = self._round("write_if", {n: (batch,) for n, batch in per_node.items()},
                          tally=_Tally(self.write_quorum, len(keys), index, ok=lambda r: r))
        applied = np.zeros(len(keys), dtype=np.int64)
        touched = np.zeros(len(keys), dtype=bool)
        for n, oks in out.replies.items():
            ix = np.asarray(index[n], dtype=np.intp)
            flags = np.asarray(oks, dtype=bool)
            touched[ix] |= flags
            if n in out.counted:
                applied[ix] += flags
        for n in (*(f for f in out.failed if f not in out.unsent), *out.late):
            if n in index:
                touched[np.asarray(index[n], dtype=np.intp)] = True
        done = {}
        for i in np.flatnonzero(applied >= self.write_quorum).tolist():
            record = records[i]
            done[record.key] = record.version
            self._learn(record.key, record.version)
        maybe = {records[i].key for i in np.flatnonzero(touched).tolist()
                 if records[i].key not in done}
        return done, maybe

    def _put_many_read_first(self, keys: list[str], values: list[bytes]
                             ) -> tuple[dict[str, Version], list[str], list[str],
                                        dict[str, object]]:
        """Read the versions, then write: returns (acknowledged, keys that missed the read
        quorum and were not written, keys written without a quorum, failed nodes)."""
        per_node: dict[str, list[str]] = {}
        index: dict[str, list[int]] = {}
        for i, (key, targets) in enumerate(zip(keys, self._targets_many(keys))):
            for n in targets:
                per_node.setdefault(n, []).append(key)
                index.setdefault(n, []).append(i)
        out = self._round("read", {n: (ks,) for n, ks in per_node.items()},
                          tally=_Tally(self.read_quorum, len(keys), index))
        current: dict[str, Version | None] = {}
        floor: dict[str, int] = {}
        answered: dict[str, int] = {}
        for n, found in out.replies.items():
            node_floor = out.floors.get(n, 0)
            for key, record in zip(per_node[n], found):
                if n in out.counted:
                    answered[key] = answered.get(key, 0) + 1
                if node_floor > floor.get(key, 0):
                    floor[key] = node_floor
                seen = current.get(key)
                if record is not None and (seen is None or record.version > seen):
                    current[key] = record.version
        refused = [k for k in keys if answered.get(k, 0) < self.read_quorum]
        skip = set(refused)
        records: dict[str, Record] = {}
        for key, value in zip(keys, values):
            if key in skip:
                continue
            seen = current.get(key)
            own = self._own.get(key)
            if own is not None and (seen is None or own.version > seen):
                seen = own.version
            records[key] = Record(key, value, self._next_version(seen, floor.get(key, 0)))
        writes: dict[str, list[Record]] = {}
        windex: dict[str, list[int]] = {}
        order = {k: i for i, k in enumerate(records)}
        for n, ks in per_node.items():
            if n in out.failed:
                continue
            batch = [records[k] for k in ks if k in records]
            if batch:
                writes[n] = batch
                windex[n] = [order[r.key] for r in batch]
        written = self._round("write", {n: (rs,) for n, rs in writes.items()},
                              tally=_Tally(self.write_quorum, len(records), windex))
        acks: dict[str, int] = {}
        for n in written.replies:
            if n in written.counted:
                for record in writes[n]:
                    acks[record.key] = acks.get(record.key, 0) + 1
        if self.consistency == "eventual":
            for record in records.values():
                self._remember(record)
        if self.sloppy:
            self._hint_failed({n: rs for n, rs in writes.items() if n in written.failed},
                              list(writes))
        acked: dict[str, Version] = {}
        unknown = []
        reached = {n for n in writes if written.reached([n])}
        for key, record in records.items():
            if acks.get(key, 0) >= self.write_quorum:
                acked[key] = record.version
                self._learn(key, record.version)
            elif any(key in {r.key for r in writes[n]} for n in reached):
                unknown.append(key)
            else:
                refused.append(key)
        failures: dict[str, object] = {**out.failed, **written.failed}
        for n in (*out.late, *written.late):
            failures.setdefault(n, "no answer when the round was decided")
        return acked, refused, unknown, failures

    def _remember(self, record: Record) -> None:
        # Eventual mode: this instance reads its own writes even from stale replicas.
        with self._state:
            held = self._own.get(record.key)
            if held is None or record.version > held.version:
                self._own[record.key] = record
            if len(self._own) > 100_000:
                self._own.pop(next(iter(self._own)))

    # -- sloppy quorums: stand-ins and hints ------------------------------------------------------

    def _hint(self, standins: Mapping[str, str], written: _Outcome,
              records: Sequence[Record]) -> None:
        """Stand-ins that stored `records` keep a hint for the replica they stand for."""
        nodes = self._all_nodes()
        for standin, replica in standins.items():
            if standin in written.replies or standin in written.late:
                try:
                    nodes[standin].add_hints(replica, list(records))
                except Exception as exc:  # noqa: BLE001 - repair() still finds the copy
                    self._mark_down(standin, exc)

    def _hint_failed(self, failed: Mapping[str, Sequence[Record]], targets: Sequence[str]) -> None:
        """Replicas whose write just failed (not yet known down, so no stand-in was chosen):
        the next live node along the ring takes each record with a hint."""
        if not failed:
            return
        by_standin: dict[str, dict[str, list[Record]]] = {}
        for replica, records in failed.items():
            for record in records:
                standin = self._standin(record.key, [*targets, replica])
                if standin is not None:
                    by_standin.setdefault(standin, {}).setdefault(replica, []).append(record)
        if not by_standin:
            return
        copies = {s: ([r for rs in per.values() for r in rs],) for s, per in by_standin.items()}
        written = self._round("write", copies)
        nodes = self._all_nodes()
        for standin, per in by_standin.items():
            if standin not in written.replies:
                continue
            for replica, records in per.items():
                try:
                    nodes[standin].add_hints(replica, records)
                except Exception as exc:  # noqa: BLE001
                    self._mark_down(standin, exc)

    # -- eventual mode: the background replicator --------------------------------------------------

    def _write_async(self, key: str, value: bytes | None, targets: list[str]) -> Version:
        """write_quorum=1: the first live replica that stores the value acknowledges it; the
        others get it from the background replicator (a replica that was thought live but
        fails is skipped here, and hinted by the replicator when sloppy)."""
        candidates = [n for n in targets if self._is_live(n) and self._counts(n)]
        if not candidates:
            raise self._quorum_error("put", key, 1, 0, _Outcome(), "failed")
        out = _Outcome()
        maybe = False
        for primary in candidates:
            out = self._round("read", {primary: ([key],)})
            if primary not in out.replies or primary not in out.counted:
                continue
            found = out.replies[primary][0]
            current = None if found is None else found.version
            own = self._own.get(key)
            if own is not None and (current is None or own.version > current):
                current = own.version
            version = self._next_version(current, out.floor())
            record = self._record(key, value, version)
            maybe = True
            written = self._round("write", {primary: ([record],)})
            if primary not in written.replies or primary not in written.counted:
                out = written
                continue
            self._remember(record)
            assert self._queue is not None
            try:
                self._queue.put((record, [n for n in targets if n != primary]),
                                timeout=self._timeout)
            except queue.Full:
                log.warning("ringkit replication queue is full; %r reaches its replicas at the "
                            "next repair()", key)
            return version
        raise self._quorum_error("put", key, 1, 0, out, "unknown" if maybe else "failed")

    def _replicate_loop(self) -> None:
        assert self._queue is not None
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                record, others = item
                out = self._round("write", {n: ([record],) for n in others})
                if self.sloppy:
                    self._hint_failed({n: [record] for n in others if n in out.failed},
                                      [*others])
            except Exception:  # noqa: BLE001 - the next repair() catches up
                log.exception("ringkit replication: background copy failed")
            finally:
                self._queue.task_done()

    def lag(self) -> int:
        """Writes acknowledged but not yet copied to their replicas (eventual mode)."""
        return 0 if self._queue is None else self._queue.qsize()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the background replicator has copied every acknowledged write."""
        if self._queue is None:
            return True
        deadline = None if timeout is None else self._clock() + timeout
        while self._queue.unfinished_tasks:
            if deadline is not None and self._clock() >= deadline:
                return False
            time.sleep(0.001)
        return True

    # -- repair, hinted handoff, membership -------------------------------------------------------

    def handoff(self) -> int:
        """Deliver hints held for nodes that are back; returns how many were delivered."""
        delivered = 0
        nodes = self._all_nodes()
        for holder_name, holder in nodes.items():
            if not self._is_live(holder_name):
                continue
            for target in nodes:
                if target == holder_name or not self._is_live(target):
                    continue
                try:
                    records = holder.hints(target)
                except Exception as exc:  # noqa: BLE001
                    self._mark_down(holder_name, exc)
                    break
                if not records:
                    continue
                out = self._round("write", {target: (records,)}, every=True)
                if target in out.replies:
                    holder.drop_hints(target, records)
                    delivered += len(records)
                    self._emit("hints_delivered", target, f"{len(records)} from {holder_name}")
        return delivered

    def repair(self, *, batch: int = 500) -> RepairReport:
        """Anti-entropy: bring every replica of every key up to date, in batches.

        Reads every key's versions from all its replicas, writes the newest to stale ones,
        delivers hints, purges tombstones older than ``tombstone_grace`` that every replica
        holds (raising each node's version floor, so that no later version of a purged key is
        numbered below it), and lets nodes that came back empty (or are new) count again once
        they were refilled by a pass that reached every node.
        """
        report = RepairReport()
        self.probe()
        report.hints_delivered = self.handoff()
        nodes = self._all_nodes()
        keys: set[str] = set()
        reachable = []
        for name, node in nodes.items():
            try:
                for chunk in node.scan(batch):
                    keys.update(chunk)
                reachable.append(name)
            except Exception as exc:  # noqa: BLE001
                self._mark_down(name, exc)
                report.nodes_unreachable.append(name)
        ordered = sorted(keys)
        clean = {name: True for name in reachable}
        unread: set[str] = set()
        now_ms = int(self._wall() * 1000)
        for start in range(0, len(ordered), batch):
            chunk = ordered[start:start + batch]
            per_node: dict[str, list[str]] = {}
            for key in chunk:
                targets, _ = self._targets(key)
                for n in targets:
                    per_node.setdefault(n, []).append(key)
            out = self._round("read", {n: (ks,) for n, ks in per_node.items()}, every=True)
            for n in (*out.failed, *out.late):
                clean[n] = False
                unread.add(n)
            answers: dict[str, dict[str, Record | None]] = {}
            for n, records in out.replies.items():
                for key, record in zip(per_node[n], records):
                    answers.setdefault(key, {})[n] = record
            writes: dict[str, list[Record]] = {}
            purge: dict[str, list[Record]] = {}
            for key in chunk:
                found = answers.get(key, {})
                newest = _newest(found.values())
                report.keys_checked += 1
                if newest is None:
                    continue
                prefs = self._ring.preference_list(key, self.replicas)
                # Purge only once every replica holds the tombstone itself (or nothing): a
                # replica still holding an older live value would otherwise outlive the
                # tombstone and bring the deleted value back. Such a replica gets the tombstone
                # below, and the next repair() purges it.
                held = {n: None if r is None else r.version for n, r in found.items()}
                settled = all(n in held and held[n] in (None, newest.version) for n in prefs)
                if newest.tombstone and settled and \
                        now_ms - newest.deleted_ms >= self.tombstone_grace * 1000:
                    for n, r in found.items():
                        if r is not None:
                            purge.setdefault(n, []).append(r)
                    continue
                for n, r in found.items():
                    if n in prefs and (r is None or r.version < newest.version):
                        writes.setdefault(n, []).append(newest)
                        report.replicas_repaired += 1
            if writes:
                written = self._round("write", {n: (rs,) for n, rs in writes.items()},
                                      every=True)
                for n in (*written.failed, *written.late):
                    clean[n] = False
            for n, records in purge.items():
                try:
                    nodes[n].remove(records)
                    report.tombstones_purged += len(records)
                    self._note_floor(n, max(r.version.counter for r in records))
                except Exception as exc:  # noqa: BLE001
                    self._mark_down(n, exc)
        # A node that came back empty is refilled only by a pass that scanned and read every
        # node: the one other copy of an acknowledged write may be on a node that this pass
        # missed, and counting the empty node then would let a read miss that write.
        complete = not report.nodes_unreachable and not unread
        if complete:
            self._refilled([n for n, ok in clean.items() if ok], report)
        return report

    def _refilled(self, candidates: Iterable[str], report: RepairReport) -> None:
        """Mark refilled nodes ready, after raising their floor to every node's (the keys they
        hold were purged elsewhere at counters up to it)."""
        floor = max(self._floors.values(), default=0)
        nodes = self._all_nodes()
        changed = False
        for name in candidates:
            if self._counts(name) or not self._is_live(name) \
                    or self._foreign(self._markers.get(name)):
                continue
            node = nodes[name]
            marker = self._marker(MARKER_READY)
            try:
                if floor:
                    node.raise_floor(floor)
                node.set_marker(marker, only_if_missing=False)
            except Exception as exc:  # noqa: BLE001
                self._mark_down(name, exc)
                continue
            self._observe(name, marker)
            report.nodes_refilled.append(name)
            self._emit("node_refilled", name)
            changed = True
        if changed:
            self._remember_members()

    def add_node(self, name: str, node: Node) -> None:
        """Add a node. Until :meth:`rebalance`, reads and writes also go to the old replicas.
        A Redis node without a marker counts once rebalance() (or repair()) filled it."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty str, got {name!r}")
        if not isinstance(node, Node):
            raise TypeError(f"node must be a node (MemoryNode, RedisNode), got "
                            f"{type(node).__name__}")
        with self._state:
            if name in self._nodes:
                raise ValueError(f"name: node {name!r} is already in the store")
            if self._pending is None:
                self._pending = (self._ring, dict(self._nodes))
            self._nodes[name] = node
            self._ring = HashRing(list(self._nodes), vnodes=self._vnodes)
            self._membership_changed()
        self._adopt(name, node)

    def remove_node(self, name: str) -> None:
        """Remove a node. Until :meth:`rebalance`, its data is still read (while it answers)."""
        with self._state:
            if name not in self._nodes:
                raise UnknownNodeError(name, f"node {name!r} is not in the store")
            if len(self._nodes) - 1 < self.replicas:
                raise ValueError(f"name: removing {name!r} would leave fewer nodes than "
                                 f"replicas ({self.replicas})")
            if self._pending is None:
                self._pending = (self._ring, dict(self._nodes))
            del self._nodes[name]
            self._ring = HashRing(list(self._nodes), vnodes=self._vnodes)
            self._membership_changed()

    def rebalance(self, *, batch: int = 500) -> int:
        """Move the keys whose preference list changed since add_node/remove_node; returns
        how many keys moved. Copies go first; a copy on a node that no longer holds the key is
        deleted only after every new replica answered. Added nodes that were empty count once
        a pass reached every node."""
        with self._state:
            pending = self._pending
        if pending is None:
            return 0
        old_ring, old_nodes = pending
        self.probe()
        nodes = self._all_nodes()
        keys: set[str] = set()
        for name, node in nodes.items():
            try:
                for chunk in node.scan(batch):
                    keys.update(chunk)
            except Exception as exc:  # noqa: BLE001
                if name not in self.nodes:
                    # A removed node that is gone (the usual reason to remove one): its keys
                    # are found on, and copied from, their other replicas.
                    self._mark_down(name, exc)
                    continue
                raise QuorumError(f"rebalance: {name} cannot be scanned", failed={name: exc}) \
                    from exc
        moved = 0
        complete = True
        ordered = sorted(keys)
        old_n = min(self.replicas, len(old_ring))
        for start in range(0, len(ordered), batch):
            chunk = ordered[start:start + batch]
            old_prefs = old_ring.preference_many(chunk, old_n).tolist()
            new_prefs = self._ring.preference_many(chunk, self.replicas).tolist()
            changed = []
            for key, old_row, new_row in zip(chunk, old_prefs, new_prefs):
                old = [old_ring.nodes[i] for i in old_row]
                new = [self._ring.nodes[i] for i in new_row]
                if old != new:
                    changed.append((key, old, new))
            if not changed:
                continue
            per_node: dict[str, list[str]] = {}
            for key, old, new in changed:
                for n in set(old) | set(new):
                    per_node.setdefault(n, []).append(key)
            out = self._round("read", {n: (ks,) for n, ks in per_node.items()}, every=True)
            if out.failed or out.late:
                complete = False
            answers: dict[str, dict[str, Record | None]] = {}
            for n, records in out.replies.items():
                for key, record in zip(per_node[n], records):
                    answers.setdefault(key, {})[n] = record
            writes: dict[str, list[Record]] = {}
            drops: dict[str, list[Record]] = {}
            for key, _, prefs in changed:
                found = answers.get(key, {})
                newest = _newest(found.values())
                if newest is None:
                    continue
                for n in prefs:
                    held = found.get(n)
                    if held is None or held.version < newest.version:
                        writes.setdefault(n, []).append(newest)
                for n, r in found.items():
                    if n not in prefs and r is not None:
                        drops.setdefault(n, []).append(r)
                moved += 1
            written = self._round("write", {n: (rs,) for n, rs in writes.items()}, every=True)
            if written.failed or written.late:
                raise QuorumError(f"rebalance: {len(written.failed) + len(written.late)} nodes "
                                  f"failed while copying",
                                  failed={**written.failed,
                                          **{n: "no answer in time" for n in written.late}})
            for n, records in drops.items():
                holder = nodes.get(n)
                if holder is not None:
                    try:
                        holder.remove(records)
                    except Exception as exc:  # noqa: BLE001 - removed later by repair()
                        self._mark_down(n, exc)
        with self._state:
            if self._pending is pending:
                self._pending = None
                self._membership_changed()
        added = [n for n in self._nodes if n not in old_nodes]
        if complete and added:
            self._refilled(added, RepairReport())
        return moved

    # -- description ------------------------------------------------------------------------------

    @property
    def nodes(self) -> dict[str, Node]:
        """The store's nodes by name."""
        with self._state:
            return dict(self._nodes)

    def status(self) -> dict[str, str]:
        """Each node's state: "up", "down" (its last call failed and it has not answered
        since) or "recovering" (no marker of this store's that says ready: back empty, new
        and not initialized, or another store's)."""
        report = {}
        for name in self._all_nodes():
            # Not _is_live(): that only says whether the down backoff is over, and a node whose
            # backoff ran out is no more up than before.
            if name in self._down_until:
                report[name] = "down"
            elif not self._counts(name):
                report[name] = "recovering"
            else:
                report[name] = "up"
        return report

    def close(self) -> None:
        """Stop the background thread (after the replication queue drained) and close the
        nodes' connections (a node used again reconnects)."""
        if self._queue is not None:
            self._queue.put(None)
            self._replicator.join(timeout=self._timeout)
        for node in self._all_nodes().values():
            close = getattr(node, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001 - closing is best effort
                    log.debug("ringkit replication: closing a node failed", exc_info=True)

    def __enter__(self) -> ReplicatedStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"ReplicatedStore({len(self._nodes)} nodes, replicas={self.replicas}, "
                f"write_quorum={self.write_quorum}, read_quorum={self.read_quorum}, "
                f"consistency={self.consistency!r}, store_id={self.store_id!r})")
