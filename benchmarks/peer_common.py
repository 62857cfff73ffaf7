"""What the peers of ``compare.py`` (Ray Data, Lithops, Dask) share: loading the model, predicting one batch, and
the row-group ranges that make one unit of work.

The prediction is the hand loops' call (``baselines.py``, ``bench_text.py``), so every system does the same work:

* ``sklearn`` (the GBDT and linear workloads): ``joblib.load``, then
  ``model.predict_proba(frame[model.feature_names_in_])`` on a pandas frame converted from Arrow (so the feature
  matrix is column-major, which sklearn's HistGradientBoosting predicts ~2.5x faster from than from a row-major
  ``np.column_stack``); output ``id`` plus ``p0..p{k-1}`` (float64);
* ``text`` (MiniLM): ``SentenceTransformer(path, device="cpu")`` with ``$OMP_NUM_THREADS`` torch threads, then
  ``encode(texts, batch_size=64)``; output ``id`` plus ``embedding`` (n x 384 float32).

``load`` caches the model per process, so a process that runs many batches loads it once (a warm worker); a
system that starts a process per unit of work (Lithops on localhost) pays the load every time.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

KINDS = ("sklearn", "text")
ENCODE_BATCH = 64


@functools.cache
def load(kind: str, model_path: str) -> Any:
    """The model at ``model_path``, loaded once per process."""
    if kind == "text":
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        return SentenceTransformer(model_path, device="cpu")
    import joblib

    return joblib.load(model_path)


def predict(kind: str, model: Any, frame: Any) -> dict[str, np.ndarray]:
    """``id`` and the model's outputs for one pandas batch with an ``id`` column."""
    ids = frame["id"].to_numpy()
    if kind == "text":
        embeddings = model.encode(list(frame["text"]), batch_size=ENCODE_BATCH, show_progress_bar=False)
        return {"id": ids, "embedding": embeddings}
    proba = model.predict_proba(frame[list(model.feature_names_in_)])
    return {"id": ids, **{f"p{i}": proba[:, i] for i in range(proba.shape[1])}}


def to_table(columns: dict[str, np.ndarray]) -> pa.Table:
    """The prediction columns as an Arrow table; a 2-D array becomes a fixed-size list column."""
    arrays = {}
    for name, values in columns.items():
        if values.ndim == 2:
            flat = pa.array(np.ascontiguousarray(values).reshape(-1))
            arrays[name] = pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
        else:
            arrays[name] = pa.array(values)
    return pa.table(arrays)


def row_group_ranges(row_group_rows: list[int], batch_rows: int) -> list[list[int]]:
    """Consecutive row groups cut into ranges of about ``batch_rows`` rows (at least one group each), so that a
    system that splits work by row groups hands its model batches of the same size as the others."""
    ranges: list[list[int]] = []
    rows = 0
    for group, n in enumerate(row_group_rows):
        if ranges and rows + n <= batch_rows:
            ranges[-1].append(group)
            rows += n
        else:
            ranges.append([group])
            rows = n
    return ranges


def groups_per_batch(row_group_rows: list[int], batch_rows: int) -> int:
    """How many row groups of this file make about one batch (at least one)."""
    largest = max(row_group_rows, default=1)
    return max(1, batch_rows // max(1, largest))


def open_input(location: str) -> Any:
    """A readable file on a local path or an object-store URI (pyarrow's own filesystem, which takes the endpoint
    from ``$AWS_ENDPOINT_URL``)."""
    if "://" not in location:
        return pa.OSFile(location)
    fs, path = pafs.FileSystem.from_uri(location)
    return fs.open_input_file(path)


def write_parquet(table: pa.Table, location: str) -> None:
    """Writes ``table`` as one Parquet file at a local path or an object-store URI."""
    if "://" not in location:
        pq.write_table(table, location)
        return
    fs, path = pafs.FileSystem.from_uri(location)
    pq.write_table(table, path, filesystem=fs)


def parquet_row_groups(location: str) -> list[int]:
    """Rows per row group of the Parquet file at a local path or object-store URI."""
    with open_input(location) as handle:
        metadata = pq.ParquetFile(handle).metadata
    return [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
