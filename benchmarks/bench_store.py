"""Job store throughput: enqueue 1,000,000 chunk descriptors, then claim + ack them as the coordinator does.

Target: claim + ack well above 5,000 chunks/s with a million chunks in the
queue, so the store never slows a job down.

    python benchmarks/bench_store.py [--chunks 1000000] [--cycles 50000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from squall.plan.chunk import Chunk, Piece
from squall.runtime.task import InvocationReport
from squall.store import JobStore

TARGET_PER_S = 5_000


def descriptors(job_id: str, count: int) -> list[Chunk]:
    return [
        Chunk(job_id, i, "parquet", (Piece(f"/data/file-{i // 31:06d}.parquet", "rowgroups", i % 31, i % 31 + 1),), 65_536, 8 << 20)
        for i in range(count)
    ]


def claim_and_ack(store: JobStore, job_id: str, cycles: int) -> float:
    started = time.perf_counter()
    for n in range(cycles):
        claim = store.claim(job_id, worker=n % 2)
        assert claim is not None
        report = InvocationReport(job_id, claim.chunk.chunk_id, claim.attempt, n % 2, "ok", 65_536, 65_536, 0, "p", None)
        store.complete(report, f"/out/part-{claim.chunk.chunk_id:05d}.parquet", None)
    return cycles / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=1_000_000)
    parser.add_argument("--cycles", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = JobStore(Path(tmp))
        store.create_job("bench", "{}", "{}", "/out")
        chunks = descriptors("bench", args.chunks)
        started = time.perf_counter()
        store.enqueue("bench", chunks)
        enqueue_s = time.perf_counter() - started
        first = claim_and_ack(store, "bench", args.cycles)
        counts = store.counts("bench")
        store.close()
    print(f"enqueue {args.chunks:,} chunks: {enqueue_s:.2f} s ({args.chunks / enqueue_s:,.0f} chunks/s)")
    print(f"claim + ack with {args.chunks:,} queued: {first:,.0f} chunks/s over {args.cycles:,} cycles")
    print(f"done {counts.count('done'):,}, pending {counts.count('pending'):,}")
    verdict = "PASS" if first >= TARGET_PER_S else "MISS"
    print(f"target: claim + ack >= {TARGET_PER_S:,}/s: {first / TARGET_PER_S:.1f}x {verdict}")


if __name__ == "__main__":
    main()
