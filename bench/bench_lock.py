"""Distributed locks: ringkit.Lock beside raw SET NX PX + DEL, redis-py's Lock, python-redis-lock
and pottery's Redlock, on real redis-server processes (issue 5's "Speed" paragraph).

The redis-servers (three, on free loopback ports, no persistence) come from bench/conftest.py's
``redis_servers`` fixture, which starts and stops them with tests/redis_procs.py. Every library
talks to the same servers through redis-py clients configured alike.

Rows, one benchmark group each:

- uncontended acquire+release on one server: raw ``SET key val NX PX`` + ``DEL`` (two round trips:
  the floor), redis-py ``client.lock(name, timeout=10)``, python-redis-lock
  ``redis_lock.Lock(client, name, expire=10)`` and ringkit ``Lock(name, RedisBackend(client),
  ttl=10)``, which also returns a fencing token;
- the same on three servers: ringkit ``RedisBackend([c1, c2, c3], replicas=3)`` beside pottery
  ``Redlock(key=..., masters={c1, c2, c3})``;
- hand-off latency: a waiting client in another process is blocked in ``acquire()``; the time from
  just before the holder's ``release()`` until the holder reads the line the waiter writes as soon
  as its ``acquire()`` returns (so a pipe hop, tens of microseconds, is included);
- ringkit ``Lock`` on the in-memory backend, for information.

Timing. Every row is its own benchmark, timed by pytest-benchmark itself:
``benchmark.pedantic(acquire_release, rounds=ROUNDS, iterations=BATCH_1, warmup_rounds=1)``, one
acquire+release per iteration (a round's time over its iterations is one figure), so the JSON's
stats, and bench/report.py's figures, are pytest-benchmark's measurements. A round's figure is
the mean of its calls, so a rare slow call (pottery's Redlock retrying) weighs on its round; the
median over the rounds keeps a few such rounds from moving the row. A hand-off is one
round of one iteration: pedantic's ``setup`` (untimed) has the holder take the lock, the waiter
block in ``acquire()`` and the holder keep the lock HOLD seconds more; the timed call releases and
waits for the waiter's line; ``teardown`` (untimed) checks the order of the two processes' clocks
and the tokens, and waits until the waiter has released. The rows run in one process, one after
the other, in file order, and the rows of a group are adjacent, so the libraries of a group are
measured within seconds of one another; loopback latency still swings by tens of percent from
one second to the next on a small VM, and a ratio within a group carries that noise. The
in-memory row is calibrated by pytest-benchmark (no servers). bench/conftest.py's ``measure``
fixture runs every row and writes its extra_info (label, n_keys, reference, targets, per,
versions, median_s, ns_per_key, keys_per_s).

Before timing, each library is checked to exclude a second client while held and to release;
ringkit's tokens are checked to strictly increase (also across the hand-offs between the two
processes). Targets are the issue's; bench/report.py says whether they were met, nothing here
asserts on time.

Run alone (about a minute of measuring)::

    python -m pytest bench/bench_lock.py -p no:cacheprovider --benchmark-json=/tmp/lock-bench.json
    python bench/report.py /tmp/lock-bench.json
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

ROUNDS = 25  # rounds per uncontended row
BATCH_1 = 200  # acquire+release cycles per round (iterations), one server
BATCH_3 = 60  # the same, three servers
HANDOFFS = 50  # hand-offs per library (one per round)
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

ONE = "lock: uncontended acquire+release, one redis-server on loopback"
THREE = "lock: uncontended acquire+release, three redis-servers on loopback"
HANDOFF_ONE = ("lock: hand-off, one redis-server: holder's release() to a waiting process's "
               "acquire() returning")
HANDOFF_THREE = ("lock: hand-off, three redis-servers: holder's release() to a waiting process's "
                 "acquire() returning")
MEMORY = "lock: in-memory (MemoryBackend) acquire+release, 10,000 per call"

PEER_PACKAGES = ("ringkit", "redis", "python-redis-lock", "pottery")
PER = "acquire+release"


# --------------------------------------------------------------------------------------------------
# redis-server processes


def _client(port: int) -> Any:
    import redis

    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=SOCKET_TIMEOUT,
                       socket_connect_timeout=SOCKET_TIMEOUT)


@pytest.fixture(scope="module")
def redis_ports(redis_servers: Callable[[int], list[Any]]) -> list[int]:
    """Three redis-server processes on free loopback ports (see bench/conftest.py)."""
    return [server.port for server in redis_servers(3)]


# --------------------------------------------------------------------------------------------------
# The libraries: each a (acquire, release) pair of the calls a user writes, made once and reused.


Cycle = tuple[Callable[[], Any], Callable[[], Any]]


def raw_cycle(clients: Sequence[Any], key: str) -> Cycle:
    client = clients[0]

    def acquire() -> None:
        if not client.set(key, "1", nx=True, px=int(TTL * 1000)):
            raise RuntimeError(f"raw SET NX on {key} refused: the key is held")

    return acquire, lambda: client.delete(key)


def redispy_cycle(clients: Sequence[Any], name: str) -> Cycle:
    lock = clients[0].lock(name, timeout=TTL)
    return lock.acquire, lock.release


def prl_cycle(clients: Sequence[Any], name: str) -> Cycle:
    import redis_lock

    lock = redis_lock.Lock(clients[0], name, expire=int(TTL))
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


def check_tokens(clients: Sequence[Any], name: str) -> None:
    """ringkit: fencing tokens strictly increase from acquisition to acquisition."""
    lock = ringkit_lock(clients, name)
    tokens = []
    for _ in range(5):
        lock.acquire()
        tokens.append(lock.token)
        lock.release()
    assert tokens == sorted(set(tokens)), tokens


def run_uncontended(measure: Any, label: str, make: Callable[[Sequence[Any], str], Cycle],
                    ports: Sequence[int], name: str, batch: int, **row: Any) -> None:
    """Check one library's lock (exclusion, and ringkit's tokens), then time its acquire+release:
    `batch` cycles per round, ROUNDS rounds, after one warm-up round (connections open, scripts
    loaded, code specialised)."""
    clients = [_client(p) for p in ports]
    others = [_client(p) for p in ports]
    try:
        cycle = make(clients, name)
        check_exclusion(label, cycle, make(others, name))
        if make is ringkit_cycle:
            check_tokens(clients, f"{name}:tokens")
        acquire, release = cycle

        def acquire_release() -> None:
            acquire()
            release()

        measure(acquire_release, label=label, n_keys=1, per=PER, versions=PEER_PACKAGES,
                pedantic={"rounds": ROUNDS, "iterations": batch, "warmup_rounds": 1}, **row)
    finally:
        for client in clients + others:
            client.close()


# --------------------------------------------------------------------------------------------------
# Uncontended acquire+release, one server


@pytest.mark.benchmark(group=ONE)
def test_one_raw(measure: Any, redis_ports: list[int]) -> None:
    run_uncontended(measure, RAW, raw_cycle, redis_ports[:1], "bench-1:raw", BATCH_1,
                    reference=True)


@pytest.mark.benchmark(group=ONE)
def test_one_redispy(measure: Any, redis_ports: list[int]) -> None:
    run_uncontended(measure, REDISPY, redispy_cycle, redis_ports[:1], "bench-1:redispy", BATCH_1,
                    reference=True)


@pytest.mark.benchmark(group=ONE)
def test_one_prl(measure: Any, redis_ports: list[int]) -> None:
    run_uncontended(measure, PRL, prl_cycle, redis_ports[:1], "bench-1:prl", BATCH_1,
                    reference=True)


@pytest.mark.benchmark(group=ONE)
def test_one_ringkit(measure: Any, redis_ports: list[int]) -> None:
    run_uncontended(measure, RK1, ringkit_cycle, redis_ports[:1], "bench-1:ringkit", BATCH_1,
                    targets=[("speedup", ">=", 0.9, RAW), ("speedup", ">=", 1.0, REDISPY)])


# --------------------------------------------------------------------------------------------------
# Uncontended acquire+release, three servers


@pytest.mark.benchmark(group=THREE)
def test_three_pottery(measure: Any, redis_ports: list[int]) -> None:
    pytest.importorskip("pottery")
    run_uncontended(measure, POTTERY, pottery_cycle, redis_ports, "bench-3:pottery", BATCH_3,
                    reference=True)


@pytest.mark.benchmark(group=THREE)
def test_three_ringkit(measure: Any, redis_ports: list[int]) -> None:
    run_uncontended(measure, RK3, ringkit_cycle, redis_ports, "bench-3:ringkit", BATCH_3,
                    targets=[("speedup", ">=", 2.0, POTTERY)])


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
    """The waiting process: for each label read on stdin, say "ready", block in acquire(), write
    the time it returned (and ringkit's token) at once, release, and say "released"."""
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
        out.write(f"{t1!r} {token}\n")
        out.flush()
        lock.release()
        out.write("released\n")
        out.flush()


Waiter = tuple["subprocess.Popen[str]", dict[str, Any]]  # the process, the locks' configuration


@pytest.fixture(scope="module")
def waiter(redis_ports: list[int]) -> Iterator[Waiter]:
    """The waiting process (this file run with --waiter) and the locks' configuration."""
    pytest.importorskip("pottery")
    pytest.importorskip("redis_lock")
    config = {"ports": {"one": redis_ports[:1], "three": redis_ports},
              "names": {label: f"bench-handoff:{i}" for i, label in enumerate(HANDOFF_LOCKS)}}
    child = subprocess.Popen([sys.executable, __file__, "--waiter", json.dumps(config)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "started"
        yield child, config
    finally:
        child.stdin.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


class Handoff:
    """One library's hand-offs to the waiting process, one per pedantic round: ``prepare`` (setup:
    the holder takes the lock, the waiter blocks on it), ``release`` (timed), ``finish``
    (teardown: checks, and the waiter's release)."""

    def __init__(self, child: subprocess.Popen[str], config: dict[str, Any], label: str) -> None:
        assert child.stdin is not None and child.stdout is not None
        kind, servers = HANDOFF_LOCKS[label]
        self.stdin, self.stdout = child.stdin, child.stdout
        self.label = label
        self.is_ringkit = kind == "ringkit"
        self.holder = make_lock(kind, config["ports"][servers], config["names"][label])
        self.rng = random.Random(20240605)
        self.tokens: list[int] = []
        self.t0 = 0.0
        self.reply = ""
        self.pending = False

    def prepare(self) -> None:
        self.finish()  # pedantic calls no teardown when the benchmark is disabled
        assert self.holder.acquire()
        if self.is_ringkit:
            self.tokens.append(self.holder.token)
        self.stdin.write(self.label + "\n")
        assert self.stdout.readline().strip() == "ready"
        self.pending = True
        time.sleep(self.rng.uniform(*HOLD))  # the waiter is blocked in acquire() by now
        self.t0 = _now()

    def release(self) -> None:
        self.holder.release()
        self.reply = self.stdout.readline()  # written as soon as the waiter's acquire() returned

    def finish(self) -> None:
        if not self.pending:
            return
        self.pending = False
        t1_text, token_text = self.reply.split()
        assert float(t1_text) > self.t0, f"{self.label}: the waiter acquired before the release"
        if self.is_ringkit:
            self.tokens.append(int(token_text))
        assert self.stdout.readline().strip() == "released"


def run_handoff(measure: Any, benchmark: Any, waiter: Waiter, label: str, **row: Any) -> None:
    handoff = Handoff(*waiter, label)
    benchmark.extra_info["hold_s"] = HOLD
    measure(handoff.release, label=label, n_keys=1, per="hand-off", versions=PEER_PACKAGES,
            pedantic={"rounds": HANDOFFS, "warmup_rounds": 1, "setup": handoff.prepare,
                      "teardown": handoff.finish}, **row)
    handoff.finish()
    if handoff.is_ringkit:
        assert handoff.tokens == sorted(set(handoff.tokens)), f"{label}: tokens did not increase"


@pytest.mark.benchmark(group=HANDOFF_ONE)
def test_handoff_one_ringkit(measure: Any, benchmark: Any, waiter: Any) -> None:
    run_handoff(measure, benchmark, waiter, RK1_HANDOFF, targets=[("ns_per_key", "<=", 5e6)])


@pytest.mark.benchmark(group=HANDOFF_ONE)
def test_handoff_one_prl(measure: Any, benchmark: Any, waiter: Any) -> None:
    run_handoff(measure, benchmark, waiter, PRL, reference=True)


@pytest.mark.benchmark(group=HANDOFF_ONE)
def test_handoff_one_redispy(measure: Any, benchmark: Any, waiter: Any) -> None:
    # redis-py's Lock polls every `sleep` (0.1 s by default): its hand-off waits for the next poll.
    run_handoff(measure, benchmark, waiter, REDISPY, reference=True)


@pytest.mark.benchmark(group=HANDOFF_THREE)
def test_handoff_three_ringkit(measure: Any, benchmark: Any, waiter: Any) -> None:
    run_handoff(measure, benchmark, waiter, RK3_HANDOFF)


@pytest.mark.benchmark(group=HANDOFF_THREE)
def test_handoff_three_pottery(measure: Any, benchmark: Any, waiter: Any) -> None:
    # pottery's Redlock retries after a random sleep of up to 0.2 s.
    run_handoff(measure, benchmark, waiter, POTTERY, reference=True)


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
