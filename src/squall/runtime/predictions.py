"""Turn a batch into what the model expects, and what the model returns into named Arrow columns."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from squall.errors import OutputShapeError
from squall.runtime.task import OutputNaming


def to_model_input(batch: pa.RecordBatch, features: Sequence[str], batch_format: str) -> Any:
    """The feature columns of ``batch`` in the form the model receives."""
    selected = batch.select(list(features))
    if batch_format == "arrow":
        return selected
    if batch_format == "numpy":
        return np.column_stack([column.to_numpy(zero_copy_only=False) for column in selected.columns])
    return selected.to_pandas()


def to_columns(
    output: Any, rows: int, naming: OutputNaming, labels: Sequence[Any] | None, vector: bool = False
) -> list[tuple[str, pa.Array]]:
    """Named Arrow columns, one value per row, from a model's output.

    With ``vector``, a 2-D output is one fixed-size-list column (a vector per
    row) instead of a column per position. A tuple is several outputs: one
    column each, named ``<prefix>_<i>``; 2-D members and 2-D values of a dict
    are always vector columns.
    """
    if isinstance(output, (pa.Table, pa.RecordBatch)):
        columns = [(name, _flat(output.column(name))) for name in output.column_names]
    elif isinstance(output, dict):
        columns = [(str(name), _one_column(values)) for name, values in output.items()]
    elif isinstance(output, tuple):
        columns = [(f"{naming.prefix}_{i}", _one_column(values)) for i, values in enumerate(output)]
    elif hasattr(output, "columns") and hasattr(output, "to_numpy") and not isinstance(output, np.ndarray):
        columns = [(str(name), pa.array(output[name].to_numpy())) for name in output.columns]
    elif vector:
        columns = [(naming.explicit[0] if len(naming.explicit) == 1 else naming.prefix, _one_column(output))]
    else:
        columns = _array_columns(np.asarray(output), naming, labels)
    for name, column in columns:
        if len(column) != rows:
            raise OutputShapeError(f"the model returned {len(column)} values in column {name!r} for a batch of {rows} rows")
    if naming.explicit and len(naming.explicit) != len(columns):
        raise OutputShapeError(
            f"`output_columns` names {len(naming.explicit)} columns but the model returned {len(columns)}"
        )
    if naming.explicit:
        columns = [(name, column) for name, (_, column) in zip(naming.explicit, columns)]
    return columns


def _one_column(values: Any) -> pa.Array:
    """One column from an array: scalars per row, or (for 2-D and up) a fixed-size list per row."""
    try:
        array = np.asarray(values)
    except ValueError:  # ragged rows: a variable-length list per row
        return pa.array([np.asarray(row).tolist() for row in values])
    if array.dtype == object:
        return pa.array(list(array))
    if array.ndim <= 1:
        return pa.array(array)
    array = np.ascontiguousarray(array)
    flat: pa.Array = pa.array(array.reshape(-1))
    for size in reversed(array.shape[1:]):
        flat = pa.FixedSizeListArray.from_arrays(flat, size)
    return flat


def _flat(column: Any) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _array_columns(values: np.ndarray, naming: OutputNaming, labels: Sequence[Any] | None) -> list[tuple[str, pa.Array]]:
    if values.ndim == 2 and values.shape[1] == 1 and labels is None:
        values = values[:, 0]  # a regressor's (rows, 1) output is one prediction per row, as (rows,) is
    if values.ndim == 1:
        return [(naming.explicit[0] if len(naming.explicit) == 1 else naming.prefix, pa.array(values))]
    if values.ndim != 2:
        raise OutputShapeError(f"the model returned an array of shape {values.shape}; expected one or two dimensions")
    names = [f"{naming.prefix}_{label}" for label in labels] if labels is not None and len(labels) == values.shape[1] else [
        f"{naming.prefix}_{i}" for i in range(values.shape[1])
    ]
    return [(name, pa.array(values[:, i])) for i, name in enumerate(names)]
