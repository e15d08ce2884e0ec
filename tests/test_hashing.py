"""The hash kernels: bit-exact against reference packages, batch == scalar loop for every input
kind, hypothesis properties, a uniformity check, bad input, and threads.

Oracles: xxhash (xxh64), mmh3 (murmur3: MurmurHash3 x64_128's first half), hashlib (md5: the first
8 digest bytes, little-endian) and a pure-Python FNV-1a below. A key is hashed as bytes: str as
UTF-8, bytes-like as its bytes, int as its 8-byte little-endian two's-complement form.
"""

from __future__ import annotations

import hashlib
import random
import re
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import mmh3
import numpy as np
import pyarrow as pa
import pytest
import xxhash
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ringkit
from ringkit import hash64, hash64_many

MASK64 = (1 << 64) - 1
INT_MIN, INT_MAX = -(1 << 63), (1 << 64) - 1

# --------------------------------------------------------------------------------------------------
# Oracles


def fnv1a64_reference(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & MASK64
    return h


def reference(data: bytes, algorithm: str, seed: int = 0) -> int:
    if algorithm == "xxh64":
        return xxhash.xxh64_intdigest(data, seed)
    if algorithm == "murmur3":
        return mmh3.hash64(data, seed, signed=False)[0]
    if algorithm == "fnv1a64":
        assert seed == 0
        return fnv1a64_reference(data)
    if algorithm == "md5":
        assert seed == 0
        return int.from_bytes(hashlib.md5(data).digest()[:8], "little")
    raise AssertionError(algorithm)


def key_bytes(key: object) -> bytes:
    """The bytes a key hashes as (str: UTF-8; bytes-like: itself; int: 8 bytes LE two's c.)."""
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key)
    value = int(key)  # type: ignore[call-overload]
    assert INT_MIN <= value <= INT_MAX
    return (value & MASK64).to_bytes(8, "little")


# Every algorithm with a few seeds, including the largest each one takes.
SEEDED = [
    ("xxh64", 0),
    ("xxh64", 1),
    ("xxh64", 0x9E3779B97F4A7C15),
    ("xxh64", 2**63),
    ("xxh64", 2**64 - 1),
    ("murmur3", 0),
    ("murmur3", 1),
    ("murmur3", 2**31),
    ("murmur3", 2**32 - 1),
    ("fnv1a64", 0),
    ("md5", 0),
]
SEEDED_IDS = [f"{a}-seed{s:#x}" for a, s in SEEDED]
# One case per algorithm for the wider batch tests (the largest seed where there is one).
ONE_SEED = [("xxh64", 2**64 - 1), ("murmur3", 2**32 - 1), ("fnv1a64", 0), ("md5", 0)]
ONE_SEED_IDS = [a for a, _ in ONE_SEED]

LENGTHS = range(0, 1025)

# Code points for non-ASCII text: 2-, 3- and 4-byte UTF-8, the encoding boundaries included, and
# never a surrogate.
NON_ASCII_POOL = (
    [0x80, 0xFF, 0x7FF, 0x800, 0xFFFF, 0xE000, 0xD7FF, 0x10000, 0x10FFFF, 0x1F389, 0x1D11E]
    + list(range(0xC0, 0x180))
    + list(range(0x3040, 0x30A0))
    + list(range(0x4E00, 0x4E80))
    + list(range(0x1F600, 0x1F650))
)


def random_non_ascii(rng: random.Random, n: int) -> str:
    chars = []
    for _ in range(n):
        if rng.random() < 0.3:
            chars.append(chr(rng.randrange(0x20, 0x7F)))
        else:
            chars.append(chr(rng.choice(NON_ASCII_POOL)))
    return "".join(chars)


def random_ascii(rng: random.Random, n: int) -> str:
    return "".join(chr(rng.randrange(0, 0x80)) for _ in range(n))


# --------------------------------------------------------------------------------------------------
# Bit-exact against the reference packages


def test_algorithms_constant() -> None:
    assert ringkit.ALGORITHMS == ("xxh64", "murmur3", "fnv1a64", "md5")


@pytest.mark.parametrize(
    ("algorithm", "key", "expected"),
    [
        # Published test vectors, independent of the reference packages.
        ("xxh64", b"", 0xEF46DB3751D8E999),
        ("fnv1a64", b"", 0xCBF29CE484222325),
        ("fnv1a64", b"a", 0xAF63DC4C8601EC8C),
        ("fnv1a64", b"foobar", 0x85944171F73967E8),
        ("md5", b"", int.from_bytes(bytes.fromhex("d41d8cd98f00b204"), "little")),
        ("md5", b"abc", int.from_bytes(bytes.fromhex("900150983cd24fb0"), "little")),
        ("murmur3", b"", 0),
    ],
)
def test_known_answers(algorithm: str, key: bytes, expected: int) -> None:
    assert reference(key, algorithm) == expected
    assert hash64(key, algorithm) == expected
    assert hash64(key.decode(), algorithm) == expected


@pytest.mark.parametrize(("algorithm", "seed"), SEEDED, ids=SEEDED_IDS)
def test_bytes_of_every_length_match_reference(algorithm: str, seed: int) -> None:
    rng = random.Random(f"bytes-{algorithm}-{seed}")
    keys = [rng.randbytes(n) for n in LENGTHS]
    expected = [reference(k, algorithm, seed) for k in keys]
    for key, want in zip(keys, expected, strict=True):
        assert hash64(key, algorithm, seed) == want, len(key)
        assert hash64(bytearray(key), algorithm, seed) == want, len(key)
        assert hash64(memoryview(key), algorithm=algorithm, seed=seed) == want, len(key)
    assert hash64_many(keys, algorithm, seed).tolist() == expected


@pytest.mark.parametrize(("algorithm", "seed"), SEEDED, ids=SEEDED_IDS)
def test_unaligned_buffers_match_reference(algorithm: str, seed: int) -> None:
    # Keys that start at every offset within a word: the kernels must not assume alignment.
    rng = random.Random(f"unaligned-{algorithm}-{seed}")
    big = rng.randbytes(4096)
    view = memoryview(big)
    for offset in range(9):
        for n in (0, 1, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 1000):
            want = reference(big[offset : offset + n], algorithm, seed)
            assert hash64(view[offset : offset + n], algorithm, seed) == want, (offset, n)


@pytest.mark.parametrize(("algorithm", "seed"), SEEDED, ids=SEEDED_IDS)
def test_ascii_str_of_every_length_matches_reference(algorithm: str, seed: int) -> None:
    rng = random.Random(f"ascii-{algorithm}-{seed}")
    keys = [random_ascii(rng, n) for n in LENGTHS]
    expected = [reference(k.encode(), algorithm, seed) for k in keys]
    assert [hash64(k, algorithm, seed) for k in keys] == expected
    assert hash64_many(keys, algorithm, seed).tolist() == expected


@pytest.mark.parametrize(("algorithm", "seed"), SEEDED, ids=SEEDED_IDS)
def test_non_ascii_str_of_every_length_matches_reference(algorithm: str, seed: int) -> None:
    rng = random.Random(f"text-{algorithm}-{seed}")
    keys = [random_non_ascii(rng, n) for n in LENGTHS]
    expected = [reference(k.encode(), algorithm, seed) for k in keys]
    assert [hash64(k, algorithm, seed) for k in keys] == expected
    assert hash64_many(keys, algorithm, seed).tolist() == expected
    # The same text through the numpy 'U' encoder (UCS4 -> UTF-8 in the kernel) and pyarrow.
    assert hash64_many(np.array(keys), algorithm, seed).tolist() == expected
    assert hash64_many(pa.array(keys, pa.string()), algorithm, seed).tolist() == expected


@pytest.mark.parametrize(("algorithm", "seed"), SEEDED, ids=SEEDED_IDS)
def test_int_keys_match_reference(algorithm: str, seed: int) -> None:
    rng = random.Random(f"int-{algorithm}-{seed}")
    keys = [0, 1, -1, 2, 255, 256, -256, 2**31, -(2**31), 2**32, 2**63 - 1, -(2**63), 2**63]
    keys += [2**64 - 1, 2**64 - 2]
    keys += [rng.randrange(INT_MIN, INT_MAX + 1) for _ in range(500)]
    expected = [reference(key_bytes(k), algorithm, seed) for k in keys]
    assert [hash64(k, algorithm, seed) for k in keys] == expected
    assert hash64_many(keys, algorithm, seed).tolist() == expected
    # -1 and 2**64-1 share a two's-complement form, hence a hash.
    assert hash64(-1, algorithm, seed) == hash64(2**64 - 1, algorithm, seed)
    assert hash64(5, algorithm, seed) == hash64((5).to_bytes(8, "little"), algorithm, seed)


def test_defaults_are_xxh64_seed_0() -> None:
    assert hash64("user:42") == xxhash.xxh64_intdigest(b"user:42")
    assert hash64_many(["user:42"]).tolist() == [xxhash.xxh64_intdigest(b"user:42")]
    assert hash64("user:42", seed=7) == xxhash.xxh64_intdigest(b"user:42", 7)


def test_numpy_scalars_hash_like_python_values() -> None:
    for dtype in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64):
        info = np.iinfo(dtype)
        for value in (info.min, info.max, 0, 1):
            assert hash64(dtype(value)) == hash64(int(value)), (dtype, value)
    assert hash64(np.True_) == hash64(1) == hash64(True)
    assert hash64(np.False_) == hash64(0) == hash64(False)
    assert hash64(np.str_("héllo")) == hash64("héllo")
    assert hash64(np.bytes_(b"ab\x00c")) == hash64(b"ab\x00c")


def test_str_subclass_hashes_like_str() -> None:
    class Name(str):
        pass

    for text in ("plain", "héllo 🎉"):
        assert hash64(Name(text)) == hash64(text)
        assert hash64_many([Name(text), text]).tolist() == [hash64(text)] * 2


# --------------------------------------------------------------------------------------------------
# hash64_many == the scalar loop, for every input kind


class _Name(str):
    pass


MIXED_KEYS: list[Any] = [
    "",
    "a",
    "user:42",
    "héllo",
    "日本語のキー",
    "🎉 astral 𝄞 \U0010ffff",
    "a\x00b",
    "trail\x00",
    _Name("subclass"),
    np.str_("numpy str"),
    "x" * 1000,
    "ü" * 300,
    b"",
    b"\x00",
    b"\x00\xff\x80",
    b"trail\x00\x00",
    bytearray(b"bytearray"),
    memoryview(b"view"),
    np.bytes_(b"numpy bytes"),
    0,
    1,
    -1,
    2**63 - 1,
    -(2**63),
    2**63,
    2**64 - 1,
    True,
    False,
    np.int8(-5),
    np.int64(-(2**63)),
    np.uint64(2**64 - 1),
    np.uint32(7),
    np.True_,
    np.False_,
]

STRINGS = [
    "",
    "a",
    "ab",
    "user:42",
    "héllo",
    "日本語",
    "🎉𝄞",
    "a\x00b",
    "\x7f\x80\u07ff\u0800\uffff",
    "\U00010000\U0010ffff",
    "é" * 40,
    "key-" * 20,
    "z",
]
BYTES = [s.encode() for s in STRINGS] + [b"\xff\xfe\xfd", b"\x00\x00", b"end\x00"]

INT_DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
BIG_ENDIAN_DTYPES = [">i2", ">i4", ">i8", ">u2", ">u4", ">u8", "<i8", "<u4"]


def _int_values(dtype: np.dtype[Any], rng: random.Random) -> np.ndarray:
    info = np.iinfo(dtype)
    values = [info.min, info.max, 0, 1, info.max - 1, info.min + 1]
    if info.min < 0:
        values += [-1, -2]
    values += [rng.randint(int(info.min), int(info.max)) for _ in range(60)]
    return np.array(values, dtype=dtype)


def _object_array(items: list[Any]) -> np.ndarray:
    arr = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        arr[i] = item
    return arr


def _random_keys(seed: int, n: int) -> list[Any]:
    rng = random.Random(seed)
    keys: list[Any] = []
    for _ in range(n):
        kind = rng.randrange(4)
        if kind == 0:
            keys.append(random_ascii(rng, rng.randrange(40)))
        elif kind == 1:
            keys.append(random_non_ascii(rng, rng.randrange(40)))
        elif kind == 2:
            keys.append(rng.randbytes(rng.randrange(40)))
        else:
            keys.append(rng.randrange(INT_MIN, INT_MAX + 1))
    return keys


def _batch_cases() -> dict[str, Callable[[], Any]]:
    """Factories of batches; each call returns a fresh batch (generators are single-use)."""
    rng = random.Random(2024)
    cases: dict[str, Callable[[], Any]] = {
        "list-mixed": lambda: list(MIXED_KEYS),
        "tuple-mixed": lambda: tuple(MIXED_KEYS),
        "list-random-5000": lambda: _random_keys(5, 5000),
        "list-ascii-str": lambda: [f"user:{i}" for i in range(300)],
        "list-empty": lambda: [],
        "tuple-empty": lambda: (),
        "generator": lambda: (k for k in MIXED_KEYS),
        "iterator": lambda: iter(STRINGS),
        "range": lambda: range(-100, 1000, 7),
        "dict-keys-view": lambda: {s: 1 for s in STRINGS}.keys(),
        "numpy-bool": lambda: np.array([True, False, False, True]),
        "numpy-bool-strided": lambda: np.array([True, False] * 20)[::3],
        "numpy-S": lambda: np.array(BYTES, dtype="S32"),
        "numpy-S-strided": lambda: np.array(BYTES, dtype="S32")[::2],
        "numpy-S-empty": lambda: np.array([], dtype="S4"),
        "numpy-U": lambda: np.array(STRINGS),
        "numpy-U-big-endian": lambda: np.array(STRINGS).astype(">U20"),
        "numpy-U-strided": lambda: np.array(STRINGS)[1::2],
        "numpy-U-empty": lambda: np.array([], dtype="U3"),
        "numpy-object": lambda: _object_array(MIXED_KEYS),
        "numpy-object-strided": lambda: _object_array(MIXED_KEYS)[::2],
        "numpy-object-empty": lambda: np.array([], dtype=object),
        "numpy-StringDType": lambda: np.array(STRINGS, dtype=np.dtypes.StringDType()),
        "numpy-StringDType-na": lambda: np.array(
            STRINGS, dtype=np.dtypes.StringDType(na_object=None)
        ),
        "numpy-StringDType-strided": lambda: np.array(STRINGS, dtype=np.dtypes.StringDType())[::2],
        "numpy-int64-empty": lambda: np.array([], dtype=np.int64),
    }
    for name in INT_DTYPES:
        values = _int_values(np.dtype(name), rng)
        cases[f"numpy-{name}"] = lambda v=values: v.copy()
        cases[f"numpy-{name}-strided"] = lambda v=values: v.copy()[::3]
    for name in BIG_ENDIAN_DTYPES:
        values = _int_values(np.dtype(name), rng)
        cases[f"numpy-{name}"] = lambda v=values: v.copy()
    strings = STRINGS + ["tail"] * 3
    for type_name, items in (
        ("string", strings),
        ("large_string", strings),
        ("binary", BYTES),
        ("large_binary", BYTES),
    ):
        arrow_type = getattr(pa, type_name)()
        cases[f"arrow-{type_name}"] = lambda t=arrow_type, i=items: pa.array(i, t)
        cases[f"arrow-{type_name}-sliced"] = lambda t=arrow_type, i=items: pa.array(i, t).slice(
            3, 7
        )
        cases[f"arrow-{type_name}-sliced-tail"] = lambda t=arrow_type, i=items: pa.array(i, t)[5:]
        cases[f"arrow-{type_name}-empty"] = lambda t=arrow_type: pa.array([], t)
        cases[f"arrow-{type_name}-chunked"] = lambda t=arrow_type, i=items: pa.chunked_array(
            [pa.array(i[:4], t), pa.array([], t), pa.array(i[4:], t).slice(1), pa.array(i, t)], t
        )
        cases[f"arrow-{type_name}-chunked-empty"] = lambda t=arrow_type: pa.chunked_array([], t)
    cases["arrow-int64"] = lambda: pa.array([0, 1, -1, 2**63 - 1, -(2**63)], pa.int64())
    cases["arrow-dictionary"] = lambda: pa.array(strings).dictionary_encode()
    cases["arrow-string-view"] = lambda: pa.array(strings).cast(pa.string_view())
    return cases


BATCH_CASES = _batch_cases()


def _scalars(keys: Any, factory: Callable[[], Any]) -> list[Any]:
    """The keys one by one, as a user indexes them: keys[i] for sequences and numpy arrays."""
    if isinstance(keys, (pa.Array, pa.ChunkedArray)):
        return keys.to_pylist()
    if isinstance(keys, (list, tuple, range, np.ndarray)):
        return [keys[i] for i in range(len(keys))]
    return list(factory())  # a one-shot iterable: a fresh copy of it


@pytest.mark.parametrize(("algorithm", "seed"), ONE_SEED, ids=ONE_SEED_IDS)
@pytest.mark.parametrize("kind", list(BATCH_CASES))
def test_batch_equals_scalar_loop(kind: str, algorithm: str, seed: int) -> None:
    factory = BATCH_CASES[kind]
    keys = factory()
    expected = [hash64(k, algorithm, seed) for k in _scalars(keys, factory)]
    got = hash64_many(keys, algorithm, seed)
    assert isinstance(got, np.ndarray)
    assert got.dtype == np.uint64 and got.ndim == 1
    assert got.tolist() == expected

    # out= is filled (every stale value overwritten) and is what comes back.
    out = np.full(len(expected), 0xDEADBEEF, dtype=np.uint64)
    result = hash64_many(factory(), algorithm, seed, out=out)
    assert result is out
    assert out.tolist() == expected


@pytest.mark.parametrize(("algorithm", "seed"), ONE_SEED, ids=ONE_SEED_IDS)
def test_batch_of_reference_keys_matches_reference(algorithm: str, seed: int) -> None:
    keys = _random_keys(11, 3000)
    expected = [reference(key_bytes(k), algorithm, seed) for k in keys]
    assert hash64_many(keys, algorithm, seed).tolist() == expected
    assert hash64_many(tuple(keys), algorithm=algorithm, seed=seed).tolist() == expected


def test_out_is_returned_for_each_call_and_keeps_its_identity() -> None:
    out = np.zeros(3, dtype=np.uint64)
    first = hash64_many(["a", "b", "c"], out=out)
    second = hash64_many([1, 2, 3], out=out)
    assert first is out and second is out
    assert out.tolist() == [hash64(1), hash64(2), hash64(3)]
    # A C-contiguous view of a larger array is a valid out, and only its window is written.
    base = np.zeros(6, dtype=np.uint64)
    assert hash64_many(["a", "b"], out=base[2:4]).base is base
    assert base.tolist() == [0, 0, hash64("a"), hash64("b"), 0, 0]


def test_out_may_be_the_key_array_itself() -> None:
    keys = np.arange(1000, dtype=np.uint64)
    expected = [hash64(int(k)) for k in keys]
    assert hash64_many(keys, out=keys) is keys
    assert keys.tolist() == expected


# --------------------------------------------------------------------------------------------------
# Hypothesis

algorithm_and_seed = st.one_of(
    st.tuples(st.just("xxh64"), st.integers(0, 2**64 - 1)),
    st.tuples(st.just("murmur3"), st.integers(0, 2**32 - 1)),
    st.tuples(st.sampled_from(["fnv1a64", "md5"]), st.just(0)),
)
int_keys = st.integers(INT_MIN, INT_MAX)
any_key = st.one_of(st.text(), st.binary(), int_keys)


@given(key=st.text(), case=algorithm_and_seed)
def test_hypothesis_text_matches_reference(key: str, case: tuple[str, int]) -> None:
    algorithm, seed = case
    assert hash64(key, algorithm, seed) == reference(key.encode(), algorithm, seed)


@given(key=st.binary(), case=algorithm_and_seed)
def test_hypothesis_binary_matches_reference(key: bytes, case: tuple[str, int]) -> None:
    algorithm, seed = case
    want = reference(key, algorithm, seed)
    assert hash64(key, algorithm, seed) == want
    assert hash64(bytearray(key), algorithm, seed) == want


@given(key=int_keys, case=algorithm_and_seed)
def test_hypothesis_int_matches_reference(key: int, case: tuple[str, int]) -> None:
    algorithm, seed = case
    assert hash64(key, algorithm, seed) == reference(key_bytes(key), algorithm, seed)


@given(keys=st.lists(any_key, max_size=40), case=algorithm_and_seed)
def test_hypothesis_many_equals_scalar_and_reference(
    keys: list[Any], case: tuple[str, int]
) -> None:
    algorithm, seed = case
    expected = [reference(key_bytes(k), algorithm, seed) for k in keys]
    assert [hash64(k, algorithm, seed) for k in keys] == expected
    assert hash64_many(keys, algorithm, seed).tolist() == expected
    assert hash64_many(tuple(keys), algorithm, seed).tolist() == expected
    assert hash64_many(iter(keys), algorithm, seed).tolist() == expected
    assert hash64_many(_object_array(keys), algorithm, seed).tolist() == expected


@given(texts=st.lists(st.text(), max_size=30), case=algorithm_and_seed)
def test_hypothesis_text_arrays_equal_scalar_loop(texts: list[str], case: tuple[str, int]) -> None:
    algorithm, seed = case
    expected = [hash64(t, algorithm, seed) for t in texts]
    variable = np.array(texts, dtype=np.dtypes.StringDType())
    assert hash64_many(variable, algorithm, seed).tolist() == expected
    assert hash64_many(pa.array(texts, pa.string()), algorithm, seed).tolist() == expected
    assert hash64_many(pa.array(texts, pa.large_string()), algorithm, seed).tolist() == expected
    # 'U' arrays drop trailing NULs from their items, as arr[i] does: compare with arr[i].
    fixed = np.array(texts, dtype=str) if texts else np.array([], dtype="U1")
    assert hash64_many(fixed, algorithm, seed).tolist() == [
        hash64(fixed[i], algorithm, seed) for i in range(len(fixed))
    ]


@pytest.mark.parametrize("algorithm", ringkit.ALGORITHMS)
@pytest.mark.parametrize("count", [1, 3, 4, 9])
def test_arrow_batches_of_empty_keys_only(algorithm: str, count: int) -> None:
    """No data buffer at all (nothing to point at): found by the sanitizers in md5's lanes."""
    empty = hash64("", algorithm)
    for array in (pa.array([""] * count), pa.array([b""] * count, pa.large_binary()),
                  pa.array([""] * count, pa.string_view())):
        assert hash64_many(array, algorithm).tolist() == [empty] * count


@given(blobs=st.lists(st.binary(), max_size=30), case=algorithm_and_seed)
def test_hypothesis_binary_arrays_equal_scalar_loop(
    blobs: list[bytes], case: tuple[str, int]
) -> None:
    algorithm, seed = case
    expected = [hash64(b, algorithm, seed) for b in blobs]
    assert hash64_many(pa.array(blobs, pa.binary()), algorithm, seed).tolist() == expected
    assert hash64_many(pa.array(blobs, pa.large_binary()), algorithm, seed).tolist() == expected
    fixed = np.array(blobs, dtype=bytes) if blobs else np.array([], dtype="S1")
    assert hash64_many(fixed, algorithm, seed).tolist() == [
        hash64(fixed[i], algorithm, seed) for i in range(len(fixed))
    ]


@given(
    arr=hnp.arrays(
        dtype=st.one_of(
            hnp.integer_dtypes(endianness="?"),
            hnp.unsigned_integer_dtypes(endianness="?"),
            hnp.boolean_dtypes(),
        ),
        shape=st.integers(0, 50),
    ),
    case=algorithm_and_seed,
)
def test_hypothesis_numeric_arrays_equal_scalar_loop(
    arr: np.ndarray, case: tuple[str, int]
) -> None:
    algorithm, seed = case
    expected = [reference(key_bytes(int(v)), algorithm, seed) for v in arr.tolist()]
    assert [hash64(arr[i], algorithm, seed) for i in range(len(arr))] == expected
    assert hash64_many(arr, algorithm, seed).tolist() == expected
    assert hash64_many(arr[::2], algorithm, seed).tolist() == expected[::2]


# --------------------------------------------------------------------------------------------------
# Uniformity

N_UNIFORM = 100_000
# Chi-square with 63 degrees of freedom: mean 63, standard deviation about 11.2. 200 is over 12
# standard deviations out (p < 1e-15), so a good hash essentially never fails it, while a hash that
# returned the raw int (every key in bucket 0) scores about 6.3 million.
CHI2_LIMIT = 200.0


def chi_square_64(buckets: np.ndarray) -> float:
    counts = np.bincount(buckets.astype(np.int64), minlength=64)
    assert counts.shape == (64,)
    expected = buckets.shape[0] / 64
    return float(((counts - expected) ** 2 / expected).sum())


def test_chi_square_statistic_catches_a_raw_int() -> None:
    raw = np.arange(N_UNIFORM, dtype=np.uint64)
    assert chi_square_64(raw >> np.uint64(58)) > CHI2_LIMIT
    rng = np.random.default_rng(0)
    assert chi_square_64(rng.integers(0, 64, N_UNIFORM)) < CHI2_LIMIT


def _check_uniform(hashes: np.ndarray) -> None:
    assert chi_square_64(hashes >> np.uint64(58)) < CHI2_LIMIT, "top 6 bits"
    assert chi_square_64(hashes & np.uint64(63)) < CHI2_LIMIT, "low 6 bits"
    assert chi_square_64((hashes >> np.uint64(29)) & np.uint64(63)) < CHI2_LIMIT, "middle bits"
    # Every bit is set in about half the hashes (1/2 +- 0.02 is over 12 standard deviations).
    bits = (hashes[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)
    ones = bits.mean(axis=0)
    assert np.all(np.abs(ones - 0.5) < 0.02), ones


def _check_distinct(hashes: np.ndarray) -> None:
    # 100k distinct keys, 64-bit hashes: a collision has a probability of about 3e-10.
    assert np.unique(hashes).shape[0] == hashes.shape[0]


@pytest.mark.parametrize("algorithm", ringkit.ALGORITHMS)
def test_uniformity_sequential_ints(algorithm: str) -> None:
    hashes = hash64_many(np.arange(N_UNIFORM, dtype=np.uint64), algorithm)
    _check_uniform(hashes)
    _check_distinct(hashes)


@pytest.mark.parametrize("algorithm", ["xxh64", "murmur3", "md5"])
def test_uniformity_sequential_strings(algorithm: str) -> None:
    hashes = hash64_many([f"user:{i}" for i in range(N_UNIFORM)], algorithm)
    _check_uniform(hashes)
    _check_distinct(hashes)


def test_fnv1a64_sequential_strings_are_uniform_in_low_bits_only() -> None:
    # FNV-1a has no final mixing: keys that differ in their last bytes differ mostly in the low
    # bits (its top 6 bits score a chi-square in the thousands here; the reference oracle agrees,
    # so this is the algorithm, not the kernel). Check what FNV-1a does promise.
    keys = [f"user:{i}" for i in range(N_UNIFORM)]
    hashes = hash64_many(keys, "fnv1a64")
    assert hashes[:2000].tolist() == [fnv1a64_reference(k.encode()) for k in keys[:2000]]
    for shift in (0, 6, 12):
        window = (hashes >> np.uint64(shift)) & np.uint64(63)
        assert chi_square_64(window) < CHI2_LIMIT, shift
    _check_distinct(hashes)


# --------------------------------------------------------------------------------------------------
# Bad input: the right exception, a message that names the argument, never a crash


def _names(argument: str) -> str:
    """A regex: the message starts with the argument's name, exactly (``key`` does not match
    ``keys``, nor ``keys`` match ``keys[3]``)."""
    return "^" + re.escape(argument) + r"(?![\w\[])"


def _gen_bad_at_3() -> Iterator[Any]:
    yield from ("a", "b", "c", None)


class _NotAKey:
    pass


BAD_HASH64: list[tuple[str, Callable[[], object], type[Exception], str]] = [
    ("None", lambda: hash64(None), TypeError, "key"),
    ("float", lambda: hash64(1.5), TypeError, "key"),
    ("numpy-float64", lambda: hash64(np.float64(1.0)), TypeError, "key"),
    ("numpy-float32", lambda: hash64(np.float32(1.0)), TypeError, "key"),
    ("numpy-complex", lambda: hash64(np.complex128(1j)), TypeError, "key"),
    ("numpy-datetime64", lambda: hash64(np.datetime64("2024-01-01")), TypeError, "key"),
    ("complex", lambda: hash64(1j), TypeError, "key"),
    ("list", lambda: hash64([1]), TypeError, "key"),
    ("nested-list", lambda: hash64([[1, 2]]), TypeError, "key"),
    ("dict", lambda: hash64({"a": 1}), TypeError, "key"),
    ("object", lambda: hash64(_NotAKey()), TypeError, "key"),
    ("numpy-array", lambda: hash64(np.array([1, 2])), TypeError, "key"),
    ("non-contiguous-view", lambda: hash64(memoryview(b"abcdef")[::2]), TypeError, "key"),
    ("lone-surrogate", lambda: hash64("\ud800"), ValueError, "key"),
    ("lone-surrogate-inside", lambda: hash64("ab\udfffcd"), ValueError, "key"),
    ("int-too-big", lambda: hash64(2**64), OverflowError, "key"),
    ("int-too-small", lambda: hash64(-(2**63) - 1), OverflowError, "key"),
    ("int-huge", lambda: hash64(10**100), OverflowError, "key"),
    ("xxh64-seed-too-big", lambda: hash64("a", "xxh64", 2**64), ValueError, "seed"),
    ("xxh64-seed-negative", lambda: hash64("a", "xxh64", -1), ValueError, "seed"),
    ("murmur3-seed-too-big", lambda: hash64("a", "murmur3", 2**32), ValueError, "seed"),
    ("murmur3-seed-negative", lambda: hash64("a", "murmur3", -1), ValueError, "seed"),
    ("md5-seed", lambda: hash64("a", "md5", 1), ValueError, "seed"),
    ("fnv1a64-seed", lambda: hash64("a", "fnv1a64", 7), ValueError, "seed"),
    ("fnv1a64-seed-negative", lambda: hash64("a", "fnv1a64", -1), ValueError, "seed"),
    ("seed-bool", lambda: hash64("a", seed=True), TypeError, "seed"),
    ("seed-float", lambda: hash64("a", seed=1.0), TypeError, "seed"),
    ("seed-str", lambda: hash64("a", seed="1"), TypeError, "seed"),
    ("seed-None", lambda: hash64("a", seed=None), TypeError, "seed"),
    ("algorithm-unknown", lambda: hash64("a", "sha1"), ValueError, "algorithm"),
    ("algorithm-wrong-case", lambda: hash64("a", "XXH64"), ValueError, "algorithm"),
    ("algorithm-empty", lambda: hash64("a", ""), ValueError, "algorithm"),
    ("algorithm-bytes", lambda: hash64("a", b"xxh64"), TypeError, "algorithm"),
    ("algorithm-None", lambda: hash64("a", None), TypeError, "algorithm"),
    ("algorithm-int", lambda: hash64("a", 0), TypeError, "algorithm"),
]


def _readonly_out(n: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.uint64)
    out.flags.writeable = False
    return out


KEYS3 = ["a", "b", "c", "d"]

BAD_HASH64_MANY: list[tuple[str, Callable[[], object], type[Exception], str]] = [
    ("None", lambda: hash64_many(None), TypeError, "keys"),
    ("single-str", lambda: hash64_many("abc"), TypeError, "keys"),
    ("single-bytes", lambda: hash64_many(b"abc"), TypeError, "keys"),
    ("single-int", lambda: hash64_many(5), TypeError, "keys"),
    ("float", lambda: hash64_many(1.5), TypeError, "keys"),
    ("dict", lambda: hash64_many({"a": 1}), TypeError, "keys"),
    ("object", lambda: hash64_many(_NotAKey()), TypeError, "keys"),
    ("arrow-scalar", lambda: hash64_many(pa.scalar("a")), TypeError, "keys"),
    ("arrow-table", lambda: hash64_many(pa.table({"k": ["a"]})), TypeError, "keys"),
    ("list-None", lambda: hash64_many(["a", "b", "c", None]), TypeError, "keys[3]"),
    ("list-float", lambda: hash64_many([0, 1, 2, 1.5]), TypeError, "keys[3]"),
    ("list-numpy-float", lambda: hash64_many([0, 1, 2, np.float64(3)]), TypeError, "keys[3]"),
    ("list-nested", lambda: hash64_many([0, 1, 2, [3]]), TypeError, "keys[3]"),
    ("list-dict", lambda: hash64_many([0, 1, 2, {}]), TypeError, "keys[3]"),
    ("tuple-None", lambda: hash64_many(("a", "b", "c", None)), TypeError, "keys[3]"),
    ("generator-None", lambda: hash64_many(_gen_bad_at_3()), TypeError, "keys[3]"),
    ("list-surrogate", lambda: hash64_many(["a", "b", "c", "\ud800"]), ValueError, "keys[3]"),
    ("tuple-surrogate", lambda: hash64_many(("a", "é", "c", "x\udc00")), ValueError, "keys[3]"),
    (
        "U-surrogate",
        lambda: hash64_many(np.array(["a", "b", "c", "\ud800"])),
        ValueError,
        "keys[3]",
    ),
    (
        "U-surrogate-inside",
        lambda: hash64_many(np.array(["a", "é", "c", "ab\udfffc"])),
        ValueError,
        "keys[3]",
    ),
    (
        "object-surrogate",
        lambda: hash64_many(np.array(["a", "b", "c", "\ud800"], dtype=object)),
        ValueError,
        "keys[3]",
    ),
    ("list-int-too-big", lambda: hash64_many([0, 1, 2, 2**64]), OverflowError, "keys[3]"),
    ("list-int-too-small", lambda: hash64_many([0, 1, 2, -(2**63) - 1]), OverflowError, "keys[3]"),
    (
        "object-None",
        lambda: hash64_many(np.array(["a", "b", "c", None], dtype=object)),
        TypeError,
        "keys[3]",
    ),
    ("float64-array", lambda: hash64_many(np.array([1.0, 2.0])), TypeError, "keys"),
    ("float64-array-empty", lambda: hash64_many(np.array([], dtype=np.float64)), TypeError, "keys"),
    ("float16-array", lambda: hash64_many(np.zeros(3, np.float16)), TypeError, "keys"),
    ("complex-array", lambda: hash64_many(np.array([1j, 2j])), TypeError, "keys"),
    (
        "datetime-array",
        lambda: hash64_many(np.array(["2024-01-01"], dtype="datetime64[D]")),
        TypeError,
        "keys",
    ),
    (
        "timedelta-array",
        lambda: hash64_many(np.array([1], dtype="timedelta64[s]")),
        TypeError,
        "keys",
    ),
    ("structured-array", lambda: hash64_many(np.zeros(2, dtype=[("a", "i4")])), TypeError, "keys"),
    ("2d-array", lambda: hash64_many(np.zeros((2, 2), dtype=np.int64)), ValueError, "keys"),
    ("2d-str-array", lambda: hash64_many(np.array([["a"], ["b"]])), ValueError, "keys"),
    ("0d-array", lambda: hash64_many(np.array(7)), ValueError, "keys"),
    (
        "StringDType-null",
        lambda: hash64_many(
            np.array(["a", "b", "c", None], dtype=np.dtypes.StringDType(na_object=None))
        ),
        ValueError,
        "keys[3]",
    ),
    (
        "StringDType-nan-null",
        lambda: hash64_many(
            np.array(["a", "b", "c", np.nan], dtype=np.dtypes.StringDType(na_object=np.nan))
        ),
        ValueError,
        "keys[3]",
    ),
    ("arrow-null", lambda: hash64_many(pa.array(["a", "b", "c", None])), ValueError, "keys[3]"),
    (
        "arrow-large-binary-null",
        lambda: hash64_many(pa.array([b"a", b"b", b"c", None], pa.large_binary())),
        ValueError,
        "keys[3]",
    ),
    (
        "arrow-sliced-null",
        lambda: hash64_many(pa.array([None, "a", "b", "c", None, "d"]).slice(1)),
        ValueError,
        "keys[3]",
    ),
    (
        "arrow-chunked-null",
        lambda: hash64_many(pa.chunked_array([["a", "b"], [], ["c", None]])),
        ValueError,
        "keys[3]",
    ),
    ("arrow-float", lambda: hash64_many(pa.array([1.0, 2.0])), TypeError, "keys"),
    ("arrow-bool", lambda: hash64_many(pa.array([True])), TypeError, "keys"),
    ("arrow-float-empty", lambda: hash64_many(pa.array([], pa.float64())), TypeError, "keys"),
    ("seed-too-big", lambda: hash64_many(KEYS3, seed=2**64), ValueError, "seed"),
    ("seed-negative", lambda: hash64_many(KEYS3, seed=-1), ValueError, "seed"),
    ("murmur3-seed-too-big", lambda: hash64_many(KEYS3, "murmur3", 2**32), ValueError, "seed"),
    ("md5-seed", lambda: hash64_many(KEYS3, "md5", 3), ValueError, "seed"),
    ("fnv1a64-seed", lambda: hash64_many(KEYS3, "fnv1a64", 3), ValueError, "seed"),
    ("seed-bool", lambda: hash64_many(KEYS3, seed=False), TypeError, "seed"),
    ("seed-float", lambda: hash64_many(KEYS3, seed=0.0), TypeError, "seed"),
    ("algorithm-unknown", lambda: hash64_many(KEYS3, "crc32"), ValueError, "algorithm"),
    ("algorithm-non-str", lambda: hash64_many(KEYS3, 1), TypeError, "algorithm"),
    ("out-int64", lambda: hash64_many(KEYS3, out=np.zeros(4, np.int64)), TypeError, "out"),
    ("out-float64", lambda: hash64_many(KEYS3, out=np.zeros(4)), TypeError, "out"),
    ("out-big-endian", lambda: hash64_many(KEYS3, out=np.zeros(4, ">u8")), TypeError, "out"),
    ("out-too-short", lambda: hash64_many(KEYS3, out=np.zeros(3, np.uint64)), ValueError, "out"),
    ("out-too-long", lambda: hash64_many(KEYS3, out=np.zeros(5, np.uint64)), ValueError, "out"),
    ("out-for-empty", lambda: hash64_many([], out=np.zeros(1, np.uint64)), ValueError, "out"),
    ("out-2d", lambda: hash64_many(KEYS3, out=np.zeros((4, 1), np.uint64)), ValueError, "out"),
    (
        "out-non-contiguous",
        lambda: hash64_many(KEYS3, out=np.zeros(8, np.uint64)[::2]),
        ValueError,
        "out",
    ),
    ("out-read-only", lambda: hash64_many(KEYS3, out=_readonly_out(4)), ValueError, "out"),
    ("out-list", lambda: hash64_many(KEYS3, out=[0, 0, 0, 0]), TypeError, "out"),
    ("out-bytearray", lambda: hash64_many(KEYS3, out=bytearray(32)), TypeError, "out"),
]


@pytest.mark.parametrize(
    ("call", "exc_type", "argument"),
    [case[1:] for case in BAD_HASH64],
    ids=[case[0] for case in BAD_HASH64],
)
def test_hash64_bad_input(
    call: Callable[[], object], exc_type: type[Exception], argument: str
) -> None:
    with pytest.raises(exc_type) as info:
        call()
    assert re.match(_names(argument), str(info.value)), str(info.value)


@pytest.mark.parametrize(
    ("call", "exc_type", "argument"),
    [case[1:] for case in BAD_HASH64_MANY],
    ids=[case[0] for case in BAD_HASH64_MANY],
)
def test_hash64_many_bad_input(
    call: Callable[[], object], exc_type: type[Exception], argument: str
) -> None:
    with pytest.raises(exc_type) as info:
        call()
    assert re.match(_names(argument), str(info.value)), str(info.value)


def test_bad_out_is_left_untouched() -> None:
    # out is validated before anything is written to it.
    out = np.full(4, 7, dtype=np.uint64)
    with pytest.raises(ValueError, match="^out"):
        hash64_many(["a", "b"], out=out)
    with pytest.raises(ValueError, match="^out"):
        hash64_many(["a", "b", "c", "d", "e"], out=out)
    with pytest.raises(ValueError, match="^seed"):
        hash64_many(["a", "b", "c", "d"], seed=-1, out=out)
    assert out.tolist() == [7, 7, 7, 7]


def test_error_inside_an_iterable_propagates_unchanged() -> None:
    def keys() -> Iterator[str]:
        yield "a"
        raise TypeError("broken generator")

    with pytest.raises(TypeError, match="^broken generator$"):
        hash64_many(keys())


def test_list_shrunk_by_a_key_is_an_error_not_a_crash() -> None:
    keys: list[Any] = []

    class Shrinking:
        def __index__(self) -> int:
            keys.clear()
            return 1

    keys[:] = [Shrinking()] + [f"key-{i}-é" for i in range(1000)]
    with pytest.raises(RuntimeError, match="^keys changed size"):
        hash64_many(keys)


def test_list_rewritten_by_a_key_is_read_afresh() -> None:
    keys: list[Any] = []
    old_items: list[Any] = []

    class Rewriting:
        def __index__(self) -> int:
            # Same size afterwards, but a new item array: the old one is freed (its items are
            # kept alive, so a stale read would hash b"old" rather than crash).
            old_items.extend(keys)
            fresh = [self] + [bytearray(b"new-%d" % i) for i in range(len(keys) - 1)]
            keys.clear()
            old_items.append([None] * len(fresh))  # takes the freed block, if malloc reuses it
            keys.extend(fresh)
            return 1

    keys[:] = [Rewriting()] + [bytearray(b"old") for _ in range(500)]
    hashes = hash64_many(keys)
    assert hashes[0] == hash64(1)
    assert hashes[1:].tolist() == [hash64(b"new-%d" % i) for i in range(500)]


def test_sequence_subclass_is_read_by_its_items_not_its_len() -> None:
    class LyingList(list):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return 10**6

    class LyingTuple(tuple):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return 1

    assert hash64_many(LyingList(["a", "b"])).tolist() == [hash64("a"), hash64("b")]
    assert hash64_many(LyingTuple(("a", "b", "c"))).tolist() == [hash64(k) for k in "abc"]


# --------------------------------------------------------------------------------------------------
# Threads


def _run_threads(target: Callable[[int], None], n: int = 4) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def run(index: int) -> None:
        try:
            barrier.wait()
            target(index)
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors


def test_threads_share_a_list_and_agree() -> None:
    keys = _random_keys(99, 20_000)
    shared_array = np.arange(50_000, dtype=np.int64) - 25_000
    shared_arrow = pa.array([f"user:{i}" for i in range(20_000)])
    expected = hash64_many(keys)
    expected_array = hash64_many(shared_array, "murmur3", 5)
    expected_arrow = hash64_many(shared_arrow, "md5")
    results: list[list[np.ndarray]] = [[] for _ in range(4)]

    def work(index: int) -> None:
        for _ in range(10):
            results[index].append(hash64_many(keys))
            results[index].append(hash64_many(shared_array, "murmur3", 5))
            results[index].append(hash64_many(shared_arrow, "md5"))

    _run_threads(work)
    for per_thread in results:
        assert len(per_thread) == 30
        for i in range(0, 30, 3):
            np.testing.assert_array_equal(per_thread[i], expected)
            np.testing.assert_array_equal(per_thread[i + 1], expected_array)
            np.testing.assert_array_equal(per_thread[i + 2], expected_arrow)


def test_list_changed_by_another_thread_never_crashes() -> None:
    # Items whose __index__ runs Python code let the interpreter switch threads mid-batch, while
    # another thread grows and shrinks the list. Each call either hashes or reports the change.
    class Slow:
        def __init__(self, value: int) -> None:
            self.value = value

        def __index__(self) -> int:
            return self.value

    keys: list[Any] = [Slow(i) if i % 2 else f"k{i}" for i in range(2000)]
    stop = threading.Event()

    def mutate(index: int) -> None:
        if index == 0:
            try:
                for i in range(1000):
                    keys.append(Slow(i))
                    keys.pop()
                    saved = keys[:]
                    keys.clear()  # frees the item array
                    keys.extend(saved)
            finally:
                stop.set()
            return
        calls = 0
        while (not stop.is_set() or calls < 3) and calls < 100_000:
            calls += 1
            try:
                hashes = hash64_many(keys)
            except RuntimeError as exc:
                assert str(exc).startswith("keys changed size"), exc
            else:
                assert hashes.dtype == np.uint64

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter allows
    try:
        _run_threads(mutate, n=3)
    finally:
        sys.setswitchinterval(interval)
