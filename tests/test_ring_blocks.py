"""Batch lookups a block at a time (_hashing.KeyBlocks): a ring's get_many over batches longer
than two blocks (16,384 keys each) hashes and looks up block by block. Every key still goes where
get sends it, across block and Arrow chunk boundaries, slices and every batch kind; an error names
the key's index in the whole batch; an out= that overlaps the keys never changes a key before it
is read. Part of the kernels' tests (noxfile KERNEL_TESTS: also run under the sanitizers)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import ringkit
from ringkit import compat

BLOCK = 16_384
N = 3 * BLOCK + 1_234          # four blocks, the last one short

NODES = ["cache-a", "cache-b", "cache-c", "cache-d", "cache-e"]
RINGS = {
    "xxh64": ringkit.HashRing(NODES),
    "murmur3 seeded": ringkit.HashRing(NODES, algorithm="murmur3", seed=7),
    "md5 lanes": ringkit.HashRing(NODES, algorithm="md5"),
    "ketama": ringkit.HashRing.ketama(NODES),
    "libmemcached": compat.libmemcached([f"10.0.0.{i}:11211" for i in range(1, 6)]),
    "uhashring": compat.uhashring(NODES),
}
KEYS = [f"user:{i * 7919 % 1_000_003}" + "x" * (i % 23) for i in range(N)]


def _expected(ring: object, keys: list[object]) -> list[int]:
    nodes = list(ring.nodes)  # type: ignore[attr-defined]
    return [nodes.index(ring.get(k)) for k in keys]  # type: ignore[attr-defined]


@pytest.fixture(scope="module", params=sorted(RINGS))
def ring_and_expected(request: pytest.FixtureRequest) -> tuple[object, dict[type, list[int]]]:
    """A ring, and where get sends the keys as str and as bytes (which compat rings such as
    uhashring's hash differently: str(b"...")."""
    ring = RINGS[request.param]
    return ring, {str: _expected(ring, KEYS), bytes: _expected(ring, [k.encode() for k in KEYS])}


def _string_batches() -> list[tuple[str, object]]:
    encoded = [k.encode() for k in KEYS]
    # Uneven chunks: empty ones, ones shorter than a block, one crossing two block boundaries.
    cuts = [0, 0, 5, BLOCK - 1, BLOCK + 3, BLOCK + 3, 3 * BLOCK + 17, N]
    chunks = [KEYS[a:b] for a, b in zip(cuts, cuts[1:])]
    padded = pa.array(["pad"] * 11 + KEYS + ["pad"] * 5)
    return [
        ("string", pa.array(KEYS)),
        ("large_string", pa.array(KEYS, pa.large_string())),
        ("string_view", pa.array(KEYS, pa.string_view())),
        ("binary", pa.array(encoded, pa.binary())),
        ("binary_view", pa.array(encoded, pa.binary_view())),
        ("dictionary", pa.array(KEYS).dictionary_encode()),
        ("chunked", pa.chunked_array([pa.array(c, pa.string()) for c in chunks])),
        ("chunked views", pa.chunked_array([pa.array(c, pa.string_view()) for c in chunks])),
        ("sliced", padded.slice(11, N)),
        ("numpy S", np.array(encoded)),
        ("numpy U", np.array(KEYS)),
        ("list", list(KEYS)),
    ]


@pytest.mark.parametrize(("label", "batch"), _string_batches(),
                         ids=[b[0] for b in _string_batches()])
def test_every_key_of_a_long_batch_goes_where_get_sends_it(
        ring_and_expected: tuple[object, dict[type, list[int]]], label: str,
        batch: object) -> None:
    ring, expected = ring_and_expected
    kind = bytes if "binary" in label or label == "numpy S" else str
    assert ring.get_many(batch).tolist() == expected[kind], label  # type: ignore[attr-defined]


@pytest.mark.parametrize("dtype", [np.int64, np.uint64, np.int32, np.uint16, np.int8])
def test_integer_batches_across_blocks(dtype: type) -> None:
    info = np.iinfo(dtype)
    values = np.random.default_rng(14).integers(info.min, info.max, N, dtype=dtype,
                                                  endpoint=True)
    values[:2] = [info.min, info.max]
    values[::7] = np.arange(len(values[::7])).astype(dtype)
    ring = RINGS["xxh64"]
    expected = _expected(ring, [int(v) for v in values])
    assert ring.get_many(values).tolist() == expected
    assert ring.get_many(pa.array(values)).tolist() == expected
    assert ring.get_many(pa.chunked_array([values[:BLOCK + 9], values[BLOCK + 9:]])).tolist() \
        == expected


def test_a_null_far_into_the_batch_is_named_by_its_index_in_the_batch() -> None:
    ring = RINGS["xxh64"]
    keys: list[str | None] = list(KEYS)
    keys[2 * BLOCK + 5] = None
    with pytest.raises(ValueError, match=rf"keys\[{2 * BLOCK + 5}\] is null"):
        ring.get_many(pa.array(keys))
    chunked = pa.chunked_array([pa.array(keys[:BLOCK + 1]), pa.array(keys[BLOCK + 1:])])
    with pytest.raises(ValueError, match=rf"keys\[{2 * BLOCK + 5}\] is null"):
        ring.get_many(chunked)
    with pytest.raises(ValueError, match=rf"keys\[{2 * BLOCK + 5}\] is null"):
        ring.get_many(pa.array(keys, pa.string_view()))


def test_a_bad_item_far_into_the_batch_is_named_by_its_index_in_the_batch() -> None:
    keys = np.array(KEYS)
    keys[3 * BLOCK + 2] = "bad \ud800 surrogate"
    with pytest.raises(ValueError, match=rf"keys\[{3 * BLOCK + 2}\]"):
        RINGS["xxh64"].get_many(keys)


def test_an_out_that_overlaps_the_keys_changes_no_key_before_it_is_read() -> None:
    ring = RINGS["xxh64"]
    keys = np.arange(N, dtype=np.int32) * 104_729
    expected = ring.get_many(keys.copy())
    assert ring.get_many(keys, out=keys) is keys
    assert keys.tolist() == expected.tolist()
    # A view of the same memory as another dtype: still every key read before being overwritten.
    raw = np.arange(2 * N, dtype=np.int32)
    as_int64 = raw.view(np.int64)
    expected = ring.get_many(as_int64.copy())
    ring.get_many(as_int64, out=raw[:N])
    assert raw[:N].tolist() == expected.tolist()


def test_a_snapshot_and_a_fresh_out_agree_with_the_ring() -> None:
    ring = RINGS["ketama"]
    batch = pa.array(KEYS)
    out = np.full(N, -1, dtype=np.int32)
    assert ring.snapshot().get_many(batch, out=out) is out  # type: ignore[attr-defined]
    assert out.tolist() == ring.get_many(batch).tolist()  # type: ignore[attr-defined]


@pytest.mark.parametrize("type_", [pa.string_view(), pa.string(), pa.large_binary()])
def test_a_malformed_key_far_into_the_batch_is_named_by_its_index_in_the_batch(
        type_: pa.DataType) -> None:
    """A view (or offset) pointing outside its buffers, in the third block: the error names it
    and nothing is read out of range (also run under the sanitizers)."""
    keys = [k.encode() for k in KEYS] if pa.types.is_large_binary(type_) else KEYS
    good = pa.array(keys, type_)
    buffers = good.buffers()
    bad_at = 2 * BLOCK + 11
    if pa.types.is_string_view(type_):
        views = np.frombuffer(buffers[1], dtype=np.int32).copy().reshape(-1, 4)
        assert views[bad_at, 0] > 12        # out of line: length, prefix, buffer, offset
        views[bad_at, 3] = 2**31 - 1
        broken = pa.Array.from_buffers(type_, len(good), [None, pa.py_buffer(views.tobytes()),
                                                          *buffers[2:]])
        message = "view out of range"
    else:
        width = np.int64 if pa.types.is_large_binary(type_) else np.int32
        offsets = np.frombuffer(buffers[1], dtype=width).copy()
        offsets[bad_at + 1] = offsets[-1] + 1000        # past the end of the data
        broken = pa.Array.from_buffers(type_, len(good), [None, pa.py_buffer(offsets.tobytes()),
                                                          buffers[2]])
        message = "offsets out of range"
    with pytest.raises(ValueError, match=rf"keys\[{bad_at}\]: malformed pyarrow array \({message}"):
        RINGS["xxh64"].get_many(broken)
    with pytest.raises(ValueError, match=rf"keys\[{bad_at}\]: malformed pyarrow array \({message}"):
        RINGS["md5 lanes"].get_many(pa.chunked_array([broken]))


def test_views_over_dozens_of_data_buffers() -> None:
    """pyarrow's own string_view arrays keep their bytes in 32 KiB buffers: every block reads
    them through one lookup of the buffers."""
    keys = [f"key number {i:012d} with a tail" for i in range(N)]
    array = pa.array(keys, pa.string_view())
    assert len(array.buffers()) > 50
    ring = RINGS["murmur3 seeded"]
    assert ring.get_many(array).tolist() == _expected(ring, keys)


def test_arrays_past_the_prefetch_size_hash_like_small_ones() -> None:
    """Arrays of 32 MiB and more are read with prefetching, smaller ones without: the same keys
    hash alike either way, a malformed view deep in a large array is still named and never read
    (also run under the sanitizers)."""
    count = 2_200_000                     # 16-byte keys: 35 MB of bytes, 35 MB of views
    keys = [f"key:{i * 7919:012d}" for i in range(count)]
    step = 500_000                        # arrays of their own (8 MB each): no prefetching
    for type_ in (pa.string(), pa.string_view(), pa.large_binary()):
        items = [k.encode() for k in keys] if type_ == pa.large_binary() else keys
        large = pa.array(items, type_)
        small = pa.chunked_array([pa.array(items[i:i + step], type_)
                                  for i in range(0, count, step)])
        for algorithm in ("xxh64", "md5"):
            assert np.array_equal(ringkit.hash64_many(large, algorithm),
                                  ringkit.hash64_many(small, algorithm)), (type_, algorithm)
        ring = RINGS["xxh64"]
        assert np.array_equal(ring.get_many(large), ring.get_many(small)), type_
    good = pa.array(keys, pa.string_view())
    assert good.buffers()[1].size >= 32 << 20
    views = np.frombuffer(good.buffers()[1], dtype=np.int32).copy().reshape(-1, 4)
    bad_at = count - 100                  # the prefetch looks 64 and 128 keys ahead of here
    views[bad_at, 2] = 1_000_000          # a data buffer that does not exist
    broken = pa.Array.from_buffers(pa.string_view(), count,
                                   [None, pa.py_buffer(views.tobytes()), *good.buffers()[2:]])
    with pytest.raises(ValueError, match=rf"keys\[{bad_at}\]: malformed pyarrow array"):
        RINGS["xxh64"].get_many(broken)
