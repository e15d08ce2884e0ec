"""Placements over Dask data frames: data past one machine, placed by Dask's own scheduler.

    import ringkit.dask

    events = dd.read_parquet("s3://bucket/events/")
    events = ringkit.dask.assign(events, "user_id", ring)               # lazy: + a "node" column
    counts = events["node"].value_counts().compute()
    parts = ringkit.dask.partition_by_node(events, "user_id", ring)     # partition i: nodes[i]
    parts.to_parquet("out/")                                            # one file set per node

Both functions are lazy and build on Dask's public API: :func:`assign` is one
``map_partitions`` call that places each partition with one vectorised ``get_many``
(:func:`ringkit.frame.assign`), and :func:`partition_by_node` moves each row to its node's
partition with ``set_index`` over explicit divisions (Dask's ``shuffle`` would place rows by a
hash of the column, not by node). Each works on the threaded scheduler and on a ``distributed``
cluster.

The placement is snapshotted when the graph is built: a ring changed before ``compute()`` does
not change the answer. It enters the graph once, as one task of its own, so a cluster ships it to
each worker once rather than inside every partition's task; its token (and so the names of the
collections built here) depends only on what it places, so building the same graph twice gives
the same keys.

Needs ``pip install ringkit[dask]`` (dask[dataframe] and distributed).
"""

from __future__ import annotations

import pickle
from collections.abc import Hashable
from typing import Any

import numpy as np

from ringkit import frame
from ringkit.errors import ColumnNotFoundError

__all__ = ["assign", "partition_by_node"]

_CODE = "__ringkit_node_code__"
_INDEX = "__ringkit_row_index__"


def _collection(ddf: object) -> Any:
    try:
        import dask.dataframe as dd
    except ImportError as exc:
        raise ImportError(f"ringkit.dask needs dask's data frames ({exc}): pip install "
                          f"'ringkit[dask]'") from None

    if not isinstance(ddf, dd.DataFrame):
        raise TypeError(f"ddf must be a dask DataFrame, got {type(ddf).__module__}."
                        f"{type(ddf).__qualname__}")
    return ddf


def _check_key(ddf: Any, key: Hashable) -> None:
    if key not in ddf.columns:
        raise ColumnNotFoundError(key, f"key column {key!r} is not a column of ddf (columns: "
                                       f"{', '.join(repr(c) for c in list(ddf.columns)[:20])})")
    # The meta (an empty frame of the right dtypes) shows an unsupported dtype or a bad
    # placement now, when the graph is built, rather than in a worker at compute().
    frame.node_codes(ddf._meta, key, _PLACEMENT_PROBE, null_node=None)


class _Probe:
    nodes = ("probe",)

    @staticmethod
    def get_many(keys: Any) -> Any:
        return np.zeros(len(keys), dtype=np.int32)


_PLACEMENT_PROBE = _Probe()


def _shipped(placement: Any) -> tuple[Any, Any, str]:
    """The placement frozen now, as one task of the graph named by what it places, with its
    token."""
    from dask.base import tokenize
    from dask.delayed import delayed

    snapshot = frame._frozen(placement)
    try:
        pickle.dumps(snapshot, protocol=4)
    except Exception as exc:  # noqa: BLE001 - any pickling failure means the same thing here
        raise TypeError(f"placement cannot be shipped to workers: {type(snapshot).__name__} "
                        f"does not pickle ({exc})") from None
    # Every ringkit placement has __dask_tokenize__ (what it places); another object that
    # offers the protocol is tokenized as Dask does, deterministically or not.
    token = tokenize(snapshot)
    return snapshot, delayed(snapshot, name=f"ringkit-placement-{token}"), token


def _in_partition(exc: ValueError, partition_info: dict[str, Any] | None) -> ValueError:
    """`exc` (a null key, a bad key) saying which partition's rows it counts in."""
    where = "" if partition_info is None else f"partition {partition_info.get('number')}: "
    return ValueError(f"{where}{exc} (rows counted within the partition)")


def _assign_partition(df: Any, key: Hashable, placement: Any, column: str,
                      null_node: str | None, partition_info: dict[str, Any] | None = None) -> Any:
    try:
        return frame.assign(df, key, placement, column=column, null_node=null_node)
    except ValueError as exc:
        raise _in_partition(exc, partition_info) from None


def assign(ddf: Any, key: Hashable, placement: Any, *, column: str = "node",
           null_node: str | None = None) -> Any:
    """`ddf` with one more column, `column`, holding the node that owns each row's `key` (lazy).

    The node column is categorical with the placement's nodes as its known categories (then
    ``null_node`` if it is another name), so ``value_counts``, ``groupby`` and the like know every
    node before any partition is computed. Null keys raise ValueError at compute time (naming
    the partition, and the row within it) unless ``null_node`` says where they go. See
    :func:`ringkit.frame.assign` for the key types.
    """
    import pandas as pd

    ddf = _collection(ddf)
    column = frame._check_column_name(column, key)
    _check_key(ddf, key)
    snapshot, shipped, token = _shipped(placement)
    names, _ = frame._names(tuple(snapshot.nodes), null_node)
    meta = ddf._meta.copy(deep=False)
    meta[column] = pd.Categorical([], categories=list(names))
    return ddf.map_partitions(_assign_partition, key, shipped, column, null_node, meta=meta,
                              token=f"ringkit-assign-{token}", enforce_metadata=False)


def _tag_partition(df: Any, key: Hashable, placement: Any, null_node: str | None,
                   partition_info: dict[str, Any] | None = None) -> Any:
    try:
        codes, _ = frame.node_codes(df, key, placement, null_node=null_node)
    except ValueError as exc:
        raise _in_partition(exc, partition_info) from None
    out = df.copy(deep=False)
    out[_INDEX] = df.index
    out[_CODE] = codes
    return out


def _restore_partition(df: Any, index_name: Any, column: str | None, names: list[str]) -> Any:
    codes = df.index.to_numpy()
    out = df.set_index(_INDEX)
    out.index.name = index_name
    if column is not None:
        out[column] = frame._categorical(codes.astype(np.int32, copy=False), tuple(names))
    return out


def partition_by_node(ddf: Any, key: Hashable, placement: Any, *, column: str | None = None,
                      null_node: str | None = None) -> Any:
    """`ddf` with its rows moved so that partition ``i`` holds exactly the rows whose key
    ``placement.nodes[i]`` owns (lazy; one partition per node, empty where no key goes).

    A ``null_node`` that is not a node gets one more partition, the last. Rows keep their index
    and columns, plus the node column when `column` names one; within a partition their order is
    the shuffle's. The result's divisions are unknown (its index is the original one).
    """
    import pandas as pd

    ddf = _collection(ddf)
    if column is not None:
        column = frame._check_column_name(column, key)
    _check_key(ddf, key)
    for reserved in (_CODE, _INDEX):
        if reserved in ddf.columns:
            raise ValueError(f"ddf has a column named {reserved!r}, which partition_by_node uses")
    snapshot, shipped, token = _shipped(placement)
    names, _ = frame._names(tuple(snapshot.nodes), null_node)
    index_name = ddf._meta.index.name
    tagged_meta = ddf._meta.copy(deep=False)
    tagged_meta[_INDEX] = ddf._meta.index
    tagged_meta[_CODE] = np.empty(0, dtype=np.int32)
    tagged = ddf.map_partitions(_tag_partition, key, shipped, null_node, meta=tagged_meta,
                                token=f"ringkit-tag-{token}", enforce_metadata=False)
    # Partition i takes the codes in [i, i + 1); the last one [n - 1, n], where no code is n.
    divisions = list(range(len(names) + 1))
    moved = tagged.set_index(_CODE, divisions=divisions, sorted=False)
    meta = ddf._meta.copy(deep=False)
    if column is not None:
        meta[column] = pd.Categorical([], categories=list(names))
    return moved.map_partitions(_restore_partition, index_name, column, list(names), meta=meta,
                                token=f"ringkit-restore-{token}", clear_divisions=True,
                                enforce_metadata=False)
