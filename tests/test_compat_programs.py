"""``ringkit.compat`` against the real programs, key by key: every key must sit where the
program put it, 100 % agreement, or the test fails and names the first keys that disagree.

* twemproxy: memcached servers behind nutcracker, one pool per configuration (1, 2, 25, 50,
  61, 100 and 200 servers; every hash of ``ringkit.compat.HASHES``, ketama and modula; equal
  and unequal weights; servers named "host:port", "host" on port 11211 and by an explicit name;
  ``hash_tag``). Keys are ``set`` through each pool, then every memcached is read directly
  (``lru_crawler metadump all``): the server holding a key is nutcracker's choice, compared with
  ``compat.twemproxy(<the YAML file nutcracker ran>, pool=...)`` (``get`` and ``get_many``).
* libmemcached through pylibmc: ``Client.hash(key)`` (memcached_generate_hash: the index of
  the server libmemcached sends the key to) for thousands of keys per configuration, and, for a
  subset, keys stored through pylibmc on the real servers and read back the same way, compared
  with ``compat.libmemcached(...)``. pylibmc runs in child processes (libmemcached aborts or
  overruns its buffers on some configurations; a crash must not take pytest down): this
  interpreter's pylibmc, and the interpreters listed in ``RINGKIT_PYLIBMC_PYTHONS``
  (os.pathsep-separated), each with whatever libmemcached its pylibmc is linked to -- so one run
  can prove the model on libmemcached 1.0.16 (the pylibmc 1.6.3 cp311 wheel) and on 1.1.4
  (pylibmc built on Debian 12's libmemcached-dev). With RINGKIT_LIBMEMCACHED_VERSION set, this
  interpreter's pylibmc must be linked to that version.

Last run against (Debian 12, x86-64, 2 cores): nutcracker 0.5.0 (Debian 0.5.0+dfsg-2),
memcached 1.6.18 (Debian 1.6.18-1+deb12u1), pylibmc 1.6.3 on libmemcached 1.0.16 (its cp311
wheel) and on libmemcached 1.1.4 (Debian 1.1.4-1). Each test prints its agreement lines
(``pytest -s`` or ``-rA`` shows them).

Needs Linux (servers on port 11211 are told apart by loopback alias addresses 127.A.B.i),
memcached, nutcracker, pylibmc and PyYAML. What is missing skips its tests, and fails them under
RINGKIT_STRICT=1 (as tests/conftest.py does for redis-server): CI never passes by skipping.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import memcached_procs  # tests/conftest.py registers the helper
import pytest

from ringkit import compat

SERVER_COUNTS = [1, 2, 25, 50, 61, 100, 200]
FLEET = max(SERVER_COUNTS)
PARALLEL = 3          # nutcracker processes (or pylibmc children) at work at once
#: Unequal weights, cycled over a pool's servers: the 1, 1, 1, 10, 12 pattern, listed heavy
#: server first. libmemcached 1.0.16 with ``ketama`` sizes its continuum buffer at 100 points
#: per server and switches to the weighted continuum (up to 160 per server) at the first weight
#: > 1; listed 1, 1, 1, 10, 12, 11 servers overrun that buffer (glibc: "mremap_chunk(): invalid
#: pointer", the process dies). Listed first, the buffer is sized for weighted points at once.
UNEQUAL = (10, 1, 1, 1, 12)


def _weights(kind: str, n: int) -> list[int]:
    return [1] * n if kind == "equal" else [UNEQUAL[j % len(UNEQUAL)] for j in range(n)]


# =============================================================================================
# keys
# =============================================================================================

_TEXT = "éßüñçøÆΩπЖжд中文字日本語한국어🙂🚀€ℝ∑"
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
# What a memcached text-protocol key may hold (through nutcracker and libmemcached alike): any
# byte but NUL, space, CR and LF; at most 250 bytes.
_KEY_BYTES = bytes(b for b in range(1, 256) if b not in b" \r\n")
_HIGH_BYTES = bytes(range(0x80, 0x100))


def _valid(key: bytes) -> bool:
    return 0 < len(key) <= 250 and not any(c in key for c in b" \r\n\x00")


class KeySource:
    """Keys of assorted shapes, never the same key twice in a run: every memcached is shared by
    all the pools and clients, so the server that holds a key names the one placement that put
    it there."""

    def __init__(self) -> None:
        self.used: set[bytes] = set()

    def make(self, seed: str, count: int, tag: bytes | None = None) -> list[bytes]:
        rng = random.Random(seed)
        shapes = ["ascii", "ascii", "utf8", "utf8", "high", "bytes", "long", "short", "digits"]
        if tag is not None:
            shapes += ["tag", "tag", "tag", "tag_empty", "tag_open", "tag_two", "tag_reversed"]
        out: list[bytes] = []
        while len(out) < count:
            shape = rng.choice(shapes)
            if shape == "ascii":
                tail = "".join(rng.choices(_ALNUM, k=rng.randrange(12)))
                key = f"user:{rng.randrange(10**9)}:{tail}".encode()
            elif shape == "utf8":     # UTF-8 text with non-ASCII characters
                key = "".join(rng.choices(_TEXT + _ALNUM, k=rng.randrange(1, 24))).encode()
            elif shape == "high":     # bytes >= 0x80 only (mostly not UTF-8)
                key = bytes(rng.choices(_HIGH_BYTES, k=rng.randrange(1, 40)))
            elif shape == "bytes":
                key = bytes(rng.choices(_KEY_BYTES, k=rng.randrange(1, 80)))
            elif shape == "long":
                key = bytes(rng.choices(_KEY_BYTES, k=rng.randrange(200, 251)))
            elif shape == "short":
                key = bytes(rng.choices(_KEY_BYTES, k=rng.randrange(1, 5)))
            elif shape == "digits":
                key = b"%d" % rng.randrange(10**rng.randrange(1, 15))
            else:
                assert tag is not None
                open_, close = tag[:1], tag[1:]
                inner = "".join(rng.choices(_ALNUM + _TEXT, k=rng.randrange(1, 10))).encode()
                pad = lambda: "".join(rng.choices(_ALNUM, k=rng.randrange(0, 8))).encode()  # noqa: E731
                key = {
                    "tag": pad() + open_ + inner + close + pad(),
                    "tag_empty": pad() + open_ + close + inner,
                    "tag_open": pad() + open_ + inner,
                    "tag_two": open_ + inner + close + pad() + open_ + pad() + close,
                    "tag_reversed": pad() + close + inner + open_ + pad(),
                }[shape]
            if _valid(key) and key not in self.used:
                self.used.add(key)
                out.append(key)
        return out


KEYS = KeySource()


def _as_client_key(key: bytes, j: int) -> bytes | str:
    """Every third key that is UTF-8 is passed as str (clients send str as UTF-8)."""
    if j % 3 == 0:
        try:
            return key.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return key


# =============================================================================================
# the memcached fleet, shared by the twemproxy and libmemcached runs
# =============================================================================================


@dataclass
class Fleet:
    servers: list[Any]     # memcached_procs.MemcachedProc: 127.0.0.1:<port> and <net>.<i>:11211
    net: str

    def alias(self, index: int) -> str:
        """The loopback alias on which server `index` also listens on port 11211."""
        return f"{self.net}.{index + 1}"

    def dump(self) -> dict[bytes, list[tuple[str, int]]]:
        """key -> the (127.0.0.1, port) address of every server holding it."""
        where: dict[bytes, list[tuple[str, int]]] = defaultdict(list)
        for server in self.servers:
            for key in server.keys():
                where[key].append(server.address)
        return where


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):  # type: ignore[no-untyped-def]
    """FLEET memcached processes (memcached 1.6.18 here), each on 127.0.0.1:<free port> and on
    <alias net>.<i>:11211; killed by pid at the end of the module."""
    if not sys.platform.startswith("linux"):
        memcached_procs.missing("the memcached fleet needs Linux loopback aliases "
                                "(127.A.B.i:11211)")
    memcached_procs.require_program("memcached")
    net = memcached_procs.free_alias_net(FLEET)
    servers: list[Any] = []
    try:
        servers = memcached_procs.start_memcached(FLEET, tmp_path_factory.mktemp("memcached"),
                                                  alias_net=net)
        yield Fleet(servers, net)
    finally:
        memcached_procs.stop_all(servers)


@dataclass
class Agreement:
    """Keys compared for one configuration, and the ones that disagree."""

    label: str
    keys: int = 0          # keys placed by the program
    total: int = 0         # comparisons: each key with get_many and with get
    bad: list[tuple[Any, ...]] = field(default_factory=list)

    def compare(self, context: str, keys: Sequence[Any], real: Sequence[Any], *,
                new_keys: bool = True, **answers: Sequence[Any]) -> None:
        """`real`: the program's server for each key; `answers`: ringkit.compat's, by how it
        was asked (new_keys=False: these keys were counted already, placed another way)."""
        self.keys += len(keys) if new_keys else 0
        for how, model in answers.items():
            assert len(model) == len(keys), how
            for key, want, got in zip(keys, real, model):
                self.total += 1
                if want != got:
                    self.bad.append((f"{context} {how}", key, want, got))

    def check(self) -> None:
        agree = self.total - len(self.bad)
        print(f"AGREEMENT {self.label}: {self.keys} keys, {agree}/{self.total} lookups agree "
              f"({100.0 * agree / max(1, self.total):.2f} %)")
        assert self.total > 0, f"{self.label}: no key compared"
        if self.bad:
            first = "\n".join(f"  {context}: key {key!r}: program {want!r}, ringkit.compat "
                              f"{got!r}" for context, key, want, got in self.bad[:5])
            pytest.fail(f"{self.label}: {len(self.bad)} of {self.total} keys placed elsewhere "
                        f"than the program placed them; first:\n{first}", pytrace=False)


# =============================================================================================
# twemproxy (nutcracker)
# =============================================================================================

HASHES = list(compat.HASHES)
DISTRIBUTIONS = ["ketama", "modula"]
NAMINGS = ("hostport", "default_port", "named")


@dataclass
class TwemproxyPool:
    name: str                           # the pool's name in the YAML
    conf: dict[str, Any]                # hash, distribution, hash_tag, servers
    server_of: dict[str, tuple[str, int]]   # server name, as nutcracker names it -> memcached
    keys: list[bytes]
    label: str
    n: int


def _name_for(rng: random.Random, taken: set[str]) -> str:
    while True:
        name = "".join(rng.choices(_ALNUM + "._-", k=rng.randint(1, 20)))
        if name not in taken:
            taken.add(name)
            return name


def _twemproxy_pool(fleet: Fleet, name: str, n: int, weights: list[int], naming: str,
                    keys: int, **settings: Any) -> TwemproxyPool:
    """A pool over n distinct servers of the fleet (in random order). naming: every server as
    "127.0.0.1:port:w" ("hostport"), as "<alias>:11211:w" ("default_port"), with an explicit
    name ("named"), or the three in turn ("mixed")."""
    rng = random.Random(f"twemproxy-{name}")
    chosen = rng.sample(range(FLEET), n)
    specs: list[str] = []
    server_of: dict[str, tuple[str, int]] = {}
    taken: set[str] = set()
    for j, (index, weight) in enumerate(zip(chosen, weights)):
        server = fleet.servers[index]
        form = NAMINGS[j % 3] if naming == "mixed" else naming
        if form == "default_port":
            spec, server_name = f"{fleet.alias(index)}:11211:{weight}", fleet.alias(index)
        else:
            spec, server_name = f"127.0.0.1:{server.port}:{weight}", f"127.0.0.1:{server.port}"
        if form == "named":
            server_name = _name_for(rng, taken)
            spec += f" {server_name}"
        specs.append(spec)
        server_of[server_name] = server.address
    conf = {key: value for key, value in settings.items() if value is not None}
    conf["timeout"] = 10000
    conf["servers"] = specs
    tag = settings.get("hash_tag")
    label = (f"twemproxy n={n} hash={settings.get('hash')} "
             f"distribution={settings.get('distribution')} naming={naming} "
             f"weights={'equal' if set(weights) == {1} else 'unequal'}"
             + (f" hash_tag={tag}" if tag else ""))
    return TwemproxyPool(name, conf, server_of,
                         KEYS.make(name, keys, None if tag is None else tag.encode()), label, n)


def _matrix_keys(n: int) -> int:
    return 500 if n <= 2 else 2000


def _twemproxy_matrix(fleet: Fleet) -> dict[tuple[str, str, str], list[TwemproxyPool]]:
    """(hash, distribution, weights) -> its pools, one per server count. Servers are named in
    turn "127.0.0.1:port", "<alias>" (port 11211) and by an explicit name, except in one pool
    of four, where all are "127.0.0.1:port"."""
    matrix: dict[tuple[str, str, str], list[TwemproxyPool]] = {}
    for h_index, hash_name in enumerate(HASHES):
        for dist in DISTRIBUTIONS:
            for kind in ("equal", "unequal"):
                pools = []
                for n in SERVER_COUNTS:
                    naming = "hostport" if (h_index + len(pools)) % 4 == 3 else "mixed"
                    pools.append(_twemproxy_pool(
                        fleet, f"{hash_name}_{dist}_{kind}_n{n}", n, _weights(kind, n), naming,
                        _matrix_keys(n), hash=hash_name, distribution=dist))
                matrix[(hash_name, dist, kind)] = pools
    return matrix


#: Extra pools: hash_tag, and each naming rule alone. (hash, distribution, n, weights, naming,
#: hash_tag); hash None leaves "hash:" out (nutcracker's default, fnv1a_64), distribution None
#: leaves "distribution:" out (ketama).
TWEMPROXY_EXTRAS = [
    ("fnv1a_64", "ketama", 25, "unequal", "mixed", "{}"),
    ("md5", "modula", 61, "equal", "mixed", "{}"),
    ("murmur", "ketama", 50, "equal", "named", "$$"),
    ("crc32a", "modula", 25, "unequal", "default_port", "::"),
    ("hsieh", "ketama", 200, "unequal", "mixed", "[]"),
    ("one_at_a_time", "ketama", 100, "unequal", "named", None),
    ("jenkins", "modula", 100, "unequal", "named", None),
    ("fnv1_32", "ketama", 61, "unequal", "default_port", None),
    ("crc16", "modula", 50, "equal", "default_port", None),
    (None, None, 50, "unequal", "mixed", None),
    (None, "modula", 25, "equal", "named", None),
]


def _extra_id(extra: tuple[Any, ...]) -> str:
    h, dist, n, kind, naming, tag = extra
    return f"{h or 'default'}-{dist or 'default'}-n{n}-{kind}-{naming}" + (
        f"-tag{tag}" if tag else "")


@dataclass
class TwemproxyRun:
    matrix: dict[tuple[str, str, str], list[TwemproxyPool]]
    extras: dict[str, TwemproxyPool]
    config_path: dict[str, str]         # pool name -> the YAML file nutcracker ran
    where: dict[bytes, list[tuple[str, int]]]
    seconds: float


@pytest.fixture(scope="module")
def twemproxy_run(fleet, tmp_path_factory):  # type: ignore[no-untyped-def]
    """Every pool's keys set through nutcracker (one nutcracker per hash, ~30 pools each, so
    that its connections stay well under the file limit), then the fleet dumped once."""
    memcached_procs.require_program("nutcracker")
    if importlib.util.find_spec("yaml") is None:
        memcached_procs.missing("PyYAML is not installed (compat.twemproxy reads the YAML "
                                "file with it)")
    started = time.monotonic()
    matrix = _twemproxy_matrix(fleet)
    extras = {}
    for number, extra in enumerate(TWEMPROXY_EXTRAS):
        h, dist, n, kind, naming, tag = extra
        extras[_extra_id(extra)] = _twemproxy_pool(
            fleet, f"extra_{number}", n, _weights(kind, n), naming, 2000, hash=h,
            distribution=dist, hash_tag=tag)
    groups: list[list[TwemproxyPool]] = []
    for hash_name in HASHES:
        groups.append([pool for (h, _, _), pools in matrix.items() if h == hash_name
                       for pool in pools])
    groups.append(list(extras.values()))
    config_path: dict[str, str] = {}
    workdirs = [tmp_path_factory.mktemp(f"nutcracker{number}") for number in range(len(groups))]

    # every listen port chosen at once (distinct), and chosen again if another process took one
    all_ports = memcached_procs.free_ports(sum(len(group) for group in groups))

    def run_group(number: int) -> None:
        group = groups[number]
        first = sum(len(g) for g in groups[:number])
        ports = all_ports[first:first + len(group)]
        for attempt in range(4):
            pools = {pool.name: {"listen": f"127.0.0.1:{port}", **pool.conf}
                     for pool, port in zip(group, ports)}
            proxy = memcached_procs.NutcrackerProc(pools, workdirs[number] / f"try{attempt}")
            try:
                proxy.start()
                break
            except RuntimeError:
                if attempt == 3:
                    raise
                ports = memcached_procs.free_ports(len(group))
        try:
            for pool in group:
                memcached_procs.set_keys(proxy.pool_address(pool.name), pool.keys)
                if pool.name.startswith("extra_"):      # the file nutcracker ran, all pools
                    config_path[pool.name] = str(proxy.config_path)
                else:                 # the same YAML, this pool alone (PyYAML is slow)
                    path = workdirs[number] / f"{pool.name}.yml"
                    path.write_text(memcached_procs.nutcracker_yaml({pool.name: pools[pool.name]}))
                    config_path[pool.name] = str(path)
        finally:
            proxy.kill()

    # a few nutcrackers at a time: the time goes into the proxies and servers, not into Python
    with ThreadPoolExecutor(PARALLEL) as pool_runner:
        list(pool_runner.map(run_group, range(len(groups))))
    return TwemproxyRun(matrix, extras, config_path, fleet.dump(), time.monotonic() - started)


def _holders(keys: Sequence[bytes | str], where: dict[bytes, list[tuple[str, int]]],
             name_of: dict[tuple[str, int], str]) -> list[str]:
    """For each key, the name (as the program names it) of the one server holding it."""
    out = []
    for key in keys:
        found = where.get(key.encode() if isinstance(key, str) else key, [])
        if len(found) != 1:
            out.append(f"<key on {len(found)} servers: {found}>")
        else:
            out.append(name_of.get(found[0], f"<server {found[0]} is not in the pool>"))
    return out


def _check_twemproxy_pool(run: TwemproxyRun, pool: TwemproxyPool, agreement: Agreement) -> None:
    placement = compat.twemproxy(run.config_path[pool.name], pool=pool.name)   # the YAML file
    assert sorted(placement.nodes) == sorted(pool.server_of), pool.label
    name_of = {address: name for name, address in pool.server_of.items()}
    real = _holders(pool.keys, run.where, name_of)
    many = [placement.nodes[i] for i in placement.get_many(pool.keys)]
    client_keys = [_as_client_key(key, j) for j, key in enumerate(pool.keys)]
    agreement.compare(pool.label, pool.keys, real, get_many=many,
                      get=[placement.get(key) for key in client_keys])


@pytest.mark.parametrize("weights", ["equal", "unequal"])
@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
@pytest.mark.parametrize("hash_name", HASHES)
def test_twemproxy_places_every_key_like_nutcracker(twemproxy_run, hash_name, distribution,  # type: ignore[no-untyped-def]
                                                    weights):
    """nutcracker 0.5.0 (Debian 0.5.0+dfsg-2) in front of memcached 1.6.18: one pool per
    server count (1, 2, 25, 50, 61, 100, 200), 500 keys (1-2 servers) or 2000 keys each."""
    pools = twemproxy_run.matrix[(hash_name, distribution, weights)]
    agreement = Agreement(f"twemproxy hash={hash_name} distribution={distribution} "
                          f"weights={weights} n={[pool.n for pool in pools]}")
    for pool in pools:
        _check_twemproxy_pool(twemproxy_run, pool, agreement)
    agreement.check()


@pytest.mark.parametrize("extra", TWEMPROXY_EXTRAS, ids=_extra_id)
def test_twemproxy_hash_tag_and_naming_like_nutcracker(twemproxy_run, extra):  # type: ignore[no-untyped-def]
    """nutcracker 0.5.0 + memcached 1.6.18: hash_tag pools (keys with the tag, an empty tag,
    no closing character, two tags, the characters reversed), pools whose servers are all
    named, all on port 11211 (named "host" alone), and pools without "hash:" or
    "distribution:" lines (nutcracker's defaults); 2000 keys each."""
    pool = twemproxy_run.extras[_extra_id(extra)]
    agreement = Agreement(pool.label)
    _check_twemproxy_pool(twemproxy_run, pool, agreement)
    agreement.check()


def test_twemproxy_run_stored_each_key_once_and_reached_every_server(twemproxy_run):  # type: ignore[no-untyped-def]
    """Every key sent through nutcracker was stored, on exactly one memcached, and the keys of
    each 200-server pool (equal weights) reached at least 180 of its servers (so no placement
    passed by sending everything to a few servers)."""
    run = twemproxy_run
    pools = [pool for pools in run.matrix.values() for pool in pools] + list(run.extras.values())
    sent = {key for pool in pools for key in pool.keys}
    assert len(sent) == sum(len(pool.keys) for pool in pools)
    stored = {key for key in run.where if key in sent}
    assert stored == sent
    assert all(len(run.where[key]) == 1 for key in sent)
    for (hash_name, _, kind), pools_ in run.matrix.items():
        if hash_name not in ("crc16", "crc32") and kind == "equal":
            big = pools_[-1]
            assert big.n == 200
            reached = {run.where[key][0] for key in big.keys}
            assert len(reached) >= 180, big.label      # 15 keys a server on average
    print(f"twemproxy run: {len(pools)} pools, {len(sent)} keys, {run.seconds:.1f} s")


# =============================================================================================
# libmemcached through pylibmc, in child processes
# =============================================================================================

#: Every key hash pylibmc accepts ("hsieh" is not compiled into libmemcached).
LIBMC_HASHES = ["default", "md5", "crc", "fnv1_64", "fnv1a_64", "fnv1_32", "fnv1a_32", "murmur",
                "jenkins"]
#: libmemcached 1.1.4 aborts (an assertion in update_continuum) when a consistent distribution
#: holds more than 100 servers.
LIBMC_114_MAX = 100
HASH_KEYS = 3000               # keys asked of Client.hash per configuration
STORED_COUNTS = (2, 61, 200)   # these server counts also store keys (200 -> 100 on 1.1.4)
STORED_KEYS = 800
CONSTRUCT_HASH_COUNTS = (25, 61)

#: A child process: builds each job's pylibmc.Client (or reuses the previous job's, when it has
#: the same servers and behaviors: libmemcached rebuilds its continuum after every server it
#: adds, which takes a second for 200 servers), applies the behaviors to set afterwards, answers
#: Client.hash for the keys and stores them when asked; one JSON line per job. A job that kills
#: it (abort, segfault) is found by the parent from the "start" line it printed last, and the
#: child is started again after it.
_WORKER = r"""
import json, sys
import pylibmc
with open(sys.argv[1]) as f:
    payload = json.load(f)
def decode(k):
    return k[1] if k[0] == "s" else bytes.fromhex(k[1])
common = [decode(k) for k in payload["common"]]
print(json.dumps({"pylibmc": pylibmc.__version__,
                  "libmemcached": pylibmc.libmemcached_version}), flush=True)
built, client, modified = None, None, False
for i in range(int(sys.argv[2]), len(payload["jobs"])):
    job = payload["jobs"][i]
    print(json.dumps({"start": i}), flush=True)
    config = json.dumps([job["servers"], job["behaviors"]])
    if config != built or (modified and not job["after"]):
        client = pylibmc.Client(job["servers"], behaviors=job["behaviors"])
        built, modified = config, False
    if job["after"]:
        client.behaviors = job["after"]       # set after the servers were added
        modified = True
    result = {"i": i, "hash": [client.hash(k) for k in common],
              "behaviors": {k: client.behaviors[k] for k in ("hash", "distribution")}}
    if job["store"]:
        keys = [decode(k) for k in job["keys"]]
        result["stored_hash"] = [client.hash(k) for k in keys]
        failed = client.set_multi({k: b"1" for k in keys})
        result["failed"] = [repr(k) for k in failed]
        client.disconnect_all()
    print(json.dumps(result), flush=True)
"""


def _encode_key(key: bytes | str) -> list[str]:
    return ["s", key] if isinstance(key, str) else ["b", key.hex()]


def _pythons() -> list[str]:
    extra = [p for p in os.environ.get("RINGKIT_PYLIBMC_PYTHONS", "").split(os.pathsep) if p]
    return [sys.executable] + [p for p in extra if p != sys.executable]


def _probe(python: str) -> str | None:
    """The libmemcached version `python`'s pylibmc is linked to, None without one."""
    try:
        child = subprocess.run(
            [python, "-c", "import pylibmc; print(pylibmc.libmemcached_version)"],
            capture_output=True, timeout=60, text=True)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return child.stdout.strip() if child.returncode == 0 else None


PYTHONS = _pythons()
VERSIONS = {python: _probe(python) for python in PYTHONS}
LIBMC_EXPECTED = os.environ.get("RINGKIT_LIBMEMCACHED_VERSION", "")


def _python_id(python: str) -> str:
    version = VERSIONS[python]
    return f"libmemcached-{version}" if version else f"no-pylibmc-{PYTHONS.index(python)}"


@dataclass
class LibmcCase:
    """One client configuration: pylibmc's server specs and behaviors, and the same as
    ``compat.libmemcached`` arguments."""

    n: int
    specs: list[str]                 # pylibmc: "host", "host:port" or "host:port:weight"
    names: list[str]                 # the servers as libmemcached names them, in spec order
    address: list[tuple[str, int]]   # memcached_procs address of each
    behaviors: dict[str, Any]
    after: dict[str, Any] | None
    servers: dict[str, int]          # compat.libmemcached(servers, ...)
    weighted: bool
    hash: str
    label: str
    stored: list[bytes | str] | None = None
    job: int = -1
    worker: int = 0


def _libmc_case(fleet: Fleet, weighted: bool, hash_name: str, kind: str, n: int,
                construct_hash: bool = False) -> LibmcCase:
    """n servers of the fleet, in random order (the same for every hash): in turn
    "127.0.0.1:port", "<alias>" (port 11211, named "<alias>") and "<alias>:11211", with
    ":weight" where it is not 1. weighted: pylibmc ``{"ketama_weighted": True}`` (which forces
    the key hash to md5), then the "hash" behavior set afterwards (but for "default"); else
    ``{"ketama": True, "hash": h}``. construct_hash: ``{"ketama_weighted": True, "hash": h}``
    (pylibmc sets the hash first, ketama_weighted then forces md5): weighted=True with the
    default hash."""
    rng = random.Random(f"libmc-{weighted}-{kind}-{n}")
    chosen = rng.sample(range(FLEET), n)
    specs, names, address = [], [], []
    servers: dict[str, int] = {}
    for j, (index, weight) in enumerate(zip(chosen, _weights(kind, n))):
        server = fleet.servers[index]
        if j % 3 == 0:
            host_port = f"127.0.0.1:{server.port}"
            names.append(host_port)
        else:
            host_port = fleet.alias(index) if j % 3 == 1 else f"{fleet.alias(index)}:11211"
            names.append(fleet.alias(index))
        if weight != 1:
            specs.append(f"{host_port}:{weight}" if ":" in host_port
                         else f"{host_port}:11211:{weight}")
        else:
            specs.append(host_port)
        address.append(server.address)
        servers[host_port] = weight
    if weighted:
        behaviors: dict[str, Any] = {"ketama_weighted": True}
        after = None
        if construct_hash:
            behaviors["hash"] = hash_name
        elif hash_name != "default":
            after = {"hash": hash_name}
    else:
        behaviors, after = {"ketama": True, "hash": hash_name}, None
    model_hash = "default" if construct_hash else hash_name
    label = (f"pylibmc.Client(<{n} servers, weights {kind}>, behaviors={behaviors})"
             + (f" then .behaviors = {after}" if after else "")
             + f" ~ compat.libmemcached(weighted={weighted}, hash={model_hash!r})")
    return LibmcCase(n, specs, names, address, behaviors, after, servers, weighted, model_hash,
                     label)


@dataclass
class LibmcRun:
    version: str
    pylibmc: str
    common: list[bytes | str]
    cases: dict[tuple[bool, str, str], list[LibmcCase]]
    crash_probes: list[LibmcCase]
    results: dict[tuple[int, int], dict[str, Any]]      # (worker, job) -> its answer
    crashes: dict[tuple[int, int], tuple[int, str]]     # (worker, job) -> (status, stderr)
    where: dict[bytes, list[tuple[str, int]]]
    seconds: float


def _run_worker(python: str, path: Any, total: int) -> tuple[
        dict[str, Any], dict[int, dict[str, Any]], dict[int, tuple[int, str]]]:
    """Run the jobs of the payload at `path` in children of `python`, past any that crash."""
    results: dict[int, dict[str, Any]] = {}
    crashes: dict[int, tuple[int, str]] = {}
    header: dict[str, Any] = {}
    start = 0
    while start < total:
        child = subprocess.run([python, "-c", _WORKER, str(path), str(start)],
                               capture_output=True, timeout=900)
        current = None
        for line in child.stdout.decode().splitlines():
            message = json.loads(line)
            if "libmemcached" in message:
                header = message
            elif "start" in message:
                current = message["start"]
            else:
                results[message["i"]] = message
                current = None
        if child.returncode == 0:
            break
        if current is None:
            raise RuntimeError(f"{python}: the pylibmc child failed outside a job "
                               f"({child.returncode}): {child.stderr.decode()[-2000:]}")
        crashes[current] = (child.returncode, child.stderr.decode(errors="replace")[-300:])
        start = current + 1
    return header, results, crashes


_LIBMC_RUNS: dict[str, LibmcRun] = {}


@pytest.fixture(scope="module")
def libmc_runs(fleet, tmp_path_factory):  # type: ignore[no-untyped-def]
    """python -> its LibmcRun, made on first use: every configuration's Client.hash answers
    and stored keys (PARALLEL children at once), then the fleet dumped."""

    def run(python: str) -> LibmcRun:
        if python in _LIBMC_RUNS:
            return _LIBMC_RUNS[python]
        version = VERSIONS[python]
        if version is None:
            memcached_procs.missing(f"{python} has no pylibmc (pip install pylibmc)")
        assert version is not None
        if python == sys.executable and LIBMC_EXPECTED and version != LIBMC_EXPECTED:
            pytest.fail(f"RINGKIT_LIBMEMCACHED_VERSION={LIBMC_EXPECTED} but pylibmc is linked "
                        f"to libmemcached {version}", pytrace=False)
        started = time.monotonic()
        top = LIBMC_114_MAX if version == "1.1.4" else FLEET
        counts = [n for n in SERVER_COUNTS if n <= top]
        stored_counts = {min(n, top) for n in STORED_COUNTS}
        common = [_as_client_key(key, j) for j, key in
                  enumerate(KEYS.make(f"libmc-common-{version}", HASH_KEYS))]
        # one job list per child; the cases sharing a client go to the same child, in order
        jobs: list[list[dict[str, Any]]] = [[] for _ in range(PARALLEL)]
        load = [0] * PARALLEL

        def add(group: list[LibmcCase], store: bool) -> None:
            worker = load.index(min(load))
            load[worker] += group[0].n ** 2
            for case in group:
                case.worker, case.job = worker, len(jobs[worker])
                if store and case.n > 1:
                    case.stored = [_as_client_key(key, j) for j, key in enumerate(
                        KEYS.make(f"libmc-store-{version}-{case.label}", STORED_KEYS))]
                jobs[worker].append({
                    "servers": case.specs, "behaviors": case.behaviors, "after": case.after,
                    "store": case.stored is not None,
                    "keys": None if case.stored is None else [_encode_key(k)
                                                              for k in case.stored]})

        cases: dict[tuple[bool, str, str], list[LibmcCase]] = defaultdict(list)
        for kind in ("equal", "unequal"):
            for n in sorted(counts, reverse=True):
                # weighted: one client per server list, its key hash changed afterwards
                group = [_libmc_case(fleet, True, h, kind, n) for h in LIBMC_HASHES]
                add(group, store=n in stored_counts)
                for case in group:
                    cases[(True, case.hash, kind)].append(case)
                if n in CONSTRUCT_HASH_COUNTS:
                    for h in LIBMC_HASHES[1:]:
                        case = _libmc_case(fleet, True, h, kind, n, construct_hash=True)
                        add([case], store=False)
                        cases[(True, h, kind)].append(case)
                for h in LIBMC_HASHES:         # ketama: the points are key hashes
                    case = _libmc_case(fleet, False, h, kind, n)
                    add([case], store=n in stored_counts)
                    cases[(False, h, kind)].append(case)
        probes: list[LibmcCase] = []
        if top < FLEET:       # the limit that keeps the bigger counts out: a crash
            for weighted in (True, False):
                for kind in ("equal", "unequal"):
                    probes.append(_libmc_case(fleet, weighted, "default", kind, top + 1))
                    add([probes[-1]], store=False)
        tmp = tmp_path_factory.mktemp("pylibmc")
        paths = []
        for worker, worker_jobs in enumerate(jobs):
            paths.append(tmp / f"jobs{worker}.json")
            paths[-1].write_text(json.dumps({"common": [_encode_key(k) for k in common],
                                             "jobs": worker_jobs}))
        with ThreadPoolExecutor(PARALLEL) as runner:
            answers = list(runner.map(lambda w: _run_worker(python, paths[w], len(jobs[w])),
                                      range(PARALLEL)))
        results = {(w, i): r for w, (_, rs, _) in enumerate(answers) for i, r in rs.items()}
        crashes = {(w, i): c for w, (_, _, cs) in enumerate(answers) for i, c in cs.items()}
        header = answers[0][0]
        assert header.get("libmemcached") == version, header
        result = LibmcRun(version, header["pylibmc"], common, dict(cases), probes, results,
                          crashes, fleet.dump(), time.monotonic() - started)
        _LIBMC_RUNS[python] = result
        return result

    return run


def _check_libmc_case(run: LibmcRun, case: LibmcCase, agreement: Agreement) -> None:
    job = (case.worker, case.job)
    assert job not in run.crashes, (
        f"{case.label}: pylibmc (libmemcached {run.version}) crashed: {run.crashes[job]}")
    result = run.results[job]
    expected_hash = "md5" if case.weighted and case.after is None else case.hash
    assert result["behaviors"]["hash"] == expected_hash, (case.label, result["behaviors"])
    placement = compat.libmemcached(case.servers, weighted=case.weighted, hash=case.hash)
    assert list(placement.nodes) == case.names, case.label
    label = f"{case.label} n={case.n}"
    asked = [(run.common, result["hash"])]
    if case.stored is not None:
        asked.append((case.stored, result["stored_hash"]))
    for keys, indices in asked:
        agreement.compare(f"{label} Client.hash", keys, [case.names[i] for i in indices],
                          get_many=[placement.nodes[i] for i in placement.get_many(keys)],
                          get=[placement.get(key) for key in keys])
    if case.stored is not None:
        assert not result["failed"], f"{label}: pylibmc could not store {result['failed'][:5]}"
        stored_real = _holders(case.stored, run.where, dict(zip(case.address, case.names)))
        stored_model = [placement.nodes[i] for i in placement.get_many(case.stored)]
        agreement.compare(f"{label} stored, read back", case.stored, stored_real,
                          new_keys=False, get_many=stored_model)


@pytest.mark.parametrize("kind", ["equal", "unequal"])
@pytest.mark.parametrize("hash_name", LIBMC_HASHES)
@pytest.mark.parametrize("weighted", [True, False], ids=["weighted", "ketama"])
@pytest.mark.parametrize("python", PYTHONS, ids=_python_id)
def test_libmemcached_places_every_key_like_pylibmc(libmc_runs, python, weighted, hash_name,  # type: ignore[no-untyped-def]
                                                    kind):
    """pylibmc 1.6.3 on the libmemcached of the test id (1.0.16: the cp311 wheel; 1.1.4:
    built on Debian 12's libmemcached-dev), memcached 1.6.18: every server count up to 200
    (100 on 1.1.4), 3000 keys through Client.hash each (every key hash; for the weighted
    continuum also the hash given at construction, which pylibmc overrides with md5), and for
    2, 61 and 200 (1.1.4: 100) servers 800 more keys, asked of Client.hash, stored through
    pylibmc and read back from the servers."""
    run = libmc_runs(python)
    cases = run.cases[(weighted, hash_name, kind)]
    agreement = Agreement(f"libmemcached {run.version} (pylibmc {run.pylibmc}) "
                          f"weighted={weighted} hash={hash_name} weights={kind} "
                          f"n={sorted({case.n for case in cases})}")
    for case in cases:
        _check_libmc_case(run, case, agreement)
    agreement.check()


@pytest.mark.parametrize("python", PYTHONS, ids=_python_id)
def test_libmemcached_run_stored_each_key_once(libmc_runs, python):  # type: ignore[no-untyped-def]
    """The keys stored through pylibmc sit on exactly one server each; libmemcached 1.1.4
    dies (abort) with one server past 100 in a ketama continuum, which is why its runs stop
    at 100 servers (compat.libmemcached models the placement of any size)."""
    run = libmc_runs(python)
    stored = [case for cases in run.cases.values() for case in cases if case.stored]
    assert stored
    for case in stored:
        for key in case.stored or []:
            raw = key.encode() if isinstance(key, str) else key
            assert len(run.where.get(raw, [])) == 1, (case.label, key)
    for probe in run.crash_probes:
        crash = run.crashes.get((probe.worker, probe.job))
        assert crash is not None and crash[0] < 0, f"{probe.label}: expected an abort"
    print(f"libmemcached {run.version}: {len(run.results)} configurations, "
          f"{sum(len(c.stored or []) for c in stored)} keys stored, {run.seconds:.1f} s, "
          f"{len(run.crash_probes)} configurations of {LIBMC_114_MAX + 1} servers aborted "
          f"as expected")
