"""Distributed locks: ringkit.Lock beside raw SET NX PX + DEL, redis-py's Lock, python-redis-lock
and pottery's Redlock, on real redis-server processes (issue 5's "Speed" paragraph).

The file starts its own ``redis-server`` processes (three, on free loopback ports, no persistence:
``--save "" --appendonly no``), waits for PING, and kills them by pid at the end of the session.
Every library talks to the same servers through redis-py clients configured alike.

Rows, one benchmark group each:

- uncontended acquire+release on one server: raw ``SET key val NX PX`` + ``DEL`` (two round trips:
  the floor), redis-py ``client.lock(name, timeout=10)``, python-redis-lock
  ``redis_lock.Lock(client, name, expire=10)`` and ringkit ``Lock(name, RedisBackend(client),
  ttl=10)``, which also returns a fencing token;
- the same on three servers: ringkit ``RedisBackend([c1, c2, c3], replicas=3)`` beside pottery
  ``Redlock(key=..., masters={c1, c2, c3})``;
- hand-off latency: a waiting client in another process is blocked in ``acquire()``; the time from
  just before the holder's ``release()`` to the waiter's ``acquire()`` returning, both read on
  CLOCK_MONOTONIC (system-wide on Linux, so the two processes' readings compare);
- ringkit ``Lock`` on the in-memory backend, for information.

Interleaving. Loopback latency swings by tens of percent from one second to the next, so
libraries timed one after the other would be compared across different moments. Instead, each
group of Redis rows is measured in one pass: in each of ROUNDS rounds, every library in turn (the
order rotates from round to round) runs a batch of acquire+release cycles, each cycle timed on
its own with ``time.perf_counter_ns``, and the batch's median is that library's figure for the
round. (Hand-offs: one hand-off per library per round.) Each library's benchmark then hands its
per-round figures to pytest-benchmark through ``benchmark.pedantic`` with a replay timer
(``interleaved_replay``: a clock that advances by the next recorded figure each round), so the
JSON's stats, and bench/report.py's median, min and rounds, are exactly those of the interleaved
rounds; ``extra_info`` also keeps the raw per-round figures (``round_figures_s``) and the method.
The ``measure`` fixture of bench/conftest.py times one callable at a time and so cannot
interleave; the extra_info fields it writes (label, n_keys, reference, targets, per, median_s,
ns_per_key, keys_per_s) are written here the same way. The in-memory row uses ``measure``.

Before timing, each library is checked to exclude a second client while held and to release;
ringkit's tokens are checked to strictly increase. Targets are the issue's; bench/report.py says
whether they were met, nothing here asserts on time.

Run alone (about a minute of measuring)::

    python -m pytest bench/bench_lock.py -p no:cacheprovider --benchmark-json=/tmp/lock-bench.json
    python bench/report.py /tmp/lock-bench.json
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pytest

ROUNDS = 25  # interleaved rounds per group (uncontended)
BATCH_1 = 200  # acquire+release cycles per library per round, one server
BATCH_3 = 60  # the same, three servers
HANDOFFS = 50  # hand-offs per library (one per library per round)
HOLD = (0.010, 0.030)  # the holder keeps the lock this long (uniform) after the waiter is waiting
TTL = 10.0  # lease of every lock, in seconds (redis-py timeout, python-redis-lock expire, ...)
N_MEMORY = 10_000  # in-memory cycles per timed call
SOCKET_TIMEOUT = 5.0

RAW = "raw SET NX PX + DEL (redis-py)"
REDISPY = "redis-py Lock"
PRL = "python-redis-lock Lock"
RK1 = "ringkit Lock (RedisBackend, 1 server, fencing token)"
RK3 = "ringkit Lock (RedisBackend, 3 servers, replicas=3, fencing token)"
POTTERY = "pottery Redlock (3 masters)"
RK1_HANDOFF = "ringkit Lock (1 server)"
RK3_HANDOFF = "ringkit Lock (3 servers, replicas=3)"

ONE = ("lock: uncontended acquire+release, one redis-server on loopback "
       "(median of interleaved rounds)")
THREE = ("lock: uncontended acquire+release, three redis-servers on loopback "
         "(median of interleaved rounds)")
HANDOFF_ONE = ("lock: hand-off, one redis-server: holder's release() to a waiting process's "
               "acquire() returning")
HANDOFF_THREE = ("lock: hand-off, three redis-servers: holder's release() to a waiting process's "
                 "acquire() returning")
MEMORY = "lock: in-memory (MemoryBackend) acquire+release, 10,000 per call"

PEER_PACKAGES = ("ringkit", "redis", "python-redis-lock", "pottery")


# --------------------------------------------------------------------------------------------------
# The replay timer: pytest-benchmark's stats become the interleaved rounds' figures.


class ReplayClock:
    """A timer for pytest-benchmark that advances, each round, by the next recorded figure.

    ``benchmark.pedantic(clock.step, rounds=len(figures))`` reads the timer around each call of
    ``step``; ``step`` moves the clock on by the next figure, so each round's duration is that
    figure. Only the benchmarks of this file that replay interleaved figures use it.
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
# redis-server processes


def _client(port: int) -> Any:
    import redis

    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=SOCKET_TIMEOUT,
                       socket_connect_timeout=SOCKET_TIMEOUT)


@pytest.fixture(scope="session")
def redis_ports(start_redis_servers: Any) -> list[int]:
    """Three redis-server processes on free loopback ports (see bench/conftest.py)."""
    return [port for _, port in start_redis_servers(3)]


# --------------------------------------------------------------------------------------------------
# The libraries: each a (acquire, release) pair of the calls a user writes, made once and reused.


Cycle = tuple[Callable[[], Any], Callable[[], Any]]


def raw_cycle(client: Any, key: str) -> Cycle:
    def acquire() -> None:
        if not client.set(key, "1", nx=True, px=int(TTL * 1000)):
            raise RuntimeError(f"raw SET NX on {key} refused: the key is held")

    return acquire, lambda: client.delete(key)


def redispy_cycle(client: Any, name: str) -> Cycle:
    lock = client.lock(name, timeout=TTL)
    return lock.acquire, lock.release


def prl_cycle(client: Any, name: str) -> Cycle:
    import redis_lock

    lock = redis_lock.Lock(client, name, expire=int(TTL))
    return lock.acquire, lock.release


def ringkit_lock(clients: Sequence[Any], name: str) -> Any:
    from ringkit.lock import Lock, RedisBackend

    backend = RedisBackend(list(clients), replicas=len(clients))
    backend.initialize()  # fresh servers: grant at once (no restart quiet period)
    return Lock(name, backend, ttl=TTL)


def ringkit_cycle(clients: Sequence[Any], name: str) -> Cycle:
    lock = ringkit_lock(clients, name)
    return lock.acquire, lock.release


def pottery_cycle(clients: Sequence[Any], name: str) -> Cycle:
    from pottery import Redlock

    lock = Redlock(key=name, masters=set(clients), auto_release_time=TTL)
    return lock.acquire, lock.release


def check_exclusion(label: str, first: Cycle, second: Cycle) -> None:
    """While `first` holds, `second` (another client of the same lock) cannot take it."""
    first[0]()
    try:
        if label == RAW:
            try:
                second[0]()
            except RuntimeError:
                pass
            else:
                raise AssertionError(f"{label}: a second client acquired a held lock")
        else:
            # Non-blocking try on the peers' own API.
            acquire = second[0]
            owner = getattr(acquire, "__self__", None)
            assert owner is not None
            ok = owner.acquire(blocking=False)
            assert not ok, f"{label}: a second client acquired a held lock"
    finally:
        first[1]()
    second[0]()  # free again: the second client gets it at once
    second[1]()


def time_batch(cycle: Cycle, n: int) -> float:
    """Median seconds of one acquire+release over n cycles, each timed on its own."""
    acquire, release = cycle
    clock = time.perf_counter_ns
    samples = []
    for _ in range(n):
        t0 = clock()
        acquire()
        release()
        samples.append(clock() - t0)
    return statistics.median(samples) / 1e9


def interleave(cycles: dict[str, Cycle], rounds: int, batch: int) -> dict[str, list[float]]:
    """Per library, one figure per round: the median cycle of its batch in that round."""
    for cycle in cycles.values():  # warm up: connections open, scripts loaded, code specialised
        time_batch(cycle, max(20, batch // 4))
    labels = list(cycles)
    figures: dict[str, list[float]] = {label: [] for label in labels}
    for r in range(rounds):
        for i in range(len(labels)):
            label = labels[(r + i) % len(labels)]  # rotate: no library always goes first
            figures[label].append(time_batch(cycles[label], batch))
    return figures


# --------------------------------------------------------------------------------------------------
# Uncontended acquire+release, one server


@pytest.fixture(scope="module")
def one_server_figures(redis_ports: list[int]) -> dict[str, list[float]]:
    port = redis_ports[0]
    clients = {label: _client(port) for label in (RAW, REDISPY, PRL, RK1)}
    makers: dict[str, Callable[[Any, str], Cycle]] = {
        RAW: raw_cycle, REDISPY: redispy_cycle, PRL: prl_cycle,
        RK1: lambda c, name: ringkit_cycle([c], name),
    }
    cycles = {label: makers[label](clients[label], f"bench-1:{i}")
              for i, label in enumerate(makers)}
    for i, label in enumerate(makers):
        other = makers[label](_client(port), f"bench-1:{i}")
        check_exclusion(label, cycles[label], other)
    # ringkit: tokens strictly increase from acquisition to acquisition.
    lock = ringkit_lock([clients[RK1]], "bench-1:tokens")
    tokens = []
    for _ in range(5):
        lock.acquire()
        tokens.append(lock.token)
        lock.release()
    assert tokens == sorted(set(tokens)), tokens
    figures = interleave(cycles, ROUNDS, BATCH_1)
    for client in clients.values():
        client.close()
    return figures


@replayed(ONE)
def test_one_raw(benchmark: Any, one_server_figures: dict[str, list[float]]) -> None:
    record(benchmark, one_server_figures[RAW], label=RAW, per="acquire+release", reference=True,
           batch=BATCH_1)


@replayed(ONE)
def test_one_redispy(benchmark: Any, one_server_figures: dict[str, list[float]]) -> None:
    record(benchmark, one_server_figures[REDISPY], label=REDISPY, per="acquire+release",
           reference=True, batch=BATCH_1)


@replayed(ONE)
def test_one_prl(benchmark: Any, one_server_figures: dict[str, list[float]]) -> None:
    record(benchmark, one_server_figures[PRL], label=PRL, per="acquire+release", reference=True,
           batch=BATCH_1)


@replayed(ONE)
def test_one_ringkit(benchmark: Any, one_server_figures: dict[str, list[float]]) -> None:
    record(benchmark, one_server_figures[RK1], label=RK1, per="acquire+release", batch=BATCH_1,
           targets=[_target("speedup", ">=", 0.9, RAW), _target("speedup", ">=", 1.0, REDISPY)])


# --------------------------------------------------------------------------------------------------
# Uncontended acquire+release, three servers


@pytest.fixture(scope="module")
def three_server_figures(redis_ports: list[int]) -> dict[str, list[float]]:
    pytest.importorskip("pottery")
    rk_clients = [_client(p) for p in redis_ports]
    pottery_clients = [_client(p) for p in redis_ports]
    cycles = {RK3: ringkit_cycle(rk_clients, "bench-3:ringkit"),
              POTTERY: pottery_cycle(pottery_clients, "bench-3:pottery")}
    check_exclusion(RK3, cycles[RK3], ringkit_cycle([_client(p) for p in redis_ports],
                                                    "bench-3:ringkit"))
    check_exclusion(POTTERY, cycles[POTTERY],
                    pottery_cycle([_client(p) for p in redis_ports], "bench-3:pottery"))
    lock = ringkit_lock(rk_clients, "bench-3:tokens")
    tokens = []
    for _ in range(5):
        lock.acquire()
        tokens.append(lock.token)
        lock.release()
    assert tokens == sorted(set(tokens)), tokens
    figures = interleave(cycles, ROUNDS, BATCH_3)
    for client in rk_clients + pottery_clients:
        client.close()
    return figures


@replayed(THREE)
def test_three_pottery(benchmark: Any, three_server_figures: dict[str, list[float]]) -> None:
    record(benchmark, three_server_figures[POTTERY], label=POTTERY, per="acquire+release",
           reference=True, batch=BATCH_3)


@replayed(THREE)
def test_three_ringkit(benchmark: Any, three_server_figures: dict[str, list[float]]) -> None:
    record(benchmark, three_server_figures[RK3], label=RK3, per="acquire+release", batch=BATCH_3,
           targets=[_target("speedup", ">=", 2.0, POTTERY)])


# --------------------------------------------------------------------------------------------------
# Hand-off latency: the waiter is another process (no GIL between holder and waiter).

# Each library's lock in the waiter process, by kind: (kind, servers).
HANDOFF_LOCKS: dict[str, tuple[str, str]] = {
    RK1_HANDOFF: ("ringkit", "one"),
    PRL: ("prl", "one"),
    REDISPY: ("redispy", "one"),
    RK3_HANDOFF: ("ringkit", "three"),
    POTTERY: ("pottery", "three"),
}


def make_lock(kind: str, ports: Sequence[int], name: str) -> Any:
    """A lock object of library `kind` on the given servers (the same in holder and waiter)."""
    clients = [_client(p) for p in ports]
    if kind == "ringkit":
        return ringkit_lock(clients, name)
    if kind == "redispy":
        return clients[0].lock(name, timeout=TTL)
    if kind == "prl":
        import redis_lock

        return redis_lock.Lock(clients[0], name, expire=int(TTL))
    if kind == "pottery":
        from pottery import Redlock

        return Redlock(key=name, masters=set(clients), auto_release_time=TTL)
    raise ValueError(kind)


def _now() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def waiter_main(config: dict[str, Any]) -> None:
    """The waiting process: for each label read on stdin, say "ready", block in acquire(), note
    the time it returned, release, and write that time (and ringkit's token) on stdout."""
    locks = {label: make_lock(kind, config["ports"][servers], config["names"][label])
             for label, (kind, servers) in HANDOFF_LOCKS.items()}
    out = sys.stdout
    out.write("started\n")
    out.flush()
    for line in sys.stdin:
        label = line.strip()
        lock = locks[label]
        out.write("ready\n")
        out.flush()
        lock.acquire()
        t1 = _now()
        token = getattr(lock, "token", 0) if HANDOFF_LOCKS[label][0] == "ringkit" else 0
        lock.release()
        out.write(f"{t1!r} {token}\n")
        out.flush()


@pytest.fixture(scope="module")
def handoff_figures(redis_ports: list[int]) -> dict[str, list[float]]:
    pytest.importorskip("pottery")
    pytest.importorskip("redis_lock")
    config = {"ports": {"one": redis_ports[:1], "three": redis_ports},
              "names": {label: f"bench-handoff:{i}" for i, label in enumerate(HANDOFF_LOCKS)}}
    holders = {label: make_lock(kind, config["ports"][servers], config["names"][label])
               for label, (kind, servers) in HANDOFF_LOCKS.items()}
    child = subprocess.Popen([sys.executable, __file__, "--waiter", json.dumps(config)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "started"
        rng = random.Random(20240605)
        labels = list(HANDOFF_LOCKS)
        figures: dict[str, list[float]] = {label: [] for label in labels}
        tokens: dict[str, list[int]] = {label: [] for label in labels}
        for r in range(HANDOFFS + 1):  # round 0 warms up (first connections, script loads)
            for i in range(len(labels)):
                label = labels[(r + i) % len(labels)]
                holder = holders[label]
                assert holder.acquire()
                is_ringkit = HANDOFF_LOCKS[label][0] == "ringkit"
                if is_ringkit:
                    tokens[label].append(holder.token)
                child.stdin.write(label + "\n")
                assert child.stdout.readline().strip() == "ready"
                time.sleep(rng.uniform(*HOLD))  # the waiter is blocked in acquire() by now
                t0 = _now()
                holder.release()
                t1_text, token_text = child.stdout.readline().split()
                latency = float(t1_text) - t0
                assert latency > 0, f"{label}: the waiter acquired before the release"
                if is_ringkit:
                    tokens[label].append(int(token_text))
                if r > 0:
                    figures[label].append(latency)
        for label in (RK1_HANDOFF, RK3_HANDOFF):
            assert tokens[label] == sorted(set(tokens[label])), f"{label}: tokens did not increase"
        return figures
    finally:
        child.stdin.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(child.pid, 9)
            child.wait()


@replayed(HANDOFF_ONE)
def test_handoff_one_ringkit(benchmark: Any, handoff_figures: dict[str, list[float]]) -> None:
    record(benchmark, handoff_figures[RK1_HANDOFF], label=RK1_HANDOFF, per="hand-off",
           targets=[_target("ns_per_key", "<=", 5e6)], hold_s=HOLD)


@replayed(HANDOFF_ONE)
def test_handoff_one_prl(benchmark: Any, handoff_figures: dict[str, list[float]]) -> None:
    record(benchmark, handoff_figures[PRL], label=PRL, per="hand-off", reference=True,
           hold_s=HOLD)


@replayed(HANDOFF_ONE)
def test_handoff_one_redispy(benchmark: Any, handoff_figures: dict[str, list[float]]) -> None:
    # redis-py's Lock polls every `sleep` (0.1 s by default): its hand-off waits for the next poll.
    record(benchmark, handoff_figures[REDISPY], label=REDISPY, per="hand-off", reference=True,
           hold_s=HOLD)


@replayed(HANDOFF_THREE)
def test_handoff_three_ringkit(benchmark: Any, handoff_figures: dict[str, list[float]]) -> None:
    record(benchmark, handoff_figures[RK3_HANDOFF], label=RK3_HANDOFF, per="hand-off",
           hold_s=HOLD)


@replayed(HANDOFF_THREE)
def test_handoff_three_pottery(benchmark: Any, handoff_figures: dict[str, list[float]]) -> None:
    # pottery's Redlock retries after a random sleep of up to 0.2 s.
    record(benchmark, handoff_figures[POTTERY], label=POTTERY, per="hand-off", reference=True,
           hold_s=HOLD)


# --------------------------------------------------------------------------------------------------
# In memory, for information (no peers; the `measure` fixture times it as the other files do)


def memory_loop(lock: Any, n: int) -> None:
    acquire, release = lock.acquire, lock.release
    for _ in range(n):
        acquire()
        release()


@pytest.mark.benchmark(group=MEMORY, min_rounds=5, max_time=1.0, warmup=True,
                       warmup_iterations=2)
def test_memory_ringkit(measure: Any) -> None:
    from ringkit.lock import Lock, MemoryBackend

    lock = Lock("bench-memory", MemoryBackend(), ttl=TTL)
    other = Lock("bench-memory", lock.backend, ttl=TTL)
    lock.acquire()
    assert not other.acquire(blocking=False)
    first = lock.token
    lock.release()
    memory_loop(lock, 3)
    lock.acquire()
    assert lock.token > first
    lock.release()
    measure(memory_loop, lock, N_MEMORY, label="ringkit Lock (MemoryBackend)", n_keys=N_MEMORY,
            per="acquire+release")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--waiter":
        waiter_main(json.loads(sys.argv[2]))
    else:
        sys.exit("usage: bench_lock.py --waiter CONFIG_JSON (run the bench with pytest)")
