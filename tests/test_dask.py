"""ringkit.dask on a real distributed.LocalCluster (2 worker processes) and on the threaded
scheduler: every row's node equals placement.get(key); partition_by_node puts exactly the rows of
nodes[i] in partition i, losing and duplicating none; the placement is frozen when the graph is
built, enters it once, and tokenizes deterministically."""

from __future__ import annotations

from collections.abc import Iterator

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from distributed import Client, LocalCluster

import ringkit
import ringkit.dask as rkdask
from ringkit import compat
from ringkit.errors import ColumnNotFoundError

NODES = ["shard-a", "shard-b", "shard-c", "shard-d", "shard-e"]
ROWS = 30_000


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, worker_dashboard_address=None) as cluster, \
            Client(cluster) as c:
        assert len(c.scheduler_info()["workers"]) == 2
        yield c


def _data(rows: int = ROWS, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 2**40, rows)
    return pd.DataFrame({
        "user": [f"user:{i}" for i in ids],
        "id": ids.astype(np.int64),
        "amount": rng.random(rows),
    }, index=pd.Index(rng.permutation(rows) * 3, name="row"))


def _where(placement: object, keys: object) -> list[str]:
    return [placement.get(k) for k in keys]  # type: ignore[attr-defined]


# -- the threaded scheduler first: while the cluster's Client exists it is Dask's default, and a
# shuffle built then is a p2p one, which needs that Client.

def test_threaded_scheduler_and_nulls() -> None:
    ring = ringkit.HashRing(NODES)
    data = pd.DataFrame({"user": ["a", None, "b", "c", None, "d"] * 50, "v": range(300)})
    ddf = dd.from_pandas(data, npartitions=4, sort=False)
    with pytest.raises(ValueError, match=r"partition \d: key column 'user' has .* null keys"):
        rkdask.assign(ddf, "user", ring).compute(scheduler="threads")
    with pytest.raises(ValueError, match=r"partition \d: key column 'user' has .* null keys"):
        rkdask.partition_by_node(ddf, "user", ring).compute(scheduler="threads")
    out = rkdask.assign(ddf, "user", ring, null_node="parking").compute(scheduler="threads")
    assert list(out["node"]) == [ring.get(k) if not pd.isna(k) else "parking"
                                 for k in data["user"]]
    parts = rkdask.partition_by_node(ddf, "user", ring, null_node="parking")
    assert parts.npartitions == len(NODES) + 1
    last = parts.get_partition(len(NODES)).compute(scheduler="threads")
    assert len(last) == 100 and last["user"].isna().all()
    assert sum(parts.map_partitions(len).compute(scheduler="threads")) == 300


def test_the_placement_is_frozen_when_the_graph_is_built() -> None:
    ring = ringkit.HashRing(NODES)
    data = _data(3_000)
    placed = rkdask.assign(dd.from_pandas(data, npartitions=3, sort=False), "user", ring)
    before = _where(ring, data["user"].tolist())
    ring.add("shard-z", 10.0)
    ring.remove("shard-a")
    out = placed.compute(scheduler="threads")
    assert list(out["node"]) == before
    assert "shard-z" not in set(out["node"].cat.categories)


def test_the_placement_enters_the_graph_once_and_tokenizes_deterministically() -> None:
    data = _data(2_000)
    ddf = dd.from_pandas(data, npartitions=8, sort=False)
    first = rkdask.assign(ddf, "user", ringkit.HashRing(NODES))
    again = rkdask.assign(ddf, "user", ringkit.HashRing(list(reversed(NODES))))
    other = rkdask.assign(ddf, "user", ringkit.HashRing(NODES[:-1]))
    assert first._name == again._name and dask.base.tokenize(first) == dask.base.tokenize(again)
    assert first._name != other._name
    graph = dict(first.__dask_graph__())
    shipped = [k for k in graph if "ringkit-placement-" in str(k)]
    assert len(shipped) == 1
    moved = rkdask.partition_by_node(ddf, "user", ringkit.HashRing(NODES))
    assert moved._name == rkdask.partition_by_node(ddf, "user", ringkit.HashRing(NODES))._name
    assert len([k for k in dict(moved.__dask_graph__()) if "ringkit-placement-" in str(k)]) == 1


def test_placements_tokenize_by_what_they_place() -> None:
    from dask.base import tokenize

    ring = ringkit.HashRing(NODES)
    assert tokenize(ring) == tokenize(ringkit.HashRing(list(reversed(NODES)))) \
        == tokenize(ring.snapshot())
    before = tokenize(ring)
    ring.add("shard-z")
    assert tokenize(ring) != before
    makers = [
        lambda nodes: ringkit.Rendezvous(nodes),
        lambda nodes: ringkit.JumpHash(nodes),
        lambda nodes: ringkit.HashRing.ketama(nodes),
        lambda nodes: compat.uhashring(nodes),
        lambda nodes: compat.libmemcached([f"{n}:11211" for n in nodes]),
        lambda nodes: compat.pymemcache([f"{n}:11211" for n in nodes]),
        lambda nodes: compat.twemproxy({"servers": [f"{n}:11211:1" for n in nodes]}),
        lambda nodes: compat.twemproxy({"servers": [f"{n}:11211:1" for n in nodes],
                                        "distribution": "modula"}),
    ]
    for make in makers:
        assert tokenize(make(NODES)) == tokenize(make(NODES))
        assert tokenize(make(NODES)) != tokenize(make(NODES[:-1]))


def test_bad_input_is_refused_when_the_graph_is_built() -> None:
    ring = ringkit.HashRing(NODES)
    ddf = dd.from_pandas(pd.DataFrame({"user": ["a"], "f": [1.5]}), npartitions=1, sort=False)
    with pytest.raises(ColumnNotFoundError, match="key column 'nope'"):
        rkdask.assign(ddf, "nope", ring)
    with pytest.raises(ColumnNotFoundError):
        rkdask.partition_by_node(ddf, "nope", ring)
    with pytest.raises(TypeError, match="key column 'f' has type float64"):
        rkdask.assign(ddf, "f", ring)
    with pytest.raises(TypeError, match="ddf must be a dask DataFrame"):
        rkdask.assign(pd.DataFrame({"user": ["a"]}), "user", ring)
    with pytest.raises(TypeError, match="placement must be a ringkit placement"):
        rkdask.assign(ddf, "user", object())
    with pytest.raises(ValueError, match="column must differ from key"):
        rkdask.assign(ddf, "user", ring, column="user")


# -- a distributed.LocalCluster of 2 worker processes

@pytest.mark.parametrize("key", ["user", "id"])
def test_assign_on_the_cluster_places_every_row_like_get(client: Client, key: str) -> None:
    ring = ringkit.HashRing(NODES)
    data = _data()
    ddf = dd.from_pandas(data, npartitions=7, sort=False)
    placed = rkdask.assign(ddf, key, ring)
    assert isinstance(placed.dtypes["node"], pd.CategoricalDtype)
    assert list(placed.dtypes["node"].categories) == list(ring.nodes)     # known before compute
    out = client.compute(placed).result()
    assert len(out) == ROWS and out.index.equals(data.index)
    assert list(out["node"]) == _where(ring, data[key].tolist())
    pd.testing.assert_frame_equal(out[["user", "id", "amount"]], data, check_dtype=False)


@pytest.mark.parametrize("name", ["rendezvous", "jump", "ketama", "twemproxy", "uhashring"])
def test_every_placement_ships_to_worker_processes(client: Client, name: str) -> None:
    placement = {
        "rendezvous": ringkit.Rendezvous(NODES),
        "jump": ringkit.JumpHash(NODES),
        "ketama": ringkit.HashRing.ketama(NODES),
        "twemproxy": compat.twemproxy({"servers": [f"10.0.0.{i}:6379:1" for i in range(5)],
                                       "hash": "murmur", "distribution": "ketama"}),
        "uhashring": compat.uhashring(NODES),
    }[name]
    data = _data(5_000)
    out = client.compute(rkdask.assign(dd.from_pandas(data, npartitions=4, sort=False), "user",
                                       placement)).result()
    assert list(out["node"]) == _where(placement, data["user"].tolist())


def test_partition_by_node_on_the_cluster(client: Client) -> None:
    ring = ringkit.HashRing({"shard-a": 1, "shard-b": 2, "shard-c": 1, "shard-d": 1,
                             "shard-e": 0.5})
    data = _data()
    parts = rkdask.partition_by_node(dd.from_pandas(data, npartitions=6, sort=False), "user", ring)
    assert parts.npartitions == len(ring.nodes)
    computed = client.compute([parts.get_partition(i) for i in range(parts.npartitions)])
    seen = []
    for i, part in enumerate(client.gather(computed)):
        assert list(part.columns) == list(data.columns)
        assert set(_where(ring, part["user"].tolist())) <= {ring.nodes[i]}
        seen.append(part)
    whole = pd.concat(seen)
    # No row lost or duplicated: the same (index, row) pairs, each once.
    assert whole.index.is_unique and len(whole) == ROWS
    pd.testing.assert_frame_equal(whole.sort_index(), data.sort_index(), check_dtype=False)
    counts = [len(p) for p in seen]
    expected = pd.Series(_where(ring, data["user"].tolist())).value_counts()
    assert counts == [int(expected.get(n, 0)) for n in ring.nodes]


def test_partition_by_node_gives_empty_partitions_to_nodes_without_rows(client: Client) -> None:
    ring = ringkit.HashRing(NODES)
    data = pd.DataFrame({"user": ["just-one"] * 10, "x": range(10)})
    parts = rkdask.partition_by_node(dd.from_pandas(data, npartitions=3, sort=False), "user", ring,
                                     column="node")
    lengths = client.compute(parts.map_partitions(len)).result().tolist()
    owner = ring.nodes.index(ring.get("just-one"))
    assert lengths == [10 if i == owner else 0 for i in range(len(NODES))]
    part = client.compute(parts.get_partition(owner)).result()
    assert set(part["node"]) == {ring.get("just-one")}
    assert sorted(part["x"]) == list(range(10))
