"""Wall time and peak memory of child processes.

Measures, for one command (``run_measured``) or several started together
(``run_measured_group``):

* wall seconds from just before the first process is started until the last
  one has exited (so process start-up, imports and model loading count);
* peak resident set size of the whole process tree in MiB: a sampler thread
  sums the RSS of every started process and all of its descendants every
  50 ms and keeps the maximum of those sums.

Shared pages (e.g. copy-on-write memory of forked workers) are counted once
per process, as ``ps`` would; the figure is an upper bound on real usage and
is comparable across systems measured the same way. Peaks shorter than the
sampling interval can be missed.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import IO, Mapping, Sequence

import psutil

SAMPLE_INTERVAL_S = 0.05
MIB = 1024 * 1024


@dataclass(frozen=True)
class Measurement:
    wall_s: float
    peak_rss_mib: float
    returncode: int
    stdout: str
    stderr: str


def tree_rss_bytes(root: psutil.Process) -> int:
    """RSS of ``root`` plus all its descendants; vanished processes count 0."""
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total


class TreeSampler:
    """Background thread recording the peak summed RSS of process trees."""

    def __init__(self, pids: Sequence[int], interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self._roots = [psutil.Process(pid) for pid in pids]
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.peak_bytes = 0

    def _sample(self) -> None:
        total = sum(tree_rss_bytes(root) for root in self._roots)
        self.peak_bytes = max(self.peak_bytes, total)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self._interval_s)

    def start(self) -> None:
        self._sample()
        self._thread.start()

    def stop(self) -> float:
        """Stops sampling and returns the peak in MiB."""
        self._stop.set()
        self._thread.join()
        return self.peak_bytes / MIB


def _merged_env(env: Mapping[str, str] | None) -> dict[str, str] | None:
    return None if env is None else {**os.environ, **env}


def run_measured_group(
    cmds: Sequence[Sequence[str]], env: Mapping[str, str] | None = None
) -> Measurement:
    """Starts all ``cmds`` at once and measures them as one job.

    ``env`` entries are added to (not replacing) the current environment.
    The return code is the first non-zero one, else 0; outputs are joined.
    Output goes to temporary files, so a chatty process never blocks on a
    full pipe while another one is being waited for.
    """
    full_env = _merged_env(env)
    with ExitStack() as stack:
        files = [
            (stack.enter_context(tempfile.TemporaryFile("w+")),
             stack.enter_context(tempfile.TemporaryFile("w+")))
            for _ in cmds
        ]
        start = time.perf_counter()
        procs = [
            subprocess.Popen(list(cmd), env=full_env, stdout=out, stderr=err, text=True)
            for cmd, (out, err) in zip(cmds, files)
        ]
        sampler = TreeSampler([p.pid for p in procs])
        sampler.start()
        codes = [p.wait() for p in procs]
        wall_s = time.perf_counter() - start
        peak_mib = sampler.stop()
        stdout = "".join(_read(out) for out, _ in files)
        stderr = "".join(_read(err) for _, err in files)
    return Measurement(
        wall_s=wall_s,
        peak_rss_mib=peak_mib,
        returncode=next((c for c in codes if c != 0), 0),
        stdout=stdout,
        stderr=stderr,
    )


def _read(file: IO[str]) -> str:
    file.seek(0)
    return file.read()


def run_measured(cmd: Sequence[str], env: Mapping[str, str] | None = None) -> Measurement:
    """Runs one command to completion, measuring wall time and peak tree RSS."""
    return run_measured_group([cmd], env=env)
