"""Table steps shared by the text formats: planned schema, lenient conversion, offsets and batching."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from squall.formats.base import OFFSET_COLUMN, BadRecord, ReadOptions

_TYPES = {
    "int8": pa.int8(), "int16": pa.int16(), "int32": pa.int32(), "int64": pa.int64(),
    "uint8": pa.uint8(), "uint16": pa.uint16(), "uint32": pa.uint32(), "uint64": pa.uint64(),
    "float": pa.float32(), "float32": pa.float32(), "double": pa.float64(), "float64": pa.float64(),
    "bool": pa.bool_(), "string": pa.string(), "large_string": pa.large_string(),
}


def type_name(data_type: pa.DataType) -> str:
    """A planned column type as text; types squall cannot name travel as strings."""
    name = str(data_type)
    return name if name in _TYPES or name.startswith(("timestamp", "date")) else "string"


def schema_from_types(column_types: tuple[tuple[str, str], ...]) -> pa.Schema:
    """The Arrow schema named by ``(column, type name)`` pairs."""
    return pa.schema([(name, _TYPES.get(kind) or pa.type_for_alias(kind)) for name, kind in column_types])


def majority_schema(sample: pa.Table, share: float = 0.99) -> pa.Schema:
    """The sample's schema, except that a text column whose values are nearly all numbers is numeric.

    One stray ``"12abc"`` in the sampled head must not turn a feature column into
    text: the column stays numeric and that value becomes an error row.
    """
    import pandas as pd

    fields = []
    for field in sample.schema:
        column = sample.column(field.name)
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            values = column.drop_null().to_pandas()
            numbers = pd.to_numeric(values, errors="coerce")
            if len(values) and numbers.notna().mean() >= share:
                integral = bool((numbers.dropna() % 1 == 0).all())
                field = pa.field(field.name, pa.int64() if integral else pa.float64())
        fields.append(field)
    return pa.schema(fields)


def convert_leniently(
    table: pa.Table, column_types: tuple[tuple[str, str], ...], offsets: np.ndarray, bad: list[BadRecord]
) -> tuple[pa.Table, np.ndarray]:
    """Cast string columns to the planned types; rows whose values do not convert become bad records."""
    schema = pa.schema([f for f in schema_from_types(column_types) if f.name in table.column_names])
    table = table.select(schema.names)
    try:
        return table.cast(schema), offsets
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    failed = np.zeros(table.num_rows, dtype=bool)
    reasons: dict[int, str] = {}
    for field in schema:
        column_failed = _unconvertible(table.column(field.name), field.type)
        for row in np.flatnonzero(column_failed & ~failed):
            value = table.column(field.name)[int(row)].as_py()
            reasons[int(row)] = f"column {field.name!r}: cannot convert {value!r} to {field.type}"
        failed |= column_failed
    for row in np.flatnonzero(failed):
        bad.append(BadRecord(int(offsets[row]), "ConversionError", reasons[int(row)]))
    kept = table.filter(pa.array(~failed))
    return kept.cast(schema), offsets[~failed]


def _unconvertible(column: pa.ChunkedArray, target: pa.DataType) -> np.ndarray:
    present = column.is_valid().to_numpy(zero_copy_only=False)
    if pa.types.is_integer(target) or pa.types.is_floating(target):
        import pandas as pd

        numbers = pd.to_numeric(column.to_pandas(), errors="coerce")
        failed = present & numbers.isna().to_numpy()
        if pa.types.is_integer(target):
            values = numbers.to_numpy(dtype="float64", na_value=np.nan)
            failed |= present & ~np.isnan(values) & (np.floor(values) != values)
        return failed
    return present & np.array([not _casts(value, target) for value in column.to_pylist()], dtype=bool)


def _casts(value: object, target: pa.DataType) -> bool:
    if value is None:
        return True
    try:
        pc.cast(pa.array([value]), target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def attach_offsets(
    table: pa.Table, offsets: np.ndarray, options: ReadOptions, batch_rows: int
) -> Iterator[pa.RecordBatch]:
    """Yield the table's needed columns plus ``_offset`` as batches of at most ``batch_rows`` rows."""
    if options.columns:
        table = table.select(list(options.columns))
    table = table.append_column(OFFSET_COLUMN, pa.array(offsets, type=pa.int64()))
    yield from table.to_batches(max_chunksize=batch_rows)
