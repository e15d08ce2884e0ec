"""RedisNode against real redis-server processes: key layout (prefix, hash tag), script cache
loss, unreachable and silent servers, restart detection, hinted handoff through Redis hashes,
tombstones, batches larger than one script call, and RedisNode's own bad input.

Servers come from the ``redis_servers`` fixture (tests/conftest.py); the fault workload with
writer processes and its checker is in test_replication_faults.py.
"""

from __future__ import annotations

import socket
import threading

import pytest

from ringkit import QuorumError
from ringkit.replication import MemoryNode, NodeState, Record, RedisNode, ReplicatedStore, Version
from ringkit.replication.codec import buckets_of

TIMEOUT = 0.3      # socket timeout of every RedisNode here


def wr(writer: str) -> str:
    """A writer of a version as stores write them: 28 digits (ringkit.replication.codec)."""
    return writer.rjust(28, "0")


def new_store(nodes, **options) -> ReplicatedStore:  # type: ignore[no-untyped-def]
    """A store on new Redis nodes: initialize() marks them ready (see ReplicatedStore)."""
    store = ReplicatedStore(nodes, **options)
    store.initialize()
    return store


def redis_nodes(servers, **options) -> dict[str, RedisNode]:  # type: ignore[no-untyped-def]
    return {f"r{i}": RedisNode(server.url, socket_timeout=TIMEOUT, **options)
            for i, server in enumerate(servers)}


def server_keys(server) -> set[str]:  # type: ignore[no-untyped-def]
    return {key.decode() for key in server.client().scan_iter(match="*", count=1000)}


def hash_tag(key: str) -> str:
    """The part of a key that Redis Cluster hashes: between the first '{' and the next '}'."""
    start = key.index("{")
    return key[start + 1:key.index("}", start + 1)]


def held(node: RedisNode, key: str) -> Record | None:
    return node.read([key])[1][0]


def run_bounded(call, limit: float = 60.0):  # type: ignore[no-untyped-def]
    """Run `call` in a thread and fail (rather than hang the suite) if it never returns; the
    bound is a hang guard, far above any socket timeout, not a speed requirement."""
    result: dict[str, object] = {}

    def target() -> None:
        try:
            result["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), f"call did not return within {limit} s"
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result.get("value")


# -- the node contract, on both kinds of node ------------------------------------------------------


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def node(request):  # type: ignore[no-untyped-def]
    if request.param == "memory":
        return MemoryNode("n")
    (server,) = request.getfixturevalue("redis_servers")(1)
    return RedisNode(server.url, socket_timeout=TIMEOUT)


def test_node_contract(node) -> None:  # type: ignore[no-untyped-def]
    """MemoryNode and RedisNode answer alike: newer-only writes, tombstones, exact write_if
    and remove, scan, the epoch marker and hints."""
    v = [Record("k", b"%d" % i, Version(i, wr("aa"))) for i in range(5)]
    empty = NodeState(None, 0)
    assert node.get_marker() is None
    assert node.read(["k", "missing"]) == (empty, [None, None])
    assert node.write([v[2]]) == (empty, [True])
    assert node.write([v[2], v[1]])[1] == [False, False]      # retry and older: no effect
    assert node.read(["k"])[1] == [v[2]]
    assert node.write([Record("k", b"tie", Version(2, wr("ab")))])[1] == [True]
    # A tombstone keeps its version and deletion time; an empty value is not a tombstone.
    tomb = Record("k", None, Version(3, wr("aa")), deleted_ms=1234)
    assert node.write([tomb, Record("e", b"", Version(1, wr("aa")))])[1] == [True, True]
    assert node.read(["k", "e"])[1] == [tomb, Record("e", b"", Version(1, wr("aa")))]
    # write_if: only over exactly the expected version (None: absent).
    assert node.write_if([(v[4], Version(2, wr("ab")))])[1] == [False]
    assert node.write_if([(v[4], None)])[1] == [False]
    assert node.write_if([(v[4], tomb.version), (Record("n", b"x", Version(1, wr("aa"))), None)]
                         )[1] == [True, True]
    # remove: only where the version still matches; a purge raises the node's floor, and a
    # write expecting the key absent must then be numbered above it.
    node.remove([v[3]])
    assert node.read(["k"])[1] == [v[4]]
    assert node.read([])[0].floor == 0
    node.remove([v[4]])
    assert node.read(["k"]) == (NodeState(None, 4), [None])
    assert node.write_if([(Record("k", b"low", Version(4, wr("zz"))), None)])[1] == [False]
    assert node.write_if([(Record("k", b"up", Version(5, wr("aa"))), None)])[1] == [True]
    assert node.write([Record("old", b"o", Version(2, wr("aa")))])[1] == [True]  # copies: no floor
    node.raise_floor(3)
    assert node.read([])[0].floor == 4                   # never lowered
    node.raise_floor(9)
    assert node.write([])[0] == NodeState(None, 9)
    node.remove([Record("k", b"up", Version(5, wr("aa"))),
                 Record("old", b"o", Version(2, wr("aa")))])
    assert node.read([])[0].floor == 9
    # Binary values and any str key round-trip.
    odd = Record("ключ {x} } {", b"\x00\xff\r\n", Version(7, wr("0f")))
    node.write([odd])
    assert node.read([odd.key])[1] == [odd]
    keys = {key for chunk in node.scan(2) for key in chunk}
    assert keys == {"e", "n", odd.key}
    assert all(len(chunk) <= 2 for chunk in node.scan(2))
    # The epoch marker.
    assert node.set_marker("ready:1", only_if_missing=True)
    assert not node.set_marker("ready:2", only_if_missing=True)
    assert node.get_marker() == "ready:1"
    assert node.read(["e"])[0] == NodeState("ready:1", 9)   # every call answers with it
    assert node.set_marker("recovering:3", only_if_missing=False)
    assert node.write([])[0].marker == "recovering:3"
    # The members registry (initialize() refuses nodes the others remember).
    assert node.members() == set()
    node.add_members(["a", "b"])
    node.add_members(["b", "c"])
    assert node.members() == {"a", "b", "c"}
    # Hints, held per target node.
    h1, h2 = Record("h", b"1", Version(1, wr("aa"))), Record("h", None, Version(2, wr("aa")), 99)
    node.add_hints("other", [h1])
    node.add_hints("other", [h2])
    node.add_hints("other", [h1])                         # older, arriving late: ignored
    assert node.hints("other") == [h2] and node.hints("third") == []
    node.drop_hints("other", [h1])                        # not the version held: kept
    assert node.hints("other") == [h2]
    node.drop_hints("other", [h2])
    assert node.hints("other") == []


# -- key layout -----------------------------------------------------------------------------------


@pytest.mark.redis
def test_items_live_in_bucket_hashes_under_the_prefix(redis_servers) -> None:  # type: ignore[no-untyped-def]
    servers = redis_servers(3)
    store = new_store(redis_nodes(servers, prefix="app:rep:"))
    keys = ["user:42", "orders/7", "ключ", "with space", ""]
    for key in keys:
        store.put(key, b"v")
    store.delete("orders/7")
    store.repair()          # a write returns at its quorum: the third copy may still be on its way
    for server in servers:
        found = server_keys(server)
        assert all(name.startswith("app:rep:") for name in found)
        assert {"app:rep:__epoch__", "app:rep:__members__", "app:rep:__layout__"} <= found
        assert servers[0].client().get("app:rep:__layout__") == b"2"
        items = {name for name in found if not name.startswith("app:rep:__")}
        # One hash per bucket (the top 16 bits of the key's xxh64), its fields the keys.
        assert items == {f"app:rep:b:{int(b):04x}" for b in buckets_of(keys)}
        held = {f.decode() for name in items for f in server.client().hkeys(name)}
        assert held == set(keys)
    # The default prefix, and two prefixes on one server stay apart (scan, repair).
    other = new_store(redis_nodes(servers))
    other.put("user:42", b"w")
    assert f"ringkit:rep:b:{int(buckets_of(['user:42'])[0]):04x}" in server_keys(servers[0])
    assert other.repair().keys_checked == 1
    assert store.repair().keys_checked == len(keys)
    assert store.get("user:42") == b"v" and other.get("user:42") == b"w"


@pytest.mark.redis
@pytest.mark.parametrize("prefix", ["app[1]:", "a*b?:", "back\\slash:"])
def test_prefixes_with_glob_characters_are_scanned_literally(redis_servers, prefix) -> None:  # type: ignore[no-untyped-def]
    servers = redis_servers(3)
    nodes = redis_nodes(servers, prefix=prefix)
    store = new_store(nodes)
    store.put("k", b"v")
    servers[0].client().hset("app1:b:0001", "decoy", b"x")   # what an unescaped app[1]: would match
    servers[0].client().hset("aXbY:b:0001", "decoy", b"x")
    assert [key for chunk in nodes["r0"].scan(10) for key in chunk] == ["k"]
    assert store.repair().keys_checked == 1


# -- scripts --------------------------------------------------------------------------------------


@pytest.mark.redis
def test_a_flushed_script_cache_is_reloaded(redis_servers) -> None:  # type: ignore[no-untyped-def]
    servers = redis_servers(3)
    store = new_store(redis_nodes(servers), tombstone_grace=0.0)
    first = store.put("k", b"1")

    def flush_scripts() -> None:
        for server in servers:
            server.client().script_flush()
            assert server.client().script_exists(*[_sha(s) for s in _scripts()]) == [False] * 3

    flush_scripts()
    second = store.put("k", b"2")                       # one-round-trip write (EVALSHA)
    assert second > first and store.get("k") == b"2"
    flush_scripts()
    versions = store.put_many({f"m{i}": b"%d" % i for i in range(300)})
    assert len(versions) == 300
    flush_scripts()
    third = store.put("k", b"3", if_version=second)      # compare-and-set (write_if)
    assert store.get_versioned("k") == (b"3", third)
    store.delete("k")
    flush_scripts()
    report = store.repair()                            # purge: the remove script
    assert report.tombstones_purged == 3
    assert store.get_versioned("k") == (None, None)
    for server in servers:
        assert "ringkit:rep:{k}" not in server_keys(server)


def _scripts() -> list[str]:
    from ringkit.replication import redis as redis_node

    return [redis_node.APPLY, redis_node.APPLY_IF, redis_node.REMOVE]


def _sha(script: str) -> str:
    import hashlib

    return hashlib.sha1(script.encode()).hexdigest()


# -- unreachable and silent servers ---------------------------------------------------------------


@pytest.mark.redis
def test_a_node_on_a_port_nothing_listens_on_is_skipped_and_named(redis_servers,  # type: ignore[no-untyped-def]
                                                                 unused_port) -> None:
    servers = redis_servers(2)
    dead = RedisNode(f"redis://127.0.0.1:{unused_port}/0", socket_timeout=TIMEOUT)
    assert dead.name == f"127.0.0.1:{unused_port}"
    nodes = {**redis_nodes(servers), dead.name: dead}
    store = run_bounded(lambda: new_store(nodes, replicas=3))
    assert store.status()[dead.name] == "down"
    version = run_bounded(lambda: store.put("k", b"v"))          # 2 of 3 is a write quorum
    assert run_bounded(lambda: store.get_versioned("k")) == (b"v", version)
    # With one of the live servers gone as well, the error names both.
    other_dead = RedisNode(f"redis://127.0.0.1:{unused_port}/1", name="second-dead",
                           socket_timeout=TIMEOUT)
    store = new_store({"r0": nodes["r0"], dead.name: dead, "second-dead": other_dead},
                            down_backoff=0.0)
    with pytest.raises(QuorumError) as info:
        run_bounded(lambda: store.put("k", b"w"))
    assert set(info.value.failed) == {dead.name, "second-dead"}
    assert dead.name in str(info.value) and "second-dead" in str(info.value)
    with pytest.raises(QuorumError):
        run_bounded(lambda: store.get("k"))
    report = run_bounded(store.repair)
    assert sorted(report.nodes_unreachable) == sorted([dead.name, "second-dead"])


@pytest.mark.redis
def test_a_server_that_accepts_but_never_answers_costs_one_socket_timeout(redis_servers) -> None:  # type: ignore[no-untyped-def]
    """A listening socket nobody serves (the kernel completes the handshake): every call to it
    ends at the socket timeout, and the store carries on with the others."""
    servers = redis_servers(2)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        port = silent.getsockname()[1]
        mute = RedisNode(f"redis://127.0.0.1:{port}/0", name="mute", socket_timeout=TIMEOUT)
        nodes = {**redis_nodes(servers), "mute": mute}
        events: list[str] = []
        store = run_bounded(lambda: new_store(
            nodes, down_backoff=0.0, on_event=lambda e: events.append(f"{e.kind}:{e.node}")))
        assert "node_down:mute" in events
        for value in (b"0", b"1", b"2"):
            version = run_bounded(lambda v=value: store.put("k", v))  # type: ignore[misc]
            assert run_bounded(lambda: store.get_versioned("k")) == (value, version)
        assert run_bounded(store.probe)["mute"] == "down"


# -- restarts and pauses --------------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.signals
def test_a_server_restarted_empty_is_recovering_until_repaired(redis_servers) -> None:  # type: ignore[no-untyped-def]
    servers = redis_servers(3)
    nodes = redis_nodes(servers)
    store = new_store(nodes, down_backoff=0.05)
    items = {f"k{i}": b"%d" % i for i in range(400)}
    store.put_many(items)
    servers[1].kill()                                  # SIGKILL; waits for the pid to be gone
    servers[1].restart()                               # empty, same port
    assert store.probe()["r1"] == "recovering"
    assert nodes["r1"].get_marker().startswith("recovering:")  # type: ignore[union-attr]
    # Another store instance sees the same from the server's marker.
    assert ReplicatedStore(redis_nodes(servers)).status()["r1"] == "recovering"
    servers[2].kill()
    with pytest.raises(QuorumError) as info:           # r1 answers but does not count
        store.get("k1")
    assert "recovering" in str(info.value.failed["r1"])
    servers[2].restart()
    store.probe()
    report = store.repair()
    assert sorted(report.nodes_refilled) == ["r1", "r2"]
    assert store.status() == {"r0": "up", "r1": "up", "r2": "up"}
    for node in nodes.values():
        assert len([k for chunk in node.scan(500) for k in chunk]) == 400
    assert store.get_many(list(items)) == list(items.values())


@pytest.mark.redis
@pytest.mark.signals
def test_a_paused_server_is_skipped_and_catches_up(redis_servers) -> None:  # type: ignore[no-untyped-def]
    servers = redis_servers(3)
    nodes = redis_nodes(servers)
    store = new_store(nodes, down_backoff=0.05)
    store.put("k", b"before")
    servers[0].pause()                                 # SIGSTOP
    try:
        version = run_bounded(lambda: store.put("k", b"during"))
        assert run_bounded(lambda: store.get("k")) == b"during"
        servers[1].pause()
        with pytest.raises(QuorumError) as info:
            run_bounded(lambda: store.put("k", b"refused"))
        assert {"r0", "r1"} <= set(info.value.failed)
        servers[1].resume()
    finally:
        servers[0].resume()                            # SIGCONT
    store.probe()
    assert store.status() == {"r0": "up", "r1": "up", "r2": "up"}
    store.repair()
    for node in nodes.values():
        assert held(node, "k").version >= version  # type: ignore[union-attr]
    assert store.get_versioned("k")[0] in (b"during", b"refused")


@pytest.mark.redis
@pytest.mark.signals
def test_hints_survive_in_redis_and_are_handed_back(redis_servers) -> None:  # type: ignore[no-untyped-def]
    servers = redis_servers(4)
    nodes = redis_nodes(servers)
    store = new_store(nodes, sloppy=True, consistency="eventual", down_backoff=0.05,
                      wall_clock=lambda: 0.0)
    replica = store.preference_list("a")[1]
    server = servers[int(replica[1:])]
    server.kill()
    store.probe()
    put = store.put("a", b"\x00binary\x00value")
    gone = store.delete("b") if replica in store.preference_list("b") else None
    standin = next(name for name in nodes if name not in store.preference_list("a"))
    hinted = {r.key: r for r in nodes[standin].hints(replica)}
    assert hinted["a"] == Record("a", b"\x00binary\x00value", put)
    server.restart()
    report = store.repair()
    assert report.hints_delivered >= 1 and replica in report.nodes_refilled
    assert held(nodes[replica], "a") == Record("a", b"\x00binary\x00value", put)
    if gone is not None:
        assert held(nodes[replica], "b").version == gone  # type: ignore[union-attr]
    assert nodes[standin].hints(replica) == []


# -- tombstones, batches --------------------------------------------------------------------------


@pytest.mark.redis
def test_tombstones_on_redis_even_at_wall_clock_zero(redis_servers) -> None:  # type: ignore[no-untyped-def]
    """A tombstone's deletion time may be 0 (a fake wall clock at the epoch): it must still read
    as deleted, not as an empty value."""
    servers = redis_servers(3)
    wall = [0.0]
    nodes = redis_nodes(servers)
    store = new_store(nodes, tombstone_grace=10.0, wall_clock=lambda: wall[0])
    store.put("empty", b"")
    store.put("k", b"v")
    gone = store.delete("k")
    assert store.get_versioned("k") == (None, gone)
    assert store.get_versioned("empty") == (b"", store.get_versioned("empty")[1])
    assert store.get_many(["k", "empty"]) == [None, b""]
    record = held(nodes["r0"], "k")
    assert record is not None and record.tombstone and record.deleted_ms == 0
    assert store.repair().tombstones_purged == 0
    wall[0] = 10.0
    assert store.repair().tombstones_purged == 3
    assert store.get_versioned("k") == (None, None)
    assert store.get("empty") == b""


@pytest.mark.redis
def test_batches_larger_than_one_script_call(redis_servers) -> None:  # type: ignore[no-untyped-def]
    servers = redis_servers(3)
    store = new_store(redis_nodes(servers))
    items = {f"k{i}": b"v%d" % i for i in range(1100)}
    versions = store.put_many(items)
    assert [v.counter for v in versions] == [1] * 1100
    assert store.get_many(list(items)) == list(items.values())
    again = new_store(redis_nodes(servers))        # no known versions: read-first path
    assert [v.counter for v in again.put_many({k: b"w" for k in items})] == [2] * 1100
    assert all(store.get(k) == b"w" for k in list(items)[::97])
    report = store.repair(batch=128)
    assert report.keys_checked == 1100 and report.replicas_repaired == 0


@pytest.mark.redis
def test_eventual_mode_on_redis(redis_servers) -> None:  # type: ignore[no-untyped-def]
    servers = redis_servers(3)
    nodes = redis_nodes(servers)
    with new_store(nodes, write_quorum=1, read_quorum=1, consistency="eventual") as store:
        for i in range(200):
            store.put(f"k{i}", b"%d" % i)
            assert store.get(f"k{i}") == b"%d" % i
        assert store.flush(timeout=60.0) and store.lag() == 0
        for i in range(0, 200, 13):
            assert len({held(node, f"k{i}") for node in nodes.values()}) == 1


# -- RedisNode bad input --------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan"), float("inf"), "1", True])
def test_redis_node_rejects_bad_socket_timeouts(timeout: object) -> None:
    with pytest.raises(ValueError, match="socket_timeout"):
        RedisNode("redis://127.0.0.1:1/0", socket_timeout=timeout)  # type: ignore[arg-type]


def test_redis_node_rejects_bad_clients_and_prefixes() -> None:
    with pytest.raises(TypeError, match="client_or_url"):
        RedisNode(6379)
    with pytest.raises(TypeError, match="prefix"):
        RedisNode("redis://127.0.0.1:1/0", prefix=b"p:")  # type: ignore[arg-type]


@pytest.mark.redis
def test_redis_node_from_a_client(redis_servers) -> None:  # type: ignore[no-untyped-def]
    servers = redis_servers(3)
    nodes = {f"c{i}": RedisNode(server.client()) for i, server in enumerate(servers)}
    assert nodes["c0"].name == f"127.0.0.1:{servers[0].port}"
    store = new_store(nodes)
    version = store.put("k", b"v")
    assert store.get_versioned("k") == (b"v", version)
    assert isinstance(version, Version)
