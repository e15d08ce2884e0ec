"""ReplicatedStore: primary/replica storage over the ring that loses no acknowledged write.

Every key has a preference list from the ring: its primary first, then its replicas. A write
reads the key's current version from a read quorum, takes the next counter (with this store's
writer id as tie-break), sends the value to all replicas in parallel and returns once a write
quorum stored it. With ``read_quorum + write_quorum > replicas`` every read quorum meets every
write quorum, so a read sees the newest acknowledged version and a new write is numbered above
every acknowledged one, also after a failover: that is what the default (strong) mode enforces.
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

from ringkit.errors import QuorumError, RingkitError, UnknownNodeError
from ringkit.replication.base import (
    MARKER_READY,
    MARKER_RECOVERING,
    Node,
    NodeDown,
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
    back without its data: it counts towards no quorum until repaired), "node_refilled",
    "quorum_failed" or "hints_delivered"."""

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


def _check_key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, got {type(key).__name__}")
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


class ReplicatedStore:
    """Primary/replica key-value storage over a consistent-hash ring.

    ``nodes`` maps names to node backends (:class:`MemoryNode`, :class:`RedisNode`). Each key
    lives on ``replicas`` nodes, its preference list on the ring; ``replicas=len(nodes)`` is
    the classic single primary with replicas holding everything. ``put`` returns once
    ``write_quorum`` nodes stored the value, ``get`` asks ``read_quorum`` nodes and returns the
    newest version, repairing stale replicas it saw.

    ``consistency="strong"`` (default) requires ``read_quorum + write_quorum > replicas``.
    ``"eventual"`` allows less; there, with ``write_quorum=1``, a put returns once the key's
    primary stored it and a background thread copies it to the replicas through a bounded queue
    (:meth:`lag`). In strong mode every put writes all replicas before it returns.
    Eventual mode can lose acknowledged writes (a primary that dies before its
    queue drained) and can read stale values from other store instances; this instance always
    reads its own writes.

    ``sloppy=True``: when a replica is down, the next live node along the ring takes its
    writes with a hint and hands them back when it returns (:meth:`handoff`, also run by
    :meth:`repair`).

    A dead node is skipped (every call has a timeout; after a failure the node is not asked
    again for ``down_backoff`` seconds). A node that comes back empty (its epoch marker
    vanished) counts towards no quorum until :meth:`repair` refilled it.
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
        self.sloppy = bool(sloppy)
        self.writer_id = writer_id
        self.tombstone_grace = float(tombstone_grace)
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
            self._adopt(name, node, fresh=True)

    # -- node state -------------------------------------------------------------------------------

    def _emit(self, kind: str, node: str | None, detail: str = "") -> None:
        log.info("ringkit replication: %s %s %s", kind, node or "", detail)
        if self._on_event is not None:
            try:
                self._on_event(ReplicationEvent(kind, node, detail))
            except Exception:
                log.exception("ringkit replication on_event hook raised")

    def _adopt(self, name: str, node: Node, *, fresh: bool) -> None:
        """Learn a node's marker; a node without one is marked (ready when `fresh`)."""
        try:
            marker = node.get_marker()
            if marker is None:
                state = MARKER_READY if fresh else MARKER_RECOVERING
                node.set_marker(f"{state}:{secrets.token_hex(6)}", only_if_missing=True)
                marker = node.get_marker()
        except Exception as exc:  # noqa: BLE001 - an unreachable node is adopted later
            self._mark_down(name, exc)
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
                    node.set_marker(f"{MARKER_RECOVERING}:{secrets.token_hex(6)}",
                                    only_if_missing=True)
                    marker = node.get_marker()
                except Exception as exc:  # noqa: BLE001
                    self._mark_down(name, exc)
                    return
            self._emit("node_empty", name, "epoch marker vanished: excluded from quorums "
                                           "until repair()")
        with self._state:
            counting = marker is not None and marker.startswith(MARKER_READY)
            self._markers[name] = marker
            was = self._counting.get(name)
            self._counting[name] = counting
            if name in self._down_until:
                del self._down_until[name]
                self._emit("node_up", name)
        if was and not counting and marker is not None:
            log.warning("ringkit replication: %s is recovering; not counted until repaired", name)

    def _mark_down(self, name: str, exc: BaseException) -> None:
        with self._state:
            first = name not in self._down_until
            self._down_until[name] = self._clock() + self._down_backoff
        if first:
            self._emit("node_down", name, f"{type(exc).__name__}: {exc}")

    def probe(self) -> dict[str, str]:
        """Ask every node now (ignoring the down backoff) and return :meth:`status`."""
        for name, node in self._all_nodes().items():
            try:
                marker = node.get_marker()
            except Exception as exc:  # noqa: BLE001
                self._mark_down(name, exc)
                continue
            self._observe(name, marker)     # clears the down mark, with a node_up event
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

    # -- parallel calls ---------------------------------------------------------------------------

    def _round(self, op: str, args: Mapping[str, tuple[Any, ...]]) -> _Outcome:
        """Send ``op`` to every node named in `args` at once, then collect the answers. A node
        that is marked down, or fails, lands in ``failed``; no call waits longer than its
        node's timeout (RedisNode: socket_timeout). In-process nodes are simply called."""
        out = _Outcome()
        nodes = self._everyone
        down = self._down_until
        answered: list[tuple[str, Any]] = []
        pending = []
        for name, node_args in args.items():
            node = nodes.get(name)
            if node is None:
                out.failed[name] = UnknownNodeError(name)
            elif name in down and not self._is_live(name):
                out.failed[name] = NodeDown(f"{name} is marked down (asked again after "
                                            f"{self._down_backoff} s)")
            else:
                try:
                    if getattr(node, "in_process", False):
                        answered.append((name, getattr(node, op)(*node_args)))
                    else:
                        pending.append((name, node.submit(op, *node_args)))
                except Exception as exc:  # noqa: BLE001 - counted against the quorum
                    out.failed[name] = exc
                    self._mark_down(name, exc)
        for name, call in pending:
            try:
                answered.append((name, call.result()))
            except Exception as exc:  # noqa: BLE001 - counted against the quorum
                out.failed[name] = exc
                self._mark_down(name, exc)
        markers = self._markers
        for name, (marker, reply) in answered:
            if marker is None or markers.get(name) != marker or name in down:
                self._observe(name, marker)
            out.replies[name] = reply
            if marker is not None and marker.startswith(MARKER_READY):
                out.counted.add(name)
        return out

    def _quorum_error(self, action: str, key: str, need: int, got: int,
                      out: _Outcome) -> QuorumError:
        failed: dict[str, object] = dict(out.failed)
        for name in out.replies:
            if name not in out.counted:
                failed[name] = "recovering (came back empty; not counted until repaired)"
        names = ", ".join(f"{n} ({type(e).__name__ if isinstance(e, BaseException) else e})"
                          for n, e in failed.items()) or "none"
        self._emit("quorum_failed", None, f"{action} {key!r}: {got} of {need}")
        return QuorumError(f"{action} {key!r}: {got} nodes answered, {need} needed; failed: "
                           f"{names}", failed=failed)

    # -- versions ---------------------------------------------------------------------------------

    def _next_version(self, current: Version | None) -> Version:
        """The version after `current`: counter + 1, and as tie-break this store's writer id
        with a sequence number, so that no two writes (not even two threads of one store)
        ever share a version."""
        with self._state:
            seq = self._seq
            self._seq += 1
        return Version((current.counter if current else 0) + 1, f"{self.writer_id}{seq:012x}")

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
        out = self._round("read", {n: ([key],) for n in targets})
        counted = [n for n in out.replies if n in out.counted]
        if len(counted) < self.read_quorum:
            raise self._quorum_error("get", key, self.read_quorum, len(counted), out)
        records = {n: out.replies[n][0] for n in out.replies}
        newest = max((r for r in records.values() if r is not None),
                     key=lambda r: r.version, default=None)
        own = self._own.get(key)
        if own is not None and (newest is None or own.version > newest.version):
            newest = own
        self._learn(key, None if newest is None else newest.version)
        if newest is not None:
            stale = [n for n, r in records.items() if r is None or r.version < newest.version]
            if stale:
                self._round("write", {n: ([newest],) for n in stale})
        return newest

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Values of many keys, one pipelined call per node."""
        records = self._read_many([_check_key(k) for k in keys])
        return [None if r is None else r.value for r in records]

    def _read_many(self, keys: Sequence[str]) -> list[Record | None]:
        per_node: dict[str, list[str]] = {}
        for key, targets in zip(keys, self._targets_many(keys)):
            for n in targets:
                per_node.setdefault(n, []).append(key)
        out = self._round("read", {n: (ks,) for n, ks in per_node.items()})
        found: dict[str, dict[str, Record | None]] = {}
        for n, records in out.replies.items():
            for key, record in zip(per_node[n], records):
                found.setdefault(key, {})[n] = record
        results: list[Record | None] = []
        repairs: dict[str, list[Record]] = {}
        for key in keys:
            answers = found.get(key, {})
            if sum(1 for n in answers if n in out.counted) < self.read_quorum:
                raise self._quorum_error("get_many", key, self.read_quorum,
                                         sum(1 for n in answers if n in out.counted), out)
            newest = max((r for r in answers.values() if r is not None),
                         key=lambda r: r.version, default=None)
            own = self._own.get(key)
            if own is not None and (newest is None or own.version > newest.version):
                newest = own
            results.append(newest)
            self._learn(key, None if newest is None else newest.version)
            if newest is not None:
                for n, r in answers.items():
                    if r is None or r.version < newest.version:
                        repairs.setdefault(n, []).append(newest)
        if repairs:
            self._round("write", {n: (rs,) for n, rs in repairs.items()})
        return results

    # -- writes -----------------------------------------------------------------------------------

    def put(self, key: str, value: bytes, *, if_version: Any = _ABSENT) -> Version:
        """Store `value` under `key`; returns the new version once a write quorum stored it.

        ``if_version=v`` makes it a compare-and-set: it raises VersionConflictError unless the
        newest version is `v` (None: the key must be absent). It is atomic against writers
        going through the same primary (the primary applies it only over exactly `v`); across
        a failover, two writers may each see `v` on different primaries, and the one with the
        higher version wins on every replica.
        """
        return self._write(_check_key(key), _check_value(value), if_version)

    def delete(self, key: str) -> Version:
        """Delete `key` (a versioned tombstone, purged by repair() after tombstone_grace)."""
        return self._write(_check_key(key), None, _ABSENT)

    def _write(self, key: str, value: bytes | None, if_version: Any) -> Version:
        if if_version is not _ABSENT and if_version is not None \
                and not isinstance(if_version, Version):
            if isinstance(if_version, tuple) and len(if_version) == 2:
                if_version = Version(int(if_version[0]), str(if_version[1]))
            else:
                raise TypeError("if_version must be a Version (from put or get_versioned) or "
                                "None")
        targets, standins = self._targets(key)
        if self._queue is not None and if_version is _ABSENT:
            return self._write_async(key, value, targets)
        # Not before rebalance(): a new node counts but is still empty, so two write quorums
        # over the old and new replicas need not meet (see _write_fast).
        if if_version is _ABSENT and not standins and self._fast and self._pending is None:
            version = self._write_fast(key, value, targets)
            if version is not None:
                return version
        out = self._round("read", {n: ([key],) for n in targets})
        counted = [n for n in out.replies if n in out.counted]
        if len(counted) < self.read_quorum:
            raise self._quorum_error("put", key, self.read_quorum, len(counted), out)
        current = max((out.replies[n][0].version for n in out.replies
                       if out.replies[n][0] is not None), default=None)
        if if_version is not _ABSENT and current != if_version:
            raise VersionConflictError(f"put {key!r}: expected version {if_version}, found "
                                       f"{current}", key=key, current=current)
        own = self._own.get(key)
        if own is not None and (current is None or own.version > current):
            current = own.version
        version = self._next_version(current)
        record = Record(key, value, version, 0 if value is not None else int(self._wall() * 1000))
        live = [n for n in targets if n in out.replies]
        acked: list[str] = []
        if if_version is not _ABSENT:
            primary = next((n for n in live if n in out.counted), None)
            if primary is None:
                raise self._quorum_error("put", key, self.write_quorum, 0, out)
            first = self._round("write_if", {primary: ([(record, if_version)],)})
            if primary not in first.replies:
                raise self._quorum_error("put", key, self.write_quorum, 0, first)
            if not first.replies[primary][0]:
                raise VersionConflictError(f"put {key!r}: version changed under the primary "
                                           f"{primary}", key=key, current=None)
            acked.append(primary)
            live = [n for n in live if n != primary]
        written = self._round("write", {n: ([record],) for n in live})
        acked += [n for n in written.replies if n in written.counted or n in standins]
        nodes = self._all_nodes()
        for standin, replica in standins.items():
            if standin in written.replies:
                try:
                    nodes[standin].add_hints(replica, [record])
                except Exception as exc:  # noqa: BLE001 - repair() still finds the copy
                    self._mark_down(standin, exc)
        if self.consistency == "eventual":
            self._remember(record)
        self._learn(key, version)
        if len(acked) < self.write_quorum:
            failed = _Outcome(written.replies, {**out.failed, **written.failed},
                              written.counted)
            raise self._quorum_error("put", key, self.write_quorum, len(acked), failed)
        return version

    def _write_fast(self, key: str, value: bytes | None, targets: list[str]) -> Version | None:
        """One round trip instead of two, where it is safe: write the next version after the
        last one this store saw, to every replica, applied only where that is exactly what the
        replica holds (absent, for a key never seen). When a write quorum applied it, every
        earlier acknowledged write was on one of those replicas (two write quorums meet, since
        2 * write_quorum > replicas), so the new version is above all of them. Otherwise
        returns None and the caller reads the versions first."""
        with self._state:
            guess = self._known.get(key)
        version = self._next_version(guess)
        record = Record(key, value, version, 0 if value is not None else int(self._wall() * 1000))
        out = self._round("write_if", {n: ([(record, guess)],) for n in targets})
        applied = sum(1 for n, ok in out.replies.items() if ok[0] and n in out.counted)
        if applied < self.write_quorum:
            return None
        self._learn(key, version)
        return version

    def put_many(self, items: Mapping[str, bytes] | Iterable[tuple[str, bytes]]) -> list[Version]:
        """Store many values, pipelined: one round trip per node where put's one-round-trip
        path applies, else a pipelined read and a pipelined write."""
        pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
        keys = [_check_key(k) for k, _ in pairs]
        values = [_check_value(v) for _, v in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError("items: a key appears more than once")
        done: dict[str, Version] = {}
        if self._fast and self._queue is None and not self.sloppy and self._pending is None:
            done = self._put_many_fast(keys, values)
            if len(done) == len(keys):
                return [done[k] for k in keys]
            rest = [(k, v) for k, v in zip(keys, values) if k not in done]
            keys = [k for k, _ in rest]
            values = [v for _, v in rest]
        versions_by_key = self._put_many_read_first(keys, values)
        versions_by_key.update(done)
        return [versions_by_key[k] for k, _ in pairs]

    def _put_many_fast(self, keys: list[str], values: list[bytes]) -> dict[str, Version]:
        """put_many's one-round-trip path (see _write_fast); returns the keys it wrote."""
        records = {}
        per_node: dict[str, list[tuple[Record, Version | None]]] = {}
        with self._state:
            guesses = [self._known.get(key) for key in keys]
            first = self._seq                # a block of sequence numbers, one lock taken
            self._seq += len(keys)
        for offset, (key, value, guess, targets) in enumerate(
                zip(keys, values, guesses, self._targets_many(keys))):
            counter = (guess.counter if guess else 0) + 1
            record = Record(key, value, Version(counter, f"{self.writer_id}{first + offset:012x}"))
            records[key] = record
            pair = (record, guess)
            for n in targets:
                per_node.setdefault(n, []).append(pair)
        out = self._round("write_if", {n: (batch,) for n, batch in per_node.items()})
        applied: dict[str, int] = {}
        for n, oks in out.replies.items():
            if n in out.counted:
                for (record, _), ok in zip(per_node[n], oks):
                    if ok:
                        applied[record.key] = applied.get(record.key, 0) + 1
        done = {}
        for key, record in records.items():
            if applied.get(key, 0) >= self.write_quorum:
                done[key] = record.version
                self._learn(key, record.version)
        return done

    def _put_many_read_first(self, keys: list[str], values: list[bytes]) -> dict[str, Version]:
        if not keys:
            return {}
        per_node: dict[str, list[str]] = {}
        for key, targets in zip(keys, self._targets_many(keys)):
            for n in targets:
                per_node.setdefault(n, []).append(key)
        out = self._round("read", {n: (ks,) for n, ks in per_node.items()})
        current: dict[str, Version | None] = {}
        answered: dict[str, int] = {}
        for n, records in out.replies.items():
            for key, record in zip(per_node[n], records):
                if n in out.counted:
                    answered[key] = answered.get(key, 0) + 1
                seen = current.get(key)
                if record is not None and (seen is None or record.version > seen):
                    current[key] = record.version
        for key in keys:
            if answered.get(key, 0) < self.read_quorum:
                raise self._quorum_error("put_many", key, self.read_quorum,
                                         answered.get(key, 0), out)
        records = {}
        versions = []
        for key, value in zip(keys, values):
            seen = current.get(key)
            own = self._own.get(key)
            if own is not None and (seen is None or own.version > seen):
                seen = own.version
            version = self._next_version(seen)
            records[key] = Record(key, value, version)
            versions.append(version)
        writes = {n: [records[k] for k in ks] for n, ks in per_node.items() if n in out.replies}
        written = self._round("write", {n: (rs,) for n, rs in writes.items()})
        acks: dict[str, int] = {}
        for n in written.replies:
            if n in written.counted:
                for record in writes[n]:
                    acks[record.key] = acks.get(record.key, 0) + 1
        if self.consistency == "eventual":
            for record in records.values():
                self._remember(record)
        for key in keys:
            if acks.get(key, 0) < self.write_quorum:
                raise self._quorum_error("put_many", key, self.write_quorum, acks.get(key, 0),
                                         _Outcome(written.replies,
                                                  {**out.failed, **written.failed},
                                                  written.counted))
            self._learn(key, records[key].version)
        return dict(zip(keys, versions))

    def _remember(self, record: Record) -> None:
        # Eventual mode: this instance reads its own writes even from stale replicas.
        with self._state:
            held = self._own.get(record.key)
            if held is None or record.version > held.version:
                self._own[record.key] = record
            if len(self._own) > 100_000:
                self._own.pop(next(iter(self._own)))

    # -- eventual mode: the background replicator --------------------------------------------------

    def _write_async(self, key: str, value: bytes | None, targets: list[str]) -> Version:
        primary = next((n for n in targets if self._is_live(n) and self._counts(n)), None)
        if primary is None:
            raise self._quorum_error("put", key, 1, 0, _Outcome())
        out = self._round("read", {primary: ([key],)})
        if primary not in out.replies:
            raise self._quorum_error("put", key, 1, 0, out)
        found = out.replies[primary][0]
        current = None if found is None else found.version
        own = self._own.get(key)
        if own is not None and (current is None or own.version > current):
            current = own.version
        version = self._next_version(current)
        record = Record(key, value, version, 0 if value is not None else int(self._wall() * 1000))
        written = self._round("write", {primary: ([record],)})
        if primary not in written.replies:
            raise self._quorum_error("put", key, 1, 0, written)
        self._remember(record)
        assert self._queue is not None
        try:
            self._queue.put((record, [n for n in targets if n != primary]),
                            timeout=self._timeout)
        except queue.Full:
            log.warning("ringkit replication queue is full; %r reaches its replicas at the next "
                        "repair()", key)
        return version

    def _replicate_loop(self) -> None:
        assert self._queue is not None
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                record, others = item
                self._round("write", {n: ([record],) for n in others})
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
                out = self._round("write", {target: (records,)})
                if target in out.replies:
                    holder.drop_hints(target, records)
                    delivered += len(records)
                    self._emit("hints_delivered", target, f"{len(records)} from {holder_name}")
        return delivered

    def repair(self, *, batch: int = 500) -> RepairReport:
        """Anti-entropy: bring every replica of every key up to date, in batches.

        Reads every key's versions from all its replicas, writes the newest to stale ones,
        delivers hints, purges tombstones older than ``tombstone_grace`` that every replica
        holds, and lets nodes that came back empty count again once they were refilled (by a
        pass that reached every node).
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
            out = self._round("read", {n: (ks,) for n, ks in per_node.items()})
            for n in out.failed:
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
                newest = max((r for r in found.values() if r is not None),
                             key=lambda r: r.version, default=None)
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
                written = self._round("write", {n: (rs,) for n, rs in writes.items()})
                for n in written.failed:
                    clean[n] = False
            for n, records in purge.items():
                try:
                    nodes[n].remove([r for r in records])
                    report.tombstones_purged += len(records)
                except Exception as exc:  # noqa: BLE001
                    self._mark_down(n, exc)
        # A node that came back empty is refilled only by a pass that scanned and read every
        # node: the one other copy of an acknowledged write may be on a node that this pass
        # missed, and counting the empty node then would let a read miss that write.
        complete = not report.nodes_unreachable and not unread
        for name, ok in clean.items():
            if ok and complete and not self._counts(name) and self._is_live(name):
                node = nodes[name]
                marker = f"{MARKER_READY}:{secrets.token_hex(6)}"
                try:
                    node.set_marker(marker, only_if_missing=False)
                except Exception as exc:  # noqa: BLE001
                    self._mark_down(name, exc)
                    continue
                self._observe(name, marker)
                report.nodes_refilled.append(name)
                self._emit("node_refilled", name)
        return report

    def add_node(self, name: str, node: Node) -> None:
        """Add a node. Until :meth:`rebalance`, reads and writes also go to the old replicas."""
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
        self._adopt(name, node, fresh=True)

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
        deleted only after every new replica answered."""
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
        ordered = sorted(keys)
        for start in range(0, len(ordered), batch):
            chunk = ordered[start:start + batch]
            changed = [k for k in chunk
                       if old_ring.preference_list(k, min(self.replicas, len(old_ring)))
                       != self._ring.preference_list(k, self.replicas)]
            if not changed:
                continue
            per_node: dict[str, list[str]] = {}
            for key in changed:
                for n in set(old_ring.preference_list(key, min(self.replicas, len(old_ring)))) \
                        | set(self._ring.preference_list(key, self.replicas)):
                    per_node.setdefault(n, []).append(key)
            out = self._round("read", {n: (ks,) for n, ks in per_node.items()})
            answers: dict[str, dict[str, Record | None]] = {}
            for n, records in out.replies.items():
                for key, record in zip(per_node[n], records):
                    answers.setdefault(key, {})[n] = record
            writes: dict[str, list[Record]] = {}
            drops: dict[str, list[Record]] = {}
            for key in changed:
                found = answers.get(key, {})
                newest = max((r for r in found.values() if r is not None),
                             key=lambda r: r.version, default=None)
                if newest is None:
                    continue
                prefs = self._ring.preference_list(key, self.replicas)
                for n in prefs:
                    if found.get(n) is None or found[n].version < newest.version:  # type: ignore[union-attr]
                        writes.setdefault(n, []).append(newest)
                for n, r in found.items():
                    if n not in prefs and r is not None:
                        drops.setdefault(n, []).append(r)
                moved += 1
            written = self._round("write", {n: (rs,) for n, rs in writes.items()})
            if written.failed:
                raise QuorumError(f"rebalance: {len(written.failed)} nodes failed while "
                                  f"copying", failed=dict(written.failed))
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
        return moved

    # -- description ------------------------------------------------------------------------------

    @property
    def nodes(self) -> dict[str, Node]:
        """The store's nodes by name."""
        with self._state:
            return dict(self._nodes)

    def status(self) -> dict[str, str]:
        """Each node's state: "up", "down" (its last call failed and it has not answered
        since) or "recovering"."""
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
        """Stop the background threads (after the replication queue drained)."""
        if self._queue is not None:
            self._queue.put(None)
            self._replicator.join(timeout=self._timeout)

    def __enter__(self) -> ReplicatedStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"ReplicatedStore({len(self._nodes)} nodes, replicas={self.replicas}, "
                f"write_quorum={self.write_quorum}, read_quorum={self.read_quorum}, "
                f"consistency={self.consistency!r})")
