"""Slow servers: ringkit.Lock and ringkit.ReplicatedStore on three redis-servers, one of them
paused or blackholed, beside the same with all three healthy; and ringkit's round transport
(ringkit._redisio.gather) beside redis-py's own pipelines (the issue's speed targets for rounds
that end as soon as their outcome is decided, never waiting for a slow server).

The file starts three ``redis-server`` processes through bench/conftest.py's
``start_redis_servers`` (free loopback ports, no persistence; it hands back their pids, which
SIGSTOP / SIGCONT need) and one loopback TCP proxy process (tests/netproxy.py, loaded by path),
with one proxy link per server. The servers and the proxy are stopped (by pid) at the end of the
module; a paused server is resumed and a blackholed link healed in ``finally`` blocks whatever
happens.

Groups:

- lock: acquire+release, ``Lock(name, RedisBackend([3 link urls], socket_timeout=0.5),
  ttl=10.0)`` (``backend.initialize()`` once): all healthy (reference); server 3 paused
  (SIGSTOP); the link to server 3 blackholed in both directions (the proxy accepts connections
  and holds every byte). Target, from the issue: each faulted median <= 2x the healthy one, i.e.
  "vs healthy" >= 0.5x.
- lock, ``ttl=0.5``: acquire(blocking=False)+release, all healthy (reference) and server 3 paused.
  A 0.5 s lease was never granted with one of three paused before rounds ended at a majority
  (the round waited out the 0.5 s socket timeout, leaving no validity): before timing,
  TTL_ATTEMPTS attempts are made with server 3 paused and every one must succeed (asserted;
  ``acquired`` in extra_info). Timed cycles that are refused are counted (``timed_acquired``),
  not asserted: that would be an assertion on time.
- replication: ``put`` latency (fresh key per call, 32-byte values) and ``get`` latency (keys
  written before), ``ReplicatedStore(nodes, replicas=3, write_quorum=2, read_quorum=2)`` on
  ``RedisNode(link_url, socket_timeout=0.5)`` nodes (``store.initialize()`` once); healthy
  (reference), paused, blackholed. Target: "vs healthy" >= 0.5x.
- transport, A/B against redis-py: one round to the three servers directly (no proxy), 1 GET
  per server, then 200 GETs per server: a redis-py pipeline per server executed one after the
  other (reference), the same three pipelines executed in 3 threads (``ThreadPoolExecutor``,
  reference), ringkit ``gather`` of one ``Call`` per server with all three awaited, and with a
  ``decided`` callable that ends the round once 2 calls are ``.ok`` (the third is handed to the
  late reader, as a quorum round's is). The command is GET of a 32-byte value, not a tiny
  EVALSHA: the server's work per command is then the least there is and the same for every
  contender, so the figures are the transport's (send, wait on three sockets, parse); a script
  would add the same Lua call to every row and only dilute the difference. Target: ringkit with
  all three awaited >= 1.0x the sequential pipelines. The 200-command rows record
  ``keys_per_s_all_servers`` (600 GETs over the median round); the decided-at-2 rows record how
  often the third call was still owed when the round ended (``rounds_with_a_late_call``, counted
  in an untimed pass after the timed one, so the timed rounds are the bare calls).

Every lock and store contender is its own client (own backend or store, own ringkit connections)
on the SAME three servers reached through the SAME proxy links, so the healthy rows pay the same
proxy hop as the faulted ones. The proxy is a Python process, a hop that costs more than a
loopback round trip on a small machine, so these figures are not comparable with bench_lock.py's
and bench_replication.py's, only with one another.

Interleaving. Loopback latency swings by tens of percent from one second to the next, so the
states are measured in one pass: in each of ROUNDS rounds, the three states come in turn (the
order rotates from round to round): healthy; server 3 paused -> batches -> resumed; link 3
blackholed -> batches -> healed. In each state every contender in turn (the order rotates too)
runs its batch (BATCH_LOCK acquire+release cycles, or BATCH_STORE calls), each timed on its own
with ``time.perf_counter_ns``; the batch's median is that contender's figure for the round. The
ttl=0.5 lock runs in the healthy and paused states only. Each benchmark then hands its per-round
figures to pytest-benchmark through ``benchmark.pedantic`` with a replay timer (a clock that
advances by the next recorded figure each round, as in bench_lock.py), so the JSON's stats, and
bench/report.py's median, min and rounds, are exactly those of the interleaved rounds;
``extra_info`` also keeps the raw per-round figures (``round_figures_s``) and the method. The
transport groups are interleaved the same way (rounds of batches, order rotating).

Steady state, and the first call after a fault. Before a contender's timed batch in a state it runs
WARMUP untimed cycles in that state. The target is about a server that stays slow: once ringkit has
seen it owe replies on a few connections, or miss its 0.5 s deadline, it skips it (it counts as
failed at once) until a background probe finds it answering; the warm-up gets each client there.
What a client pays when the fault is new is not hidden: each faulted row's extra_info records, per
round, the time of that contender's first cycle after the fault was injected
(``first_cycle_after_fault_s``, with its median and max): the one timeout a round may pay by design
shows there, if anywhere (with warm connections the two healthy servers decide the round, so no
timeout is expected there). Between states the pass waits until every client sees every server again
(no ringkit link skipped or owed late replies, every store node "up": ``store.probe()`` ends the
store's down backoff of a server that answers again), so a healthy batch is never measured on two
servers.

Errors are not hidden either: a call that raises (a quorum error) is not a sample; each row
counts them (``errors``, with the first few messages) and a warning names them. Store rows also
count "node_down" events for servers that were not faulted at the time
(``healthy_node_down_events``); lock rows count "quorum_failed" events.

Before timing: in each state, a second client cannot take a held lock and gets it once
released, and the fencing tokens strictly increase; the ttl=0.5 check above; a put in each
state reads back through the store in that state and again after the fault is removed, and the
keys the get rows read were written and read back; every timed get checks its value. For the
transport, the replies of each contender equal redis-py's (and, in the decided-at-2 round,
those of the calls that are ``ok``). Targets are the issue's; bench/report.py says whether they
were met, nothing here asserts on time.

Run alone (about 30 seconds on a 2-core VM: the fault pass about 15 s, the transport groups
about 10 s)::

    python -m pytest bench/bench_faults.py -p no:cacheprovider \\
        --benchmark-json=/tmp/faults-bench.json
    python bench/report.py /tmp/faults-bench.json
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import itertools
import os
import signal
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from ringkit.errors import RingkitError

ROUNDS = 20  # interleaved rounds of the fault pass (each: healthy, paused, blackholed)
BATCH_LOCK = 40  # acquire+release cycles per lock contender per state per round
BATCH_STORE = 80  # put or get calls per store contender per state per round
WARMUP = 10  # untimed cycles per contender before its batch in a state
TTL = 10.0  # lease of the main lock
SHORT_TTL = 0.5  # lease of the ttl=0.5 lock
TTL_ATTEMPTS = 50  # ttl=0.5 acquisitions tried (and required) with server 3 paused, before timing
SOCKET_TIMEOUT = 0.5  # ringkit's round deadline (RedisBackend / RedisNode socket_timeout)
VALUE_SIZE = 32
GET_POOL = 1_000  # keys the get rows cycle through (written once beforehand)
SETTLE_LIMIT = 5.0  # seconds to wait for every client to see every server again
T_ROUNDS = 20  # interleaved rounds, transport groups
T_BATCH_1 = 100  # rounds per contender per batch, 1 command per server
T_BATCH_200 = 20  # the same, 200 commands per server
T_COMMANDS = 200
ERROR_SAMPLES = 5  # error messages kept per row

VALUE = bytes(range(VALUE_SIZE))
FAULTED = 2  # index of the server that is paused or blackholed ("server 3")

HEALTHY, PAUSED, BLACKHOLED = "healthy", "paused", "blackholed"
STATES = (HEALTHY, PAUSED, BLACKHOLED)

LOCK_HEALTHY = "ringkit Lock, 3 servers, all healthy"
LOCK_PAUSED = "ringkit Lock, 3 servers, one paused (SIGSTOP)"
LOCK_BLACKHOLED = "ringkit Lock, 3 servers, one blackholed (proxy)"
SHORT_HEALTHY = "ringkit Lock, ttl=0.5, all healthy"
SHORT_PAUSED = "ringkit Lock, ttl=0.5, one of three paused"
PUT_HEALTHY = "ringkit put, 3 servers, all healthy"
PUT_PAUSED = "ringkit put, 3 servers, one paused (SIGSTOP)"
PUT_BLACKHOLED = "ringkit put, 3 servers, one blackholed (proxy)"
GET_HEALTHY = "ringkit get, 3 servers, all healthy"
GET_PAUSED = "ringkit get, 3 servers, one paused (SIGSTOP)"
GET_BLACKHOLED = "ringkit get, 3 servers, one blackholed (proxy)"

SEQUENTIAL = "redis-py: a pipeline per server, executed one after the other"
THREADED = "redis-py: pipelines executed in 3 threads (ThreadPoolExecutor)"
RK_ALL = "ringkit: one round (ringkit._redisio.gather), all three awaited"
RK_DECIDED = "ringkit: one round, decided at 2 of 3"

G_LOCK = ("lock: acquire+release, three redis-servers, one of them paused or blackholed "
          "(median of interleaved rounds)")
G_SHORT = "lock: ttl=0.5 acquire+release, three redis-servers, one paused"
G_PUT = "replication: put latency, 3 redis-servers, one paused or blackholed"
G_GET = "replication: get latency, 3 redis-servers, one paused or blackholed"
G_T1 = ("transport: one round to three redis-servers, 1 command each "
        "(A/B against redis-py pipelines)")
G_T200 = ("transport: one round to three redis-servers, 200 commands each "
          "(A/B against redis-py pipelines)")

# The rows of the fault pass: contender -> state -> label.
LABELS: dict[str, dict[str, str]] = {
    "lock": {HEALTHY: LOCK_HEALTHY, PAUSED: LOCK_PAUSED, BLACKHOLED: LOCK_BLACKHOLED},
    "short": {HEALTHY: SHORT_HEALTHY, PAUSED: SHORT_PAUSED},
    "put": {HEALTHY: PUT_HEALTHY, PAUSED: PUT_PAUSED, BLACKHOLED: PUT_BLACKHOLED},
    "get": {HEALTHY: GET_HEALTHY, PAUSED: GET_PAUSED, BLACKHOLED: GET_BLACKHOLED},
}
FAULTS = {PAUSED: "server 3 of 3 paused with SIGSTOP",
          BLACKHOLED: "proxy link to server 3 of 3 blackholed, both directions"}

PEER_PACKAGES = ("ringkit", "redis", "hiredis")


# --------------------------------------------------------------------------------------------------
# The replay timer: pytest-benchmark's stats become the interleaved rounds' figures (as in
# bench_lock.py; bench files are not importable from one another under --import-mode=importlib).


class ReplayClock:
    """A timer for pytest-benchmark that advances, each round, by the next recorded figure.

    ``benchmark.pedantic(clock.step, rounds=len(figures))`` reads the timer around each call of
    ``step``; ``step`` moves the clock on by the next figure, so each round's duration is that
    figure.
    """

    __name__ = "interleaved_replay"

    def __init__(self) -> None:
        self._now = 0.0
        self._pending: list[float] = []

    def __call__(self) -> float:
        return self._now

    def load(self, figures: Sequence[float]) -> None:
        self._now = 0.0
        self._pending = list(figures)

    def step(self) -> None:
        self._now += self._pending.pop(0)


REPLAY = ReplayClock()


def replayed(group: str) -> pytest.MarkDecorator:
    return pytest.mark.benchmark(group=group, timer=REPLAY)


def _target(metric: str, op: str, value: float, vs: str | None = None) -> dict[str, Any]:
    """The target dict bench/conftest.py's ``measure`` writes (and bench/report.py reads)."""
    return {"metric": metric, "op": op, "value": value, "vs": vs}


def record(benchmark: Any, figures: Sequence[float], *, label: str, per: str,
           reference: bool = False, targets: Iterable[dict[str, Any]] = (),
           **extra: Any) -> None:
    """Hand the interleaved per-round figures (seconds per item) to pytest-benchmark and write
    extra_info the way ``measure`` does (n_keys = 1: one item per round figure)."""
    if not figures:
        pytest.fail(f"{label}: no round produced a figure (every call failed?)")
    info = benchmark.extra_info
    info.update(label=label, n_keys=1, n_bytes=None, reference=reference,
                targets=list(targets), per=per, method="interleaved rounds, replayed",
                round_figures_s=list(figures), **extra)
    REPLAY.load(figures)
    benchmark.pedantic(REPLAY.step, rounds=len(figures), iterations=1)
    median = statistics.median(figures)
    info.update(median_s=median, ns_per_key=median * 1e9, keys_per_s=1 / median,
                versions=_versions())


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PEER_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


# --------------------------------------------------------------------------------------------------
# Servers, the proxy, and the faults


def _load_netproxy() -> Any:
    """tests/netproxy.py, loaded by path (tests/ is not a package)."""
    name = "ringkit_bench_netproxy"
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parent.parent / "tests" / "netproxy.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _client(port: int, timeout: float = 5.0) -> Any:
    import redis

    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=timeout,
                       socket_connect_timeout=timeout)


class Cluster:
    """Three redis-servers (pids and ports) and a proxy link to each; faults on server 3."""

    def __init__(self, servers: Sequence[tuple[int, int]], proxy: Any) -> None:
        self.pids = [pid for pid, _ in servers]
        self.ports = [port for _, port in servers]
        self.proxy = proxy
        self.links = [proxy.link(port) for port in self.ports]
        self.urls = [link.url for link in self.links]
        self.paused = False
        self.blackholed = False

    def inject(self, state: str) -> None:
        if state == PAUSED:
            self.paused = True
            os.kill(self.pids[FAULTED], signal.SIGSTOP)
        elif state == BLACKHOLED:
            self.blackholed = True
            self.links[FAULTED].blackhole("both")

    def remove(self) -> None:
        """Resume the server and heal the link, whatever was injected (safe to call twice)."""
        try:
            if self.paused:
                os.kill(self.pids[FAULTED], signal.SIGCONT)
                self.paused = False
        finally:
            if self.blackholed:
                self.links[FAULTED].heal()
                self.blackholed = False


@pytest.fixture(scope="module")
def cluster(start_redis_servers: Any) -> Iterator[Cluster]:
    pytest.importorskip("redis")
    pytest.importorskip("hiredis")
    netproxy = _load_netproxy()
    servers = start_redis_servers(3)
    proxy = netproxy.Proxy()
    made: Cluster | None = None
    try:
        made = Cluster(servers, proxy)
        yield made
    finally:
        try:
            if made is not None:
                made.remove()
        finally:
            proxy.close()
            for pid, _ in servers:  # the session fixture reaps them; stop them now
                for sig in (signal.SIGCONT, signal.SIGKILL):
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass


# --------------------------------------------------------------------------------------------------
# The contenders of the fault pass


def _lock(urls: Sequence[str], name: str, ttl: float,
          on_event: Callable[[Any], object] | None = None) -> Any:
    from ringkit.lock import Lock, RedisBackend

    backend = RedisBackend(list(urls), socket_timeout=SOCKET_TIMEOUT)
    backend.initialize()  # fresh servers: grant at once (the second call marks none)
    return Lock(name, backend, ttl=ttl, on_event=on_event)


def _store(urls: Sequence[str], on_event: Callable[[Any], object] | None = None) -> Any:
    from ringkit.replication import RedisNode, ReplicatedStore

    nodes = {f"redis-{i + 1}": RedisNode(url, name=f"redis-{i + 1}",
                                         socket_timeout=SOCKET_TIMEOUT)
             for i, url in enumerate(urls)}
    store = ReplicatedStore(nodes, replicas=3, write_quorum=2, read_quorum=2,
                            on_event=on_event)
    store.initialize()
    return store


FAULTED_NODE = f"redis-{FAULTED + 1}"


class Contender:
    """One client of the fault pass: its op (one timed cycle), and what it saw, per state."""

    def __init__(self, key: str, op: Callable[[], Any], states: Sequence[str]) -> None:
        self.key = key
        self.op = op
        self.states = tuple(states)
        self.figures: dict[str, list[float]] = {s: [] for s in states}
        self.first: dict[str, list[float]] = {s: [] for s in states}
        self.errors: dict[str, list[str]] = {s: [] for s in states}
        self.events: dict[str, dict[str, int]] = {s: {} for s in states}
        self.state: str | None = None  # the state its cycles run in now, None between batches

    def note_event(self, kind: str, node: str | None) -> None:
        """Count the store's "node_down" and the lock's "quorum_failed" events, by the state
        this contender was being measured in (events between its batches are not counted)."""
        if self.state is None or kind not in ("node_down", "quorum_failed"):
            return
        key = f"node_down {node}" if kind == "node_down" else kind
        counts = self.events.setdefault(self.state, {})
        counts[key] = counts.get(key, 0) + 1

    def cycle(self, errors: list[str]) -> int | None:
        """One timed call (ns), or None if it raised a ringkit error (counted)."""
        t0 = time.perf_counter_ns()
        try:
            self.op()
        except RingkitError as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            return None
        return time.perf_counter_ns() - t0

    def batch(self, n: int, errors: list[str]) -> float | None:
        """Median seconds of one call over n calls, each timed on its own."""
        samples = [t for t in (self.cycle(errors) for _ in range(n)) if t is not None]
        return statistics.median(samples) / 1e9 if samples else None


def _ringkit_links(locks: Sequence[Any], stores: Sequence[Any]) -> list[Any]:
    """Every ringkit connection set (``ringkit._redisio.Link``) of the clients, to see whether
    one still skips a server or is owed replies. A bench-only peek: the lock backend keeps its
    links in its placement; a store's RedisNode has ``.link``."""
    links = []
    for lock in locks:
        placement = getattr(lock.backend, "_placement", None)
        links += [s.link for s in getattr(placement, "servers", ())]
    for store in stores:
        links += [getattr(node, "link", None) for node in store.nodes.values()]
    return [link for link in links if link is not None]


def settle(locks: Sequence[Any], stores: Sequence[Any]) -> bool:
    """Wait until every client sees every server again: no ringkit link skips a server or is
    owed late replies, every store node is "up" (probe() ends the down backoff of a node that
    answers again). False if that did not happen within SETTLE_LIMIT seconds."""
    links = _ringkit_links(locks, stores)
    deadline = time.monotonic() + SETTLE_LIMIT
    while True:
        ready = True
        for store in stores:
            if any(state != "up" for state in store.status().values()):
                ready = False
                try:
                    store.probe()
                except Exception:  # noqa: BLE001 - not back yet: try again
                    pass
        if any(link.skipped or getattr(link, "_late", 0) for link in links):
            ready = False
        if ready:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)


def check_lock_exclusion(first: Any, second: Any, tokens: list[int], where: str) -> None:
    """While `first` holds, `second` (another client of the same lock name) cannot take it;
    once released, `second` gets it at once."""
    assert first.acquire(blocking=False), f"{where}: the lock was not acquired"
    tokens.append(first.token)
    try:
        assert not second.acquire(blocking=False), f"{where}: a second client took a held lock"
    finally:
        first.release()
    assert second.acquire(blocking=False), f"{where}: the lock was not free after its release"
    tokens.append(second.token)
    second.release()


def check_short_ttl(lock: Any, attempts: int) -> int:
    """How many of `attempts` acquire(blocking=False) with ttl=0.5 succeed (each released)."""
    acquired = 0
    for _ in range(attempts):
        if lock.acquire(blocking=False):
            acquired += 1
            lock.release()
    return acquired


@pytest.fixture(scope="module")
def fault_figures(cluster: Cluster) -> dict[str, Any]:
    urls = cluster.urls
    contenders: dict[str, Contender] = {}

    def hook(key: str) -> Callable[[Any], object]:
        def on_event(event: Any) -> None:
            contender = contenders.get(key)
            if contender is not None:
                contender.note_event(event.kind, getattr(event, "node", None))
        return on_event

    lock = _lock(urls, "faults:lock", TTL, hook("lock"))
    short = _lock(urls, "faults:short", SHORT_TTL, hook("short"))
    put_store = _store(urls, hook("put"))
    get_store = _store(urls, hook("get"))
    other_lock = _lock(urls, "faults:lock", TTL)  # the second client of the exclusion check
    check_store = _store(urls)
    locks, stores = [lock, short, other_lock], [put_store, get_store, check_store]

    # What the get rows read: written once, read back.
    pool = [f"faults:get:{i}" for i in range(GET_POOL)]
    get_store.put_many({k: VALUE for k in pool})
    assert get_store.get_many(pool) == [VALUE] * GET_POOL, "get_many did not read back"

    # Before timing: in each state, the lock excludes a second client and its tokens increase;
    # a put reads back in that state and after the fault is removed; ttl=0.5 is acquired with
    # server 3 paused, every time.
    tokens: list[int] = []
    acquired: dict[str, int] = {}
    checked = itertools.count()
    for state in STATES:
        assert settle(locks, stores), "the clients did not see every server again"
        written: dict[str, bytes] = {}
        try:
            cluster.inject(state)
            for _ in range(5):
                check_lock_exclusion(lock, other_lock, tokens, state)
            for _ in range(20):
                key, value = f"faults:check:{next(checked)}", os.urandom(VALUE_SIZE)
                check_store.put(key, value)
                assert check_store.get(key) == value, f"{state}: a put did not read back"
                written[key] = value
            assert check_store.get_many(pool[:50]) == [VALUE] * 50, f"{state}: get_many"
            if state != BLACKHOLED:
                acquired[state] = check_short_ttl(short, TTL_ATTEMPTS)
        finally:
            cluster.remove()
        assert settle(locks, stores), "the clients did not see every server again"
        assert check_store.get_many(list(written)) == list(written.values()), (
            f"after {state}: the puts made then did not read back")
    assert tokens == sorted(set(tokens)), f"fencing tokens did not strictly increase: {tokens}"
    assert acquired[PAUSED] == TTL_ATTEMPTS, (
        f"ttl=0.5 with one of three paused: acquired {acquired[PAUSED]} of {TTL_ATTEMPTS}")
    assert acquired[HEALTHY] == TTL_ATTEMPTS, (
        f"ttl=0.5, all healthy: acquired {acquired[HEALTHY]} of {TTL_ATTEMPTS}")

    # The timed ops.
    short_counts: dict[str | None, list[int]] = {}  # state -> [acquired, tried], timed cycles

    def lock_cycle() -> None:
        if not lock.acquire():
            raise AssertionError("a blocking acquire() returned False")
        lock.release()

    def short_cycle() -> None:
        counts = short_counts.setdefault(contenders["short"].state, [0, 0])
        counts[1] += 1
        if short.acquire(blocking=False):
            counts[0] += 1
            short.release()

    fresh = itertools.count()
    cycle_get = itertools.cycle(pool)
    put, get = put_store.put, get_store.get

    def put_cycle() -> None:
        put(f"faults:put:{next(fresh)}", VALUE)

    def get_cycle() -> None:
        if get(next(cycle_get)) != VALUE:
            raise AssertionError("get did not read what was written")

    contenders.update(
        lock=Contender("lock", lock_cycle, STATES),
        short=Contender("short", short_cycle, (HEALTHY, PAUSED)),
        put=Contender("put", put_cycle, STATES),
        get=Contender("get", get_cycle, STATES),
    )
    batch = {"lock": BATCH_LOCK, "short": BATCH_LOCK, "put": BATCH_STORE, "get": BATCH_STORE}
    for c in contenders.values():  # warm up: connections open, scripts loaded
        c.state = HEALTHY
        for _ in range(WARMUP):
            c.cycle(c.errors[HEALTHY])
        c.state = None
    unsettled = 0
    keys = list(contenders)
    started = time.perf_counter()
    for r in range(ROUNDS):
        for i in range(len(STATES)):
            state = STATES[(r + i) % len(STATES)]  # rotate: no state always goes first
            if not settle(locks, stores):
                unsettled += 1
            order = [keys[(r + i + j) % len(keys)] for j in range(len(keys))]
            try:
                cluster.inject(state)
                for key in order:
                    c = contenders[key]
                    if state not in c.states:
                        continue
                    c.state = state
                    errors = c.errors[state]
                    first = c.cycle(errors)
                    if first is not None and state != HEALTHY:
                        c.first[state].append(first / 1e9)
                    for _ in range(WARMUP - 1):
                        c.cycle(errors)
                    figure = c.batch(batch[key], errors)
                    if figure is not None:
                        c.figures[state].append(figure)
                    c.state = None
            finally:
                cluster.remove()
    elapsed = time.perf_counter() - started
    assert settle(locks, stores)
    # The timed calls wrote what they should.
    assert put_store.get(f"faults:put:{next(fresh) - 1}") == VALUE
    for each in locks:
        each.backend.close()
    for s in stores:
        s.close()
    return {"contenders": contenders, "acquired": acquired, "short_counts": short_counts,
            "tokens": len(tokens), "unsettled": unsettled, "elapsed_s": elapsed}


def _record_state(benchmark: Any, figures: dict[str, Any], key: str, state: str, *,
                  per: str, batch: int) -> None:
    c: Contender = figures["contenders"][key]
    label = LABELS[key][state]
    errors = c.errors[state]
    extra: dict[str, Any] = {
        "batch": batch, "warmup": WARMUP, "state": state, "socket_timeout_s": SOCKET_TIMEOUT,
        "errors": len(errors), "error_samples": errors[:ERROR_SAMPLES],
        "events": c.events.get(state, {}), "servers": "3 redis-servers, each behind a proxy link",
        "unsettled_state_changes": figures["unsettled"], "fault_pass_s": figures["elapsed_s"],
    }
    if key in ("put", "get"):
        extra["value_bytes"] = VALUE_SIZE
        # Servers dropped that were not faulted: every one in the healthy state, the two
        # others in a faulted state.
        extra["healthy_node_down_events"] = sum(
            n for k, n in c.events.get(state, {}).items()
            if k.startswith("node_down")
            and (state == HEALTHY or k != f"node_down {FAULTED_NODE}"))
    if key == "short":
        done, tried = figures["short_counts"].get(state, [0, 0])
        extra["acquired"] = figures["acquired"][state]
        extra["attempts"] = TTL_ATTEMPTS
        extra["timed_acquired"] = f"{done} of {tried}"
    targets: list[dict[str, Any]] = []
    if state == HEALTHY:
        reference = True
    else:
        reference = False
        extra["fault"] = FAULTS[state]
        first = c.first[state]
        extra["first_cycle_after_fault_s"] = first
        if first:
            extra["first_cycle_after_fault_median_s"] = statistics.median(first)
            extra["first_cycle_after_fault_max_s"] = max(first)
        if key != "short":
            targets = [_target("speedup", ">=", 0.5, LABELS[key][HEALTHY])]
    if errors:
        warnings.warn(f"{label}: {len(errors)} calls raised (not timed), e.g. {errors[0]}",
                      stacklevel=2)
    record(benchmark, c.figures[state], label=label, per=per, reference=reference,
           targets=targets, **extra)


# --------------------------------------------------------------------------------------------------
# lock: acquire+release, one of three paused or blackholed


@replayed(G_LOCK)
def test_lock_healthy(benchmark: Any, fault_figures: dict[str, Any]) -> None:
    _record_state(benchmark, fault_figures, "lock", HEALTHY, per="acquire+release",
                  batch=BATCH_LOCK)


@replayed(G_LOCK)
def test_lock_paused(benchmark: Any, fault_figures: dict[str, Any]) -> None:
    _record_state(benchmark, fault_figures, "lock", PAUSED, per="acquire+release",
                  batch=BATCH_LOCK)


@replayed(G_LOCK)
def test_lock_blackholed(benchmark: Any, fault_figures: dict[str, Any]) -> None:
    _record_state(benchmark, fault_figures, "lock", BLACKHOLED, per="acquire+release",
                  batch=BATCH_LOCK)


# --------------------------------------------------------------------------------------------------
# lock, ttl=0.5: acquired with one of three paused


@replayed(G_SHORT)
def test_short_ttl_healthy(benchmark: Any, fault_figures: dict[str, Any]) -> None:
    _record_state(benchmark, fault_figures, "short", HEALTHY, per="acquire+release",
                  batch=BATCH_LOCK)


@replayed(G_SHORT)
def test_short_ttl_paused(benchmark: Any, fault_figures: dict[str, Any]) -> None:
    _record_state(benchmark, fault_figures, "short", PAUSED, per="acquire+release",
                  batch=BATCH_LOCK)


# --------------------------------------------------------------------------------------------------
# replication: put and get latency, one of three paused or blackholed


@replayed(G_PUT)
def test_put_healthy(benchmark: Any, fault_figures: dict[str, Any]) -> None:
    _record_state(benchmark, fault_figures, "put", HEALTHY, per="call", batch=BATCH_STORE)


@replayed(G_PUT)
def test_put_paused(benchmark: Any, fault_figures: dict[str, Any]) -> None:
    _record_state(benchmark, fault_figures, "put", PAUSED, per="call", batch=BATCH_STORE)


@replayed(G_PUT)
def test_put_blackholed(benchmark: Any, fault_figures: dict[str, Any]) -> None:
    _record_state(benchmark, fault_figures, "put", BLACKHOLED, per="call", batch=BATCH_STORE)


@replayed(G_GET)
def test_get_healthy(benchmark: Any, fault_figures: dict[str, Any]) -> None:
    _record_state(benchmark, fault_figures, "get", HEALTHY, per="call", batch=BATCH_STORE)


@replayed(G_GET)
def test_get_paused(benchmark: Any, fault_figures: dict[str, Any]) -> None:
    _record_state(benchmark, fault_figures, "get", PAUSED, per="call", batch=BATCH_STORE)


@replayed(G_GET)
def test_get_blackholed(benchmark: Any, fault_figures: dict[str, Any]) -> None:
    _record_state(benchmark, fault_figures, "get", BLACKHOLED, per="call", batch=BATCH_STORE)


# --------------------------------------------------------------------------------------------------
# transport: one round to three servers, ringkit's gather beside redis-py's pipelines


def _transport_round(keys: Sequence[str], clients: Sequence[Any], links: Sequence[Any],
                     pool: ThreadPoolExecutor) -> dict[str, Callable[[], Any]]:
    """The four contenders of one round (each returns what it read)."""
    from ringkit._redisio import Call, gather

    commands = [("GET", key) for key in keys]

    def pipe(client: Any) -> list[Any]:
        p = client.pipeline(transaction=False)
        for key in keys:
            p.get(key)
        return p.execute()  # type: ignore[no-any-return]

    def sequential() -> list[list[Any]]:
        return [pipe(client) for client in clients]

    def threaded() -> list[list[Any]]:
        return list(pool.map(pipe, clients))

    def all_awaited() -> list[Any]:
        calls = [Call(link, commands) for link in links]
        gather(calls)
        return calls

    def decided_at_2() -> list[Any]:
        calls = [Call(link, commands) for link in links]
        gather(calls, lambda: sum(1 for call in calls if call.ok) >= 2)
        return calls

    return {SEQUENTIAL: sequential, THREADED: threaded, RK_ALL: all_awaited,
            RK_DECIDED: decided_at_2}


def time_rounds(op: Callable[[], Any], n: int) -> float:
    """Median seconds of one round over n rounds, each timed on its own."""
    clock = time.perf_counter_ns
    samples = []
    for _ in range(n):
        t0 = clock()
        op()
        samples.append(clock() - t0)
    return statistics.median(samples) / 1e9


def _transport_figures(cluster: Cluster, n: int, batch: int) -> dict[str, Any]:
    from ringkit._redisio import Link

    ports = cluster.ports
    writer = [_client(p) for p in ports]
    keys = [f"transport:{n}:{i}" for i in range(n)]
    expected = []
    for s, client in enumerate(writer):  # a value per key and server: a mix-up would show
        values = [f"{s}:{i}:".encode().ljust(VALUE_SIZE, b"x") for i in range(n)]
        client.mset(dict(zip(keys, values)))
        expected.append(values)
        client.close()
    clients = [_client(p) for p in ports]  # redis-py's rows
    links = [Link(_client(p), SOCKET_TIMEOUT, f"server-{i + 1}") for i, p in enumerate(ports)]
    pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="bench-pipeline")
    try:
        ops = _transport_round(keys, clients, links, pool)
        # Before timing: every contender reads what redis-py reads.
        assert ops[SEQUENTIAL]() == expected, "redis-py pipelines did not read the values"
        assert ops[THREADED]() == expected, "threaded pipelines did not read the values"
        calls = ops[RK_ALL]()
        assert [c.state for c in calls] == ["ok"] * 3, [c.state for c in calls]
        assert [c.replies for c in calls] == expected, "gather did not read what redis-py reads"
        for _ in range(20):
            calls = ops[RK_DECIDED]()
            ok = [i for i, c in enumerate(calls) if c.state == "ok"]
            assert len(ok) >= 2, [c.state for c in calls]
            assert all(c.state in ("ok", "late") for c in calls), [c.state for c in calls]
            assert [calls[i].replies for i in ok] == [expected[i] for i in ok]
        for op in ops.values():  # warm up
            time_rounds(op, max(10, batch // 4))
        labels = list(ops)
        figures: dict[str, Any] = {label: [] for label in labels}
        for r in range(T_ROUNDS):
            for i in range(len(labels)):
                label = labels[(r + i) % len(labels)]
                figures[label].append(time_rounds(ops[label], batch))
        calls = ops[RK_ALL]()
        assert [c.replies for c in calls] == expected, "gather read something else after timing"
        # How often the decided round left its third call owed (untimed: the timed rounds are
        # the bare calls).
        checks = 5 * batch
        late = sum(any(c.state == "late" for c in ops[RK_DECIDED]()) for _ in range(checks))
        figures["late_rounds"] = f"{late} of {checks}"
        return figures
    finally:
        pool.shutdown(wait=True)
        for client in clients:
            client.close()
        for link in links:
            link.close()
            link.client.close()


@pytest.fixture(scope="module")
def transport_1(cluster: Cluster) -> dict[str, Any]:
    return _transport_figures(cluster, 1, T_BATCH_1)


@pytest.fixture(scope="module")
def transport_200(cluster: Cluster) -> dict[str, Any]:
    return _transport_figures(cluster, T_COMMANDS, T_BATCH_200)


def _record_transport(benchmark: Any, figures: dict[str, Any], label: str, n: int,
                      batch: int) -> None:
    reference = label in (SEQUENTIAL, THREADED)
    targets = [_target("speedup", ">=", 1.0, SEQUENTIAL)] if label == RK_ALL else []
    extra: dict[str, Any] = {"batch": batch, "commands_per_server": n, "servers": 3,
                             "command": "GET of a 32-byte value", "direct": "no proxy"}
    if label == RK_DECIDED:
        extra["rounds_with_a_late_call"] = figures["late_rounds"]
    if n > 1:
        extra["keys_per_s_all_servers"] = 3 * n / statistics.median(figures[label])
    record(benchmark, figures[label], label=label, per="round", reference=reference,
           targets=targets, **extra)


@replayed(G_T1)
@pytest.mark.parametrize("label", [SEQUENTIAL, THREADED, RK_ALL, RK_DECIDED],
                         ids=["sequential", "threads", "ringkit", "ringkit_decided"])
def test_transport_1(benchmark: Any, transport_1: dict[str, Any], label: str) -> None:
    _record_transport(benchmark, transport_1, label, 1, T_BATCH_1)


@replayed(G_T200)
@pytest.mark.parametrize("label", [SEQUENTIAL, THREADED, RK_ALL, RK_DECIDED],
                         ids=["sequential", "threads", "ringkit", "ringkit_decided"])
def test_transport_200(benchmark: Any, transport_200: dict[str, Any], label: str) -> None:
    _record_transport(benchmark, transport_200, label, T_COMMANDS, T_BATCH_200)
