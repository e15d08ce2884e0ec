"""Replication: ringkit.ReplicatedStore on three redis-servers beside plain redis-py on one, and on
memory nodes (issue 6's "Speed" paragraph).

Four redis-servers (free loopback ports, no persistence) come from bench/conftest.py's
``redis_servers`` fixture, which starts and stops them with tests/redis_procs.py: three are the
store's nodes (``RedisNode``; ``replicas=3, write_quorum=2, read_quorum=2``), the fourth serves the
plain redis-py reference rows, so those run on one server exactly as a user of a single Redis
would. Every client is a ``redis.Redis`` with the same socket timeouts, and redis-py must parse
replies with hiredis (ringkit's ``redis`` extra requires it): the module fails at once if it does
not, and every Redis row records redis-py's and hiredis's versions and the parser class in its
extra_info.

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

Timing. Every row is its own benchmark, timed by pytest-benchmark itself with
``benchmark.pedantic``: the latency rows ROUNDS rounds of BATCH calls (one call per iteration; a
round's time over BATCH is one figure), the bulk rows BULK_ROUNDS rounds of one call of 10,000
keys (a fresh-key ``put_many`` gets its new keys from pedantic's untimed ``setup``), each after
one warm-up round, so the JSON's stats, and bench/report.py's figures, are pytest-benchmark's
measurements. The rows run in one process, one after the other, in file order, and the rows of a
group are adjacent, so the contenders of a group are measured within seconds of one another;
loopback latency still swings by tens of percent from one second to the next on a small VM, and a
ratio within a group carries that noise. The in-memory rows are calibrated by pytest-benchmark.
bench/conftest.py's ``measure`` fixture runs every row and writes its extra_info (label, n_keys,
reference, targets, per, versions, median_s, ns_per_key, keys_per_s).

Before timing: values read back equal what was written, on all three servers; each ringkit
contender has its own store (own writer id, own redis-py clients) as separate users would; and
INFO commandstats counts, over the three servers, the commands one ``put`` causes (recorded as
``server_commands_per_put``; INFO also counts the commands a script runs: the one-round-trip path
is, per server, the epoch-marker GET and one EVALSHA, whose script runs one HMGET and one HSET).
After each timed round of SET the plain server's and the client's last CPU (/proc/<pid>/stat) are
noted (pedantic's ``teardown``; ``server_on_client_cpu_rounds`` in the SET row's extra_info): on a
small VM a round trip to a server on the other, idle, core costs several times one on the
client's core, so the SET reference moves with the scheduler's placement as well as with the load.
After timing, what the timed calls wrote reads back. Targets are the issue's; bench/report.py says
whether they were met, nothing here asserts on time.

Run alone (about a minute of measuring)::

    python -m pytest bench/bench_replication.py -p no:cacheprovider \\
        --benchmark-json=/tmp/rep-bench.json
    python bench/report.py /tmp/rep-bench.json
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

ROUNDS = 30  # rounds per latency row
BATCH = 200  # calls per round (iterations), latency rows
BULK_ROUNDS = 9  # rounds per put_many / get_many row (one call each)
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
LATENCY = {"rounds": ROUNDS, "iterations": BATCH, "warmup_rounds": 1}
BULK = {"rounds": BULK_ROUNDS, "warmup_rounds": 1}


def run_redis_row(measure: Any, benchmark: Any, op: Callable[..., Any], *, label: str,
                  n_keys: int, per: str, pedantic: dict[str, Any], **row: Any) -> Any:
    """Time one Redis row with pedantic rounds; record the redis-py client beside its versions."""
    benchmark.extra_info.update(value_bytes=VALUE_SIZE, redis_client=_redis_client_info())
    return measure(op, label=label, n_keys=n_keys, per=per, versions=PEER_PACKAGES,
                   pedantic=pedantic, **row)


_PARSER: dict[str, str] = {}


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
def servers(redis_servers: Callable[[int], list[Any]]) -> list[Any]:
    """Four redis-servers (redis_procs.RedisProc): [0:3] the store's nodes, [3] the plain
    redis-py reference."""
    started = redis_servers(4)
    _require_hiredis(started[3].port)
    return started


@pytest.fixture(scope="module")
def redis_ports(servers: list[Any]) -> list[int]:
    return [server.port for server in servers]


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
# put / get latency


@dataclass
class Latency:
    """The clients of the latency rows, their data written and checked beforehand."""
    plain: Any  # redis-py client of the plain server
    plain_pid: int
    fresh_store: Any
    update_store: Any
    read_store: Any
    commands_per_put: dict[str, dict[str, float]]


@pytest.fixture(scope="module")
def latency(servers: list[Any], redis_ports: list[int]) -> Iterator[Latency]:
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
    yield Latency(plain, servers[3].pid, fresh_store, update_store, read_store,
                  {"fresh": per_fresh, "update": per_update})
    plain.close()


@pytest.mark.benchmark(group=G_PUT)
def test_put_set(measure: Any, benchmark: Any, latency: Latency) -> None:
    cycle, pset = itertools.cycle(range(UPDATE_POOL)), latency.plain.set
    # Where the plain server ran against the client, after each round: on this kind of machine
    # (a 2-core VM) a round trip to a server on the other, idle, core costs several times one on
    # the client's own core, so the SET reference moves with the scheduler.
    placement: list[str] = []

    def note_placement() -> None:
        server, client = _last_cpu(latency.plain_pid), _last_cpu("self")
        placement.append("unknown" if server is None or client is None
                         else "same" if server == client else "other")

    run_redis_row(measure, benchmark, lambda: pset(f"plain:{next(cycle)}", VALUE), label=SET,
                  n_keys=1, per="call", reference=True,
                  pedantic={**LATENCY, "teardown": note_placement})
    # pedantic also tears down after its warm-up round and after the one untimed call it makes
    # for the result: keep the timed rounds' notes.
    timed = placement[LATENCY["warmup_rounds"]:][:ROUNDS]
    benchmark.extra_info.update(
        server_cpu_vs_client_per_round=timed,
        server_on_client_cpu_rounds=f"{timed.count('same')} of {len(timed)}")
    assert latency.plain.get("plain:0") == VALUE


@pytest.mark.benchmark(group=G_PUT)
def test_put_fresh(measure: Any, benchmark: Any, latency: Latency) -> None:
    fresh_ids, put = itertools.count(), latency.fresh_store.put
    benchmark.extra_info["server_commands_per_put"] = latency.commands_per_put["fresh"]
    run_redis_row(measure, benchmark, lambda: put(f"fresh:{next(fresh_ids)}", VALUE),
                  label=PUT_FRESH, n_keys=1, per="call", pedantic=LATENCY,
                  targets=[("speedup", ">=", 0.25, SET)])
    assert latency.fresh_store.get(f"fresh:{next(fresh_ids) - 1}") == VALUE


@pytest.mark.benchmark(group=G_PUT)
def test_put_update(measure: Any, benchmark: Any, latency: Latency) -> None:
    cycle, put = itertools.cycle(range(UPDATE_POOL)), latency.update_store.put
    benchmark.extra_info["server_commands_per_put"] = latency.commands_per_put["update"]
    run_redis_row(measure, benchmark, lambda: put(f"lat:{next(cycle)}", VALUE),
                  label=PUT_UPDATE, n_keys=1, per="call", pedantic=LATENCY,
                  targets=[("speedup", ">=", 0.25, SET)])
    assert latency.update_store.get("lat:0") == VALUE


@pytest.mark.benchmark(group=G_GET)
def test_get_plain(measure: Any, benchmark: Any, latency: Latency) -> None:
    cycle, pget = itertools.cycle(range(UPDATE_POOL)), latency.plain.get
    got = run_redis_row(measure, benchmark, lambda: pget(f"plain:{next(cycle)}"), label=GET,
                        n_keys=1, per="call", reference=True, pedantic=LATENCY)
    assert got == VALUE


@pytest.mark.benchmark(group=G_GET)
def test_get_ringkit(measure: Any, benchmark: Any, latency: Latency) -> None:
    cycle, get = itertools.cycle(range(UPDATE_POOL)), latency.read_store.get
    got = run_redis_row(measure, benchmark, lambda: get(f"read:{next(cycle)}"), label=RK_GET,
                        n_keys=1, per="call", pedantic=LATENCY)
    assert got == VALUE


# --------------------------------------------------------------------------------------------------
# put_many / get_many of 10,000 keys


@dataclass
class Bulk:
    """The clients of the bulk rows and the 10,000 keys, written and checked beforehand."""
    plain: Any
    fresh_store: Any
    update_store: Any
    keys: list[str]
    items: dict[str, bytes]


@pytest.fixture(scope="module")
def bulk(redis_ports: list[int]) -> Iterator[Bulk]:
    nodes, plain_port = redis_ports[:3], redis_ports[3]
    plain = _client(plain_port)
    fresh_store, update_store = _redis_store(nodes), _redis_store(nodes)
    keys = [f"user:{i}" for i in range(N_BULK)]
    items = {k: VALUE for k in keys}
    update_store.put_many(items)  # the keys it updates and reads are its own
    check_replicated(update_store, nodes, keys, [VALUE] * N_BULK)
    plain.mset(items)
    yield Bulk(plain, fresh_store, update_store, keys, items)
    plain.close()


@pytest.mark.benchmark(group=G_PUT_MANY)
def test_put_many_mset(measure: Any, benchmark: Any, bulk: Bulk) -> None:
    run_redis_row(measure, benchmark, lambda: bulk.plain.mset(bulk.items), label=MSET,
                  n_keys=N_BULK, per="key", reference=True, pedantic=BULK)


@pytest.mark.benchmark(group=G_PUT_MANY)
def test_put_many_fresh(measure: Any, benchmark: Any, bulk: Bulk) -> None:
    calls = itertools.count()
    last: dict[str, bytes] = {}

    def fresh_items() -> tuple[tuple[dict[str, bytes]], dict[str, Any]]:
        c = next(calls)
        last.clear()
        last.update((f"bulk:{c}:{i}", VALUE) for i in range(N_BULK))
        return (last,), {}

    run_redis_row(measure, benchmark, bulk.fresh_store.put_many, label=PUT_MANY_FRESH,
                  n_keys=N_BULK, per="key", targets=[("keys_per_s", ">=", 50_000)],
                  pedantic={**BULK, "setup": fresh_items})
    sample = list(last)[::97]
    assert bulk.fresh_store.get_many(sample) == [VALUE] * len(sample)


@pytest.mark.benchmark(group=G_PUT_MANY)
def test_put_many_update(measure: Any, benchmark: Any, bulk: Bulk) -> None:
    run_redis_row(measure, benchmark, lambda: bulk.update_store.put_many(bulk.items),
                  label=PUT_MANY_UPDATE, n_keys=N_BULK, per="key",
                  targets=[("keys_per_s", ">=", 50_000)], pedantic=BULK)
    assert bulk.update_store.get_many(bulk.keys) == [VALUE] * N_BULK


@pytest.mark.benchmark(group=G_GET_MANY)
def test_get_many_pipelined_get(measure: Any, benchmark: Any, bulk: Bulk) -> None:
    def pipelined_get() -> list[Any]:
        pipe = bulk.plain.pipeline(transaction=False)
        for k in bulk.keys:
            pipe.get(k)
        return pipe.execute()  # type: ignore[no-any-return]

    got = run_redis_row(measure, benchmark, pipelined_get, label=PIPE_GET, n_keys=N_BULK,
                        per="key", reference=True, pedantic=BULK)
    assert got == [VALUE] * N_BULK


@pytest.mark.benchmark(group=G_GET_MANY)
def test_get_many_mget(measure: Any, benchmark: Any, bulk: Bulk) -> None:
    got = run_redis_row(measure, benchmark, lambda: bulk.plain.mget(bulk.keys), label=MGET,
                        n_keys=N_BULK, per="key", reference=True, pedantic=BULK)
    assert got == [VALUE] * N_BULK


@pytest.mark.benchmark(group=G_GET_MANY)
def test_get_many_ringkit(measure: Any, benchmark: Any, bulk: Bulk) -> None:
    got = run_redis_row(measure, benchmark, lambda: bulk.update_store.get_many(bulk.keys),
                        label=GET_MANY, n_keys=N_BULK, per="key",
                        targets=[("keys_per_s", ">=", 50_000)], pedantic=BULK)
    assert got == [VALUE] * N_BULK


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
