"""Fill a rule's spec template for one file or one run time, and name the job deterministically.

Placeholders are ``{name}`` in any string field (also inside lists and
tables). For a file: ``{file}`` (its path or URL), ``{name}`` (``a.parquet``),
``{stem}`` (``a``), ``{suffix}`` (``.parquet``), ``{dir}``, and the arrival time
as ``{date}`` (``2026-11-28``), ``{time}`` (``2130``), ``{run_time}`` (ISO 8601).
For a schedule: ``{date}``, ``{time}``, ``{run_time}``, ``{year}``, ``{month}``,
``{day}``, ``{hour}``, ``{minute}`` of the run time, in the rule's time zone.
A placeholder that is not one of these is a :class:`~squall.errors.SpecError`.

A watch template may leave ``input`` out (the file is the input). If its
``output`` uses no placeholder, each file's output goes to
``<output>/<stem>/`` so that files never share, or clobber, one output.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Any, Mapping

from squall.errors import SpecError
from squall.spec import JobSpec, build_spec

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".zstd", ".lz4", ".snappy")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def time_variables(moment: datetime) -> dict[str, str]:
    """The date and time placeholders of ``moment``."""
    return {
        "date": moment.strftime("%Y-%m-%d"), "time": moment.strftime("%H%M"), "run_time": moment.isoformat(),
        "year": moment.strftime("%Y"), "month": moment.strftime("%m"), "day": moment.strftime("%d"),
        "hour": moment.strftime("%H"), "minute": moment.strftime("%M"),
    }


def file_variables(uri: str, arrived: datetime) -> dict[str, str]:
    """The placeholders of a file at ``uri`` that arrived at ``arrived``."""
    name = PurePosixPath(uri.split("://", 1)[-1]).name
    stem = stem_of(name)
    return {**time_variables(arrived), "file": uri, "name": name, "stem": stem,
            "suffix": name[len(stem):], "dir": uri[: len(uri) - len(name)].rstrip("/")}


def stem_of(name: str) -> str:
    """``name`` without its format extension and compression extension: ``a.csv.gz`` and ``a.csv`` give ``a``,
    ``day.2026-11-28.parquet`` gives ``day.2026-11-28``."""
    path = PurePosixPath(name)
    if path.suffix.lower() in _COMPRESSIONS and PurePosixPath(path.stem).suffix:
        path = PurePosixPath(path.stem)
    return path.stem or name


def fill(template: Mapping[str, Any], variables: Mapping[str, str]) -> dict[str, Any]:
    """``template`` with every placeholder of every string field replaced."""
    return {name: _fill_value(name, value, variables) for name, value in template.items()}


def _fill_value(field: str, value: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        def replace(match: re.Match[str]) -> str:
            if match[1] not in variables:
                known = ", ".join("{" + v + "}" for v in variables)
                raise SpecError(f"field `{field}` of the template uses {{{match[1]}}}; the placeholders here are {known}")
            return variables[match[1]]

        return _PLACEHOLDER.sub(replace, value)
    if isinstance(value, list):
        return [_fill_value(field, item, variables) for item in value]
    if isinstance(value, dict):
        return {key: _fill_value(field, item, variables) for key, item in value.items()}
    return value


def has_placeholder(value: Any) -> bool:
    """Whether a template value uses any placeholder."""
    if isinstance(value, str):
        return bool(_PLACEHOLDER.search(value))
    if isinstance(value, list):
        return any(has_placeholder(item) for item in value)
    return False


def file_spec(template: Mapping[str, Any], uri: str, arrived: datetime, job_id: str) -> JobSpec:
    """The spec of the job for the file at ``uri``: the template filled, input and output defaulted."""
    variables = file_variables(uri, arrived)
    values = dict(template)
    values.setdefault("input", [uri])
    if "output" in values and not has_placeholder(values["output"]):
        values["output"] = str(values["output"]).rstrip("/") + "/{stem}"
    return _spec(values, variables, job_id)


def run_spec(template: Mapping[str, Any], run_time: datetime, job_id: str) -> JobSpec:
    """The spec of a schedule's job for ``run_time``."""
    return _spec(dict(template), time_variables(run_time), job_id)


def _spec(values: dict[str, Any], variables: Mapping[str, str], job_id: str) -> JobSpec:
    values.pop("job_id", None)
    filled = fill(values, variables)
    try:
        return build_spec(filled, {"job_id": job_id})
    except SpecError as exc:
        raise SpecError(f"the trigger's template does not make a valid spec: {exc}") from None


def file_job_id(rule_id: str, uri: str) -> str:
    """The job id of ``uri`` under rule ``rule_id``: the same every time, so a resubmission is recognised."""
    digest = hashlib.sha1(f"{rule_id}\0{uri}".encode()).hexdigest()[:10]
    stem = _slug(stem_of(PurePosixPath(uri.split("://", 1)[-1]).name))[:24]
    return f"{_slug(rule_id)[:20]}-{stem + '-' if stem else ''}{digest}"


def run_job_id(name: str, run_time: datetime) -> str:
    """The job id of a schedule's run: its name and the run time (UTC)."""
    return f"{name}-{run_time.astimezone(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}"


def _slug(text: str) -> str:
    return _UNSAFE.sub("-", text).strip("-._")
