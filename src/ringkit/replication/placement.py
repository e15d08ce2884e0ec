"""Where each key lives: its preference list on the ring (primary first), the old one too while
a membership change waits for rebalance(), and stand-ins for down replicas under sloppy
quorums. Batches ask the ring once (``preference_many``), never once per key."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import numpy.typing as npt

from ringkit.ring import HashRing

__all__ = ["Placement"]


class Placement:
    """The ring of the store's nodes, and before rebalance() the ring of before the change.

    ``is_live(name)`` tells which nodes may stand in for a down replica (sloppy quorums).
    """

    def __init__(self, names: Iterable[str], *, replicas: int, vnodes: int, sloppy: bool,
                 is_live: Callable[[str], bool]) -> None:
        self.replicas = replicas
        self.vnodes = vnodes
        self.sloppy = sloppy
        self._is_live = is_live
        self._guard = threading.Lock()
        self.ring = HashRing(list(names), vnodes=vnodes)
        self.old: HashRing | None = None      # the ring before add/remove, until rebalance()

    # -- membership -------------------------------------------------------------------------------

    def change(self, names: Iterable[str]) -> None:
        """The node set changed: a new ring; the ring of before is kept until done()."""
        with self._guard:
            if self.old is None:
                self.old = self.ring
            self.ring = HashRing(list(names), vnodes=self.vnodes)

    def done(self, old: HashRing) -> bool:
        """rebalance() moved the keys off `old`: forget it (unless another change came)."""
        with self._guard:
            if self.old is old:
                self.old = None
                return True
            return False

    def rings(self) -> tuple[HashRing, HashRing | None]:
        """The ring, and the ring of before a membership change (None once rebalanced)."""
        with self._guard:
            return self.ring, self.old

    @property
    def pending(self) -> bool:
        return self.old is not None

    # -- one key ----------------------------------------------------------------------------------

    def preference_list(self, key: str) -> list[str]:
        return self.ring.preference_list(key, self.replicas)

    def targets(self, key: str) -> tuple[list[str], dict[str, str]]:
        """Nodes to ask for `key`: its replicas (plus, before rebalance(), its old replicas),
        with stand-ins for down replicas when sloppy; and {stand-in: replica it stands for}."""
        with self._guard:
            ring, old = self.ring, self.old
        prefs = ring.preference_list(key, self.replicas)
        targets = list(prefs)
        if old is not None:
            for name in old.preference_list(key, min(self.replicas, len(old))):
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

    def standin(self, key: str, exclude: Iterable[str]) -> str | None:
        """The next live node along the ring for `key` that is not in `exclude`."""
        skip = set(exclude)
        for name in self.ring.preference_list(key, len(self.ring)):
            if name not in skip and self._is_live(name):
                return name
        return None

    # -- batches ----------------------------------------------------------------------------------

    def preference_many(self, keys: Sequence[str], ring: HashRing | None = None,
                        n: int | None = None) -> list[list[str]]:
        """Each key's preference list (names), from one vectorised lookup."""
        ring = self.ring if ring is None else ring
        count = min(self.replicas if n is None else n, len(ring))
        if not keys:
            return []
        names = ring.nodes
        rows = ring.preference_many(list(keys), count).tolist()
        return [[names[i] for i in row] for row in rows]

    def targets_many(self, keys: Sequence[str]) -> list[list[str]]:
        """targets() of a batch: one vectorised lookup per ring; stand-ins key by key (only
        under sloppy quorums with a replica down)."""
        with self._guard:
            old = self.old
        if self.sloppy:
            return [self.targets(key)[0] for key in keys]
        rows = self.preference_many(keys)
        if old is None:
            return rows
        for row, extra in zip(rows, self.preference_many(keys, old)):
            row.extend(n for n in extra if n not in row)
        return rows

    def group_many(self, keys: Sequence[bytes] | Sequence[str]
                   ) -> dict[str, npt.NDArray[np.intp]]:
        """The positions in `keys` each node is asked about (targets_many, grouped by node,
        ascending), from one vectorised lookup when no membership change is pending and
        quorums are strict."""
        with self._guard:
            ring, old = self.ring, self.old
        if old is not None or self.sloppy:
            lists: dict[str, list[int]] = {}
            for i, targets in enumerate(self.targets_many([k if isinstance(k, str) else
                                                           k.decode() for k in keys])):
                for name in targets:
                    lists.setdefault(name, []).append(i)
            return {name: np.asarray(ix, dtype=np.intp) for name, ix in lists.items()}
        count = min(self.replicas, len(ring))
        prefs = ring.preference_many(list(keys), count)
        names = ring.nodes
        flat = prefs.ravel()
        order = np.argsort(flat, kind="stable")
        rows = (order // count).astype(np.intp)
        bounds = np.searchsorted(flat[order], np.arange(len(names) + 1))
        return {names[j]: rows[bounds[j]:bounds[j + 1]] for j in range(len(names))
                if bounds[j + 1] > bounds[j]}
