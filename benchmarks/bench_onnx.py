"""The GBDT benchmark model exported to ONNX (skl2onnx): squall's rows/s with ONNX Runtime vs with joblib.

Uses the same 2,000,000-row Parquet file and HistGradientBoostingClassifier
(100 trees, 32 float32 features) as ``bench_sklearn.py``, exports the model
with ``skl2onnx.to_onnx`` (no ZipMap), and runs ``squall run --workers 2
--method predict_proba`` on both files, start-up included. The two outputs'
probabilities are compared (ONNX Runtime computes in float32, scikit-learn
in float64). Also times a plain 2-process loop for reference.

    python benchmarks/bench_onnx.py [--rows 2000000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import baselines
import data
from bench_sklearn import METHOD, best_of, checked, run_squall
from measure import Measurement


def export_onnx(model_path: Path) -> Path:
    """The joblib model as ``<name>.onnx`` beside it (cached)."""
    import joblib
    from skl2onnx import to_onnx

    target = model_path.with_suffix(".onnx")
    if target.exists() and target.stat().st_mtime >= model_path.stat().st_mtime:
        return target
    _int_missing_flags()
    estimator = joblib.load(model_path)
    sample = np.zeros((1, data.N_FEATURES), dtype=np.float32)
    target.write_bytes(to_onnx(estimator, sample, options={"zipmap": False}).SerializeToString())
    return target


def _int_missing_flags() -> None:
    """skl2onnx 1.20 hands HistGradientBoosting's NumPy-bool ``missing_go_to_left`` to an int attribute,
    which onnx rejects; pass it as the 0/1 the attribute means."""
    from skl2onnx.common import tree_ensemble

    original = tree_ensemble.add_node
    if getattr(original, "squall_patched", False):
        return

    def add_node(*args: object, nodes_missing_value_tracks_true: object = 0, **kwargs: object) -> object:
        return original(*args, nodes_missing_value_tracks_true=int(nodes_missing_value_tracks_true), **kwargs)  # type: ignore[call-overload]

    add_node.squall_patched = True  # type: ignore[attr-defined]
    tree_ensemble.add_node = add_node


def probabilities(output: Path) -> np.ndarray:
    table = pa.concat_tables([pq.read_table(p) for p in sorted(output.glob("part-*.parquet"))]).sort_by("id")
    return np.column_stack([table.column(name).to_numpy() for name in table.column_names if name != "id"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--dir", type=Path, default=data.DEFAULT_DIR)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    paths = data.prepare(args.dir, args.rows)
    joblib_model, input = paths["gbdt"], paths["input"]
    onnx_model = export_onnx(joblib_model)
    results: dict[str, Measurement] = {}
    with tempfile.TemporaryDirectory(prefix="bench-onnx-", dir=args.dir) as tmp:
        work = Path(tmp)
        runs = {
            "2-process loop (joblib)": lambda out: baselines.two_processes(joblib_model, input, out, METHOD),
            "squall joblib": lambda out: run_squall(joblib_model, input, out),
            "squall onnx": lambda out: run_squall(onnx_model, input, out),
        }
        for name, run in runs.items():
            slug = name.replace(" ", "_").replace("(", "").replace(")", "")
            results[name] = best_of(args.repeat, lambda out, r=run, n=name: checked(n, r(out), out, args.rows), work, slug)
        gap = float(np.abs(probabilities(work / "squall_joblib-0") - probabilities(work / "squall_onnx-0")).max())
    print(f"gbdt predict_proba, {args.rows:,} rows; cpus: {os.cpu_count()}; best of {args.repeat}")
    print(f"{'system':26} {'wall s':>8} {'rows/s':>12} {'peak MiB':>9}")
    for name, m in results.items():
        print(f"{name:26} {m.wall_s:>8.2f} {args.rows / m.wall_s:>12,.0f} {m.peak_rss_mib:>9.0f}")
    speedup = results["squall joblib"].wall_s / results["squall onnx"].wall_s
    print(f"squall with ONNX Runtime vs with joblib: {speedup:.2f}x rows/s; largest probability difference {gap:.1e}")


if __name__ == "__main__":
    main()
