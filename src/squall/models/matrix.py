"""Batches as one row-major matrix of the dtype a tensor runtime wants, copied once at most.

Arrow holds columns; ONNX Runtime, PyTorch and the boosters want rows. The
one unavoidable copy is the transpose, so each column is written straight
into a preallocated matrix of the target dtype instead of stacking first and
casting after. A single fixed-size-list column (a vector per row, say an
image or an embedding) is already row-major and becomes a zero-copy view.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from squall.errors import BatchShapeError


def as_matrix(batch: Any, dtype: Any) -> np.ndarray:
    """``batch`` (Arrow, pandas, NumPy, or a dict of columns) as a C-contiguous ``rows × features`` array."""
    if isinstance(batch, (pa.RecordBatch, pa.Table)):
        return _from_arrow(batch, np.dtype(dtype))
    if isinstance(batch, dict):
        return _from_columns([np.asarray(v) for v in batch.values()], np.dtype(dtype))
    values = batch.to_numpy() if hasattr(batch, "to_numpy") and not isinstance(batch, np.ndarray) else np.asarray(batch)
    if values.ndim == 1:
        values = values.reshape(-1, 1)
    return np.ascontiguousarray(_checked_cast(values, np.dtype(dtype)))


def _from_arrow(batch: pa.RecordBatch | pa.Table, dtype: np.dtype) -> np.ndarray:
    columns = [c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in batch.columns]
    if len(columns) == 1 and pa.types.is_fixed_size_list(columns[0].type):
        return _from_vectors(columns[0], dtype)
    if dtype.kind in "iub":
        nulls = [i for i, c in enumerate(columns) if c.null_count]
        if nulls:
            raise BatchShapeError(f"feature {nulls[0]} holds nulls, and the model takes {dtype}; fill or drop them first")
    return _from_columns([c.to_numpy(zero_copy_only=False) for c in columns], dtype)


def _from_vectors(vectors: pa.Array, dtype: np.dtype) -> np.ndarray:
    """A (possibly nested) fixed-size-list column as one flat row per value: an image becomes C×H×W numbers."""
    width, flat = 1, vectors
    while pa.types.is_fixed_size_list(flat.type):
        if flat.null_count:
            raise BatchShapeError("a vector column holds nulls; fill or drop them before the model")
        width *= flat.type.list_size
        flat = flat.flatten()
    values = flat.to_numpy(zero_copy_only=False)
    return _checked_cast(np.ascontiguousarray(values.reshape(len(vectors), width)), dtype)


def _from_columns(columns: list[np.ndarray], dtype: np.dtype) -> np.ndarray:
    rows = len(columns[0]) if columns else 0
    matrix = np.empty((rows, len(columns)), dtype=dtype)
    for index, column in enumerate(columns):
        try:
            matrix[:, index] = _checked_cast(column, dtype)
        except (TypeError, ValueError) as exc:
            raise BatchShapeError(f"feature {index} cannot become {dtype}: {exc}") from exc
    return matrix


def _checked_cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``values`` as ``dtype``, refusing a cast to integers that would invent or truncate numbers."""
    if dtype.kind in "iub" and values.dtype.kind == "f":
        if not np.isfinite(values).all() or (values != np.trunc(values)).any():
            raise BatchShapeError(f"the model takes {dtype}, and a feature holds missing or fractional values")
    return values.astype(dtype, copy=False)


def column_texts(batch: Any) -> list[str]:
    """The one text column of ``batch`` as a list of Python strings."""
    if isinstance(batch, (pa.RecordBatch, pa.Table)):
        if batch.num_columns != 1:
            raise BatchShapeError(
                f"a text model takes one text column, the batch has {batch.num_columns}; set `features` to that column"
            )
        return list(batch.column(0).to_pylist())
    if hasattr(batch, "columns") and hasattr(batch, "iloc"):
        if len(batch.columns) != 1:
            raise BatchShapeError(
                f"a text model takes one text column, the batch has {len(batch.columns)}; set `features` to that column"
            )
        return list(batch.iloc[:, 0].tolist())
    values = np.asarray(batch, dtype=object)
    if values.ndim == 2:
        if values.shape[1] != 1:
            raise BatchShapeError(
                f"a text model takes one text column, the batch has {values.shape[1]}; set `features` to that column"
            )
        values = values[:, 0]
    return list(values)
