"""Placements over data frames: the owner of every row's key, as a column or as one frame per node.

    import ringkit.frame

    ring = ringkit.HashRing(["cache-a", "cache-b", "cache-c"])
    users = ringkit.frame.assign(users, "user_id", ring)          # + a categorical "node" column
    for node, rows in ringkit.frame.split(users, "user_id", ring).items():
        load(node, rows)

``data`` is a pandas DataFrame, a pyarrow Table or RecordBatch, or a polars DataFrame, and every
result is of the same kind. The key column holds strings, binary values or integers; it is handed to
the placement's ``get_many`` in one call per frame, read from its buffers where it has them: pyarrow
and polars columns (polars' string views included) and pandas' Arrow-backed strings without a copy,
numpy integer columns as they are. Strings hash as their UTF-8 bytes and integers as int64, exactly
as ``placement.get(key)`` does for the same key, so a row lands where a lookup of its key does.

``placement`` is any ringkit placement: :class:`~ringkit.HashRing` (read through one snapshot, so a
ring changed by another thread meanwhile never mixes two states into one answer), a
:class:`~ringkit.RingSnapshot`, :class:`~ringkit.Rendezvous`, :class:`~ringkit.JumpHash` or a
placement of :mod:`ringkit.compat`.

The node column is categorical (pandas ``category`` with the placement's nodes as categories, in
``placement.nodes`` order; pyarrow ``dictionary<int32, string>``; polars ``Categorical``). A null
key is an error naming the column, unless ``null_node=`` names where null keys go (a node of the
placement, or any other name, which then becomes one more category after the nodes).

Needs pyarrow for pyarrow and polars frames, and pandas or polars for theirs (``pip install
ringkit[frame]``).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from ringkit.errors import ColumnNotFoundError

__all__ = ["NodeCodes", "assign", "node_codes", "split"]

_PANDAS, _ARROW_TABLE, _ARROW_BATCH, _POLARS = "pandas", "pyarrow.Table", "pyarrow.RecordBatch", \
    "polars"

_ARROW_KEY_TYPES = ("string", "large_string", "string_view", "binary", "large_binary",
                    "binary_view", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                    "uint64")


def _large_string() -> Any:
    import pyarrow as pa

    return pa.large_string()


def _large_binary() -> Any:
    import pyarrow as pa

    return pa.large_binary()


_VIEWS = {"string_view": _large_string, "binary_view": _large_binary}


class NodeCodes(NamedTuple):
    """Where each row of a frame goes: ``codes[i]`` indexes ``names`` (int32, one per row).
    ``names`` is the placement's ``nodes``, followed by ``null_node`` when that is another name."""

    codes: npt.NDArray[np.int32]
    names: tuple[str, ...]


# -- arguments -------------------------------------------------------------------------------------

def _kind(data: object) -> str:
    module = type(data).__module__
    if module.startswith("pandas"):
        import pandas as pd

        if isinstance(data, pd.DataFrame):
            return _PANDAS
    elif module.startswith("pyarrow"):
        import pyarrow as pa

        if isinstance(data, pa.Table):
            return _ARROW_TABLE
        if isinstance(data, pa.RecordBatch):
            return _ARROW_BATCH
    elif module.startswith("polars"):
        import polars as pl

        if isinstance(data, pl.DataFrame):
            try:
                import pyarrow  # noqa: F401 - polars columns are read through Arrow
            except ImportError:
                raise ImportError("polars frames are read through pyarrow, which is not "
                                  "installed: pip install 'ringkit[frame]'") from None
            return _POLARS
        if isinstance(data, pl.LazyFrame):
            raise TypeError("data is a polars LazyFrame: collect() it first, or place each "
                            "collected batch")
    raise TypeError(f"data must be a pandas DataFrame, a pyarrow Table or RecordBatch, or a polars "
                    f"DataFrame, got {type(data).__module__}.{type(data).__qualname__}")


def _frozen(placement: Any) -> Any:
    """One state of `placement` whose ``nodes`` and ``get_many`` agree (a ring another thread may
    change is read through a snapshot)."""
    if not (hasattr(placement, "get_many") and hasattr(placement, "nodes")):
        raise TypeError(f"placement must be a ringkit placement (HashRing, RingSnapshot, "
                        f"Rendezvous, JumpHash or one of ringkit.compat), got "
                        f"{type(placement).__name__}")
    snapshot = getattr(placement, "snapshot", None)
    return snapshot() if callable(snapshot) else placement


def _names(nodes: tuple[str, ...], null_node: str | None) -> tuple[tuple[str, ...], int]:
    """The node column's categories, and the code of null keys (-1 when they are an error)."""
    if null_node is None:
        return nodes, -1
    if not isinstance(null_node, str):
        raise TypeError(f"null_node must be a node name (str) or None, got "
                        f"{type(null_node).__name__}")
    if null_node in nodes:
        return nodes, nodes.index(null_node)
    return (*nodes, null_node), len(nodes)


def _check_column_name(column: object, key: object) -> str:
    if not isinstance(column, str) or not column:
        raise TypeError(f"column must be a non-empty str, got {column!r}")
    if column == key:
        raise ValueError(f"column must differ from key ({key!r}): the node column would replace "
                         f"the keys")
    return column


# -- the key column --------------------------------------------------------------------------------

class _Keys(NamedTuple):
    """A key column ready for ``get_many``: ``batch`` holds the keys of the rows where ``mask`` is
    False (all rows when ``mask`` is None). ``dictionary`` columns carry per-chunk codes instead."""

    batch: Any
    mask: npt.NDArray[np.bool_] | None
    chunks: list[tuple[Any, Any]] | None = None     # dictionary columns: (dictionary, indices)


def _unsupported(key: object, type_text: str) -> TypeError:
    return TypeError(f"key column {key!r} has type {type_text}; keys must be strings, binary or "
                     f"integers")


def _arrow_keys(column: Any, key: object) -> _Keys:
    """A pyarrow Array or ChunkedArray as keys, without copying its buffers (nulls aside)."""
    import pyarrow as pa

    chunked = column if isinstance(column, pa.ChunkedArray) else pa.chunked_array([column])
    value_type = chunked.type
    if pa.types.is_null(value_type):        # a column of nulls only (polars' Null dtype)
        return _Keys([], np.ones(len(chunked), dtype=np.bool_))
    if pa.types.is_dictionary(value_type):
        if str(value_type.value_type) not in _ARROW_KEY_TYPES:
            raise _unsupported(key, str(value_type))
        return _Keys(None, None, [(chunk.dictionary, chunk.indices) for chunk in chunked.chunks])
    if str(value_type) not in _ARROW_KEY_TYPES:
        raise _unsupported(key, str(value_type))
    if not chunked.null_count:
        return _Keys(chunked, None)
    mask = chunked.is_null().to_numpy(zero_copy_only=False)
    if str(value_type) in _VIEWS:   # pyarrow cannot filter views: a copy, only when nulls
        chunked = chunked.cast(_VIEWS[str(value_type)]())
    return _Keys(chunked.drop_null(), mask)


def _pandas_keys(data: Any, key: Hashable) -> _Keys:
    import pandas as pd

    try:
        series = data[key]
    except (KeyError, TypeError):
        raise ColumnNotFoundError(key, f"key column {key!r} is not a column of data (columns: "
                                       f"{_shown(list(data.columns))})") from None
    if isinstance(series, pd.DataFrame):
        raise ValueError(f"key {key!r} names {series.shape[1]} columns of data; the key column "
                         f"must be unique")
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        categories = _pandas_keys(pd.DataFrame({"k": dtype.categories}), "k")
        return _Keys(None, None, [(categories, series.cat.codes.to_numpy())])   # -1: null
    if isinstance(dtype, pd.ArrowDtype) or (isinstance(dtype, pd.StringDtype)
                                            and dtype.storage == "pyarrow"):
        import pyarrow as pa

        return _arrow_keys(pa.array(series.array), key)
    if dtype.kind in "iu":
        if isinstance(dtype, np.dtype):
            return _Keys(series.to_numpy(), None)
        mask = series.isna().to_numpy()                    # a nullable Int64 and the like
        values = series.to_numpy(dtype=dtype.numpy_dtype, na_value=0)
        return _Keys(values[~mask], mask) if mask.any() else _Keys(values, None)
    if dtype.kind in "OSU" or isinstance(dtype, pd.StringDtype):
        values = series.to_numpy(dtype=object)
        mask = pd.isna(values)
        if not mask.any():
            return _Keys(values, None)
        return _Keys(values[~mask], mask)
    raise _unsupported(key, str(dtype))


def _polars_keys(data: Any, key: object) -> _Keys:
    import polars as pl
    import pyarrow as pa

    if not isinstance(key, str):
        raise TypeError(f"key must be a column name (str), got {type(key).__name__}")
    if key not in data.columns:
        raise ColumnNotFoundError(key, f"key column {key!r} is not a column of data (columns: "
                                       f"{_shown(data.columns)})")
    series = data.get_column(key)
    dtype = series.dtype
    if not (dtype.is_integer() or dtype in (pl.String, pl.Binary, pl.Categorical, pl.Null)
            or isinstance(dtype, pl.Enum)):
        raise _unsupported(key, str(dtype))
    # Through the Arrow C stream interface: polars' own buffers, its string views included.
    return _arrow_keys(pa.chunked_array(series), key)


def _arrow_table_keys(data: Any, key: object) -> _Keys:
    if not isinstance(key, str):
        raise TypeError(f"key must be a column name (str), got {type(key).__name__}")
    names = data.schema.names
    if names.count(key) != 1:
        if key in names:
            raise ValueError(f"key {key!r} names {names.count(key)} columns of data; the key "
                             f"column must be unique")
        raise ColumnNotFoundError(key, f"key column {key!r} is not a column of data (columns: "
                                       f"{_shown(names)})")
    return _arrow_keys(data.column(key), key)


def _shown(names: list[Any]) -> str:
    text = ", ".join(repr(n) for n in names[:20])
    return text + (", ..." if len(names) > 20 else "")


def _lookup(placement: Any, batch: Any, key: object) -> npt.NDArray[np.int32]:
    try:
        return placement.get_many(batch)    # type: ignore[no-any-return]
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"key column {key!r}: {exc}") from None


def _codes_of(placement: Any, keys: _Keys, rows: int, null_code: int,
              key: object) -> npt.NDArray[np.int32]:
    if keys.chunks is not None:
        parts = []
        for dictionary, indices in keys.chunks:
            owners = _lookup(placement, dictionary.batch if isinstance(dictionary, _Keys)
                             else dictionary, key)
            if isinstance(dictionary, _Keys) and dictionary.mask is not None:
                raise ValueError(f"key column {key!r} has a null category")
            if len(owners) == 0 and len(indices):   # only nulls refer to an empty dictionary
                owners = np.zeros(1, dtype=np.int32)
            nulls: npt.NDArray[np.bool_] | None
            if isinstance(indices, np.ndarray):     # pandas' category codes, -1 for null
                nulls = indices < 0
                index = np.where(nulls, 0, indices) if nulls.any() else indices
            else:                                   # pyarrow dictionary indices
                nulls = indices.is_null().to_numpy(zero_copy_only=False) \
                    if indices.null_count else None
                index = (indices.fill_null(0) if indices.null_count else indices) \
                    .to_numpy(zero_copy_only=False)
            part = owners[index]
            if nulls is not None and nulls.any():
                _place_nulls(part, nulls, null_code, key)
            parts.append(part)
        codes = np.concatenate(parts) if parts else np.empty(0, dtype=np.int32)
        return codes.astype(np.int32, copy=False)
    if keys.mask is None:
        return _lookup(placement, keys.batch, key)
    codes = np.empty(rows, dtype=np.int32)
    _place_nulls(codes, keys.mask, null_code, key)
    codes[~keys.mask] = _lookup(placement, keys.batch, key)
    return codes


def _categorical(codes: npt.NDArray[np.int32], names: tuple[str, ...]) -> Any:
    """A pandas Categorical over `names` from codes that index them (made here: no check)."""
    import pandas as pd

    dtype = pd.CategoricalDtype(list(names))
    try:
        return pd.Categorical.from_codes(codes, dtype=dtype, validate=False)
    except TypeError:   # pandas before 2.1 has no validate=
        return pd.Categorical.from_codes(codes, dtype=dtype)


def _place_nulls(codes: npt.NDArray[np.int32], mask: npt.NDArray[np.bool_], null_code: int,
                 key: object) -> None:
    if null_code < 0:
        first = int(mask.argmax())
        raise ValueError(f"key column {key!r} has {int(mask.sum()):,} null keys (the first in row "
                         f"{first}); nulls cannot be placed: fill them, or pass null_node= to "
                         f"send them to one node")
    codes[mask] = null_code


# -- the public functions --------------------------------------------------------------------------

# Rows looked up per call when the codes are wanted narrower than int32 (_narrow_codes).
_NARROW_RUN = 1 << 18


def _narrow_codes(placement: Any, keys: _Keys, rows: int, names: tuple[str, ...],
                  key: object) -> npt.NDArray[np.uint8] | None:
    """The codes of a plain key column as uint8, looked up a run at a time into one reused int32
    buffer (no int32 array of every row to fill and then narrow), or None where that does not
    apply: only a ring snapshot (frozen, so runs cannot see two states) with at most 256 names,
    and a key column without nulls or dictionary."""
    from ringkit.ring import RingSnapshot

    if not isinstance(placement, RingSnapshot) or len(names) > 256 or keys.mask is not None \
            or keys.chunks is not None or not hasattr(keys.batch, "slice") or rows <= _NARROW_RUN:
        return None
    narrow = np.empty(rows, dtype=np.uint8)
    run = np.empty(_NARROW_RUN, dtype=np.int32)
    for start in range(0, rows, _NARROW_RUN):
        part = keys.batch.slice(start, _NARROW_RUN)
        size = len(part)
        try:
            placement.get_many(part, out=run[:size])
        except (TypeError, ValueError):     # the error that names the row in the whole column
            _lookup(placement, keys.batch, key)
            raise
        narrow[start:start + size] = run[:size]
    return narrow


def node_codes(data: Any, key: Hashable, placement: Any, *,
               null_node: str | None = None) -> NodeCodes:
    """The owner of each row's key in `data`, as int32 codes into ``names`` (the placement's
    ``nodes``, then ``null_node`` if it is another name): what :func:`assign` and :func:`split`
    are made of, for callers that want the numbers.

    >>> import pandas as pd, ringkit
    >>> ring = ringkit.HashRing(["a", "b", "c"])
    >>> codes, names = node_codes(pd.DataFrame({"k": ["x", "y"]}), "k", ring)
    >>> [names[c] for c in codes] == [ring.get("x"), ring.get("y")]
    True
    """
    placement, keys, names, null_code = _prepared(data, key, placement, null_node)
    codes = _codes_of(placement, keys, len(data), null_code, key)
    return NodeCodes(codes, names)


def _prepared(data: Any, key: Hashable, placement: Any,
              null_node: str | None) -> tuple[Any, _Keys, tuple[str, ...], int]:
    """The frozen placement, the key column, the node column's names and the null keys' code."""
    kind = _kind(data)
    placement = _frozen(placement)
    names, null_code = _names(tuple(placement.nodes), null_node)
    if kind == _PANDAS:
        keys = _pandas_keys(data, key)
    elif kind == _POLARS:
        keys = _polars_keys(data, key)
    else:
        keys = _arrow_table_keys(data, key)
    return placement, keys, names, null_code


def assign(data: Any, key: Hashable, placement: Any, *, column: str = "node",
           null_node: str | None = None) -> Any:
    """`data` with one more column, `column`, holding the node that owns each row's `key`.

    The result is of the kind of `data` (a new frame: `data` is left as it was; a `column` that
    exists already is replaced). The node column is categorical: pandas ``category`` whose
    categories are ``placement.nodes``, pyarrow ``dictionary<int32, string>``, polars
    ``Categorical``. Null keys raise ValueError naming the column unless ``null_node`` says where
    they go.

    >>> import pandas as pd, ringkit
    >>> ring = ringkit.HashRing(["a", "b", "c"])
    >>> out = assign(pd.DataFrame({"user": ["ann", "bob"]}), "user", ring)
    >>> list(out["node"]) == [ring.get("ann"), ring.get("bob")]
    True
    """
    kind = _kind(data)
    column = _check_column_name(column, key)
    if kind == _POLARS:
        return _assign_polars(data, key, placement, column, null_node)
    codes, names = node_codes(data, key, placement, null_node=null_node)
    if kind == _PANDAS:
        out = data.copy(deep=False)
        out[column] = _categorical(codes, names)
        return out
    import pyarrow as pa

    # safe=False: the codes index names by construction (a check would cost a pass over them).
    nodes = pa.DictionaryArray.from_arrays(pa.array(codes, type=pa.int32()),
                                           pa.array(names, type=pa.string()), safe=False)
    if kind == _ARROW_TABLE:
        nodes = pa.chunked_array([nodes])
    index = data.schema.get_field_index(column)
    if index >= 0:
        return data.set_column(index, column, nodes)
    return data.append_column(column, nodes)


def _assign_polars(data: Any, key: Hashable, placement: Any, column: str,
                   null_node: str | None) -> Any:
    import polars as pl
    import pyarrow as pa

    placement, keys, names, null_code = _prepared(data, key, placement, null_node)
    # polars maps an Arrow dictionary onto its own categories, in half the time from narrow
    # indices (the column it makes is the same whatever their width).
    indices: npt.NDArray[Any] | None = _narrow_codes(placement, keys, len(data), names, key)
    if indices is None:
        codes = _codes_of(placement, keys, len(data), null_code, key)
        narrow = np.uint8 if len(names) <= 256 else np.uint16 if len(names) <= 65536 else None
        indices = codes.astype(narrow) if narrow is not None else codes
    # safe=False: the codes index names by construction (a check would cost a pass over them).
    nodes = pa.DictionaryArray.from_arrays(pa.array(indices), pa.array(names, type=pa.string()),
                                           safe=False)
    return data.with_columns(pl.from_arrow(nodes).alias(column))  # type: ignore[union-attr]


def split(data: Any, key: Hashable, placement: Any, *,
          null_node: str | None = None) -> dict[str, Any]:
    """`data` cut into one frame per node: ``{node: the rows whose key it owns}``.

    Every node of the placement has an entry, in ``placement.nodes`` order (an empty frame when no
    key goes there), then ``null_node`` if it is not a node. Each part is of the kind of `data`,
    with its columns, and keeps the rows in their order.

    >>> import pandas as pd, ringkit
    >>> ring = ringkit.HashRing(["a", "b"])
    >>> parts = split(pd.DataFrame({"k": range(10)}), "k", ring)
    >>> sorted(parts) == ["a", "b"] and sum(len(p) for p in parts.values()) == 10
    True
    """
    kind = _kind(data)
    codes, names = node_codes(data, key, placement, null_node=null_node)
    order = np.argsort(codes, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=len(names)))])
    parts: dict[str, Any] = {}
    if kind == _POLARS:
        import polars as pl
    for i, name in enumerate(names):
        rows = order[bounds[i]:bounds[i + 1]]
        if kind == _PANDAS:
            parts[name] = data.iloc[rows]
        elif kind == _POLARS:
            parts[name] = data.select(pl.all().gather(rows))
        else:
            parts[name] = _arrow_take(data, rows)
    return parts


def _arrow_take(data: Any, rows: npt.NDArray[np.intp]) -> Any:
    """``data.take(rows)``; string and binary view columns, which pyarrow cannot take from,
    go through their large form and back."""
    import pyarrow as pa

    views = [i for i, field in enumerate(data.schema) if str(field.type) in _VIEWS]
    if not views:
        return data.take(rows)
    columns = list(data.columns)
    for i in views:
        view_type = data.schema.field(i).type
        columns[i] = columns[i].cast(_VIEWS[str(view_type)]()).take(rows).cast(view_type)
    others = [i for i in range(len(columns)) if i not in views]
    if others:
        taken = data.select(others).take(rows)
        for j, i in enumerate(others):
            columns[i] = taken.column(j)
    kind = pa.Table if isinstance(data, pa.Table) else pa.RecordBatch
    return kind.from_arrays(columns, schema=data.schema)
