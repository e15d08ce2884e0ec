"""ringkit.frame: every row's node equals placement.get(key), for every frame kind, key type and
placement; split loses and duplicates nothing; nulls and bad input are one clear error; the
string-view kernel reads polars' columns in place and agrees with hash64 key by key."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import ringkit
import ringkit.frame as rkframe
from ringkit import compat
from ringkit.errors import ColumnNotFoundError

NODES = ["cache-a", "cache-b", "cache-c", "cache-d"]


def _placements() -> dict[str, object]:
    ring = ringkit.HashRing({"cache-a": 1, "cache-b": 2, "cache-c": 1, "cache-d": 0.5})
    return {
        "ring": ring,
        "snapshot": ring.snapshot(),
        "ketama": ringkit.HashRing.ketama(NODES),
        "rendezvous": ringkit.Rendezvous(NODES),
        "jump": ringkit.JumpHash(NODES),
        "twemproxy": compat.twemproxy({"servers": [f"10.0.0.{i}:11211:1" for i in range(1, 5)],
                                       "hash": "md5", "distribution": "ketama"}),
        "libmemcached": compat.libmemcached([f"10.0.0.{i}:11211" for i in range(1, 5)]),
        "uhashring": compat.uhashring(NODES),
        "pymemcache": compat.pymemcache([f"10.0.0.{i}:11211" for i in range(1, 5)]),
    }


PLACEMENTS = _placements()

STR_KEYS = ["", "a", "user:1", "exactly12byt", "thirteen byte", "ü" * 7, "a much longer key " * 3,
            "🙂 emoji", *(f"user:{i:06d}" for i in range(200))]
INT_KEYS = [0, 1, -1, 2**63 - 1, -(2**63), 42, *range(1000, 1200)]


def _expected(placement: object, keys: list[object]) -> list[str]:
    return [placement.get(k) for k in keys]  # type: ignore[attr-defined]


def _column(out: object, column: str = "node") -> list[str]:
    if isinstance(out, pd.DataFrame):
        return list(out[column])
    if isinstance(out, pl.DataFrame):
        return out.get_column(column).to_list()
    return out.column(column).to_pylist()  # type: ignore[attr-defined]


def _frames(keys: list[object], kind: str) -> list[tuple[str, object]]:
    """The frames of one key list, in every kind and column type that holds it."""
    other = list(range(len(keys)))
    frames: list[tuple[str, object]] = []
    if kind == "str":
        frames += [
            ("pandas-object", pd.DataFrame({"k": pd.Series(keys, dtype=object), "v": other})),
            ("pandas-str", pd.DataFrame({"k": pd.array(keys, dtype="string[pyarrow]"),
                                         "v": other})),
            ("pandas-python-str", pd.DataFrame({"k": pd.array(keys, dtype="string[python]"),
                                                "v": other})),
            ("pandas-arrow", pd.DataFrame({"k": pd.Series(keys, dtype=pd.ArrowDtype(
                pa.large_string())), "v": other})),
            ("pandas-category", pd.DataFrame({"k": pd.Categorical(keys), "v": other})),
            ("polars-str", pl.DataFrame({"k": keys, "v": other})),
            ("polars-categorical", pl.DataFrame({"k": pl.Series(keys, dtype=pl.Categorical),
                                                 "v": other})),
        ]
        for t in (pa.string(), pa.large_string(), pa.string_view()):
            table = pa.table({"k": pa.array(keys, t), "v": other})
            frames += [(f"table-{t}", table), (f"batch-{t}", table.to_batches()[0])]
        frames.append(("table-dictionary", pa.table({"k": pa.array(keys).dictionary_encode(),
                                                      "v": other})))
        half = len(keys) // 2
        frames.append(("table-chunked", pa.Table.from_batches([
            pa.record_batch({"k": pa.array(keys[:half], pa.string_view()), "v": other[:half]}),
            pa.record_batch({"k": pa.array(keys[half:], pa.string_view()), "v": other[half:]}),
        ])))
        frames.append(("polars-chunked", pl.concat([pl.DataFrame({"k": keys[:half],
                                                                  "v": other[:half]}),
                                                    pl.DataFrame({"k": keys[half:],
                                                                  "v": other[half:]})],
                                                   rechunk=False)))
    elif kind == "bytes":
        frames += [
            ("pandas-object", pd.DataFrame({"k": pd.Series(keys, dtype=object), "v": other})),
            ("polars-binary", pl.DataFrame({"k": pl.Series(keys, dtype=pl.Binary), "v": other})),
        ]
        for t in (pa.binary(), pa.large_binary(), pa.binary_view()):
            frames.append((f"table-{t}", pa.table({"k": pa.array(keys, t), "v": other})))
    else:
        frames += [
            ("pandas-int64", pd.DataFrame({"k": np.array(keys, dtype=np.int64), "v": other})),
            ("pandas-Int64", pd.DataFrame({"k": pd.array(keys, dtype="Int64"), "v": other})),
            ("pandas-object", pd.DataFrame({"k": pd.Series(keys, dtype=object), "v": other})),
            ("polars-int64", pl.DataFrame({"k": pl.Series(keys, dtype=pl.Int64), "v": other})),
            ("table-int64", pa.table({"k": pa.array(keys, pa.int64()), "v": other})),
        ]
        small = [k for k in keys if 0 <= k < 2**31]
        frames += [("table-uint32", pa.table({"k": pa.array(small, pa.uint32()),
                                              "v": list(range(len(small)))})),
                   ("polars-int32", pl.DataFrame({"k": pl.Series(small, dtype=pl.Int32),
                                                  "v": list(range(len(small)))}))]
    return frames


def _keys_of(data: object) -> list[object]:
    if isinstance(data, pd.DataFrame):
        return [None if k is None or k is pd.NA or k != k else
                int(k) if isinstance(k, np.integer) else k for k in data["k"].tolist()]
    if isinstance(data, pl.DataFrame):
        return data.get_column("k").to_list()
    return data.column("k").to_pylist()  # type: ignore[attr-defined]


@pytest.mark.parametrize("placement_name", sorted(PLACEMENTS))
@pytest.mark.parametrize("kind", ["str", "bytes", "int"])
def test_every_row_goes_where_get_sends_its_key(placement_name: str, kind: str) -> None:
    placement = PLACEMENTS[placement_name]
    keys: list[object] = (STR_KEYS if kind == "str" else
                          [k.encode() for k in STR_KEYS] if kind == "bytes" else INT_KEYS)
    for label, data in _frames(keys, kind):
        out = rkframe.assign(data, "k", placement)
        assert type(out) is type(data), label
        frame_keys = _keys_of(data)
        assert _column(out) == _expected(placement, frame_keys), label
        assert _column(out, "v") == _column(data, "v"), label     # rows stay in place


def test_the_node_column_is_categorical_over_the_nodes() -> None:
    ring = PLACEMENTS["ring"]
    out = rkframe.assign(pd.DataFrame({"k": STR_KEYS}), "k", ring)
    assert isinstance(out["node"].dtype, pd.CategoricalDtype)
    assert list(out["node"].cat.categories) == list(ring.nodes)       # type: ignore[attr-defined]
    table = rkframe.assign(pa.table({"k": STR_KEYS}), "k", ring, column="shard")
    assert pa.types.is_dictionary(table.schema.field("shard").type)
    assert table.column("shard").chunk(0).dictionary.to_pylist() == list(ring.nodes)  # type: ignore
    batch = rkframe.assign(pa.record_batch({"k": STR_KEYS}), "k", ring)
    assert isinstance(batch, pa.RecordBatch) and pa.types.is_dictionary(batch.schema.field(
        "node").type)
    polars = rkframe.assign(pl.DataFrame({"k": STR_KEYS}), "k", ring)
    assert polars.schema["node"] == pl.Categorical


@pytest.mark.parametrize("count", [1, 256, 257, 65_536, 65_537])
def test_node_columns_of_many_nodes(count: int) -> None:
    """Node codes past 8 and 16 bits (polars' column is built from the narrowest indices)."""
    jump = ringkit.JumpHash([f"n{i}" for i in range(count)])
    keys = [f"user:{i}" for i in range(20_000)]
    expected = _expected(jump, keys)
    for data in (pl.DataFrame({"k": keys}), pa.table({"k": keys}), pd.DataFrame({"k": keys})):
        out = rkframe.assign(data, "k", jump, null_node=None)
        assert _column(out) == expected, type(data)
    nulls = rkframe.assign(pl.DataFrame({"k": [*keys[:3], None]}), "k", jump, null_node="spare")
    assert _column(nulls) == [*expected[:3], "spare"]


@pytest.mark.parametrize("count", [3, 256, 257])
def test_a_long_polars_column_looked_up_in_runs(count: int) -> None:
    """Past 2**18 rows a ring's polars column is looked up a run at a time into narrow codes
    (at most 256 names): every row still lands where get sends its key, across the runs."""
    ring = ringkit.HashRing([f"n{i}" for i in range(count)], vnodes=8)
    rows = 2**18 * 2 + 1_001
    keys = [f"user:{i * 7919}" for i in range(rows)]
    chunked = pl.concat([pl.DataFrame({"k": keys[:100_000]}), pl.DataFrame({"k": keys[100_000:]})],
                        rechunk=False)
    nodes = list(ring.nodes)
    expected = [nodes[i] for i in ring.get_many(keys)]
    assert expected[:50] == [ring.get(k) for k in keys[:50]]
    for data in (pl.DataFrame({"k": keys}), chunked):
        out = rkframe.assign(data, "k", ring)
        assert out.get_column("node").to_list() == expected
        assert out.schema["node"] == pl.Categorical


def test_assign_leaves_its_input_alone_and_replaces_an_existing_column() -> None:
    ring = PLACEMENTS["ring"]
    data = pd.DataFrame({"k": STR_KEYS, "node": 0})
    out = rkframe.assign(data, "k", ring)
    assert (data["node"] == 0).all() and list(data.columns) == ["k", "node"]
    assert list(out.columns) == ["k", "node"] and _column(out) == _expected(ring, STR_KEYS)
    table = pa.table({"node": [0] * len(STR_KEYS), "k": STR_KEYS})
    out_table = rkframe.assign(table, "k", ring)
    assert out_table.schema.names == ["node", "k"] and _column(out_table) == _expected(ring,
                                                                                       STR_KEYS)
    assert table.column("node").to_pylist() == [0] * len(STR_KEYS)
    polars = pl.DataFrame({"k": STR_KEYS, "node": [0] * len(STR_KEYS)})
    assert _column(rkframe.assign(polars, "k", ring)) == _expected(ring, STR_KEYS)
    assert polars.get_column("node").to_list() == [0] * len(STR_KEYS)


def test_pandas_index_is_kept_and_rows_align() -> None:
    ring = PLACEMENTS["ring"]
    data = pd.DataFrame({"k": STR_KEYS[::-1]}, index=np.arange(len(STR_KEYS))[::-1] * 7)
    out = rkframe.assign(data, "k", ring)
    assert list(out.index) == list(data.index)
    assert [ring.get(k) for k in data["k"]] == list(out["node"])


@pytest.mark.parametrize("placement_name", ["ring", "rendezvous", "jump", "twemproxy"])
def test_split_loses_and_duplicates_no_row(placement_name: str) -> None:
    placement = PLACEMENTS[placement_name]
    for label, data in _frames(STR_KEYS, "str"):
        parts = rkframe.split(data, "k", placement)
        assert list(parts) == list(placement.nodes), label       # type: ignore[attr-defined]
        seen: list[int] = []
        for node, rows in parts.items():
            assert type(rows) is type(data), label
            keys = _keys_of(rows)
            assert all(placement.get(k) == node for k in keys), label  # type: ignore[attr-defined]
            values = _column(rows, "v")
            assert values == sorted(values), label                 # order kept within a part
            seen += values
        assert sorted(seen) == list(range(len(STR_KEYS))), label


def test_split_gives_every_node_an_entry_even_an_empty_one() -> None:
    ring = ringkit.HashRing(NODES)
    key = "only-key"
    parts = rkframe.split(pd.DataFrame({"k": [key]}), "k", ring)
    assert sorted(parts) == sorted(NODES)
    assert {n: len(p) for n, p in parts.items()} == {n: int(n == ring.get(key)) for n in NODES}
    empty = rkframe.split(pa.table({"k": pa.array([], pa.string())}), "k", ring)
    assert all(len(p) == 0 for p in empty.values()) and sorted(empty) == sorted(NODES)


NULL_FRAMES = [
    ("pandas-object", lambda: pd.DataFrame({"k": ["a", None, "b", None]})),
    ("pandas-str", lambda: pd.DataFrame({"k": pd.array(["a", None, "b", None],
                                                       dtype="string[pyarrow]")})),
    ("pandas-Int64", lambda: pd.DataFrame({"k": pd.array([1, None, 2, None], dtype="Int64")})),
    ("pandas-category", lambda: pd.DataFrame({"k": pd.Categorical(["a", None, "b", None])})),
    ("table", lambda: pa.table({"k": pa.array(["a", None, "b", None])})),
    ("table-view", lambda: pa.table({"k": pa.array(["a", None, "b", None], pa.string_view())})),
    ("table-dictionary", lambda: pa.table({"k": pa.array(["a", None, "b", None])
                                           .dictionary_encode()})),
    ("polars", lambda: pl.DataFrame({"k": ["a", None, "b", None]})),
    ("polars-int", lambda: pl.DataFrame({"k": [1, None, 2, None]})),
    ("polars-enum", lambda: pl.DataFrame({"k": pl.Series(["a", None, "b", None],
                                                         dtype=pl.Enum(["b", "a"]))})),
]


@pytest.mark.parametrize("data", [pl.DataFrame({"k": [None, None, None]}),
                                  pa.table({"k": pa.nulls(3)}),
                                  pd.DataFrame({"k": [None, None, None]})],
                         ids=["polars", "pyarrow", "pandas"])
def test_a_column_of_nulls_only(data: object) -> None:
    ring = PLACEMENTS["ring"]
    with pytest.raises(ValueError, match="key column 'k' has 3 null keys"):
        rkframe.assign(data, "k", ring)
    assert _column(rkframe.assign(data, "k", ring, null_node="cache-a")) == ["cache-a"] * 3


@pytest.mark.parametrize(("label", "make"), NULL_FRAMES, ids=[f[0] for f in NULL_FRAMES])
def test_null_keys_are_an_error_naming_the_column(label: str, make: object) -> None:
    data = make()  # type: ignore[operator]
    with pytest.raises(ValueError, match=r"key column 'k' has 2 null keys \(the first in row 1\)"):
        rkframe.assign(data, "k", PLACEMENTS["ring"])
    with pytest.raises(ValueError, match="null"):
        rkframe.split(data, "k", PLACEMENTS["ring"])


@pytest.mark.parametrize(("label", "make"), NULL_FRAMES, ids=[f[0] for f in NULL_FRAMES])
def test_null_keys_go_to_the_null_node_asked_for(label: str, make: object) -> None:
    ring = PLACEMENTS["ring"]
    data = make()  # type: ignore[operator]
    keys = _keys_of(data)
    out = rkframe.assign(data, "k", ring, null_node="cache-b")
    assert _column(out) == [ring.get(k) if k is not None else "cache-b" for k in keys]
    out = rkframe.assign(data, "k", ring, null_node="nowhere")
    assert _column(out) == [ring.get(k) if k is not None else "nowhere" for k in keys]
    parts = rkframe.split(data, "k", ring, null_node="nowhere")
    assert list(parts) == [*ring.nodes, "nowhere"] and len(parts["nowhere"]) == 2


def test_bad_input_is_one_clear_error() -> None:
    ring = PLACEMENTS["ring"]
    for data in (pd.DataFrame({"x": [1]}), pa.table({"x": [1]}), pa.record_batch({"x": [1]}),
                 pl.DataFrame({"x": [1]})):
        with pytest.raises(ColumnNotFoundError, match="key column 'k' is not a column") as info:
            rkframe.assign(data, "k", ring)
        assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
        assert "'x'" in str(info.value)
    for data in (pd.DataFrame({"k": [1.5]}), pa.table({"k": [1.5]}), pl.DataFrame({"k": [1.5]}),
                 pd.DataFrame({"k": [True]}), pd.DataFrame({"k": pd.to_datetime(["2026-01-01"])}),
                 pl.DataFrame({"k": [[1, 2]]})):
        with pytest.raises(TypeError, match="key column 'k' has type .*strings, binary or int"):
            rkframe.assign(data, "k", ring)
    with pytest.raises(TypeError, match="key column 'k'.*keys\\[1\\]"):
        rkframe.assign(pd.DataFrame({"k": ["a", 1.5]}), "k", ring)
    with pytest.raises(TypeError, match="data must be a pandas DataFrame"):
        rkframe.assign({"k": ["a"]}, "k", ring)
    with pytest.raises(TypeError, match="data must be"):
        rkframe.assign(pd.Series(["a"]), "k", ring)
    with pytest.raises(TypeError, match="LazyFrame"):
        rkframe.assign(pl.DataFrame({"k": ["a"]}).lazy(), "k", ring)
    with pytest.raises(TypeError, match="placement must be a ringkit placement"):
        rkframe.assign(pd.DataFrame({"k": ["a"]}), "k", {"a": 1})
    with pytest.raises(ValueError, match="column must differ from key"):
        rkframe.assign(pd.DataFrame({"k": ["a"]}), "k", ring, column="k")
    with pytest.raises(TypeError, match="column must be a non-empty str"):
        rkframe.assign(pd.DataFrame({"k": ["a"]}), "k", ring, column="")
    with pytest.raises(TypeError, match="null_node must be"):
        rkframe.assign(pd.DataFrame({"k": ["a", None]}), "k", ring, null_node=3)  # type: ignore
    with pytest.raises(ringkit.EmptyRingError):
        rkframe.assign(pd.DataFrame({"k": ["a"]}), "k", ringkit.HashRing([]))
    duplicated = pd.DataFrame([["a", "b"]], columns=["k", "k"])
    with pytest.raises(ValueError, match="names 2 columns"):
        rkframe.assign(duplicated, "k", ring)


def test_a_ring_changing_in_another_thread_never_mixes_two_states() -> None:
    ring = ringkit.HashRing(NODES)
    keys = [f"k{i}" for i in range(20_000)]
    data = pa.table({"k": keys})
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            ring.add("cache-z")
            ring.remove("cache-z")

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        for _ in range(20):
            out = rkframe.assign(data, "k", ring)
            names = out.column("node").chunk(0).dictionary.to_pylist()
            got = out.column("node").to_pylist()
            with_z = ringkit.HashRing([*NODES, "cache-z"])
            # The answer is one ring's: all of the four-node ring, or all of the five-node one.
            assert got in (_expected(ringkit.HashRing(NODES), keys), _expected(with_z, keys))
            assert ("cache-z" in names) == (got == _expected(with_z, keys))
    finally:
        stop.set()
        thread.join()


# -- the string-view kernel ------------------------------------------------------------------------

def test_polars_string_columns_are_hashed_in_place() -> None:
    keys = [f"a key long enough to live out of line {i}" for i in range(50_000)]
    series = pl.Series("k", keys)
    column = pa.chunked_array(series)
    assert column.type == pa.string_view()
    before = pa.total_allocated_bytes()
    hashes = ringkit.hash64_many(column)
    assert pa.total_allocated_bytes() == before          # no cast, no copy of the strings
    assert hashes.tolist() == [ringkit.hash64(k) for k in keys]
