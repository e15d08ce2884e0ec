"""Maintenance of a replicated store: anti-entropy repair, hinted handoff, rebalancing after a
membership change, and marking nodes ready (initialize() for new nodes, the refill of a node
that came back empty).

Every pass asks each node in batches, one vectorised placement lookup per batch, and waits for
every node (a maintenance round never skips a node a quorum round would): a node refilled from a
pass that missed another node could count while missing the one other copy of a write.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ringkit.errors import QuorumError
from ringkit.replication.base import MARKER_READY, Record
from ringkit.replication.placement import Placement
from ringkit.replication.rounds import NodeTable, reconcile

__all__ = ["RepairReport", "initialize", "handoff", "repair", "refill", "rebalance"]

log = logging.getLogger("ringkit.replication")


@dataclass
class RepairReport:
    """What :meth:`ReplicatedStore.repair` did."""

    keys_checked: int = 0
    replicas_repaired: int = 0
    tombstones_purged: int = 0
    hints_delivered: int = 0
    nodes_refilled: list[str] = field(default_factory=list)
    nodes_unreachable: list[str] = field(default_factory=list)


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


def repair(table: NodeTable, placement: Placement, *, tombstone_grace: float, now_ms: int,
           batch: int, emit: Callable[[str, str | None, str], None]) -> RepairReport:
    """Anti-entropy: every replica of every key brought to its newest version, tombstones purged
    once every replica holds them and the grace passed, hints delivered, and nodes that came
    back empty (or are new) marked ready by a pass that reached every node."""
    report = RepairReport()
    table.probe()
    report.hints_delivered = handoff(table, emit)
    ordered = sorted(_scan(table, batch, report.nodes_unreachable))
    reachable = [n for n in table.everyone if n not in report.nodes_unreachable]
    clean = {name: True for name in reachable}
    unread: set[str] = set()
    for start in range(0, len(ordered), batch):
        chunk = ordered[start:start + batch]
        prefs = placement.preference_many(chunk)
        per_node: dict[str, list[str]] = {}
        for key, targets in zip(chunk, placement.targets_many(chunk)):
            for n in targets:
                per_node.setdefault(n, []).append(key)
        answers, missed = _read(table, per_node)
        for n in missed:
            clean[n] = False
            unread.add(n)
        writes: dict[str, list[Record]] = {}
        purge: dict[str, list[Record]] = {}
        for key, holders in zip(chunk, prefs):
            found = answers.get(key, {})
            best, stale = reconcile(found, holders)
            report.keys_checked += 1
            if best is None:
                continue
            # Purge only once every replica holds the tombstone itself (or nothing): a replica
            # still holding an older live value would otherwise outlive the tombstone and bring
            # the deleted value back. Such a replica gets the tombstone below, and the next
            # repair() purges it.
            held = {n: None if r is None else r.version for n, r in found.items()}
            settled = all(n in held and held[n] in (None, best.version) for n in holders)
            if best.tombstone and settled and now_ms - best.deleted_ms >= tombstone_grace * 1000:
                for n, r in found.items():
                    if r is not None:
                        purge.setdefault(n, []).append(r)
                continue
            for n in stale:
                writes.setdefault(n, []).append(best)
                report.replicas_repaired += 1
        if writes:
            written = table.round("write", {n: (rs,) for n, rs in writes.items()}, every=True)
            for n in (*written.failed, *written.late):
                clean[n] = False
        for n, records in purge.items():
            try:
                table.everyone[n].remove(records)
                report.tombstones_purged += len(records)
                table.note_floor(n, max(r.version.counter for r in records))
            except Exception as exc:  # noqa: BLE001
                table.mark_down(n, exc)
    # A node that came back empty is refilled only by a pass that scanned and read every node:
    # the one other copy of an acknowledged write may be on a node that this pass missed, and
    # counting the empty node then would let a read miss that write.
    if not report.nodes_unreachable and not unread:
        refill(table, [n for n, ok in clean.items() if ok], report, emit)
    return report


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


def rebalance(table: NodeTable, placement: Placement, *, added: Iterable[str], batch: int,
              emit: Callable[[str, str | None, str], None]) -> int:
    """Move the keys whose preference list changed since add_node/remove_node; how many moved.
    Copies go first; a copy on a node that no longer holds the key is deleted only after every
    new replica answered. Added nodes that were empty count once a pass reached every node."""
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
        if not changed:
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
    placement.done(old)
    fresh = list(added)
    if complete and fresh:
        refill(table, fresh, RepairReport(), emit)
    return moved
