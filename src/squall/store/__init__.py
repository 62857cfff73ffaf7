"""The job store: SQLite in WAL mode, written by the coordinator alone.

Modules: :mod:`~squall.store.schema` (the tables, their versions, migrations),
:mod:`~squall.store.records` (what the store hands out), :mod:`~squall.store.job_store`
(``JobStore``).

Tables
------
``jobs``      one row per job: spec, state, output, timestamps, summary counts.
``chunks``    one row per chunk: its descriptor and where it is in the queue.
``attempts``  one row per invocation of a chunk: worker, outcome, error, report.

Chunk states and lease rules
----------------------------
``pending`` → ``leased`` (claimed by the coordinator for one worker, with a
deadline; ``attempts`` counts claims) → ``done`` (its winning attempt is
committed) or back to ``pending`` (retry, not before ``not_before``) or
``dead`` (attempts exhausted; ``redrive`` returns it to ``pending`` and
sets ``attempt_base`` so it gets a full set of attempts again) or
``split`` (replaced by two children, whose ``parent`` names it, that cover
the same rows). ``kills`` counts timeouts and memory kills, which decide
splitting (crashes count too); ``lane`` is ``function`` (time-limited) or ``batch`` (not).
An attempt's ``init_s`` is set when it was the first invocation of a fresh worker
process (a cold start) and holds that worker's start-up time; its ``report`` is
the worker's :class:`InvocationReport` (absent when the worker was killed or
died). A ``split`` or ``to-batch-lane`` attempt's ``error`` starts with the kill
that caused it (``timeout:``, ``memory:``, ``lost:``).
``kind`` is ``data`` (reads input for the first time) or ``replay`` (reads again the
rows of error parts, which are then ``errors_superseded``). ``jobs.ledger`` holds
the run's ledger record (:class:`squall.ledger.Increment`) until finalize.
``jobs.output_schema`` is the schema every part of the job is written in
(:func:`squall.io.output_schema.schema_text`), set with the first committed part.
A done chunk's ``part`` is its committed file; once small parts are merged at
finalize (:mod:`squall.coalesce`) several chunks name one file, and
``part_first_row`` says where in it each chunk's rows begin (``NULL``: the file
is the chunk's alone).
A coordinator that dies leaves chunks ``leased``; ``resume`` returns them
to ``pending``. Only one coordinator may run a job at a time: it holds an
exclusive lock on ``locks/JOB.lock`` for as long as it runs.

Secrets: nothing secret is written (:mod:`squall.secrets`). Specs, tasks,
descriptors, part names, reports and messages are stored redacted, a
password or credential replaced by ``***``; :meth:`JobStore.claim` gives a
leased chunk's URLs back from the coordinator's memory, so the chunk a worker
receives (in memory) can reach its database. The state folder, ``squall.db``
(with its WAL) and the lock files are the owner's alone (0700/0600).

Durability: WAL with ``synchronous=NORMAL`` survives a killed process; after
a power cut the last few acknowledgements may be lost, and those chunks are
simply run again (their parts are rewritten with identical content).
"""

from squall.store.job_store import JobStore
from squall.store.records import ChunkCounts, Claim, DoneChunk, JobRecord
from squall.store.schema import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "ChunkCounts", "Claim", "DoneChunk", "JobRecord", "JobStore"]
