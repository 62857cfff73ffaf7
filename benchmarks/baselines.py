"""The plain batch-prediction loops squall is compared against.

Both loops stream the benchmark Parquet file with
``ParquetFile.iter_batches(batch_size=65536)``, convert each batch with
``to_pandas``, call ``model.<method>`` on the model's feature columns and
write ``id`` plus one column per prediction output with ``ParquetWriter``.

* ``one_process``: one Python process over the whole file (thread-count
  environment left as inherited);
* ``two_processes``: two Python processes, one per half of the row groups,
  each writing its own file into the output directory, started with
  ``OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=MKL_NUM_THREADS=1`` in their
  environment (so the BLAS/OpenMP pools are sized before numpy or sklearn
  is imported).

Input and output may also be object-store URIs (``s3://bucket/key``), read
and written through pyarrow's own filesystem (``pyarrow.fs``, which takes
the endpoint from ``AWS_ENDPOINT_URL``), with ``pre_buffer`` so that each row
group's column chunks come in coalesced ranged GETs (an fsspec file would
read ahead in 50 MiB blocks).
``one_process_cmds`` and ``two_process_cmds`` give the commands without
running them, for a harness that measures them itself (``compare.py``).

Each returns a ``measure.Measurement``: wall seconds from process start to
exit (start-up and model load included) and peak RSS of the process tree in
MiB, sampled every 50 ms.

    python benchmarks/baselines.py --model M --input IN --output OUT \
        [--method predict_proba] [--processes 1|2]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Iterator, Sequence

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from measure import Measurement, run_measured, run_measured_group

BATCH_SIZE = 65_536
SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
WORKER = "_worker"


Location = Path | str  # a local path or an object-store URI such as s3://bucket/key


def is_uri(location: Location) -> bool:
    """Whether ``location`` names an object-store URI rather than a local path."""
    return "://" in str(location)


def _child(directory: Location, name: str) -> Location:
    return f"{str(directory).rstrip('/')}/{name}" if is_uri(directory) else Path(directory) / name


def _worker_cmd(
    model_path: Path, input: Location, output: Location, method: str, row_groups: Sequence[int] | None
) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), WORKER]
    cmd += ["--model", str(model_path), "--input", str(input), "--output", str(output)]
    cmd += ["--method", method]
    if row_groups is not None:
        cmd += ["--row-groups", ",".join(map(str, row_groups))]
    return cmd


def one_process_cmds(model_path: Path, input: Location, output: Location, method: str) -> list[list[str]]:
    """The command of the 1-process loop (``output`` is a file, whose local parent is created)."""
    if not is_uri(output):
        Path(output).parent.mkdir(parents=True, exist_ok=True)
    return [_worker_cmd(model_path, input, output, method, None)]


def one_process(model_path: Path, input: Path, output: Path, method: str) -> Measurement:
    """Predicts the whole file in one process, writing the ``output`` file."""
    return run_measured(one_process_cmds(model_path, input, output, method)[0])


def halves(n: int) -> list[list[int]]:
    """Splits row-group indices 0..n-1 into two contiguous halves."""
    mid = (n + 1) // 2
    return [list(range(mid)), list(range(mid, n))]


def two_process_cmds(model_path: Path, input: Location, output: Location, method: str) -> list[list[str]]:
    """The two commands of the 2-process loop, one per half of the row groups (``output`` is a directory)."""
    if not is_uri(output):
        Path(output).mkdir(parents=True, exist_ok=True)
    with _open_parquet(input) as source:
        n_groups = source.metadata.num_row_groups
    return [
        _worker_cmd(model_path, input, _child(output, f"part-{i}.parquet"), method, groups)
        for i, groups in enumerate(halves(n_groups))
    ]


def two_processes(model_path: Path, input: Path, output: Path, method: str) -> Measurement:
    """Predicts row-group halves in two processes; ``output`` is a directory."""
    return run_measured_group(two_process_cmds(model_path, input, output, method), env=SINGLE_THREAD_ENV)


def _prediction_columns(method: str, result) -> dict[str, object]:
    if result.ndim == 1:
        return {method: result}
    return {f"{method}_{i}": result[:, i] for i in range(result.shape[1])}


@contextlib.contextmanager
def _open_parquet(location: Location) -> Iterator[pq.ParquetFile]:
    """A ParquetFile on a local path or an object-store URI, closed on exit."""
    if not is_uri(location):
        with pq.ParquetFile(location) as source:
            yield source
        return
    fs, path = pafs.FileSystem.from_uri(str(location))
    # pre_buffer: coalesced, concurrent ranged reads, which pyarrow recommends for high-latency stores.
    with fs.open_input_file(path) as handle, pq.ParquetFile(handle, pre_buffer=True) as source:
        yield source


def _sink(location: Location, stack: contextlib.ExitStack) -> object:
    """Where a ParquetWriter writes: the local path itself, or an object-store stream closed with ``stack``."""
    if not is_uri(location):
        return location
    fs, path = pafs.FileSystem.from_uri(str(location))
    return stack.enter_context(fs.open_output_stream(path))


def predict_file(
    model_path: Path, input: Location, output: Location, method: str, row_groups: list[int] | None
) -> int:
    """The loop itself (runs inside a worker process); returns rows written."""
    import joblib

    model = joblib.load(model_path)
    predict = getattr(model, method)
    features = list(model.feature_names_in_)
    rows = 0
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(_open_parquet(input))
        writer: pq.ParquetWriter | None = None
        for batch in source.iter_batches(batch_size=BATCH_SIZE, row_groups=row_groups):
            frame = batch.to_pandas()
            columns = {"id": batch.column("id"), **_prediction_columns(method, predict(frame[features]))}
            table = pa.table(columns)
            if writer is None:
                # Registered after the sink, so the writer closes (writing the footer) before the sink does.
                writer = stack.enter_context(pq.ParquetWriter(_sink(output, stack), table.schema))
            writer.write_table(table)
            rows += table.num_rows
    return rows


def _parse_groups(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def _worker_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog=f"baselines.py {WORKER}")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--method", required=True)
    parser.add_argument("--row-groups", type=_parse_groups, default=None)
    args = parser.parse_args(argv)
    predict_file(args.model, args.input, args.output, args.method, args.row_groups)


def main() -> None:
    if sys.argv[1:2] == [WORKER]:
        _worker_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True, help="file (1 process) or dir (2)")
    parser.add_argument("--method", default="predict_proba")
    parser.add_argument("--processes", type=int, choices=(1, 2), default=1)
    args = parser.parse_args()
    loop = one_process if args.processes == 1 else two_processes
    m = loop(args.model, args.input, args.output, args.method)
    if m.returncode != 0:
        sys.exit(f"baseline failed (exit {m.returncode}):\n{m.stderr}")
    print(f"wall {m.wall_s:.2f} s, peak RSS {m.peak_rss_mib:.0f} MiB")


if __name__ == "__main__":
    main()
