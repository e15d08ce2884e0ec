"""Batch key hashing: ringkit.hash64_many beside the per-key loops a user writes today.

Every group hashes one key set; its reference rows are the alternatives (xxhash, mmh3 and hashlib
loops, or ringkit itself on another input kind), and bench/report.py divides their medians by each
row's median. The targets are the issue's; the report says whether they were met, nothing here
asserts on time. Each ringkit row first checks, on a sample, that it computes what its peer does,
so the rows compare the same work.
"""

from __future__ import annotations

import hashlib
from typing import Any

import mmh3
import numpy as np
import pytest
import xxhash

import ringkit

SAMPLE = 1000  # keys checked against the peer before timing
N_SHORT = 1_000_000  # the sizes of the key sets that bench/conftest.py builds
N_LONG = 100_000
KIB_BYTES = N_LONG * 1024


# --------------------------------------------------------------------------------------------------
# The loops a user writes today


def xxhash_loop(keys: list[str]) -> list[int]:
    return [xxhash.xxh64_intdigest(k.encode()) for k in keys]


def xxhash_bytes_loop(keys: list[bytes]) -> list[int]:
    return [xxhash.xxh64_intdigest(k) for k in keys]


def xxhash_uint64_loop(keys: np.ndarray) -> list[int]:
    return [xxhash.xxh64_intdigest(k.to_bytes(8, "little")) for k in keys.tolist()]


def mmh3_loop(keys: list[str] | list[bytes]) -> list[int]:
    return [mmh3.hash64(k, signed=False)[0] for k in keys]


def md5_loop(keys: list[str]) -> list[int]:
    return [int.from_bytes(hashlib.md5(k.encode()).digest()[:8], "little") for k in keys]


def md5_bytes_loop(keys: list[bytes]) -> list[int]:
    return [int.from_bytes(hashlib.md5(k).digest()[:8], "little") for k in keys]


def same(ours: np.ndarray, theirs: list[int]) -> None:
    assert ours.dtype == np.uint64
    assert ours[: len(theirs)].tolist() == theirs


# --------------------------------------------------------------------------------------------------
# 1,000,000 short str keys in a list

SHORT = "hash64: 1,000,000 short str keys ('user:%d', list)"


@pytest.mark.benchmark(group=SHORT)
def test_short_str_ringkit_xxh64(measure: Any, short_str_keys: list[str]) -> None:
    same(ringkit.hash64_many(short_str_keys[:SAMPLE]), xxhash_loop(short_str_keys[:SAMPLE]))
    measure(ringkit.hash64_many, short_str_keys, label="ringkit hash64_many xxh64",
            n_keys=N_SHORT,
            targets=[("ns_per_key", "<=", 10),
                     ("speedup", ">=", 10, "xxhash loop")])


@pytest.mark.benchmark(group=SHORT)
def test_short_str_ringkit_murmur3(measure: Any, short_str_keys: list[str]) -> None:
    sample = short_str_keys[:SAMPLE]
    same(ringkit.hash64_many(sample, "murmur3"), mmh3_loop(sample))
    measure(ringkit.hash64_many, short_str_keys, "murmur3", label="ringkit hash64_many murmur3",
            n_keys=N_SHORT)


@pytest.mark.benchmark(group=SHORT)
def test_short_str_ringkit_md5(measure: Any, short_str_keys: list[str]) -> None:
    same(ringkit.hash64_many(short_str_keys[:SAMPLE], "md5"), md5_loop(short_str_keys[:SAMPLE]))
    measure(ringkit.hash64_many, short_str_keys, "md5", label="ringkit hash64_many md5",
            n_keys=N_SHORT)


@pytest.mark.benchmark(group=SHORT)
def test_short_str_xxhash_loop(measure: Any, short_str_keys: list[str]) -> None:
    measure(xxhash_loop, short_str_keys, label="xxhash loop", n_keys=N_SHORT, reference=True)


@pytest.mark.benchmark(group=SHORT)
def test_short_str_mmh3_loop(measure: Any, short_str_keys: list[str]) -> None:
    measure(mmh3_loop, short_str_keys, label="mmh3 loop", n_keys=N_SHORT, reference=True)


@pytest.mark.benchmark(group=SHORT)
def test_short_str_md5_loop(measure: Any, short_str_keys: list[str]) -> None:
    measure(md5_loop, short_str_keys, label="hashlib.md5 loop", n_keys=N_SHORT, reference=True)


# --------------------------------------------------------------------------------------------------
# 1,000,000 uint64 in a numpy array

UINT64 = "hash64: 1,000,000 uint64 (numpy array)"


@pytest.mark.benchmark(group=UINT64)
def test_uint64_ringkit_xxh64(measure: Any, uint64_keys: np.ndarray) -> None:
    same(ringkit.hash64_many(uint64_keys[:SAMPLE]), xxhash_uint64_loop(uint64_keys[:SAMPLE]))
    measure(ringkit.hash64_many, uint64_keys, label="ringkit hash64_many xxh64",
            n_keys=N_SHORT, targets=[("ns_per_key", "<=", 3)])


@pytest.mark.benchmark(group=UINT64)
def test_uint64_ringkit_xxh64_out(measure: Any, uint64_keys: np.ndarray) -> None:
    # The output array reused: no 8 MB allocation (and its page faults) per call.
    out = np.empty(N_SHORT, dtype=np.uint64)
    measure(ringkit.hash64_many, uint64_keys, out=out, label="ringkit hash64_many xxh64 out=",
            n_keys=N_SHORT, targets=[("ns_per_key", "<=", 3)])
    same(out, xxhash_uint64_loop(uint64_keys[:SAMPLE]))


@pytest.mark.benchmark(group=UINT64)
def test_uint64_xxhash_loop(measure: Any, uint64_keys: np.ndarray) -> None:
    measure(xxhash_uint64_loop, uint64_keys, label="xxhash loop (tolist, to_bytes)",
            n_keys=N_SHORT, reference=True)


# --------------------------------------------------------------------------------------------------
# 100,000 keys of 1 KiB

KIB = "hash64: 100,000 keys of 1 KiB (bytes)"


@pytest.mark.benchmark(group=KIB)
def test_kib_ringkit_xxh64(measure: Any, kib_keys: list[bytes]) -> None:
    same(ringkit.hash64_many(kib_keys[:SAMPLE]), xxhash_bytes_loop(kib_keys[:SAMPLE]))
    measure(ringkit.hash64_many, kib_keys, label="ringkit hash64_many xxh64",
            n_keys=N_LONG, n_bytes=KIB_BYTES, targets=[("gb_per_s", ">=", 2)])


@pytest.mark.benchmark(group=KIB)
def test_kib_ringkit_xxh64_arrow(measure: Any, kib_arrow: Any, kib_keys: list[bytes]) -> None:
    same(ringkit.hash64_many(kib_arrow.slice(0, SAMPLE)), xxhash_bytes_loop(kib_keys[:SAMPLE]))
    measure(ringkit.hash64_many, kib_arrow, label="ringkit hash64_many xxh64 (pyarrow binary)",
            n_keys=N_LONG, n_bytes=KIB_BYTES, targets=[("gb_per_s", ">=", 2)])


@pytest.mark.benchmark(group=KIB)
def test_kib_ringkit_murmur3(measure: Any, kib_keys: list[bytes]) -> None:
    same(ringkit.hash64_many(kib_keys[:SAMPLE], "murmur3"), mmh3_loop(kib_keys[:SAMPLE]))
    measure(ringkit.hash64_many, kib_keys, "murmur3", label="ringkit hash64_many murmur3",
            n_keys=N_LONG, n_bytes=KIB_BYTES)


@pytest.mark.benchmark(group=KIB)
def test_kib_ringkit_md5(measure: Any, kib_keys: list[bytes]) -> None:
    same(ringkit.hash64_many(kib_keys[:SAMPLE], "md5"), md5_bytes_loop(kib_keys[:SAMPLE]))
    measure(ringkit.hash64_many, kib_keys, "md5", label="ringkit hash64_many md5",
            n_keys=N_LONG, n_bytes=KIB_BYTES)


@pytest.mark.benchmark(group=KIB)
def test_kib_xxhash_loop(measure: Any, kib_keys: list[bytes]) -> None:
    measure(xxhash_bytes_loop, kib_keys, label="xxhash loop", n_keys=N_LONG, n_bytes=KIB_BYTES,
            reference=True)


@pytest.mark.benchmark(group=KIB)
def test_kib_mmh3_loop(measure: Any, kib_keys: list[bytes]) -> None:
    measure(mmh3_loop, kib_keys, label="mmh3 loop", n_keys=N_LONG, n_bytes=KIB_BYTES,
            reference=True)


@pytest.mark.benchmark(group=KIB)
def test_kib_md5_loop(measure: Any, kib_keys: list[bytes]) -> None:
    measure(md5_bytes_loop, kib_keys, label="hashlib.md5 loop", n_keys=N_LONG, n_bytes=KIB_BYTES,
            reference=True)


# --------------------------------------------------------------------------------------------------
# The same 1,000,000 short keys: pyarrow string array against a list

ARROW = "hash64: 1,000,000 short str keys, pyarrow string array vs list"


@pytest.mark.benchmark(group=ARROW)
def test_arrow_ringkit_list(measure: Any, short_str_keys: list[str]) -> None:
    measure(ringkit.hash64_many, short_str_keys, label="ringkit hash64_many (list)",
            n_keys=N_SHORT, reference=True)


@pytest.mark.benchmark(group=ARROW)
def test_arrow_ringkit_arrow(measure: Any, short_str_arrow: Any, short_str_keys: list[str]) -> None:
    same(ringkit.hash64_many(short_str_arrow), xxhash_loop(short_str_keys[:SAMPLE]))
    measure(ringkit.hash64_many, short_str_arrow, label="ringkit hash64_many (pyarrow string)",
            n_keys=N_SHORT,
            targets=[("speedup", ">=", 1.5, "ringkit hash64_many (list)")])
