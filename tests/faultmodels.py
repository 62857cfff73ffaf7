"""Models that misbehave on purpose, for the fault-injection tests. Workers import them as `faultmodels:NAME`.

Each reads the row ids from the `id_copy` feature and predicts `id_copy * 2`
when it behaves; what it does wrong, and on which rows, is set by
environment variables so that a worker process sees the same settings.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

_hoard: list[np.ndarray] = []


def _ids(frame) -> np.ndarray:
    return frame["id_copy"].to_numpy()


def _bad() -> int:
    return int(os.environ["FAULT_ID"])


def steady(frame):
    if "FAULT_PIDS" in os.environ:
        with open(os.environ["FAULT_PIDS"], "a") as log:
            log.write(f"{os.getpid()}\n")
    time.sleep(float(os.environ.get("FAULT_SLEEP", "0")))
    return _ids(frame) * 2.0


def hang_on_row(frame):
    if (_ids(frame) == _bad()).any():
        time.sleep(3600)
    return _ids(frame) * 2.0


def abort_on_row(frame):
    if (_ids(frame) == _bad()).any():
        os.abort()
    return _ids(frame) * 2.0


def hog_on_row(frame):
    if (_ids(frame) == _bad()).any():
        _hoard.append(np.ones(1_500 * 131_072))  # 1.5 GB, touched
        time.sleep(30)
    return _ids(frame) * 2.0


def leak(frame):
    _hoard.append(np.ones(int(os.environ.get("FAULT_LEAK_MB", "40")) * 131_072))
    return _ids(frame) * 2.0


def broken_until_fixed(frame):
    """Raises on every row of ids 1000-1499 while the flag file exists (a model bug, fixed by deleting it)."""
    ids = _ids(frame)
    if Path(os.environ["FAULT_FLAG"]).exists() and ((ids >= 1000) & (ids < 1500)).any():
        raise RuntimeError("model bug on this segment")
    return ids * 2.0


def broken_on_one_percent(frame):
    """Raises for ids ending in 03 while the flag file exists (the bug); sleeps FAULT_SLEEP per call."""
    time.sleep(float(os.environ.get("FAULT_SLEEP", "0")))
    ids = _ids(frame)
    if Path(os.environ["FAULT_FLAG"]).exists() and (ids % 100 == 3).any():
        raise ValueError("bug on ids ending in 03")
    return ids * 2.0


def raise_on_some(frame):
    ids = _ids(frame)
    if (ids % 1000 == 7).any():
        raise ValueError("cannot score this row")
    return ids * 2.0


def scheduled(frame):
    """Misbehaves as a schedule file says: {"<chunk>": ["crash" | "hang" | "rows" | "ok", ...]} per attempt.

    The chunk is `min(id) // FAULT_CHUNK_ROWS`; the attempt is counted in a file per chunk.
    """
    ids = _ids(frame)
    chunk = int(ids.min()) // int(os.environ["FAULT_CHUNK_ROWS"])
    schedule = json.loads(Path(os.environ["FAULT_SCHEDULE"]).read_text())
    marks = Path(os.environ["FAULT_SCHEDULE"]).parent / f"attempts-{chunk}"
    if len(ids) == int(os.environ["FAULT_CHUNK_ROWS"]):
        with open(marks, "a") as log:
            log.write("x")
    attempt = len(marks.read_text()) if marks.exists() else 1
    plan = schedule.get(str(chunk), [])
    kind = plan[attempt - 1] if attempt - 1 < len(plan) else "ok"
    if kind == "crash":
        os._exit(7)
    if kind == "hang":
        time.sleep(3600)
    if kind == "rows" and (ids % 5 == 0).any():
        raise ValueError("bad row by schedule")
    return ids * 2.0


def visible_gpu(frame):
    """Predicts the GPU this worker may see (CUDA_VISIBLE_DEVICES), for every row."""
    return np.full(len(frame), float(os.environ.get("CUDA_VISIBLE_DEVICES", "-1")))


def visible_gpu_once_all_run(frame):
    """Like `visible_gpu`, but each worker first names its GPU in FAULT_DIR and waits (up to 60 s) until
    FAULT_WORKERS workers have named theirs: every worker runs a chunk, however fast one alone would finish."""
    seen = Path(os.environ["FAULT_DIR"])
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "-1")
    (seen / f"gpu-{gpu}-pid-{os.getpid()}").write_text(gpu)
    deadline = time.monotonic() + 60
    while len(list(seen.glob("gpu-*"))) < int(os.environ["FAULT_WORKERS"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return np.full(len(frame), float(gpu))


def exit_on_row(frame):
    """Calls sys.exit on one row: what ends a worker process."""
    if (_ids(frame) == _bad()).any():
        raise SystemExit(3)
    return _ids(frame) * 2.0


def int_or_float_by_thousand(frame):
    """Predicts `id_copy * 2`: as int64 for ids in an even thousand (0-999, 2000-2999, ...), as float64 in
    an odd one: a model whose output type follows its input. Sleeps FAULT_SLEEP per call."""
    time.sleep(float(os.environ.get("FAULT_SLEEP", "0")))
    ids = _ids(frame)
    return ids * 2 if (int(ids.min()) // 1000) % 2 == 0 else ids * 2.0


def int_then_float(frame):
    """Predicts `id_copy * 2` as int64 for a batch whose ids are all below FAULT_INT_BELOW (default: every
    batch), else as float64 where ids ending in 7 get a half more (a value no int64 holds).
    Sleeps FAULT_SLEEP per call."""
    time.sleep(float(os.environ.get("FAULT_SLEEP", "0")))
    ids = _ids(frame)
    if int(ids.max()) < int(os.environ.get("FAULT_INT_BELOW", str(2**62))):
        return ids * 2
    values = ids * 2.0
    values[ids % 10 == 7] += 0.5
    return values


def pause(frame):
    """A preprocess step that takes `FAULT_SLEEP` seconds and changes nothing: it keeps a chunk in flight a while."""
    time.sleep(float(os.environ.get("FAULT_SLEEP", "0")))
    return frame


def abort_on_row_stopping_fork_server(frame):
    """Like `abort_on_row`, but the first worker to meet the row first SIGSTOPs the fork server it was forked
    from (so its exit is reported late) and leaves the file FAULT_FLAG; sleeps FAULT_SLEEP per batch."""
    import signal

    time.sleep(float(os.environ.get("FAULT_SLEEP", "0")))
    if (_ids(frame) == _bad()).any():
        flag = Path(os.environ["FAULT_FLAG"])
        parent = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
        if not flag.exists() and b"squall.backends.local.zygote" in parent:
            flag.write_text(str(os.getppid()))
            os.kill(os.getppid(), signal.SIGSTOP)
        os.abort()
    return _ids(frame) * 2.0


def raise_on_low_ids(frame):
    """Raises for every row whose id modulo 1000 is below FAULT_ROWS (so FAULT_ROWS rows of each thousand fail)."""
    ids = _ids(frame)
    if (ids % 1000 < int(os.environ["FAULT_ROWS"])).any():
        raise ValueError("cannot score this row")
    return ids * 2.0


def hang_with_a_child(frame):
    """On a chunk's first attempt, starts a `sleep` child (in the worker's process group), writes its pid to
    FAULT_DIR/child-<first id>, and hangs; later attempts behave. FAULT_DIR/seen-<first id> marks the first."""
    import subprocess

    first = int(_ids(frame).min())
    seen = Path(os.environ["FAULT_DIR"]) / f"seen-{first}"
    if not seen.exists():
        seen.write_text("x")
        child = subprocess.Popen(["sleep", "3600"])
        (Path(os.environ["FAULT_DIR"]) / f"child-{first}").write_text(str(child.pid))
        time.sleep(3600)
    return _ids(frame) * 2.0


class LoadsOnFlag:
    """A model class for the backend contract: constructing it (its load) waits until the file FAULT_LOAD_FLAG
    exists, when that is set (failing after 120 s); it predicts `id_copy * 2`. A batch holding the id
    FAULT_SLOW_ID first writes its worker's pid to FAULT_DIR/started-<pid>, then takes FAULT_SLOW_S seconds."""

    def __init__(self) -> None:
        flag = os.environ.get("FAULT_LOAD_FLAG")
        deadline = time.monotonic() + 120
        while flag and not Path(flag).exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{flag} never appeared")
            time.sleep(0.02)

    def predict(self, frame):
        ids = _ids(frame)
        slow = os.environ.get("FAULT_SLOW_ID")
        if slow is not None and (ids == int(slow)).any():
            (Path(os.environ["FAULT_DIR"]) / f"started-{os.getpid()}").write_text(str(os.getpid()))
            time.sleep(float(os.environ["FAULT_SLOW_S"]))
        return ids * 2.0
