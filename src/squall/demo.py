"""``squall demo``: a real job on generated data, with a real scikit-learn model, checked against the model itself."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from squall.errors import UsageError
from squall.states import JobState

if TYPE_CHECKING:
    import pandas as pd

_FEATURES = 16


def make_demo_data(directory: Path, rows: int, seed: int = 0) -> tuple[Path, Path]:
    """Write ``input/`` (3 Parquet files) and ``model.joblib`` (a fitted LogisticRegression)."""
    import joblib
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        raise UsageError("the demo trains a scikit-learn model: pip install 'squall[sklearn]'") from None
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=_FEATURES)
    columns = [f"f{i}" for i in range(_FEATURES)]
    train = pd.DataFrame(rng.normal(size=(5_000, _FEATURES)).astype("float32"), columns=columns)
    labels = (train.to_numpy() @ weights + rng.normal(scale=0.5, size=len(train))) > 0
    model_path = directory / "model.joblib"
    joblib.dump(LogisticRegression(max_iter=500).fit(train, labels), model_path)
    input_dir = directory / "input"
    input_dir.mkdir(parents=True, exist_ok=True)
    bounds = [0, rows // 2, rows * 3 // 4, rows]
    for index, (lo, hi) in enumerate(zip(bounds, bounds[1:])):
        table = pa.table({"id": np.arange(lo, hi, dtype=np.int64), **{c: rng.normal(size=hi - lo).astype("float32") for c in columns}})
        pq.write_table(table, input_dir / f"part-{index}.parquet", row_group_size=max(1, (hi - lo) // 8))
    return input_dir, model_path


def run_demo(directory: str, rows: int, workers: int | None) -> int:
    """Generate, run, verify; returns the process exit code."""
    import pandas as pd

    from squall import api
    from squall.observe.progress import ProgressBar, summary_table
    from squall.spec import JobSpec

    console = Console(stderr=True)
    base = Path(directory).resolve()
    base.mkdir(parents=True, exist_ok=True)
    console.print(f"[bold]squall demo[/]: {rows:,} rows × {_FEATURES} features in {base}/input, a LogisticRegression")
    input_dir, model_path = make_demo_data(base, rows)
    spec = JobSpec(
        model=str(model_path), input=[str(input_dir)], output=str(base / "predictions"), key=["id"],
        method="predict_proba", overwrite=True, state_dir=str(base / "state"),
        workers=workers or JobSpec.model_fields["workers"].get_default(call_default_factory=True),
    )
    bar = ProgressBar(console)
    try:
        result = api.run(spec, listeners=[bar])
    finally:
        bar.stop()
    console.print(summary_table(result))
    expected = _direct_predictions(input_dir, model_path)
    got = pd.read_parquet(base / "predictions", columns=["id", "prediction_True"]).set_index("id").sort_index()
    same = len(got) == len(expected) and bool(((got["prediction_True"] - expected).abs() < 1e-6).all())
    verdict = "[green]match[/]" if same else "[red]DO NOT match[/]"
    console.print(f"predictions {verdict} model.predict_proba on all {len(expected):,} rows; try `squall status {result.job_id} --state-dir {base / 'state'}`")
    return 0 if same and result.state == JobState.SUCCEEDED else 1


def _direct_predictions(input_dir: Path, model_path: Path) -> pd.Series:
    import joblib
    import pandas as pd

    frame = pd.read_parquet(input_dir).set_index("id").sort_index()
    model = joblib.load(model_path)
    return pd.Series(model.predict_proba(frame)[:, 1], index=frame.index)
