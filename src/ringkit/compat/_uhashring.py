"""uhashring: its default ring and its ``hash_fn="ketama"`` ring."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ringkit.compat._continuum import (
    FORM_STR,
    PROG,
    ProgramRing,
    md5_points,
    name_strings,
    resolve_ties,
)
from ringkit.validation import MAX_POINTS, check_name, short

_DEFAULT_VNODES = 160
_KETAMA_VNODES = 40


class UhashringRing(ProgramRing):
    """A uhashring ring (see :func:`ringkit.compat.uhashring`). ``preference_list(key, n)`` is
    uhashring's ``range(key, n)`` / ``iterate_nodes(key)``: distinct nodes clockwise from the
    key's point."""


def _check_count(value: object, argname: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{argname} must be an int, got {type(value).__name__}")
    if not 1 <= value <= MAX_POINTS:
        raise ValueError(f"{argname} must be an int from 1 to {MAX_POINTS}, got {short(value)}")
    return int(value)


def uhashring(nodes: Any, *, ketama: bool = False, vnodes: int | None = None,
              replicas: int = 4) -> UhashringRing:
    """A placement routing every key to the node ``uhashring.HashRing(nodes)`` (2.x) gives it
    (``get_node``), so a uhashring user moves to ringkit with no key moving.

    ``nodes`` as uhashring takes them: a name, a list of names (weight 1), or a mapping
    ``{name: weight}`` / ``{name: {"weight": w, "vnodes": v}}`` (other settings such as
    hostname or port do not move keys). Names are str; weights and vnodes ints >= 1.

    ``ketama=False`` is uhashring's default ring: ``vnodes`` (default 160) times the weight
    points per node, each the MD5 of "name-i" as a 128-bit big-endian integer. ``ketama=True``
    is ``hash_fn="ketama"``: ``vnodes`` (default 40) times the node count times the weight over
    the total weight, by integer division, names per node, each giving ``replicas`` (default 4)
    little-endian words of its MD5. On equal points the node later in ``nodes`` wins, as in
    uhashring's dict; a key goes to the first point *strictly above* its hash.

    Keys are formatted with ``str()`` first, as uhashring does, whatever their type (a
    memoryview, whose text is its address, is a TypeError): ``b"ab"`` routes as the text
    ``"b'ab'"``, ``5`` as ``"5"``. The default ring compares the top 64 of MD5's 128 bits;
    routing differs from uhashring only if a key and a point share those 64 bits
    (probability about 2**-64 per key and point).
    """
    if not isinstance(ketama, bool):
        raise TypeError(f"ketama must be a bool, got {type(ketama).__name__}")
    default_vnodes = _KETAMA_VNODES if ketama else _DEFAULT_VNODES
    if vnodes is not None:
        default_vnodes = _check_count(vnodes, "vnodes")
    replicas = _check_count(replicas, "replicas")
    if ketama and replicas > 4:
        raise ValueError(f"replicas must be from 1 to 4 (the words of an MD5 digest), got "
                         f"{replicas}")
    if isinstance(nodes, str):
        nodes = [nodes]
    conf: dict[str, tuple[int, int]] = {}
    if isinstance(nodes, Mapping):
        for name, value in nodes.items():
            check_name(name, "nodes")
            argname = f"nodes[{short(name)}]"
            if isinstance(value, Mapping):
                weight = _check_count(value.get("weight", 1), f"{argname}['weight']")
                count = _check_count(value.get("vnodes", default_vnodes), f"{argname}['vnodes']")
            else:
                weight, count = _check_count(value, argname), default_vnodes
            conf[name] = (weight, count)
    elif isinstance(nodes, (list, tuple)):
        for name in nodes:
            conf[check_name(name, "nodes")] = (1, default_vnodes)
    else:
        raise TypeError(f"nodes must be a name, a list of names or a mapping, got "
                        f"{type(nodes).__name__}")
    if not conf:
        raise ValueError("nodes must not be empty")
    names = list(conf)
    weights = [w for w, _ in conf.values()]
    encoded = [n.encode("utf-8") for n in names]
    total_weight = sum(weights)
    if ketama:
        counts = [(v * len(conf) * w) // total_weight for w, v in conf.values()]
        words = replicas
    else:
        counts = [v * w for w, v in conf.values()]
        words = 1
    if sum(counts) * words > MAX_POINTS:
        raise ValueError(f"nodes: the ring would have {sum(counts) * words:,} points, more "
                         f"than the {MAX_POINTS:,} a placement may hold")
    point_names = name_strings(encoded, counts, lambda name, i: name + b"-%d" % i)
    owners_of_names = np.repeat(np.arange(len(names), dtype=np.int32), counts)
    if ketama:
        values, owners = md5_points(point_names, owners_of_names, words)
        algorithm = PROG["md5"] | FORM_STR
    else:
        digests = md5_points(point_names, owners_of_names)[0].reshape(-1, 4)
        # the top 64 bits of the big-endian 128-bit integer: bytes 0..7 of the digest
        b = digests.astype(np.uint32).view(np.uint8).reshape(-1, 16)[:, :8]
        values = np.zeros(len(point_names), dtype=np.uint64)
        for k in range(8):
            values = (values << np.uint64(8)) | b[:, k].astype(np.uint64)
        owners = owners_of_names
        algorithm = PROG["md5_high64"] | FORM_STR
    values, owners = resolve_ties(values, owners, last_wins=True)
    key_hash = "md5" if ketama else "md5_128"
    return UhashringRing._make(  # type: ignore[return-value]
        "uhashring", key_hash, names, weights, values, owners, algorithm, 0, wide=not ketama,
        after=True, builder=_rebuild,
        build_args=({n: {"weight": w, "vnodes": v} for n, (w, v) in conf.items()},
                    {"ketama": ketama, "replicas": replicas}))


def _rebuild(nodes: Any, settings: dict[str, Any]) -> UhashringRing:
    return uhashring(nodes, **settings)
