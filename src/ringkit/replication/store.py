"""ReplicatedStore: primary/replica storage over the ring that loses no acknowledged write.

Every key has a preference list from the ring: its primary first, then its replicas. A write
reads the key's current version from a read quorum, takes the next counter (with this store's
writer id as tie-break), sends the value to all replicas at once and returns once a write
quorum stored it. With ``read_quorum + write_quorum > replicas`` every read quorum meets every
write quorum, so a read sees the newest acknowledged version and a new write is numbered above
every acknowledged one, also after a failover: that is what the default (strong) mode enforces.

This module is the key-value API and its versions; the rounds and the nodes' state are in
rounds.py, where keys live in placement.py, repair, handoff and rebalance in maintenance.py,
and eventual mode's background copies in replicator.py.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ringkit.errors import (
    PartialWriteError,
    QuorumError,
    RingkitError,
    UnknownNodeError,
    WriteOutcome,
)
from ringkit.replication import maintenance
from ringkit.replication.base import MAX_COUNTER, Node, Record, Version
from ringkit.replication.maintenance import RepairReport
from ringkit.replication.placement import Placement
from ringkit.replication.replicator import Replicator
from ringkit.replication.rounds import NOW, NodeTable, OneTally, Outcome, Tally, reconcile
from ringkit.validation import check_name

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


def _check_key(key: object) -> str:
    """A key: any str (the empty one too) that encodes to UTF-8."""
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, got {type(key).__name__}")
    return check_name(key, "key") if key else key


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


def _check_seconds(value: object, argname: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"{argname} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


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
            check_name(name, "nodes")
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
        if on_event is not None and not callable(on_event):
            raise TypeError("on_event must be callable or None")
        self.consistency = consistency
        self.sloppy = sloppy
        self.store_id = store_id
        self.writer_id = writer_id
        self.tombstone_grace = _check_seconds(tombstone_grace, "tombstone_grace")
        self._timeout = _check_seconds(timeout, "timeout")
        self._on_event = on_event
        self._wall = wall_clock
        self._clock = clock
        self._state = threading.RLock()
        self._nodes: dict[str, Node] = dict(nodes)
        self._table = NodeTable(self._nodes, store_id=store_id,
                                down_backoff=_check_seconds(down_backoff, "down_backoff"),
                                clock=clock, emit=self._emit)
        self._placement = Placement(self._nodes, replicas=self.replicas, vnodes=vnodes,
                                    sloppy=sloppy, is_live=self._table.is_live)
        self._gone: dict[str, Node] = {}         # removed nodes, read until rebalance()
        self._own: dict[str, Record] = {}        # eventual mode: this instance's writes
        self._known: dict[str, Version | None] = {}  # last version seen per key (bounded)
        self._seq = 0     # per-write sequence number, the tie-break's second half
        self._fast = 2 * self.write_quorum > self.replicas
        self._replicator: Replicator | None = None
        if consistency == "eventual" and self.write_quorum == 1 and self.replicas > 1:
            self._replicator = Replicator(self._copy, size=queue_size, timeout=self._timeout,
                                          clock=clock)
        for name, node in self._nodes.items():
            self._table.adopt(name, node)
        if self._table.any_counted():
            self._table.remember_members()

    # -- events and node state --------------------------------------------------------------------

    def _emit(self, kind: str, node: str | None, detail: str = "") -> None:
        log.info("ringkit replication: %s %s %s", kind, node or "", detail)
        if self._on_event is not None:
            try:
                self._on_event(ReplicationEvent(kind, node, detail))
            except Exception:
                log.exception("ringkit replication on_event hook raised")

    def probe(self) -> dict[str, str]:
        """Ask every node now (ignoring the down backoff, and reconnecting to nodes that
        failed) and return :meth:`status`."""
        self._table.probe()
        return self.status()

    def status(self) -> dict[str, str]:
        """Each node's state: "up", "down" (its last call failed and it has not answered
        since) or "recovering" (no marker of this store's that says ready: back empty, new
        and not initialized, or another store's)."""
        return self._table.status()

    def initialize(self) -> list[str]:
        """Mark the nodes that have no marker and are new as ready, so that they count at once;
        returns the nodes it marked.

        Call it once when a deployment's Redis nodes are new (in-process MemoryNodes need it
        not), before the store is used. A node without a marker that the other nodes remember
        as a member of this store (it restarted empty) is not marked: :meth:`repair` refills
        it first. Never clear the nodes' ``__members__`` keys to get around this.
        """
        return maintenance.initialize(self._table)

    def preference_list(self, key: str) -> list[str]:
        """The key's replica nodes, primary first."""
        return self._placement.preference_list(_check_key(key))

    def _quorum_error(self, action: str, key: str, need: int, got: int, out: Outcome,
                      outcome: Literal["failed", "unknown"] | None = None) -> QuorumError:
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

    def _own_version(self, key: str, version: Version | None) -> Version | None:
        """`version`, or this instance's own write's if newer: eventual mode reads its own
        writes (and numbers the next one above them) even from replicas that lack them."""
        own = self._own.get(key)
        if own is not None and (version is None or own.version > version):
            return own.version
        return version

    def _remember(self, record: Record) -> None:
        # Eventual mode: this instance reads its own writes even from stale replicas.
        with self._state:
            held = self._own.get(record.key)
            if held is None or record.version > held.version:
                self._own[record.key] = record
            if len(self._own) > 100_000:
                self._own.pop(next(iter(self._own)))

    def _record(self, key: str, value: bytes | None, version: Version) -> Record:
        return Record(key, value, version, 0 if value is not None else int(self._wall() * 1000))

    # -- reads ------------------------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        """The newest value of `key`, or None when absent or deleted."""
        return self.get_versioned(key)[0]

    def get_versioned(self, key: str) -> tuple[bytes | None, Version | None]:
        """(value, version) of `key`; (None, version) for a deleted key, (None, None) if absent."""
        found = self._read([_check_key(key)], "get")[0]
        if found is None:
            return None, None
        return found.value, found.version

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Values of many keys, one pipelined call per node."""
        records = self._read([_check_key(k) for k in keys], "get_many")
        return [None if r is None else r.value for r in records]

    def _read(self, keys: Sequence[str], action: str) -> list[Record | None]:
        """Each key's newest record from a read quorum of its replicas; the stale replicas that
        answered are repaired (late ones when their replies come)."""
        if not keys:
            return []
        per_node: dict[str, list[str]] = {}
        index: dict[str, list[int]] = {}
        if len(keys) == 1:
            targets = self._placement.targets(keys[0])[0]
            per_node = {n: [keys[0]] for n in targets}
            tally: Tally | OneTally = OneTally(self.read_quorum, targets)
        else:
            for i, (key, targets) in enumerate(zip(keys, self._placement.targets_many(keys))):
                for n in targets:
                    per_node.setdefault(n, []).append(key)
                    index.setdefault(n, []).append(i)
            tally = Tally(self.read_quorum, len(keys), index)
        best: dict[str, Record] = {}
        out = self._table.round("read", {n: (ks,) for n, ks in per_node.items()}, tally=tally,
                                late=self._late_repair(per_node, best))
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
                raise self._quorum_error(action, key, self.read_quorum, counted, out)
            found, stale = reconcile(got, also=self._own.get(key))
            results.append(found)
            self._learn(key, None if found is None else found.version)
            if found is not None:
                best[key] = found
                for n in stale:
                    repairs.setdefault(n, []).append(found)
        if repairs:
            self._table.round("write", {n: (rs,) for n, rs in repairs.items()}, tally=NOW)
        return results

    def _late_repair(self, keys_of: Mapping[str, Sequence[str]], best: dict[str, Record]
                     ) -> Callable[[str, Node], Any]:
        """Late handlers for a read: a node whose replies come after the read was decided is
        written the newest versions the read found, where it holds older ones."""

        def for_node(name: str, node: Node) -> Any:
            repair = getattr(node, "read_repair", None)
            return None if repair is None else repair(keys_of[name], best)

        return for_node

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

    def _write(self, key: str, value: bytes | None, if_version: Any) -> Version:
        if if_version is not _ABSENT and if_version is not None \
                and not isinstance(if_version, Version):
            if isinstance(if_version, tuple) and len(if_version) == 2 \
                    and isinstance(if_version[0], int) and isinstance(if_version[1], str):
                if_version = Version(if_version[0], if_version[1])
            else:
                raise TypeError("if_version must be a Version (from put or get_versioned) or "
                                "None")
        targets, standins = self._placement.targets(key)
        if self._replicator is not None and if_version is _ABSENT:
            return self._write_one(key, value, targets)
        maybe = False          # a write that may have been applied somewhere was sent
        # Not before rebalance(): a new node counts but is still empty, so two write quorums
        # over the old and new replicas need not meet (see _write_fast).
        if if_version is _ABSENT and not standins and self._fast \
                and not self._placement.pending:
            version, maybe = self._write_fast(key, value, targets)
            if version is not None:
                return version
        out = self._table.round("read", {n: ([key],) for n in targets},
                                tally=OneTally(self.read_quorum, targets))
        counted = [n for n in out.replies if n in out.counted]
        if len(counted) < self.read_quorum:
            raise self._quorum_error("put", key, self.read_quorum, len(counted), out,
                                     "unknown" if maybe else "failed")
        current = max((out.replies[n][0].version for n in out.replies
                       if out.replies[n][0] is not None), default=None)
        if if_version is not _ABSENT and current != if_version:
            raise VersionConflictError(f"put {key!r}: expected version {if_version}, found "
                                       f"{current}", key=key, current=current)
        version = self._next_version(self._own_version(key, current), out.floor())
        record = self._record(key, value, version)
        live = [n for n in targets if n not in out.failed]
        acked: list[str] = []
        if if_version is not _ABSENT:
            primary = next((n for n in live if n in out.counted), None)
            if primary is None:
                raise self._quorum_error("put", key, self.write_quorum, 0, out,
                                         "unknown" if maybe else "failed")
            first = self._table.round("write_if", {primary: ([(record, if_version)],)})
            if primary not in first.replies:
                raise self._quorum_error("put", key, self.write_quorum, 0, first, "unknown")
            if not first.replies[primary][0]:
                raise VersionConflictError(f"put {key!r}: version changed under the primary "
                                           f"{primary}", key=key, current=None)
            acked.append(primary)
            live = [n for n in live if n != primary]
        written = self._table.round(
            "write", {n: ([record],) for n in live},
            tally=OneTally(self.write_quorum - len(acked), live, extra=standins))
        acked += [n for n in written.replies if n in written.counted or n in standins]
        self._hint(standins, written, [record])
        if self.sloppy:
            self._hint_failed({n: [record] for n in live if n in written.failed
                               and n not in standins}, targets)
        if self.consistency == "eventual":
            self._remember(record)
        self._learn(key, version)
        if len(acked) < self.write_quorum:
            failed = Outcome(written.replies, {**out.failed, **written.failed}, written.counted)
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
        version = self._next_version(guess, 0 if guess is not None
                                     else self._table.floor(targets))
        record = self._record(key, value, version)
        out = self._table.round("write_if", {n: ([(record, guess)],) for n in targets},
                                tally=OneTally(self.write_quorum, targets, ok=lambda r: r))
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
        if self._fast and self._replicator is None and not self.sloppy \
                and not self._placement.pending:
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
            self._emit("quorum_failed", None, f"put_many: {len(done)} of {len(keys)} "
                                              f"acknowledged")
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
        all_targets = self._placement.targets_many(keys)
        floors = self._table.floors()
        with self._state:
            guesses = [self._known.get(key) for key in keys]
            first = self._seq                # a block of sequence numbers, one lock taken
            self._seq += len(keys)
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
        out = self._table.round("write_if", {n: (batch,) for n, batch in per_node.items()},
                                tally=Tally(self.write_quorum, len(keys), index, ok=lambda r: r))
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
        for i, (key, targets) in enumerate(zip(keys, self._placement.targets_many(keys))):
            for n in targets:
                per_node.setdefault(n, []).append(key)
                index.setdefault(n, []).append(i)
        out = self._table.round("read", {n: (ks,) for n, ks in per_node.items()},
                                tally=Tally(self.read_quorum, len(keys), index))
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
            if key not in skip:
                version = self._next_version(self._own_version(key, current.get(key)),
                                             floor.get(key, 0))
                records[key] = Record(key, value, version)
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
        written = self._table.round("write", {n: (rs,) for n, rs in writes.items()},
                                    tally=Tally(self.write_quorum, len(records), windex))
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
        reached_keys = {r.key for n in reached for r in writes[n]}
        for key, record in records.items():
            if acks.get(key, 0) >= self.write_quorum:
                acked[key] = record.version
                self._learn(key, record.version)
            elif key in reached_keys:
                unknown.append(key)
            else:
                refused.append(key)
        failures: dict[str, object] = {**out.failed, **written.failed}
        for n in (*out.late, *written.late):
            failures.setdefault(n, "no answer when the round was decided")
        return acked, refused, unknown, failures

    # -- sloppy quorums: stand-ins and hints ------------------------------------------------------

    def _hint(self, standins: Mapping[str, str], written: Outcome,
              records: Sequence[Record]) -> None:
        """Stand-ins that stored `records` keep a hint for the replica they stand for."""
        nodes = self._table.everyone
        for standin, replica in standins.items():
            if standin in written.replies or standin in written.late:
                try:
                    nodes[standin].add_hints(replica, list(records))
                except Exception as exc:  # noqa: BLE001 - repair() still finds the copy
                    self._table.mark_down(standin, exc)

    def _hint_failed(self, failed: Mapping[str, Sequence[Record]], targets: Sequence[str]) -> None:
        """Replicas whose write just failed (not yet known down, so no stand-in was chosen):
        the next live node along the ring takes each record with a hint."""
        if not failed:
            return
        by_standin: dict[str, dict[str, list[Record]]] = {}
        for replica, records in failed.items():
            for record in records:
                standin = self._placement.standin(record.key, [*targets, replica])
                if standin is not None:
                    by_standin.setdefault(standin, {}).setdefault(replica, []).append(record)
        if not by_standin:
            return
        copies = {s: ([r for rs in per.values() for r in rs],) for s, per in by_standin.items()}
        written = self._table.round("write", copies)
        nodes = self._table.everyone
        for standin, per in by_standin.items():
            if standin not in written.replies:
                continue
            for replica, records in per.items():
                try:
                    nodes[standin].add_hints(replica, records)
                except Exception as exc:  # noqa: BLE001
                    self._table.mark_down(standin, exc)

    # -- eventual mode: one replica acknowledges, the replicator copies ----------------------------

    def _write_one(self, key: str, value: bytes | None, targets: list[str]) -> Version:
        """write_quorum=1: the first live replica that stores the value acknowledges it; the
        others get it from the background replicator (a replica that was thought live but
        fails is skipped here, and hinted by the replicator when sloppy)."""
        table = self._table
        candidates = [n for n in targets if table.is_live(n) and table.counts(n)]
        if not candidates:
            raise self._quorum_error("put", key, 1, 0, Outcome(), "failed")
        out = Outcome()
        maybe = False
        for primary in candidates:
            out = table.round("read", {primary: ([key],)})
            if primary not in out.replies or primary not in out.counted:
                continue
            found = out.replies[primary][0]
            current = None if found is None else found.version
            version = self._next_version(self._own_version(key, current), out.floor())
            record = self._record(key, value, version)
            maybe = True
            written = table.round("write", {primary: ([record],)})
            if primary not in written.replies or primary not in written.counted:
                out = written
                continue
            self._remember(record)
            assert self._replicator is not None
            self._replicator.add(record, [n for n in targets if n != primary])
            return version
        raise self._quorum_error("put", key, 1, 0, out, "unknown" if maybe else "failed")

    def _copy(self, record: Record, replicas: Sequence[str]) -> None:
        """The replicator's copy of one record to its other replicas."""
        out = self._table.round("write", {n: ([record],) for n in replicas})
        if self.sloppy:
            self._hint_failed({n: [record] for n in replicas if n in out.failed}, list(replicas))

    def lag(self) -> int:
        """Writes acknowledged but not yet copied to their replicas (eventual mode)."""
        return 0 if self._replicator is None else self._replicator.lag()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the background replicator has copied every acknowledged write."""
        return True if self._replicator is None else self._replicator.flush(timeout)

    # -- maintenance and membership ---------------------------------------------------------------

    def handoff(self) -> int:
        """Deliver hints held for nodes that are back; returns how many were delivered."""
        return maintenance.handoff(self._table, self._emit)

    def repair(self, *, batch: int = 500) -> RepairReport:
        """Anti-entropy: bring every replica of every key up to date, in batches.

        Reads every key's versions from all its replicas, writes the newest to stale ones,
        delivers hints, purges tombstones older than ``tombstone_grace`` that every replica
        holds (raising each node's version floor, so that no later version of a purged key is
        numbered below it), and lets nodes that came back empty (or are new) count again once
        they were refilled by a pass that reached every node.
        """
        batch = _check_count(batch, "batch")
        return maintenance.repair(self._table, self._placement,
                                  tombstone_grace=self.tombstone_grace,
                                  now_ms=int(self._wall() * 1000), batch=batch, emit=self._emit)

    def add_node(self, name: str, node: Node) -> None:
        """Add a node. Until :meth:`rebalance`, reads and writes also go to the old replicas.
        A Redis node without a marker counts once rebalance() (or repair()) filled it."""
        check_name(name, "name")
        if not isinstance(node, Node):
            raise TypeError(f"node must be a node (MemoryNode, RedisNode), got "
                            f"{type(node).__name__}")
        with self._state:
            if name in self._nodes:
                raise ValueError(f"name: node {name!r} is already in the store")
            self._nodes[name] = node
            self._gone.pop(name, None)
            self._placement.change(self._nodes)
            self._membership_changed()
        self._table.adopt(name, node)

    def remove_node(self, name: str) -> None:
        """Remove a node. Until :meth:`rebalance`, its data is still read (while it answers)."""
        with self._state:
            if name not in self._nodes:
                raise UnknownNodeError(name, f"node {name!r} is not in the store")
            if len(self._nodes) - 1 < self.replicas:
                raise ValueError(f"name: removing {name!r} would leave fewer nodes than "
                                 f"replicas ({self.replicas})")
            self._gone[name] = self._nodes.pop(name)
            self._placement.change(self._nodes)
            self._membership_changed()

    def _membership_changed(self) -> None:
        # Caller holds self._state. Before rebalance(), removed nodes are still read.
        everyone = dict(self._nodes)
        if self._placement.pending:
            for name, node in self._gone.items():
                everyone.setdefault(name, node)
        else:
            self._gone = {}
        self._table.everyone = everyone

    def rebalance(self, *, batch: int = 500) -> int:
        """Move the keys whose preference list changed since add_node/remove_node; returns
        how many keys moved. Copies go first; a copy on a node that no longer holds the key is
        deleted only after every new replica answered. Added nodes that were empty count once
        a pass reached every node."""
        batch = _check_count(batch, "batch")
        old = self._placement.old
        if old is None:
            return 0
        added = [n for n in self._nodes if n not in old.nodes]
        moved = maintenance.rebalance(self._table, self._placement, added=added, batch=batch,
                                      emit=self._emit)
        with self._state:
            self._membership_changed()
        return moved

    # -- description ------------------------------------------------------------------------------

    @property
    def nodes(self) -> dict[str, Node]:
        """The store's nodes by name."""
        with self._state:
            return dict(self._nodes)

    def close(self) -> None:
        """Stop the background thread (after the replication queue drained) and close the
        nodes' connections (a node used again reconnects)."""
        if self._replicator is not None:
            self._replicator.close()
        for node in self._table.everyone.values():
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

