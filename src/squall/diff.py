"""Compare two outputs row by row on their key: how many predictions changed, appeared or disappeared."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from squall.errors import InputError


@dataclass(frozen=True)
class OutputDiff:
    """Counts of rows by what happened to them between two outputs, and the largest change per column."""

    rows_old: int
    rows_new: int
    unchanged: int
    changed: int
    appeared: int
    disappeared: int
    max_change: dict[str, float]


def diff_outputs(old: str, new: str, key: Sequence[str], tolerance: float = 0.0) -> OutputDiff:
    """Join the parts of ``old`` and ``new`` on ``key`` and count the differences in every shared prediction column."""
    import numpy as np

    left, right = _read(old, key), _read(new, key)
    columns = [c for c in left.columns if c in right.columns]
    if not columns:
        raise InputError(f"{old} and {new} share no prediction columns; compare outputs of the same kind of model")
    joined = left.join(right, how="inner", lsuffix="_old", rsuffix="_new")
    differs = np.zeros(len(joined), dtype=bool)
    max_change: dict[str, float] = {}
    for column in columns:
        a, b = joined[f"{column}_old"], joined[f"{column}_new"]
        if a.dtype.kind in "fiub" and b.dtype.kind in "fiub":
            delta = (a.astype("float64") - b.astype("float64")).abs()
            differs |= (delta > tolerance).to_numpy() | (a.isna() != b.isna()).to_numpy()
            max_change[column] = float(delta.max()) if len(delta) else 0.0
        else:
            differs |= (a.astype(str) != b.astype(str)).to_numpy()
    changed = int(differs.sum())
    return OutputDiff(
        rows_old=len(left), rows_new=len(right), unchanged=len(joined) - changed, changed=changed,
        appeared=int((~right.index.isin(left.index)).sum()), disappeared=int((~left.index.isin(right.index)).sum()),
        max_change=max_change,
    )


def _read(output: str, key: Sequence[str]) -> Any:
    import pandas as pd

    folder = Path(output)
    manifest = folder / "_manifest.json"
    if manifest.exists():
        paths = [folder / path for path in dict.fromkeys(part["path"] for part in json.loads(manifest.read_text())["parts"])]
    else:
        paths = sorted(folder.glob("part-*"))
    frames = [_read_part(path) for path in paths]
    if not frames:
        raise InputError(f"{output}: no part files; is this a squall output?")
    frame = pd.concat(frames, ignore_index=True)
    missing = [k for k in key if k not in frame.columns]
    if missing:
        raise InputError(f"{output}: the parts have no key column(s) {missing}; pass the key the jobs used")
    if frame.duplicated(subset=list(key)).any():
        raise InputError(f"{output}: the key {list(key)} is not unique in the parts; pick a unique key")
    return frame.set_index(list(key)).sort_index()


def _read_part(path: Path) -> Any:
    import pandas as pd

    if path.suffix == ".csv":
        return pd.read_csv(path)
    if path.suffix == ".jsonl":
        return pd.read_json(path, lines=True)
    return pd.read_parquet(path)
