"""Placements: ringkit.compat's program placements, Rendezvous and JumpHash, beside their peers.

One run measures every row of the compat issue's speed targets beside what they are measured
against:

- ``placement.get(str)`` in a Python loop, 100,000 short str keys, one group per compat placement
  on 100 servers: twemproxy (ketama with its default fnv1a_64 key hash, ketama with md5, modula),
  libmemcached (``weighted=True``: md5 key hash; ``weighted=False``: one-at-a-time) and uhashring
  (its default ring and ``hash_fn="ketama"``, both md5), each beside ``ringkit.HashRing(servers,
  algorithm=...).get`` on the same servers, the reference: the same work (hash a short key, find
  its point, return the owner) with the same family of key hash, md5 for the md5-keyed
  placements, fnv1a64 for fnv1a_64, one-at-a-time and modula (cheap byte-at-a-time hashes);
  pymemcache's rendezvous (one murmur3_32 per server per key) on a realistic pool of 5 servers,
  beside ``HashRing(algorithm="murmur3")`` on the same 5. Target: within 1.3x of the reference;
- ``get_many`` over 1,000,000 keys beside the peer package's own per-key loop:
  ``compat.uhashring`` (both rings) beside ``uhashring.HashRing.get_node`` (100,000 keys),
  ``compat.pymemcache`` beside pymemcache's ``RendezvousHash.get_node`` (5 servers; 2,000 keys: it
  costs tens of µs a key in pure Python), and ``JumpHash.get_many`` over 1,000,000 random uint64
  in a numpy array beside ``jump.hash(key, 100)`` over the first 100,000 of them as ints. The
  loops and the batches hold different numbers of keys: bench/report.py compares such rows per
  key. Target: 20x the loop;
- "when to use which": ``get`` (loop) and ``get_many`` (1,000,000 keys) of HashRing, Rendezvous and
  JumpHash (all hashing the key with xxh64) at 10 and 100 nodes. Not timed, in each get_many row's
  extra_info: the fraction of the 1,000,000 keys that move to another node when a node is added
  (``moved_add``) and removed (``moved_remove``; JumpHash: ``moved_remove_last`` and
  ``moved_remove_first``, which renumbers every bucket after it), and the memory of the placement
  beyond the node names (``memory_bytes``: HashRing.nbytes; Rendezvous one uint64 seed and one
  float64 weight per node; JumpHash none).

Before timing, each row checks on a sample of keys that it answers as its peer does: uhashring's
``get_node``, pymemcache's ``RendezvousHash.get_node`` and ``jump.hash`` themselves; for twemproxy
and libmemcached, which are C programs, the models of tests/compat_models.py (plain Python, proved
equal to nutcracker and to pylibmc by tests/test_compat_models.py); for HashRing (the references
too, with their key hash), Rendezvous and JumpHash, models rebuilt here from their documented
schemes (JumpHash's: jump.hash of the key's hash64). The get_many rows also check that they index
the nodes their get names.

Targets are the issue's; bench/report.py says whether they were met, nothing here asserts on time.
"""

from __future__ import annotations

import bisect
import importlib.util
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import ringkit
from ringkit import compat

N_SERVERS = 100
N_POOL = 5  # pymemcache: a rendezvous costs one murmur3_32 per server per key
N_LOOP = 100_000  # keys per Python-loop row
N_PYMEMCACHE_LOOP = 2_000  # RendezvousHash.get_node: pure-Python murmur3 per server per key
N_BATCH = 1_000_000  # the size of bench/conftest.py's key sets
SAMPLE = 1000  # keys checked against the peer (or a model) before timing
SERVERS = [f"10.0.0.{i}:11211" for i in range(N_SERVERS)]
POOL = SERVERS[:N_POOL]
NAMES = [f"node-{i}" for i in range(N_SERVERS)]
NEW = "node-new"
VNODES = 160
JUMP_BUCKETS = 100

# As bench/bench_ring.py: about a second a row, two warm-up rounds for the Python loops.
TIMING: dict[str, Any] = dict(min_rounds=5, max_time=1.0, warmup=True, warmup_iterations=2)


def bench(group: str) -> pytest.MarkDecorator:
    return pytest.mark.benchmark(group=group, **TIMING)


def lookup_loop(keys: Sequence[Any], get: Callable[[Any], Any]) -> None:
    """The loop every per-call row times: the same for ringkit and its peers."""
    for key in keys:
        get(key)


def jump_loop(keys: Sequence[int], jump_hash: Callable[[int, int], int]) -> None:
    """The same loop for jump.hash(key, buckets), which takes the bucket count on every call."""
    for key in keys:
        jump_hash(key, JUMP_BUCKETS)


def check_sample(get: Callable[[Any], Any], model: Callable[[Any], Any],
                 keys: Sequence[Any]) -> None:
    got = [get(k) for k in keys[:SAMPLE]]
    assert got == [model(k) for k in keys[:SAMPLE]]
    assert len(set(got)) > 1


def check_batch(placement: Any, keys: Sequence[Any]) -> None:
    """get_many indexes ``nodes`` with the owners get names."""
    sample = keys[:SAMPLE]
    assert [placement.nodes[i] for i in placement.get_many(sample)] == \
        [placement.get(k) for k in sample]


_MODELS: ModuleType | None = None


def compat_models() -> ModuleType:
    """tests/compat_models.py, loaded by path as bench/conftest.py loads the test helpers."""
    global _MODELS
    if _MODELS is None:
        name = "compat_models"
        if name not in sys.modules:
            path = Path(__file__).resolve().parent.parent / "tests" / f"{name}.py"
            spec = importlib.util.spec_from_file_location(name, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        _MODELS = sys.modules[name]
    return _MODELS


# --------------------------------------------------------------------------------------------------
# Key sets


@pytest.fixture(scope="module")
def loop_keys(short_str_keys: list[str]) -> list[str]:
    """100,000 short str keys ("user:0" ...): the first keys of bench/conftest.py's million."""
    return short_str_keys[:N_LOOP]


# --------------------------------------------------------------------------------------------------
# placement.get(str) in a Python loop, each compat placement beside HashRing with its key hash


def twemproxy_pool(**settings: str) -> dict[str, Any]:
    return {"servers": [f"{s}:1" for s in SERVERS], **settings}


def twemproxy_model(**settings: str) -> Callable[[str], str]:
    pool = compat_models().TwemproxyPool(twemproxy_pool()["servers"], **settings)
    return pool.server_name


def libmemcached_model(behaviors: dict[str, Any]) -> Callable[[str], str]:
    client = compat_models().LibmemcachedClient(SERVERS, behaviors)
    return client.server_name


def uhashring_peer(**kwargs: Any) -> Callable[[str], Any]:
    uhashring = pytest.importorskip("uhashring")
    return uhashring.HashRing(SERVERS, **kwargs).get_node


def pymemcache_peer() -> Callable[[str], Any]:
    rendezvous = pytest.importorskip("pymemcache.client.rendezvous")
    return rendezvous.RendezvousHash(list(POOL)).get_node


@dataclass(frozen=True)
class GetCase:
    id: str
    what: str  # the placement, in the group's title
    label: str
    build: Callable[[], Any]
    peer: Callable[[], Callable[[str], Any]]  # the program's answer (or its proved model)
    algorithm: str  # the reference HashRing's key hash
    servers: Sequence[str] = tuple(SERVERS)

    @property
    def group(self) -> str:
        return (f"compat get(str), {self.what}: {len(self.servers)} servers, 100,000 short str "
                f"keys, one call per key in a Python loop")

    @property
    def reference(self) -> str:
        return f'ringkit HashRing(algorithm="{self.algorithm}").get'


GET_CASES = [
    GetCase("twemproxy", "twemproxy ketama, hash fnv1a_64 (its defaults)",
            "ringkit compat.twemproxy get", lambda: compat.twemproxy(twemproxy_pool()),
            twemproxy_model, "fnv1a64"),
    GetCase("twemproxy-md5", "twemproxy ketama, hash md5",
            "ringkit compat.twemproxy (hash md5) get",
            lambda: compat.twemproxy(twemproxy_pool(hash="md5")),
            lambda: twemproxy_model(hash="md5"), "md5"),
    GetCase("twemproxy-modula", "twemproxy modula, hash fnv1a_64",
            "ringkit compat.twemproxy (modula) get",
            lambda: compat.twemproxy(twemproxy_pool(distribution="modula")),
            lambda: twemproxy_model(distribution="modula"), "fnv1a64"),
    GetCase("libmemcached", "libmemcached KETAMA_WEIGHTED (md5 key hash)",
            "ringkit compat.libmemcached get", lambda: compat.libmemcached(SERVERS),
            lambda: libmemcached_model({"ketama_weighted": True}), "md5"),
    GetCase("libmemcached-ketama", "libmemcached KETAMA (one-at-a-time key hash)",
            "ringkit compat.libmemcached (weighted=False) get",
            lambda: compat.libmemcached(SERVERS, weighted=False),
            lambda: libmemcached_model({"ketama": True}), "fnv1a64"),
    GetCase("uhashring", "uhashring default ring (md5)", "ringkit compat.uhashring get",
            lambda: compat.uhashring(SERVERS), uhashring_peer, "md5"),
    GetCase("uhashring-ketama", "uhashring hash_fn=\"ketama\" (md5)",
            "ringkit compat.uhashring (ketama=True) get",
            lambda: compat.uhashring(SERVERS, ketama=True),
            lambda: uhashring_peer(hash_fn="ketama"), "md5"),
    GetCase("pymemcache", "pymemcache HashClient rendezvous (murmur3_32 per server)",
            "ringkit compat.pymemcache get", lambda: compat.pymemcache(POOL), pymemcache_peer,
            "murmur3", servers=tuple(POOL)),
]


def get_params() -> list[Any]:
    """Each placement's row, then its reference's, so that the two run one after the other."""
    return [pytest.param(case, ours, id=case.id if ours else f"{case.id}-reference",
                         marks=bench(case.group))
            for case in GET_CASES for ours in (True, False)]


@pytest.mark.parametrize(("case", "ours"), get_params())
def test_get(measure: Any, loop_keys: list[str], case: GetCase, ours: bool) -> None:
    if ours:
        placement = case.build()
        assert len(placement.nodes) == len(case.servers)
        check_sample(placement.get, case.peer(), loop_keys)
        measure(lookup_loop, loop_keys, placement.get, label=case.label, n_keys=N_LOOP,
                targets=[("speedup", ">=", 0.77, case.reference)])
    else:
        ring = ringkit.HashRing(list(case.servers), algorithm=case.algorithm)
        check_sample(ring.get, ring_model(case.servers, case.algorithm), loop_keys)
        check_batch(ring, loop_keys)
        measure(lookup_loop, loop_keys, ring.get, label=case.reference, n_keys=N_LOOP,
                reference=True)


# --------------------------------------------------------------------------------------------------
# get_many beside the peer package's own per-key loop (compared per key)

UHASHRING_LOOP = "uhashring get_node loop"
UHASHRING = ("compat.uhashring get_many: 100 nodes, 1,000,000 short str keys in one call "
             "(uhashring get_node: 100,000 in a loop; per key)")
UHASHRING_KETAMA_LOOP = "uhashring (hash_fn=\"ketama\") get_node loop"
UHASHRING_KETAMA = ("compat.uhashring(ketama=True) get_many: 100 nodes, 1,000,000 short str keys "
                    "in one call (uhashring hash_fn=\"ketama\" get_node: 100,000 in a loop; "
                    "per key)")
PYMEMCACHE_LOOP = "pymemcache RendezvousHash.get_node loop"
PYMEMCACHE = ("compat.pymemcache get_many: 5 servers, 1,000,000 short str keys in one call "
              "(RendezvousHash.get_node: 2,000 in a loop; per key)")
JUMP_LOOP = "jump.hash loop"
JUMP = ("JumpHash.get_many: 100 buckets, 1,000,000 random uint64 in a numpy array "
        "(jump.hash: 100,000 ints in a loop; per key)")


def batch_row(measure: Any, placement: Any, peer: Callable[[Any], Any], keys: Sequence[Any],
              label: str, vs: str) -> None:
    sample = keys[:SAMPLE]
    assert [placement.nodes[i] for i in placement.get_many(sample)] == [peer(k) for k in sample]
    measure(placement.get_many, keys, label=label, n_keys=N_BATCH,
            targets=[("speedup", ">=", 20, vs)])


@bench(UHASHRING)
def test_batch_uhashring(measure: Any, short_str_keys: list[str]) -> None:
    batch_row(measure, compat.uhashring(SERVERS), uhashring_peer(), short_str_keys,
              "ringkit compat.uhashring get_many", UHASHRING_LOOP)


@bench(UHASHRING)
def test_batch_uhashring_peer(measure: Any, loop_keys: list[str]) -> None:
    measure(lookup_loop, loop_keys, uhashring_peer(), label=UHASHRING_LOOP, n_keys=N_LOOP,
            reference=True)


@bench(UHASHRING_KETAMA)
def test_batch_uhashring_ketama(measure: Any, short_str_keys: list[str]) -> None:
    batch_row(measure, compat.uhashring(SERVERS, ketama=True), uhashring_peer(hash_fn="ketama"),
              short_str_keys, "ringkit compat.uhashring(ketama=True) get_many",
              UHASHRING_KETAMA_LOOP)


@bench(UHASHRING_KETAMA)
def test_batch_uhashring_ketama_peer(measure: Any, loop_keys: list[str]) -> None:
    measure(lookup_loop, loop_keys, uhashring_peer(hash_fn="ketama"),
            label=UHASHRING_KETAMA_LOOP, n_keys=N_LOOP, reference=True)


@bench(PYMEMCACHE)
def test_batch_pymemcache(measure: Any, short_str_keys: list[str]) -> None:
    batch_row(measure, compat.pymemcache(POOL), pymemcache_peer(), short_str_keys,
              "ringkit compat.pymemcache get_many", PYMEMCACHE_LOOP)


@bench(PYMEMCACHE)
def test_batch_pymemcache_peer(measure: Any, loop_keys: list[str]) -> None:
    keys = loop_keys[:N_PYMEMCACHE_LOOP]
    measure(lookup_loop, keys, pymemcache_peer(), label=PYMEMCACHE_LOOP,
            n_keys=N_PYMEMCACHE_LOOP, reference=True)


@bench(JUMP)
def test_batch_jump(measure: Any, uint64_keys: np.ndarray) -> None:
    jump = pytest.importorskip("jump")
    placement = ringkit.JumpHash(NAMES[:JUMP_BUCKETS])
    sample = uint64_keys[:SAMPLE]
    assert placement.get_many(sample).tolist() == \
        [jump.hash(k, JUMP_BUCKETS) for k in sample.tolist()]
    assert placement.get_many(sample.view(np.int64)).tolist() == \
        placement.get_many(sample).tolist()  # an int64 array: the same values modulo 2**64
    measure(placement.get_many, uint64_keys, label="ringkit JumpHash.get_many (uint64 array)",
            n_keys=N_BATCH, targets=[("speedup", ">=", 20, JUMP_LOOP)])


@bench(JUMP)
def test_batch_jump_peer(measure: Any, uint64_keys: np.ndarray) -> None:
    jump = pytest.importorskip("jump")
    keys = uint64_keys[:N_LOOP].tolist()
    assert [jump.hash(k, JUMP_BUCKETS) for k in keys[:SAMPLE]] == \
        [jump.py_hash(k, JUMP_BUCKETS) for k in keys[:SAMPLE]]
    measure(jump_loop, keys, jump.hash, label=JUMP_LOOP, n_keys=N_LOOP, reference=True)


# --------------------------------------------------------------------------------------------------
# When to use which: HashRing, Rendezvous and JumpHash at 10 and 100 nodes (all xxh64 keys)


def ring_model(names: Sequence[str], algorithm: str = "xxh64") -> Callable[[str], str]:
    """HashRing's frozen placement: point i of a node is hash64(name + i as 4 bytes LE); the
    owner of a key is the node of the first point >= its hash64, wrapping (as bench_ring.py);
    equal points go to the name that sorts first."""
    points = sorted((ringkit.hash64(name.encode() + i.to_bytes(4, "little"), algorithm), name)
                    for name in names for i in range(VNODES))
    positions = [p for p, _ in points]

    def owner(key: str) -> str:
        h = ringkit.hash64(key, algorithm)
        return points[bisect.bisect_left(positions, h) % len(points)][1]

    return owner


def rendezvous_model(names: Sequence[str]) -> Callable[[str], str]:
    """Rendezvous with equal weights: the node whose xxh64 draw of the key's hash64 (8 bytes
    LE), seeded with xxh64 of its name, is the largest."""
    import xxhash

    seeds = {name: xxhash.xxh64_intdigest(name.encode()) for name in names}

    def owner(key: str) -> str:
        h = ringkit.hash64(key).to_bytes(8, "little")
        return max(names, key=lambda n: xxhash.xxh64_intdigest(h, seed=seeds[n]))

    return owner


def jump_model(names: Sequence[str]) -> Callable[[str], str]:
    """JumpHash of a str key: jump.hash of its hash64."""
    jump = pytest.importorskip("jump")
    return lambda key: names[jump.hash(ringkit.hash64(key), len(names))]


KINDS = {"HashRing": (ringkit.HashRing, ring_model),
         "Rendezvous": (ringkit.Rendezvous, rendezvous_model),
         "JumpHash": (ringkit.JumpHash, jump_model)}


def owners(placement: Any, keys: Sequence[str], codes: dict[str, int]) -> np.ndarray:
    """The owner of each key as a code of its name, comparable across placements."""
    lut = np.array([codes[name] for name in placement.nodes], dtype=np.int32)
    return lut[placement.get_many(keys)]


def movement(kind: str, names: list[str], keys: Sequence[str]) -> dict[str, float]:
    """The fraction of keys whose node changes when one node is added and when one is removed
    (JumpHash: the last, and the first)."""
    make = KINDS[kind][0]
    codes = {name: i for i, name in enumerate([*names, NEW])}
    before = owners(make(names), keys, codes)

    def moved(after_names: list[str]) -> float:
        return float(np.mean(owners(make(after_names), keys, codes) != before))

    out = {"moved_add": moved([*names, NEW])}
    if kind == "JumpHash":
        out["moved_remove_last"] = moved(names[:-1])
        out["moved_remove_first"] = moved(names[1:])
    else:
        out["moved_remove"] = moved(names[1:])
    return out


def memory(placement: Any) -> tuple[int, str]:
    """Bytes the placement holds beyond its node names, and what they are."""
    n = len(placement.nodes)
    if isinstance(placement, ringkit.HashRing):
        return placement.nbytes, "points, owners and lookup index (HashRing.nbytes)"
    if isinstance(placement, ringkit.Rendezvous):
        state = placement._placement_state
        assert state.node_seeds_array.nbytes + state.weights_array.nbytes == 16 * n
        return 16 * n, "one uint64 seed and one float64 weight per node"
    return 0, "none: the node names only"


def choose_params(batch: bool) -> list[Any]:
    op = ("get_many", "1,000,000 short str keys in one call") if batch else \
        ("get(str)", "100,000 short str keys, one call per key in a Python loop")
    return [pytest.param(kind, n, id=f"{kind}-{n}",
                         marks=bench(f"which placement, {op[0]}: HashRing, Rendezvous or "
                                     f"JumpHash, {n} nodes, {op[1]}"))
            for n in (10, 100) for kind in KINDS]


@pytest.mark.parametrize(("kind", "n"), choose_params(batch=False))
def test_choose_get(measure: Any, loop_keys: list[str], kind: str, n: int) -> None:
    make, model = KINDS[kind]
    placement = make(NAMES[:n])
    check_sample(placement.get, model(NAMES[:n]), loop_keys)
    # Rendezvous is the row the group's summary shows, the other two its references.
    measure(lookup_loop, loop_keys, placement.get, label=f"ringkit {kind}.get", n_keys=N_LOOP,
            reference=kind != "Rendezvous")


@pytest.mark.parametrize(("kind", "n"), choose_params(batch=True))
def test_choose_get_many(measure: Any, benchmark: Any, short_str_keys: list[str], kind: str,
                         n: int) -> None:
    make, _ = KINDS[kind]
    placement = make(NAMES[:n])
    check_batch(placement, short_str_keys)
    measure(placement.get_many, short_str_keys, label=f"ringkit {kind}.get_many",
            n_keys=N_BATCH, reference=kind != "Rendezvous")
    # Not timed: what a change of nodes moves, and the memory.
    nbytes, what = memory(placement)
    benchmark.extra_info.update(movement(kind, NAMES[:n], short_str_keys), n_nodes=n,
                                memory_bytes=nbytes, memory=what)
