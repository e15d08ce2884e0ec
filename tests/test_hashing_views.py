"""The string-view kernel: pyarrow string_view and binary_view arrays (polars' string columns)
hashed from their buffers agree with hash64 key by key, over inline and out-of-line views, slices,
several data buffers and every algorithm; a malformed view raises instead of reading wild memory.
Part of the kernels' tests (noxfile KERNEL_TESTS: also run under the sanitizers)."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ringkit


@settings(max_examples=60, deadline=None)
@given(keys=st.lists(st.text(max_size=40), max_size=60),
       algorithm=st.sampled_from(ringkit.ALGORITHMS), seed=st.integers(0, 2**32),
       start=st.integers(0, 10))
def test_string_views_hash_like_hash64(keys: list[str], algorithm: str, seed: int,
                                       start: int) -> None:
    seed = seed if algorithm in ("xxh64", "murmur3") else 0     # the others take no seed
    array = pa.array(keys, pa.string_view())[start:]
    expected = [ringkit.hash64(k, algorithm, seed) for k in keys[start:]]
    assert ringkit.hash64_many(array, algorithm, seed).tolist() == expected
    binary = pa.array([k.encode() for k in keys], pa.binary_view())[start:]
    assert ringkit.hash64_many(binary, algorithm, seed).tolist() == expected


def test_string_views_over_several_data_buffers() -> None:
    chunks = [pa.array([f"{j}-" + "x" * (13 + i) for i in range(100)], pa.string_view())
              for j in range(3)]
    merged = pa.concat_arrays(chunks)
    assert len(merged.buffers()) > 3                      # variadic buffers, one per source
    expected = [ringkit.hash64(k) for k in merged.to_pylist()]
    assert ringkit.hash64_many(merged).tolist() == expected


def test_malformed_string_views_raise_instead_of_reading_wild_memory() -> None:
    data = pa.py_buffer(b"y" * 64)

    def view(length: int, index: int, offset: int) -> bytes:
        return (length.to_bytes(4, "little", signed=True) + b"yyyy"
                + index.to_bytes(4, "little", signed=True)
                + offset.to_bytes(4, "little", signed=True))

    good = view(20, 0, 10)
    for bad in (view(20, 1, 0), view(20, 0, 60), view(20, -1, 0), view(20, 0, -4),
                view(-3, 0, 0)):
        array = pa.Array.from_buffers(pa.string_view(), 2, [None, pa.py_buffer(good + bad), data])
        with pytest.raises(ValueError, match=r"keys\[1\]: malformed pyarrow array"):
            ringkit.hash64_many(array)
    ok = pa.Array.from_buffers(pa.string_view(), 1, [None, pa.py_buffer(good), data])
    assert ringkit.hash64_many(ok).tolist() == [ringkit.hash64(b"y" * 20)]
