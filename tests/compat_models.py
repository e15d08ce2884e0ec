"""Slow, obviously-correct models of how other programs route a key to a server (issue 12).

These are the *oracles* for ``ringkit.compat``: plain Python, no ringkit, no C, written for
reading rather than speed. tests/test_compat_models.py proves each one equal, key by key, to the
real program (nutcracker and memcached processes, pylibmc on two libmemcached builds, and the
uhashring and pymemcache packages).

Programs modelled (the versions the facts were read from and the tests ran against):

* twemproxy / nutcracker 0.5.0 (Debian 0.5.0+dfsg-2; upstream tag "Release twemproxy 0.5.0",
  commit ca45646; src/hashkit/ is unchanged up to 2022 master)  -> :class:`TwemproxyPool`
* libmemcached 1.0.16 (the libmemcached bundled by the pylibmc 1.6.3 cp311 wheel) and 1.1.4
  (libmemcached-awesome, Debian libmemcached11 1.1.4-1), both through pylibmc 1.6.3
  -> :class:`LibmemcachedClient`
* uhashring 2.5 -> :class:`UhashringRing`
* pymemcache 4.0.0 ``HashClient`` / ``RendezvousHash`` -> :class:`PymemcacheRendezvous`

Each class's docstring lists the facts it encodes and where each was read ("source:") and
proved ("test:"). Function-style entry points (configuration, key) -> server name:
:func:`twemproxy_server`, :func:`libmemcached_server`, :func:`uhashring_node`,
:func:`pymemcache_server`.

C ``char`` is signed on x86-64 (and unsigned on arm64/ppc64le/s390x). Several of the C hashes
below widen a *plain* ``char`` to 32 or 64 bits, so a key byte >= 0x80 enters them sign-extended
(0xe9 -> 0xffffffe9). The models take the x86-64 behaviour by default (``signed_char=True``);
that is what the tests proved. With ``signed_char=False`` they give what an arm64 build would
compute (not tested here: no such machine).
"""

from __future__ import annotations

import bisect
import hashlib
import math
import struct
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "TWEMPROXY_HASHES", "LIBMEMCACHED_HASHES", "HASHES",
    "TwemproxyServer", "TwemproxyPool", "twemproxy_server",
    "LibmemcachedServer", "LibmemcachedClient", "LibmemcachedRefused", "libmemcached_server",
    "UhashringRing", "uhashring_node",
    "PymemcacheRendezvous", "pymemcache_server", "pymemcache_murmur3_32",
    "ketama_md5_points", "float32",
]

M32 = 0xFFFFFFFF
M64 = 0xFFFFFFFFFFFFFFFF

Key = bytes | bytearray | memoryview | str


def _key_bytes(key: Key) -> bytes:
    """What a client sends for `key`: str as UTF-8, bytes as they are."""
    if isinstance(key, str):
        return key.encode("utf-8")
    return bytes(key)


def _char(byte: int, signed_char: bool) -> int:
    """The value of C ``(char)byte``: -128..127 when char is signed, else 0..255."""
    if signed_char and byte >= 0x80:
        return byte - 0x100
    return byte


def float32(x: float) -> float:
    """Round a double to the nearest IEEE-754 single (what a C ``float`` holds)."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


# =============================================================================================
# The key hashes shared by twemproxy's src/hashkit and libmemcached's libhashkit.
#
# source: twemproxy 0.5.0 src/hashkit/nc_*.c; libmemcached 1.0.16 libhashkit/*.cc and 1.1.4
# src/libhashkit/*.cc. Where both programs have a hash of the same name the arithmetic is the
# same (checked function by function), so one Python function serves both.
# test: test_compat_models.py, through nutcracker (every hash) and pylibmc (every hash pylibmc
# accepts), with keys holding bytes >= 0x80.
# =============================================================================================


def hash_one_at_a_time(data: bytes, signed_char: bool = True) -> int:
    """Bob Jenkins' one-at-a-time hash; each byte is added as ``(uint32_t)(char)byte``, so a
    byte >= 0x80 is added sign-extended on x86-64. (libmemcached's "default" hash.)"""
    value = 0
    for byte in data:
        value = (value + (_char(byte, signed_char) & M32)) & M32
        value = (value + (value << 10)) & M32
        value ^= value >> 6
    value = (value + (value << 3)) & M32
    value ^= value >> 11
    value = (value + (value << 15)) & M32
    return value


def hash_md5(data: bytes, signed_char: bool = True) -> int:
    """The first four bytes of the MD5 digest, read little-endian."""
    return int.from_bytes(hashlib.md5(data).digest()[0:4], "little")


def _crc16_xmodem_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC16_TABLE = _crc16_xmodem_table()


def hash_crc16(data: bytes, signed_char: bool = True) -> int:
    """twemproxy's crc16: the CRC-16/XMODEM table step ``crc = (crc << 8) ^ T[((crc >> 8) ^ b)
    & 0xff]`` on a 32-bit ``crc`` that is never cut to 16 bits, so bits above the 16th keep
    the shifted-out history and the result is a 32-bit number (only its low 16 bits are the
    CRC). Only the low 8 bits of the (possibly sign-extended) byte matter."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) ^ _CRC16_TABLE[((crc >> 8) ^ byte) & 0xFF]) & M32
    return crc


def hash_crc32(data: bytes, signed_char: bool = True) -> int:
    """twemproxy's "crc32" = libmemcached's "crc": bits 16..30 of the standard CRC-32, i.e.
    ``(crc32(data) >> 16) & 0x7fff`` -- a 15-bit value, as the sources' comment admits."""
    return (zlib.crc32(data) >> 16) & 0x7FFF


def hash_crc32a(data: bytes, signed_char: bool = True) -> int:
    """twemproxy's "crc32a": the standard (zlib) CRC-32, all 32 bits."""
    return zlib.crc32(data) & M32


_FNV64_OFFSET = 0xCBF29CE484222325
_FNV64_PRIME = 0x100000001B3
_FNV32_OFFSET = 0x811C9DC5
_FNV32_PRIME = 0x01000193


def hash_fnv1_64(data: bytes, signed_char: bool = True) -> int:
    """FNV-1 with a real 64-bit state, the byte XORed in as ``(uint64_t)(char)byte`` (a byte >=
    0x80 sets all 56 upper bits on x86-64); the result is the low 32 bits."""
    value = _FNV64_OFFSET
    for byte in data:
        value = (value * _FNV64_PRIME) & M64
        value ^= _char(byte, signed_char) & M64
    return value & M32


def hash_fnv1a_64(data: bytes, signed_char: bool = True) -> int:
    """Not FNV-1a-64 at all: both programs keep a *32-bit* state, start from the low 32 bits
    of the 64-bit offset basis (0x84222325) and multiply by the low 32 bits of the 64-bit prime
    (0x1b3); the byte goes in as ``(uint32_t)(char)byte``."""
    value = _FNV64_OFFSET & M32
    prime = _FNV64_PRIME & M32
    for byte in data:
        value ^= _char(byte, signed_char) & M32
        value = (value * prime) & M32
    return value


def hash_fnv1_32(data: bytes, signed_char: bool = True) -> int:
    """FNV-1 32-bit; the byte goes in as ``(uint32_t)(char)byte`` (sign-extended on x86-64)."""
    value = _FNV32_OFFSET
    for byte in data:
        value = (value * _FNV32_PRIME) & M32
        value ^= _char(byte, signed_char) & M32
    return value


def hash_fnv1a_32(data: bytes, signed_char: bool = True) -> int:
    """FNV-1a 32-bit; the byte goes in as ``(uint32_t)(char)byte`` (sign-extended on x86-64)."""
    value = _FNV32_OFFSET
    for byte in data:
        value ^= _char(byte, signed_char) & M32
        value = (value * _FNV32_PRIME) & M32
    return value


def hash_hsieh(data: bytes, signed_char: bool = True) -> int:
    """Paul Hsieh's SuperFastHash, seed 0 (the hash starts at 0, not at the length). The 16-bit
    reads are little-endian unsigned, but the third byte of a 3-byte tail is read through a
    plain ``char``: ``(uint32_t)key[2] << 18``, sign-extended on x86-64. Empty key -> 0."""
    n = len(data)
    if n == 0:
        return 0

    def get16(i: int) -> int:
        return data[i] | (data[i + 1] << 8)

    value = 0
    i = 0
    for _ in range(n >> 2):
        value = (value + get16(i)) & M32
        tmp = ((get16(i + 2) << 11) ^ value) & M32
        value = ((value << 16) ^ tmp) & M32
        i += 4
        value = (value + (value >> 11)) & M32
    rem = n & 3
    if rem == 3:
        value = (value + get16(i)) & M32
        value ^= (value << 16) & M32
        value ^= ((_char(data[i + 2], signed_char) & M32) << 18) & M32
        value = (value + (value >> 11)) & M32
    elif rem == 2:
        value = (value + get16(i)) & M32
        value ^= (value << 11) & M32
        value = (value + (value >> 17)) & M32
    elif rem == 1:
        value = (value + data[i]) & M32
        value ^= (value << 10) & M32
        value = (value + (value >> 1)) & M32
    value ^= (value << 3) & M32
    value = (value + (value >> 5)) & M32
    value ^= (value << 4) & M32
    value = (value + (value >> 17)) & M32
    value ^= (value << 25) & M32
    value = (value + (value >> 6)) & M32
    return value


def hash_murmur(data: bytes, signed_char: bool = True) -> int:
    """MurmurHash2 (32-bit, m=0x5bd1e995, r=24) with the length-derived seed both programs
    use: ``h = (0xdeadbeef * len) ^ len``. Bytes are read unsigned (4-byte words little-endian;
    Debian's nutcracker patch "murmurhashneutral2" and libmemcached 1.1's memcpy read give the
    same words on x86-64)."""
    m = 0x5BD1E995
    n = len(data)
    value = ((0xDEADBEEF * n) & M32) ^ (n & M32)
    full = n - (n & 3)
    for i in range(0, full, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & M32
        k ^= k >> 24
        k = (k * m) & M32
        value = (value * m) & M32
        value ^= k
    if n & 3:
        value ^= int.from_bytes(data[full:], "little")
        value = (value * m) & M32
    value ^= value >> 13
    value = (value * m) & M32
    value ^= value >> 15
    return value


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & M32


def hash_jenkins(data: bytes, signed_char: bool = True) -> int:
    """Bob Jenkins' lookup3 ``hashlittle`` with initval 13: a = b = c = 0xdeadbeef + len + 13;
    12-byte blocks as three little-endian words (the C code's aligned 32-bit and 16-bit read
    paths give the same words as its byte path on a little-endian machine); the last 1..12
    bytes zero-padded; an empty key returns c unmixed."""
    n = len(data)
    a = b = c = (0xDEADBEEF + n + 13) & M32
    if n == 0:
        return c

    def words(block: bytes) -> tuple[int, int, int]:
        block = block.ljust(12, b"\0")
        return (int.from_bytes(block[0:4], "little"), int.from_bytes(block[4:8], "little"),
                int.from_bytes(block[8:12], "little"))

    i = 0
    while n - i > 12:
        wa, wb, wc = words(data[i:i + 12])
        a, b, c = (a + wa) & M32, (b + wb) & M32, (c + wc) & M32
        # mix(a, b, c)
        a = (a - c) & M32; a ^= _rot(c, 4); c = (c + b) & M32    # noqa: E702
        b = (b - a) & M32; b ^= _rot(a, 6); a = (a + c) & M32    # noqa: E702
        c = (c - b) & M32; c ^= _rot(b, 8); b = (b + a) & M32    # noqa: E702
        a = (a - c) & M32; a ^= _rot(c, 16); c = (c + b) & M32   # noqa: E702
        b = (b - a) & M32; b ^= _rot(a, 19); a = (a + c) & M32   # noqa: E702
        c = (c - b) & M32; c ^= _rot(b, 4); b = (b + a) & M32    # noqa: E702
        i += 12
    wa, wb, wc = words(data[i:])
    a, b, c = (a + wa) & M32, (b + wb) & M32, (c + wc) & M32
    # final(a, b, c)
    c ^= b; c = (c - _rot(b, 14)) & M32     # noqa: E702
    a ^= c; a = (a - _rot(c, 11)) & M32     # noqa: E702
    b ^= a; b = (b - _rot(a, 25)) & M32     # noqa: E702
    c ^= b; c = (c - _rot(b, 16)) & M32     # noqa: E702
    a ^= c; a = (a - _rot(c, 4)) & M32      # noqa: E702
    b ^= a; b = (b - _rot(a, 14)) & M32     # noqa: E702
    c ^= b; c = (c - _rot(b, 24)) & M32     # noqa: E702
    return c


#: name -> hash function (data, signed_char) -> uint32, by twemproxy's names.
HASHES: dict[str, Callable[..., int]] = {
    "one_at_a_time": hash_one_at_a_time,
    "md5": hash_md5,
    "crc16": hash_crc16,
    "crc32": hash_crc32,
    "crc32a": hash_crc32a,
    "fnv1_64": hash_fnv1_64,
    "fnv1a_64": hash_fnv1a_64,
    "fnv1_32": hash_fnv1_32,
    "fnv1a_32": hash_fnv1a_32,
    "hsieh": hash_hsieh,
    "murmur": hash_murmur,
    "jenkins": hash_jenkins,
}

#: Every ``hash:`` twemproxy 0.5.0 accepts (src/hashkit/nc_hashkit.h HASH_CODEC).
TWEMPROXY_HASHES = tuple(HASHES)

#: pylibmc's hash names (behaviors "hash" / "ketama_hash") -> the libhashkit function.
#: "hsieh" is listed by pylibmc but refused by both libmemcached builds tested (built without
#: HAVE_HSIEH_HASH: memcached_behavior_set returns 38, MEMCACHED_INVALID_ARGUMENTS).
LIBMEMCACHED_HASHES: dict[str, str | None] = {
    "default": "one_at_a_time",
    "md5": "md5",
    "crc": "crc32",
    "fnv1_64": "fnv1_64",
    "fnv1a_64": "fnv1a_64",
    "fnv1_32": "fnv1_32",
    "fnv1a_32": "fnv1a_32",
    "hsieh": None,
    "murmur": "murmur",
    "jenkins": "jenkins",
}


def ketama_md5_points(name: bytes) -> list[int]:
    """The four ketama points of one "name-i" string: the MD5 digest as four little-endian
    uint32 words, in digest order (twemproxy ketama_hash / libmemcached ketama_server_hash with
    alignment 0..3)."""
    digest = hashlib.md5(name).digest()
    return [int.from_bytes(digest[4 * x:4 * x + 4], "little") for x in range(4)]


def _lower_bound_dispatch(values: Sequence[int], owners: Sequence[Any], hash_value: int) -> Any:
    """twemproxy ketama_dispatch / libmemcached dispatch_host: binary search for the first
    point whose value is >= the hash (a point equal to the hash wins), wrapping to the first
    point past the last. Among equal values, the first one in continuum order."""
    i = bisect.bisect_left(values, hash_value)
    if i == len(values):
        i = 0
    return owners[i]


# =============================================================================================
# twemproxy (nutcracker 0.5.0)
# =============================================================================================


@dataclass(frozen=True)
class TwemproxyServer:
    """One entry of a pool's ``servers:`` list, parsed like nc_conf.c conf_add_server."""

    spec: str         # the YAML string, "host:port:weight [name]" or "/path:weight [name]"
    address: str      # host, or unix socket path
    port: int         # 0 for a unix socket
    weight: int
    name: bytes       # the identity hashed into the continuum (server->name)
    pname: str        # "host:port:weight", how nutcracker logs the server

    @classmethod
    def parse(cls, spec: str) -> TwemproxyServer:
        """Parse from the end, like conf_add_server: the text after the last space is the
        name (optional), then ':' weight, then ':' port (a leading '/' means a unix socket:
        no port). The weight is mandatory and must be > 0.

        Name when none is given: "host" alone when the port is 11211 ("to maintain backward
        compatibility with libmemcached"), else "host:port"; for a unix socket the name is the
        path *plus the following ':'* (conf_add_server takes addrlen + 1 + portlen bytes with
        portlen 0), e.g. "/tmp/mc.sock:".
        """
        text = spec
        name: str | None = None
        if " " in text:
            text, name = text.rsplit(" ", 1)
        if ":" not in text:
            raise ValueError(f"{spec!r}: invalid 'hostname:port:weight [name]'")
        rest, weight_text = text.rsplit(":", 1)
        if text.startswith("/"):
            if ":" in rest:
                raise ValueError(f"{spec!r}: invalid '/path/unix_socket:weight [name]'")
            address, port_text = rest, ""
        else:
            if ":" not in rest:
                raise ValueError(f"{spec!r}: invalid 'hostname:port:weight [name]'")
            address, port_text = rest.rsplit(":", 1)
            if ":" in address:
                raise ValueError(f"{spec!r}: invalid 'hostname:port:weight [name]'")
        if not weight_text.isdigit() or int(weight_text) <= 0:
            raise ValueError(f"{spec!r}: weight must be a positive integer")
        weight = int(weight_text)
        port = 0
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise ValueError(f"{spec!r}: invalid port")
            port = int(port_text)
        if name is None:
            if port == 11211:
                name = address
            elif text.startswith("/"):
                name = address + ":"
            else:
                name = f"{address}:{port_text}"
        pname = text
        return cls(spec=spec, address=address, port=port, weight=weight,
                   name=name.encode(), pname=pname)


class TwemproxyPool:
    """Where nutcracker 0.5.0 sends a key, for one memcache pool.

    Facts encoded (source: twemproxy ca45646 = 0.5.0; test: tests/test_compat_models.py,
    ``test_twemproxy_*``, nutcracker 0.5.0+dfsg-2 in front of memcached 1.6.18):

    * Defaults: ``hash: fnv1a_64``, ``distribution: ketama`` (nc_conf.h CONF_DEFAULT_HASH /
      CONF_DEFAULT_DIST).
    * Hashes: every name in :data:`TWEMPROXY_HASHES`, computed as in src/hashkit (see the
      ``hash_*`` functions: signed-char widening, the 32-bit-state "fnv1a_64", the 15-bit
      "crc32", the never-truncated "crc16", murmur2 with a length seed, lookup3 with initval
      13).
    * Server order: conf_validate_server sorts the pool's servers by *name* before they are
      used (string_compare: shorter name first, then bytes by strncmp), so the server index
      order -- which decides modula's slots and ketama's ties -- is that sorted order, not the
      order of the YAML list. Duplicate names are refused.
    * ``hash_tag: "ab"`` (two characters): the key part after the first ``a`` and before the
      first ``b`` following it is hashed, when that part is non-empty; otherwise (no ``a``, no
      ``b`` after it, or "ab" adjacent) the whole key is hashed (nc_server.c server_pool_idx).
    * One server: every key goes to it, nothing is hashed. An empty key would hash to 0
      (server_pool_hash), unreachable through memcached's protocol.
    * ketama (nc_ketama.c): each server gets ``floorf((float)(pct * 160 / 4 * (float)n +
      1e-10)) * 4`` points, pct = (float)weight / (float)total_weight, in single precision
      except the 1e-10 addition (a double, then cast back to float); its points are the four
      MD5 words of "name-0", "name-1", ... Points are qsorted by value only; glibc 2.36's qsort
      is a stable merge sort here, so equal points stay in insertion order (server index, then
      point order). Lookup: first point >= hash, wrapping (:func:`_lower_bound_dispatch`).
    * modula (nc_modula.c): a table with each server repeated ``weight`` times, in server
      order; the key goes to ``table[hash % total_weight]`` -- modula honours weights.
    * random: ``random() % n`` per request; not a placement, so the model refuses it.
    * No auto_eject_hosts modelled (default false): every configured server is live.
    """

    def __init__(self, servers: Sequence[str], hash: str | None = None,  # noqa: A002
                 distribution: str | None = None, hash_tag: str | None = None,
                 signed_char: bool = True) -> None:
        self.hash_name = "fnv1a_64" if hash is None else hash
        self.distribution = "ketama" if distribution is None else distribution
        if self.hash_name not in HASHES:
            raise ValueError(f"twemproxy has no hash {self.hash_name!r}")
        if self.distribution == "random":
            raise ValueError("distribution 'random' picks a server per request with random(): "
                             "it is no key placement and has no model")
        if self.distribution not in ("ketama", "modula"):
            raise ValueError(f"twemproxy has no distribution {self.distribution!r}")
        if hash_tag is not None and len(hash_tag.encode()) != 2:
            raise ValueError("hash_tag must be two characters")
        self.hash_tag = None if hash_tag is None else hash_tag.encode()
        self.signed_char = signed_char
        parsed = [TwemproxyServer.parse(s) if isinstance(s, str) else s for s in servers]
        if not parsed:
            raise ValueError("a pool needs servers")
        # conf_validate_server: sort by (length, bytes) of the name; duplicates refused.
        self.servers: list[TwemproxyServer] = sorted(parsed, key=lambda s: (len(s.name), s.name))
        for left, right in zip(self.servers, self.servers[1:]):
            if left.name == right.name:
                raise ValueError(f"servers with the same name {left.name!r}")
        self._hash = HASHES[self.hash_name]
        if self.distribution == "ketama":
            self._values, self._owners = self._ketama_continuum()
        else:
            self._table = [i for i, s in enumerate(self.servers) for _ in range(s.weight)]

    @staticmethod
    def points_per_server(weight: int, total_weight: int, nservers: int) -> int:
        """nc_ketama.c: ``(uint32_t)(floorf((float)(pct * 160 / 4 * (float)n + 1e-10)) * 4)``
        with ``float pct = (float)weight / (float)total_weight``."""
        pct = float32(float32(weight) / float32(total_weight))
        x = float32(pct * 160.0)            # pct * KETAMA_POINTS_PER_SERVER (int -> float)
        x = float32(x / 4.0)
        x = float32(x * float32(nservers))
        x = float32(x + 0.0000000001)       # double addition, cast back to float
        return int(math.floor(x)) * 4

    def _ketama_continuum(self) -> tuple[list[int], list[int]]:
        total = sum(s.weight for s in self.servers)
        n = len(self.servers)
        points: list[tuple[int, int]] = []   # (value, server index) in insertion order
        for index, server in enumerate(self.servers):
            for i in range(self.points_per_server(server.weight, total, n) // 4):
                host = (server.name + b"-%d" % i)[:272]   # KETAMA_MAX_HOSTLEN - 1
                points.extend((value, index) for value in ketama_md5_points(host))
        points.sort(key=lambda p: p[0])     # stable, like glibc's merge-sort qsort
        return [p[0] for p in points], [p[1] for p in points]

    def hashed_part(self, key: Key) -> bytes:
        """The bytes of `key` that are hashed (after hash_tag)."""
        data = _key_bytes(key)
        if self.hash_tag is not None:
            start = data.find(self.hash_tag[0:1])
            if start != -1:
                end = data.find(self.hash_tag[1:2], start + 1)
                if end != -1 and end - start > 1:
                    return data[start + 1:end]
        return data

    def key_hash(self, key: Key) -> int:
        data = self.hashed_part(key)
        if len(self.servers) == 1 or not data:
            return 0
        return self._hash(data, self.signed_char)

    def index(self, key: Key) -> int:
        """Index of the server in :attr:`servers` (name-sorted order)."""
        if len(self.servers) == 1:
            return 0
        h = self.key_hash(key)
        if self.distribution == "ketama":
            return _lower_bound_dispatch(self._values, self._owners, h)
        return self._table[h % len(self._table)]

    def server(self, key: Key) -> TwemproxyServer:
        return self.servers[self.index(key)]

    def server_name(self, key: Key) -> str:
        """The server as nutcracker names it in the continuum (``server->name``)."""
        return self.server(key).name.decode("utf-8", "surrogateescape")


def twemproxy_server(pool: Mapping[str, Any], key: Key) -> str:
    """(pool configuration as in the YAML: ``servers``, optional ``hash``, ``distribution``,
    ``hash_tag``; key) -> the name of the server nutcracker 0.5.0 sends the key to."""
    return TwemproxyPool(pool["servers"], hash=pool.get("hash"),
                         distribution=pool.get("distribution"),
                         hash_tag=pool.get("hash_tag")).server_name(key)


# =============================================================================================
# libmemcached through pylibmc
# =============================================================================================


class LibmemcachedRefused(ValueError):
    """The configuration crashes (or corrupts the memory of) that libmemcached version."""


@dataclass(frozen=True)
class LibmemcachedServer:
    host: str          # hostname, or unix socket path
    port: int          # 11211 by default; 0 for a unix socket
    weight: int
    unix: bool = False

    @property
    def name(self) -> str:
        """How libmemcached names the server in its ketama continuum: "host" alone on port
        11211 (MEMCACHED_DEFAULT_PORT), else "host:port" (a unix socket: "path:0")."""
        if self.port == 11211:
            return self.host
        return f"{self.host}:{self.port}"

    @property
    def address(self) -> str:
        return self.host if self.unix else f"{self.host}:{self.port}"


def _parse_pylibmc_spec(spec: Any) -> LibmemcachedServer:
    """A server spec as pylibmc 1.6.3 takes it: "host", "host:port", "host:port:weight",
    "[v6]", "[v6]:port[:weight]", "/unix/path", or a (type, host, port[, weight]) tuple."""
    if isinstance(spec, tuple):
        _, host, port, *rest = spec
        weight = rest[0] if rest else 1
        return LibmemcachedServer(str(host), int(port) or 11211, int(weight),
                                  str(host).startswith("/"))
    if spec.startswith("/"):
        return LibmemcachedServer(spec, 0, 1, unix=True)
    if spec.startswith("udp:"):
        raise ValueError("udp servers are not modelled")
    port: Any = 11211
    weight: Any = 1
    if spec.startswith("["):
        if spec.endswith("]"):
            host = spec[1:-1]
        else:
            host, port = spec[1:].rsplit("]:", 1)
    elif ":" in spec:
        host, port = spec.split(":", 1)
    else:
        host = spec
    if isinstance(port, str) and ":" in port:
        port, weight = port.split(":", 1)
    port, weight = int(port), int(weight)
    if not 0 <= port < 65536 or not 0 <= weight < 65536:   # pylibmc parses them as "HH"
        raise OverflowError("port and weight are unsigned shorts")
    return LibmemcachedServer(host, port or 11211, weight)


class LibmemcachedClient:
    """Where libmemcached (1.0.16 or 1.1.4) sends a key, for a ``pylibmc.Client(servers,
    behaviors=...)``.

    Facts encoded (source: libmemcached 1.0.16 and 1.1.4 libmemcached/{behavior,hosts,hash}.cc,
    libhashkit/*; pylibmc 1.6.3 src/_pylibmcmodule.{c,h}, pylibmc/client.py; test:
    tests/test_compat_models.py ``test_libmemcached_*``, by memcached_generate_hash through
    ``Client.hash`` and by storing keys through pylibmc on real memcached servers):

    * pylibmc applies the behaviors it is given *before* adding the servers, in its own fixed
      order (hash, ketama_hash, ketama, ketama_weighted, distribution, ...), whatever the dict
      order; then it adds the servers one by one with memcached_server_add_with_weight.
    * Defaults: distribution modula, key hash "default" (one-at-a-time).
    * ``hash``: the key hash (libhashkit base_hash). "hsieh" is refused (not compiled in).
    * ``ketama_hash``: sets libhashkit's distribution_hash, which nothing reads: it changes no
      placement (checked for every hash).
    * ``ketama`` true: distribution CONSISTENT_KETAMA and weighted off; false: MODULA.
    * ``ketama_weighted`` true: *forces the key hash to md5* (overriding ``hash``) and sets
      distribution CONSISTENT_WEIGHTED (weighted on); false: same as ``ketama: True``
      (consistent, unweighted) -- turning ketama_weighted off turns ketama *on*.
    * ``distribution``: "consistent" and "consistent ketama" clear the weighted flag,
      "consistent weighted" sets it, "modula" and "consistent ketama spy" leave it.
    * Adding a server of weight > 1 while the distribution is consistent (any of the four)
      turns weighted ketama on, keeping the key hash: weights plus ``ketama: True`` give a
      weighted continuum probed with one-at-a-time, not md5.
    * ``_sort_hosts``: the server list is sorted by (strcmp(hostname), port) before each
      continuum build.
    * One server: every key goes to it (no hash computed).
    * modula: ``hash % server_count`` -- weights ignored.
    * Continuum, unweighted: 100 points per server, each the *key hash* of "name-i"
      (i = 0..99; name = "host" on port 11211, else "host:port"; a unix socket "path:0").
      Weighted: ``floor((float)(pct * 160 / 4 * (float)n + 1e-10)) * 4`` points, pct =
      (float)weight / (float)total_weight (1.0.16 adds a double 1e-10, 1.1.4 a float 1e-10F:
      no integer floor can tell them apart), four MD5 words per "name-i" whatever the key
      hash. "consistent ketama spy": "/host:port-i" names (port always written, i from 0).
    * Equal points: 1.1.4 compares (value, server index); 1.0.16 compares values only but
      glibc's stable merge-sort qsort keeps insertion order; both give (value, index) order.
      Lookup: first point >= hash, wrapping.
    * Keys: str is UTF-8 encoded, bytes hashed as given. Prefix/namespace, auto-eject,
      random and virtual-bucket distributions are not modelled (refused).
    * Configurations the library does not survive raise :class:`LibmemcachedRefused`:
      1.1.4 (Debian's build keeps its assertions) aborts the process with an assertion in
      update_continuum as soon as a consistent distribution holds more than 100 servers
      (MEMCACHED_CONTINUUM_SIZE = 100 * 100 points; modula is fine at any size). 1.0.16
      (asserts compiled out) serves 200 servers, but sizes its continuum buffer in *servers*
      (continuum_count = live + 10) and only regrows it when the server count passes that:
      if a weight > 1 turns weighted ketama on while ``ketama`` is set, the buffer, sized at
      100 points per server, is overrun by the weighted points (up to 160 per server) --
      e.g. ``ketama: True`` with 11 servers, one of weight 10, segfaults. The model
      simulates both buffer sizes after each server add.
    """

    _ORDER = ("hash", "ketama_hash", "ketama", "ketama_weighted", "distribution")
    _CONSISTENT = ("consistent", "consistent ketama", "consistent ketama spy",
                   "consistent weighted")

    def __init__(self, servers: Iterable[Any], behaviors: Mapping[str, Any] | None = None,
                 version: str = "1.1.4", signed_char: bool = True) -> None:
        if version not in ("1.0.16", "1.1.4"):
            raise ValueError("modelled libmemcached versions: 1.0.16, 1.1.4")
        self.version = version
        self.signed_char = signed_char
        behaviors = dict(behaviors or {})
        unknown = set(behaviors) - set(self._ORDER) - {"_sort_hosts"}
        if unknown:
            raise ValueError(f"behaviors not modelled: {sorted(unknown)}")
        self.distribution = "modula"
        self.weighted = False
        self.hash_name = "default"
        self.sort_hosts = bool(behaviors.get("_sort_hosts", False))
        for name in self._ORDER:          # pylibmc's PylibMC_behaviors order
            if name not in behaviors or behaviors[name] is None:
                continue
            value = behaviors[name]
            if name in ("hash", "ketama_hash"):
                if value not in LIBMEMCACHED_HASHES or LIBMEMCACHED_HASHES[value] is None:
                    raise ValueError(f"libmemcached refuses hash {value!r}")
                if name == "hash":
                    self.hash_name = value
            elif name == "ketama":
                self._set_distribution("consistent ketama" if value else "modula")
            elif name == "ketama_weighted":
                if value:
                    self.hash_name = "md5"
                    self._set_distribution("consistent weighted")
                else:
                    self._set_distribution("consistent ketama")
            elif name == "distribution":
                self._set_distribution(value)
        self.servers: list[LibmemcachedServer] = []
        count, capacity = 0, 0         # 1.0.16's ketama.continuum_count and allocated points
        for spec in servers:           # memcached_server_add_with_weight, one at a time
            server = _parse_pylibmc_spec(spec)
            self.servers.append(server)
            if server.weight > 1 and self.distribution in self._CONSISTENT:
                self.weighted = True
            if self.distribution not in self._CONSISTENT:
                continue
            # run_distribution -> update_continuum, after every add
            live = len(self.servers)
            if version == "1.1.4" and live * 100 > 100 * 100:
                raise LibmemcachedRefused(
                    "libmemcached 1.1.4 aborts (assert_msg in update_continuum: 'invalid size "
                    "information being given to qsort()') when a consistent distribution "
                    "holds more than 100 servers")
            if version == "1.0.16":
                if live > count:
                    capacity = (live + 10) * (160 if self.weighted else 100)
                    count = live + 10
                # unweighted needs 100 per server, weighted at most 160 (floor): only a
                # buffer sized at 100 per server can be too small for weighted points
                if live * (160 if self.weighted else 100) > capacity and \
                        self._points_needed() > capacity:
                    raise LibmemcachedRefused(
                        "libmemcached 1.0.16 writes past its continuum buffer (heap "
                        "overflow; observed: segfault / 'realloc(): invalid next size'): the "
                        "buffer was sized at 100 points per server before a weight > 1 "
                        "switched it to weighted ketama's up to 160")
        if not self.servers:
            raise ValueError("no servers")
        if self.sort_hosts:
            self.servers.sort(key=lambda s: (s.host.encode(), s.port))
        hash_function = LIBMEMCACHED_HASHES[self.hash_name]
        assert hash_function is not None
        self._hash = HASHES[hash_function]
        if self.distribution in self._CONSISTENT:
            self._values, self._owners = self._continuum()

    def _points_needed(self) -> int:
        n = len(self.servers)
        if not self.weighted:
            return 100 * n
        total = sum(s.weight for s in self.servers)
        return sum(self.points_per_server(s.weight, total, n) for s in self.servers)

    def _set_distribution(self, name: str) -> None:
        if name in ("random", "virtual bucket"):
            raise ValueError(f"distribution {name!r} is no deterministic placement")
        if name not in ("modula",) + self._CONSISTENT:
            raise ValueError(f"unknown distribution {name!r}")
        if name in ("consistent", "consistent ketama"):
            self.weighted = False
        elif name == "consistent weighted":
            self.weighted = True
        self.distribution = name

    def points_per_server(self, weight: int, total_weight: int, nservers: int) -> int:
        pct = float32(float32(weight) / float32(total_weight))
        x = float32(pct * 160.0)
        x = float32(x / 4.0)
        x = float32(x * float32(nservers))
        if self.version == "1.0.16":
            x = float32(x + 0.0000000001)                  # double literal
        else:
            x = float32(x + float32(0.0000000001))         # 0.0000000001F
        return int(math.floor(x)) * 4

    def _point_name(self, server: LibmemcachedServer, i: int) -> bytes:
        if self.distribution == "consistent ketama spy":
            return f"/{server.host}:{server.port if not server.unix else 0}-{i}".encode()
        if server.port == 11211:
            return f"{server.host}-{i}".encode()
        return f"{server.host}:{server.port if not server.unix else 0}-{i}".encode()

    def _continuum(self) -> tuple[list[int], list[int]]:
        n = len(self.servers)
        total = sum(s.weight for s in self.servers)
        points: list[tuple[int, int]] = []
        for index, server in enumerate(self.servers):
            if self.weighted:
                for i in range(self.points_per_server(server.weight, total, n) // 4):
                    name = self._point_name(server, i)
                    points.extend((v, index) for v in ketama_md5_points(name))
            else:
                for i in range(100):
                    points.append((self._hash(self._point_name(server, i), self.signed_char),
                                   index))
        points.sort()      # (value, index): 1.1.4's comparator; 1.0.16 via a stable qsort
        return [p[0] for p in points], [p[1] for p in points]

    def key_hash(self, key: Key) -> int:
        if len(self.servers) == 1:
            return 0
        return self._hash(_key_bytes(key), self.signed_char)

    def index(self, key: Key) -> int:
        """What ``pylibmc.Client.hash(key)`` (memcached_generate_hash) returns."""
        if len(self.servers) == 1:
            return 0
        h = self.key_hash(key)
        if self.distribution == "modula":
            return h % len(self.servers)
        return _lower_bound_dispatch(self._values, self._owners, h)

    def server(self, key: Key) -> LibmemcachedServer:
        return self.servers[self.index(key)]

    def server_name(self, key: Key) -> str:
        return self.server(key).name


def libmemcached_server(servers: Iterable[Any], behaviors: Mapping[str, Any] | None,
                        key: Key, version: str = "1.1.4") -> str:
    """(pylibmc servers, pylibmc behaviors, key) -> libmemcached's name of the server
    ("host" on port 11211, else "host:port")."""
    return LibmemcachedClient(servers, behaviors, version=version).server_name(key)


# =============================================================================================
# uhashring 2.5
# =============================================================================================


class UhashringRing:
    """Where ``uhashring.HashRing(nodes, ...)`` puts a key (``get_node``).

    Facts encoded (source: uhashring 2.5 ring.py, ring_meta.py, ring_ketama.py; test:
    tests/test_compat_models.py ``test_uhashring_*`` against the package):

    * Keys are formatted with ``str()`` before hashing: ``b"ab"`` routes as the text
      ``"b'ab'"``, ``5`` as ``"5"``; the text is UTF-8 encoded (a lone surrogate raises).
    * nodes: a str (one node), a list (weight 1 each; order kept, a repeat changes nothing), or
      a dict {name: weight} / {name: {"weight": w, "vnodes": v, ...}}; other conf keys
      (hostname, port, instance, nodename) do not move keys. Node names are formatted with
      f-strings into point names "name-i".
    * Default ring (MetaRing): vnodes default 160; a node has vnodes * weight points,
      md5("name-i") read as a 128-bit big-endian integer (``int(hexdigest, 16)``); keys hash
      the same way.
    * ``hash_fn="ketama"`` (KetamaRing): vnodes default 40, replicas 4; a node gets
      ``ks = (vnodes * node_count * weight) // total_weight`` (integer division) names
      "name-0".."name-(ks-1)", each giving ``replicas`` points: the MD5 digest's little-endian
      uint32 words 0..replicas-1; keys hash to word 0 of md5(str(key)).
    * Equal points: the ring is a dict point -> node filled in node order, so the *last*
      node written wins a shared point.
    * Lookup: ``bisect`` (bisect_right): the first point *strictly greater* than the key hash,
      wrapping to the first point (unlike twemproxy/libmemcached's ">=").
    * An empty ring returns None. Custom ``hash_fn`` callables and ``weight_fn`` are not
      modelled.
    """

    def __init__(self, nodes: Any = (), hash_fn: str | None = None, vnodes: int | None = None,
                 replicas: int = 4) -> None:
        if hash_fn not in (None, "ketama"):
            raise ValueError("only the default ring and hash_fn='ketama' are modelled")
        self.ketama = hash_fn == "ketama"
        default_vnodes = vnodes if vnodes is not None else (40 if self.ketama else 160)
        if not 1 <= replicas <= 4 and self.ketama:
            raise ValueError("ketama replicas index the 16-byte digest: 1..4")
        self.replicas = replicas
        if isinstance(nodes, str):
            nodes = [nodes]
        conf: dict[Any, tuple[int, int]] = {}        # name -> (weight, vnodes), insertion order
        if isinstance(nodes, dict):
            for name, node_conf in nodes.items():
                if isinstance(node_conf, int):
                    conf[name] = (node_conf, default_vnodes)
                elif isinstance(node_conf, dict):
                    conf[name] = (node_conf.get("weight", 1), node_conf.get("vnodes",
                                                                            default_vnodes))
                else:
                    raise ValueError("node configuration should be a dict or an int")
        elif isinstance(nodes, (list, tuple)):
            for name in nodes:
                conf[name] = (1, default_vnodes)
        else:
            raise ValueError("nodes should be a str, list or dict")
        self.conf = conf
        ring: dict[int, Any] = {}
        total_weight = sum(w for w, _ in conf.values())
        for name, (weight, node_vnodes) in conf.items():
            if self.ketama:
                count = (node_vnodes * len(conf) * weight) // total_weight
                for i in range(count):
                    digest = hashlib.md5(f"{name}-{i}".encode()).digest()
                    for r in range(replicas):
                        ring[int.from_bytes(digest[4 * r:4 * r + 4], "little")] = name
            else:
                for i in range(node_vnodes * weight):
                    ring[self._md5_int(f"{name}-{i}")] = name
        self._points = sorted(ring)
        self._ring = ring

    @staticmethod
    def _md5_int(text: str) -> int:
        return int.from_bytes(hashlib.md5(text.encode("utf-8")).digest(), "big")

    def key_hash(self, key: Any) -> int:
        text = str(key)
        if self.ketama:
            return int.from_bytes(hashlib.md5(text.encode("utf-8")).digest()[0:4], "little")
        return self._md5_int(text)

    def get_node(self, key: Any) -> Any:
        if not self._points:
            return None
        i = bisect.bisect_right(self._points, self.key_hash(key))
        if i == len(self._points):
            i = 0
        return self._ring[self._points[i]]


def uhashring_node(nodes: Any, key: Any, **kwargs: Any) -> Any:
    """(uhashring nodes configuration, key) -> the node ``HashRing(nodes, **kwargs).get_node``
    returns."""
    return UhashringRing(nodes, **kwargs).get_node(key)


# =============================================================================================
# pymemcache 4.0.0 HashClient (rendezvous hashing)
# =============================================================================================


def pymemcache_murmur3_32(text: str, seed: int = 0) -> int:
    """pymemcache's murmur3_32: MurmurHash3 x86_32 over the *code points masked to 8 bits*
    (``ord(c) & 0xff``; its unmasked fourth byte of a block only adds bits above 32 that the
    arithmetic never brings back down), the length being the number of code points."""
    data = bytes(ord(ch) & 0xFF for ch in text)
    c1, c2 = 0xCC9E2D51, 0x1B873593
    h = seed & M32
    full = len(data) - (len(data) & 3)
    for i in range(0, full, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * c1) & M32
        k = _rot(k, 15)
        k = (k * c2) & M32
        h ^= k
        h = _rot(h, 13)
        h = (h * 5 + 0xE6546B64) & M32
    if len(data) & 3:
        k = int.from_bytes(data[full:], "little")
        k = (k * c1) & M32
        k = _rot(k, 15)
        k = (k * c2) & M32
        h ^= k
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & M32
    h ^= h >> 16
    return h


def _pymemcache_node_name(spec: Any) -> Any:
    """pymemcache normalize_server_spec + HashClient._make_client_key: "host:port" (default
    port 11211; "[v6]:port" loses its brackets), a (host, port) tuple -> "host:port", a unix
    socket ("/path" or "unix:/path") -> the path."""
    if isinstance(spec, tuple):
        server: Any = spec
    elif not isinstance(spec, str):
        raise ValueError(f"Unsupported server specification: {spec!r}")
    elif spec.startswith("unix:"):
        server = spec[5:]
    elif spec.startswith("/"):
        server = spec
    else:
        if ":" not in spec or spec.endswith("]"):
            host, port = spec, 11211
        else:
            host, port_text = spec.rsplit(":", 1)
            port = int(port_text)
        if host.startswith("["):
            host = host.strip("[]")
        server = (host, port)
    if isinstance(server, tuple) and len(server) == 2:
        return f"{server[0]}:{server[1]}"
    return server


class PymemcacheRendezvous:
    """Where pymemcache's ``HashClient(servers)`` sends a key (RendezvousHash.get_node).

    Facts encoded (source: pymemcache 4.0.0 client/hash.py, client/rendezvous.py,
    client/murmur3.py, client/base.py; test: tests/test_compat_models.py
    ``test_pymemcache_*`` against HashClient and RendezvousHash):

    * Node names: "host:port" (see :func:`_pymemcache_node_name`); repeats are added once.
    * Score of a node for a key: murmur3_32(f"{node}-{key}", seed 0) on code points masked to 8
      bits (:func:`pymemcache_murmur3_32`). The key is formatted with an f-string: a bytes key
      ``b"ab"`` is scored as the text "b'ab'"; HashClient passes the key as the caller gave it
      (its key_prefix and the ASCII/whitespace checks do not reach the hasher).
    * Highest score wins; nodes are scored in insertion order, the first strictly higher
      score takes over; on an exact tie the winner becomes ``max(str(node), str(winner))``.
    * No nodes: None. Dead-server removal (retry_attempts/dead_timeout) is not modelled.
    """

    def __init__(self, servers: Iterable[Any] = (), seed: int = 0,
                 names_given: bool = False) -> None:
        self.seed = seed
        self.nodes: list[Any] = []
        for spec in servers:
            name = spec if names_given else _pymemcache_node_name(spec)
            if name not in self.nodes:
                self.nodes.append(name)

    def get_node(self, key: Any) -> Any:
        best_score = -1
        winner: Any = None
        for node in self.nodes:
            score = pymemcache_murmur3_32(f"{node}-{key}", self.seed)
            if score > best_score:
                best_score, winner = score, node
            elif score == best_score:
                winner = max(str(node), str(winner))
        return winner


def pymemcache_server(servers: Iterable[Any], key: Any) -> Any:
    """(HashClient servers, key) -> the "host:port" name HashClient routes the key to."""
    return PymemcacheRendezvous(servers).get_node(key)
