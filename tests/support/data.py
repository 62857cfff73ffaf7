"""Datasets the tests read and outputs they read back: ids files, frames of features in every format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

FEATURES = [f"f{i}" for i in range(6)]


def ids_dataset(folder: Path, rows: int, files: int = 1, row_group_size: int = 1_000) -> Path:
    """Parquet files with an `id` key and an `id_copy` feature (what the fault models read)."""
    per_file = rows // files
    for index in range(files):
        ids = np.arange(index * per_file, (index + 1) * per_file, dtype=np.int64)
        table = pa.table({"id": ids, "id_copy": ids})
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / f"ids-{index}.parquet", row_group_size=row_group_size)
    return folder


def make_frame(rows: int, seed: int = 0, start: int = 0) -> pd.DataFrame:
    """``id`` plus float feature columns, deterministic from ``seed``."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, len(FEATURES))).astype("float64"), columns=FEATURES)
    frame.insert(0, "id", np.arange(start, start + rows, dtype=np.int64))
    return frame


def write_frame(frame: pd.DataFrame, path: Path, fmt: str, row_group_size: int = 1_000) -> Path:
    """Write ``frame`` as parquet, csv or jsonl."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=row_group_size)
    elif fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True)
    return path


def read_output(output: Path, fmt: str = "parquet") -> pd.DataFrame:
    """Every committed part of an output directory, as one frame."""
    parts = sorted(p for p in output.glob(f"part-*.{fmt}"))
    if fmt == "parquet":
        frames = [pd.read_parquet(p) for p in parts]
    elif fmt == "csv":
        frames = [pd.read_csv(p) for p in parts]
    else:
        frames = [pd.read_json(p, lines=True) for p in parts]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
