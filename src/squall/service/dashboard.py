"""The dashboard: one self-contained HTML page (inline CSS and JavaScript, nothing fetched from elsewhere)
that polls the JSON API once a second.

The list view shows every job with a live progress bar (a ``progress`` element
in the row ``tr[data-job=ID]``), rows/s, ETA and queue position; the job view
(``#/jobs/ID``) shows its counts, throughput over time, the chunk timeline
drawn by :mod:`squall.observe.report_html` (workers × time, coloured by
outcome) and the dead letters with every attempt's reason.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def page() -> str:
    """The dashboard's HTML."""
    return files("squall.service").joinpath("dashboard.html").read_text(encoding="utf-8")
