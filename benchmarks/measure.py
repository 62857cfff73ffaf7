"""Wall time and peak memory of child processes.

Measures, for one command (``run_measured``) or several started together
(``run_measured_group``):

* wall seconds from just before the first process is started until the last
  one has exited (so process start-up, imports and model loading count);
* peak memory of the whole process tree in MiB, two ways: a sampler thread
  reads ``/proc/PID/smaps_rollup`` of every started process and all of its
  descendants every 50 ms, sums their ``Rss`` and their ``Pss``, and keeps the
  maximum of each sum.

RSS counts a page shared by several processes (copy-on-write memory of
forked workers, shared libraries) once per process, as ``ps`` would: an
upper bound on real usage. PSS divides each shared page among the processes
that map it, so the tree's PSS counts it once: what the job really occupies.
Both are comparable across systems measured the same way. Where
``smaps_rollup`` cannot be read (another kernel, a process owned by someone
else), RSS comes from psutil and PSS counts as RSS. Peaks shorter than the
sampling interval can be missed; reading ``smaps_rollup`` costs about 0.6 ms
per GiB mapped, so the sampler adds a few per cent of one core on big trees.

With ``timeout_s``, a run still going after that many seconds has its whole
process tree killed and reports ``returncode`` ``TIMED_OUT``.
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
TIMED_OUT = -9
LEFTOVER_GRACE_S = 15.0
LEFTOVERS = "processes outlived the run:"


@dataclass(frozen=True)
class Measurement:
    """One measured run: wall seconds, peak tree RSS and PSS in MiB, exit code, captured output."""

    wall_s: float
    peak_rss_mib: float
    returncode: int
    stdout: str
    stderr: str
    peak_pss_mib: float = float("nan")


@dataclass(frozen=True)
class Footprint:
    """Resident (RSS) and proportional (PSS) set size in bytes."""

    rss: int
    pss: int

    def __add__(self, other: Footprint) -> Footprint:
        return Footprint(self.rss + other.rss, self.pss + other.pss)


NOTHING = Footprint(0, 0)


def process_footprint(proc: psutil.Process) -> Footprint:
    """RSS and PSS of one process; a vanished process counts 0."""
    try:
        with open(f"/proc/{proc.pid}/smaps_rollup", "rb") as rollup:
            fields = dict(_kib_fields(rollup.read()))
        return Footprint(fields[b"Rss:"] * 1024, fields[b"Pss:"] * 1024)
    except (OSError, KeyError):
        pass
    try:
        rss = proc.memory_info().rss
    except psutil.Error:
        return NOTHING
    return Footprint(rss, rss)


def _kib_fields(text: bytes) -> list[tuple[bytes, int]]:
    pairs = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == b"kB":
            pairs.append((parts[0], int(parts[1])))
    return pairs


def tree_processes(root: psutil.Process) -> list[psutil.Process]:
    """``root`` and all its live descendants; empty once ``root`` is gone."""
    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_footprint(root: psutil.Process) -> Footprint:
    """Summed RSS and PSS of ``root`` plus all its descendants."""
    total = NOTHING
    for proc in tree_processes(root):
        total = total + process_footprint(proc)
    return total


def tree_rss_bytes(root: psutil.Process) -> int:
    """RSS of ``root`` plus all its descendants; vanished processes count 0."""
    return tree_footprint(root).rss


class TreeSampler:
    """Background thread recording the peak summed RSS and PSS of process trees,
    and every process it saw in them (so that leftovers can be found after the roots exit)."""

    def __init__(self, pids: Sequence[int], interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self._roots = [psutil.Process(pid) for pid in pids]
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.peak_bytes = 0
        self.peak_pss_bytes = 0
        self.seen: dict[int, psutil.Process] = {}

    def _sample(self) -> None:
        total = NOTHING
        for root in self._roots:
            for proc in tree_processes(root):
                self.seen.setdefault(proc.pid, proc)
                total = total + process_footprint(proc)
        self.peak_bytes = max(self.peak_bytes, total.rss)
        self.peak_pss_bytes = max(self.peak_pss_bytes, total.pss)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self._interval_s)

    def start(self) -> None:
        self._sample()
        self._thread.start()

    def stop(self) -> float:
        """Stops sampling and returns the peak RSS in MiB (``peak_pss_bytes`` holds the PSS peak)."""
        self._stop.set()
        self._thread.join()
        return self.peak_bytes / MIB

    def leftovers(self) -> list[psutil.Process]:
        """Processes seen in the trees that are still running (psutil checks their start time, so a reused
        pid is not mistaken for one of them)."""
        for root in self._roots:
            for proc in tree_processes(root):
                self.seen.setdefault(proc.pid, proc)
        return [proc for proc in self.seen.values() if _still_running(proc)]


def _still_running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_processes(procs: Sequence[psutil.Process], grace_s: float = 0.0) -> list[psutil.Process]:
    """Gives ``procs`` (ones this module started or saw in their trees) ``grace_s`` seconds to exit, SIGKILLs
    the rest and reaps what it can; returns the ones it had to kill."""
    _, alive = psutil.wait_procs(list(procs), timeout=grace_s) if grace_s > 0 else ([], list(procs))
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)
    return alive


def _merged_env(env: Mapping[str, str] | None) -> dict[str, str] | None:
    return None if env is None else {**os.environ, **env}


def _wait_all(procs: Sequence[subprocess.Popen], deadline: float | None) -> list[int] | None:
    """Exit codes of ``procs``, or None if the deadline passed first."""
    codes = []
    for proc in procs:
        remaining = None if deadline is None else max(0.0, deadline - time.perf_counter())
        try:
            codes.append(proc.wait(timeout=remaining))
        except subprocess.TimeoutExpired:
            return None
    return codes


def run_measured_group(
    cmds: Sequence[Sequence[str]], env: Mapping[str, str] | None = None, timeout_s: float | None = None,
    kill_leftovers: bool = False,
) -> Measurement:
    """Starts all ``cmds`` at once and measures them as one job.

    ``env`` entries are added to (not replacing) the current environment.
    The return code is the first non-zero one, else 0; outputs are joined.
    Output goes to temporary files, so a chatty process never blocks on a
    full pipe while another one is being waited for. Past ``timeout_s`` the
    trees are killed and the return code is ``TIMED_OUT``. With
    ``kill_leftovers``, processes of the trees still running once the started
    ones have exited (a cleaner a library detaches, actors still stopping,
    daemons a crashed driver left behind) get ``LEFTOVER_GRACE_S`` seconds to
    exit, not counted in the wall time, and are then killed; a line at the
    end of ``stderr`` starting with ``LEFTOVERS`` names them.
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
        codes = _wait_all(procs, None if timeout_s is None else start + timeout_s)
        wall_s = time.perf_counter() - start
        peak_mib = sampler.stop()
        if codes is None:
            kill_processes(sampler.leftovers())
            for proc in procs:
                proc.wait()
            codes = [TIMED_OUT]
        left = sampler.leftovers() if kill_leftovers else []
        left_names = [_describe(p) for p in left]
        killed = kill_processes(left, LEFTOVER_GRACE_S)
        stdout = "".join(_read(out) for out, _ in files)
        stderr = "".join(_read(err) for _, err in files)
    if left_names:
        stderr += f"\n{LEFTOVERS} {', '.join(left_names)}; {len(killed)} killed after {LEFTOVER_GRACE_S:g} s"
    return Measurement(
        wall_s=wall_s,
        peak_rss_mib=peak_mib,
        returncode=next((c for c in codes if c != 0), 0),
        stdout=stdout,
        stderr=stderr,
        peak_pss_mib=sampler.peak_pss_bytes / MIB,
    )


def _describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid} ({' '.join(proc.cmdline()[:3]) or proc.name()})"
    except psutil.Error:
        return str(proc.pid)


def _read(file: IO[str]) -> str:
    file.seek(0)
    return file.read()


def run_measured(
    cmd: Sequence[str], env: Mapping[str, str] | None = None, timeout_s: float | None = None,
    kill_leftovers: bool = False,
) -> Measurement:
    """Runs one command to completion, measuring wall time and peak tree RSS and PSS."""
    return run_measured_group([cmd], env=env, timeout_s=timeout_s, kill_leftovers=kill_leftovers)
