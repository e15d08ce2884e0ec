"""HashRing.ketama against libketama, re-derived here from its published algorithm, and uhashring.

libketama (ketama_create_continuum / ketama_get_server):

* ``memory`` is the exact (unsigned long) sum of the servers' integer weights;
* per server ``pct = (float)weight / (float)memory`` and
  ``ks = floorf(pct * 40.0 * (float)numservers)`` (the product in double, floored as float);
* for ``k in range(ks)``: ``md5("%s-%d" % (addr, k))`` gives four points, bytes
  ``[4h:4h+4]`` read little-endian, ``h = 0..3``;
* a key hashes to the first four md5 bytes, little-endian, and goes to the first point >= it,
  wrapping to the first point.

qsort leaves the order of equal points (two servers on one 32-bit point) unspecified; ringkit
orders them by name, and so does the oracle here.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
import struct

import numpy as np
import pytest
import uhashring

from ringkit import HashRing
from ringkit.ring import ketama_digests

# --------------------------------------------------------------------------------------------------
# The oracle: plain Python, hashlib md5, float32 via struct


def f32(x: float) -> float:
    """Round a double to the nearest float32 (as a C cast does)."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def libketama_digest_counts(servers: dict[str, float]) -> dict[str, int]:
    total = f32(math.fsum(servers.values()))  # exact sum for integer weights, then (float)
    count = f32(len(servers))
    # float32 / float32 rounded once is exact IEEE single division (53 >= 2 * 24 + 2 bits).
    return {name: math.floor(f32(f32(f32(w) / total) * 40.0 * count))
            for name, w in servers.items()}


def libketama_continuum(servers: dict[str, float]) -> list[tuple[int, str]]:
    continuum = []
    for name, ks in libketama_digest_counts(servers).items():
        for k in range(ks):
            digest = hashlib.md5(f"{name}-{k}".encode()).digest()
            for h in range(4):
                continuum.append((int.from_bytes(digest[4 * h:4 * h + 4], "little"), name))
    continuum.sort()
    return continuum


def libketama_hash(key: str | bytes) -> int:
    data = key.encode() if isinstance(key, str) else key
    return int.from_bytes(hashlib.md5(data).digest()[:4], "little")


def libketama_get(continuum: list[tuple[int, str]], key: str | bytes) -> str:
    i = bisect.bisect_left(continuum, (libketama_hash(key),))
    return continuum[i if i < len(continuum) else 0][1]


def uhashring_digest_counts(servers: dict[str, int]) -> dict[str, int]:
    """uhashring's KetamaRing: (vnodes * len(nodes) * weight) // weight_sum, in integers."""
    total = sum(servers.values())
    return {name: 40 * len(servers) * w // total for name, w in servers.items()}


KEYS = [f"key:{i}" for i in range(6000)] + ["", "ключ", "🙂", "a" * 300, "user/42"]

SERVER_SETS = {
    "three-with-ports": ["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"],
    "hostnames": [f"cache{i}.example.com" for i in range(10)],
    "one": ["127.0.0.1:11211"],
    "weighted": {"10.0.1.1:11211": 1, "10.0.1.2:11211": 2, "10.0.1.3:11211": 5},
    "mem-sizes": {"a:11211": 1024, "b:11211": 2048, "c:11211": 512, "d:11211": 3072},
    # 61 equal servers: float32 gives 39 digests each where exact arithmetic gives 40.
    "sixty-one": [f"192.168.0.{i}:11211" for i in range(61)],
    # floorf differs from the exact quotient for s3, s6 and s8 (see the digest test below).
    "float32-edge": {"s0": 9, "s1": 13, "s2": 7, "s3": 2, "s4": 17, "s5": 17, "s6": 16, "s7": 3,
                     "s8": 8, "s9": 5, "s10": 13},
    # A total past 2**24: summing float32 weights would round it; libketama sums exactly.
    "past-2-to-24": {"big:1": 2**24, "small:1": 1, "small:2": 1},
    "huge-and-tiny": {"h:1": 10**6, "t:1": 1, "t:2": 7000, "t:3": 60000},
}


def as_weights(servers) -> dict[str, float]:
    return dict(servers) if isinstance(servers, dict) else {s: 1 for s in servers}


@pytest.mark.parametrize("name", sorted(SERVER_SETS))
def test_continuum_matches_libketama(name):
    servers = SERVER_SETS[name]
    ring = HashRing.ketama(servers)
    continuum = libketama_continuum(as_weights(servers))
    assert ring.is_ketama
    assert ring.points.tolist() == [p << 32 for p, _ in continuum]
    assert [ring.nodes[o] for o in ring.owners.tolist()] == [s for _, s in continuum]


@pytest.mark.parametrize("name", sorted(SERVER_SETS))
def test_lookups_match_libketama_key_by_key(name):
    servers = SERVER_SETS[name]
    ring = HashRing.ketama(servers)
    continuum = libketama_continuum(as_weights(servers))
    expected = [libketama_get(continuum, k) for k in KEYS]
    assert [ring.get(k) for k in KEYS] == expected
    assert [ring.nodes[i] for i in ring.get_many(KEYS).tolist()] == expected
    assert [ring.get(k.encode()) for k in KEYS[:500]] == expected[:500]
    # locate/get_hash take ring positions: a 32-bit ketama hash sits in the top half.
    positions = np.array([libketama_hash(k) << 32 for k in KEYS], dtype=np.uint64)
    assert [ring.nodes[i] for i in ring.locate(positions).tolist()] == expected
    assert [ring.get_hash(libketama_hash(k) << 32) for k in KEYS[:200]] == expected[:200]


def test_exact_hits_and_wraparound():
    servers = SERVER_SETS["three-with-ports"]
    ring = HashRing.ketama(servers)
    continuum = libketama_continuum(as_weights(servers))
    first, last = continuum[0], continuum[-1]
    for point, server in continuum[::37]:
        assert ring.get_hash(point << 32) == server  # first point >= hash: the point itself
    assert ring.get_hash((last[0] + 1) << 32) == first[1]
    assert ring.get_hash(0) == first[1]
    assert ring.get_hash(((1 << 32) - 1) << 32) == (first[1] if last[0] < 2**32 - 1 else last[1])


def test_changes_rebuild_like_libketama():
    ring = HashRing.ketama({"a:1": 1, "b:1": 1})
    ring.add("c:1", 3)
    ring.set_weight("a:1", 2)
    ring.remove("b:1")
    weights = {"a:1": 2, "c:1": 3}
    assert ring == HashRing.ketama(weights)
    assert ring.points.tolist() == [p << 32 for p, _ in libketama_continuum(weights)]
    assert [ring.get(k) for k in KEYS[:1000]] == [
        libketama_get(libketama_continuum(weights), k) for k in KEYS[:1000]]


def test_server_names_are_hashed_as_given():
    # libmemcached drops ":11211" from point names; libketama and ringkit keep what they are given,
    # so "host" and "host:11211" are different rings.
    with_port = HashRing.ketama(["h1:11211", "h2:11211"])
    without = HashRing.ketama(["h1", "h2"])
    assert with_port.points.tolist() != without.points.tolist()
    assert without.points.tolist() == [p << 32 for p, _ in libketama_continuum({"h1": 1, "h2": 1})]


# --------------------------------------------------------------------------------------------------
# ketama_digests: the float32 formula


TRICKY_WEIGHT_SETS = [
    {f"s{i}": 1 for i in range(61)},
    {f"s{i}": 1 for i in range(122)},
    SERVER_SETS["float32-edge"],
    {"s0": 8, "s1": 14, "s2": 5, "s3": 16, "s4": 1, "s5": 13, "s6": 6, "s7": 7, "s8": 20,
     "s9": 17, "s10": 3},
    {"a": 2**24, "b": 1, "c": 1},
    {"a": 2**25 + 1, "b": 3, "c": 2**24 + 1},
    {"a": 2**31, "b": 2**31 - 1},
    {"a": 3, "b": 3, "c": 3},
    {"a": 1},
    {"a": 0.1, "b": 0.2, "c": 0.3},
    {"a": 1e-6, "b": 1.0},
]


@pytest.mark.parametrize("weights", TRICKY_WEIGHT_SETS)
def test_ketama_digests_matches_float32_formula(weights):
    assert ketama_digests(weights) == libketama_digest_counts(weights)
    ring = HashRing.ketama(weights)
    counts = dict(zip(ring.nodes, ring._ring_state.counts, strict=True))
    assert counts == {name: 4 * d for name, d in libketama_digest_counts(weights).items()}


def test_the_tricky_sets_really_differ_from_exact_arithmetic():
    # Each of these gives some server one digest fewer in float32 than floor(40 * n * w / W) does.
    for weights in TRICKY_WEIGHT_SETS[:4]:
        exact = uhashring_digest_counts(weights)
        assert ketama_digests(weights) != exact
        assert all(exact[n] - ketama_digests(weights)[n] in (0, 1) for n in weights)


def test_total_is_summed_exactly_then_rounded_once():
    # 2**24 + 2 is a float32, but adding the weights in float32 loses both ones (2**24 + 1 rounds
    # to 2**24), which would make the big server's share exactly 1.0 and give it 120 digests.
    assert ketama_digests({"a": 2**24, "b": 1, "c": 1}) == {"a": 119, "b": 0, "c": 0}


def test_ketama_digests_random_weight_sets():
    rnd = random.Random(2024)
    for _ in range(2000):
        n = rnd.randint(1, 40)
        weights = {f"s{i}": rnd.choice([rnd.randint(1, 20), rnd.randint(1, 10**7)])
                   for i in range(n)}
        assert ketama_digests(weights) == libketama_digest_counts(weights)


# --------------------------------------------------------------------------------------------------
# uhashring's ketama mode
#
# uhashring differs from libketama in two known places, and only there may the rings disagree:
#   1. it takes the first point > hash (bisect_right), so a key whose hash equals a point exactly
#      goes one point further clockwise in uhashring;
#   2. it counts digests in integers, (40 * n * weight) // total, where libketama uses floorf of a
#      float32 share: a few weight sets (61 equal servers, the tricky sets above) give a server
#      one digest more in uhashring. Those sets are compared digest count by digest count, not key
#      by key.
# It also keeps one owner per point value (a dict), so where two servers share a 32-bit point the
# owner it keeps depends on insertion order; libketama's qsort leaves that order open and ringkit
# picks the name that sorts first.


def _explained(ring, continuum, key):
    h = libketama_hash(key)
    points = [p for p, _ in continuum]
    i = bisect.bisect_left(points, h)
    exact_hit = i < len(points) and points[i] == h
    j = i if i < len(points) else 0
    shared = sum(1 for p in points if p == points[j]) > 1
    return exact_hit or shared


UHASHRING_SETS = [
    ["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"],
    [f"cache{i}.example.com" for i in range(10)],
    [f"10.0.{i // 256}.{i % 256}:11211" for i in range(200)],
    {"a:1": 1, "b:2": 2, "c:3": 5},
    {"a:11211": 1024, "b:11211": 2048, "c:11211": 512, "d:11211": 3072},
]


@pytest.mark.parametrize("index", range(len(UHASHRING_SETS)))
def test_agrees_with_uhashring_ketama(index):
    servers = UHASHRING_SETS[index]
    weights = as_weights(servers)
    # uhashring takes integer weights as {name: weight}; a list means weight 1 each.
    theirs = uhashring.HashRing(servers, hash_fn="ketama")
    ours = HashRing.ketama(servers)
    assert ketama_digests(weights) == uhashring_digest_counts(weights)
    assert sorted(theirs.runtime._keys) == sorted(set((ours.points >> 32).tolist()))
    continuum = libketama_continuum(weights)
    disagree = [k for k in KEYS if ours.get(k) != theirs.get_node(k)]
    assert all(_explained(ours, continuum, k) for k in disagree)
    assert len(disagree) <= 3


def test_exact_point_hit_differs_from_uhashring_as_documented():
    # md5("probe-5826")[:4] little-endian is exactly a point of this 200-server ring (found by
    # searching probe-0, probe-1, ...): libketama and ringkit answer that point's server,
    # uhashring the next point's.
    servers = UHASHRING_SETS[2]
    ours = HashRing.ketama(servers)
    theirs = uhashring.HashRing(servers, hash_fn="ketama")
    continuum = libketama_continuum(as_weights(servers))
    h = libketama_hash("probe-5826")
    i = bisect.bisect_left(continuum, (h,))
    assert continuum[i][0] == h
    assert ours.get("probe-5826") == continuum[i][1] == "10.0.0.24:11211"
    nxt = next(s for p, s in continuum[i:] if p > h)
    assert theirs.get_node("probe-5826") == nxt != ours.get("probe-5826")


def test_digest_count_difference_with_uhashring_is_the_documented_one():
    servers = [f"192.168.0.{i}:11211" for i in range(61)]
    theirs = uhashring.HashRing(servers, hash_fn="ketama")
    ours = HashRing.ketama(servers)
    assert set(theirs.runtime._distribution.values()) == {160}
    assert set(ours._ring_state.counts) == {156}
    # Where both rings hold the same point, they route alike; the keys that differ fall on the
    # arcs closed by uhashring's extra 40th digest.
    extra = set()
    for s in servers:
        digest = hashlib.md5(f"{s}-39".encode()).digest()
        extra.update(int.from_bytes(digest[4 * h:4 * h + 4], "little") for h in range(4))
    continuum = libketama_continuum(as_weights(servers))
    points = sorted(set(theirs.runtime._keys))
    differ = [k for k in KEYS[:3000] if ours.get(k) != theirs.get_node(k)]
    assert 0 < len(differ) < 300  # about 1/40 of the keys
    for key in differ:
        j = bisect.bisect_right(points, libketama_hash(key))
        assert points[j % len(points)] in extra or _explained(ours, continuum, key)


# --------------------------------------------------------------------------------------------------
# Weights without a float32 share


@pytest.mark.parametrize(("servers", "word"), [
    ({"a": 1e39}, "more than a float32"),
    ({"a": 3e38, "b": 3e38}, "more than a float32"),
    ({"a": 1e300, "b": 1}, "more than a float32"),
    ({"a": 1e-50}, "0 in float32"),
    ({"a": 1e-50, "b": 1e-46}, "0 in float32"),
])
def test_weights_whose_float32_total_overflows_or_underflows_are_refused(servers, word):
    with pytest.raises(ValueError, match=f"servers.*{word}") as info:
        HashRing.ketama(servers)
    assert len(str(info.value)) < 200
    ring = HashRing.ketama(["x", "y"])
    with pytest.raises(ValueError, match="weight.*more than a float32"):
        ring.add("big", 1e39)
    with pytest.raises(ValueError, match="weight.*more than a float32"):
        ring.set_weight("x", 1e39)
    assert ring == HashRing.ketama(["x", "y"])


def test_a_tiny_weight_beside_normal_ones_just_gets_no_digest():
    ring = HashRing.ketama({"a": 1, "b": 1e-50})
    assert ring.nodes == ("a", "b") and set(ring.owners.tolist()) == {0}
