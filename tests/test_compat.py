"""ringkit.compat, Rendezvous and JumpHash against their oracles.

The oracles: the slow Python models of tests/compat_models.py (each proven equal to the real
program by tests/test_compat_models.py), and the reference packages themselves (uhashring,
pymemcache, jump-consistent-hash). tests/test_compat_programs.py compares with the real
programs (nutcracker, memcached, pylibmc) directly.
"""

from __future__ import annotations

import pickle
import random
import threading
from collections import Counter
from typing import Any

import compat_models as models
import jump
import numpy as np
import pyarrow as pa
import pytest
import uhashring as uhashring_package
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymemcache.client.hash import HashClient
from pymemcache.client.rendezvous import RendezvousHash

import ringkit
from ringkit import EmptyRingError, JumpHash, Rendezvous, UnknownNodeError, compat, hash64

TEXT = st.characters(blacklist_categories=("Cs",))    # str that encodes to UTF-8
LIBMEMCACHED_HASHES = ["default", "md5", "crc", "fnv1_64", "fnv1a_64", "fnv1_32", "fnv1a_32",
                       "murmur", "jenkins"]


def some_keys(rnd: random.Random, n: int) -> list[Any]:
    """Text, bytes >= 0x80, non-ASCII, an empty key and ints: every kind a client sends."""
    keys: list[Any] = [f"user:{rnd.getrandbits(40)}:{i}" for i in range(n)]
    keys += [bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 12))) for _ in range(n // 8)]
    keys += ["é中\u0101", "", "a" * 300, 0, 7, -3, 2**70]
    return keys


def as_text(key: Any) -> Any:
    """What a memcached client sends for an int key: its decimal text."""
    return str(key) if isinstance(key, int) else key


def names_of(placement: Any, keys: Any) -> list[str]:
    return [placement.nodes[i] for i in placement.get_many(keys)]


# --------------------------------------------------------------------------------------------------
# twemproxy


def twemproxy_servers(rnd: random.Random, n: int, weights: str) -> list[str]:
    servers = []
    for i in range(n):
        weight = 1 if weights == "equal" else rnd.choice([1, 1, 2, 3, 10, 12])
        host = f"10.0.{i // 250}.{i % 250 + 1}"
        port = 11211 if i % 7 == 0 else 20000 + i
        name = f" cache-{i}" if i % 11 == 5 else ""
        servers.append(f"{host}:{port}:{weight}{name}")
    return servers


@pytest.mark.parametrize("hash_name", compat.HASHES)
@pytest.mark.parametrize("distribution", ["ketama", "modula"])
@pytest.mark.parametrize("n", [1, 2, 25, 50, 61])
def test_twemproxy_equals_the_model(hash_name: str, distribution: str, n: int) -> None:
    rnd = random.Random(f"{hash_name}/{distribution}/{n}")
    servers = twemproxy_servers(rnd, n, "unequal" if n % 2 else "equal")
    pool = {"servers": servers, "hash": hash_name, "distribution": distribution}
    placement = compat.twemproxy({"alpha": pool})
    model = models.TwemproxyPool(servers, hash=hash_name, distribution=distribution)
    keys = some_keys(rnd, 1500)
    expected = [model.server_name(as_text(k)) for k in keys]
    assert [placement.get(k) for k in keys] == expected
    assert names_of(placement, keys) == expected
    assert list(placement.nodes) == [s.name.decode() for s in model.servers]


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(n=st.integers(1, 1000), seed=st.integers(0, 2**32), data=st.data())
def test_twemproxy_equals_the_model_up_to_1000_servers(n: int, seed: int, data: Any) -> None:
    rnd = random.Random(seed)
    hash_name = data.draw(st.sampled_from(compat.HASHES))
    distribution = data.draw(st.sampled_from(["ketama", "modula"]))
    tag = data.draw(st.sampled_from([None, "{}", "::", "ab"]))
    servers = twemproxy_servers(rnd, n, data.draw(st.sampled_from(["equal", "unequal"])))
    pool: dict[str, Any] = {"servers": servers, "hash": hash_name, "distribution": distribution}
    if tag:
        pool["hash_tag"] = tag
    placement = compat.twemproxy(pool)
    model = models.TwemproxyPool(servers, hash=hash_name, distribution=distribution,
                                 hash_tag=tag)
    keys = some_keys(rnd, 300) + ["user:{42}:a", "{}x", "a:b:c", "::x", "ab", "xab{y}"]
    assert names_of(placement, keys) == [model.server_name(as_text(k)) for k in keys]


def test_twemproxy_reads_a_yaml_file_and_picks_the_pool(tmp_path: Any) -> None:
    path = tmp_path / "nutcracker.yml"
    path.write_text(
        "alpha:\n  listen: 127.0.0.1:22121\n  hash: md5\n  distribution: ketama\n"
        "  servers:\n   - 127.0.0.1:11211:1\n   - 127.0.0.1:11212:1 b\n"
        "beta:\n  listen: 127.0.0.1:22122\n  hash_tag: \"{}\"\n  distribution: modula\n"
        "  servers:\n   - 10.0.0.1:11211:2\n   - 10.0.0.2:11211:1\n")
    alpha = compat.twemproxy(path, pool="alpha")
    assert alpha.nodes == ("b", "127.0.0.1")    # sorted by name: shorter first
    assert isinstance(alpha, compat.TwemproxyRing) and alpha.algorithm == "md5"
    beta = compat.twemproxy(str(path), pool="beta")
    assert isinstance(beta, compat.TwemproxyModula)
    assert beta.get("x{same}y") == beta.get("{same}")
    with pytest.raises(ValueError, match="2 pools"):
        compat.twemproxy(path)
    with pytest.raises(ValueError, match="gamma"):
        compat.twemproxy(path, pool="gamma")


def test_twemproxy_defaults_are_fnv1a_64_and_ketama() -> None:
    servers = twemproxy_servers(random.Random(1), 9, "unequal")
    placement = compat.twemproxy({"servers": servers})
    model = models.TwemproxyPool(servers)
    keys = some_keys(random.Random(2), 500)
    assert names_of(placement, keys) == [model.server_name(as_text(k)) for k in keys]
    assert placement.algorithm == "fnv1a_64"


@pytest.mark.parametrize("pool, message", [
    ({"servers": ["a:1:1"], "distribution": "random"}, "random"),
    ({"servers": ["a:1:1"], "distribution": "vbucket"}, "distribution"),
    ({"servers": ["a:1:1"], "hash": "sha1"}, "hash must be one of"),
    ({"servers": ["a:1:1"], "hash_tag": "{"}, "hash_tag"),
    ({"servers": []}, "servers"),
    ({"servers": ["a:1:0"]}, "weight"),
    ({"servers": ["a:1"]}, "host:port:weight"),
    ({"servers": ["a:70000:1"]}, "port"),
    ({"servers": ["a:1:1 x", "b:2:1 x"]}, "two servers named 'x'"),
    ({"servers": ["a:11211:1", "a:11211:1"]}, "two servers named"),
])
def test_twemproxy_bad_configs_are_clear_errors(pool: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compat.twemproxy(pool)


def test_twemproxy_unix_socket_servers_are_named_with_a_colon() -> None:
    servers = ["/tmp/a.sock:1", "/tmp/bb.sock:2", "127.0.0.1:20000:1"]
    placement = compat.twemproxy({"servers": servers})
    model = models.TwemproxyPool(servers)
    assert placement.nodes == tuple(s.name.decode() for s in model.servers)
    keys = some_keys(random.Random(3), 300)
    assert names_of(placement, keys) == [model.server_name(as_text(k)) for k in keys]


# --------------------------------------------------------------------------------------------------
# libmemcached


def libmemcached_model(specs: list[str], behaviors: dict[str, Any]) -> models.LibmemcachedClient:
    """The model of whichever libmemcached version survives the configuration (1.1.4 aborts
    above 100 servers; 1.0.16 overruns its buffer in some weighted cases): the placement is the
    same in both wherever both survive."""
    for version in ("1.1.4", "1.0.16"):
        try:
            return models.LibmemcachedClient(specs, behaviors, version=version)
        except models.LibmemcachedRefused:
            continue
    if behaviors.get("ketama"):
        # KETAMA with a weight > 1 past 10 servers overruns 1.0.16's buffer (1.1.4 aborts past
        # 100 servers): the continuum it was building is the weighted one with the key hash,
        # which the consistent weighted distribution builds without the overrun.
        return models.LibmemcachedClient(
            specs, {"hash": behaviors["hash"], "distribution": "consistent weighted"},
            version="1.0.16")
    pytest.fail(f"no libmemcached version survives {behaviors} with {len(specs)} servers")


def libmemcached_case(rnd: random.Random, n: int, weights: str, weighted: bool,
                      hash_name: str) -> tuple[Any, list[str], dict[str, Any]]:
    hosts = [f"10.1.{i // 250}.{i % 250 + 1}:{11211 if i % 5 == 0 else 20000 + i}"
             for i in range(n)]
    if weights == "equal":
        servers: Any = hosts
        specs = hosts
    else:
        servers = {h: rnd.choice([1, 1, 2, 3, 10, 12]) for h in hosts}
        specs = [f"{h}:{w}" for h, w in servers.items()]
    if weighted:
        # pylibmc applies "hash" before "ketama_weighted", which forces md5; the consistent
        # weighted distribution keeps another key hash.
        behaviors = ({"ketama_weighted": True} if hash_name in ("default", "md5") else
                     {"hash": hash_name, "distribution": "consistent weighted"})
    else:
        behaviors = {"hash": hash_name, "ketama": True}
    return servers, specs, behaviors


@pytest.mark.parametrize("hash_name", LIBMEMCACHED_HASHES)
@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("weights", ["equal", "unequal"])
@pytest.mark.parametrize("n", [1, 2, 25, 50, 61, 100, 200])
def test_libmemcached_equals_the_model(hash_name: str, weighted: bool, weights: str,
                                       n: int) -> None:
    rnd = random.Random(f"{hash_name}/{weighted}/{weights}/{n}")
    servers, specs, behaviors = libmemcached_case(rnd, n, weights, weighted, hash_name)
    placement = compat.libmemcached(servers, weighted=weighted, hash=hash_name)
    model = libmemcached_model(specs, behaviors)
    keys = some_keys(rnd, 800)
    assert names_of(placement, keys) == [model.server_name(as_text(k)) for k in keys]
    assert list(placement.nodes) == [s.name for s in model.servers]


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(n=st.integers(1, 1000), seed=st.integers(0, 2**32), weighted=st.booleans(),
       hash_name=st.sampled_from(LIBMEMCACHED_HASHES),
       weights=st.sampled_from(["equal", "unequal"]))
def test_libmemcached_equals_the_model_up_to_1000_servers(n: int, seed: int, weighted: bool,
                                                         hash_name: str, weights: str) -> None:
    rnd = random.Random(seed)
    servers, specs, behaviors = libmemcached_case(rnd, n, weights, weighted, hash_name)
    placement = compat.libmemcached(servers, weighted=weighted, hash=hash_name)
    model = libmemcached_model(specs, behaviors)
    keys = some_keys(rnd, 200)
    assert names_of(placement, keys) == [model.server_name(as_text(k)) for k in keys]


def test_libmemcached_plain_ketama_is_not_the_weighted_continuum() -> None:
    """The README once claimed HashRing.ketama routes like KETAMA: it shares a fifth of keys."""
    servers = [f"127.0.0.1:{20000 + i}" for i in range(5)]
    plain = compat.libmemcached(servers, weighted=False)
    ring = ringkit.HashRing.ketama(servers)
    keys = [f"k{i}" for i in range(5000)]
    agree = np.mean(np.array(names_of(plain, keys)) == np.array(names_of(ring, keys)))
    assert agree < 0.5
    assert plain.algorithm == "one_at_a_time" and len(plain.points) == 500


@pytest.mark.parametrize("servers, kwargs, error, message", [
    (["a:1"], {"hash": "hsieh"}, ValueError, "hsieh"),
    (["a:1"], {"hash": "sha"}, ValueError, "hash must be one of"),
    (["a:1"], {"weighted": 1}, TypeError, "weighted"),
    ([], {}, ValueError, "empty"),
    ("a:1", {}, TypeError, "servers"),
    (["a:1", "a:1"], {}, ValueError, "two servers named"),
    (["a:99999"], {}, ValueError, "port"),
    ({"a:1": 0}, {}, ValueError, "weight"),
    ({"a:1": 1.5}, {}, TypeError, "weight"),
    ([5], {}, TypeError, "servers"),
])
def test_libmemcached_bad_arguments_are_clear_errors(servers: Any, kwargs: dict[str, Any],
                                                     error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        compat.libmemcached(servers, **kwargs)


# --------------------------------------------------------------------------------------------------
# uhashring


def uhashring_nodes(rnd: random.Random, n: int, kind: str) -> Any:
    names = [f"cache-{i}" for i in range(n)]
    if kind == "list":
        return names
    if kind == "weights":
        return {name: rnd.choice([1, 1, 2, 3]) for name in names}
    return {name: {"weight": rnd.choice([1, 2]), "vnodes": rnd.choice([3, 40, 160]),
                   "hostname": "h", "port": 1} for name in names}


@pytest.mark.parametrize("ketama", [False, True])
@pytest.mark.parametrize("kind", ["list", "weights", "conf"])
@pytest.mark.parametrize("n", [1, 2, 5, 61])
def test_uhashring_equals_the_package(ketama: bool, kind: str, n: int) -> None:
    rnd = random.Random(f"{ketama}/{kind}/{n}")
    nodes = uhashring_nodes(rnd, n, kind)
    placement = compat.uhashring(nodes, ketama=ketama)
    reference = uhashring_package.HashRing(nodes, hash_fn="ketama" if ketama else None)
    keys = some_keys(rnd, 1000) + [b"ab", True, 1.5e300, bytearray(b"x")]
    keys = [k for k in keys if not isinstance(k, float)]
    expected = [reference.get_node(k) for k in keys]
    assert [placement.get(k) for k in keys] == expected
    assert names_of(placement, keys) == expected
    size = min(3, len({node for _, node in reference.get_points()}))
    for key in keys[:100]:
        assert placement.preference_list(key, size) == \
            [node["nodename"] for node in reference.range(key, size)]


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(names=st.lists(st.text(TEXT, min_size=1, max_size=8), min_size=1, max_size=30,
                     unique=True),
       ketama=st.booleans(),
       keys=st.lists(st.one_of(st.text(TEXT, max_size=10), st.binary(max_size=10),
                               st.integers()), min_size=1, max_size=50))
def test_uhashring_equals_the_package_on_any_names_and_keys(names: list[str], ketama: bool,
                                                            keys: list[Any]) -> None:
    placement = compat.uhashring(names, ketama=ketama)
    reference = uhashring_package.HashRing(names, hash_fn="ketama" if ketama else None)
    assert names_of(placement, keys) == [reference.get_node(k) for k in keys]


def test_uhashring_keys_in_arrays_route_as_their_str() -> None:
    nodes = [f"n{i}" for i in range(9)]
    placement = compat.uhashring(nodes)
    reference = uhashring_package.HashRing(nodes)
    ints = np.arange(-500, 500, dtype=np.int64)
    assert names_of(placement, ints) == [reference.get_node(int(k)) for k in ints]
    raw = np.array([b"ab", b"c\xff"])
    assert names_of(placement, raw) == [reference.get_node(k) for k in raw.tolist()]
    text = pa.array([f"k{i}" for i in range(300)])
    assert names_of(placement, text) == [reference.get_node(k) for k in text.to_pylist()]
    binary = pa.array([b"k1", b"k\x00"], type=pa.binary())
    assert names_of(placement, binary) == [reference.get_node(k) for k in binary.to_pylist()]
    with pytest.raises(TypeError, match="memoryview"):
        placement.get(memoryview(b"ab"))


@pytest.mark.parametrize("nodes, kwargs, error, message", [
    ([], {}, ValueError, "empty"),
    ([5], {}, TypeError, "nodes"),
    ({"a": 0}, {}, ValueError, "nodes"),
    ({"a": {"weight": "x"}}, {}, TypeError, "weight"),
    (["a"], {"ketama": True, "replicas": 5}, ValueError, "replicas"),
    (["a"], {"vnodes": 0}, ValueError, "vnodes"),
    (["a"], {"vnodes": 10**9}, ValueError, "vnodes"),
    ({f"n{i}": 1000 for i in range(200)}, {}, ValueError, "points"),
])
def test_uhashring_bad_arguments_are_clear_errors(nodes: Any, kwargs: dict[str, Any],
                                                  error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        compat.uhashring(nodes, **kwargs)


# --------------------------------------------------------------------------------------------------
# pymemcache


@pytest.mark.parametrize("n", [1, 2, 7, 50])
def test_pymemcache_equals_hashclient(n: int) -> None:
    rnd = random.Random(n)
    servers = [(f"10.2.0.{i + 1}", 11211 + i % 3) for i in range(n)]
    placement = compat.pymemcache(servers)
    client = HashClient(servers)
    keys = some_keys(rnd, 1000) + [b"ab", bytearray(b"x\xff"), True, "\u0101\u4e2d\U0001f600"]
    expected = [client.hasher.get_node(k) for k in keys]
    assert [placement.get(k) for k in keys] == expected
    assert names_of(placement, keys) == expected
    texts = [k for k in keys if isinstance(k, str)]
    assert names_of(placement, np.array(texts)) == [client.hasher.get_node(k) for k in texts]
    assert names_of(placement, pa.array(texts)) == [client.hasher.get_node(k) for k in texts]
    assert names_of(placement, np.arange(-50, 50)) == [client.hasher.get_node(k)
                                                       for k in range(-50, 50)]


def test_pymemcache_equal_scores_go_to_the_greater_name() -> None:
    # Two names whose masked code points are equal score alike for every key.
    placement = compat.pymemcache(["h\u0141:1", "hA:1"])    # \u0141 & 0xFF == "A"
    reference = RendezvousHash(["h\u0141:1", "hA:1"])
    keys = [f"k{i}" for i in range(200)]
    assert names_of(placement, keys) == [reference.get_node(k) for k in keys]
    assert set(names_of(placement, keys)) == {"h\u0141:1"}


def test_pymemcache_server_forms() -> None:
    placement = compat.pymemcache(["10.0.0.1", "10.0.0.2:11212", ("10.0.0.3", 5),
                                   "[::1]:7", "/tmp/mc.sock", "10.0.0.1"])
    assert placement.nodes == ("10.0.0.1:11211", "10.0.0.2:11212", "10.0.0.3:5", "::1:7",
                               "/tmp/mc.sock")
    with pytest.raises(TypeError, match="servers"):
        compat.pymemcache("10.0.0.1:1")
    with pytest.raises(ValueError, match="empty"):
        compat.pymemcache([])
    with pytest.raises(TypeError, match="memoryview"):
        placement.get(memoryview(b"ab"))


def test_uhashring_and_pymemcache_format_any_key() -> None:
    """Both format keys with str() / f-strings: None, floats and tuples route as their text."""
    nodes = [f"10.0.0.{i}:11211" for i in range(1, 8)]
    odd: list[Any] = [None, 1.5, (1, 2), True, 2**70, -0.0]
    ring = compat.uhashring(nodes)
    reference = uhashring_package.HashRing(nodes)
    assert [ring.get(k) for k in odd] == [reference.get_node(k) for k in odd]
    assert names_of(ring, np.array(odd, dtype=object)) == [reference.get_node(k) for k in odd]
    client = compat.pymemcache(nodes)
    hasher = RendezvousHash(nodes)
    assert [client.get(k) for k in odd] == [hasher.get_node(k) for k in odd]
    assert names_of(client, odd) == [hasher.get_node(k) for k in odd]


# --------------------------------------------------------------------------------------------------
# What every compat placement shares


def every_placement() -> list[Any]:
    servers = [f"127.0.0.1:{20000 + i}" for i in range(7)]
    return [
        compat.twemproxy({"servers": [f"{s}:1" for s in servers], "hash": "md5"}),
        compat.twemproxy({"servers": [f"{s}:2" for s in servers], "distribution": "modula"}),
        compat.libmemcached(servers),
        compat.libmemcached(servers, weighted=False, hash="fnv1a_32"),
        compat.uhashring(servers),
        compat.uhashring(servers, ketama=True),
        compat.pymemcache(servers),
    ]


@pytest.mark.parametrize("placement", every_placement(), ids=repr)
def test_every_placement_pickles_and_batches_like_get(placement: Any) -> None:
    keys = [f"k{i}" for i in range(2000)]
    single = [placement.get(k) for k in keys]
    assert names_of(placement, keys) == single
    assert names_of(placement, np.array(keys)) == single
    assert names_of(placement, pa.array(keys)) == single
    assert names_of(placement, pa.chunked_array([keys[:5], keys[5:]])) == single
    out = np.full(len(keys), -1, dtype=np.int32)
    assert placement.get_many(keys, out=out) is out
    assert [placement[k] for k in keys[:10]] == single[:10]
    copy = pickle.loads(pickle.dumps(placement))
    assert copy == placement and names_of(copy, keys) == single
    assert len(placement) == 7 and placement.nodes[0] in placement
    with pytest.raises(TypeError, match="keys"):
        placement.get_many("abc")
    with pytest.raises(ValueError, match="null"):
        placement.get_many(pa.array(["a", None]))
    with pytest.raises(ValueError, match="out"):
        placement.get_many(keys, out=np.empty(3, dtype=np.int32))


@pytest.mark.parametrize("placement", every_placement()[:4], ids=repr)
def test_programs_without_a_preference_list_have_none(placement: Any) -> None:
    assert not hasattr(placement, "preference_list")
    assert not hasattr(placement, "preference_many")


def test_batches_release_the_gil_and_agree_across_threads() -> None:
    placement = compat.twemproxy({"servers": [f"10.0.0.{i}:1:1" for i in range(1, 40)]})
    keys = np.array([f"key-{i}" for i in range(200_000)])
    expected = placement.get_many(keys)
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(placement.get_many(keys)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all((r == expected).all() for r in results)


def test_hashring_ketama_docs_point_to_compat() -> None:
    assert "ringkit.compat" in (ringkit.HashRing.ketama.__doc__ or "")


# --------------------------------------------------------------------------------------------------
# Rendezvous


def test_rendezvous_shares_follow_the_weights() -> None:
    weights = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 0.5}
    placement = Rendezvous(weights)
    counts = np.bincount(placement.get_many([f"k{i}" for i in range(200_000)]), minlength=4)
    expected = np.array([weights[n] for n in placement.nodes]) / 6.5 * 200_000
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 40, (counts, expected)     # 3 degrees of freedom: far past the 1e-8 quantile


def test_rendezvous_moves_only_the_keys_of_the_changed_node() -> None:
    keys = [f"k{i}" for i in range(50_000)]
    placement = Rendezvous({f"n{i}": 1 + i % 3 for i in range(10)})
    before = np.array(names_of(placement, keys))
    second = np.array([placement.preference_list(k, 2)[1] for k in keys[:2000]])
    placement.add("new", 2.0)
    after = np.array(names_of(placement, keys))
    moved = before != after
    assert (after[moved] == "new").all() and 0 < moved.mean() < 0.25
    placement.remove("new")
    assert (np.array(names_of(placement, keys)) == before).all()
    placement.remove("n3")
    gone = np.array(names_of(placement, keys))
    assert ((gone == before) | (before == "n3")).all()
    held = before[:2000] == "n3"
    assert (gone[:2000][held] == second[held]).all()
    placement.set_weight("n0", 5.0)
    raised = np.array(names_of(placement, keys))
    changed = raised != gone
    assert (raised[changed] == "n0").all()


def test_rendezvous_preferences_are_consistent_with_get() -> None:
    placement = Rendezvous({f"n{i}": 1 + i % 4 for i in range(12)}, algorithm="murmur3", seed=9)
    keys = [f"k{i}" for i in range(3000)] + [b"raw", 5]
    pref = placement.preference_many(keys, 12)
    assert (pref[:, 0] == placement.get_many(keys)).all()
    assert all(sorted(row) == list(range(12)) for row in pref.tolist())
    for key, row in zip(keys[:50], pref):
        assert placement.preference_list(key, 12) == [placement.nodes[i] for i in row]
    equal = Rendezvous([f"n{i}" for i in range(12)])
    assert (equal.preference_many(keys, 1)[:, 0] == equal.get_many(keys)).all()


def test_rendezvous_api() -> None:
    placement = Rendezvous(["b", "a"])
    assert placement.nodes == ("a", "b") and placement.weights == {"a": 1.0, "b": 1.0}
    snap = placement.snapshot()
    placement.add("c")
    assert "c" not in snap and "c" in placement and len(placement) == 3
    assert pickle.loads(pickle.dumps(placement)) == placement
    assert placement.get("k") == hash_placement_check(placement, "k")
    with pytest.raises(EmptyRingError):
        Rendezvous().get("k")
    with pytest.raises(ValueError, match=r"nodes\['a'\] must be > 0"):
        Rendezvous({"a": 0})
    with pytest.raises(ValueError, match="already"):
        placement.add("a")
    with pytest.raises(UnknownNodeError):
        placement.remove("zz")
    with pytest.raises(ValueError, match="n must be"):
        placement.preference_list("k", 4)
    with pytest.raises(ValueError, match="algorithm"):
        Rendezvous(["a"], algorithm="sha1")
    with pytest.raises(TypeError, match="keys"):
        placement.get_many(5)


def hash_placement_check(placement: Rendezvous, key: str) -> str:
    """The documented score, recomputed in Python: weight / -ln(u), u from xxh64 draws."""
    import math

    import xxhash
    h = hash64(key, placement.algorithm, placement.seed)
    best = None
    for name, weight in placement.weights.items():
        node_seed = xxhash.xxh64_intdigest(name.encode(), seed=placement.seed)
        x = xxhash.xxh64_intdigest(h.to_bytes(8, "little"), seed=node_seed)
        u = ((x >> 11) + 0.5) / 2.0**53
        score = (weight / -math.log(u), x)
        if best is None or score > best[0]:
            best = (score, name)
    assert best is not None
    return best[1]


def test_rendezvous_score_is_the_documented_one() -> None:
    placement = Rendezvous({"a": 1, "b": 2.5, "c": 0.25}, seed=3)
    for i in range(500):
        assert placement.get(f"k{i}") == hash_placement_check(placement, f"k{i}")


# --------------------------------------------------------------------------------------------------
# JumpHash


@given(key=st.integers(-(2**80), 2**80), n=st.integers(1, 5000))
def test_jump_int_keys_equal_the_package(key: int, n: int) -> None:
    placement = JumpHash([f"n{i}" for i in range(n)])
    assert placement.get(key) == f"n{jump.hash(key, n)}"


def test_jump_batches_equal_the_package() -> None:
    nodes = [f"n{i}" for i in range(37)]
    placement = JumpHash(nodes)
    rnd = np.random.default_rng(5)
    for array in (rnd.integers(-2**63, 2**63 - 1, 5000, dtype=np.int64),
                  rnd.integers(0, 2**64 - 1, 5000, dtype=np.uint64, endpoint=True),
                  np.arange(300, dtype=np.int16), np.array([True, False])):
        expected = [jump.hash(int(k), 37) for k in array]
        assert placement.get_many(array).tolist() == expected
        assert placement.get_many(array.tolist()).tolist() == expected
        assert placement.get_many(pa.array(array)).tolist() == expected
    mixed = ["a", 5, b"b", -1]
    expected = [jump.hash(hash64("a"), 37), jump.hash(5, 37), jump.hash(hash64(b"b"), 37),
                jump.hash(-1, 37)]
    assert placement.get_many(mixed).tolist() == expected
    assert placement.get_many(np.array(mixed, dtype=object)).tolist() == expected
    assert [placement.get(k) for k in mixed] == [nodes[i] for i in expected]
    text = [f"k{i}" for i in range(1000)]
    assert placement.get_many(np.array(text)).tolist() == [jump.hash(hash64(k), 37)
                                                           for k in text]


def test_jump_add_moves_the_minimum_and_remove_last_only_its_keys() -> None:
    keys = np.arange(100_000, dtype=np.uint64)
    placement = JumpHash([f"n{i}" for i in range(10)])
    before = placement.get_many(keys)
    before_names = np.array(names_of(placement, keys))
    placement.add("n10")
    after = placement.get_many(keys)
    moved = before != after
    assert (after[moved] == 10).all() and abs(moved.mean() - 1 / 11) < 0.01
    placement.remove("n10")
    assert (placement.get_many(keys) == before).all()
    placement.remove("n3")                # not the last: the buckets after it renumber
    assert placement.nodes == tuple(f"n{i}" for i in range(10) if i != 3)
    # by name: the keys of n3 move, and so do keys of the renumbered buckets after it
    after_names = np.array(names_of(placement, keys))
    assert (after_names != before_names).mean() > 0.2


def test_jump_api() -> None:
    placement = JumpHash(["z", "a"])
    assert placement.nodes == ("z", "a")   # bucket order, not sorted
    assert pickle.loads(pickle.dumps(placement)) == placement
    snap = placement.snapshot()
    placement.add("m")
    assert snap.nodes == ("z", "a") and placement.nodes == ("z", "a", "m")
    with pytest.raises(TypeError, match="no weights"):
        JumpHash({"a": 1})
    with pytest.raises(ValueError, match="duplicate"):
        JumpHash(["a", "a"])
    with pytest.raises(EmptyRingError):
        JumpHash().get(1)
    with pytest.raises(TypeError, match="key"):
        placement.get(1.5)
    with pytest.raises(UnknownNodeError):
        placement.remove("q")


def test_placements_count_keys_alike_across_kinds() -> None:
    """Every placement answers the same for a key whatever container carries it."""
    keys = [f"k{i}" for i in range(1000)]
    for placement in (Rendezvous({"a": 1, "b": 3}), JumpHash(["a", "b", "c"])):
        single = [placement.get(k) for k in keys]
        assert names_of(placement, keys) == single
        assert names_of(placement, np.array(keys)) == single
        assert names_of(placement, pa.array(keys, type=pa.large_string())) == single
        assert Counter(single).keys() <= set(placement.nodes)


@pytest.mark.parametrize("n, low, high", [(5, 1.0, 1.0), (25, 0.95, 0.99), (50, 0.95, 0.99)])
def test_hashring_ketama_is_libketama_not_twemproxy(n: int, low: float, high: float) -> None:
    """libketama's double-precision product keeps a digest that twemproxy's single-precision one
    drops at 25 and 50 equal servers: README's figures for why compat.twemproxy exists."""
    servers = [f"127.0.0.1:{20000 + i}" for i in range(n)]
    twemproxy = compat.twemproxy({"servers": [f"{s}:1" for s in servers], "hash": "md5"})
    ketama = ringkit.HashRing.ketama(servers)
    keys = [f"k{i}" for i in range(100_000)]
    agree = float(np.mean(np.array(names_of(twemproxy, keys)) == np.array(names_of(ketama, keys))))
    assert low <= agree <= high, agree
    assert (len(twemproxy.points) == len(ketama.points)) == (n == 5)


def test_rendezvous_extreme_weights_keep_their_ratios() -> None:
    keys = [f"k{i}" for i in range(100_000)]
    huge = Rendezvous({"a": 1e308, "b": 1e308, "c": 5e307})
    counts = np.bincount(huge.get_many(keys), minlength=3) / len(keys)
    assert np.allclose(counts, [0.4, 0.4, 0.2], atol=0.01), counts
    tiny = Rendezvous({"a": 1e-300, "b": 1.0})
    assert (tiny.get_many(keys) == 1).all()


def test_libmemcached_weighted_continuum_probed_with_one_at_a_time() -> None:
    """MEMCACHED_HASH_DEFAULT set after KETAMA_WEIGHTED: the weighted points, the default hash."""
    servers = {f"10.3.0.{i}:{20000 + i}": 1 + i % 3 for i in range(1, 30)}
    placement = compat.libmemcached(servers, hash="one_at_a_time")
    model = models.LibmemcachedClient([f"{s}:{w}" for s, w in servers.items()],
                                      {"hash": "default", "distribution": "consistent weighted"})
    keys = some_keys(random.Random(7), 1000)
    assert names_of(placement, keys) == [model.server_name(as_text(k)) for k in keys]
    assert placement.algorithm == "one_at_a_time"
