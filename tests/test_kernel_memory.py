"""The kernels read and write memory only through checked arrays (ringkit._arrays): every entry
point that takes arrays gives the right answer, or a clear error naming the argument, for arrays
that are misaligned, byte-swapped, strided, masked, read-only, of the wrong dtype, or that
overlap the output. Under ``nox -s ubsan`` these run with the undefined-behaviour and address
sanitizers, which abort on any misaligned or out-of-bounds access.

Inputs that are not aligned, native-order and C-contiguous are read from a copy; outputs
(``out=``) that are not are refused. An ``out`` that overlaps an input gives the answer of
separate arrays (the kernel that reads its input while writing computes into a temporary).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

import ringkit
from ringkit import Balancer, HashRing, hash64_many

N = 257
VALUES = np.arange(10**12, 10**12 + N, dtype=np.uint64) * np.uint64(0x9E3779B1)


def misaligned(values: np.ndarray, offset: int = 1) -> np.ndarray:
    """`values` in a buffer that starts `offset` bytes past an aligned address."""
    raw = bytearray(values.nbytes + 16)
    base = np.frombuffer(raw, dtype=np.uint8)
    start = (-base.ctypes.data) % 16 + offset
    view = np.frombuffer(raw, dtype=values.dtype, count=values.shape[0], offset=start)
    view[...] = values   # a writeable view of a bytearray (frombuffer of bytearray is writeable)
    assert view.flags.aligned == (offset % values.dtype.alignment == 0)
    return view


def big_endian(values: np.ndarray) -> np.ndarray:
    swapped = values.astype(values.dtype.newbyteorder(">"))
    assert swapped.dtype.byteorder == ">"
    return swapped


def strided(values: np.ndarray) -> np.ndarray:
    wide = np.zeros(2 * values.shape[0], dtype=values.dtype)
    wide[::2] = values
    view = wide[::2]
    assert not view.flags.c_contiguous
    return view


def masked(values: np.ndarray) -> np.ndarray:
    return np.ma.masked_array(values, mask=np.arange(values.shape[0]) % 3 == 0)


def readonly(shape: int | tuple[int, ...], dtype: Any = np.int32) -> np.ndarray:
    out = np.zeros(shape, dtype=dtype)
    out.flags.writeable = False
    return out


VARIANTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "misaligned": misaligned,
    "misaligned-by-4": lambda v: misaligned(v, 4),
    "big-endian": big_endian,
    "strided": strided,
    "reversed": lambda v: v[::-1][::-1],
}

RING = HashRing({"a": 1, "b": 2, "c": 0.5, "d": 1.5}, vnodes=40)
KETAMA = HashRing.ketama(["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"])

# Every entry point that takes a batch of keys: name -> (call(keys, out), out dtype, out shape).
BATCH_CALLS: dict[str, tuple[Callable[..., np.ndarray], Any, Callable[[int], tuple[int, ...]]]] = {
    "hash64_many": (lambda keys, out=None: hash64_many(keys, out=out), np.uint64, lambda n: (n,)),
    "hash64_many-murmur3": (lambda keys, out=None: hash64_many(keys, "murmur3", 7, out=out),
                            np.uint64, lambda n: (n,)),
    "get_many": (lambda keys, out=None: RING.get_many(keys, out=out), np.int32, lambda n: (n,)),
    "get_many-ketama": (lambda keys, out=None: KETAMA.get_many(keys, out=out), np.int32,
                        lambda n: (n,)),
    "snapshot.get_many": (lambda keys, out=None: RING.snapshot().get_many(keys, out=out),
                          np.int32, lambda n: (n,)),
    "preference_many": (lambda keys, out=None: RING.preference_many(keys, 2, out=out), np.int32,
                        lambda n: (n, 2)),
    "assign_bounded": (lambda keys, out=None: RING.assign_bounded(keys), None, lambda n: (n,)),
    "pick_many-ring": (lambda keys, out=None: Balancer(RING.weights, strategy="ring")
                       .pick_many(keys, out=out), np.int32, lambda n: (n,)),
}


def expected(call: Callable[..., np.ndarray], values: np.ndarray) -> list[Any]:
    return call(np.ascontiguousarray(values).copy()).tolist()


# --------------------------------------------------------------------------------------------------
# Inputs: copied when they need to be, the answer unchanged


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("entry", BATCH_CALLS)
@pytest.mark.parametrize("dtype", ["u8", "i8", "u4", "i2"])
def test_numeric_keys_in_any_layout_give_the_same_answer(entry: str, variant: str,
                                                         dtype: str) -> None:
    call = BATCH_CALLS[entry][0]
    values = (VALUES % np.uint64(2**15)).astype(dtype) if dtype == "i2" else VALUES.astype(dtype)
    keys = VARIANTS[variant](values)
    assert np.array_equal(keys, values)
    assert call(keys).tolist() == expected(call, values)


@pytest.mark.parametrize("variant", ["misaligned", "big-endian", "strided"])
@pytest.mark.parametrize("entry", BATCH_CALLS)
def test_text_keys_in_any_layout_give_the_same_answer(entry: str, variant: str) -> None:
    call = BATCH_CALLS[entry][0]
    text = np.array([f"key-{i}-é" for i in range(N)], dtype="U12")
    keys = VARIANTS[variant](text)
    assert keys.tolist() == text.tolist()
    assert call(keys).tolist() == call(text.tolist()).tolist()
    raw = np.array([f"key-{i}".encode() for i in range(N)], dtype="S9")
    keys = misaligned(raw, 3) if variant == "misaligned" else strided(raw)
    assert call(keys).tolist() == call(raw.tolist()).tolist()


def test_pyarrow_offsets_in_a_misaligned_buffer_are_read_from_a_copy() -> None:
    words = [f"word-{i}" for i in range(N)]
    plain = pa.array(words, type=pa.string())
    _, offsets, data = plain.buffers()
    raw = bytearray(offsets.size + 8)
    start = (-np.frombuffer(raw, dtype=np.uint8).ctypes.data) % 8 + 1
    raw[start:start + offsets.size] = offsets.to_pybytes()
    shifted = pa.py_buffer(memoryview(raw)[start:start + offsets.size])
    assert shifted.address % 4 != 0
    odd = pa.Array.from_buffers(pa.string(), N, [None, shifted, data])
    assert odd.to_pylist() == words
    for entry, (call, _, _) in BATCH_CALLS.items():
        assert call(odd).tolist() == call(words).tolist(), entry


@pytest.mark.parametrize("variant", VARIANTS)
def test_locate_reads_hashes_in_any_layout(variant: str) -> None:
    hashes = hash64_many([f"k{i}" for i in range(N)])
    want = RING.locate(hashes).tolist()
    assert RING.locate(VARIANTS[variant](hashes)).tolist() == want
    assert KETAMA.locate(VARIANTS[variant](hashes)).tolist() == KETAMA.locate(hashes).tolist()


def test_locate_refuses_other_dtypes() -> None:
    with pytest.raises(TypeError, match="hashes"):
        RING.locate(np.zeros(3, dtype=np.int64))
    with pytest.raises(TypeError, match="hashes"):
        RING.locate(np.zeros(3, dtype=np.float64))
    with pytest.raises(TypeError, match="hashes"):
        RING.locate([1, 2, 3])  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# Masked arrays: refused, naming the argument


@pytest.mark.parametrize("entry", BATCH_CALLS)
def test_masked_keys_are_refused(entry: str) -> None:
    call = BATCH_CALLS[entry][0]
    for values in (VALUES, np.array([f"k{i}" for i in range(N)])):
        with pytest.raises(TypeError, match=r"keys.*masked.*filled.*compressed"):
            call(masked(values))
    # Unmasked data of the same array is fine once filled or compressed.
    assert call(masked(VALUES).compressed()).shape[0] == N - len(range(0, N, 3))


def test_masked_hashes_and_outs_are_refused() -> None:
    hashes = hash64_many(["a", "b", "c"])
    with pytest.raises(TypeError, match=r"hashes.*masked"):
        RING.locate(masked(hashes))
    with pytest.raises(TypeError, match=r"out.*masked"):
        RING.get_many(["a", "b", "c"], out=masked(np.zeros(3, dtype=np.int32)))
    with pytest.raises(TypeError, match=r"out.*masked"):
        hash64_many(["a", "b", "c"], out=masked(np.zeros(3, dtype=np.uint64)))


# --------------------------------------------------------------------------------------------------
# Outputs: refused unless aligned, writeable, native, C-contiguous, of the right dtype and shape


def _outs(dtype: Any, shape: tuple[int, ...]) -> dict[str, tuple[np.ndarray, type[Exception],
                                                                 str]]:
    wrong = np.int64 if np.dtype(dtype) != np.int64 else np.int32
    size = int(np.prod(shape))
    flat_misaligned = misaligned(np.zeros(size, dtype=dtype))
    return {
        "read-only": (readonly(shape, dtype), ValueError, "read-only"),
        "wrong-dtype": (np.zeros(shape, dtype=wrong), TypeError, "dtype"),
        "float": (np.zeros(shape, dtype=np.float64), TypeError, "dtype"),
        "big-endian": (np.zeros(shape, dtype=np.dtype(dtype).newbyteorder(">")), TypeError,
                       "byte order"),
        "strided": (np.zeros((size * 2,), dtype=dtype)[::2].reshape(shape)
                    if len(shape) == 1 else np.zeros(shape[::-1], dtype=dtype).T,
                    ValueError, "C-contiguous"),
        "misaligned": (flat_misaligned.reshape(shape), ValueError, "aligned"),
        "wrong-length": (np.zeros((shape[0] + 1, *shape[1:]), dtype=dtype), ValueError, "shape"),
        "list": ([0] * size, TypeError, "numpy"),  # type: ignore[dict-item]
    }


@pytest.mark.parametrize("case", ["read-only", "wrong-dtype", "float", "big-endian", "strided",
                                  "misaligned", "wrong-length", "list"])
@pytest.mark.parametrize("entry", [e for e, (_, dtype, _) in BATCH_CALLS.items() if dtype])
def test_bad_outs_are_refused_naming_out(entry: str, case: str) -> None:
    call, dtype, shape = BATCH_CALLS[entry]
    keys = [f"k{i}" for i in range(N)]
    out, error, words = _outs(dtype, shape(N))[case]
    before = np.array(out, copy=True) if isinstance(out, np.ndarray) else None
    with pytest.raises(error, match=rf"\bout\b.*{words}|{words}.*\bout\b") as info:
        call(keys, out=out)
    assert len(str(info.value)) < 300
    if before is not None:
        assert np.array_equal(np.asarray(out), before)   # nothing was written


@pytest.mark.parametrize("case", ["read-only", "wrong-dtype", "big-endian", "strided",
                                  "misaligned", "wrong-length"])
def test_bad_outs_of_locate_and_counted_picks_are_refused(case: str) -> None:
    hashes = hash64_many([f"k{i}" for i in range(N)])
    out, error, words = _outs(np.int32, (N,))[case]
    with pytest.raises(error, match="out"):
        RING.locate(hashes, out=out)
    for strategy in ("smooth", "random", "least_request"):
        with pytest.raises(error, match="out"):
            Balancer(["a", "b"], strategy=strategy).pick_many(N, out=out)


def test_good_outs_are_written_and_returned() -> None:
    keys = [f"k{i}" for i in range(N)]
    for entry, (call, dtype, shape) in BATCH_CALLS.items():
        if dtype is None:
            continue
        out = np.full(shape(N), 7, dtype=dtype)
        assert call(keys, out=out) is out
        assert out.tolist() == call(keys).tolist(), entry


# --------------------------------------------------------------------------------------------------
# Overlap between out and the input


def test_hash64_many_out_overlapping_its_keys_gives_the_answer_of_separate_arrays() -> None:
    want = hash64_many(VALUES).tolist()
    for shift in (1, 2, -1, -3):
        buf = np.zeros(N + 8, dtype=np.uint64)
        lo = 4
        buf[lo:lo + N] = VALUES
        keys = buf[lo:lo + N]
        out = buf[lo + shift:lo + shift + N]
        assert np.shares_memory(keys, out)
        assert hash64_many(keys, out=out) is out
        assert out.tolist() == want, shift
    # Int keys seen through another dtype, and 'S' keys over the out buffer itself.
    buf = np.zeros(N + 1, dtype=np.uint64)
    buf[1:] = VALUES
    as_int = buf.view(np.int64)[1:]
    assert hash64_many(as_int, out=buf[:N]).tolist() == want
    raw = np.zeros(N + 1, dtype=np.uint64)
    text = raw.view("S8")[1:]
    text[...] = [f"k{i}".encode() for i in range(N)]
    want_text = hash64_many(text.copy()).tolist()
    assert hash64_many(text, out=raw[:N]).tolist() == want_text
    # The very same array, in place: allowed and exact.
    same = VALUES.copy()
    assert hash64_many(same, out=same).tolist() == want


def test_hash64_many_out_overlapping_pyarrow_buffers() -> None:
    words = [f"w{i:04d}" for i in range(64)]
    plain = pa.array(words, type=pa.binary())
    _, offsets, data = plain.buffers()
    raw = np.zeros(64 + data.size // 8 + 2, dtype=np.uint64)
    raw.view(np.uint8)[:data.size] = np.frombuffer(data, dtype=np.uint8)
    shared = pa.Array.from_buffers(pa.binary(), 64, [None, offsets, pa.py_buffer(raw)])
    want = hash64_many(words).tolist()
    assert hash64_many(shared, out=raw[:64]).tolist() == want


def test_locate_out_overlapping_hashes() -> None:
    hashes = hash64_many([f"k{i}" for i in range(N)])
    want = RING.locate(hashes).tolist()
    for shift in (0, 1, 3):
        work = hashes.copy()
        out = work.view(np.int32)[shift:shift + N]
        assert RING.locate(work, out=out).tolist() == want


def test_ring_batch_calls_with_out_overlapping_their_keys() -> None:
    # get_many, preference_many and pick_many hash every key before writing: any overlap is fine.
    keys = np.arange(N + 2, dtype=np.int64)
    want = RING.get_many(keys[:N].copy()).tolist()
    want_pref = RING.preference_many(keys[:N].copy(), 2).tolist()
    bal = Balancer(RING.weights, strategy="ring")
    want_pick = bal.pick_many(keys[:N].copy()).tolist()
    for shift in (0, 1, 2):
        work = keys.copy()
        assert RING.get_many(work[:N], out=work.view(np.int32)[shift:shift + N]).tolist() == want
        work = np.arange(2 * N + 4, dtype=np.int64)
        work[:N] = keys[:N]
        out = work.view(np.int32)[shift:shift + 2 * N].reshape(N, 2)
        assert RING.preference_many(work[:N], 2, out=out).tolist() == want_pref
        work = keys.copy()
        assert bal.pick_many(work[:N], out=work.view(np.int32)[shift:shift + N]).tolist() \
            == want_pick


# --------------------------------------------------------------------------------------------------
# Allocation and sizes


def test_zero_width_text_keys_hash_like_empty_strings() -> None:
    empty = np.zeros(5, dtype="S1")
    assert hash64_many(empty).tolist() == [ringkit.hash64(b"")] * 5
    assert hash64_many(np.zeros(0, dtype="U3")).shape == (0,)


def test_empty_batches_through_every_entry_point() -> None:
    for entry, (call, dtype, shape) in BATCH_CALLS.items():
        assert call(np.zeros(0, dtype=np.uint64)).shape[0] == 0, entry
        if dtype is not None:
            out = np.zeros(shape(0), dtype=dtype)
            assert call([], out=out) is out
    assert RING.locate(np.zeros(0, dtype=np.uint64)).shape == (0,)


def test_memory_mapped_keys_are_read_in_place(tmp_path: Any) -> None:
    path = tmp_path / "keys.u64"
    VALUES.tofile(path)
    mapped = np.memmap(path, dtype=np.uint64, mode="r")
    assert hash64_many(mapped).tolist() == hash64_many(VALUES).tolist()
    assert RING.get_many(mapped).tolist() == RING.get_many(VALUES).tolist()
    odd = np.memmap(path, dtype=np.uint64, mode="r", offset=0)[1:]
    assert hash64_many(odd).tolist() == hash64_many(VALUES[1:]).tolist()
