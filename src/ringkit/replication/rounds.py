"""Fan-out rounds and quorum counting: the store's nodes, what it knows of each (epoch marker,
version floor, down or up), and the round that asks several of them at once.

A round sends an operation to every node named, in-process nodes called directly and network
nodes together through ringkit._redisio, and ends as soon as its outcome is decided: every key
has its quorum of counted replies, or can no longer get one (a :class:`Tally` decides), never
later than the nodes' socket timeouts. A reply counts only when the marker that came with it
says the node is ready and belongs to this store. :func:`reconcile` is the one place that takes
a key's newest record among its replicas' answers and names the stale ones.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ringkit._redisio import gather
from ringkit.errors import UnknownNodeError
from ringkit.replication.base import (
    MARKER_READY,
    MARKER_RECOVERING,
    Node,
    NodeDown,
    NodeState,
    Record,
)
from ringkit.replication.codec import LayoutError

__all__ = ["NodeTable", "Outcome", "Tally", "OneTally", "reconcile", "newest", "NOW"]

log = logging.getLogger("ringkit.replication")


@dataclass
class Outcome:
    """What a round saw, per node."""

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

    def floor(self, names: Iterable[str] | None = None) -> int:
        """The largest version floor among the nodes that answered (of `names`)."""
        if names is None:
            return max(self.floors.values(), default=0)
        return max((self.floors[n] for n in names if n in self.floors), default=0)

    def reached(self, names: Iterable[str]) -> bool:
        """Whether the operation may have been applied by one of `names` (it answered, is
        late, or failed after it was sent)."""
        return any(n in self.replies or n in self.late
                   or (n in self.failed and n not in self.unsent) for n in names)


class OneTally:
    """Quorum counting for a round about one key (no numpy: a single put or get pays nothing
    for it)."""

    __slots__ = ("need", "nodes", "ok", "good", "pending", "seen", "extra")

    def __init__(self, need: int, nodes: Collection[str],
                 ok: Callable[[Any], Sequence[bool]] | None = None,
                 extra: Collection[str] = ()) -> None:
        self.need = need
        self.nodes = nodes
        self.ok = ok
        self.good = 0
        self.pending = len(nodes)
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


class Tally:
    """Quorum counting per key of a batch round, so that the round ends as soon as every key
    has its quorum or can no longer get it. ``index`` maps each node to the positions of its
    keys; ``ok(reply)`` says, per key of a node's reply, whether it counts (None: every key of
    a counted node counts)."""

    __slots__ = ("need", "index", "ok", "good", "pending", "seen", "extra")

    def __init__(self, need: int, n_keys: int, index: Mapping[str, Sequence[int] | np.ndarray],
                 ok: Callable[[Any], Sequence[bool]] | None = None,
                 extra: Collection[str] = ()) -> None:
        self.need = need
        self.index = {n: np.asarray(ix, dtype=np.intp) for n, ix in index.items()}
        self.ok = ok
        self.good = np.zeros(n_keys, dtype=np.int64)
        self.pending = np.zeros(n_keys, dtype=np.int64)
        for ix in self.index.values():
            self.pending[ix] += 1
        self.seen: set[str] = set()
        self.extra = extra

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


#: A round decided at once: fire and forget (read repair writes).
NOW = Tally(0, 0, {})

_IN_PROCESS: set[type] = set()   # node classes seen with in_process = True (a lookup less)


def newest(records: Iterable[Record | None]) -> Record | None:
    """The record with the highest version, or None."""
    return max((r for r in records if r is not None), key=lambda r: r.version, default=None)


def reconcile(found: Mapping[str, Record | None], holders: Collection[str] | None = None,
              also: Record | None = None) -> tuple[Record | None, list[str]]:
    """A key's newest record among its replicas' answers (`found`: node -> record) and `also`
    (this store's own write, in eventual mode), and the nodes (of `holders`, default every node
    that answered) that hold an older one or none."""
    best = newest([*found.values(), also])
    if best is None:
        return None, []
    stale = [n for n, r in found.items()
             if (holders is None or n in holders) and (r is None or r.version < best.version)]
    return best, stale


class NodeTable:
    """The store's nodes and what it knows of them, and the rounds that ask them.

    ``emit(kind, node, detail)`` reports node events (see ReplicationEvent).
    """

    def __init__(self, nodes: Mapping[str, Node], *, store_id: str, down_backoff: float,
                 clock: Callable[[], float], emit: Callable[[str, str | None, str], None]
                 ) -> None:
        self.store_id = store_id
        self.down_backoff = down_backoff
        self._clock = clock
        self._emit = emit
        self._ready = f"{MARKER_READY}:{store_id}:"
        self._guard = threading.RLock()
        self.everyone: dict[str, Node] = dict(nodes)   # replaced, never changed in place
        self._markers: dict[str, str | None] = {}
        self._counting: dict[str, bool] = {}
        self._counted_cache: dict[str | None, bool] = {None: False}
        self._floors: dict[str, int] = {}
        self.down_until: dict[str, float] = {}

    # -- markers ----------------------------------------------------------------------------------

    def new_marker(self, state: str) -> str:
        return f"{state}:{self.store_id}:{secrets.token_hex(6)}"

    def counted(self, marker: str | None) -> bool:
        """Whether a reply that came with `marker` counts towards a quorum of this store."""
        known = self._counted_cache.get(marker)
        if known is not None:
            return known
        assert marker is not None
        # Markers written by ringkit 0.1 ("ready:<epoch>") belong to the default store id.
        counts = marker.startswith(self._ready) or (
            self.store_id == "default" and marker.startswith(MARKER_READY + ":")
            and marker.count(":") == 1)
        if len(self._counted_cache) > 1024:
            self._counted_cache = {None: False}
        self._counted_cache[marker] = counts
        return counts

    def foreign(self, marker: str | None) -> bool:
        if marker is None or marker.count(":") < 2:
            return False
        return marker.split(":", 2)[1] != self.store_id

    def adopt(self, name: str, node: Node) -> None:
        """Learn a node's marker. A node without one counts only if it is new by construction
        (an in-process MemoryNode); a Redis node needs initialize() or repair()."""
        try:
            marker = node.get_marker()
            if marker is None and getattr(node, "is_new", lambda: False)():
                node.set_marker(self.new_marker(MARKER_READY), only_if_missing=True)
                marker = node.get_marker()
        except LayoutError:
            raise                 # another layout's data: refused, never written over
        except Exception as exc:  # noqa: BLE001 - an unreachable node is adopted later
            self.mark_down(name, exc)
            return
        if marker is None:
            log.info("ringkit replication: %s has no marker: it counts once initialize() or "
                     "repair() made it ready", name)
            with self._guard:
                self._markers[name] = None
                self._counting[name] = False
            return
        self.observe(name, marker)

    def observe(self, name: str, marker: str | None) -> None:
        """Update what we know of a node from the marker it answered with."""
        if marker is not None and self._markers.get(name) == marker \
                and name not in self.down_until:
            return  # nothing changed: the common case, without taking the lock
        if marker is None:
            # The node lost its data (restarted empty): it counts for nothing until repaired.
            node = self.everyone.get(name)
            if node is not None:
                try:
                    node.set_marker(self.new_marker(MARKER_RECOVERING), only_if_missing=True)
                    marker = node.get_marker()
                except Exception as exc:  # noqa: BLE001
                    self.mark_down(name, exc)
                    return
            self._emit("node_empty", name, "epoch marker vanished: excluded from quorums "
                                           "until repair()")
        elif self.foreign(marker) and self._markers.get(name) != marker:
            self._emit("node_foreign", name, f"its marker {marker!r} belongs to another store "
                                             f"id: it counts towards no quorum of "
                                             f"{self.store_id!r}")
        with self._guard:
            counting = self.counted(marker)
            self._markers[name] = marker
            was = self._counting.get(name)
            self._counting[name] = counting
            if name in self.down_until:
                del self.down_until[name]
                self._emit("node_up", name, "")
        if was and not counting and marker is not None:
            log.warning("ringkit replication: %s is recovering; not counted until repaired", name)

    def marker_of(self, name: str) -> str | None:
        return self._markers.get(name)

    def note_floor(self, name: str, floor: int) -> None:
        if floor > self._floors.get(name, 0):
            with self._guard:
                if floor > self._floors.get(name, 0):
                    self._floors[name] = floor

    def floor(self, names: Iterable[str] | None = None) -> int:
        """The largest version floor seen of `names` (default: every node)."""
        with self._guard:
            if names is None:
                return max(self._floors.values(), default=0)
            return max((self._floors.get(n, 0) for n in names), default=0)

    def floors(self) -> dict[str, int]:
        with self._guard:
            return dict(self._floors)

    def mark_down(self, name: str, exc: BaseException) -> None:
        with self._guard:
            first = name not in self.down_until
            self.down_until[name] = self._clock() + self.down_backoff
        if first:
            self._emit("node_down", name, f"{type(exc).__name__}: {exc}")

    def is_live(self, name: str) -> bool:
        until = self.down_until.get(name)
        return until is None or self._clock() >= until

    def counts(self, name: str) -> bool:
        return self._counting.get(name, False)

    def any_counted(self) -> bool:
        return any(self._counting.values())

    # -- rounds -----------------------------------------------------------------------------------

    def round(self, op: str, args: Mapping[str, tuple[Any, ...]], *,
              tally: Tally | OneTally | None = None,
              late: Callable[[str, Node], Any] | None = None,
              every: bool = False) -> Outcome:
        """Send ``op`` to every node named in `args` at once and collect the answers, until
        `tally` says the outcome is decided (None: every node answered or timed out). A node
        that is marked down, or fails, lands in ``failed``; one that had not answered when the
        round was decided in ``late``, and its reply goes to ``late(name, node)``'s handler.
        In-process nodes are simply called. `every` (maintenance: repair, probe) asks even a
        node that a quorum round would skip for owing replies or having just failed."""
        out = Outcome()
        nodes = self.everyone
        down = self.down_until
        network: list[tuple[str, Any]] = []
        blocking: list[tuple[str, Any]] = []
        for name, node_args in args.items():
            node = nodes.get(name)
            if node is None:
                out.failed[name] = UnknownNodeError(name)
                out.unsent.add(name)
            elif name in down and not self.is_live(name):
                out.failed[name] = NodeDown(f"{name} is marked down (asked again after "
                                            f"{self.down_backoff} s)")
                out.unsent.add(name)
            elif node.__class__ in _IN_PROCESS or getattr(node, "in_process", False):
                try:
                    state, reply = getattr(node, op)(*node_args)
                except Exception as exc:  # noqa: BLE001 - counted against the quorum
                    out.failed[name] = exc
                    if isinstance(exc, NodeDown):
                        out.unsent.add(name)
                    self.mark_down(name, exc)
                else:
                    _IN_PROCESS.add(node.__class__)
                    self._answered(out, name, state, reply)
            else:
                try:
                    pending = node.submit(op, *node_args)
                except Exception as exc:  # noqa: BLE001
                    out.failed[name] = exc
                    out.unsent.add(name)
                    self.mark_down(name, exc)
                    continue
                call = getattr(pending, "call", None)
                if call is None:
                    blocking.append((name, pending))
                    continue
                call.must = every
                if late is not None:
                    call.late = late(name, node)
                network.append((name, pending))
        if network:
            if tally is not None:
                # What already answered (in process) or failed counts before the wait.
                for name in out.replies:
                    tally.answer(name, name in out.counted, out.replies[name])
                for name in out.failed:
                    tally.fail(name)
            self._gather(network, tally, out)
        for name, pending in blocking:
            try:
                state, reply = pending.result()
            except Exception as exc:  # noqa: BLE001 - counted against the quorum
                out.failed[name] = exc
                self.mark_down(name, exc)
            else:
                self._answered(out, name, state, reply)
        return out

    def _gather(self, network: list[tuple[str, Any]], tally: Tally | OneTally | None,
                out: Outcome) -> None:
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
                        tally.answer(name, self.counted(state.marker), reply)
                return tally.decided()
        gather([pending.call for _, pending in network], decided)
        for name, pending in network:
            if pending.call.state == "late":
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
                    self.mark_down(name, exc)
            else:
                self._answered(out, name, state, reply)

    def _answered(self, out: Outcome, name: str, state: NodeState, reply: Any) -> None:
        marker = state.marker
        if marker is None or self._markers.get(name) != marker or name in self.down_until:
            self.observe(name, marker)
        floor = state.floor
        if floor:
            self.note_floor(name, floor)
        out.floors[name] = floor
        out.replies[name] = reply
        if self.counted(marker):
            out.counted.add(name)

    # -- node status ------------------------------------------------------------------------------

    def probe(self) -> None:
        """Ask every node now (ignoring the down backoff, reconnecting to nodes that failed)."""
        with self._guard:
            self.down_until = {n: 0.0 for n in self.down_until}
        for node in self.everyone.values():
            reconnect = getattr(node, "reconnect", None)
            if reconnect is not None:
                reconnect()
        self.round("read", {name: ([],) for name in self.everyone}, every=True)

    def status(self) -> dict[str, str]:
        report = {}
        for name in self.everyone:
            # Not is_live(): that only says whether the down backoff is over, and a node whose
            # backoff ran out is no more up than before.
            if name in self.down_until:
                report[name] = "down"
            elif not self.counts(name):
                report[name] = "recovering"
            else:
                report[name] = "up"
        return report

    def remember_members(self) -> None:
        """Record on every node the names of the ready nodes (initialize() refuses to mark a
        node that the others remember, since it must have lost its data)."""
        ready = sorted(n for n in self.everyone if self.counts(n))
        for name, node in self.everyone.items():
            if hasattr(node, "add_members") and self.is_live(name):
                try:
                    node.add_members(ready)
                except Exception as exc:  # noqa: BLE001
                    self.mark_down(name, exc)

    def clock(self) -> float:
        return self._clock()
