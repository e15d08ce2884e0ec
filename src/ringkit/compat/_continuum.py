"""What the programs' placements share: their key hashes, the float32 digest counts of
twemproxy's and libmemcached's weighted continuum, and a ring built from a program's points.

The points of every continuum are computed here with numpy (MD5 words, or the program's key
hash of the "name-i" strings); the lookups are the ring's compiled ones (``RingBase``), probed
with the program's key hash.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt

from ringkit import _hashing, _ring
from ringkit._ring import RingBase
from ringkit.validation import MAX_POINTS, short

#: Every key hash twemproxy offers (its ``hash:`` names), computed as its src/hashkit does.
HASHES: tuple[str, ...] = (
    "one_at_a_time", "md5", "crc16", "crc32", "crc32a", "fnv1_64", "fnv1a_64", "fnv1_32",
    "fnv1a_32", "hsieh", "murmur", "jenkins",
)

PROG = _hashing.PROGRAM_HASHES
FORM_TEXT = _hashing.FORMS["text"]
FORM_STR = _hashing.FORMS["str"]
FORM_HASH_TAG = _hashing.FORMS["hash_tag"]
FORM_EMPTY_ZERO = _hashing.FORMS["empty_zero"]


def float32_digests(weights: Sequence[int], single_add: bool = False) -> npt.NDArray[np.int64]:
    """Digests (four points each) per server of twemproxy's and libmemcached's weighted ketama:
    ``floorf((float)(pct * 160 / 4 * (float)n + 1e-10))``, ``pct = (float)w / (float)total``.

    Every step is single precision except the addition of 1e-10, a double (twemproxy,
    libmemcached 1.0.16) whose sum is rounded back to a float; libmemcached 1.1.4 adds a float
    1e-10F (``single_add``), which gives the same floor for every count that fits a ring.
    The single precision is what drops a digest for 25, 47, 50, ... equal servers.
    """
    values = np.asarray(weights, dtype=np.float64)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        total = np.float32(values.sum())
        pct = values.astype(np.float32) / total
        x = (pct * np.float32(160)).astype(np.float32)
        x = (x / np.float32(4)).astype(np.float32)
        x = (x * np.float32(len(values))).astype(np.float32)
        if single_add:
            x = (x + np.float32(1e-10)).astype(np.float32)
        else:
            x = (x.astype(np.float64) + 1e-10).astype(np.float32)
    digests: npt.NDArray[np.int64] = np.floor(x).astype(np.int64)
    return digests


def name_strings(names: Sequence[bytes], counts: Sequence[int] | npt.NDArray[np.int64],
                 make: Callable[[bytes, int], bytes]) -> list[bytes]:
    """The point names of every server in order: make(name, i) for i < counts[server]."""
    total = int(sum(int(c) for c in counts))
    if total * 4 > MAX_POINTS:
        raise ValueError(f"servers: the continuum would have {total * 4:,} points, more than "
                         f"the {MAX_POINTS:,} a placement may hold")
    return [make(name, i) for name, count in zip(names, counts) for i in range(int(count))]


def md5_points(point_names: list[bytes], owners_of_names: npt.NDArray[np.int32],
               words: int = 4) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int32]]:
    """The first `words` little-endian uint32 words of each name's MD5 digest, in insertion
    order (name by name, word by word), with their owners."""
    digests = _hashing.md5_digests(point_names)[:, :words]
    return (digests.reshape(-1).astype(np.uint64),
            np.repeat(owners_of_names, words).astype(np.int32))


def resolve_ties(values: npt.NDArray[np.uint64], owners: npt.NDArray[np.int32], *,
                 last_wins: bool) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int32]]:
    """Points in insertion order -> sorted distinct points, each owned as the program decides:
    the first inserted of equal points (a stable sort probed at the first point >= the hash:
    twemproxy, libmemcached) or the last (a dict filled in node order: uhashring)."""
    order = np.argsort(values, kind="stable")
    values, owners = values[order], owners[order]
    if len(values) < 2:
        return values, owners
    if last_wins:
        keep = np.append(values[1:] != values[:-1], True)
    else:
        keep = np.insert(values[1:] != values[:-1], 0, True)
    return values[keep], owners[keep]


def no_preference(program: str) -> property:
    """A property that makes a method absent: the program has no such thing."""
    def absent(self: Any) -> NoReturn:
        raise AttributeError(f"{program} has no preference list: it routes each key to one "
                             f"server and nothing else")
    return property(absent)


class ProgramRing(RingBase):
    """A continuum computed as another program computes it, with the ring's compiled lookups.

    ``get(key)``, ``placement[key]``, ``get_many(keys, out=None)`` (lists, tuples, numpy and
    pyarrow arrays in; int32 indices into ``nodes`` out, computed without the GIL),
    ``locate``, ``points``, ``owners``, ``fingerprint()``, ``len()``, ``in`` and iteration work
    as on :class:`ringkit.HashRing`. ``nodes`` are the servers as the program names them, in the
    program's server order. Immutable: build a new one when the servers change, as the program
    rebuilds its continuum.
    """

    program: str
    key_hash: str
    _build_args: tuple[Any, ...]
    _probe: tuple[int, int, bool]
    _builder: Callable[..., Any]

    @classmethod
    def _make(cls, program: str, key_hash: str, names: Sequence[str],
              weights: Sequence[float], values: npt.NDArray[np.uint64],
              owners: npt.NDArray[np.int32], algorithm: int, seed: int, *, wide: bool,
              after: bool, builder: Callable[..., Any],
              build_args: tuple[Any, ...]) -> ProgramRing:
        if len(set(names)) != len(names):
            seen: set[str] = set()
            dup = next(n for n in names if n in seen or seen.add(n))  # type: ignore[func-returns-value]
            raise ValueError(f"servers: two servers named {short(dup)}; {program} would not "
                             f"tell them apart")
        state = _ring.build_program(list(names), list(weights), values, owners, algorithm, seed,
                                    wide, after)
        ring = cls._of(state)
        ring.program = program
        ring.key_hash = key_hash
        ring._builder = builder
        ring._build_args = build_args
        ring._probe = (algorithm, seed, after)
        return ring

    @property
    def algorithm(self) -> str:
        """The program's key hash (its name for it)."""
        return self.key_hash

    def __dask_tokenize__(self) -> object:
        """Dask's token: what the placement places (equal placements, equal tokens)."""
        return (type(self).__module__, type(self).__qualname__, self.__reduce__()[1])

    def __reduce__(self) -> tuple[Any, ...]:
        return (self._builder, self._build_args)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProgramRing):
            return NotImplemented
        return (type(self) is type(other) and self.nodes == other.nodes
                and self.fingerprint() == other.fingerprint()
                and self._probe == other._probe)

    def __hash__(self) -> int:
        return hash(self.fingerprint())

    def __repr__(self) -> str:
        return (f"<{self.program} placement: {len(self.nodes)} servers, "
                f"{len(self.points):,} points, key hash {self.key_hash}>")
