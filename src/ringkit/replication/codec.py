"""How a replicated item is laid out on a node (layout 2): one byte string per item, whose
bytewise order is its version order, kept in per-bucket hashes.

An item is stored as one blob::

    [0:14]   version counter, 14 lowercase hex digits (counters stay below 2**53)
    [14:42]  writer, 28 characters: the store's writer id (hex) left-padded with "z" to 16
             (a letter no writer id holds, so that "a" and "0a" stay apart), then a 12-digit
             hex sequence number (see ReplicatedStore)
    [42]     "v" for a value, "t" for a tombstone
    [43:51]  the item's hash, 8 bytes big-endian: xxh64 of the key's UTF-8 bytes followed
             by blob[0:43] (what repair's per-bucket digests XOR together)
    [51:]    the value; for a tombstone, its deletion time in ms (decimal)

Since every field before the value has a fixed width and a version is unique to one write,
comparing two blobs of one key compares their versions (counter, then writer): a node applies
a write when its blob is greater than the one it holds. Blobs are grouped by bucket, the top
BUCKET_BITS bits of the key's xxh64 (the ring's own position of the key), so that a node can
enumerate and digest a bucket at once. The layout is written to every node as
``LAYOUT_VERSION``; a node holding data of another layout is refused (:class:`LayoutError`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ringkit._hashing import hash64, hash64_many
from ringkit.errors import RingkitError
from ringkit.replication.base import MAX_COUNTER, Record, Version

__all__ = ["LAYOUT_VERSION", "BUCKET_BITS", "N_BUCKETS", "HEAD", "BLOB_HEAD", "WRITER_DIGITS",
           "LayoutError", "buckets_of", "bucket_of", "encode_many", "decode", "version_of",
           "encode", "writer_name", "header", "check_writer", "check_blob"]

LAYOUT_VERSION = "2"
BUCKET_BITS = 16
N_BUCKETS = 1 << BUCKET_BITS
WRITER_ID_DIGITS = 16
PAD = "z"       # pads a writer id to 16: not a hex digit, so two ids never pad alike
SEQ_DIGITS = 12
WRITER_DIGITS = WRITER_ID_DIGITS + SEQ_DIGITS
VERSION_HEAD = 14 + WRITER_DIGITS       # counter + writer: the bytes that order versions
HEAD = VERSION_HEAD + 1                 # + the tombstone flag
BLOB_HEAD = HEAD + 8                    # + the item hash
_SHIFT = np.uint64(64 - BUCKET_BITS)


class LayoutError(RingkitError):
    """A node holds replicated data of another layout (see ringkit.replication.codec): written
    by an older ringkit, or by something else under the same prefix."""


def writer_name(writer_id: str, seq: int) -> str:
    """The writer part of a version: the writer id padded to 16 with "z", then the
    sequence."""
    return f"{writer_id:{PAD}>16}{seq:012x}"


def buckets_of(keys: Sequence[bytes] | Sequence[str]) -> npt.NDArray[np.uint64]:
    """The bucket of each key: the top BUCKET_BITS bits of its xxh64 (seed 0)."""
    if not len(keys):
        return np.zeros(0, dtype=np.uint64)
    buckets: npt.NDArray[np.uint64] = hash64_many(keys) >> _SHIFT
    return buckets


def check_writer(writer: str) -> bytes:
    """A version's writer as stored: exactly WRITER_DIGITS lowercase letters or digits (the
    stores write hex, padded with "z"), so that blobs compare by version."""
    raw = writer.encode() if isinstance(writer, str) else b""
    if len(raw) != WRITER_DIGITS or not raw.isalnum() or raw.lower() != raw:
        raise ValueError(f"version writer must be {WRITER_DIGITS} lowercase hex digits (as "
                         f"ReplicatedStore writes them), got {writer!r}")
    return raw


def bucket_of(field: bytes) -> int:
    """The bucket of one key (its UTF-8 bytes)."""
    return hash64(field) >> (64 - BUCKET_BITS)


def header(counter: int, writer: str, tombstone: bool) -> bytes:
    """A blob's first HEAD bytes: counter, writer, tombstone flag."""
    if not 0 <= counter <= MAX_COUNTER:
        raise ValueError(f"version counter must be in [0, 2**53), got {counter}")
    return b"%014x%s%s" % (counter, check_writer(writer), b"t" if tombstone else b"v")


def encode_many(fields: Sequence[bytes], values: Sequence[bytes | None],
                counters: Sequence[int], writers: Sequence[str], deleted_ms: int) -> list[bytes]:
    """Blobs of many items (a value of None is a tombstone deleted at `deleted_ms`)."""
    heads = [b"%014x%s%s" % (c, w.encode(), b"v" if v is not None else b"t")
             for c, w, v in zip(counters, writers, values)]
    hashes = hash64_many([f + h for f, h in zip(fields, heads)]).tolist()
    tomb = b"%d" % deleted_ms
    return [h + x.to_bytes(8, "big") + (tomb if v is None else v)
            for h, x, v in zip(heads, hashes, values)]


def encode(record: Record) -> bytes:
    """The blob of one Record."""
    header(record.version.counter, record.version.writer, False)   # checks the version
    return encode_many([record.key.encode()], [record.value], [record.version.counter],
                       [record.version.writer], record.deleted_ms)[0]


def version_of(blob: bytes) -> Version:
    return Version(int(blob[:14], 16), blob[14:VERSION_HEAD].decode())


def decode(key: str, blob: bytes) -> Record:
    """The Record of a blob."""
    version = Version(int(blob[:14], 16), blob[14:VERSION_HEAD].decode())
    if blob[VERSION_HEAD] == 0x74:   # "t"
        return Record(key, None, version, int(blob[BLOB_HEAD:] or b"0"))
    return Record(key, blob[BLOB_HEAD:], version, 0)


def check_blob(blob: object) -> bytes:
    if not isinstance(blob, bytes) or len(blob) < BLOB_HEAD or blob[VERSION_HEAD] not in b"vt":
        raise LayoutError(f"not an item of layout {LAYOUT_VERSION}: {blob!r:.80}")
    return blob
