"""Where a lock lives: the server list, their names, the ring that places each lock name on
``replicas`` of them, the keys of a lock, the settings every client of the servers shares
(max_ttl, persistent, cluster), the servers' identities (run_id: one server listed twice is
refused), and the leases this process holds (a late grant of one of them is kept)."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ringkit.lock.base import check_name, check_ttl
from ringkit.ring import HashRing
from ringkit.validation import check_server, server_label

if TYPE_CHECKING:
    from ringkit.lock.protocol import Outcome

__all__ = ["Server", "Placement", "run_id"]

log = logging.getLogger("ringkit.lock")


class Server:
    """One Redis server: its client, its name, and ringkit's connections to it."""

    __slots__ = ("client", "name", "owned", "link", "run_id")

    def __init__(self, client: Any, name: str, link: Any, *, owned: bool) -> None:
        self.client = client
        self.name = name
        self.owned = owned     # made here from a URL: close() closes it
        self.link = link
        self.run_id: str | None = None

    def __repr__(self) -> str:
        return f"<redis {self.name}>"


def as_list(servers: object) -> list[Any]:
    if isinstance(servers, (str, bytes)) or not isinstance(servers, Iterable):
        return [servers]
    return list(servers)


class Placement:
    """Server list, names, ring placement, keys and settings: what the sync and async backends
    share."""

    def __init__(self, servers: object, replicas: int | None, prefix: str, max_ttl: float,
                 persistent: bool, cluster: bool, timeout: float,
                 make_client: Callable[[str], Any], make_link: Callable[[Any, str], Any]) -> None:
        items = as_list(servers)
        if not items:
            raise ValueError("servers must name at least one Redis server (client or URL)")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        check_name(prefix or "x", "prefix")
        self.servers: list[Server] = []
        for item in items:
            item = check_server(item, "servers")
            owned = isinstance(item, str)
            client = make_client(item) if owned else item
            name = server_label(client)
            if any(s.name == name for s in self.servers):
                raise ValueError(f"servers: {name} is listed twice")
            self.servers.append(Server(client, name, make_link(client, name), owned=owned))
        n = len(self.servers)
        if replicas is None:
            replicas = n if n <= 5 else 5
        if isinstance(replicas, bool) or not isinstance(replicas, int):
            raise TypeError(f"replicas must be an int, got {type(replicas).__name__}")
        if not 1 <= replicas <= n:
            raise ValueError(f"replicas must be between 1 and the number of servers ({n}), "
                             f"got {replicas}")
        self.replicas = replicas
        self.prefix = prefix
        self.max_ttl = max_ttl
        self.max_ttl_ms = max(1, math.ceil(max_ttl * 1000))
        self.persistent = persistent
        self.cluster = cluster
        self.timeout = timeout
        self.by_name = {s.name: s for s in self.servers}
        self.ring = HashRing([s.name for s in self.servers])
        self.epoch_key = f"{prefix}__epoch__"
        self.duplicate: ValueError | None = None
        self.identified_all = len(self.servers) == 1    # one server cannot be listed twice
        self._identity_guard = threading.Lock()
        # Leases this process holds, (name, holder) -> when they run out (monotonic): a grant
        # that comes late for one of them is kept (the release reaches it); any other late
        # grant is released at once.
        self._holding: dict[tuple[str, str], float] = {}
        self._warned: dict[str, float] = {}
        self._holding_guard = threading.Lock()

    def warn_restarting(self, names: Sequence[str]) -> None:
        """Log, once per max_ttl per server, that a server grants nothing while it is quiet."""
        now = time.monotonic()
        fresh = [n for n in names if self._warned.get(n, -math.inf) + self.max_ttl <= now]
        if fresh:
            for name in fresh:
                self._warned[name] = now
            log.warning("ringkit lock: %s came back empty (or is new and not initialized); it "
                        "grants no lock until max_ttl (%g s) has passed", ", ".join(fresh),
                        self.max_ttl)

    def hold(self, name: str, holder: str, ttl: float) -> None:
        now = time.monotonic()
        with self._holding_guard:
            if len(self._holding) > 10_000:
                self._holding = {k: t for k, t in self._holding.items() if t > now}
            self._holding[(name, holder)] = now + ttl

    def unhold(self, name: str, holder: str) -> None:
        with self._holding_guard:
            self._holding.pop((name, holder), None)

    def holds(self, name: str, holder: str) -> bool:
        with self._holding_guard:
            until = self._holding.get((name, holder))
        return until is not None and until > time.monotonic()

    def targets(self, name: str) -> list[Server]:
        if self.replicas == len(self.servers):
            return self.servers
        return [self.by_name[n] for n in self.ring.preference_list(name, self.replicas)]

    def keys(self, name: str) -> tuple[str, str]:
        lease = f"{self.prefix}{{{name}}}"
        return lease, lease + ":fence"

    def channel(self, name: str) -> str:
        return f"{self.prefix}{{{name}}}:released"

    def acquire_args(self, name: str, holder: str, ttl: float,
                     single: bool) -> tuple[list[str], list[object]]:
        lease, fence = self.keys(name)
        # In Cluster mode the epoch key lives in another slot: restart detection is off.
        keys = [lease, fence, lease if self.cluster else self.epoch_key]
        args: list[object] = [holder, max(1, math.ceil(ttl * 1000)), self.max_ttl_ms,
                              0 if self.cluster else 1, 1 if single else 0,
                              1 if self.persistent else 0]
        return keys, args

    def check_ttl(self, ttl: object) -> float:
        return check_ttl(ttl, limit=self.max_ttl)

    # -- server identity --------------------------------------------------------------------------

    def unidentified(self, targets: Sequence[Server]) -> list[Server]:
        if self.duplicate is not None:
            raise self.duplicate
        if self.identified_all:
            return []
        missing = [s for s in targets if s.run_id is None]
        if not missing and all(s.run_id is not None for s in self.servers):
            self.identified_all = True
        return missing

    def identified(self, out: Outcome) -> None:
        """Record the run_ids that answered; refuse two names for one server process."""
        with self._identity_guard:
            for name, reply in out.replies.items():
                found = run_id(reply)
                if found is None:
                    continue
                same = [s.name for s in self.servers if s.run_id == found and s.name != name]
                self.by_name[name].run_id = found
                if same and self.duplicate is None:
                    self.duplicate = ValueError(
                        f"servers: {same[0]} and {name} are the same Redis server (run_id "
                        f"{found}): one server counted twice would make a minority look like "
                        f"a majority")
            if self.duplicate is not None:
                raise self.duplicate


def run_id(reply: Any) -> str | None:
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
    for line in text.splitlines():
        if line.startswith("run_id:"):
            return line[7:].strip()
    return None
