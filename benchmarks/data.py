"""Synthetic input data and models for the squall benchmarks.

Creates (and caches) what the benchmarks measure against:

* ``input.parquet``: an ``id`` int64 column (0..rows-1) and 32 float32
  feature columns ``f0..f31`` drawn from a standard normal, written in 31 row
  groups of ``ceil(rows / 31)`` rows, deterministic from the seed;
* ``input-<N>x.parquet`` with ``N * rows`` rows when ``--scale N`` (N > 1) is
  given, to check that squall's peak memory does not grow with the input;
* ``linear.joblib`` (LogisticRegression) and ``gbdt.joblib``
  (HistGradientBoostingClassifier, 100 trees) trained on 50,000 rows drawn
  the same way, with features passed as a DataFrame so the models record the
  feature names ``f0..f31``.

The binary label (a fixed linear combination of the features plus noise,
thresholded at 0) is never written to the Parquet file; ``draw`` returns it
for training.

    python benchmarks/data.py --rows 2000000 --dir benchmarks/.data [--scale 4]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

N_FEATURES = 32
N_ROW_GROUPS = 31
FEATURES = [f"f{i}" for i in range(N_FEATURES)]
TRAIN_ROWS = 50_000
NOISE_SCALE = 1.0
# The label weights are fixed, independent of the data seed.
WEIGHTS = np.random.default_rng(20240601).normal(size=N_FEATURES).astype(np.float32)
METADATA_KEY = b"squall_bench"
MODEL_NAMES = ("linear", "gbdt")
DEFAULT_DIR = Path(__file__).resolve().parent / ".data"


def draw(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Draws ``n`` feature rows (float32, n x 32) and their binary labels."""
    features = rng.standard_normal((n, N_FEATURES), dtype=np.float32)
    noise = rng.normal(scale=NOISE_SCALE, size=n).astype(np.float32)
    labels = (features @ WEIGHTS + noise > 0).astype(np.int8)
    return features, labels


def schema() -> pa.Schema:
    fields = [pa.field("id", pa.int64())]
    fields += [pa.field(name, pa.float32()) for name in FEATURES]
    return pa.schema(fields)


def _file_tag(rows: int, seed: int, group_rows: int) -> dict[str, int]:
    return {"rows": rows, "seed": seed, "group_rows": group_rows}


def _dataset_is_current(path: Path, rows: int, seed: int, group_rows: int) -> bool:
    if not path.exists():
        return False
    try:
        meta = pq.ParquetFile(path).schema_arrow.metadata or {}
    except (pa.ArrowInvalid, OSError):
        return False
    return meta.get(METADATA_KEY) == json.dumps(_file_tag(rows, seed, group_rows)).encode()


def make_dataset(path: Path | str, rows: int, seed: int = 0, group_rows: int | None = None) -> Path:
    """Writes the benchmark input file (reused if it already matches).

    By default the file has ``N_ROW_GROUPS`` row groups; a larger file made to
    show that memory stays flat passes the smaller file's ``group_rows``, so
    that only the number of rows grows, not the unit of Parquet I/O.
    """
    path = Path(path)
    group_rows = group_rows or math.ceil(rows / N_ROW_GROUPS)
    if _dataset_is_current(path, rows, seed, group_rows):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    file_schema = schema().with_metadata({METADATA_KEY: json.dumps(_file_tag(rows, seed, group_rows))})
    rng = np.random.default_rng(seed)
    tmp = path.with_name(path.name + ".tmp")
    with pq.ParquetWriter(tmp, file_schema) as writer:
        for start in range(0, rows, group_rows):
            n = min(group_rows, rows - start)
            features, _ = draw(rng, n)
            writer.write_table(_table(start, features, file_schema), row_group_size=group_rows)
    tmp.replace(path)
    return path


def _table(start: int, features: np.ndarray, file_schema: pa.Schema) -> pa.Table:
    ids = pa.array(np.arange(start, start + len(features), dtype=np.int64))
    columns = [ids] + [pa.array(features[:, i]) for i in range(N_FEATURES)]
    return pa.Table.from_arrays(columns, schema=file_schema)


def _models_tag(seed: int) -> dict[str, object]:
    import sklearn

    return {"seed": seed, "train_rows": TRAIN_ROWS, "sklearn": sklearn.__version__}


def train_models(directory: Path | str, seed: int = 0) -> dict[str, Path]:
    """Trains and dumps ``linear.joblib`` and ``gbdt.joblib`` (cached)."""
    import joblib
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    directory = Path(directory)
    paths = {name: directory / f"{name}.joblib" for name in MODEL_NAMES}
    tag_path = directory / "models.json"
    tag = json.dumps(_models_tag(seed))
    if all(p.exists() for p in paths.values()) and _read_text(tag_path) == tag:
        return paths
    directory.mkdir(parents=True, exist_ok=True)
    # A different stream from the benchmark rows, same distribution.
    features, labels = draw(np.random.default_rng([seed, 1]), TRAIN_ROWS)
    frame = pd.DataFrame(features, columns=FEATURES)
    models = {
        "linear": LogisticRegression(max_iter=1000),
        # No early stopping, so the model always has exactly 100 trees.
        "gbdt": HistGradientBoostingClassifier(
            max_iter=100, early_stopping=False, random_state=seed
        ),
    }
    for name, model in models.items():
        model.fit(frame, labels)
        joblib.dump(model, paths[name])
    tag_path.write_text(tag)
    return paths


def _read_text(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


def input_path(directory: Path | str, scale: int = 1) -> Path:
    name = "input.parquet" if scale == 1 else f"input-{scale}x.parquet"
    return Path(directory) / name


def prepare(directory: Path | str, rows: int, scale: int = 1, seed: int = 0) -> dict[str, Path]:
    """Creates everything the benchmarks need; returns the paths by name."""
    paths = dict(train_models(directory, seed))
    paths["input"] = make_dataset(input_path(directory), rows, seed)
    if scale > 1:
        group_rows = math.ceil(rows / N_ROW_GROUPS)
        paths["input_scaled"] = make_dataset(input_path(directory, scale), rows * scale, seed, group_rows)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--scale", type=int, default=1, help="also write input-<N>x.parquet")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name, path in prepare(args.dir, args.rows, args.scale, args.seed).items():
        print(f"{name:13} {path}")


if __name__ == "__main__":
    main()
