"""libmemcached: the KETAMA_WEIGHTED and KETAMA continuums (pylibmc's ``ketama_weighted`` and
``ketama`` behaviors)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ringkit import _hashing
from ringkit.compat._continuum import (
    FORM_TEXT,
    PROG,
    ProgramRing,
    float32_digests,
    md5_points,
    name_strings,
    no_preference,
    resolve_ties,
)
from ringkit.validation import short

#: libmemcached's key hash names (pylibmc's "hash" behavior) -> the function.
HASHES: dict[str, str] = {
    "default": "one_at_a_time", "md5": "md5", "crc": "crc32", "fnv1_64": "fnv1_64",
    "fnv1a_64": "fnv1a_64", "fnv1_32": "fnv1_32", "fnv1a_32": "fnv1a_32", "murmur": "murmur",
    "jenkins": "jenkins",
    # Not a libmemcached name: "default" here means md5 under KETAMA_WEIGHTED (which sets it), so
    # the weighted continuum probed with one-at-a-time (MEMCACHED_HASH_DEFAULT set after
    # KETAMA_WEIGHTED) is asked for by the algorithm's name.
    "one_at_a_time": "one_at_a_time",
}
_POINTS_PER_SERVER = 100     # plain KETAMA: points per server, each a key hash of "name-i"


def parse_server(spec: object, argname: str) -> tuple[str, int, bool]:
    """(host, port, unix) from "host", "host:port", "[v6]", "[v6]:port" or "/unix/path"."""
    if not isinstance(spec, str):
        raise TypeError(f"{argname} must be a str 'host:port', got {type(spec).__name__}")
    if not spec:
        raise ValueError(f"{argname} must be a non-empty 'host:port'")
    if spec.startswith("/"):
        return spec, 0, True
    port_text = "11211"
    if spec.startswith("["):
        host, sep, rest = spec[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{argname}: {short(spec)} is not '[v6]' or '[v6]:port'")
        if rest:
            port_text = rest[1:]
    elif ":" in spec:
        host, port_text = spec.split(":", 1)
    else:
        host = spec
    if not host:
        raise ValueError(f"{argname}: {short(spec)} has no host")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{argname}: {short(spec)} has an invalid port {short(port_text)}")
    return host, int(port_text), False


def server_name(host: str, port: int, unix: bool) -> str:
    """libmemcached's name of a server in its continuum: "host" on port 11211, else
    "host:port" (a unix socket: "path:0")."""
    if port == 11211:
        return host
    return f"{host}:{port}"


class LibmemcachedRing(ProgramRing):
    """A libmemcached ketama continuum (see :func:`ringkit.compat.libmemcached`)."""

    preference_list = no_preference("libmemcached")
    preference_many = no_preference("libmemcached")


def libmemcached(servers: Iterable[str] | Mapping[str, int], *, weighted: bool = True,
                 hash: str = "default") -> LibmemcachedRing:  # noqa: A002
    """A placement routing every key to the server libmemcached (1.0.16 and 1.1.4, as pylibmc
    uses them) sends it to with a ketama distribution.

    ``servers`` are ``["host:port", ...]`` (``"host"`` alone is port 11211; ``"[v6]:port"``,
    ``"/unix/path"``) or ``{"host:port": weight}`` with integer weights >= 1, in the order the
    client adds them (libmemcached keeps that order: it breaks ties between equal points).

    ``weighted=True`` is ``MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED`` (pylibmc's
    ``behaviors={"ketama_weighted": True}``): each server gets
    ``floorf(pct * 40 * n + 1e-10)`` MD5 digests of "name-i" computed in single precision (four
    points each), and the behavior sets the key hash to md5; ``hash="default"`` keeps that md5.
    ``weighted=False`` is ``MEMCACHED_BEHAVIOR_KETAMA`` (``{"ketama": True}``): 100 points per
    server, each the *key hash* of "name-i", and the key hash is ``hash`` ("default" is
    libmemcached's one-at-a-time). As libmemcached does, a server of weight > 1 turns the
    weighted continuum on even then, keeping the key hash.

    ``hash`` names the key hash as libmemcached does: default, md5, crc, fnv1_64, fnv1a_64,
    fnv1_32, fnv1a_32, murmur, jenkins ("hsieh" is not compiled into libmemcached's builds and is
    refused); ``"one_at_a_time"`` is libmemcached's default hash by its algorithm's name, for the
    weighted continuum probed with it (``MEMCACHED_HASH_DEFAULT`` set *after*
    ``KETAMA_WEIGHTED``). pylibmc applies its "hash" behavior before "ketama_weighted", so with
    ``ketama_weighted`` its key hash is always md5 whatever "hash" says: pass the default here.

    Servers are named as libmemcached names them: "host" on port 11211, else "host:port".
    libmemcached 1.1.4 aborts with more than 100 servers in a ketama distribution; this
    placement has no such limit. Keys: str (UTF-8), bytes-like, ints as their decimal text.
    """
    if not isinstance(weighted, bool):
        raise TypeError(f"weighted must be a bool, got {type(weighted).__name__}")
    if not isinstance(hash, str):
        raise TypeError(f"hash must be a str, got {type(hash).__name__}")
    if hash == "hsieh":
        raise ValueError("hash 'hsieh' is not compiled into libmemcached's builds (setting it "
                         "fails with MEMCACHED_INVALID_ARGUMENTS)")
    if hash not in HASHES:
        raise ValueError(f"hash must be one of {', '.join(HASHES)}, got {short(hash)}")
    if isinstance(servers, (str, bytes)) or servers is None:
        raise TypeError(f"servers must be a list of 'host:port' or a {{'host:port': weight}} "
                        f"mapping, got {type(servers).__name__}")
    if isinstance(servers, Mapping):
        items = list(servers.items())
    else:
        items = [(spec, 1) for spec in servers]
    if not items:
        raise ValueError("servers must not be empty")
    names: list[str] = []
    weights: list[int] = []
    for i, (spec, weight) in enumerate(items):
        argname = f"servers[{short(spec)}]" if isinstance(servers, Mapping) else f"servers[{i}]"
        host, port, unix = parse_server(spec, argname)
        if isinstance(weight, bool) or not isinstance(weight, (int, np.integer)):
            raise TypeError(f"{argname}: a weight must be an int, got {type(weight).__name__}")
        if not 1 <= weight <= 2**32 - 1:
            raise ValueError(f"{argname}: a weight must be an int from 1 to 2**32-1, got "
                             f"{short(weight)}")
        names.append(server_name(host, port, unix))
        weights.append(int(weight))
    key_hash = "md5" if weighted and hash == "default" else HASHES[hash]
    algorithm = PROG[key_hash] | FORM_TEXT
    owners_all = np.arange(len(names), dtype=np.int32)
    encoded = [n.encode("utf-8") for n in names]
    if weighted or any(w > 1 for w in weights):
        digests = float32_digests(weights)
        point_names = name_strings(encoded, digests, lambda name, i: name + b"-%d" % i)
        values, owners = md5_points(point_names, np.repeat(owners_all, digests))
    else:
        counts = [_POINTS_PER_SERVER] * len(names)
        point_names = name_strings(encoded, counts, lambda name, i: name + b"-%d" % i)
        values = _hashing.program_hash_many(point_names, PROG[key_hash])
        owners = np.repeat(owners_all, _POINTS_PER_SERVER)
    values, owners = resolve_ties(values, owners, last_wins=False)
    settings = {"weighted": weighted, "hash": hash}
    return LibmemcachedRing._make(  # type: ignore[return-value]
        "libmemcached", key_hash, names, weights, values, owners, algorithm, 0, wide=False,
        after=False, builder=_rebuild,
        build_args=(dict(items) if isinstance(servers, Mapping) else [s for s, _ in items],
                    settings))


def _rebuild(servers: Any, settings: dict[str, Any]) -> LibmemcachedRing:
    return libmemcached(servers, **settings)
