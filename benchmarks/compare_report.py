"""What ``compare.py`` writes: per-system summaries, a Markdown table, a JSON file of every run, a PNG chart.

A run counts when its process tree exited 0 and its output matched the model's own call value by value; the
warm-up round (``round`` 0) never counts. Per workload and system: the median wall time of the counted runs,
their spread (min–max, and the interquartile range in the JSON), rows/s at the median, the speed ratio to the
hand 2-process loop (its median wall time over this system's: above 1 is faster), and the medians of the runs'
peak process-tree RSS and PSS.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from compare_systems import BASELINE, Workload


@dataclass(frozen=True)
class RunRecord:
    """One measured run of one system on one workload (``round`` 0 is the warm-up)."""

    workload: str
    system: str
    label: str
    round: int
    position: int  # the system's place in this round's order, from 0
    wall_s: float
    peak_rss_mib: float
    peak_pss_mib: float
    returncode: int
    verified: bool
    max_abs_diff: float
    problem: str
    leftovers: str = ""  # processes of the tree still alive after it exited (given a grace period, then killed)
    stderr_tail: str = ""  # the end of its stderr, kept for a run that failed or did not verify

    @property
    def counts(self) -> bool:
        return self.round > 0 and self.returncode == 0 and self.verified


@dataclass(frozen=True)
class Summary:
    """One system on one workload, over its counted runs."""

    workload: str
    system: str
    label: str
    rows: int
    runs: int  # measured runs (warm-up excluded)
    valid: int  # of those, exited 0 with verified outputs
    median_wall_s: float
    min_wall_s: float
    max_wall_s: float
    q1_wall_s: float
    q3_wall_s: float
    rows_per_s: float
    vs_baseline: float  # the 2-process loop's median wall / this one's: above 1 is faster
    median_rss_mib: float
    median_pss_mib: float

    @property
    def verified(self) -> str:
        if self.runs == 0:
            return "no runs"
        return "yes" if self.valid == self.runs else f"no ({self.valid} of {self.runs} valid)"


NAN = float("nan")


def summarize(workload: Workload, labels: dict[str, str], records: Sequence[RunRecord]) -> list[Summary]:
    """The summaries of ``workload``'s systems, in ``labels``' order."""
    mine = [r for r in records if r.workload == workload.name]
    medians = {name: _median([r.wall_s for r in mine if r.system == name and r.counts]) for name in labels}
    baseline = medians.get(BASELINE, NAN)
    return [_summary(workload, name, label, mine, baseline) for name, label in labels.items()]


def _summary(workload: Workload, name: str, label: str, records: list[RunRecord], baseline: float) -> Summary:
    measured = [r for r in records if r.system == name and r.round > 0]
    valid = [r for r in measured if r.counts]
    walls = [r.wall_s for r in valid]
    median = _median(walls)
    q1, q3 = (np.percentile(walls, [25, 75]).tolist() if walls else [NAN, NAN])
    return Summary(
        workload=workload.name, system=name, label=label, rows=workload.rows, runs=len(measured), valid=len(valid),
        median_wall_s=median, min_wall_s=min(walls, default=NAN), max_wall_s=max(walls, default=NAN),
        q1_wall_s=q1, q3_wall_s=q3, rows_per_s=workload.rows / median if walls else NAN,
        vs_baseline=baseline / median if walls else NAN,
        median_rss_mib=_median([r.peak_rss_mib for r in valid]), median_pss_mib=_median([r.peak_pss_mib for r in valid]),
    )


def _median(values: Sequence[float]) -> float:
    return float(np.median(values)) if len(values) else NAN


# --- Markdown ----------------------------------------------------------------------------------


def markdown(workloads: Sequence[Workload], summaries: dict[str, list[Summary]], context: dict[str, Any]) -> str:
    """The Markdown report: a header with the date, machine and method, then one table per workload."""
    machine = context["machine"]
    lines = [
        f"# squall and its peers, side by side ({context['date']})",
        "",
        f"Machine: {machine['cpu_model']}, {machine['nproc']} cores, {machine['mem_total_mib']:,} MiB memory; "
        f"{context['settings']['method']}",
        "",
    ]
    for workload in workloads:
        lines += _workload_table(workload, summaries[workload.name])
    return "\n".join(lines)


def _workload_table(workload: Workload, rows: list[Summary]) -> list[str]:
    lines = [
        f"## {workload.title}",
        "",
        "| system | median wall s | spread (min–max) s | rows/s | × 2-process loop | peak RSS MiB | peak PSS MiB | outputs verified |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in rows:
        lines.append(
            f"| {s.label} | {_num(s.median_wall_s, '.2f')} | {_spread(s)} | {_num(s.rows_per_s, ',.0f')} | "
            f"{_num(s.vs_baseline, '.2f', '×')} | {_num(s.median_rss_mib, ',.0f')} | {_num(s.median_pss_mib, ',.0f')} | "
            f"{s.verified} |"
        )
    return lines + [""]


def _num(value: float, spec: str, suffix: str = "") -> str:
    return "—" if math.isnan(value) else f"{value:{spec}}{suffix}"


def _spread(s: Summary) -> str:
    return "—" if math.isnan(s.min_wall_s) else f"{s.min_wall_s:.2f}–{s.max_wall_s:.2f}"


# --- JSON --------------------------------------------------------------------------------------


def json_document(
    workloads: Sequence[Workload], records: Sequence[RunRecord], summaries: dict[str, list[Summary]], context: dict[str, Any],
) -> str:
    """Every run's raw numbers, the summaries, the workloads, and the context (date, machine, versions, settings);
    a number that does not exist (the median of no valid run) is ``null``."""
    document = {
        **context,
        "workloads": [asdict(w) for w in workloads],
        "runs": [asdict(r) for r in records],
        "summary": [{**asdict(s), "verified": s.verified} for rows in summaries.values() for s in rows],
    }
    return json.dumps(_without_nan(document), indent=2, default=str, allow_nan=False)


def _without_nan(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _without_nan(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_nan(item) for item in value]
    return value


# --- chart -------------------------------------------------------------------------------------


def chart(workloads: Sequence[Workload], summaries: dict[str, list[Summary]], path: Path, subtitle: str) -> None:
    """Two panels: rows/s (log scale) and peak process-tree PSS (bars; RSS as a mark above each) per system,
    grouped by workload."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = [(s.system, s.label) for s in summaries[workloads[0].name]]
    figure, (speed, memory) = plt.subplots(1, 2, figsize=(14, 6))
    width = 0.8 / len(systems)
    colors = plt.get_cmap("tab10")
    for i, (name, label) in enumerate(systems):
        cells = [next(s for s in summaries[w.name] if s.system == name) for w in workloads]
        x = np.arange(len(workloads)) + (i - (len(systems) - 1) / 2) * width
        speed.bar(x, [c.rows_per_s for c in cells], width, label=label, color=colors(i))
        memory.bar(x, [c.median_pss_mib for c in cells], width, color=colors(i))
        memory.scatter(x, [c.median_rss_mib for c in cells], marker="_", s=120, color="black", zorder=3,
                       label="RSS" if i == 0 else None)
    for axis, title, unit in ((speed, "Throughput (median run)", "rows/s, log scale"),
                              (memory, "Peak process-tree memory: PSS bars, RSS marks", "MiB")):
        axis.set_xticks(np.arange(len(workloads)), [w.name for w in workloads])
        axis.set_title(title)
        axis.set_ylabel(unit)
        axis.grid(axis="y", alpha=0.3)
    speed.set_yscale("log")
    memory.legend(fontsize=8, loc="upper left")
    figure.legend(*speed.get_legend_handles_labels(), loc="lower center", ncol=len(systems), fontsize=9, frameon=False)
    figure.suptitle(f"squall and its peers, whole process, start-up included — {subtitle}", fontsize=10)
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
