"""Lithops (localhost backend) as a peer of ``compare.py``: one measured process, its calls run as children.

Written as Lithops's docs show: the Futures API ("Lithops Futures API",
https://lithops-cloud.github.io/docs/source/api_futures.html): ``FunctionExecutor(backend='localhost',
storage='localhost')``, ``map(function, iterdata)``, ``get_result()``; the localhost compute backend's
``worker_processes`` (how many calls run at once) set to the 2 workers every system gets, and its ``runtime`` set
to this interpreter (by default it is the interpreter's bare name, looked up on ``$PATH``, which may be another
Python). ``iterdata`` is one range of consecutive row groups per call, about ``batch_rows`` rows each (one row
group of the 2,000,000-row file); each call reads its row groups with pyarrow, predicts, writes one Parquet part
into the output directory and returns its row count.

Lithops on localhost starts a new Python process for every call, so each call imports its libraries and loads the
model again: there are no warm containers. That is the system as documented, not a choice of this benchmark.

Object storage: the calls read ``s3://`` input and write ``s3://`` output through pyarrow's own filesystem (as
the hand loops do), while Lithops keeps its own storage on ``localhost``. Lithops's object-store reader (the data
partitioner, ``iterdata`` of ``bucket/key`` objects) needs the bucket's storage configured as Lithops's own
storage backend, which would also send Lithops's internal job data through the loopback server; it is not used.

    python benchmarks/peer_lithops.py --kind sklearn|text --model M --input URI --output URI --batch-rows N
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import peer_common

WORKERS = 2


def predict_range(kind: str, model: str, input: str, output: str, groups: list[int]) -> int:
    """One Lithops call: predict the row groups ``groups`` of ``input`` and write them as one part file."""
    import pyarrow.parquet as pq

    import peer_common

    predictor = peer_common.load(kind, model)
    with peer_common.open_input(input) as handle:
        # pre_buffer: coalesced, concurrent ranged reads, which pyarrow recommends for high-latency stores.
        table = pq.ParquetFile(handle, pre_buffer=True).read_row_groups(groups)
    result = peer_common.to_table(peer_common.predict(kind, predictor, table.to_pandas()))
    peer_common.write_parquet(result, f"{output.rstrip('/')}/part-{groups[0]:05d}.parquet")
    return result.num_rows


def run(kind: str, model: str, input: str, output: str, batch_rows: int) -> int:
    """Maps ``predict_range`` over the row-group ranges of ``input``; returns the rows written."""
    import lithops

    if "://" not in output:
        Path(output).mkdir(parents=True, exist_ok=True)
    ranges = peer_common.row_group_ranges(peer_common.parquet_row_groups(input), batch_rows)
    executor = lithops.FunctionExecutor(
        backend="localhost", storage="localhost", worker_processes=WORKERS, runtime=sys.executable,
    )
    futures = executor.map(predict_range, [(kind, model, input, output, groups) for groups in ranges])
    return sum(executor.get_result(futures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=peer_common.KINDS, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--batch-rows", type=int, required=True)
    args = parser.parse_args()
    print(f"rows {run(args.kind, args.model, args.input, args.output, args.batch_rows)}")


if __name__ == "__main__":
    main()
