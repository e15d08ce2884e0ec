"""Frames and Dask: ringkit.frame.assign and ringkit.dask.assign beside what a user writes today.

- ``frame.assign`` over 10,000,000 rows of short string keys ("user:<int>"), as a pyarrow Table
  (``string`` column) and as a polars DataFrame (its ``String`` column: string views), beside
  ``HashRing.get_many`` over the same column (the reference for what the frame adds: reading the
  column and building the categorical node column; target >= 0.8x) and beside the per-row
  ``Series.map(uhashring.HashRing.get_node)`` over the first 100,000 rows as a pandas Series
  (target >= 100x, compared per row). 16 nodes.
- ``ringkit.dask.assign`` on a 2-worker ``distributed.LocalCluster`` (one thread each) over
  20,000,000 rows persisted on the workers (20 partitions of Arrow-backed strings), reduced to
  per-node counts (each round under a new column name: Dask would otherwise hand back a result
  whose keys it still holds), beside the same job written as ``map_partitions`` with a per-row
  ``ring.get`` (target >= 5x).

Every row first checks on a sample that it places keys as ``ring.get`` does (uhashring's own
``get_node`` for its row). Targets are the issue's; bench/report.py says whether they were met,
nothing here asserts on time.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import uhashring

import ringkit
import ringkit.dask as rkdask
import ringkit.frame as rkframe
from ringkit import compat

NODES = [f"cache-{i:02d}" for i in range(16)]
N_ROWS = 10_000_000
N_LOOP = 100_000
N_DASK = 20_000_000
DASK_PARTITIONS = 20   # 1,000,000 rows (about 30 MB) each
SAMPLE = 1000


def _keys(start: int, stop: int) -> pa.Array:
    ids = pa.array(np.arange(start, stop, dtype=np.int64) * 7919 % 1_000_000_007)
    return pc.binary_join_element_wise("user:", pc.cast(ids, pa.string()), "")


@pytest.fixture(scope="module")
def ring() -> ringkit.HashRing:
    return ringkit.HashRing(NODES)


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return pa.table({"user": _keys(0, N_ROWS), "amount": np.ones(N_ROWS)})


@pytest.fixture(scope="module")
def polars_frame(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame) and frame.schema["user"] == pl.String
    return frame


def _same(out: Any, ring: ringkit.HashRing, keys: list[str]) -> None:
    nodes = out.column("node").to_pylist() if isinstance(out, pa.Table) else \
        out.get_column("node").to_list()
    assert nodes[:SAMPLE] == [ring.get(k) for k in keys[:SAMPLE]]


TABLE = "frame.assign: 10,000,000 rows of string keys (pyarrow Table, 16 nodes)"
POLARS = "frame.assign: 10,000,000 rows of string keys (polars DataFrame, 16 nodes)"


@pytest.mark.benchmark(group=TABLE)
def test_table_get_many(measure: Any, ring: ringkit.HashRing, table: pa.Table) -> None:
    column = table.column("user")
    measure(ring.get_many, column, label="HashRing.get_many on the column", n_keys=N_ROWS,
            reference=True, per="row", pedantic={"rounds": 11, "iterations": 1, "warmup_rounds": 1})


@pytest.mark.benchmark(group=TABLE)
def test_table_assign(measure: Any, ring: ringkit.HashRing, table: pa.Table) -> None:
    _same(rkframe.assign(table.slice(0, SAMPLE), "user", ring), ring,
          table.column("user").slice(0, SAMPLE).to_pylist())
    measure(rkframe.assign, table, "user", ring, label="ringkit.frame.assign", n_keys=N_ROWS,
            per="row", pedantic={"rounds": 11, "iterations": 1, "warmup_rounds": 1},
            targets=[("speedup", ">=", 0.8, "HashRing.get_many on the column"),
                     ("speedup", ">=", 100, "pandas Series.map(uhashring get_node)")])


@pytest.mark.benchmark(group=TABLE)
def test_table_uhashring_map(measure: Any, table: pa.Table) -> None:
    _uhashring_row(measure, table)


@pytest.mark.benchmark(group=POLARS)
def test_polars_get_many(measure: Any, ring: ringkit.HashRing,
                         polars_frame: pl.DataFrame) -> None:
    def lookup() -> Any:
        return ring.get_many(pa.chunked_array(polars_frame.get_column("user")))

    measure(lookup, label="HashRing.get_many on the column", n_keys=N_ROWS, reference=True,
            per="row", pedantic={"rounds": 11, "iterations": 1, "warmup_rounds": 1})


@pytest.mark.benchmark(group=POLARS)
def test_polars_assign(measure: Any, ring: ringkit.HashRing, polars_frame: pl.DataFrame) -> None:
    head = polars_frame.head(SAMPLE)
    _same(rkframe.assign(head, "user", ring), ring, head.get_column("user").to_list())
    measure(rkframe.assign, polars_frame, "user", ring, label="ringkit.frame.assign",
            n_keys=N_ROWS, per="row", pedantic={"rounds": 11, "iterations": 1, "warmup_rounds": 1},
            targets=[("speedup", ">=", 0.8, "HashRing.get_many on the column"),
                     ("speedup", ">=", 100, "pandas Series.map(uhashring get_node)")])


@pytest.mark.benchmark(group=POLARS)
def test_polars_uhashring_map(measure: Any, table: pa.Table) -> None:
    _uhashring_row(measure, table)


def _uhashring_row(measure: Any, table: pa.Table) -> None:
    peer = uhashring.HashRing(NODES)
    series = table.column("user").slice(0, N_LOOP).to_pandas()
    ours = compat.uhashring(NODES)
    assert list(series[:SAMPLE].map(peer.get_node)) == [ours.get(k) for k in series[:SAMPLE]]
    measure(series.map, peer.get_node, label="pandas Series.map(uhashring get_node)",
            n_keys=N_LOOP, reference=True, per="row", pedantic={"rounds": 3, "iterations": 1},
            versions=("uhashring",))


# --------------------------------------------------------------------------------------------------
# Dask: 20,000,000 rows persisted on a 2-worker LocalCluster

DASK = "ringkit.dask.assign: 20,000,000 rows on a 2-worker LocalCluster, per-node counts"


def _partition(i: int) -> pd.DataFrame:
    size = N_DASK // DASK_PARTITIONS
    keys = _keys(i * size, (i + 1) * size)
    return pd.DataFrame({"user": pd.Series(pd.arrays.ArrowStringArray(keys)),
                         "amount": np.ones(size)})


@pytest.fixture(scope="module")
def cluster_frame() -> Iterator[Any]:
    import dask.dataframe as dd
    from distributed import Client, LocalCluster, wait

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, worker_dashboard_address=None) as cluster, \
            Client(cluster) as client:
        frame = dd.from_map(_partition, list(range(DASK_PARTITIONS))).persist()
        wait(frame)
        yield client, frame


_ROUND = itertools.count()


def _counts_ringkit(client: Any, frame: Any, ring: ringkit.HashRing) -> pd.Series:
    column = f"node{next(_ROUND)}"
    placed = rkdask.assign(frame, "user", ring, column=column)
    return client.compute(placed[column].value_counts()).result()


def _per_row(df: pd.DataFrame, ring: ringkit.HashRing, column: str) -> pd.DataFrame:
    return df.assign(**{column: df["user"].map(ring.get)})


def _counts_per_row(client: Any, frame: Any, ring: ringkit.HashRing) -> pd.Series:
    column = f"node{next(_ROUND)}"
    meta = frame._meta.assign(**{column: pd.Series([], dtype=object)})
    placed = frame.map_partitions(_per_row, ring, column, meta=meta)
    return client.compute(placed[column].value_counts()).result()


@pytest.mark.benchmark(group=DASK)
def test_dask_assign(measure: Any, ring: ringkit.HashRing, cluster_frame: Any) -> None:
    client, frame = cluster_frame
    counts = _counts_ringkit(client, frame, ring)
    assert int(counts.sum()) == N_DASK
    sample = _partition(3)["user"][:SAMPLE]
    assert list(rkframe.assign(pd.DataFrame({"user": sample}), "user", ring)["node"]) == \
        [ring.get(k) for k in sample]
    measure(_counts_ringkit, client, frame, ring, label="ringkit.dask.assign", n_keys=N_DASK,
            per="row", pedantic={"rounds": 3, "iterations": 1},
            targets=[("speedup", ">=", 5, "map_partitions with a per-row ring.get")],
            versions=("dask", "distributed", "pandas"))


@pytest.mark.benchmark(group=DASK)
def test_dask_per_row(measure: Any, ring: ringkit.HashRing, cluster_frame: Any) -> None:
    client, frame = cluster_frame
    ours = _counts_ringkit(client, frame, ring)
    theirs = _counts_per_row(client, frame, ring)
    assert {str(k): int(v) for k, v in ours.items() if v} == \
        {str(k): int(v) for k, v in theirs.items()}
    measure(_counts_per_row, client, frame, ring,
            label="map_partitions with a per-row ring.get", n_keys=N_DASK, per="row",
            reference=True, pedantic={"rounds": 3, "iterations": 1})
