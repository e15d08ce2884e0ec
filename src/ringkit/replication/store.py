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

import itertools
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ringkit._records import (
    encode_blobs,
    encode_keys,
    heads_of,
    merge_newest,
    next_counters,
    stale_of,
    values_of,
    versions_of,
)
from ringkit.errors import (
    PartialWriteError,
    QuorumError,
    RingkitError,
    UnknownNodeError,
    WriteOutcome,
)
from ringkit.replication import codec, maintenance
from ringkit.replication.base import MAX_COUNTER, Node, Record, Version
from ringkit.replication.maintenance import DigestStatus, RebalancePlan, RepairReport
from ringkit.replication.placement import Placement
from ringkit.replication.replicator import Replicator
from ringkit.replication.rounds import NOW, NodeTable, OneTally, Outcome, Tally
from ringkit.validation import check_name

__all__ = ["ReplicatedStore", "VersionConflictError", "RepairReport", "RebalancePlan",
           "DigestStatus", "ReplicationEvent"]

log = logging.getLogger("ringkit.replication")

_ABSENT = object()
_VHEAD = codec.VERSION_HEAD
_FLAG = codec.VERSION_HEAD     # the tombstone flag's offset in a blob
_TOMB = 0x74                   # b"t"
_BODY = codec.BLOB_HEAD
_KNOWN_MAX = 100_000           # versions remembered for the one-round-trip path
#: Keys per round of a batch: a bigger put_many / get_many / delete_many is sent as several
#: rounds, so that each round's work on a server (tens of milliseconds) stays well within the
#: nodes' socket timeout, which bounds every round.
ROUND_KEYS = 10_000


def _take(items: Sequence[Any], ix: Any) -> list[Any]:
    """items[i] for each i of the index array `ix`."""
    return [items[i] for i in ix.tolist()]


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


def _encode_keys(keys: Sequence[object]) -> list[bytes]:
    """The UTF-8 bytes of every key of a batch; a key that is not a str, or does not encode,
    is refused as _check_key refuses it."""
    fields = encode_keys(keys if keys.__class__ is list else list(keys))
    if fields is not None:
        return fields
    for k in keys:
        _check_key(k)
    return [k.encode() for k in keys]  # type: ignore[attr-defined]


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
        elif not writer_id or len(writer_id) > codec.WRITER_ID_DIGITS \
                or any(c not in "0123456789abcdef" for c in writer_id):
            raise ValueError(f"writer_id must be a str of 1 to {codec.WRITER_ID_DIGITS} "
                             f"lowercase hex digits, got {writer_id!r}")
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
        self._own: dict[str, bytes] = {}         # eventual mode: this instance's writes (blobs)
        self._known: dict[str, bytes | None] = {}  # last version head seen per key (bounded)
        self._writer_head = writer_id.rjust(codec.WRITER_ID_DIGITS, codec.PAD)
        self._writer_b = self._writer_head.encode()
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
        return Version(counter, f"{self._writer_head}{seq:012x}")

    def _learn(self, key: str, version: Version | None) -> None:
        head = None if version is None else b"%014x%s" % (version.counter,
                                                          version.writer.encode())
        with self._state:
            known = self._known
            if key in known:
                del known[key]
            elif len(known) >= _KNOWN_MAX:
                del known[next(iter(known))]
            known[key] = head

    def _learn_heads(self, heads: Mapping[str, bytes | None]) -> None:
        """_learn of a batch (blobs or their version heads, None for absent)."""
        with self._state:
            known = self._known
            known.update(zip(heads, heads_of(list(heads.values()))))
            excess = len(known) - _KNOWN_MAX
            if excess > 0:
                for key in list(itertools.islice(known, excess)):
                    del known[key]

    def _learn_many(self, keys: Sequence[str], blobs: Sequence[bytes | None]) -> None:
        self._learn_heads(dict(zip(keys, blobs)))

    def _guess(self, key: str) -> Version | None:
        head = self._known.get(key)
        return None if head is None else codec.version_of(head)

    def _own_version(self, key: str, version: Version | None) -> Version | None:
        """`version`, or this instance's own write's if newer: eventual mode reads its own
        writes (and numbers the next one above them) even from replicas that lack them."""
        own = self._own.get(key)
        if own is not None:
            mine = codec.version_of(own)
            if version is None or mine > version:
                return mine
        return version

    def _remember(self, record: Record) -> None:
        # Eventual mode: this instance reads its own writes even from stale replicas.
        blob = codec.encode(record)
        with self._state:
            held = self._own.get(record.key)
            if held is None or blob > held:
                self._own[record.key] = blob
            if len(self._own) > _KNOWN_MAX:
                self._own.pop(next(iter(self._own)))

    def _record(self, key: str, value: bytes | None, version: Version) -> Record:
        return Record(key, value, version, 0 if value is not None else int(self._wall() * 1000))

    # -- reads ------------------------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        """The newest value of `key`, or None when absent or deleted."""
        blob = self._read_blobs([_check_key(key)], "get")[0]
        return None if blob is None or blob[_FLAG] == _TOMB else blob[_BODY:]

    def get_versioned(self, key: str) -> tuple[bytes | None, Version | None]:
        """(value, version) of `key`; (None, version) for a deleted key, (None, None) if absent."""
        found = self._read([_check_key(key)], "get")[0]
        if found is None:
            return None, None
        return found.value, found.version

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Values of many keys (None where absent or deleted): one pipelined call per node,
        each key asked of its replicas and answered by its newest version among a read
        quorum; stale replicas that answered are repaired."""
        keys = list(keys)
        fields = _encode_keys(keys)
        blobs: list[bytes | None] = []
        for start in range(0, len(keys), ROUND_KEYS):
            stop = start + ROUND_KEYS
            blobs += self._read_blobs(keys[start:stop], "get_many", fields[start:stop])
        return values_of(blobs)

    def _read(self, keys: Sequence[str], action: str) -> list[Record | None]:
        return [None if b is None else codec.decode(k, b)
                for k, b in zip(keys, self._read_blobs(keys, action))]

    def _read_blobs(self, keys: Sequence[str], action: str,
                    fields: list[bytes] | None = None) -> list[bytes | None]:
        """Each key's newest blob from a read quorum of its replicas; the stale replicas that
        answered are repaired (late ones when their replies come)."""
        n = len(keys)
        if not n:
            return []
        if fields is None:
            fields = [k.encode() for k in keys]
        if n == 1:
            return [self._read_one(keys[0], fields[0], action)]
        buckets = codec.buckets_of(fields)
        groups = self._placement.group_many(fields)
        tally = Tally(self.read_quorum, n, groups)
        per_node = {name: (fields, buckets, ix) for name, ix in groups.items()}
        newest: dict[bytes, bytes] = {}
        out = self._table.round("read_raw", per_node, tally=tally,
                                late=self._late_repair(per_node, newest))
        best: list[bytes | None] = [None] * n
        counted = np.zeros(n, dtype=np.int64)
        for name, rows in out.replies.items():
            ix = groups[name]
            if name in out.counted:
                counted[ix] += 1
            merge_newest(best, ix, rows if rows.__class__ is list else list(rows))
        short = np.flatnonzero(counted < self.read_quorum)
        if len(short):
            i = int(short[0])
            raise self._quorum_error(action, keys[i], self.read_quorum, int(counted[i]), out)
        if self._own:
            for i, key in enumerate(keys):
                own = self._own.get(key)
                if own is not None and (best[i] is None or own > best[i]):  # type: ignore[operator]
                    best[i] = own
        repairs: dict[str, tuple[list[bytes], Any, list[bytes], Any]] = {}
        filled: list[bytes] | None = None
        for name, rows in out.replies.items():
            stale = stale_of(best, groups[name], rows if rows.__class__ is list else list(rows))
            if len(stale):
                if filled is None:
                    filled = [b or b"" for b in best]
                repairs[name] = (fields, buckets, filled, stale)
        if out.late:
            # The late nodes' handlers (run when their replies come) write them these.
            newest.update((f, b) for f, b in zip(fields, best) if b is not None)
        if repairs:
            self._table.round("write_raw", repairs, tally=NOW)
        self._learn_many(keys, best)
        return best

    def _read_one(self, key: str, field: bytes, action: str) -> bytes | None:
        """_read_blobs of one key, without the batch machinery."""
        targets = self._placement.targets(key)[0]
        one = ([field], [codec.bucket_of(field)], None)
        per_node = {n: one for n in targets}
        newest: dict[bytes, bytes] = {}
        out = self._table.round("read_raw", per_node,
                                tally=OneTally(self.read_quorum, targets),
                                late=self._late_repair(per_node, newest))
        counted = sum(1 for n in out.replies if n in out.counted)
        if counted < self.read_quorum:
            raise self._quorum_error(action, key, self.read_quorum, counted, out)
        rows = [r[0] for r in out.replies.values()]
        held = [r for r in rows if r is not None]
        own = self._own.get(key) if self._own else None
        if own is not None:
            held.append(own)
        best = max(held) if held else None
        if best is not None:
            stale = [n for n, r in out.replies.items() if r[0] != best]
            if stale:
                self._table.round("write_raw", {n: (one[0], one[1], [best]) for n in stale},
                                  tally=NOW)
            if out.late:
                newest[field] = best
        self._learn_heads({key: best})
        return best

    def _late_repair(self, per_node: Mapping[str, tuple[list[bytes], Any, Any]],
                     newest: dict[bytes, bytes]) -> Callable[[str, Node], Any]:
        """Late handlers for a read: a node whose replies come after the read was decided is
        written the newest versions the read found, where it holds older ones."""

        def for_node(name: str, node: Node) -> Any:
            repair = getattr(node, "read_repair", None)
            if repair is None:
                return None
            return repair(*per_node[name], newest)

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
        field = key.encode()
        one = ([field], [codec.bucket_of(field)])
        # Not before rebalance(): a new node counts but is still empty, so two write quorums
        # over the old and new replicas need not meet (see _write_fast).
        if if_version is _ABSENT and not standins and self._fast \
                and not self._placement.pending:
            version, maybe = self._write_fast(key, value, targets, one)
            if version is not None:
                return version
        out = self._table.round("read_raw", {n: one for n in targets},
                                tally=OneTally(self.read_quorum, targets))
        counted = [n for n in out.replies if n in out.counted]
        if len(counted) < self.read_quorum:
            raise self._quorum_error("put", key, self.read_quorum, len(counted), out,
                                     "unknown" if maybe else "failed")
        held = [r[0] for r in out.replies.values() if r[0] is not None]
        current = codec.version_of(max(held)) if held else None
        if if_version is not _ABSENT and current != if_version:
            raise VersionConflictError(f"put {key!r}: expected version {if_version}, found "
                                       f"{current}", key=key, current=current)
        version = self._next_version(self._own_version(key, current), out.floor())
        record = self._record(key, value, version)
        blob = [codec.encode(record)]
        live = [n for n in targets if n not in out.failed]
        acked: list[str] = []
        if if_version is not _ABSENT:
            primary = next((n for n in live if n in out.counted), None)
            if primary is None:
                raise self._quorum_error("put", key, self.write_quorum, 0, out,
                                         "unknown" if maybe else "failed")
            expected = b"" if if_version is None else codec.header(
                if_version.counter, if_version.writer, False)[:-1]
            first = self._table.round("write_if_raw", {primary: (*one, blob, [expected])})
            if primary not in first.replies:
                raise self._quorum_error("put", key, self.write_quorum, 0, first, "unknown")
            if not first.replies[primary][0]:
                raise VersionConflictError(f"put {key!r}: version changed under the primary "
                                           f"{primary}", key=key, current=None)
            acked.append(primary)
            live = [n for n in live if n != primary]
        written = self._table.round(
            "write_raw", {n: (*one, blob) for n in live},
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

    def _write_fast(self, key: str, value: bytes | None, targets: list[str],
                    one: tuple[list[bytes], list[int]]) -> tuple[Version | None, bool]:
        """One round trip instead of two, where it is safe: write the next version after the
        last one this store saw, to every replica, applied only where that is exactly what the
        replica holds (absent, for a key never seen: then above every floor the replicas
        reported). When a write quorum applied it, every earlier acknowledged write was on one
        of those replicas (two write quorums meet, since 2 * write_quorum > replicas), so the
        new version is above all of them. Otherwise returns None (and whether the write may
        have been applied somewhere) and the caller reads the versions first."""
        with self._state:
            guess = self._known.get(key)
            seq = self._seq
            self._seq += 1
        counter = (int(guess[:14], 16) if guess is not None
                   else self._table.floor(targets)) + 1
        if counter > MAX_COUNTER:
            raise RingkitError(f"version counter would pass 2**53 - 1 ({counter})")
        deleted = 0 if value is not None else int(self._wall() * 1000)
        blob = encode_blobs(one[0], [value], [counter], self._writer_b, seq, deleted)
        out = self._table.round("write_if_raw",
                                {n: (*one, blob, [guess or b""]) for n in targets},
                                tally=OneTally(self.write_quorum, targets, ok=lambda r: r))
        applied = sum(1 for n, ok in out.replies.items() if ok[0] and n in out.counted)
        if applied < self.write_quorum:
            maybe = any(ok[0] for ok in out.replies.values()) or bool(out.late) \
                or any(n in out.failed and n not in out.unsent for n in targets)
            return None, maybe
        version = Version(counter, f"{self._writer_head}{seq:012x}")
        if self.sloppy:
            record = codec.decode(key, blob[0])
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
        if isinstance(items, Mapping):
            keys = list(items)
            raw = list(items.values())
        else:
            pairs = list(items)
            for pair in pairs:
                if not isinstance(pair, tuple) or len(pair) != 2:
                    raise TypeError(f"items must be a mapping or (key, value) pairs, got "
                                    f"{type(pair).__name__}")
            keys = [k for k, _ in pairs]
            raw = [v for _, v in pairs]
        fields = _encode_keys(keys)
        values: list[bytes | None] = raw if all(v.__class__ is bytes for v in raw) \
            else [_check_value(v) for v in raw]
        return self._write_many(keys, values, "put_many", fields)

    def delete_many(self, keys: Iterable[str]) -> list[Version]:
        """Delete many keys (versioned tombstones, as :meth:`delete`), pipelined as
        :meth:`put_many`; returns the tombstones' versions in the order of `keys`. Failures
        raise :class:`ringkit.errors.PartialWriteError` with every key's outcome."""
        if isinstance(keys, (str, bytes)):
            raise TypeError("keys must be an iterable of str keys, not a single "
                            f"{type(keys).__name__}")
        names = list(keys)
        fields = _encode_keys(names)
        return self._write_many(names, [None] * len(names), "delete_many", fields)

    def _write_many(self, keys: list[str], values: list[bytes | None], action: str,
                    fields: list[bytes]) -> list[Version]:
        if len(set(keys)) != len(keys):
            raise ValueError(f"{'items' if action == 'put_many' else 'keys'}: a key appears "
                             f"more than once")
        if not keys:
            return []
        if self._replicator is not None or self.sloppy:
            # Eventual mode's background copies and sloppy quorums' stand-ins go key by key.
            return self._write_each(keys, values, action)
        done: dict[str, bytes] = {}
        outcomes: dict[str, WriteOutcome] = {}
        failures: dict[str, object] = {}
        for start in range(0, len(keys), ROUND_KEYS):
            stop = start + ROUND_KEYS
            self._write_round(keys[start:stop], values[start:stop], fields[start:stop], done,
                              outcomes, failures)
        if outcomes:
            self._partial(action, keys, dict(zip(done, versions_of(list(done.values()),
                                                                   Version))),
                          outcomes, failures)
        return versions_of([done[k] for k in keys], Version)

    def _write_round(self, keys: list[str], values: list[bytes | None], fields: list[bytes],
                     done: dict[str, bytes], outcomes: dict[str, WriteOutcome],
                     failures: dict[str, object]) -> None:
        """One round of a batch (at most ROUND_KEYS keys): the keys acknowledged go to `done`
        (with their blobs), the others to `outcomes`."""
        acked: dict[str, bytes] = {}
        maybe: set[str] = set()
        if self._fast and not self._placement.pending:
            acked, maybe = self._write_many_fast(keys, values, fields)
        done.update(acked)
        if len(acked) < len(keys):
            rest = [i for i, k in enumerate(keys) if k not in acked]
            second, refused, unknown, failed = self._write_many_read_first(
                [keys[i] for i in rest], [values[i] for i in rest], [fields[i] for i in rest])
            done.update(second)
            failures.update(failed)
            for key in refused:
                outcomes[key] = WriteOutcome("unknown" if key in maybe else "failed")
            for key in unknown:
                outcomes[key] = WriteOutcome("unknown")

    def _write_each(self, keys: list[str], values: list[bytes | None], action: str
                    ) -> list[Version]:
        done: dict[str, Version] = {}
        outcomes: dict[str, WriteOutcome] = {}
        failures: dict[str, object] = {}
        for key, value in zip(keys, values):
            try:
                done[key] = self._write(key, value, _ABSENT)
            except QuorumError as exc:
                outcomes[key] = WriteOutcome(exc.outcome or "unknown")
                failures.update(exc.failed)
        if outcomes:
            self._partial(action, keys, done, outcomes, failures)
        return [done[k] for k in keys]

    def _partial(self, action: str, keys: list[str], done: Mapping[str, Version],
                 outcomes: dict[str, WriteOutcome], failures: Mapping[str, object]) -> None:
        for key in keys:
            if key in done:
                outcomes[key] = WriteOutcome("acknowledged", done[key])
        unknown_n = sum(1 for o in outcomes.values() if o.status == "unknown")
        failed_n = sum(1 for o in outcomes.values() if o.status == "failed")
        detail = ", ".join(f"{n} ({type(e).__name__ if isinstance(e, BaseException) else e})"
                           for n, e in failures.items()) or "none"
        self._emit("quorum_failed", None, f"{action}: {len(done)} of {len(keys)} acknowledged")
        raise PartialWriteError(
            f"{action}: {len(done)} of {len(keys)} keys acknowledged, {failed_n} failed "
            f"(written nowhere), {unknown_n} unknown (some replicas may have stored them; "
            f"they may become visible later); failed nodes: {detail}",
            outcomes={k: outcomes[k] for k in keys}, failed=dict(failures))

    def _versions(self, keys: list[str], fields: list[bytes], values: list[bytes | None],
                  counters: Any) -> list[bytes]:
        """Blobs of new versions with the given counters and a fresh block of sequence
        numbers (one lock taken per batch)."""
        n = len(keys)
        with self._state:
            first = self._seq
            self._seq += n
        top = int(np.max(counters))
        if top > MAX_COUNTER:
            raise RingkitError(f"version counter would pass 2**53 - 1 ({top})")
        deleted = int(self._wall() * 1000) if None in values else 0
        return encode_blobs(fields, values, counters, self._writer_b, first, deleted)

    def _write_many_fast(self, keys: list[str], values: list[bytes | None],
                         fields: list[bytes]) -> tuple[dict[str, bytes], set[str]]:
        """The batch's one-round-trip path (see _write_fast); returns the keys it wrote (with
        their blobs' version heads), and the keys it may have written somewhere without a
        quorum."""
        n = len(keys)
        buckets = codec.buckets_of(fields)
        groups = self._placement.group_many(fields)
        floors = self._table.floors()
        floor = np.zeros(n, dtype=np.int64)
        for name, ix in groups.items():
            f = floors.get(name, 0)
            if f:
                np.maximum.at(floor, ix, f)
        with self._state:
            known = self._known
            guesses = [known.get(k) for k in keys]
        counters = next_counters(guesses, floor)
        blobs = self._versions(keys, fields, values, counters)
        expected = [g or b"" for g in guesses]
        per_node = {name: (fields, buckets, blobs, expected, ix) for name, ix in groups.items()}
        out = self._table.round("write_if_raw", per_node,
                                tally=Tally(self.write_quorum, n, groups, ok=lambda r: r))
        applied = np.zeros(n, dtype=np.int64)
        touched = np.zeros(n, dtype=bool)
        for name, oks in out.replies.items():
            ix = groups[name]
            flags = np.asarray(oks, dtype=bool)
            touched[ix] |= flags
            if name in out.counted:
                applied[ix] += flags
        for name in (*(f for f in out.failed if f not in out.unsent), *out.late):
            if name in groups:
                touched[groups[name]] = True
        ok = applied >= self.write_quorum
        if ok.all():
            done = dict(zip(keys, blobs))
            maybe: set[str] = set()
        else:
            done = {keys[i]: blobs[i] for i in np.flatnonzero(ok).tolist()}
            maybe = {keys[i] for i in np.flatnonzero(touched & ~ok).tolist()}
        self._learn_heads(done)
        return done, maybe

    def _write_many_read_first(self, keys: list[str], values: list[bytes | None],
                               fields: list[bytes]
                               ) -> tuple[dict[str, bytes], list[str], list[str],
                                          dict[str, object]]:
        """Read the versions, then write: returns (acknowledged keys and their version heads,
        keys that missed the read quorum and were not written, keys written without a
        quorum, failed nodes)."""
        n = len(keys)
        buckets = codec.buckets_of(fields)
        groups = self._placement.group_many(fields)
        per_node = {name: (fields, buckets, ix) for name, ix in groups.items()}
        out = self._table.round("read_raw", per_node, tally=Tally(self.read_quorum, n, groups))
        current: list[bytes | None] = [None] * n
        floor = np.zeros(n, dtype=np.int64)
        answered = np.zeros(n, dtype=np.int64)
        for name, rows in out.replies.items():
            ix = groups[name]
            if name in out.counted:
                answered[ix] += 1
            f = out.floors.get(name, 0)
            if f:
                np.maximum.at(floor, ix, f)
            for i, row in zip(ix.tolist(), rows):
                if row is not None:
                    cur = current[i]
                    if cur is None or row > cur:
                        current[i] = row
        ok = answered >= self.read_quorum
        refused = [keys[i] for i in np.flatnonzero(~ok).tolist()]
        go = np.flatnonzero(ok)
        acked: dict[str, bytes] = {}
        unknown: list[str] = []
        failures: dict[str, object] = dict(out.failed)
        if len(go):
            floor_l = floor.tolist()
            own = self._own
            counters = []
            for i in go.tolist():
                top = current[i]
                held = own.get(keys[i]) if own else None
                if held is not None and (top is None or held > top):
                    top = held
                counters.append(max(int(top[:14], 16) if top is not None else 0,
                                    floor_l[i]) + 1)
            wkeys = [keys[i] for i in go.tolist()]
            wfields = _take(fields, go)
            wbuckets = buckets[go]
            blobs = self._versions(wkeys, wfields, [values[i] for i in go.tolist()], counters)
            position = np.full(n, -1, dtype=np.intp)
            position[go] = np.arange(len(go))
            writes = {}
            windex = {}
            for name, ix in groups.items():
                if name in out.failed:
                    continue
                mine = position[ix]
                mine = mine[mine >= 0]
                if len(mine):
                    writes[name] = (wfields, wbuckets, blobs, mine)
                    windex[name] = mine
            written = self._table.round("write_raw", writes,
                                        tally=Tally(self.write_quorum, len(go), windex))
            acks = np.zeros(len(go), dtype=np.int64)
            reached = np.zeros(len(go), dtype=bool)
            for name in writes:
                if name in written.counted:
                    acks[windex[name]] += 1
                if written.reached([name]):
                    reached[windex[name]] = True
            for j in range(len(go)):
                if acks[j] >= self.write_quorum:
                    acked[wkeys[j]] = blobs[j]
                elif reached[j]:
                    unknown.append(wkeys[j])
                else:
                    refused.append(wkeys[j])
            self._learn_heads(acked)
            if self.consistency == "eventual":
                for j, key in enumerate(wkeys):
                    self._remember(codec.decode(key, blobs[j]))
            failures.update(written.failed)
            for name in written.late:
                failures.setdefault(name, "no answer when the round was decided")
        for name in out.late:
            failures.setdefault(name, "no answer when the round was decided")
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

    def repair(self, *, batch: int = 20_000,
               progress: Callable[[int, int, RepairReport], object] | None = None
               ) -> RepairReport:
        """Anti-entropy: bring every replica of every key up to date, bucket by bucket.

        Each node reports a digest of each bucket of keys (the top 16 bits of a key's hash);
        buckets whose replicas agree are skipped, the others are compared key by key (rounds of
        about ``batch`` keys) and the newest version of each key is copied to its replicas that
        lack it. Also delivers hints, purges tombstones older than ``tombstone_grace`` that
        every replica holds (raising each node's version floor, so that no later version of a
        purged key is numbered below it), and lets nodes that came back empty (or are new)
        count again once they were refilled by a pass that reached every node.

        ``progress(buckets_done, buckets_to_compare, report)`` is called after each round.
        Returns a :class:`RepairReport` (keys checked, scanned and repaired, bytes moved).
        """
        batch = _check_count(batch, "batch")
        if progress is not None and not callable(progress):
            raise TypeError("progress must be callable or None")
        return maintenance.repair(self._table, self._placement,
                                  tombstone_grace=self.tombstone_grace,
                                  now_ms=int(self._wall() * 1000), batch=batch, emit=self._emit,
                                  progress=progress)

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

    def rebalance(self, *, batch: int = 500,
                  progress: Callable[[int, int], object] | None = None) -> int:
        """Move the keys whose preference list changed since add_node/remove_node; returns
        how many keys moved. Copies go first; a copy on a node that no longer holds the key is
        deleted only after every new replica answered. Added nodes that were empty count once
        a pass reached every node. ``progress(keys_done, keys_total)`` is called per batch."""
        batch = _check_count(batch, "batch")
        old = self._placement.old
        if old is None:
            return 0
        added = [n for n in self._nodes if n not in old.nodes]
        moved = maintenance.rebalance(self._table, self._placement, added=added, batch=batch,
                                      emit=self._emit, progress=progress)
        with self._state:
            self._membership_changed()
        return moved

    def plan_rebalance(self, *, batch: int = 500,
                       progress: Callable[[int, int], object] | None = None) -> RebalancePlan:
        """What :meth:`rebalance` would move, without writing anything: the keys whose
        preference list changed, and how many go from which node to which."""
        batch = _check_count(batch, "batch")
        plan = RebalancePlan()
        if self._placement.old is not None:
            maintenance.rebalance(self._table, self._placement, added=(), batch=batch,
                                  emit=self._emit, plan=plan, progress=progress)
        return plan

    def digest_status(self) -> DigestStatus:
        """Every node's item count, and how many buckets of keys agree on all their replicas
        (from the per-bucket digests repair() compares; nothing is written)."""
        return maintenance.digest_status(self._table, self._placement)

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

