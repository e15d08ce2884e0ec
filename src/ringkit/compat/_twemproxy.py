"""twemproxy (nutcracker): a pool's placement from its YAML configuration."""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ringkit._placement import ModulaBase
from ringkit.compat._continuum import (
    FORM_EMPTY_ZERO,
    FORM_HASH_TAG,
    FORM_TEXT,
    HASHES,
    PROG,
    ProgramRing,
    float32_digests,
    md5_points,
    name_strings,
    no_preference,
    resolve_ties,
)
from ringkit.validation import short

DEFAULT_HASH = "fnv1a_64"
DEFAULT_DISTRIBUTION = "ketama"
# nutcracker's KETAMA_MAX_HOSTLEN: a point name is cut to 272 bytes.
_MAX_HOSTLEN = 273


@dataclass(frozen=True)
class Server:
    """One entry of a pool's ``servers:`` list."""

    address: str     # host, or a unix socket path
    port: int        # 0 for a unix socket
    weight: int
    name: str        # the name nutcracker hashes into its continuum


def parse_server(spec: object, argname: str) -> Server:
    """``"host:port:weight [name]"`` or ``"/path:weight [name]"``, read from the end as
    nutcracker reads it. Without a name, the server is named "host" on port 11211 (as
    libmemcached names it), "host:port" otherwise, and "path:" for a unix socket."""
    if not isinstance(spec, str):
        raise TypeError(f"{argname} must be a str 'host:port:weight [name]', got "
                        f"{type(spec).__name__}")
    text, name = spec, None
    if " " in text:
        text, name = text.rsplit(" ", 1)
        if not name:
            raise ValueError(f"{argname}: {short(spec)} has an empty name")
    unix = text.startswith("/")
    form = "'/path:weight [name]'" if unix else "'host:port:weight [name]'"
    if ":" not in text:
        raise ValueError(f"{argname}: {short(spec)} is not {form}")
    rest, weight_text = text.rsplit(":", 1)
    if unix:
        if ":" in rest:
            raise ValueError(f"{argname}: {short(spec)} is not {form}")
        address, port_text = rest, ""
    else:
        if ":" not in rest:
            raise ValueError(f"{argname}: {short(spec)} is not {form}")
        address, port_text = rest.rsplit(":", 1)
        if ":" in address or not address:
            raise ValueError(f"{argname}: {short(spec)} is not {form}")
    if not weight_text.isdigit() or int(weight_text) <= 0:
        raise ValueError(f"{argname}: {short(spec)} needs a weight that is an integer > 0")
    port = 0
    if not unix:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"{argname}: {short(spec)} has an invalid port")
        port = int(port_text)
    if name is None:
        name = address + ":" if unix else (address if port == 11211 else
                                           f"{address}:{port_text}")
    return Server(address, port, int(weight_text), name)


def _sorted_servers(servers: list[Server]) -> list[Server]:
    """nutcracker sorts a pool's servers by name (shorter first, then byte order) and refuses
    two of the same name; the sorted order is the order of its modula table and the tie order of
    its continuum."""
    ordered = sorted(servers, key=lambda s: (len(s.name.encode()), s.name.encode()))
    for left, right in zip(ordered, ordered[1:]):
        if left.name == right.name:
            raise ValueError(f"servers: two servers named {short(left.name)}; nutcracker "
                             f"refuses this pool")
    return ordered


def load_pool(config: object, pool: str | None) -> tuple[str, Mapping[str, Any]]:
    """(pool name, its mapping) from a YAML path or a parsed configuration."""
    if isinstance(config, (str, os.PathLike)):
        try:
            yaml = importlib.import_module("yaml")
        except ImportError:
            raise ImportError("reading a nutcracker YAML file needs PyYAML: pip install "
                              "'ringkit[compat]' (or pass the parsed mapping)") from None
        with open(config, encoding="utf-8") as f:
            config = yaml.safe_load(f)
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a nutcracker YAML path or its parsed mapping, got "
                        f"{type(config).__name__}")
    if "servers" in config:
        if pool is not None:
            raise ValueError("pool: config is one pool's mapping (it has 'servers'); pass "
                             "pool=None")
        return "pool", config
    pools = {name: value for name, value in config.items() if isinstance(value, Mapping)}
    if not pools:
        raise ValueError("config has no pool (a mapping with 'servers')")
    if pool is None:
        if len(pools) > 1:
            raise ValueError(f"config has {len(pools)} pools ({', '.join(map(str, pools))}); "
                             f"choose one with pool=")
        pool = next(iter(pools))
    if pool not in pools:
        raise ValueError(f"pool {short(pool)} is not in config (pools: "
                         f"{', '.join(map(str, pools))})")
    return str(pool), pools[pool]


class TwemproxyRing(ProgramRing):
    """A nutcracker pool with ``distribution: ketama`` (see :func:`ringkit.compat.twemproxy`)."""

    preference_list = no_preference("twemproxy")
    preference_many = no_preference("twemproxy")


class TwemproxyModula(ModulaBase):
    """A nutcracker pool with ``distribution: modula``: ``table[hash % total weight]``, the
    table holding each server `weight` times in nutcracker's server order."""

    program = "twemproxy"
    key_hash: str
    _build_args: tuple[Any, ...]

    def __dask_tokenize__(self) -> object:
        """Dask's token: what the placement places (equal placements, equal tokens)."""
        return (type(self).__module__, type(self).__qualname__, self.__reduce__()[1])

    def __reduce__(self) -> tuple[Any, ...]:
        return (twemproxy, self._build_args)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TwemproxyModula):
            return NotImplemented
        return self.__reduce__() == other.__reduce__()

    def __hash__(self) -> int:
        return hash(self._build_args)

    def __repr__(self) -> str:
        return (f"<twemproxy modula placement: {len(self.nodes)} servers, key hash "
                f"{self.key_hash}>")


def twemproxy(config: Any, pool: str | None = None) -> TwemproxyRing | TwemproxyModula:
    """A placement routing every key to the server nutcracker (twemproxy 0.5.0) sends it to.

    ``config`` is the path of a nutcracker YAML file (read with PyYAML) or its parsed mapping
    (``{pool_name: {...}}``, or one pool's ``{...}``); ``pool`` names the pool when there are
    several. From the pool: ``servers`` (``"host:port:weight [name]"`` or
    ``"/path:weight [name]"``), ``hash`` (default ``fnv1a_64``; every hash nutcracker offers:
    one_at_a_time, md5, crc16, crc32, crc32a, fnv1_64, fnv1a_64, fnv1_32, fnv1a_32, hsieh,
    murmur, jenkins, each computed as nutcracker computes it, quirks included),
    ``distribution`` (``ketama``, the default, or ``modula``; ``random`` has no placement and
    is refused) and ``hash_tag`` (two characters: only the part of a key between them is
    hashed). Other settings do not move keys. A server is named as nutcracker names it: its
    name after the weight, else "host:port", and "host" alone on port 11211.

    Keys: str (UTF-8), bytes-like, and ints (hashed as their decimal text, as a client sends
    them). Dead-host ejection (``auto_eject_hosts``) is the proxy's run-time state, not
    modelled: this is the placement with every server up.
    """
    pool_name, conf = load_pool(config, pool)
    servers_conf = conf.get("servers")
    if not isinstance(servers_conf, (list, tuple)) or not servers_conf:
        raise ValueError(f"pool {short(pool_name)}: 'servers' must be a non-empty list")
    hash_name = conf.get("hash", DEFAULT_HASH)
    if hash_name not in HASHES:
        raise ValueError(f"pool {short(pool_name)}: hash must be one of {', '.join(HASHES)}, "
                         f"got {short(hash_name)}")
    distribution = conf.get("distribution", DEFAULT_DISTRIBUTION)
    if distribution == "random":
        raise ValueError(f"pool {short(pool_name)}: distribution 'random' sends each request "
                         f"to a random server; it has no key placement to follow")
    if distribution not in ("ketama", "modula"):
        raise ValueError(f"pool {short(pool_name)}: distribution must be ketama or modula, got "
                         f"{short(distribution)}")
    tag = conf.get("hash_tag")
    algorithm = PROG[hash_name] | FORM_TEXT | FORM_EMPTY_ZERO
    seed = 0
    if tag is not None:
        if not isinstance(tag, str) or len(tag.encode("utf-8")) != 2:
            raise ValueError(f"pool {short(pool_name)}: hash_tag must be two characters, got "
                             f"{short(tag)}")
        raw = tag.encode("utf-8")
        algorithm |= FORM_HASH_TAG
        seed = (raw[0] << 8) | raw[1]
    parsed = [parse_server(spec, f"pool {pool_name} servers[{i}]")
              for i, spec in enumerate(servers_conf)]
    servers = _sorted_servers(parsed)
    names = [s.name for s in servers]
    weights = [s.weight for s in servers]
    build_args = ({"servers": list(servers_conf), "hash": hash_name,
                   "distribution": distribution, **({"hash_tag": tag} if tag else {})},)
    if distribution == "modula":
        total = sum(weights)
        if total > 2**31 - 1:
            raise ValueError(f"pool {short(pool_name)}: the weights add up to {total}, too "
                             f"many modula slots")
        table = np.repeat(np.arange(len(servers), dtype=np.int32), weights)
        modula = TwemproxyModula(names, table, algorithm, seed)
        modula.key_hash = hash_name
        modula._build_args = build_args
        return modula
    digests = float32_digests(weights)
    encoded = [s.name.encode("utf-8") for s in servers]
    point_names = name_strings(encoded, digests,
                               lambda name, i: (name + b"-%d" % i)[:_MAX_HOSTLEN - 1])
    owners_of_names = np.repeat(np.arange(len(servers), dtype=np.int32), digests)
    values, owners = md5_points(point_names, owners_of_names)
    values, owners = resolve_ties(values, owners, last_wins=False)
    return TwemproxyRing._make(  # type: ignore[return-value]
        "twemproxy", hash_name, names, weights, values, owners, algorithm, seed, wide=False,
        after=False, builder=twemproxy, build_args=build_args)
