"""Checks one system's output against the model's own call, value by value (``compare.py``).

``expected`` computes, once per workload and cached as ``.npy`` beside the data, what the model itself returns
for every input row, in ``id`` order: ``predict_proba`` of the sklearn models on the whole table, ``encode`` of
the MiniLM model on all sentences. ``verify`` reads every Parquet file of an output (a local directory or an
``s3://`` prefix; names starting with ``_`` or ``.`` are the systems' bookkeeping and are skipped), takes ``id``
and the other columns in file order (a list, fixed-size-list or tensor column counts as one vector per row),
sorts by ``id`` and requires:

* every input ``id`` exactly once (no row lost, none written twice);
* ``np.allclose(output, expected, rtol, atol)`` for every value, with a tolerance just above float32 rounding:
  for the sklearn workloads ``rtol=1e-6, atol=2e-6``: HistGradientBoosting computes in float64 and every system
  matches it exactly, but LogisticRegression on float32 features computes its logits and probabilities in
  float32, so another summation order (a row-major matrix, another batch size) or a system that hands it
  float64 moves a probability by up to ~1e-6 (its 32-term dot product carries ~1e-6 of float32 error, and
  ``p0 = 1 - p1`` keeps only ~6e-8 absolute precision); for MiniLM ``rtol=1e-4, atol=1e-5``: the batches differ
  between systems, so the padding inside a batch does too, which moves an embedding by about 1e-7.

A failure names the first row that differs and both values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

TOLERANCES = {"sklearn": (1e-6, 2e-6), "text": (1e-4, 1e-5)}


@dataclass(frozen=True)
class Verdict:
    """Whether an output matched the model's own call, its largest absolute difference, and what was wrong."""

    ok: bool
    rows: int
    max_abs_diff: float
    problem: str = ""


def expected(kind: str, model: Path, input: Path, cache: Path) -> np.ndarray:
    """The model's own outputs for every row of ``input`` (row ``i`` is ``id`` ``i``), cached in ``cache``."""
    tag = json.dumps({"model": _stamp(model), "input": _stamp(input)})
    tag_path = cache.with_suffix(".json")
    if cache.exists() and tag_path.exists() and tag_path.read_text() == tag:
        return np.load(cache)
    values = _model_outputs(kind, model, input)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, values)
    tag_path.write_text(tag)
    return values


def _stamp(path: Path) -> list[float]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime]


def _model_outputs(kind: str, model: Path, input: Path) -> np.ndarray:
    table = pq.read_table(input).sort_by("id")
    ids = table.column("id").to_numpy()
    if not np.array_equal(ids, np.arange(len(ids))):
        raise ValueError(f"{input}: ids must be 0..{len(ids) - 1} for the outputs to be checked by id")
    if kind == "text":
        from sentence_transformers import SentenceTransformer

        encoder = SentenceTransformer(str(model), device="cpu")
        return encoder.encode(table.column("text").to_pylist(), batch_size=64, show_progress_bar=False)
    import joblib

    estimator = joblib.load(model)
    frame = table.to_pandas()
    return estimator.predict_proba(frame[list(estimator.feature_names_in_)])


def verify(kind: str, output: str, want: np.ndarray) -> Verdict:
    """Compares the output at ``output`` with ``want`` (row ``i`` = ``id`` ``i``) value by value."""
    try:
        ids, got = read_output(output)
    except (OSError, ValueError, pa.ArrowException) as err:
        return Verdict(False, 0, float("nan"), f"cannot read the output: {err}")
    rows = len(ids)
    order = np.argsort(ids, kind="stable")
    ids, got = ids[order], got[order]
    if rows != len(want) or not np.array_equal(ids, np.arange(len(want))):
        return Verdict(False, rows, float("nan"), _id_problem(ids, len(want)))
    if got.shape != want.shape:
        return Verdict(False, rows, float("nan"), f"output shape {got.shape}, the model's {want.shape}")
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    worst = float(diff.max()) if diff.size else 0.0
    rtol, atol = TOLERANCES[kind]
    close = np.isclose(got, want, rtol=rtol, atol=atol)
    if close.all():
        return Verdict(True, rows, worst)
    row = int(np.argwhere(~close)[0][0])
    return Verdict(False, rows, worst, f"id {row}: output {got[row][:4]} vs the model's {want[row][:4]} "
                   f"({int((~close).any(axis=1).sum())} rows differ beyond rtol={rtol}, atol={atol})")


def _id_problem(ids: np.ndarray, rows: int) -> str:
    unique = np.unique(ids)
    missing = rows - int(np.isin(np.arange(rows), unique).sum())
    return f"{len(ids)} rows for {rows} inputs: {len(ids) - len(unique)} duplicated, {missing} missing"


def read_output(output: str) -> tuple[np.ndarray, np.ndarray]:
    """``id`` and the value matrix (rows x outputs) of every Parquet part under ``output``."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(output)
    fs.invalidate_cache()  # s3fs keeps listings; the system wrote this prefix from another process
    files = [f for f in sorted(fs.find(root)) if f.endswith(".parquet") and not _is_bookkeeping(f, root)]
    if not files:
        raise ValueError(f"no Parquet files under {output}")
    ids, values = [], []
    for name in files:
        with fs.open(name, "rb") as handle:
            table = pq.read_table(handle)
        ids.append(table.column("id").to_numpy())
        values.append(_value_matrix(table))
    return np.concatenate(ids), np.concatenate(values)


def _is_bookkeeping(path: str, root: str) -> bool:
    relative = path[len(root.rstrip("/")) + 1:]
    return any(part.startswith(("_", ".")) for part in relative.split("/"))


def _value_matrix(table: pa.Table) -> np.ndarray:
    columns = [_column_matrix(table.column(name)) for name in table.column_names if name != "id"]
    if not columns:
        raise ValueError("the output has no prediction column")
    return np.hstack(columns)


def _column_matrix(column: pa.ChunkedArray) -> np.ndarray:
    """One column as rows x k floats: a scalar column gives k = 1, a vector column its width."""
    array: Any = column.combine_chunks()
    if isinstance(array, pa.ExtensionArray):
        array = array.storage
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type) or pa.types.is_fixed_size_list(array.type):
        flat = array.flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(len(array), -1)
    return array.to_numpy(zero_copy_only=False).reshape(-1, 1)
