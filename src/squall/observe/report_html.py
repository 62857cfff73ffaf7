"""The job report as one self-contained HTML file: inline CSS and SVG, no script, nothing fetched from a network.

Sections: summary, timeline (one lane per worker, one bar per invocation
coloured by outcome, cold starts hatched before the bar they delayed),
throughput over time, the distribution of invocation durations, retries and
dead letters with their reasons, and the cost estimate. Every timeline bar
is an SVG ``rect`` of class ``bar`` with ``data-chunk``, ``data-attempt``,
``data-outcome`` and ``data-duration-ms`` attributes and a tooltip.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

from squall.observe.cost import dollars
from squall.observe.report import JobReport
from squall.invocations import InvocationRecord

COLOURS = {"ok": "#2e9e5b", "error": "#e08a1e", "timeout": "#d23c3c", "memory": "#8a4fd1", "lost": "#7a7a7a"}
_WIDTH, _LANE, _LEFT, _TOP = 960, 26, 90, 24

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:1040px;color:#1d1f24}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse}td,th{padding:3px 10px 3px 0;text-align:left;vertical-align:top}
th{font-weight:600;color:#555}.num{text-align:right;font-variant-numeric:tabular-nums}
.state-SUCCEEDED{color:#2e9e5b}.state-PARTIAL{color:#e08a1e}.state-FAILED,.state-CANCELLED{color:#d23c3c}
svg text{font-size:11px;fill:#444}.legend span{display:inline-block;margin-right:14px}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px}
.muted{color:#777}code{font-size:12px}
"""


def render(report: JobReport) -> str:
    """The whole report as an HTML document."""
    summary = report.summary()
    body = "".join(
        [
            f"<h1>squall job {escape(summary['job_id'])}</h1>",
            f"<p class='state-{escape(summary['state'])}'><b>{escape(summary['state'])}</b>"
            f"{' — ' + escape(summary['message']) if summary['message'] else ''}</p>",
            _summary(summary),
            "<h2>Timeline</h2>", _legend(), timeline_svg(report),
            "<h2>Throughput</h2>", _throughput_svg(report),
            "<h2>Invocation durations</h2>", _durations_svg(report),
            "<h2>Retries and dead letters</h2>", _failures(report),
            "<h2>Cost estimate</h2>", _cost(report),
        ]
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>squall report {escape(summary['job_id'])}</title><style>{_CSS}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def _summary(summary: dict[str, Any]) -> str:
    rows = [
        ("rows", f"{summary['rows_in']:,} read · {summary['rows_out']:,} predicted · {summary['error_rows']:,} errors"),
        ("wall time", f"{summary['wall_s']:.2f} s ({summary['rows_per_s']:,.0f} rows/s)"),
        ("chunks", f"{summary['chunks']:,} ({summary['chunks_done']:,} done, {summary['dead_chunks']:,} dead)"),
        ("invocations", f"{summary['invocations']:,} on {summary['workers']} worker lanes; {summary['retries']:,} failed attempts"),
        ("starts", f"{summary['cold_starts']:,} cold starts · {summary['worker_starts']:,} worker starts · "
                   f"{summary['model_loads']:,} model loads"),
    ]
    return "<table id='summary'>" + "".join(f"<tr><th>{k}</th><td>{escape(v)}</td></tr>" for k, v in rows) + "</table>"


def _legend() -> str:
    items = "".join(f"<span><i style='background:{c}'></i>{o}</span>" for o, c in COLOURS.items())
    return f"<p class='legend'>{items}<span><i style='background:#9cc3f0'></i>cold start (init)</span></p>"


def timeline_svg(report: JobReport) -> str:
    """One lane per worker, one bar per invocation, x in seconds since the job started."""
    lanes = sorted({r.worker for r in report.invocations})
    height = _TOP + _LANE * max(1, len(lanes)) + 20
    scale = (_WIDTH - _LEFT - 10) / max(report.wall_s, 1e-3)
    origin = report.origin
    parts = [
        f"<svg id='timeline' xmlns='http://www.w3.org/2000/svg' width='{_WIDTH}' height='{height}'>",
        "<defs><pattern id='cold' width='6' height='6' patternUnits='userSpaceOnUse' patternTransform='rotate(45)'>"
        "<rect width='3' height='6' fill='#9cc3f0'/></pattern></defs>",
        *_axis(report.wall_s, scale, height - 16),
    ]
    for index, worker in enumerate(lanes):
        y = _TOP + index * _LANE
        parts.append(f"<text x='4' y='{y + 15}'>worker {worker}</text>")
        parts.append(f"<line x1='{_LEFT}' x2='{_WIDTH - 10}' y1='{y + _LANE - 2}' y2='{y + _LANE - 2}' stroke='#eee'/>")
    for record in report.invocations:
        y = _TOP + lanes.index(record.worker) * _LANE + 3
        parts.extend(_bar(record, _LEFT + (record.started_at - origin) * scale, y, scale))
    parts.append("</svg>")
    return "".join(parts)


def _bar(record: InvocationRecord, x: float, y: float, scale: float) -> list[str]:
    width = max(1.0, record.duration_s * scale)
    memory = "-" if record.max_rss_mb is None else f"{record.max_rss_mb:.0f} MB"
    tip = (
        f"chunk {record.chunk_id} attempt {record.attempt}: {record.outcome}, {record.duration_s * 1000:.1f} ms, "
        f"{record.rows_in:,} rows, max memory {memory}"
        + (f", cold start {record.init_s * 1000:.1f} ms" if record.init_s is not None else "")
        + (f" — {record.error}" if record.error else "")
    )
    shapes = []
    if record.init_s is not None:
        init_w = max(2.0, record.init_s * scale)
        shapes.append(
            f"<rect class='cold' x='{x - init_w:.2f}' y='{y:.1f}' width='{init_w:.2f}' height='{_LANE - 8}' fill='url(#cold)'>"
            f"<title>cold start: init {record.init_s * 1000:.1f} ms</title></rect>"
        )
    shapes.append(
        f"<rect class='bar' x='{x:.2f}' y='{y:.1f}' width='{width:.2f}' height='{_LANE - 8}' "
        f"fill='{COLOURS.get(record.outcome, '#444')}' data-chunk='{record.chunk_id}' data-attempt='{record.attempt}' "
        f"data-worker='{record.worker}' data-outcome='{escape(record.outcome)}' "
        f"data-duration-ms='{record.duration_s * 1000:.3f}'><title>{escape(tip)}</title></rect>"
    )
    return shapes


def _axis(wall_s: float, scale: float, y: float) -> list[str]:
    step = _nice_step(wall_s / 8 if wall_s > 0 else 1.0)
    ticks, t = [], 0.0
    while t <= wall_s + 1e-9:
        x = _LEFT + t * scale
        ticks.append(f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{_TOP - 4}' y2='{y}' stroke='#f0f0f0'/>")
        ticks.append(f"<text x='{x:.1f}' y='{y + 12}' text-anchor='middle'>{t:g} s</text>")
        t += step
    return ticks


def _nice_step(raw: float) -> float:
    """The smallest of 1, 2, 5 or 10 times a power of ten that is at least ``raw``."""
    magnitude = 10.0 ** math.floor(math.log10(raw))
    return next(magnitude * f for f in (1, 2, 5, 10) if magnitude * f >= raw)


def _throughput_svg(report: JobReport) -> str:
    series = report.throughput()
    if not series:
        return "<p class='muted'>no invocations</p>"
    top = max(v for _, v in series) or 1.0
    width, height = _WIDTH - _LEFT - 10, 140
    step = width / len(series)
    points = " ".join(f"{_LEFT + (i + 0.5) * step:.1f},{10 + height * (1 - v / top):.1f}" for i, (_, v) in enumerate(series))
    return (
        f"<svg id='throughput' xmlns='http://www.w3.org/2000/svg' width='{_WIDTH}' height='{height + 30}'>"
        f"<text x='4' y='16'>{top:,.0f} rows/s</text><text x='4' y='{height + 10}'>0</text>"
        f"<line x1='{_LEFT}' x2='{_WIDTH - 10}' y1='{height + 10}' y2='{height + 10}' stroke='#ccc'/>"
        f"<polyline points='{points}' fill='none' stroke='#2b6cb0' stroke-width='2'/>"
        f"<text x='{_LEFT}' y='{height + 26}'>0 s</text>"
        f"<text x='{_WIDTH - 10}' y='{height + 26}' text-anchor='end'>{report.wall_s:.2f} s</text></svg>"
    )


def _durations_svg(report: JobReport) -> str:
    bins = report.duration_histogram()
    if not bins:
        return "<p class='muted'>no invocations</p>"
    top = max(n for _, _, n in bins) or 1
    width, height = _WIDTH - _LEFT - 10, 120
    step = width / len(bins)
    bars = "".join(
        f"<rect class='dbin' x='{_LEFT + i * step + 1:.1f}' y='{10 + height * (1 - n / top):.1f}' width='{step - 2:.1f}' "
        f"height='{height * n / top:.1f}' fill='#5a8dd6'><title>{lo * 1000:.0f}–{hi * 1000:.0f} ms: {n}</title></rect>"
        for i, (lo, hi, n) in enumerate(bins)
    )
    return (
        f"<svg id='durations' xmlns='http://www.w3.org/2000/svg' width='{_WIDTH}' height='{height + 30}'>"
        f"<text x='4' y='16'>{top} invocations</text>{bars}"
        f"<text x='{_LEFT}' y='{height + 26}'>0 ms</text>"
        f"<text x='{_WIDTH - 10}' y='{height + 26}' text-anchor='end'>{bins[-1][1] * 1000:,.0f} ms</text></svg>"
    )


def _failures(report: JobReport) -> str:
    failures = report.failures
    if not failures and not report.dead:
        return "<p class='muted'>every invocation succeeded on its first attempt</p>"
    rows = "".join(
        f"<tr><td class='num'>{r.chunk_id}</td><td class='num'>{r.attempt}</td><td>{r.worker}</td>"
        f"<td>{escape(r.outcome)}</td><td class='num'>{r.duration_s:.2f} s</td><td>{escape(r.error or '')}</td></tr>"
        for r in failures
    )
    html = f"<table id='failures'><tr><th>chunk</th><th>attempt</th><th>worker</th><th>outcome</th><th>took</th><th>reason</th></tr>{rows}</table>"
    if report.dead:
        dead = "".join(
            f"<li>chunk {d.chunk_id} (~{d.est_rows:,} rows): "
            + "; ".join(f"attempt {a.attempt} {escape(a.outcome)}: {escape(a.error or '')}" for a in d.attempts)
            + "</li>"
            for d in report.dead
        )
        html += f"<h3>Dead letters</h3><ul id='dead'>{dead}</ul>"
    return html


def _cost(report: JobReport) -> str:
    cost = report.cost
    rows = [
        ("function platform", f"{dollars(cost.function_total)} = {cost.gb_seconds:,.3f} GB-s × "
                              f"${cost.prices.per_gb_second:g} + {cost.requests:,} requests × "
                              f"${cost.prices.per_million_requests:g}/M"),
        ("billed", f"{cost.billed_ms:,} ms at {cost.memory_mb:,} MB (durations and cold-start inits, each rounded up to 1 ms)"),
        ("one VM", f"{dollars(cost.vm_total)} = {cost.vm_seconds:,.0f} s × ${cost.prices.vm_per_hour:g}/h "
                   f"({cost.compute_s:,.1f} s of compute on {cost.prices.vm_cores} cores, 60 s minimum)"),
    ]
    return "<table id='cost'>" + "".join(f"<tr><th>{k}</th><td>{escape(v)}</td></tr>" for k, v in rows) + "</table>"
