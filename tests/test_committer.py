"""The output committer under duplicate and late deliveries (the Spark OutputCommitCoordinator cases).

The local backend kills a worker at its deadline, so on one machine a late
attempt cannot report; the Ray backend cannot always stop an actor at once.
These tests therefore drive the real coordinator, store and files with a
scripted backend that delivers reports when and as often as the test says:
that scripting is the only stand-in here.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from squall.backends.base import InvocationDone, WorkerEvent, WorkerReady
from squall.coordinator import Coordinator
from squall.finalize import finalize_job
from squall.formats.options import ReadOptions
from squall.io import layout
from squall.io.output_schema import schema_from_text, schema_text
from squall.limits import JobLimits, RetryPolicy
from squall.models.base import ModelRef
from squall.plan.chunk import Chunk, Piece
from squall.runtime.task import InvocationReport, JobTask, OutputNaming
from squall.states import Outcome
from squall.store import JobStore


class ScriptedBackend:
    """Two workers whose reports the test releases; each attempt writes its own file with its own marker."""

    def __init__(self, output: str) -> None:
        self.output = output
        self.submitted: list[tuple[int, int, int]] = []
        self.queue: list[WorkerEvent] = [WorkerReady(0, 0.1), WorkerReady(1, 0.1)]
        self.busy: set[int] = set()
        self.killed: list[int] = []
        self.hold: set[tuple[int, int]] = set()
        self.output_schemas: dict[tuple[int, int], str | None] = {}
        self.prediction: object = None  # what reports released at submit predict (none: no such column)

    def start(self, model, workers): ...
    def configure(self, task): ...
    def check_reach(self, files, output) -> None: ...
    def scale(self, waiting: int) -> None: ...
    def cold_starts(self) -> int: return 2
    def worker_starts(self) -> int: return 2
    def shutdown(self) -> None: ...

    def idle(self) -> list[int]:
        return [w for w in (0, 1) if w not in self.busy]

    def submit(self, worker: int, chunk: Chunk, attempt: int, output_schema: str | None = None) -> None:
        self.busy.add(worker)
        self.output_schemas[(chunk.chunk_id, attempt)] = output_schema
        self.submitted.append((worker, chunk.chunk_id, attempt))
        if (chunk.chunk_id, attempt) not in self.hold:
            self.queue.append(self.report(worker, chunk.chunk_id, attempt, prediction=self.prediction))

    def report(
        self, worker: int, chunk_id: int, attempt: int, claimed_rows: int = 1, prediction: object = None
    ) -> InvocationDone:
        """Attempt ``attempt`` wrote one row (with ``prediction`` when given, cast to the output schema it was
        sent, as a worker does); its report says it read and wrote ``claimed_rows``."""
        path = layout.attempt_part(self.output, chunk_id, attempt, "parquet")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        columns = {"id": [chunk_id], "attempt": [attempt], **({"prediction": [prediction]} if prediction is not None else {})}
        table = pa.table(columns)
        sent = self.output_schemas.get((chunk_id, attempt))
        table = table.cast(schema_from_text(sent)) if sent else table
        pq.write_table(table, path)
        report = InvocationReport(
            "job", chunk_id, attempt, worker, Outcome.OK, claimed_rows, claimed_rows, 0, path, None, part_schema=schema_text(table.schema)
        )
        return InvocationDone(worker, report)

    def wait(self, timeout: float) -> list[WorkerEvent]:
        events, self.queue = self.queue, []
        for event in events:
            if isinstance(event, InvocationDone):
                self.busy.discard(event.worker)
        return events

    def kill(self, worker: int) -> None:
        self.killed.append(worker)
        self.busy.discard(worker)


def setup(tmp_path: Path, chunks: int) -> tuple[JobStore, JobTask, str]:
    output = str(tmp_path / "out")
    Path(output).mkdir()
    store = JobStore(tmp_path / "state")
    task = JobTask("job", ModelRef("m", "auto", "predict"), ReadOptions(), ("id",), ("x",), 10, "pandas", None, None,
                   output, "parquet", OutputNaming())
    store.create_job("job", "{}", task.to_json(), output)
    store.enqueue("job", [Chunk("job", i, "parquet", (Piece("f", "rowgroups", i, i + 1),), 1, 1) for i in range(chunks)])
    return store, task, output


def committed(output: str, chunk_id: int) -> dict:
    return pq.read_table(layout.committed_part(output, chunk_id, "parquet")).to_pylist()[0]


def test_a_late_attempt_after_a_retry_committed_is_deleted_and_the_part_unchanged(tmp_path):
    store, task, output = setup(tmp_path, chunks=1)
    backend = ScriptedBackend(output)
    backend.hold.add((0, 1))
    clock = iter([0.0, 0.0, 0.0, 10.0] + [10.0] * 1000).__next__
    limits = JobLimits(timeout=5.0, retry=RetryPolicy(max_attempts=3, backoff_base=0.0))
    coordinator = Coordinator(store, backend, task, 2, limits, clock=clock)
    coordinator.drive()
    assert backend.killed == [0]
    assert committed(output, 0) == {"id": 0, "attempt": 2}
    zombie = backend.report(0, 0, 1)
    coordinator._handle(zombie)
    assert committed(output, 0) == {"id": 0, "attempt": 2}
    assert not Path(layout.attempt_part(output, 0, 1, "parquet")).exists()
    assert [p.name for p in Path(output).glob("part-*")] == ["part-00000.parquet"]


def test_two_attempts_finishing_together_commit_exactly_one(tmp_path):
    store, task, output = setup(tmp_path, chunks=1)
    backend = ScriptedBackend(output)
    backend.hold.update({(0, 1), (0, 2)})
    clock = iter([0.0, 0.0, 0.0, 10.0] + [10.0] * 1000).__next__
    limits = JobLimits(timeout=5.0, retry=RetryPolicy(max_attempts=3, backoff_base=0.0))
    coordinator = Coordinator(store, backend, task, 2, limits, clock=clock)
    original_wait = backend.wait

    def wait(timeout: float) -> list[WorkerEvent]:
        if len(backend.submitted) == 2 and not backend.queue:
            worker, _, _ = backend.submitted[1]
            backend.queue.extend([backend.report(0, 0, 1), backend.report(worker, 0, 2)])
        return original_wait(timeout)

    backend.wait = wait  # type: ignore[method-assign]  # the script releases reports as the coordinator waits
    coordinator.drive()
    assert committed(output, 0) == {"id": 0, "attempt": 2}
    assert [p.name for p in Path(output).glob("part-*")] == ["part-00000.parquet"]
    assert not list(Path(output).glob("_tmp/*a1*"))


def test_a_duplicate_delivery_of_the_winning_attempt_changes_nothing(tmp_path):
    store, task, output = setup(tmp_path, chunks=2)
    backend = ScriptedBackend(output)
    backend.hold.add((0, 1))
    coordinator = Coordinator(store, backend, task, 2, JobLimits())
    original_wait = backend.wait

    def wait(timeout: float) -> list[WorkerEvent]:
        if (0, 1) in backend.hold and any(s[1] == 0 for s in backend.submitted):
            backend.hold.clear()
            worker = next(s[0] for s in backend.submitted if s[1] == 0)
            first = backend.report(worker, 0, 1)
            backend.queue.extend([first, first])
        return original_wait(timeout)

    backend.wait = wait  # type: ignore[method-assign]  # the script releases reports as the coordinator waits
    coordinator.drive()
    assert committed(output, 0)["attempt"] == 1 and committed(output, 1)["attempt"] == 1
    assert sorted(p.name for p in Path(output).glob("part-*")) == ["part-00000.parquet", "part-00001.parquet"]
    assert [done.chunk_id for done in store.done_chunks("job")] == [0, 1]


def test_the_store_records_the_rows_committed_and_a_report_claiming_more_fails_the_job(tmp_path):
    store, task, output = setup(tmp_path, chunks=2)
    backend = ScriptedBackend(output)
    backend.hold.add((1, 1))
    original_wait = backend.wait

    def wait(timeout: float) -> list[WorkerEvent]:
        if (1, 1) in backend.hold and any(s[1] == 1 for s in backend.submitted):
            backend.hold.clear()
            worker = next(s[0] for s in backend.submitted if s[1] == 1)
            backend.queue.append(backend.report(worker, 1, 1, claimed_rows=5))  # the file holds 1 row
        return original_wait(timeout)

    backend.wait = wait  # type: ignore[method-assign]  # the script releases reports as the coordinator waits
    coordinator = Coordinator(store, backend, task, 2, JobLimits())
    coordinator.drive()
    assert [(d.chunk_id, d.rows_in, d.rows_out) for d in store.done_chunks("job")] == [(0, 1, 1), (1, 5, 1)]
    result = finalize_job(store, "job", JobLimits(), coordinator.invocations)
    assert (result.state, result.rows_in, result.rows_out) == ("FAILED", 6, 2)
    assert result.message is not None and "read 6, written 2, errors 0" in result.message
    assert not (Path(output) / layout.SUCCESS_FILE).exists()


def test_two_first_parts_of_different_types_commit_one_schema_and_the_other_is_retried_in_it(tmp_path):
    store, task, output = setup(tmp_path, chunks=2)
    backend = ScriptedBackend(output)
    backend.hold.update({(0, 1), (1, 1)})
    backend.prediction = 2.0  # the retry's model answers float64 again, and is cast to the job's schema
    original_wait = backend.wait

    def wait(timeout: float) -> list[WorkerEvent]:
        if {(0, 1), (1, 1)} <= backend.hold and len(backend.submitted) == 2:  # both run before either reports
            backend.hold.clear()
            (worker_a, chunk_a, _), (worker_b, chunk_b, _) = backend.submitted
            backend.queue.append(backend.report(worker_a, chunk_a, 1, prediction=chunk_a * 2))  # int64
            backend.queue.append(backend.report(worker_b, chunk_b, 1, prediction=chunk_b * 2.0))  # float64
        return original_wait(timeout)

    backend.wait = wait  # type: ignore[method-assign]  # the script releases reports as the coordinator waits
    coordinator = Coordinator(store, backend, task, 2, JobLimits(retry=RetryPolicy(max_attempts=3, backoff_base=0.0)))
    coordinator.drive()
    job_schema = store.output_schema("job")
    assert job_schema is not None and schema_from_text(job_schema).field("prediction").type == pa.int64()
    assert [s[1:] for s in backend.submitted] == [(0, 1), (1, 1), (1, 2)]
    assert backend.output_schemas[(1, 2)] == job_schema  # the retry was sent the job's schema
    refused = store.attempts("job", 1)[0]
    assert refused["outcome"] == "error" and "is not the job's output schema" in refused["error"]
    assert {str(pq.read_schema(p).field("prediction").type) for p in Path(output).glob("part-*")} == {"int64"}
    assert committed(output, 1) == {"id": 1, "attempt": 2, "prediction": 2}
