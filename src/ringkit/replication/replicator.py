"""The eventual-mode replicator: with ``write_quorum=1`` a put returns once one replica stored it,
and this background thread copies it to the key's other replicas through a bounded queue (a
replica it cannot reach gets a hint on a stand-in, under sloppy quorums; the next repair()
catches up on the rest). An acknowledged write is lost if its only replica dies before the copy:
that is eventual mode's bargain, and README says so."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

from ringkit.replication.base import Record

__all__ = ["Replicator"]

log = logging.getLogger("ringkit.replication")


class Replicator:
    """A bounded queue of (record, replicas still to copy it to) and the thread that drains it
    by calling ``copy(record, replicas)``."""

    def __init__(self, copy: Callable[[Record, Sequence[str]], None], *, size: int,
                 timeout: float, clock: Callable[[], float]) -> None:
        self._copy = copy
        self._timeout = timeout
        self._clock = clock
        self._queue: queue.Queue[tuple[Record, list[str]] | None] = queue.Queue(maxsize=size)
        self._thread = threading.Thread(target=self._loop, name="ringkit-replicator",
                                        daemon=True)
        self._thread.start()

    def add(self, record: Record, replicas: Sequence[str]) -> None:
        """Queue a copy of `record` to `replicas` (after `timeout` of a full queue, the copy is
        left to the next repair())."""
        try:
            self._queue.put((record, list(replicas)), timeout=self._timeout)
        except queue.Full:
            log.warning("ringkit replication queue is full; %r reaches its replicas at the next "
                        "repair()", record.key)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._copy(*item)
            except Exception:  # noqa: BLE001 - the next repair() catches up
                log.exception("ringkit replication: background copy failed")
            finally:
                self._queue.task_done()

    def lag(self) -> int:
        """Writes acknowledged but not yet copied to their replicas."""
        return self._queue.qsize()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued copy was made; False if `timeout` passed first."""
        deadline = None if timeout is None else self._clock() + timeout
        while self._queue.unfinished_tasks:
            if deadline is not None and self._clock() >= deadline:
                return False
            time.sleep(0.001)
        return True

    def close(self) -> None:
        """Stop the thread once the queue drained (waiting at most `timeout`)."""
        self._queue.put(None)
        self._thread.join(timeout=self._timeout)
