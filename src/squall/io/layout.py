"""Where things live in a job's output directory.

```
OUTPUT/part-00007.parquet          committed predictions of chunk 7
OUTPUT/_errors/part-00007.parquet  committed error rows of chunk 7
OUTPUT/_tmp/...-a2.parquet         attempt files, before the coordinator commits one
OUTPUT/_squall_job.json            which job owns this directory
OUTPUT/_manifest.json, _SUCCESS    written last, at finalize
```

Attempts lie under ``_tmp/`` on every filesystem, apart from the committed
parts, so a worker that writes late (a zombie an abandoned attempt left
running, an SQS message delivered again after its job ended) can never add
a file a reader of the output takes for a result: readers of a folder
(Spark, pyarrow datasets, pandas) skip names that begin with ``_``. A local
commit is an atomic rename; an object store's is a server-side copy.
"""

from __future__ import annotations

from functools import lru_cache

from squall.io.storage import is_remote

TMP_DIR = "_tmp"
ERRORS_DIR = "_errors"
OWNER_FILE = "_squall_job.json"
MANIFEST_FILE = "_manifest.json"
SUCCESS_FILE = "_SUCCESS"


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for local paths and URLs alike."""
    return "/".join([base.rstrip("/"), *parts])


@lru_cache(maxsize=64)  # asked for every part of a job, about the same few outputs
def commits_by_rename(output: str) -> bool:
    """Whether committing an attempt renames it (local disk) or copies it server-side (object stores)."""
    return not is_remote(output)


def attempt_part(output: str, chunk_id: int, attempt: int, ext: str, prefix: str = "") -> str:
    """Where attempt ``attempt`` of a chunk writes its predictions."""
    return join(output, TMP_DIR, f"part-{prefix}{chunk_id:05d}-a{attempt}.{ext}")


def attempt_errors(output: str, chunk_id: int, attempt: int, prefix: str = "") -> str:
    """Where attempt ``attempt`` of a chunk writes its error rows."""
    return join(output, TMP_DIR, f"errors-{prefix}{chunk_id:05d}-a{attempt}.parquet")


def committed_part(output: str, chunk_id: int, ext: str, prefix: str = "") -> str:
    """``part-00007.parquet``; incremental runs add their run (``part-r002-00007.parquet``)."""
    return join(output, f"part-{prefix}{chunk_id:05d}.{ext}")


def committed_errors(output: str, chunk_id: int, prefix: str = "") -> str:
    return join(output, ERRORS_DIR, f"part-{prefix}{chunk_id:05d}.parquet")


def run_prefix(run: int | None) -> str:
    """The part-name prefix of incremental run ``run`` (none for an ordinary job)."""
    return f"r{run:03d}-" if run else ""
