"""Proof that the slow oracles of tests/compat_models.py equal the programs they model.

Every check is key by key, against the real thing:

* twemproxy: memcached servers behind one nutcracker with one pool per configuration (every
  hash x both distributions, 1..200 servers, equal and unequal weights, servers named and
  unnamed, on port 11211 and not, unix sockets, hash_tag on and off); keys are ``set``
  through each pool, then every memcached is read directly (``lru_crawler metadump all``) and
  each key must sit exactly on the server the model names, nowhere else.
* libmemcached through pylibmc: ``Client.hash(key)`` (memcached_generate_hash: the index of
  the server libmemcached would use) for every hash pylibmc accepts, ketama / ketama_weighted /
  distribution behaviors, weights and naming; and keys stored through pylibmc on the real
  servers, read back the same way. The model used is the one of the libmemcached pylibmc is
  linked to (``pylibmc.libmemcached_version``; 1.0.16 and 1.1.4 are modelled, any other
  version fails under RINGKIT_STRICT=1 and skips otherwise). ``nox -s tests`` gets 1.0.16 (the
  binary wheel of CPython 3.10/3.11 bundles it); ``nox -s libmemcached`` builds pylibmc from
  source on the system's libmemcached (Debian 12: 1.1.4). With RINGKIT_LIBMEMCACHED_VERSION
  set (as .ci/run does), the libmemcached tests fail unless pylibmc is linked to that version.
* uhashring and pymemcache: the packages themselves, for thousands of keys of every type.

Needs: memcached and nutcracker (Debian packages), pylibmc, uhashring, pymemcache, hypothesis.
A missing program or package skips its tests, and fails them under RINGKIT_STRICT=1 (as a
missing redis-server does, see tests/conftest.py): CI never passes by skipping them.
The module imports no ringkit; it loads its helpers by path, so it also runs standalone
(``--noconftest``).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import random
import sys
import time
from collections import defaultdict
from typing import Any

import compat_models as models  # tests/conftest.py registers the helpers
import memcached_procs
import pytest


def _require_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        memcached_procs.missing(f"python package {name!r} is not installed ({exc})")




# =============================================================================================
# keys
# =============================================================================================

_UNICODE = "éßüñçøÆΩπЖжд中文字日本語한국어🙂🚀€₤ℝ∑"
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
# bytes a memcached text-protocol key may hold here: no NUL, space, CR or LF
_KEY_BYTES = bytes(b for b in range(1, 256) if b not in b" \r\n")
_HIGH_BYTES = bytes(range(0x80, 0x100))
_PUNCT_BYTES = bytes(range(0x21, 0x7F))


def make_keys(rng: random.Random, count: int, prefix: bytes, tag: bytes | None = None,
              ) -> list[bytes]:
    """`count` distinct keys of assorted shapes, each starting with `prefix`, none longer than
    250 bytes: ASCII, punctuation, UTF-8, binary-ish, high bytes only, long, every length 1..13
    past the prefix (hash tails), and -- with a two-byte hash `tag` -- tags of every shape."""
    keys: set[bytes] = set()
    room = 250 - len(prefix)

    def text(n: int) -> str:
        return "".join(rng.choices(_ALNUM, k=n))

    def raw(alphabet: bytes, n: int) -> bytes:
        return bytes(rng.choices(alphabet, k=n))

    shapes = ["ascii", "punct", "utf8", "binary", "high", "long", "short"]
    if tag is not None:
        shapes += ["tag", "tag", "tag_empty", "tag_open", "tag_two", "tag_close_first"]
    while len(keys) < count:
        shape = rng.choice(shapes)
        if shape == "ascii":
            body = f"user:{rng.randrange(10**6)}:{text(rng.randrange(0, 12))}".encode()
        elif shape == "punct":
            body = raw(_PUNCT_BYTES, rng.randrange(1, 40))
        elif shape == "utf8":
            body = "".join(rng.choices(_UNICODE + _ALNUM, k=rng.randrange(1, 20))).encode()
        elif shape == "binary":
            body = raw(_KEY_BYTES, rng.randrange(1, 60))
        elif shape == "high":
            body = raw(_HIGH_BYTES, rng.randrange(1, 30))
        elif shape == "long":
            body = raw(_KEY_BYTES, rng.randrange(room - 40, room + 1))
        elif shape == "short":
            body = raw(_KEY_BYTES, rng.randrange(1, 14))
        else:
            assert tag is not None
            open_, close = tag[0:1], tag[1:2]
            inner = text(rng.randrange(1, 12)).encode()
            if shape == "tag":
                body = text(rng.randrange(0, 6)).encode() + open_ + inner + close + \
                    text(rng.randrange(0, 6)).encode()
            elif shape == "tag_empty":
                body = text(3).encode() + open_ + close + inner + close
            elif shape == "tag_open":
                body = text(3).encode() + open_ + inner
            elif shape == "tag_two":
                body = open_ + inner + close + open_ + text(4).encode() + close
            else:
                body = close + inner + open_ + text(4).encode() + close
        key = (prefix + body)[:250]
        if key.rstrip() and not any(c in key for c in b" \r\n\x00"):
            keys.add(key)
    out = sorted(keys)
    rng.shuffle(out)
    return out


# =============================================================================================
# the memcached fleet (shared by the twemproxy and libmemcached proofs)
# =============================================================================================

FLEET = 200          # TCP memcached servers: 127.0.0.1:<port> and <alias net>.<i>:11211
UNIX_FLEET = 3       # memcached servers on unix sockets


class Fleet:
    def __init__(self, tcp: list[Any], unix: list[Any], net: str) -> None:
        self.tcp = tcp
        self.unix = unix
        self.net = net

    def dump(self) -> dict[bytes, list[Any]]:
        """key -> every server address holding it (TCP servers by 127.0.0.1 address)."""
        where: dict[bytes, list[Any]] = defaultdict(list)
        for server in self.tcp + self.unix:
            for key in server.keys():
                where[key].append(server.address)
        return where


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):  # type: ignore[no-untyped-def]
    memcached_procs.require_program("memcached")
    net = memcached_procs.free_alias_net(FLEET)
    workdir = tmp_path_factory.mktemp("memcached")
    tcp: list[Any] = []
    unix: list[Any] = []
    try:
        tcp = memcached_procs.start_memcached(FLEET, workdir, alias_net=net)
        unix = memcached_procs.start_memcached(UNIX_FLEET, workdir, unix_socket=True)
        yield Fleet(tcp, unix, net)
    finally:
        memcached_procs.stop_all(tcp + unix)


# =============================================================================================
# twemproxy
# =============================================================================================

SERVER_COUNTS = [1, 2, 3, 5, 25, 50, 61, 100, 200]
HASH_SUBSET_COUNTS = [1, 3, 25]
SKEWED = [1, 1, 1, 10, 12]
NAME_CHARS = _ALNUM + "._-:"


def _weights(kind: str, n: int, rng: random.Random) -> list[int]:
    if kind == "equal":
        return [1] * n
    if kind == "equal5":
        return [5] * n
    if kind == "skewed":
        return [SKEWED[i % len(SKEWED)] for i in range(n)]
    return [rng.randint(1, 30) for _ in range(n)]


def _names(n: int, rng: random.Random) -> list[str]:
    names: set[str] = set()
    while len(names) < n:
        names.add("".join(rng.choice(NAME_CHARS) for _ in range(rng.randint(1, 24))))
    out = sorted(names)
    rng.shuffle(out)
    return out


def _twemproxy_cases() -> list[dict[str, Any]]:
    """One nutcracker pool per case; what varies rotates so that each hash meets each
    variant (weights, naming, hash_tag) across its server counts."""
    cases: list[dict[str, Any]] = []
    weight_kinds = ["equal", "skewed", "random", "equal5"]
    naming_kinds = ["hostport", "default_port", "named", "mixed"]
    tags = [None, "{}", None, "$$", None, "[]"]
    combos: list[tuple[str | None, int, str]] = []
    for h in models.TWEMPROXY_HASHES:
        for n in HASH_SUBSET_COUNTS:
            combos += [(h, n, "ketama"), (h, n, "modula")]
    for h in ("md5", None):          # None: no "hash:" line, nutcracker's default (fnv1a_64)
        for n in SERVER_COUNTS:
            if h == "md5" and n in HASH_SUBSET_COUNTS:
                continue
            combos += [(h, n, "ketama"), (h, n, "modula")]
    i = 0
    for h, n, dist in combos:
        for variant in range(2 if n > 1 else 1):
            cases.append({
                "id": f"{h or 'default'}-{dist}-n{n}-v{variant}-{i:03d}",
                "index": i,
                "hash": h,
                # variant 0 leaves "distribution:" out for ketama (the default), once in two
                "distribution": None if dist == "ketama" and variant == 0 and i % 2 else dist,
                "model_distribution": dist,
                "n": n,
                "weights": weight_kinds[(i + variant) % 4] if variant else "equal",
                "naming": naming_kinds[(i // 2 + variant) % 4],
                "hash_tag": tags[i % len(tags)] if variant else None,
                "unix": False,
            })
            i += 1
    for dist in ("ketama", "modula"):
        for h in (None, "md5", "murmur"):
            for naming in ("unnamed", "named"):
                cases.append({"id": f"unix-{h or 'default'}-{dist}-{naming}-{i:03d}",
                              "index": i, "hash": h, "distribution": dist,
                              "model_distribution": dist, "n": UNIX_FLEET,
                              "weights": "skewed" if naming == "named" else "equal",
                              "naming": naming, "hash_tag": None, "unix": True})
                i += 1
    return cases


TWEMPROXY_CASES = _twemproxy_cases()


def _twemproxy_pool(case: dict[str, Any], fleet: Fleet) -> tuple[dict[str, Any], dict[str, Any]]:
    """(nutcracker pool config without "listen", {server name -> memcached address})."""
    rng = random.Random(f"twemproxy-pool-{case['index']}")
    n = case["n"]
    weights = _weights(case["weights"], n, rng)
    specs: list[str] = []
    if case["unix"]:
        servers = list(fleet.unix)
        rng.shuffle(servers)
        names = _names(n, rng)
        for server, w, name in zip(servers, weights, names):
            spec = f"{server.socket_path}:{w}"
            specs.append(spec + (f" {name}" if case["naming"] == "named" else ""))
    else:
        chosen = rng.sample(range(FLEET), n)
        names = _names(n, rng)
        for j, (idx, w, name) in enumerate(zip(chosen, weights, names)):
            server = fleet.tcp[idx]
            naming = case["naming"]
            if naming == "mixed":
                naming = "named" if j % 2 else ("hostport" if j % 4 == 0 else "default_port")
            if naming == "default_port" or (naming == "named" and j % 3 == 0):
                spec = f"{fleet.net}.{idx + 1}:11211:{w}"
            else:
                spec = f"127.0.0.1:{server.port}:{w}"
            specs.append(spec + (f" {name}" if naming == "named" else ""))
    pool: dict[str, Any] = {}
    if case["hash"] is not None:
        pool["hash"] = case["hash"]
    if case["distribution"] is not None:
        pool["distribution"] = case["distribution"]
    if case["hash_tag"] is not None:
        pool["hash_tag"] = case["hash_tag"]
    pool["timeout"] = 10000
    pool["servers"] = specs
    address_of: dict[str, Any] = {}
    for spec in specs:
        parsed = models.TwemproxyServer.parse(spec)
        if parsed.port == 0:
            address_of[parsed.name.decode()] = parsed.address
        elif parsed.port == 11211:
            index = int(parsed.address.rsplit(".", 1)[1]) - 1
            address_of[parsed.name.decode()] = fleet.tcp[index].address
        else:
            address_of[parsed.name.decode()] = (parsed.address, parsed.port)
    return pool, address_of


def _twemproxy_keys(case: dict[str, Any]) -> list[bytes]:
    rng = random.Random(f"twemproxy-keys-{case['index']}")
    count = min(2400, max(400, 12 * case["n"]))
    tag = None if case["hash_tag"] is None else case["hash_tag"].encode()
    return make_keys(rng, count, b"T%03d." % case["index"], tag)


def _twemproxy_tie_names() -> tuple[str, str, int]:
    """Two server names whose ketama continuums (first 40 "name-i" strings, i.e. 160 points,
    what each of two equal-weight servers gets) share a point value."""
    seen: dict[int, str] = {}
    j = 0
    while True:
        name = f"tie{j}"
        for i in range(40):
            for value in models.ketama_md5_points(f"{name}-{i}".encode()):
                other = seen.get(value)
                if other is not None and other != name:
                    return other, name, value
                seen[value] = name
        j += 1


def _keys_in_tie_interval(pool: Any, value: int, prefix: bytes, want: int) -> list[bytes]:
    """Keys whose hash falls in (previous point, value]: they land on the tied point."""
    values = pool._values
    first = values.index(value)
    previous = values[first - 1] if first > 0 else -1
    assert first == 0 or previous < value
    keys: list[bytes] = []
    j = 0
    while len(keys) < want:
        key = prefix + b"%d" % j
        if previous < pool.key_hash(key) <= value:
            keys.append(key)
        j += 1
    return keys


#: Server names of the "long" pool: nutcracker writes each point name "name-i" into a
#: KETAMA_MAX_HOSTLEN (273) buffer, so every point name of the 300-byte server is the same 272
#: bytes, and those of the 270-byte one are cut after the first digit of i.
LONG_NAMES = ["T" * 300, "Tm" * 135, "Tshort"]
#: Server names of the "exact" pool: with hash md5 the key "name-i" hashes to the first MD5
#: word of "name-i", i.e. exactly onto that server's point (a point equal to the hash wins).
EXACT_NAMES = ["Texact-a", "Texact-b", "Texact-c", "Texact-d"]


def _twemproxy_extra_pools() -> dict[str, tuple[list[str], int, list[bytes]]]:
    """case id -> (server names, index of the first fleet server, keys); hash md5."""
    exact_keys = [f"{name}-{i}".encode() for name in EXACT_NAMES for i in range(40)]
    return {
        "long": (LONG_NAMES, 30, make_keys(random.Random("long"), 600, b"Tlong.")),
        "exact": (EXACT_NAMES, 40,
                  exact_keys + make_keys(random.Random("exact"), 200, b"Texact.")),
    }


class TwemproxyRun:
    def __init__(self) -> None:
        self.expected: dict[str, dict[bytes, Any]] = {}   # case id -> key -> address
        self.names: dict[str, dict[bytes, str]] = {}      # case id -> key -> model's name
        self.where: dict[bytes, list[Any]] = {}
        self.seconds = 0.0


@pytest.fixture(scope="module")
def twemproxy_run(fleet, tmp_path_factory):  # type: ignore[no-untyped-def]
    memcached_procs.require_program("nutcracker")
    started = time.monotonic()
    run = TwemproxyRun()
    pools: dict[str, dict[str, Any]] = {}
    plans: dict[str, tuple[Any, dict[str, Any], list[bytes]]] = {}
    for case in TWEMPROXY_CASES:
        pool, address_of = _twemproxy_pool(case, fleet)
        model = models.TwemproxyPool(pool["servers"], hash=pool.get("hash"),
                                     distribution=pool.get("distribution"),
                                     hash_tag=pool.get("hash_tag"))
        pools[case["id"]] = pool
        plans[case["id"]] = (model, address_of, _twemproxy_keys(case))
    # ties: two servers sharing a continuum point, listed in the YAML in the "wrong" order
    name_a, name_b, value = _twemproxy_tie_names()
    for variant, (first, second) in enumerate([(name_a, name_b), (name_b, name_a)]):
        case_id = f"tie-{variant}"
        specs = [f"127.0.0.1:{fleet.tcp[10 + variant].port}:1 {first}",
                 f"127.0.0.1:{fleet.tcp[20 + variant].port}:1 {second}"]
        pool = {"hash": "md5", "timeout": 10000, "servers": specs}
        model = models.TwemproxyPool(specs, hash="md5")
        address_of = {first: fleet.tcp[10 + variant].address,
                      second: fleet.tcp[20 + variant].address}
        keys = _keys_in_tie_interval(model, value, b"Tie%d." % variant, 25)
        keys += make_keys(random.Random(f"tie{variant}"), 200, b"Tie%d:" % variant)
        pools[case_id] = pool
        plans[case_id] = (model, address_of, keys)
    for case_id, (names, first_server, keys) in _twemproxy_extra_pools().items():
        specs = [f"127.0.0.1:{fleet.tcp[first_server + j].port}:1 {name}"
                 for j, name in enumerate(names)]
        pools[case_id] = {"hash": "md5", "timeout": 10000, "servers": specs}
        address_of = {name: fleet.tcp[first_server + j].address for j, name in enumerate(names)}
        plans[case_id] = (models.TwemproxyPool(specs, hash="md5"), address_of, keys)
    renamed = {f"pool_{k:03d}": pool for k, pool in enumerate(pools.values())}
    proxy = memcached_procs.start_nutcracker_on_free_ports(
        renamed, tmp_path_factory.mktemp("nutcracker"))
    try:
        for pool_name, case_id in zip(renamed, pools):
            model, address_of, keys = plans[case_id]
            memcached_procs.set_keys(proxy.pool_address(pool_name), keys)
            names = {key: model.server_name(key) for key in keys}
            run.names[case_id] = names
            run.expected[case_id] = {key: address_of[name] for key, name in names.items()}
    finally:
        proxy.kill()
    run.where = fleet.dump()
    run.seconds = time.monotonic() - started
    return run


def _check_placement(expected: dict[bytes, Any], where: dict[bytes, list[Any]],
                     names: dict[bytes, str]) -> None:
    wrong = []
    for key, address in expected.items():
        found = where.get(key, [])
        if found != [address]:
            wrong.append((key, names[key], address, found))
    assert not wrong, (f"{len(wrong)} of {len(expected)} keys not where the model puts them; "
                       f"first: {wrong[:5]}")


@pytest.mark.parametrize("case", TWEMPROXY_CASES + [{"id": i} for i in ("tie-0", "tie-1", "long",
                                                                        "exact")],
                         ids=lambda c: c["id"])
def test_twemproxy_model_places_every_key_like_nutcracker(case, twemproxy_run):  # type: ignore[no-untyped-def]
    run = twemproxy_run
    _check_placement(run.expected[case["id"]], run.where, run.names[case["id"]])


def test_twemproxy_run_used_every_server_and_stored_nothing_else(twemproxy_run):  # type: ignore[no-untyped-def]
    """Every key on the servers is one the pools stored, and big pools reached every server
    (so a model that sent everything to one server could not pass)."""
    sent = {key for expected in twemproxy_run.expected.values() for key in expected}
    stored = {key for key in twemproxy_run.where if key.startswith((b"T", b"Tie"))}
    assert stored == sent
    for case in TWEMPROXY_CASES:
        if case["n"] in (25, 50) and case["weights"] == "equal" and case["hash"] not in (
                "crc16", "crc32") and case["hash_tag"] is None:
            used = set(twemproxy_run.expected[case["id"]].values())
            assert len(used) == case["n"], case["id"]


def test_twemproxy_tie_goes_to_the_first_server_in_name_order(twemproxy_run):  # type: ignore[no-untyped-def]
    first, second, _ = _twemproxy_tie_names()
    winner = min(first, second, key=lambda s: (len(s), s))
    for variant in (0, 1):
        names = twemproxy_run.names[f"tie-{variant}"]
        tied = [name for key, name in names.items() if key.startswith(b"Tie%d." % variant)]
        assert set(tied) == {winner}
        assert set(names.values()) == {first, second}


def test_twemproxy_key_on_a_point_stays_on_that_point(twemproxy_run):  # type: ignore[no-untyped-def]
    """The "exact" pool's keys "name-i" hash onto a point of server "name" itself: the first
    point >= the hash is that point (a first point > the hash would be the next one)."""
    names = twemproxy_run.names["exact"]
    on_points = {key: name for key, name in names.items() if not key.startswith(b"Texact.")}
    assert len(on_points) == 40 * len(EXACT_NAMES)
    assert all(key.startswith(name.encode() + b"-") for key, name in on_points.items())


def test_twemproxy_long_names_share_their_points(twemproxy_run):  # type: ignore[no-untyped-def]
    """The 300-byte name has the 4 points of one cut name (repeated), the 270-byte one those
    of "name-" plus one digit: the short name, with all its 160 points, takes most keys."""
    names = list(twemproxy_run.names["long"].values())
    assert set(names) == set(LONG_NAMES)
    assert names.count("Tshort") > len(names) // 2


def test_twemproxy_model_refuses_random_and_unknown_settings():
    with pytest.raises(ValueError):
        models.TwemproxyPool(["127.0.0.1:11211:1"], distribution="random")
    with pytest.raises(ValueError):
        models.TwemproxyPool(["127.0.0.1:11211:1"], hash="sha1")
    with pytest.raises(ValueError):
        models.TwemproxyPool(["127.0.0.1:11211:1 a", "127.0.0.2:11211:1 a"])
    with pytest.raises(ValueError):
        models.TwemproxyServer.parse("127.0.0.1:11211")          # no weight
    with pytest.raises(ValueError):
        models.TwemproxyServer.parse("127.0.0.1:11211:0")        # zero weight


def test_twemproxy_server_naming():
    parse = models.TwemproxyServer.parse
    assert parse("10.0.0.1:11211:1").name == b"10.0.0.1"
    assert parse("10.0.0.1:11212:3").name == b"10.0.0.1:11212"
    assert parse("10.0.0.1:11211:1 cache-a").name == b"cache-a"
    assert parse("/run/mc.sock:2").name == b"/run/mc.sock:"
    assert parse("10.0.0.1:11212:3 x").pname == "10.0.0.1:11212:3"
    pool = models.TwemproxyPool(["b:1:1 bb", "a:1:1 ccc", "c:1:1 a"], distribution="modula")
    assert [s.name for s in pool.servers] == [b"a", b"bb", b"ccc"]   # length, then bytes


# =============================================================================================
# libmemcached through pylibmc
# =============================================================================================

LIBMC_HASHES = [h for h, f in models.LIBMEMCACHED_HASHES.items() if f is not None]


#: The libmemcached versions LibmemcachedClient models.
LIBMC_MODELLED = ("1.0.16", "1.1.4")
#: The version pylibmc must be linked to, when set (CI: a run meant to prove one model must not
#: quietly prove the other).
LIBMC_EXPECTED = os.environ.get("RINGKIT_LIBMEMCACHED_VERSION", "")


@pytest.fixture(scope="module")
def pylibmc():  # type: ignore[no-untyped-def]
    module = _require_module("pylibmc")
    linked = module.libmemcached_version
    if LIBMC_EXPECTED and linked != LIBMC_EXPECTED:
        pytest.fail(f"RINGKIT_LIBMEMCACHED_VERSION={LIBMC_EXPECTED} but pylibmc "
                    f"{module.__version__} ({module.__file__}) is linked to libmemcached "
                    f"{linked}", pytrace=False)
    if linked not in LIBMC_MODELLED:
        memcached_procs.missing(f"pylibmc is linked to libmemcached {linked}, which has no model "
                 f"(modelled: {', '.join(LIBMC_MODELLED)})")
    return module


def _libmc_version(pylibmc: Any) -> str:
    """The modelled libmemcached version pylibmc is linked to (the fixture checked it)."""
    version = str(pylibmc.libmemcached_version)
    assert version in LIBMC_MODELLED, version
    return version


def test_libmemcached_version_is_the_expected_one(pylibmc):  # type: ignore[no-untyped-def]
    """Which model the libmemcached tests of this run prove (shown with -v / -rA)."""
    version = _libmc_version(pylibmc)
    assert not LIBMC_EXPECTED or version == LIBMC_EXPECTED
    print(f"pylibmc {pylibmc.__version__}: libmemcached {version}")


def _libmc_servers(n: int, rng: random.Random, naming: str, weights: list[int],
                   fleet: Fleet | None = None) -> list[str]:
    """pylibmc server specs: "host:port[:weight]" or "host" (port 11211)."""
    chosen = rng.sample(range(FLEET), n)
    specs = []
    for j, (idx, w) in enumerate(zip(chosen, weights)):
        port = fleet.tcp[idx].port if fleet is not None else 20000 + idx
        net = fleet.net if fleet is not None else "127.9.9"
        default = naming == "default_port" or (naming == "mixed" and j % 2)
        if default and w == 1 and j % 3:
            spec = f"{net}.{idx + 1}"                     # port 11211 by default
        else:
            spec = f"{net}.{idx + 1}:11211" if default else f"127.0.0.1:{port}"
            if w != 1 or j % 4 == 1:
                spec += f":{w}"
        specs.append(spec)
    return specs


def _behavior_sets(h: str) -> list[dict[str, Any]]:
    other = LIBMC_HASHES[(LIBMC_HASHES.index(h) + 3) % len(LIBMC_HASHES)]
    return [
        {"hash": h},
        {"hash": h, "ketama": True},
        {"hash": h, "ketama_weighted": True},
        {"hash": h, "ketama": True, "ketama_hash": other},
        {"hash": h, "distribution": "consistent"},
        {"hash": h, "distribution": "consistent ketama spy"},
        {"hash": h, "ketama_weighted": False},
        {"hash": h, "ketama": True, "_sort_hosts": True},
        {"hash": h, "_sort_hosts": True},
        {"ketama_weighted": True, "distribution": "modula", "hash": h},
    ]


def _libmc_hash_cases() -> list[dict[str, Any]]:
    """Every hash at 1, 2, 3 and 25 servers, md5 and the default at every count; every
    behavior set at 25 servers (and up to 5 for md5/default), the main ones elsewhere."""
    cases = []
    i = 0
    for h in LIBMC_HASHES:
        full = h in ("md5", "default")
        counts = SERVER_COUNTS if full else [1, 2, 3, 25]
        for n in counts:
            if n == 1:
                chosen = [0, 1]
            elif n == 25 or (full and n <= 5):
                chosen = list(range(10))
            elif n >= 100:
                chosen = [0, 1, 2]
            else:
                chosen = [0, 1, 2, 4, 5, 6]
            for b, behaviors in enumerate(_behavior_sets(h)):
                if b not in chosen:
                    continue
                if n == 1:
                    kinds = ["equal"]
                elif n >= 100:      # a 200-server consistent client takes pylibmc ~1 s
                    kinds = ["equal", "random"] if b == 0 else [["random", "equal"][b - 1]]
                elif n == 25:
                    kinds = ["equal", ["skewed", "random"][(i + b) % 2]]
                else:
                    kinds = ["equal", "skewed", "random"]
                for weights in kinds:
                    cases.append({"id": f"{h}-n{n}-b{b}-{weights}-{i:04d}", "index": i,
                                  "n": n, "behaviors": behaviors, "weights": weights,
                                  "naming": ["hostport", "default_port", "mixed"][i % 3]})
                    i += 1
    return cases


LIBMC_HASH_CASES = _libmc_hash_cases()


def _pylibmc_hash_keys(rng: random.Random, count: int, prefix: bytes) -> list[Any]:
    keys: list[Any] = []
    for key in make_keys(rng, count, prefix):
        if rng.random() < 0.3:
            try:
                keys.append(key.decode("utf-8"))     # pylibmc encodes str as UTF-8
                continue
            except UnicodeDecodeError:
                pass
        keys.append(key)
    return keys


def test_libmemcached_hash_of_every_setting_equals_model(pylibmc):  # type: ignore[no-untyped-def]
    """``Client.hash(key)`` is memcached_generate_hash: the index of the server libmemcached
    picks. Thousands of configurations, hundreds of keys each; no server is contacted."""
    version = _libmc_version(pylibmc)
    checked = 0
    failures = []
    refused = []
    for case in LIBMC_HASH_CASES:
        rng = random.Random(f"libmc-hash-{case['index']}")
        weights = _weights(case["weights"], case["n"], rng)
        servers = _libmc_servers(case["n"], rng, case["naming"], weights)
        try:   # the model first: what it refuses would kill this process
            model = models.LibmemcachedClient(servers, case["behaviors"], version=version)
        except models.LibmemcachedRefused:
            refused.append((servers, case["behaviors"]))
            continue
        client = pylibmc.Client(servers, behaviors=case["behaviors"])
        keys = _pylibmc_hash_keys(rng, 250 if case["n"] < 100 else 400, b"H")
        for key in keys:
            got, want = client.hash(key), model.index(key)
            checked += 1
            if got != want:
                failures.append((case["id"], servers[:3], key, got, want))
                break
    assert not failures, f"{len(failures)} configurations differ; first: {failures[:3]}"
    assert checked > 100_000
    assert len(refused) < len(LIBMC_HASH_CASES) // 5
    for servers, behaviors in refused[::max(1, len(refused) // 8)]:
        assert _pylibmc_crashes(servers, behaviors), (servers[:3], behaviors)


def _pylibmc_crashes(servers: list[Any], behaviors: dict[str, Any]) -> bool:
    """Build the client in a child process (this python): True when the child dies by a
    signal (abort, segfault) instead of answering."""
    import json
    import subprocess

    code = ("import json, sys, pylibmc; servers, behaviors = json.loads(sys.argv[1]); "
            "print(pylibmc.Client(servers, behaviors=behaviors).hash('probe'))")
    child = subprocess.run([sys.executable, "-c", code, json.dumps([servers, behaviors])],
                           capture_output=True, timeout=60)
    return child.returncode < 0


def test_libmemcached_crashes_where_the_model_refuses(pylibmc):  # type: ignore[no-untyped-def]
    """1.1.4: a consistent distribution aborts past 100 servers, modula does not. 1.0.16:
    ``ketama`` plus one weight-10 server (the 4th) overruns the continuum buffer from 7 servers
    on (segfault); 6 do not, nor 11 whose first server is the heavy one."""
    version = _libmc_version(pylibmc)
    many = [f"127.0.0.1:{20000 + i}" for i in range(101)]
    def weighted(n: int, heavy: int = 3) -> list[str]:
        return [f"127.0.0.1:{20000 + i}" + (":10" if i == heavy else "") for i in range(n)]

    for servers, behaviors in [(many, {"ketama": True}), (many[:100], {"ketama": True}),
                               (many, {}), (many, {"ketama_weighted": True}),
                               (weighted(11), {"ketama": True}),
                               (weighted(6), {"ketama": True}),
                               # 1.0.16: the first overrun (7 servers), none when the weight
                               # comes first (the buffer is sized for weighted points)
                               (weighted(7), {"ketama": True}),
                               (weighted(11, heavy=0), {"ketama": True}),
                               (weighted(11), {"ketama_weighted": True})]:
        try:
            models.LibmemcachedClient(servers, behaviors, version=version)
            refused = False
        except models.LibmemcachedRefused:
            refused = True
        assert _pylibmc_crashes(servers, behaviors) == refused, (len(servers), behaviors)


def test_libmemcached_behaviors_as_pylibmc_reports_them(pylibmc):  # type: ignore[no-untyped-def]
    """The model's reading of the behaviors matches what libmemcached reports back."""
    servers = ["127.0.0.1:1", "127.0.0.1:2:3"]
    for behaviors in [{}, {"hash": "crc", "ketama_weighted": True}, {"ketama_weighted": False},
                      {"ketama": True, "hash": "fnv1_32"}, {"ketama": False},
                      {"distribution": "consistent ketama spy", "ketama": True}]:
        client = pylibmc.Client(servers, behaviors=behaviors)
        model = models.LibmemcachedClient(servers, behaviors)
        got = client.get_behaviors()
        assert got["hash"] == model.hash_name, behaviors
        assert got["distribution"] == model.distribution, behaviors


@pytest.mark.parametrize("distribution", ["consistent", "consistent ketama",
                                          "consistent weighted", "consistent ketama spy"])
def test_libmemcached_distribution_after_ketama_weighted(pylibmc, distribution):  # type: ignore[no-untyped-def]
    """``distribution`` is applied after ``ketama_weighted`` (which forced md5): "consistent"
    and "consistent ketama" clear the weighted flag (100 md5 points per server), "consistent
    weighted" keeps it, "consistent ketama spy" leaves it (equal weights: nothing else sets it).
    """
    version = _libmc_version(pylibmc)
    behaviors = {"ketama_weighted": True, "distribution": distribution}
    for n in (2, 5, 25):
        rng = random.Random(f"libmc-dist-{distribution}-{n}")
        servers = _libmc_servers(n, rng, "mixed", [1] * n)
        model = models.LibmemcachedClient(servers, behaviors, version=version)
        assert model.hash_name == "md5"
        assert model.weighted == (distribution in ("consistent weighted",
                                                   "consistent ketama spy"))
        client = pylibmc.Client(servers, behaviors=behaviors)
        assert client.get_behaviors()["distribution"] == distribution
        for key in _pylibmc_hash_keys(rng, 300, b"D"):
            assert client.hash(key) == model.index(key), (n, key)


def test_libmemcached_refuses_hsieh_and_model_agrees(pylibmc):  # type: ignore[no-untyped-def]
    for behavior in ("hash", "ketama_hash"):
        with pytest.raises(pylibmc.Error):
            pylibmc.Client(["127.0.0.1:1"], behaviors={behavior: "hsieh"})
        with pytest.raises(ValueError):
            models.LibmemcachedClient(["127.0.0.1:1"], {behavior: "hsieh"})
    with pytest.raises(ValueError):
        models.LibmemcachedClient(["127.0.0.1:1"], {"distribution": "random"})


def _libmc_tie_hosts(point_hash: Any, points: int, weighted: bool) -> tuple[str, str, int]:
    seen: dict[int, str] = {}
    j = 0
    while True:
        host = f"tie{j}"
        if weighted:
            values = [v for i in range(points // 4)
                      for v in models.ketama_md5_points(f"{host}-{i}".encode())]
        else:
            values = [point_hash(f"{host}-{i}".encode()) for i in range(points)]
        for value in values:
            other = seen.get(value)
            if other is not None and other != host:
                return other, host, value
            seen[value] = host
        j += 1


@pytest.mark.parametrize("behaviors", [{"ketama_weighted": True}, {"ketama": True},
                                       {"ketama": True, "hash": "fnv1a_32"}],
                         ids=["weighted-md5", "ketama-default", "ketama-fnv1a_32"])
def test_libmemcached_equal_points_go_to_the_first_server(pylibmc, behaviors):  # type: ignore[no-untyped-def]
    """Two hostnames (port 11211) sharing a continuum point: the key just below the point goes
    to the server listed first, in either listing order."""
    version = _libmc_version(pylibmc)
    weighted = bool(behaviors.get("ketama_weighted"))
    point_hash = models.HASHES[models.LIBMEMCACHED_HASHES[behaviors.get("hash", "default")]]
    first, second, value = _libmc_tie_hosts(point_hash, 160 if weighted else 100, weighted)
    for servers in ([first, second], [second, first]):
        model = models.LibmemcachedClient(servers, behaviors, version=version)
        assert model._owners[model._values.index(value)] == 0
        client = pylibmc.Client(servers, behaviors=behaviors)
        keys = _keys_in_tie_interval(model, value, b"tie", 10)
        assert {model.index(k) for k in keys} == {0}
        assert [client.hash(k) for k in keys] == [0] * len(keys)


def _libmc_store_cases() -> list[dict[str, Any]]:
    cases = []
    i = 0
    behavior_sets = lambda h: [{"hash": h}, {"hash": h, "ketama": True},   # noqa: E731
                               {"hash": h, "ketama_weighted": True}]
    for h in LIBMC_HASHES:
        counts = SERVER_COUNTS if h in ("md5", "default") else [3, 25]
        for n in counts:
            for b, behaviors in enumerate(behavior_sets(h)):
                if n == 1 and b:
                    continue
                weights = "equal" if b == 0 else ["skewed", "random", "equal"][i % 3]
                cases.append({"id": f"{h}-n{n}-b{b}-{weights}-{i:03d}", "index": i, "n": n,
                              "behaviors": behaviors, "weights": weights,
                              "naming": ["hostport", "default_port", "mixed"][i % 3],
                              "unix": False})
                i += 1
    for behaviors in ({}, {"ketama": True}, {"ketama_weighted": True},
                      {"distribution": "consistent ketama spy", "hash": "murmur"}):
        cases.append({"id": f"unix-{i:03d}", "index": i, "n": UNIX_FLEET,
                      "behaviors": behaviors, "weights": "equal", "naming": "unix",
                      "unix": True})
        i += 1
    return cases


LIBMC_STORE_CASES = _libmc_store_cases()


class LibmcRun:
    def __init__(self) -> None:
        self.expected: dict[str, dict[bytes, Any]] = {}
        self.names: dict[str, dict[bytes, str]] = {}
        self.where: dict[bytes, list[Any]] = {}
        self.refused: dict[str, tuple[list[Any], dict[str, Any]]] = {}
        self.version = ""


@pytest.fixture(scope="module")
def libmc_run(fleet, pylibmc):  # type: ignore[no-untyped-def]
    run = LibmcRun()
    run.version = _libmc_version(pylibmc)
    for case in LIBMC_STORE_CASES:
        rng = random.Random(f"libmc-store-{case['index']}")
        weights = _weights(case["weights"], case["n"], rng)
        if case["unix"]:
            servers = [s.socket_path for s in fleet.unix]
            rng.shuffle(servers)
        else:
            servers = _libmc_servers(case["n"], rng, case["naming"], weights, fleet)
        try:   # the model first: what it refuses would kill this process
            model = models.LibmemcachedClient(servers, case["behaviors"], version=run.version)
        except models.LibmemcachedRefused:
            run.refused[case["id"]] = (servers, case["behaviors"])
            continue
        address_of: dict[str, Any] = {}
        for server in model.servers:
            if server.unix:
                address_of[server.name] = server.host
            elif server.port == 11211:
                address_of[server.name] = fleet.tcp[int(server.host.rsplit(".", 1)[1]) - 1].address
            else:
                address_of[server.name] = (server.host, server.port)
        prefix = b"L%s%03d." % (run.version.encode(), case["index"])
        keys = _pylibmc_hash_keys(rng, min(1500, max(300, 10 * case["n"])), prefix)
        client = pylibmc.Client(servers, behaviors=case["behaviors"])
        failed = client.set_multi({key: b"1" for key in keys})
        assert not failed, f"{case['id']}: pylibmc could not store {failed[:5]}"
        client.disconnect_all()
        as_bytes = {key: key.encode("utf-8") if isinstance(key, str) else key for key in keys}
        names = {as_bytes[key]: model.server_name(key) for key in keys}
        run.names[case["id"]] = names
        run.expected[case["id"]] = {key: address_of[name] for key, name in names.items()}
    run.where = fleet.dump()
    return run


@pytest.mark.parametrize("case", LIBMC_STORE_CASES, ids=lambda c: c["id"])
def test_libmemcached_model_places_every_key_like_pylibmc(case, libmc_run):  # type: ignore[no-untyped-def]
    if case["id"] in libmc_run.refused:       # this libmemcached crashes on it: prove that
        assert _pylibmc_crashes(*libmc_run.refused[case["id"]])
        return
    _check_placement(libmc_run.expected[case["id"]], libmc_run.where, libmc_run.names[case["id"]])


# =============================================================================================
# uhashring
# =============================================================================================

NODE_COUNTS = list(range(1, 9)) + [10, 13, 16, 25, 32, 50, 61, 64, 100, 128, 200]


@pytest.fixture(scope="module")
def uhashring():  # type: ignore[no-untyped-def]
    return _require_module("uhashring")


def _typed_keys(rng: random.Random, count: int) -> list[Any]:
    """str, bytes and int keys (and a few floats and tuples: uhashring takes any object)."""
    keys: list[Any] = []
    for j in range(count):
        kind = j % 7
        if kind in (0, 1):
            keys.append("".join(rng.choices(_UNICODE + _ALNUM, k=rng.randrange(0, 30))))
        elif kind == 2:
            keys.append(f"user:{rng.randrange(10**9)}")
        elif kind in (3, 4):
            keys.append(rng.randbytes(rng.randrange(0, 30)))
        elif kind == 5:
            keys.append(rng.randrange(-10**12, 10**12))
        else:
            keys.append(rng.choice([rng.random(), (j, "x"), None, True]))
    return keys


def _uhashring_configs(n: int, rng: random.Random) -> list[tuple[str, Any, dict[str, Any]]]:
    names = [f"node{j}" for j in range(n)]
    hosts = [f"10.0.{j // 250}.{j % 250}:11211" for j in range(n)]
    return [
        ("list", names, {}),
        ("hosts", hosts, {}),
        ("weights", {name: rng.randint(1, 12 if n < 50 else 4) for name in names}, {}),
        ("skewed", {name: SKEWED[j % 5] for j, name in enumerate(names)}, {}),
        ("vnodes", {name: {"weight": rng.randint(1, 4), "vnodes": rng.randint(1, 60),
                           "hostname": "h", "port": j} for j, name in enumerate(names)}, {}),
        ("ring-vnodes", names, {"vnodes": rng.choice([1, 7, 50])}),
    ]


@pytest.mark.parametrize("hash_fn", [None, "ketama"], ids=["default", "ketama"])
def test_uhashring_model_equals_package(uhashring, hash_fn):  # type: ignore[no-untyped-def]
    checked = 0
    for n in NODE_COUNTS:
        rng = random.Random(f"uhashring-{hash_fn}-{n}")
        keys = _typed_keys(rng, 1000 if n < 100 else 400)
        for label, nodes, kwargs in _uhashring_configs(n, rng):
            if hash_fn == "ketama" and label == "ring-vnodes":
                kwargs = {**kwargs, "replicas": rng.choice([1, 2, 3, 4])}
            ring = uhashring.HashRing(nodes, hash_fn=hash_fn, **kwargs)
            model = models.UhashringRing(nodes, hash_fn=hash_fn, **kwargs)
            for key in keys:
                assert ring.get_node(key) == model.get_node(key), (n, label, key)
                checked += 1
    assert checked > 100_000


def test_uhashring_key_on_a_point_goes_past_it(uhashring):  # type: ignore[no-untyped-def]
    """The key "name-i" hashes exactly onto a point of node "name" (both rings hash it like the
    point name): the lookup takes the first point strictly greater, mostly another node's."""
    nodes = [f"node{j}" for j in range(10)]
    for hash_fn in (None, "ketama"):
        ring = uhashring.HashRing(nodes, hash_fn=hash_fn)
        model = models.UhashringRing(nodes, hash_fn=hash_fn)
        moved = 0
        for node in nodes:
            for i in range(40):
                key = f"{node}-{i}"
                assert model.key_hash(key) in model._ring
                assert ring.get_node(key) == model.get_node(key), (hash_fn, key)
                moved += model.get_node(key) != node
        assert moved > 200, hash_fn


def test_uhashring_formats_keys_with_str(uhashring):  # type: ignore[no-untyped-def]
    for hash_fn in (None, "ketama"):
        model = models.UhashringRing([f"n{j}" for j in range(50)], hash_fn=hash_fn)
        ring = uhashring.HashRing([f"n{j}" for j in range(50)], hash_fn=hash_fn)
        for key in (b"ab", 7, b"\xff"):
            assert model.get_node(key) == model.get_node(str(key)) == ring.get_node(key)


def test_uhashring_ketama_shared_point_goes_to_the_last_node(uhashring):  # type: ignore[no-untyped-def]
    first, second, value = _twemproxy_tie_names()   # same "name-i" md5 points, 40 per node
    for nodes in ([first, second], [second, first]):
        ring = uhashring.HashRing(nodes, hash_fn="ketama")
        model = models.UhashringRing(nodes, hash_fn="ketama")
        assert ring.runtime._ring[value] == nodes[-1]
        points = model._points
        i = points.index(value)
        assert i > 0
        hits = 0
        for j in range(200_000):
            key = f"k{j}"
            h = model.key_hash(key)
            if points[i - 1] <= h < value:
                assert ring.get_node(key) == model.get_node(key) == nodes[-1]
                hits += 1
                if hits == 5:
                    break
        assert hits == 5


def test_uhashring_against_hypothesis_keys(uhashring):  # type: ignore[no-untyped-def]
    from hypothesis import given, settings
    from hypothesis import strategies as st

    rings = {}
    for hash_fn in (None, "ketama"):
        nodes = {f"s{j}": (j % 5) + 1 for j in range(37)}
        rings[hash_fn] = (uhashring.HashRing(nodes, hash_fn=hash_fn),
                          models.UhashringRing(nodes, hash_fn=hash_fn))

    @settings(deadline=None, max_examples=400, database=None)
    @given(st.one_of(st.text(), st.binary(), st.integers(), st.floats(allow_nan=False)))
    def check(key: Any) -> None:
        for ring, model in rings.values():
            try:
                want: Any = model.get_node(key)
            except UnicodeEncodeError:
                with pytest.raises(UnicodeEncodeError):
                    ring.get_node(key)
                continue
            assert ring.get_node(key) == want

    check()


# =============================================================================================
# pymemcache
# =============================================================================================


@pytest.fixture(scope="module")
def pymemcache():  # type: ignore[no-untyped-def]
    return _require_module("pymemcache")


PYMEMCACHE_COUNTS = [1, 2, 3, 4, 5, 7, 10, 25, 50, 61, 100, 200]


def _pymemcache_servers(n: int, rng: random.Random) -> list[Any]:
    specs: list[Any] = []
    for j in range(n):
        kind = j % 5
        if kind == 0:
            specs.append((f"10.1.{j // 200}.{j % 200}", 11211 + j))
        elif kind == 1:
            specs.append(f"cache{j}.example:{11211 + rng.randrange(100)}")
        elif kind == 2:
            specs.append(f"10.2.0.{j % 250}")                      # default port
        elif kind == 3:
            specs.append(f"[::{j + 1:x}]:{11311 + j}")
        else:
            specs.append(f"/run/memcached/{j}.sock")
    return specs


def test_pymemcache_model_equals_hashclient(pymemcache):  # type: ignore[no-untyped-def]
    from pymemcache.client.hash import HashClient

    checked = 0
    for n in PYMEMCACHE_COUNTS:
        rng = random.Random(f"pymemcache-{n}")
        servers = _pymemcache_servers(n, rng)
        client = HashClient(servers, allow_unicode_keys=True)
        model = models.PymemcacheRendezvous(servers)
        assert sorted(client.clients) == sorted(model.nodes)
        keys = [k for k in _typed_keys(rng, max(120, 16000 // n))
                if isinstance(k, (str, bytes))]
        for j, key in enumerate(keys):
            want = model.get_node(key)
            assert client.hasher.get_node(key) == want, (n, key)
            valid = (key.encode("utf-8") if isinstance(key, str) else key)
            if j % 3 == 0 and valid and len(valid) <= 250 and \
                    not any(c in valid for c in b" \t\r\n\x0b\x0c\x00"):
                assert client._get_client(key) is client.clients[want], (n, key)
            checked += 1
        ints = [rng.randrange(-10**9, 10**9) for _ in range(max(20, 1000 // n))]
        for key in ints:       # RendezvousHash takes any key; HashClient only str/bytes
            assert client.hasher.get_node(key) == model.get_node(key)
            checked += 1
    assert checked > 10_000


def test_pymemcache_formats_keys_and_names(pymemcache):  # type: ignore[no-untyped-def]
    from pymemcache.client.rendezvous import RendezvousHash

    servers = [("127.0.0.1", 11211), "127.0.0.1:11212", "localhost", "[::1]:11213"]
    model = models.PymemcacheRendezvous(servers)
    assert model.nodes == ["127.0.0.1:11211", "127.0.0.1:11212", "localhost:11211",
                           "::1:11213"]
    ring = RendezvousHash(list(model.nodes))
    for key in (b"ab", "b'ab'", 5, "5", "é", "\u01e9"):
        assert ring.get_node(key) == model.get_node(key)
    assert model.get_node(b"ab") == model.get_node("b'ab'")
    # code points are masked to 8 bits: "é" (0xe9) and "ǩ" (0x1e9) score alike
    assert models.pymemcache_murmur3_32("\u00e9") == models.pymemcache_murmur3_32("\u01e9")


def test_pymemcache_ties_take_the_greater_name(pymemcache, monkeypatch):  # type: ignore[no-untyped-def]
    """Exact score ties (a 3-bit hash makes them common): the winner becomes
    max(str(node), str(winner)). The model scores with this coarse hash too."""
    from pymemcache.client.rendezvous import RendezvousHash

    murmur = models.pymemcache_murmur3_32

    def coarse(text: str, seed: int = 0) -> int:
        return murmur(text, seed) & 0x7

    nodes = [f"n{j}" for j in (5, 12, 3, 40, 7, 1)]
    ring = RendezvousHash(list(nodes), hash_function=coarse)
    monkeypatch.setattr(models, "pymemcache_murmur3_32", coarse)
    model = models.PymemcacheRendezvous(nodes, names_given=True)
    ties = 0
    for j in range(3000):
        key = f"k{j}"
        scores = [coarse(f"{node}-{key}") for node in nodes]
        top = [node for node, score in zip(nodes, scores) if score == max(scores)]
        if len(top) > 1:
            ties += 1
            assert model.get_node(key) == max(top)
        assert ring.get_node(key) == model.get_node(key)
    assert ties > 1000


def test_pymemcache_against_hypothesis_keys(pymemcache):  # type: ignore[no-untyped-def]
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from pymemcache.client.rendezvous import RendezvousHash

    nodes = [f"10.0.0.{j}:11211" for j in range(23)]
    ring = RendezvousHash(list(nodes))
    model = models.PymemcacheRendezvous(nodes, names_given=True)

    @settings(deadline=None, max_examples=400, database=None)
    @given(st.one_of(st.text(), st.binary(), st.integers()))
    def check(key: Any) -> None:
        assert ring.get_node(key) == model.get_node(key)

    check()
