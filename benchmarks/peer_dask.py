"""Dask (distributed, ``LocalCluster``) as a peer of ``compare.py``: one measured process, the cluster inside it.

Written as Dask's docs show:

* a ``LocalCluster(n_workers=2, threads_per_worker=1)`` and a ``Client`` on it ("Python API" under "Deploy Dask
  Clusters", https://docs.dask.org/en/stable/deploying-python.html): 2 worker processes x 1 thread = the 2 cores;
* ``dd.read_parquet(input, split_row_groups=N)`` ("Dask Dataframe and Parquet",
  https://docs.dask.org/en/stable/dataframe-parquet.html): ``split_row_groups`` makes each partition N row groups,
  about one batch (one row group of the 2,000,000-row file), instead of Dask's default of ~256 MiB partitions;
* ``map_partitions(predict, meta=...)`` ("dask.dataframe.map_partitions"; the call dask-ml's
  ``ParallelPostFit.predict_proba`` makes), the model loaded inside the task and cached per worker process, as
  "Dask Best Practices" asks (load data inside tasks rather than building large objects in the client and
  shipping them in the graph);
* ``to_parquet(output, write_index=False)``; the text workload's output needs an explicit ``schema`` (``id``
  int64, ``embedding`` a list of float32), because Dask cannot infer a Parquet type for a column of NumPy arrays.

    python benchmarks/peer_dask.py --kind sklearn|text --model M --input URI --output URI --batch-rows N
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import pandas as pd

import peer_common

WORKERS = 2


def predict_partition(frame: pd.DataFrame, kind: str, model: str) -> pd.DataFrame:
    """One partition's predictions as a pandas frame (the embedding as a column of arrays)."""
    columns = peer_common.predict(kind, peer_common.load(kind, model), frame)
    if kind == "text":
        return pd.DataFrame({"id": columns["id"], "embedding": list(columns["embedding"])}, index=frame.index)
    return pd.DataFrame(columns, index=frame.index)


def meta(kind: str, model: str) -> pd.DataFrame:
    """The empty frame that tells Dask the output's columns and dtypes without running the model."""
    if kind == "text":
        return pd.DataFrame({"id": np.array([], dtype=np.int64), "embedding": np.array([], dtype=object)})
    classes = len(peer_common.load(kind, model).classes_)
    return pd.DataFrame({"id": np.array([], dtype=np.int64), **{f"p{i}": np.array([], dtype=np.float64) for i in range(classes)}})


def parquet_schema(kind: str) -> Any:
    """The text workload's output schema, whole: Dask cannot infer one from a column of arrays, not even to
    override it with a dict."""
    if kind != "text":
        return "infer"
    import pyarrow as pa

    return pa.schema([("id", pa.int64()), ("embedding", pa.list_(pa.float32()))])


def run(kind: str, model: str, input: str, output: str, batch_rows: int) -> None:
    """Reads ``input`` as row-group partitions, predicts each on the cluster and writes Parquet under ``output``."""
    import dask.dataframe as dd
    from dask.distributed import Client, LocalCluster

    groups = peer_common.groups_per_batch(peer_common.parquet_row_groups(input), batch_rows)
    with LocalCluster(n_workers=WORKERS, threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster):
        frame = dd.read_parquet(input, split_row_groups=groups)
        predictions = frame.map_partitions(predict_partition, kind, model, meta=meta(kind, model))
        predictions.to_parquet(output, write_index=False, schema=parquet_schema(kind))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=peer_common.KINDS, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--batch-rows", type=int, required=True)
    args = parser.parse_args()
    run(args.kind, args.model, args.input, args.output, args.batch_rows)


if __name__ == "__main__":
    main()
