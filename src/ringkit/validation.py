"""The checks every layer applies to what a user gives it: node names, weights, vnodes, the size
of a ring, server addresses, and the node lists of the ``ringkit`` command. One module, so that
the ring, the balancer, locks, replication and the CLI agree on what is valid and say so in the
same words (each error names the argument, and bounds the text it quotes).

What is valid:

- a **node name** is a non-empty ``str`` that encodes to UTF-8 (no lone surrogates);
- a **weight** is a finite real number. The ring takes weights > 0 (a node with no points is
  not a node: remove it to drain it); the balancer also takes 0, meaning "never picked" (a
  drained node that stays configured), as long as one node has a positive weight. Tiny weights
  are exact in the balancer (a weight of 1e-300 beside 1 gets its share: almost never);
- a ring has at most :data:`MAX_POINTS` points in all (``max(1, round(vnodes * weight))`` per
  node), refused before anything is built;
- a **node list** on the command line is ``NAME[=WEIGHT],...``: the name may hold colons
  (``10.0.0.2:11212``), the weight follows ``=``;
- a **Redis server** is a redis-py client or a ``redis://``, ``rediss://`` or ``unix://`` URL,
  named in messages as ``host:port/db`` (``unix:path/db``), whatever the layer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from numbers import Integral, Real
from typing import Any

__all__ = [
    "MAX_POINTS",
    "MAX_VNODES",
    "check_name",
    "check_weight",
    "parse_nodes",
    "check_vnodes",
    "count_points",
    "parse_node_list",
    "check_server",
    "server_label",
    "short",
]

#: The most points one ring may hold, all nodes together (16,777,216: about 200 MB of points,
#: owners and index). A bigger ring is refused before it is built.
MAX_POINTS = 2**24

#: The most vnodes per unit of weight.
MAX_VNODES = MAX_POINTS


def short(value: object, limit: int = 60) -> str:
    """repr(value), cut to `limit` characters: error messages never quote a 300-digit number."""
    if isinstance(value, float):
        text = f"{value:.6g}"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_algorithm(algorithm: object) -> str:
    """A key hash algorithm's name: one of ringkit.ALGORITHMS."""
    from ringkit._hashing import ALGORITHMS

    if not isinstance(algorithm, str):
        raise TypeError(f"algorithm must be a str, got {type(algorithm).__name__}")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {short(algorithm)}")
    return algorithm


def check_seed(seed: object) -> int:
    """A hash seed: an int (numpy integers too; not a bool). Its range is the algorithm's to
    check."""
    if isinstance(seed, bool) or not isinstance(seed, Integral):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    return int(seed)


def check_name(name: object, argname: str = "name") -> str:
    """A node (or lock) name: a non-empty str that encodes to UTF-8."""
    if not isinstance(name, str):
        raise TypeError(f"{argname} must be a str, got {type(name).__name__}")
    if not name:
        raise ValueError(f"{argname} must be a non-empty str")
    if not name.isascii():
        try:
            name.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"{argname} must encode to UTF-8: {exc.reason} at position "
                             f"{exc.start} ({short(name)})") from None
    return name


def check_weight(weight: object, argname: str = "weight", *, allow_zero: bool = False) -> float:
    """A weight: a finite real number > 0 (>= 0 with `allow_zero`)."""
    if isinstance(weight, bool) or not isinstance(weight, Real):
        raise TypeError(f"{argname} must be a number, got {type(weight).__name__}")
    try:
        value = float(weight)
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):
        raise ValueError(f"{argname} must be a finite number, got {short(weight)}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0 (remove the node to drain it)"
        raise ValueError(f"{argname} must be {bound}, got {short(weight)}")
    return value


def parse_nodes(nodes: object, argname: str = "nodes", *, allow_zero: bool = False,
                allow_empty: bool = True) -> dict[str, float]:
    """``{name: weight}`` from an iterable of names (weight 1) or a mapping of weights."""
    if nodes is None and allow_empty:
        return {}
    if isinstance(nodes, (str, bytes)) or nodes is None:
        raise TypeError(f"{argname} must be an iterable of names or a {{name: weight}} "
                        f"mapping, got {type(nodes).__name__}")
    parsed: dict[str, float] = {}
    if isinstance(nodes, Mapping):
        for name, weight in nodes.items():
            parsed[check_name(name, argname)] = check_weight(
                weight, f"{argname}[{short(name)}]", allow_zero=allow_zero)
    elif isinstance(nodes, Iterable):
        for name in nodes:
            if check_name(name, argname) in parsed:
                raise ValueError(f"{argname}: duplicate node name {short(name)}")
            parsed[name] = 1.0
    else:
        raise TypeError(f"{argname} must be an iterable of names or a {{name: weight}} "
                        f"mapping, got {type(nodes).__name__}")
    if not parsed and not allow_empty:
        raise ValueError(f"{argname} must not be empty")
    if parsed and allow_zero and not any(parsed.values()):
        raise ValueError(f"{argname}: every weight is 0; at least one node needs a positive "
                         f"weight")
    return parsed


def check_vnodes(vnodes: object) -> int:
    """Points per unit of weight: an int from 1 to MAX_VNODES."""
    if isinstance(vnodes, bool) or not isinstance(vnodes, Integral):
        raise TypeError(f"vnodes must be an int, got {type(vnodes).__name__}")
    value = int(vnodes)
    if not 1 <= value <= MAX_VNODES:
        raise ValueError(f"vnodes must be between 1 and {MAX_VNODES:,}, got {short(value)}")
    return value


def count_points(vnodes: int, weights: Mapping[str, float], argname: str = "nodes") -> int:
    """The points a ring of these weights would hold (frozen: ``max(1, round(vnodes * w))``
    per node); refuses, naming the argument, a ring of more than MAX_POINTS, before anything
    is built."""
    total = 0
    for name, weight in weights.items():
        product = vnodes * weight
        if product > MAX_POINTS:
            raise ValueError(f"{argname}[{short(name)}]: weight {short(weight)} x vnodes "
                             f"{vnodes} gives more than the {MAX_POINTS:,} points a ring may "
                             f"hold")
        total += max(1, round(product))
        if total > MAX_POINTS:
            raise ValueError(f"{argname}: {len(weights)} nodes x vnodes {vnodes} give more than "
                             f"the {MAX_POINTS:,} points a ring may hold")
    return total


def parse_node_list(text: str, argname: str = "--nodes", *,
                    allow_zero: bool = False) -> dict[str, float]:
    """The command line's node lists: ``NAME[=WEIGHT],...`` (a name may hold colons, as
    ``host:port`` does); ``{name: weight}``."""
    nodes: dict[str, float] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, weight = item.partition("=")
        name = name.strip()
        value = 1.0
        if sep:
            try:
                number = float(weight)
            except ValueError:
                raise ValueError(f"{argname}: weight {short(weight.strip())} of {short(name)} is "
                                 f"not a number (the form is NAME[=WEIGHT],...)") from None
            value = check_weight(number, f"{argname} {short(name)}", allow_zero=allow_zero)
        check_name(name, argname)
        if name in nodes:
            raise ValueError(f"{argname}: {short(name)} is listed twice")
        nodes[name] = value
    if not nodes:
        raise ValueError(f"{argname}: give at least one node, e.g. {argname} a,b,c=2")
    return nodes


_SCHEMES = ("redis://", "rediss://", "unix://")


def check_server(item: object, argname: str = "servers") -> Any:
    """A Redis server: a redis-py client (sync or asyncio), or a URL string (returned as is, for
    the caller to make a client of)."""
    if isinstance(item, str):
        if not item.startswith(_SCHEMES):
            raise ValueError(f"{argname}: {short(item)} is not a Redis URL (redis://host:port/db, "
                             f"rediss://... or unix://path)")
        return item
    if hasattr(item, "execute_command") and hasattr(item, "connection_pool"):
        return item
    raise TypeError(f"{argname} must be redis clients or redis:// URLs, got "
                    f"{type(item).__name__}")


def server_label(client: Any) -> str:
    """A Redis client's server as messages and status output name it: ``host:port/db``
    (``unix:path/db``)."""
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", {}) if pool is not None else {}
    if "path" in kwargs:
        return f"unix:{kwargs['path']}/{kwargs.get('db', 0)}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
