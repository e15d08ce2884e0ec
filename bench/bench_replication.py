"""Replication: ringkit.ReplicatedStore on three redis-servers beside plain redis-py on one, and on
memory nodes (issue 6's "Speed" paragraph).

The file starts its own ``redis-server`` processes (four, on free loopback ports, no persistence:
``--save "" --appendonly no``), waits for PING, and kills them by pid at the end of the module:
three are the store's nodes (``RedisNode``; ``replicas=3, write_quorum=2, read_quorum=2``), the
fourth serves the plain redis-py reference rows, so those run on one server exactly as a user of
a single Redis would. Every client is a ``redis.Redis`` with the same socket timeouts, and redis-py
must parse replies with hiredis (ringkit's ``redis`` extra requires it): the module fails at once
if it does not, and every Redis row records redis-py's and hiredis's versions and the parser class
in its extra_info.

Rows, one benchmark group each:

- ``put`` latency, one key per call: plain ``SET`` (reference) beside ringkit ``put`` of fresh
  keys (never written before) and ``put`` updating keys this store wrote before; the issue's
  target is ``put`` <= 4x ``SET``, i.e. "vs SET" >= 0.25x;
- ``get`` latency: plain ``GET`` (reference) beside ringkit ``get``;
- ``put_many`` of 10,000 keys (fresh keys, and updates of keys this store wrote) beside redis-py
  ``MSET`` of the same keys on one server; target >= 50,000 keys/s;
- ``get_many`` of the same 10,000 keys beside redis-py pipelined ``GET`` x 10,000 and ``MGET``;
  target >= 50,000 keys/s;
- on three ``MemoryNode`` (same quorums): ``put`` then ``get`` of each key, alternating, on keys
  the store wrote before and on fresh keys (target >= 100,000 ops/s), and ``put`` alone and ``get``
  alone, for information.

Interleaving. Loopback latency swings by tens of percent from one second to the next, so the Redis
rows of a group are measured in one pass: in each round every contender in turn (the order
rotates from round to round) runs its batch (latency: BATCH calls, each timed on its own with
``time.perf_counter_ns``, the batch's median being the contender's figure for the round; bulk:
one call of 10,000 keys, timed whole). Each benchmark then hands its per-round figures to
pytest-benchmark through ``benchmark.pedantic`` with a replay timer (a clock that advances by the
next recorded figure each round), so the JSON's stats, and bench/report.py's median, min and
rounds, are exactly those of the interleaved rounds; ``extra_info`` keeps the raw figures
(``round_figures_s``) and the method. The in-memory rows use bench/conftest.py's ``measure``.

Before timing: values read back equal what was written, on all three servers; each ringkit
contender has its own store (own writer id, own redis-py clients) as separate users would; and
INFO commandstats counts, over the three servers, the commands one ``put`` causes (recorded as
``server_commands_per_put``; INFO also counts the commands a script runs: the one-round-trip path
is, per server, the epoch-marker GET and one EVALSHA, whose script runs one HMGET and one HSET).
After each SET batch the plain server's and the client's last CPU (/proc/<pid>/stat) are noted
(``server_on_client_cpu_rounds`` in the SET row's extra_info): on a small VM a round trip to a
server on the other, idle, core costs several times one on the client's core, so the SET
reference moves with the scheduler's placement as well as with the load.
Targets are the issue's; bench/report.py says whether they were met, nothing here asserts on time.

Run alone (about a minute of measuring)::

    python -m pytest bench/bench_replication.py -p no:cacheprovider \\
        --benchmark-json=/tmp/rep-bench.json
    python bench/report.py /tmp/rep-bench.json
"""

from __future__ import annotations

import importlib.metadata
import itertools
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pytest

ROUNDS = 30  # interleaved rounds, latency groups
BATCH = 200  # calls per contender per round, latency groups
BULK_ROUNDS = 9  # interleaved rounds, put_many / get_many groups
N_BULK = 10_000  # keys per put_many / get_many call
N_MEMORY = 10_000  # operations per timed call, in-memory rows
UPDATE_POOL = 2_000  # keys a latency-round update cycles through (written once beforehand)
VALUE_SIZE = 100  # bytes per value
SOCKET_TIMEOUT = 5.0

VALUE = bytes(range(VALUE_SIZE))

SET = "redis-py SET (1 server)"
PUT_FRESH = "ringkit put, fresh key (3 servers)"
PUT_UPDATE = "ringkit put, update of a key it wrote (3 servers)"
GET = "redis-py GET (1 server)"
RK_GET = "ringkit get (3 servers)"
MSET = "redis-py MSET (1 server)"
PUT_MANY_FRESH = "ringkit put_many, fresh keys (3 servers)"
PUT_MANY_UPDATE = "ringkit put_many, updates of keys it wrote (3 servers)"
PIPE_GET = "redis-py pipelined GET x 10,000 (1 server)"
MGET = "redis-py MGET (1 server)"
GET_MANY = "ringkit get_many (3 servers)"
MEM_PUT_GET = "ringkit put+get, keys it wrote before (3 MemoryNode)"
MEM_PUT_GET_FRESH = "ringkit put+get, fresh keys (3 MemoryNode)"
MEM_PUT = "ringkit put only, keys it wrote before (3 MemoryNode)"
MEM_GET = "ringkit get only (3 MemoryNode)"

G_PUT = "replication: put latency, 3 redis-servers (replicas=3, W=2, R=2) vs SET on one"
G_GET = "replication: get latency, 3 redis-servers (replicas=3, W=2, R=2) vs GET on one"
G_PUT_MANY = "replication: put_many, 10,000 keys, 3 redis-servers (replicas=3, W=2) vs MSET on one"
G_GET_MANY = ("replication: get_many, 10,000 keys, 3 redis-servers (replicas=3, R=2) vs GET / MGET "
              "on one")
G_MEMORY = "replication: in memory, 3 MemoryNode (replicas=3, W=2, R=2), 10,000 operations per call"

PEER_PACKAGES = ("ringkit", "redis", "hiredis")


# --------------------------------------------------------------------------------------------------
# The replay timer: pytest-benchmark's stats become the interleaved rounds' figures.


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


def record(benchmark: Any, figures: Sequence[float], *, label: str, n_keys: int, per: str,
           reference: bool = False, targets: Iterable[dict[str, Any]] = (),
           **extra: Any) -> None:
    """Hand the interleaved per-round figures (seconds per call of `n_keys` items) to
    pytest-benchmark and write extra_info the way ``measure`` does."""
    info = benchmark.extra_info
    info.update(label=label, n_keys=n_keys, n_bytes=None, reference=reference,
                targets=list(targets), per=per, method="interleaved rounds, replayed",
                round_figures_s=list(figures), **extra)
    REPLAY.load(figures)
    benchmark.pedantic(REPLAY.step, rounds=len(figures), iterations=1)
    median = statistics.median(figures)
    info.update(median_s=median, ns_per_key=median / n_keys * 1e9, keys_per_s=n_keys / median,
                versions=_versions(), redis_client=_redis_client_info())


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PEER_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


_PARSER: dict[str, str] = {}
SERVER_PIDS: dict[int, int] = {}  # port -> redis-server pid


def _last_cpu(pid: int | str) -> int | None:
    """The CPU a process last ran on (/proc/<pid>/stat, field 39), None where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[36])
    except (OSError, IndexError, ValueError):
        return None


def _redis_client_info() -> dict[str, Any]:
    import redis
    from redis.utils import HIREDIS_AVAILABLE

    return {"redis_py": redis.__version__, "hiredis_available": HIREDIS_AVAILABLE,
            "parser": _PARSER.get("parser")}


# --------------------------------------------------------------------------------------------------
# redis-server processes


def _client(port: int) -> Any:
    import redis

    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=SOCKET_TIMEOUT,
                       socket_connect_timeout=SOCKET_TIMEOUT)


@pytest.fixture(scope="module")
def redis_ports(start_redis_servers: Any) -> list[int]:
    """Four redis-servers: [0:3] the store's nodes, [3] the plain redis-py reference."""
    started = start_redis_servers(4)
    for pid, port in started:
        SERVER_PIDS[port] = pid
    ports = [port for _, port in started]
    _require_hiredis(ports[3])
    return ports


def _require_hiredis(port: int) -> None:
    """redis-py must parse with hiredis (ringkit's `redis` extra requires it): fail otherwise."""
    from redis.utils import HIREDIS_AVAILABLE

    client = _client(port)
    conn = client.connection_pool.get_connection()
    try:
        parser = type(conn._parser).__name__
    finally:
        client.connection_pool.release(conn)
        client.close()
    _PARSER["parser"] = parser
    if not HIREDIS_AVAILABLE or "Hiredis" not in parser:
        pytest.fail(f"redis-py parses with {parser}, not hiredis: pip install hiredis "
                    "(ringkit's `redis` extra requires it)")


def _redis_store(ports: Sequence[int]) -> Any:
    """A ReplicatedStore on the three node servers, with clients of its own."""
    from ringkit.replication import RedisNode, ReplicatedStore

    nodes = {f"redis-{i}": RedisNode(_client(p), name=f"redis-{i}") for i, p in enumerate(ports)}
    store = ReplicatedStore(nodes, replicas=3, write_quorum=2, read_quorum=2)
    store.initialize()   # new servers (the first store marks them; the others find them marked)
    return store


def _item_key(store: Any, key: str) -> str:
    node = next(iter(store.nodes.values()))
    return node.key(key)


def check_replicated(store: Any, ports: Sequence[int], keys: Sequence[str],
                     values: Sequence[bytes]) -> None:
    """Every key reads back its value through the store and sits on all three servers."""
    got = store.get_many(list(keys))
    assert got == list(values), "get_many did not read back what was written"
    for key, value in zip(keys[:50], values[:50], strict=True):
        assert store.get(key) == value, f"get({key!r}) did not read back what was written"
        for port in ports:
            client = _client(port)
            stored = client.hget(_item_key(store, key), "v")
            client.close()
            assert stored == value, f"{key!r} is missing on the server at port {port}"


def commands_per_put(store: Any, ports: Sequence[int], keys: Sequence[str]) -> dict[str, float]:
    """INFO commandstats on the three node servers around len(keys) puts: commands per put."""
    clients = [_client(p) for p in ports]
    for c in clients:
        c.config_resetstat()
    for key in keys:
        store.put(key, VALUE)
    totals: dict[str, float] = {}
    for c in clients:
        for name, stats in c.info("commandstats").items():
            command = name.removeprefix("cmdstat_")
            if command.split("|")[0] in ("config", "info"):
                continue
            totals[command] = totals.get(command, 0) + stats["calls"] / len(keys)
        c.close()
    return totals


# --------------------------------------------------------------------------------------------------
# Interleaving


def time_batch(op: Callable[[], Any], n: int) -> float:
    """Median seconds of one call over n calls, each timed on its own."""
    clock = time.perf_counter_ns
    samples = []
    for _ in range(n):
        t0 = clock()
        op()
        samples.append(clock() - t0)
    return statistics.median(samples) / 1e9


def time_once(op: Callable[[], Any], n: int) -> float:
    """Seconds of one call (n is unused: bulk calls are timed whole)."""
    t0 = time.perf_counter()
    op()
    return time.perf_counter() - t0


def interleave(ops: dict[str, Callable[[], Any]], rounds: int, batch: int,
               timer: Callable[[Callable[[], Any], int], float],
               after: dict[str, Callable[[], Any]] | None = None) -> dict[str, list[float]]:
    """Per contender, one figure per round; the order rotates so no contender always goes first.
    ``after[label]``, if given, is called after each of that contender's batches."""
    for op in ops.values():  # warm up: connections open, scripts loaded, code specialised
        timer(op, max(20, batch // 4))
    labels = list(ops)
    figures: dict[str, list[float]] = {label: [] for label in labels}
    for r in range(rounds):
        for i in range(len(labels)):
            label = labels[(r + i) % len(labels)]
            figures[label].append(timer(ops[label], batch))
            if after and label in after:
                after[label]()
    return figures


# --------------------------------------------------------------------------------------------------
# put / get latency


@pytest.fixture(scope="module")
def latency_figures(redis_ports: list[int]) -> dict[str, Any]:
    nodes, plain_port = redis_ports[:3], redis_ports[3]
    plain = _client(plain_port)
    fresh_store, update_store, read_store = (_redis_store(nodes) for _ in range(3))

    # The keys that updates and reads cycle through: written once, by the store that updates
    # them (so it knows their versions, as a store that wrote a key does).
    pool = [f"lat:{i}" for i in range(UPDATE_POOL)]
    update_store.put_many({k: VALUE for k in pool})
    check_replicated(update_store, nodes, pool, [VALUE] * len(pool))
    read_store.put_many({f"read:{i}": VALUE for i in range(UPDATE_POOL)})
    check_replicated(read_store, nodes, [f"read:{i}" for i in range(UPDATE_POOL)],
                     [VALUE] * UPDATE_POOL)
    plain.mset({f"plain:{i}": VALUE for i in range(UPDATE_POOL)})

    # What one put sends, counted by the servers (all three together).
    probe = _redis_store(nodes)
    per_fresh = commands_per_put(probe, nodes, [f"probe:{i}" for i in range(100)])
    per_update = commands_per_put(probe, nodes, [f"probe:{i}" for i in range(100)])

    fresh_ids = itertools.count()
    cycle_update, cycle_set, cycle_get, cycle_rk_get = (itertools.cycle(range(UPDATE_POOL))
                                                        for _ in range(4))
    fput, uput, rget = fresh_store.put, update_store.put, read_store.get
    pset, pget = plain.set, plain.get
    ops: dict[str, Callable[[], Any]] = {
        SET: lambda: pset(f"plain:{next(cycle_set)}", VALUE),
        PUT_FRESH: lambda: fput(f"fresh:{next(fresh_ids)}", VALUE),
        PUT_UPDATE: lambda: uput(f"lat:{next(cycle_update)}", VALUE),
        GET: lambda: pget(f"plain:{next(cycle_get)}"),
        RK_GET: lambda: rget(f"read:{next(cycle_rk_get)}"),
    }
    # Where the plain server ran against the client, after each SET batch: on this kind of
    # machine (a 2-core VM) a round trip to a server on the other, idle, core costs several
    # times one on the client's own core, so the SET reference moves with the scheduler.
    placement: list[str] = []

    def note_placement() -> None:
        server, client = _last_cpu(SERVER_PIDS[plain_port]), _last_cpu("self")
        placement.append("unknown" if server is None or client is None
                         else "same" if server == client else "other")

    figures: dict[str, Any] = dict(interleave(ops, ROUNDS, BATCH, time_batch,
                                              after={SET: note_placement}))
    figures["placement"] = placement
    # The timed calls wrote what they should.
    assert fresh_store.get(f"fresh:{next(fresh_ids) - 1}") == VALUE
    assert update_store.get("lat:0") == VALUE
    figures["commands_per_put"] = {"fresh": per_fresh, "update": per_update}
    plain.close()
    return figures


@replayed(G_PUT)
def test_put_set(benchmark: Any, latency_figures: dict[str, Any]) -> None:
    placement = latency_figures["placement"]
    record(benchmark, latency_figures[SET], label=SET, n_keys=1, per="call", reference=True,
           batch=BATCH, value_bytes=VALUE_SIZE,
           server_cpu_vs_client_per_round=placement,
           server_on_client_cpu_rounds=f"{placement.count('same')} of {len(placement)}")


@replayed(G_PUT)
def test_put_fresh(benchmark: Any, latency_figures: dict[str, Any]) -> None:
    record(benchmark, latency_figures[PUT_FRESH], label=PUT_FRESH, n_keys=1, per="call",
           targets=[_target("speedup", ">=", 0.25, SET)], batch=BATCH, value_bytes=VALUE_SIZE,
           server_commands_per_put=latency_figures["commands_per_put"]["fresh"])


@replayed(G_PUT)
def test_put_update(benchmark: Any, latency_figures: dict[str, Any]) -> None:
    record(benchmark, latency_figures[PUT_UPDATE], label=PUT_UPDATE, n_keys=1, per="call",
           targets=[_target("speedup", ">=", 0.25, SET)], batch=BATCH, value_bytes=VALUE_SIZE,
           server_commands_per_put=latency_figures["commands_per_put"]["update"])


@replayed(G_GET)
def test_get_plain(benchmark: Any, latency_figures: dict[str, Any]) -> None:
    record(benchmark, latency_figures[GET], label=GET, n_keys=1, per="call", reference=True,
           batch=BATCH, value_bytes=VALUE_SIZE)


@replayed(G_GET)
def test_get_ringkit(benchmark: Any, latency_figures: dict[str, Any]) -> None:
    record(benchmark, latency_figures[RK_GET], label=RK_GET, n_keys=1, per="call", batch=BATCH,
           value_bytes=VALUE_SIZE)


# --------------------------------------------------------------------------------------------------
# put_many / get_many of 10,000 keys


@pytest.fixture(scope="module")
def bulk_figures(redis_ports: list[int]) -> dict[str, list[float]]:
    nodes, plain_port = redis_ports[:3], redis_ports[3]
    plain = _client(plain_port)
    fresh_store, update_store = _redis_store(nodes), _redis_store(nodes)
    keys = [f"user:{i}" for i in range(N_BULK)]
    items = {k: VALUE for k in keys}
    update_store.put_many(items)  # the keys it updates and reads are its own
    check_replicated(update_store, nodes, keys, [VALUE] * N_BULK)
    plain.mset(items)

    rounds = itertools.count()

    def put_many_fresh() -> None:
        r = next(rounds)
        fresh_store.put_many({f"bulk:{r}:{i}": VALUE for i in range(N_BULK)})

    def pipelined_get() -> None:
        pipe = plain.pipeline(transaction=False)
        for k in keys:
            pipe.get(k)
        pipe.execute()

    ops: dict[str, Callable[[], Any]] = {
        MSET: lambda: plain.mset(items),
        PUT_MANY_FRESH: put_many_fresh,
        PUT_MANY_UPDATE: lambda: update_store.put_many(items),
        PIPE_GET: pipelined_get,
        MGET: lambda: plain.mget(keys),
        GET_MANY: lambda: update_store.get_many(keys),
    }
    figures = interleave(ops, BULK_ROUNDS, 1, time_once)
    assert update_store.get_many(keys) == [VALUE] * N_BULK
    last = next(rounds) - 1
    assert fresh_store.get_many([f"bulk:{last}:{i}" for i in range(0, N_BULK, 97)]) == \
        [VALUE] * len(range(0, N_BULK, 97))
    plain.close()
    return figures


@replayed(G_PUT_MANY)
def test_put_many_mset(benchmark: Any, bulk_figures: dict[str, list[float]]) -> None:
    record(benchmark, bulk_figures[MSET], label=MSET, n_keys=N_BULK, per="key", reference=True,
           value_bytes=VALUE_SIZE)


@replayed(G_PUT_MANY)
def test_put_many_fresh(benchmark: Any, bulk_figures: dict[str, list[float]]) -> None:
    record(benchmark, bulk_figures[PUT_MANY_FRESH], label=PUT_MANY_FRESH, n_keys=N_BULK,
           per="key", targets=[_target("keys_per_s", ">=", 50_000)], value_bytes=VALUE_SIZE)


@replayed(G_PUT_MANY)
def test_put_many_update(benchmark: Any, bulk_figures: dict[str, list[float]]) -> None:
    record(benchmark, bulk_figures[PUT_MANY_UPDATE], label=PUT_MANY_UPDATE, n_keys=N_BULK,
           per="key", targets=[_target("keys_per_s", ">=", 50_000)], value_bytes=VALUE_SIZE)


@replayed(G_GET_MANY)
def test_get_many_pipelined_get(benchmark: Any, bulk_figures: dict[str, list[float]]) -> None:
    record(benchmark, bulk_figures[PIPE_GET], label=PIPE_GET, n_keys=N_BULK, per="key",
           reference=True, value_bytes=VALUE_SIZE)


@replayed(G_GET_MANY)
def test_get_many_mget(benchmark: Any, bulk_figures: dict[str, list[float]]) -> None:
    record(benchmark, bulk_figures[MGET], label=MGET, n_keys=N_BULK, per="key", reference=True,
           value_bytes=VALUE_SIZE)


@replayed(G_GET_MANY)
def test_get_many_ringkit(benchmark: Any, bulk_figures: dict[str, list[float]]) -> None:
    record(benchmark, bulk_figures[GET_MANY], label=GET_MANY, n_keys=N_BULK, per="key",
           targets=[_target("keys_per_s", ">=", 50_000)], value_bytes=VALUE_SIZE)


# --------------------------------------------------------------------------------------------------
# In memory (no peers; the `measure` fixture times it as the other files do)


def _memory_store() -> Any:
    from ringkit.replication import MemoryNode, ReplicatedStore

    nodes = {f"mem-{i}": MemoryNode(f"mem-{i}") for i in range(3)}
    return ReplicatedStore(nodes, replicas=3, write_quorum=2, read_quorum=2)


def _memory_keys(store: Any) -> list[str]:
    keys = [f"user:{i}" for i in range(N_MEMORY // 2)]
    store.put_many({k: VALUE for k in keys})
    assert store.get_many(keys) == [VALUE] * len(keys)
    for node in store.nodes.values():
        assert len(node) == len(keys)
    return keys


def put_get_loop(store: Any, keys: Sequence[str]) -> None:
    put, get = store.put, store.get
    for key in keys:
        put(key, VALUE)
        get(key)


MEMORY_BENCH = pytest.mark.benchmark(group=G_MEMORY, min_rounds=5, max_time=1.0, warmup=True,
                                     warmup_iterations=1)


@MEMORY_BENCH
def test_memory_put_get(measure: Any) -> None:
    store = _memory_store()
    keys = _memory_keys(store)
    measure(put_get_loop, store, keys, label=MEM_PUT_GET, n_keys=2 * len(keys), per="op",
            targets=[("keys_per_s", ">=", 100_000)])
    assert store.get(keys[0]) == VALUE


@MEMORY_BENCH
def test_memory_put_get_fresh(measure: Any) -> None:
    store = _memory_store()
    calls = itertools.count()

    def fresh_loop() -> None:
        c = next(calls)
        put, get = store.put, store.get
        for i in range(N_MEMORY // 2):
            key = f"fresh:{c}:{i}"
            put(key, VALUE)
            get(key)

    measure(fresh_loop, label=MEM_PUT_GET_FRESH, n_keys=N_MEMORY, per="op",
            targets=[("keys_per_s", ">=", 100_000)])
    assert store.get("fresh:0:0") == VALUE


@MEMORY_BENCH
def test_memory_put(measure: Any) -> None:
    store = _memory_store()
    keys = _memory_keys(store) * 2

    def loop() -> None:
        put = store.put
        for key in keys:
            put(key, VALUE)

    measure(loop, label=MEM_PUT, n_keys=len(keys), per="op")


@MEMORY_BENCH
def test_memory_get(measure: Any) -> None:
    store = _memory_store()
    keys = _memory_keys(store) * 2

    def loop() -> None:
        get = store.get
        for key in keys:
            get(key)

    measure(loop, label=MEM_GET, n_keys=len(keys), per="op")
