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
  keys (never written before) and ``put`` updating keys this store wrote before; issue 13's
  target is ``put`` <= 2.5x ``SET``, i.e. "vs SET" >= 0.4x;
- ``get`` latency: plain ``GET`` (reference) beside ringkit ``get``; target <= 2x, "vs GET" >= 0.5x;
- batches (issue 13), one group per operation and batch size (10 to 100,000 keys): ringkit
  ``put_many`` of fresh keys and of updates, and ``get_many``, beside the raw pipeline of the same
  commands (redis-py, one pipeline per node server holding exactly what ringkit sends: the state
  read and the same scripts with the same blobs, or the same HGETs; built before the timing and
  sent to the three servers at once from three threads: the wire's limit for this layout), and
  ``MSET`` / ``MGET`` / pipelined ``SET`` / ``GET`` on one server. Targets at 10,000 keys:
  >= 0.7x the raw pipeline, and >= 2x the keys/s of the run before issue 13 (TODAY_*). INFO
  commandstats gives the servers' CPU per key of one (untimed) call of each 10,000-key row;
- on three ``MemoryNode`` (same quorums): ``put`` then ``get`` of each key, alternating, on keys
  the store wrote before and on fresh keys (target >= 100,000 ops/s), ``put`` alone and ``get``
  alone, and ``put_many`` + ``get_many`` of 10,000 keys (target >= 500,000 ops/s);
- ``repair()`` of a store of 10,000 to 1,000,000 keys on three other servers: in sync (target
  <= 5 s at 1,000,000), with 1% of the keys dropped from one server before each round, and with
  one server restarted empty before each round (the refill; target >= 60,000 keys/s).

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

Run alone (about four minutes of measuring)::

    python -m pytest bench/bench_replication.py -p no:cacheprovider \\
        --benchmark-json=/tmp/rep-bench.json
    python bench/report.py /tmp/rep-bench.json
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
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
BATCH_SIZES = (10, 100, 1_000, 10_000, 100_000)  # keys per put_many / get_many call
SWEEP_ROUNDS = {10: 40, 100: 30, 1_000: 15, 10_000: 7, 100_000: 3}
# The figures of the run before issue 13 (README's run of 7bb908d), 10,000 keys: the issue's
# "today", which put_many and get_many must double.
TODAY_PUT_MANY_FRESH = 44_459
TODAY_PUT_MANY_UPDATE = 39_311
TODAY_GET_MANY = 51_069
REPAIR_SIZES = (10_000, 100_000, 1_000_000)

VALUE = bytes(range(VALUE_SIZE))

SET = "redis-py SET (1 server)"
PUT_FRESH = "ringkit put, fresh key (3 servers)"
PUT_UPDATE = "ringkit put, update of a key it wrote (3 servers)"
GET = "redis-py GET (1 server)"
RK_GET = "ringkit get (3 servers)"
MSET = "redis-py MSET (1 server)"
PUT_MANY_FRESH = "ringkit put_many, fresh keys (3 servers)"
PUT_MANY_UPDATE = "ringkit put_many, updates of keys it wrote (3 servers)"
PIPE_GET = "redis-py pipelined GET (1 server)"
PIPE_SET = "redis-py pipelined SET (1 server)"
RAW_PUT = "raw redis-py pipelines, the same scripts (3 servers at once)"
RAW_GET = "raw redis-py pipelines, the same reads (3 servers at once)"
MEM_BATCH = "ringkit put_many + get_many, 10,000 keys (3 MemoryNode)"
REPAIR_SYNC = "ringkit repair(), in sync"
REPAIR_DIVERGED = "ringkit repair(), 1% of the keys missing on one server"
REPAIR_WIPED = "ringkit repair(), one server restarted empty (refilled)"
MGET = "redis-py MGET (1 server)"
GET_MANY = "ringkit get_many (3 servers)"
MEM_PUT_GET = "ringkit put+get, keys it wrote before (3 MemoryNode)"
MEM_PUT_GET_FRESH = "ringkit put+get, fresh keys (3 MemoryNode)"
MEM_PUT = "ringkit put only, keys it wrote before (3 MemoryNode)"
MEM_GET = "ringkit get only (3 MemoryNode)"

G_PUT = "replication: put latency, 3 redis-servers (replicas=3, W=2, R=2) vs SET on one"
G_GET = "replication: get latency, 3 redis-servers (replicas=3, W=2, R=2) vs GET on one"
G_MEMORY = "replication: in memory, 3 MemoryNode (replicas=3, W=2, R=2), 10,000 operations per call"

PEER_PACKAGES = ("ringkit", "redis", "hiredis")
LATENCY = {"rounds": ROUNDS, "iterations": BATCH, "warmup_rounds": 1}
BULK = {"rounds": BULK_ROUNDS, "warmup_rounds": 1}


def run_redis_row(measure: Any, benchmark: Any, op: Callable[..., Any], *, label: str,
                  n_keys: int, per: str, pedantic: dict[str, Any],
                  sweep: dict[str, Any] | None = None, **row: Any) -> Any:
    """Time one Redis row with pedantic rounds; record the redis-py client beside its versions
    (and, for a row of a sweep, its series and size)."""
    benchmark.extra_info.update(value_bytes=VALUE_SIZE, redis_client=_redis_client_info(),
                                **(sweep or {}))
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


def check_replicated(store: Any, ports: Sequence[int], keys: Sequence[str],
                     values: Sequence[bytes]) -> None:
    """Every key reads back its value through the store and sits on all three servers."""
    got = store.get_many(list(keys))
    assert got == list(values), "get_many did not read back what was written"
    for key, value in zip(keys[:50], values[:50], strict=True):
        assert store.get(key) == value, f"get({key!r}) did not read back what was written"
        for name, node in store.nodes.items():
            held = node.read([key])[1][0]
            assert held is not None and held.value == value, f"{key!r} is missing on {name}"


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
                  targets=[("speedup", ">=", 0.4, SET)])
    assert latency.fresh_store.get(f"fresh:{next(fresh_ids) - 1}") == VALUE


@pytest.mark.benchmark(group=G_PUT)
def test_put_update(measure: Any, benchmark: Any, latency: Latency) -> None:
    cycle, put = itertools.cycle(range(UPDATE_POOL)), latency.update_store.put
    benchmark.extra_info["server_commands_per_put"] = latency.commands_per_put["update"]
    run_redis_row(measure, benchmark, lambda: put(f"lat:{next(cycle)}", VALUE),
                  label=PUT_UPDATE, n_keys=1, per="call", pedantic=LATENCY,
                  targets=[("speedup", ">=", 0.4, SET)])
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
                        n_keys=1, per="call", pedantic=LATENCY,
                        targets=[("speedup", ">=", 0.5, GET)])
    assert got == VALUE


# --------------------------------------------------------------------------------------------------
# Batches against batch size (issue 13): put_many and get_many beside the raw pipeline of the same
# commands to the same servers, and MSET / MGET / pipelined SET / GET on one server


def _servers_cpu(ports: Sequence[int]) -> tuple[list[Any], Callable[[int], dict[str, float]]]:
    """Reset INFO commandstats on the servers; the returned function reads them back as
    microseconds per item of a batch of n, by command and in total (summed over servers)."""
    clients = [_client(p) for p in ports]
    for c in clients:
        c.config_resetstat()

    def read(n: int) -> dict[str, float]:
        per: dict[str, float] = {}
        for c in clients:
            for name, stats in c.info("commandstats").items():
                command = name.removeprefix("cmdstat_")
                if command.split("|")[0] in ("config", "info", "script"):
                    continue
                per[command] = per.get(command, 0.0) + stats["usec"] / n
            c.close()
        # A script's figure already includes the commands it ran: the total is the top level.
        inner = {"hget", "hset", "hsetnx", "get"} if "evalsha" in per else set()
        per["total"] = sum(v for k, v in per.items() if k not in inner)
        return {k: round(v, 3) for k, v in per.items()}

    return clients, read


def _server_cpu(ports: Sequence[int], call: Callable[[], Any], n: int) -> dict[str, float]:
    _, read = _servers_cpu(ports)
    call()
    return read(n)


@dataclass
class Batches:
    """The clients of the batch rows: a plain server, and stores on the three node servers."""
    plain: Any
    node_ports: list[int]
    store: Any  # updates and reads of its own keys
    fresh_store: Any  # fresh keys each call
    raw: list[Any]  # redis-py clients of the three node servers (raw pipelines)
    pool: ThreadPoolExecutor


@pytest.fixture(scope="module")
def batches(redis_ports: list[int]) -> Iterator[Batches]:
    nodes, plain_port = redis_ports[:3], redis_ports[3]
    plain = _client(plain_port)
    store, fresh_store = _redis_store(nodes), _redis_store(nodes)
    keys = [f"user:{i}" for i in range(max(BATCH_SIZES))]
    for start in range(0, len(keys), 10_000):
        part = keys[start:start + 10_000]
        store.put_many({k: VALUE for k in part})
        plain.mset({k: VALUE for k in part})
    check_replicated(store, nodes, keys[:N_BULK], [VALUE] * N_BULK)
    raw = [_client(p) for p in nodes]
    with ThreadPoolExecutor(3) as pool:
        yield Batches(plain, nodes, store, fresh_store, raw, pool)
    for c in raw:
        c.close()
    plain.close()


def _raw_fresh_commands(b: Batches, keys: list[str]) -> list[list[tuple[Any, ...]]]:
    """Per node server, the commands ringkit's one-round-trip put_many sends for fresh keys (the
    state read, then the compare-and-write script with every blob expected absent), built with
    ringkit's own kernels, as argument tuples for redis-py."""
    from ringkit._records import encode_blobs, pack_apply  # noqa: F401 - the same kernels
    from ringkit.replication import codec
    from ringkit.replication import redis as rn

    fields = [k.encode() for k in keys]
    buckets = codec.buckets_of(fields).tolist()
    blobs = encode_blobs(fields, [VALUE] * len(keys), [1] * len(keys), b"f" * 16, 0, 0)
    per_node = []
    for node in b.store.nodes.values():
        commands: list[tuple[Any, ...]] = [node._state_command()]
        bucket_keys = [node.bucket_key(x) for x in buckets]
        for start in range(0, len(keys), rn.CHUNK):
            stop = start + rn.CHUNK
            args: list[Any] = []
            for f, blob in zip(fields[start:stop], blobs[start:stop]):
                args += [f, blob, b""]
            commands.append(("EVALSHA", rn._SHA["apply_if"], len(args) // 3 + 1,
                             node._floor_key, *bucket_keys[start:stop], *args))
        per_node.append(commands)
    return per_node


def _raw_read_commands(b: Batches, keys: list[str]) -> list[list[tuple[Any, ...]]]:
    """Per node server: the state read and one HGET per key, as ringkit's get_many sends."""
    from ringkit.replication import codec

    fields = [k.encode() for k in keys]
    buckets = codec.buckets_of(fields).tolist()
    out = []
    for node in b.store.nodes.values():
        out.append([node._state_command(),
                    *(("HGET", node.bucket_key(x), f) for x, f in zip(buckets, fields))])
    return out


def _raw_run(b: Batches, per_node: list[list[tuple[Any, ...]]]) -> list[list[Any]]:
    """One redis-py pipeline per server, the three executed at once (three threads)."""

    def run(client: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return pipe.execute()  # type: ignore[no-any-return]

    futures = [b.pool.submit(run, c, cmds) for c, cmds in zip(b.raw, per_node)]
    return [f.result() for f in futures]


def _sweep(n: int, series: str, kind: str, figure: str = "replication-batches"
           ) -> dict[str, Any]:
    return {"series": series, "batch_size": n, "figure": figure, "batch_kind": kind}


def _bulk_pedantic(n: int, setup: Callable[[], Any] | None = None) -> dict[str, Any]:
    rounds = SWEEP_ROUNDS[n]
    out: dict[str, Any] = {"rounds": rounds, "warmup_rounds": 1}
    if setup is not None:
        out["setup"] = setup
    return out


@pytest.mark.parametrize("n", BATCH_SIZES)
def test_put_many_fresh(measure: Any, benchmark: Any, batches: Batches, n: int) -> None:
    benchmark.group = f"replication batches: put, {n:,} keys per call"
    calls = itertools.count()
    last: dict[str, bytes] = {}

    def fresh() -> tuple[tuple[dict[str, bytes]], dict[str, Any]]:
        c = next(calls)
        last.clear()
        last.update((f"fresh:{n}:{c}:{i}", VALUE) for i in range(n))
        return (last,), {}

    targets = [("keys_per_s", ">=", 2 * TODAY_PUT_MANY_FRESH),
               ("speedup", ">=", 0.7, RAW_PUT)] if n == N_BULK else []
    run_redis_row(measure, benchmark, batches.fresh_store.put_many, label=PUT_MANY_FRESH,
                  n_keys=n, per="key", targets=targets, pedantic=_bulk_pedantic(n, fresh),
                  sweep=_sweep(n, "ringkit put_many, fresh keys", "put"))
    sample = list(last)[::97]
    assert batches.fresh_store.get_many(sample) == [VALUE] * len(sample)
    if n == N_BULK:
        items = {f"cpu:{i}": VALUE for i in range(n)}
        benchmark.extra_info["server_us_per_item"] = _server_cpu(
            batches.node_ports, lambda: batches.fresh_store.put_many(items), n)


@pytest.mark.parametrize("n", BATCH_SIZES)
def test_put_many_raw(measure: Any, benchmark: Any, batches: Batches, n: int) -> None:
    benchmark.group = f"replication batches: put, {n:,} keys per call"
    calls = itertools.count()

    def commands() -> tuple[tuple[Any], dict[str, Any]]:
        c = next(calls)
        return (_raw_fresh_commands(batches, [f"raw:{n}:{c}:{i}" for i in range(n)]),), {}

    def run(per_node: list[list[tuple[Any, ...]]]) -> list[list[Any]]:
        return _raw_run(batches, per_node)

    replies = run_redis_row(measure, benchmark, run, label=RAW_PUT, n_keys=n, per="key",
                            reference=True, pedantic=_bulk_pedantic(n, commands),
                            sweep=_sweep(n, "raw pipeline, same scripts (3 servers)", "put"))
    assert all(flag == 1 for node in replies for chunk in node[1:] for flag in chunk)


@pytest.mark.parametrize("n", BATCH_SIZES)
def test_put_many_update(measure: Any, benchmark: Any, batches: Batches, n: int) -> None:
    benchmark.group = f"replication batches: put, {n:,} keys per call"
    items = {f"user:{i}": VALUE for i in range(n)}
    targets = [("keys_per_s", ">=", 2 * TODAY_PUT_MANY_UPDATE)] if n == N_BULK else []
    run_redis_row(measure, benchmark, lambda: batches.store.put_many(items),
                  label=PUT_MANY_UPDATE, n_keys=n, per="key", targets=targets,
                  pedantic=_bulk_pedantic(n), sweep=_sweep(n, "ringkit put_many, updates", "put"))
    assert batches.store.get_many(list(items)[::97]) == [VALUE] * len(list(items)[::97])
    if n == N_BULK:
        benchmark.extra_info["server_us_per_item"] = _server_cpu(
            batches.node_ports, lambda: batches.store.put_many(items), n)


@pytest.mark.parametrize("n", BATCH_SIZES)
def test_put_many_mset(measure: Any, benchmark: Any, batches: Batches, n: int) -> None:
    benchmark.group = f"replication batches: put, {n:,} keys per call"
    items = {f"user:{i}": VALUE for i in range(n)}
    run_redis_row(measure, benchmark, lambda: batches.plain.mset(items), label=MSET,
                  n_keys=n, per="key", reference=True, pedantic=_bulk_pedantic(n),
                  sweep=_sweep(n, "redis-py MSET (1 server)", "put"))
    if n == N_BULK:
        benchmark.extra_info["server_us_per_item"] = _server_cpu(
            [batches.plain.connection_pool.connection_kwargs["port"]],
            lambda: batches.plain.mset(items), n)


@pytest.mark.parametrize("n", BATCH_SIZES)
def test_put_many_pipelined_set(measure: Any, benchmark: Any, batches: Batches, n: int) -> None:
    benchmark.group = f"replication batches: put, {n:,} keys per call"
    keys = [f"user:{i}" for i in range(n)]

    def pipelined_set() -> list[Any]:
        pipe = batches.plain.pipeline(transaction=False)
        for k in keys:
            pipe.set(k, VALUE)
        return pipe.execute()  # type: ignore[no-any-return]

    got = run_redis_row(measure, benchmark, pipelined_set, label=PIPE_SET, n_keys=n,
                        per="key", reference=True, pedantic=_bulk_pedantic(n),
                        sweep=_sweep(n, "redis-py pipelined SET (1 server)", "put"))
    assert all(got)


@pytest.mark.parametrize("n", BATCH_SIZES)
def test_get_many_ringkit(measure: Any, benchmark: Any, batches: Batches, n: int) -> None:
    benchmark.group = f"replication batches: get, {n:,} keys per call"
    keys = [f"user:{i}" for i in range(n)]
    targets = [("keys_per_s", ">=", 2 * TODAY_GET_MANY),
               ("speedup", ">=", 0.7, RAW_GET)] if n == N_BULK else []
    got = run_redis_row(measure, benchmark, lambda: batches.store.get_many(keys),
                        label=GET_MANY, n_keys=n, per="key", targets=targets,
                        pedantic=_bulk_pedantic(n),
                        sweep=_sweep(n, "ringkit get_many", "get"))
    assert got == [VALUE] * n
    if n == N_BULK:
        benchmark.extra_info["server_us_per_item"] = _server_cpu(
            batches.node_ports, lambda: batches.store.get_many(keys), n)


@pytest.mark.parametrize("n", BATCH_SIZES)
def test_get_many_raw(measure: Any, benchmark: Any, batches: Batches, n: int) -> None:
    benchmark.group = f"replication batches: get, {n:,} keys per call"
    per_node = _raw_read_commands(batches, [f"user:{i}" for i in range(n)])
    replies = run_redis_row(measure, benchmark, lambda: _raw_run(batches, per_node),
                            label=RAW_GET, n_keys=n, per="key", reference=True,
                            pedantic=_bulk_pedantic(n),
                            sweep=_sweep(n, "raw pipeline, same reads (3 servers)", "get"))
    assert all(len(node) == n + 1 and node[1] is not None for node in replies)


@pytest.mark.parametrize("n", BATCH_SIZES)
def test_get_many_mget(measure: Any, benchmark: Any, batches: Batches, n: int) -> None:
    benchmark.group = f"replication batches: get, {n:,} keys per call"
    keys = [f"user:{i}" for i in range(n)]
    got = run_redis_row(measure, benchmark, lambda: batches.plain.mget(keys), label=MGET,
                        n_keys=n, per="key", reference=True, pedantic=_bulk_pedantic(n),
                        sweep=_sweep(n, "redis-py MGET (1 server)", "get"))
    assert got == [VALUE] * n
    if n == N_BULK:
        benchmark.extra_info["server_us_per_item"] = _server_cpu(
            [batches.plain.connection_pool.connection_kwargs["port"]],
            lambda: batches.plain.mget(keys), n)


@pytest.mark.parametrize("n", BATCH_SIZES)
def test_get_many_pipelined_get(measure: Any, benchmark: Any, batches: Batches, n: int) -> None:
    benchmark.group = f"replication batches: get, {n:,} keys per call"
    keys = [f"user:{i}" for i in range(n)]

    def pipelined_get() -> list[Any]:
        pipe = batches.plain.pipeline(transaction=False)
        for k in keys:
            pipe.get(k)
        return pipe.execute()  # type: ignore[no-any-return]

    got = run_redis_row(measure, benchmark, pipelined_get, label=PIPE_GET, n_keys=n,
                        per="key", reference=True, pedantic=_bulk_pedantic(n),
                        sweep=_sweep(n, "redis-py pipelined GET (1 server)", "get"))
    assert got == [VALUE] * n


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


@MEMORY_BENCH
def test_memory_batches(measure: Any) -> None:
    """put_many then get_many of 10,000 keys the store wrote before: 20,000 operations."""
    store = _memory_store()
    keys = [f"user:{i}" for i in range(N_BULK)]
    items = {k: VALUE for k in keys}
    store.put_many(items)

    def both() -> list[bytes | None]:
        store.put_many(items)
        return store.get_many(keys)  # type: ignore[no-any-return]

    got = measure(both, label=MEM_BATCH, n_keys=2 * N_BULK, per="op",
                  targets=[("keys_per_s", ">=", 500_000)])
    assert got == [VALUE] * N_BULK


# --------------------------------------------------------------------------------------------------
# repair() against store size: in sync, 1% missing on one server, one server wiped


@dataclass
class RepairBench:
    servers: list[Any]
    nodes: dict[str, Any]
    store: Any


@pytest.fixture(scope="module")
def repair_bench(redis_servers: Callable[[int], list[Any]]) -> Iterator[RepairBench]:
    from ringkit.replication import RedisNode, ReplicatedStore

    servers = redis_servers(3)
    nodes = {f"node-{i}": RedisNode(_client(s.port), name=f"node-{i}",
                                    socket_timeout=SOCKET_TIMEOUT)
             for i, s in enumerate(servers)}
    store = ReplicatedStore(nodes, timeout=SOCKET_TIMEOUT)
    store.initialize()
    yield RepairBench(servers, nodes, store)
    store.close()


def _fill(rb: RepairBench, n: int) -> list[str]:
    """The store holds exactly n keys of 32-byte values on all three servers."""
    for server in rb.servers:
        client = _client(server.port)
        for name in client.scan_iter(match="ringkit:rep:b:*", count=1000):
            client.delete(name)
        client.close()
    keys = [f"user:{i}" for i in range(n)]
    for start in range(0, n, 10_000):
        rb.store.put_many({k: b"v" * 32 for k in keys[start:start + 10_000]})
    assert rb.store.repair().keys_checked == n       # the third copies, landed
    return keys


def _drop(rb: RepairBench, keys: Sequence[str]) -> None:
    """Delete `keys` from the second server behind the store's back (lost writes)."""
    from ringkit.replication import codec

    client = _client(rb.servers[1].port)
    pipe = client.pipeline(transaction=False)
    for key, bucket in zip(keys, codec.buckets_of(list(keys)).tolist()):
        pipe.hdel(f"ringkit:rep:b:{bucket:04x}", key)
    pipe.execute()
    client.close()


def _wipe(rb: RepairBench) -> None:
    rb.servers[2].kill()
    rb.servers[2].restart()
    rb.nodes["node-2"].reconnect()
    rb.store.probe()


@pytest.mark.parametrize("n,scenario", [(n, kind) for n in REPAIR_SIZES
                                         for kind in ("in sync", "diverged", "wiped")])
def test_repair(measure: Any, benchmark: Any, repair_bench: RepairBench, n: int,
                scenario: str) -> None:
    """One repair() pass over a store of n keys. The scenarios of one size run in a row, on the
    same data: in sync (filled first), 1% of the keys dropped from one server before each
    round, one server restarted empty before each round."""
    benchmark.group = f"replication repair: {n:,} keys"
    store = repair_bench.store
    keys = [f"user:{i}" for i in range(n)]
    rng = random.Random(n)
    pedantic: dict[str, Any] = {"rounds": 3, "warmup_rounds": 0}
    targets: list[tuple[Any, ...]] = []
    if scenario == "in sync":
        _fill(repair_bench, n)
        label, series = REPAIR_SYNC, "repair, in sync"
        if n == 1_000_000:
            targets = [("seconds", "<=", 5.0)]
    elif scenario == "diverged":
        label, series = REPAIR_DIVERGED, "repair, 1% missing on one server"

        def diverge() -> tuple[tuple[()], dict[str, Any]]:
            _drop(repair_bench, rng.sample(keys, n // 100))
            return (), {}

        pedantic = {"rounds": 2, "warmup_rounds": 0, "setup": diverge}
    else:
        label, series = REPAIR_WIPED, "repair, one server wiped (refill)"

        def wipe() -> tuple[tuple[()], dict[str, Any]]:
            _wipe(repair_bench)
            return (), {}

        pedantic = {"rounds": 1 if n == 1_000_000 else 2, "warmup_rounds": 0, "setup": wipe}
        if n == 1_000_000:
            targets = [("keys_per_s", ">=", 60_000)]
    report = run_redis_row(measure, benchmark, store.repair, label=label, n_keys=n, per="key",
                           targets=targets, pedantic=pedantic,
                           sweep=_sweep(n, series, "repair", "replication-repair"))
    assert report.keys_checked == n
    if scenario == "in sync":
        assert report.keys_repaired == 0
    elif scenario == "diverged":
        assert report.keys_repaired == n // 100
    else:
        assert report.nodes_refilled == ["node-2"] and report.keys_repaired == n
    benchmark.extra_info["report"] = _report(report)


def _report(report: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(report).items() if not isinstance(v, list) or v}
