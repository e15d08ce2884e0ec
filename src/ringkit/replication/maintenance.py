"""Maintenance of a replicated store: anti-entropy repair, hinted handoff, rebalancing after a
membership change, and marking nodes ready (initialize() for new nodes, the refill of a node
that came back empty).

Every pass asks each node in batches, one vectorised placement lookup per batch, and waits for
every node (a maintenance round never skips a node a quorum round would): a node refilled from a
pass that missed another node could count while missing the one other copy of a write.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ringkit.errors import QuorumError
from ringkit.replication import codec
from ringkit.replication.base import MARKER_READY, Record
from ringkit.replication.placement import Placement
from ringkit.replication.rounds import NodeTable, reconcile
from ringkit.ring import HashRing

__all__ = ["RepairReport", "RebalancePlan", "initialize", "handoff", "repair", "refill",
           "rebalance", "bucket_owners", "digest_status", "DigestStatus"]

log = logging.getLogger("ringkit.replication")


@dataclass
class RepairReport:
    """What :meth:`ReplicatedStore.repair` did.

    ``keys_checked`` counts every key the pass covered: ``keys_scanned`` of them had their
    versions read and compared one by one, the others lay in buckets whose digests agreed on
    every replica (``buckets_skipped``). ``keys_repaired`` keys had a stale or missing replica,
    ``replicas_repaired`` copies were written for them, carrying ``bytes_moved`` bytes."""

    keys_checked: int = 0
    replicas_repaired: int = 0
    tombstones_purged: int = 0
    hints_delivered: int = 0
    nodes_refilled: list[str] = field(default_factory=list)
    nodes_unreachable: list[str] = field(default_factory=list)
    keys_scanned: int = 0
    keys_repaired: int = 0
    bytes_moved: int = 0
    buckets_scanned: int = 0
    buckets_skipped: int = 0
    seconds: float = 0.0


#: Buckets whose digests one round asks every node for.
DIGEST_ROUND = 4096


def bucket_owners(ring: HashRing, replicas: int) -> tuple[npt.NDArray[np.bool_],
                                                          npt.NDArray[np.int32]]:
    """For every bucket (codec: the top BUCKET_BITS of a key's ring position): whether all its
    keys have the same preference list, and that list (indices into ``ring.nodes``; rows of
    buckets that are not uniform are meaningless). A bucket is uniform when no ring point lies
    inside its range, so that every key in it goes to the same first point."""
    state = ring._ring_state
    points = np.asarray(state.points_array, dtype=np.uint64)
    owners = np.asarray(state.owners_array, dtype=np.int64)
    count = min(replicas, len(ring.nodes))
    shift = np.uint64(64 - codec.BUCKET_BITS)
    lo = np.arange(codec.N_BUCKETS, dtype=np.uint64) << shift
    first = np.searchsorted(points, lo, side="left")
    # The first point at or past the bucket's end: equal to `first` when none lies inside.
    end = np.searchsorted(points, lo + ((np.uint64(1) << shift) - np.uint64(1)), side="right")
    uniform = first == end
    n_points = len(points)
    cache: dict[int, list[int]] = {}

    def walk(i: int) -> list[int]:
        """The distinct owners clockwise from point i (mod the ring)."""
        i %= n_points
        chosen = cache.get(i)
        if chosen is None:
            chosen = []
            j = i
            while len(chosen) < count:
                owner = int(owners[j])
                if owner not in chosen:
                    chosen.append(owner)
                j = (j + 1) % n_points
            cache[i] = chosen
        return chosen

    table = np.zeros((codec.N_BUCKETS, count), dtype=np.int32)
    start = np.where(first >= n_points, 0, first) % max(n_points, 1)
    for i in np.unique(start).tolist():
        table[start == i] = walk(i)
    # A bucket with points inside is uniform still when every part of it has the same
    # replicas (as a set: repair compares replicas, not their order).
    for b in np.flatnonzero(~uniform).tolist():
        sets = {frozenset(walk(i)) for i in range(int(first[b]), int(end[b]) + 1)}
        if len(sets) == 1:
            uniform[b] = True
            table[b] = sorted(sets.pop())
    return uniform, table


def initialize(table: NodeTable) -> list[str]:
    """Mark the nodes that have no marker and are new as ready; the names it marked. A node
    without a marker that the others remember as a member lost its data: left to repair()."""
    nodes = table.everyone
    markers: dict[str, str | None] = {}
    remembered: set[str] = set()
    for name, node in nodes.items():
        try:
            markers[name] = node.get_marker()
            if hasattr(node, "members"):
                remembered |= set(node.members())
        except Exception as exc:  # noqa: BLE001
            table.mark_down(name, exc)
    marked = []
    for name, marker in markers.items():
        if marker is not None:
            table.observe(name, marker)
            continue
        node = nodes[name]
        if name in remembered:
            log.warning("ringkit replication: %s was a member of this store and lost its data; "
                        "repair() refills it", name)
            table.observe(name, None)
            continue
        try:
            if node.set_marker(table.new_marker(MARKER_READY), only_if_missing=True):
                marked.append(name)
            table.observe(name, node.get_marker())
        except Exception as exc:  # noqa: BLE001
            table.mark_down(name, exc)
    table.remember_members()
    return marked


def handoff(table: NodeTable, emit: Callable[[str, str | None, str], None]) -> int:
    """Deliver the hints held for nodes that are back; how many were delivered."""
    delivered = 0
    nodes = table.everyone
    for holder_name, holder in nodes.items():
        if not table.is_live(holder_name):
            continue
        for target in nodes:
            if target == holder_name or not table.is_live(target):
                continue
            try:
                records = holder.hints(target)
            except Exception as exc:  # noqa: BLE001
                table.mark_down(holder_name, exc)
                break
            if not records:
                continue
            out = table.round("write", {target: (records,)}, every=True)
            if target in out.replies:
                holder.drop_hints(target, records)
                delivered += len(records)
                emit("hints_delivered", target, f"{len(records)} from {holder_name}")
    return delivered


def _scan(table: NodeTable, batch: int, unreachable: list[str] | None) -> set[str]:
    """Every key any node holds. A node that cannot be scanned is marked down and named in
    `unreachable` (None: raise a QuorumError instead)."""
    keys: set[str] = set()
    for name, node in table.everyone.items():
        try:
            for chunk in node.scan(batch):
                keys.update(chunk)
        except Exception as exc:  # noqa: BLE001
            table.mark_down(name, exc)
            if unreachable is None:
                raise QuorumError(f"{name} cannot be scanned", failed={name: exc}) from exc
            unreachable.append(name)
    return keys


def _read(table: NodeTable, per_node: dict[str, list[str]]
          ) -> tuple[dict[str, dict[str, Record | None]], set[str]]:
    """Read a batch from every node of it; answers per key and node, and the nodes that did
    not answer."""
    out = table.round("read", {n: (ks,) for n, ks in per_node.items()}, every=True)
    answers: dict[str, dict[str, Record | None]] = {}
    for n, records in out.replies.items():
        for key, record in zip(per_node[n], records):
            answers.setdefault(key, {})[n] = record
    return answers, set(out.failed) | out.late


Progress = Callable[[int, int, "RepairReport"], object]


def repair(table: NodeTable, placement: Placement, *, tombstone_grace: float, now_ms: int,
           batch: int, emit: Callable[[str, str | None, str], None],
           progress: Progress | None = None, clock: Callable[[], float] = time.monotonic
           ) -> RepairReport:
    """Anti-entropy, bucket by bucket: every replica of every key brought to its newest
    version, tombstones purged once every replica holds them and the grace passed, hints
    delivered, and nodes that came back empty (or are new) marked ready by a pass that reached
    every node.

    Each node first reports a digest per bucket (the XOR of its items' hashes, computed from
    what it holds at that moment). A bucket whose keys share one preference list, whose
    replicas' digests and item counts agree, that no other node holds items of, and that holds
    no tombstone, is in sync and skipped. Every other bucket has its items' versions read from
    every node; the newest version of each key is copied (read from one node that holds it)
    to its replicas that lack it. A digest is never kept between passes, so writes, partial
    writes, purges, stand-ins' copies and rebalancing cannot leave one stale: at worst a
    write racing the pass makes a bucket differ, and it is compared key by key.

    `progress(buckets_done, buckets_total, report)` is called after each round of buckets.
    """
    started = clock()
    report = RepairReport()
    table.probe()
    report.hints_delivered = handoff(table, emit)
    nodes = table.everyone
    digests: dict[str, list[tuple[int, int, int]]] = {name: [] for name in nodes}
    for start in range(0, codec.N_BUCKETS, DIGEST_ROUND):
        part = list(range(start, start + DIGEST_ROUND))
        out = table.round("digests", {n: (part,) for n in digests}, every=True)
        for name in (*out.failed, *out.late):
            if name in digests:
                del digests[name]
                report.nodes_unreachable.append(name)
        for name, rows in out.replies.items():
            if name in digests:
                digests[name] += rows
    reachable = list(digests)
    clean = {name: True for name in reachable}
    ring, old = placement.rings()
    pending = old is not None
    uniform, owner_rows = bucket_owners(ring, placement.replicas)
    names = ring.nodes
    index = {name: i for i, name in enumerate(reachable)}
    xs = np.zeros((len(reachable), codec.N_BUCKETS), dtype=np.uint64)
    ns = np.zeros((len(reachable), codec.N_BUCKETS), dtype=np.int64)
    ts = np.zeros((len(reachable), codec.N_BUCKETS), dtype=np.int64)
    for name, rows in digests.items():
        arr = np.asarray(rows, dtype=object) if rows else np.zeros((0, 3), dtype=object)
        xs[index[name]] = np.asarray([r[0] for r in rows], dtype=np.uint64)
        ns[index[name]] = arr[:, 1].astype(np.int64)
        ts[index[name]] = arr[:, 2].astype(np.int64)
    visit = np.ones(codec.N_BUCKETS, dtype=bool)
    if not pending and not placement.sloppy and len(reachable) == len(nodes):
        # Replica r of each bucket, as a row of the digest arrays (-1: not reachable).
        rows_of = np.asarray([index.get(n, -1) for n in names], dtype=np.int64)
        reps = rows_of[owner_rows]                       # (buckets, replicas)
        cols = np.arange(codec.N_BUCKETS)
        first_x = xs[reps[:, 0], cols]
        first_n = ns[reps[:, 0], cols]
        agree = np.ones(codec.N_BUCKETS, dtype=bool)
        for r in range(reps.shape[1]):
            agree &= (xs[reps[:, r], cols] == first_x) & (ns[reps[:, r], cols] == first_n)
        stray = ns.sum(axis=0) - np.asarray([ns[reps[:, r], cols] for r in
                                             range(reps.shape[1])]).sum(axis=0)
        tombs = ts.sum(axis=0)
        visit = ~(uniform & agree & (stray == 0) & (tombs == 0)) & (ns.sum(axis=0) > 0)
        skipped = ~visit
        report.buckets_skipped = int(skipped.sum())
        report.keys_checked += int(first_n[skipped].sum())
    else:
        # A membership change waiting for rebalance(), stand-ins, or a node out of reach:
        # every bucket any node holds items of is compared key by key.
        visit = ns.sum(axis=0) > 0
    targets = np.flatnonzero(visit).tolist()
    owner_names: dict[int, list[str]] | None = None
    if not pending and not placement.sloppy:
        sets = {b: [names[i] for i in owner_rows[b]] for b in targets if uniform[b]}
        owner_names = sets
    total = len(targets)
    done = 0
    if progress is not None:
        progress(0, total, report)
    # Rounds of about `batch` keys (the most any node holds of each bucket), so that a round's
    # work on a server stays well within the socket timeout whatever the buckets hold.
    weight = ns.max(axis=0) if len(reachable) else np.zeros(codec.N_BUCKETS, dtype=np.int64)
    parts: list[list[int]] = []
    chunk: list[int] = []
    held = 0
    for b in targets:
        chunk.append(b)
        held += max(int(weight[b]), 1)
        if held >= batch:
            parts.append(chunk)
            chunk, held = [], 0
    if chunk:
        parts.append(chunk)
    for part in parts:
        _repair_buckets(table, placement, part, reachable, report, clean,
                        None if owner_names is None else
                        {b: owner_names[b] for b in part if b in owner_names},
                        tombstone_grace=tombstone_grace, now_ms=now_ms)
        done += len(part)
        report.buckets_scanned += len(part)
        if progress is not None:
            progress(done, total, report)
    report.keys_checked += report.keys_scanned
    # A node that came back empty is refilled only by a pass that read every node: the one
    # other copy of an acknowledged write may be on a node that this pass missed, and counting
    # the empty node then would let a read miss that write.
    if not report.nodes_unreachable:
        refill(table, [n for n, ok in clean.items() if ok], report, emit)
    report.seconds = clock() - started
    return report


def _repair_buckets(table: NodeTable, placement: Placement, buckets: list[int],
                    reachable: list[str], report: RepairReport, clean: dict[str, bool],
                    owners: dict[int, list[str]] | None, *, tombstone_grace: float,
                    now_ms: int) -> None:
    """Compare the items of `buckets` on every reachable node, key by key, and repair them.
    `owners` gives the replicas of the buckets whose keys all share them (None: none do)."""
    nodes = table.everyone
    out = table.round("versions", {n: (buckets,) for n in reachable}, every=True)
    for name in (*out.failed, *out.late):
        clean[name] = False
        if name not in report.nodes_unreachable:
            report.nodes_unreachable.append(name)
    answered = set(out.replies)
    maps: dict[int, dict[str, dict[bytes, bytes]]] = {}
    for name, per_bucket in out.replies.items():
        for b, fs, hs in per_bucket:
            maps.setdefault(b, {})[name] = dict(zip(fs, hs))
    cut = codec.VERSION_HEAD
    grace_ms = tombstone_grace * 1000
    fetch: dict[str, list[bytes]] = {}     # node -> keys to read whole from it
    stale_of: dict[bytes, list[str]] = {}  # key -> replicas to write its newest version to
    wanted: dict[bytes, bytes] = {}        # key -> its newest version head
    purge: dict[str, tuple[list[bytes], list[bytes]]] = {}
    irregular: list[tuple[bytes, dict[str, bytes], list[str] | None]] = []
    for b, held_by in maps.items():
        holders = None if owners is None else owners.get(b)
        fields = set().union(*held_by.values())
        report.keys_scanned += len(fields)
        if holders is not None and all(n in held_by or n in answered for n in holders):
            full = [m for n, m in held_by.items() if n in holders]
            first = full[0] if full else {}
            if len(full) and all(m == first for m in full) and len(first) == len(fields) \
                    and not any(h[cut] == 0x74 for h in first.values()):
                # The replicas that hold the bucket agree and no other node holds more: copy it
                # whole to the replicas that lack it (a node refilled after losing its data).
                # (the reads are spread over the replicas that agree)
                agreeing = [n for n in holders if held_by.get(n) == first]
                source = agreeing[b % len(agreeing)]
                for n in holders:
                    if n in answered and held_by.get(n) != first:
                        mine = held_by.get(n, {})
                        missing = [f for f, h in first.items() if mine.get(f) != h]
                        for f in missing:
                            stale_of.setdefault(f, []).append(n)
                        fetch.setdefault(source, []).extend(
                            f for f in missing if f not in wanted)
                        for f in missing:
                            wanted[f] = first[f]
                continue
        for f in fields:
            irregular.append((f, {n: m[f] for n, m in held_by.items() if f in m}, holders))
    if irregular:
        unknown = [f.decode() for f, _, holders in irregular if holders is None]
        looked_up = iter(placement.preference_many(unknown) if unknown else ())
        for f, held, holders in irregular:
            if holders is None:
                holders = next(looked_up)
            top = max(held.values())
            version = top[:cut]
            if top[cut] == 0x74 and len(top) > codec.BLOB_HEAD \
                    and now_ms - int(top[codec.BLOB_HEAD:]) >= grace_ms \
                    and all(n in answered and held.get(n, version)[:cut] == version
                            for n in holders):
                # Purge only once every replica holds the tombstone itself (or nothing): a
                # replica still holding an older live value would otherwise outlive the
                # tombstone and bring the deleted value back. Each node purges the version it
                # holds.
                for n, h in held.items():
                    entry = purge.setdefault(n, ([], []))
                    entry[0].append(f)
                    entry[1].append(h[:cut])
                continue
            stale = [n for n in holders
                     if n in answered and (n not in held or held[n][:cut] != version)]
            if stale:
                stale_of[f] = stale
                wanted[f] = top
                source = next(n for n, h in held.items() if h[:cut] == version)
                fetch.setdefault(source, []).append(f)
    if fetch:
        # Read the newest versions whole from a node that holds each, then write them.
        whole: dict[bytes, bytes] = {}
        asked = {n: (fs, codec.buckets_of(fs)) for n, fs in fetch.items()}
        got = table.round("read_raw", asked, every=True)
        for n, blobs in got.replies.items():
            for f, blob in zip(asked[n][0], blobs):
                if blob is not None and blob[:cut] == wanted[f][:cut]:
                    whole[f] = blob     # (changed since: left to the next pass)
        writes: dict[str, tuple[list[bytes], list[bytes]]] = {}
        for f, blob in whole.items():
            report.keys_repaired += 1
            for n in stale_of[f]:
                entry = writes.setdefault(n, ([], []))
                entry[0].append(f)
                entry[1].append(blob)
                report.replicas_repaired += 1
                report.bytes_moved += len(blob)
        if writes:
            written = table.round("write_raw", {n: (fs, codec.buckets_of(fs), bs)
                                                for n, (fs, bs) in writes.items()}, every=True)
            for n in (*written.failed, *written.late):
                clean[n] = False
        for n in (*got.failed, *got.late):
            clean[n] = False
    for n, (fs, hs) in purge.items():
        try:
            nodes[n].purge_raw(fs, codec.buckets_of(fs), hs)
            report.tombstones_purged += len(fs)
            table.note_floor(n, max(int(h[:14], 16) for h in hs))
        except Exception as exc:  # noqa: BLE001
            table.mark_down(n, exc)


def refill(table: NodeTable, candidates: Iterable[str], report: RepairReport,
           emit: Callable[[str, str | None, str], None]) -> None:
    """Mark refilled nodes ready, after raising their floor to every node's (the keys they hold
    were purged elsewhere at counters up to it)."""
    floor = table.floor()
    nodes = table.everyone
    changed = False
    for name in candidates:
        if table.counts(name) or not table.is_live(name) \
                or table.foreign(table.marker_of(name)):
            continue
        node = nodes[name]
        marker = table.new_marker(MARKER_READY)
        try:
            if floor:
                node.raise_floor(floor)
            node.set_marker(marker, only_if_missing=False)
        except Exception as exc:  # noqa: BLE001
            table.mark_down(name, exc)
            continue
        table.observe(name, marker)
        report.nodes_refilled.append(name)
        emit("node_refilled", name, "")
        changed = True
    if changed:
        table.remember_members()


@dataclass
class RebalancePlan:
    """What :meth:`ReplicatedStore.plan_rebalance` found: ``keys`` whose preference list
    changed, and ``moves[(from_node, to_node)]``, how many keys a replica on `from_node` hands
    to `to_node` (a key whose list gains a node and loses another counts once per pair;
    ``from_node`` is None for a replica added without one leaving, ``to_node`` None for one
    dropped)."""

    keys: int = 0
    moves: dict[tuple[str | None, str | None], int] = field(default_factory=dict)


def rebalance(table: NodeTable, placement: Placement, *, added: Iterable[str], batch: int,
              emit: Callable[[str, str | None, str], None],
              plan: RebalancePlan | None = None,
              progress: Callable[[int, int], object] | None = None) -> int:
    """Move the keys whose preference list changed since add_node/remove_node; how many moved.
    Copies go first; a copy on a node that no longer holds the key is deleted only after every
    new replica answered. Added nodes that were empty count once a pass reached every node.
    With `plan`, nothing is written: the keys that would move are counted into it."""
    old = placement.old
    if old is None:
        return 0
    table.probe()
    current = set(placement.ring.nodes)
    keys: set[str] = set()
    for name, node in table.everyone.items():
        try:
            for chunk in node.scan(batch):
                keys.update(chunk)
        except Exception as exc:  # noqa: BLE001
            table.mark_down(name, exc)
            if name in current:
                raise QuorumError(f"rebalance: {name} cannot be scanned",
                                  failed={name: exc}) from exc
            # A removed node that is gone (the usual reason to remove one): its keys are found
            # on, and copied from, their other replicas.
    moved = 0
    complete = True
    ordered = sorted(keys)
    for start in range(0, len(ordered), batch):
        chunk = ordered[start:start + batch]
        changed = [(key, was, now) for key, was, now in zip(
            chunk, placement.preference_many(chunk, old), placement.preference_many(chunk))
            if was != now]
        if progress is not None:
            progress(min(start + batch, len(ordered)), len(ordered))
        if not changed:
            continue
        if plan is not None:
            plan.keys += len(changed)
            for _, was, now in changed:
                gone = [n for n in was if n not in now]
                new = [n for n in now if n not in was]
                pairs: list[tuple[str | None, str | None]] = list(zip(gone, new))
                pairs += [(None, n) for n in new[len(gone):]]
                pairs += [(n, None) for n in gone[len(new):]]
                for pair in pairs:
                    plan.moves[pair] = plan.moves.get(pair, 0) + 1
            moved += len(changed)
            continue
        per_node: dict[str, list[str]] = {}
        for key, was, now in changed:
            for n in set(was) | set(now):
                per_node.setdefault(n, []).append(key)
        answers, missed = _read(table, per_node)
        if missed:
            complete = False
        writes: dict[str, list[Record]] = {}
        drops: dict[str, list[Record]] = {}
        for key, _, now in changed:
            found = answers.get(key, {})
            best, _ = reconcile(found)
            if best is None:
                continue
            for n in now:
                held = found.get(n)
                if held is None or held.version < best.version:
                    writes.setdefault(n, []).append(best)
            for n, r in found.items():
                if n not in now and r is not None:
                    drops.setdefault(n, []).append(r)
            moved += 1
        written = table.round("write", {n: (rs,) for n, rs in writes.items()}, every=True)
        if written.failed or written.late:
            raise QuorumError(f"rebalance: {len(written.failed) + len(written.late)} nodes "
                              f"failed while copying",
                              failed={**written.failed,
                                      **{n: "no answer in time" for n in written.late}})
        for n, records in drops.items():
            holder = table.everyone.get(n)
            if holder is not None:
                try:
                    holder.remove(records)
                except Exception as exc:  # noqa: BLE001 - removed later by repair()
                    table.mark_down(n, exc)
    if plan is not None:
        return moved
    placement.done(old)
    fresh = list(added)
    if complete and fresh:
        refill(table, fresh, RepairReport(), emit)
    return moved


@dataclass
class DigestStatus:
    """Per node: items held (values and tombstones); and over the buckets whose keys share one
    set of replicas, how many hold items and how many of those agree on every replica."""

    items: dict[str, int] = field(default_factory=dict)
    buckets: int = 0
    agreeing: int = 0
    unreachable: list[str] = field(default_factory=list)


def digest_status(table: NodeTable, placement: Placement) -> DigestStatus:
    """Every node's per-bucket digests, compared across each bucket's replicas."""
    status = DigestStatus()
    digests: dict[str, list[tuple[int, int, int]]] = {name: [] for name in table.everyone}
    for start in range(0, codec.N_BUCKETS, DIGEST_ROUND):
        part = list(range(start, start + DIGEST_ROUND))
        out = table.round("digests", {n: (part,) for n in digests}, every=True)
        for name in (*out.failed, *out.late):
            digests.pop(name, None)
            status.unreachable.append(name)
        for name, rows in out.replies.items():
            if name in digests:
                digests[name] += rows
    for name, rows in digests.items():
        status.items[name] = sum(r[1] for r in rows)
    ring, _ = placement.rings()
    uniform, owners = bucket_owners(ring, placement.replicas)
    names = ring.nodes
    for b in range(codec.N_BUCKETS):
        if not uniform[b]:
            continue
        held = [digests[names[i]][b][:2] for i in owners[b] if names[i] in digests]
        if not held or all(n == 0 for _, n in held):
            continue
        status.buckets += 1
        if len(held) == len(owners[b]) and all(h == held[0] for h in held):
            status.agreeing += 1
    return status
