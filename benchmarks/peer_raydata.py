"""Ray Data as a peer of ``compare.py``: one measured driver process, Ray started inside it.

Written as Ray's batch-inference guide shows ("End-to-end: Offline Batch Inference",
https://docs.ray.io/en/latest/data/batch_inference.html; ``Dataset.map_batches`` and ``ray.data.ActorPoolStrategy``
in the API reference): ``ray.data.read_parquet`` → ``map_batches`` with a callable class whose ``__init__`` loads
the model once per actor, on a fixed pool of 2 actors (``compute=ActorPoolStrategy(size=2)``, ``num_cpus=1`` each,
``batch_size`` rows per call, Ray's default batch format: a dict of NumPy arrays) → ``write_parquet``. The class
makes each batch a pandas frame (``pd.DataFrame(batch)``: float32, column-major), so the model gets what it gets
in every other system; ``batch_format="pandas"`` would hand it pyarrow-backed columns (``float[pyarrow]``), which
sklearn converts to float64 on every call. Every Ray Data setting not named here is left at its default. Ray warns when the actor pool gets fewer input blocks than actors and suggests
``override_num_blocks``; in Ray 2.60 that does not split a single Parquet file (its reader runs one task per
file, whose output is cut into blocks of at most 128 MiB), so it is not set: on a small file one actor idles.

One deviation, because the textbook setup deadlocks on 2 cores (as found when ``bench_ray.py`` was written): with
``ray.init()`` (as many logical CPUs as cores) the two actors hold every CPU and the read and write tasks never
run. The driver starts ``ray.init(num_cpus=4)``, twice the cores, as ``bench_ray.py`` does; the actors still run
one thread each (``OMP_NUM_THREADS=1``, set by Ray for a 1-CPU actor and by the harness).

    python benchmarks/peer_raydata.py --kind sklearn|text --model M --input URI --output URI --batch-rows N
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import peer_common

RAY_CPUS = 4
ACTORS = 2


class Predictor:
    """The callable class Ray Data runs on each actor: the model is loaded once, in the constructor."""

    def __init__(self, kind: str, model_path: str) -> None:
        self.kind = kind
        self.model = peer_common.load(kind, model_path)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import pandas as pd

        return peer_common.predict(self.kind, self.model, pd.DataFrame(batch))


def run(kind: str, model: str, input: str, output: str, batch_rows: int) -> None:
    """Reads ``input``, predicts every batch on the actor pool and writes Parquet files under ``output``."""
    import ray

    ray.init(num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        dataset = ray.data.read_parquet(input)
        predictions = dataset.map_batches(
            Predictor,
            fn_constructor_args=(kind, model),
            compute=ray.data.ActorPoolStrategy(size=ACTORS),
            num_cpus=1,
            batch_size=batch_rows,
        )
        predictions.write_parquet(output)
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=peer_common.KINDS, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--batch-rows", type=int, required=True)
    args = parser.parse_args()
    run(args.kind, args.model, args.input, args.output, args.batch_rows)


if __name__ == "__main__":
    main()
