"""What a trigger watches and which job it starts: :class:`WatchRule` and :class:`ScheduleRule`.

A rule's ``template`` is raw spec values (what :func:`squall.spec.load_spec_file`
returns) whose string fields may hold ``{file}``, ``{stem}``, ``{date}``...
(see :mod:`squall.triggers.template`). ``spec`` names a TOML/JSON spec file read
once when the rule is made; inline ``template`` values override it.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from squall.errors import SpecError
from squall.io.storage import is_remote
from squall.spec import load_spec_file

_R = TypeVar("_R", bound="TemplateRule")
PARTIAL_PATTERNS = ("*.tmp", ".*", "*.part", "*.crdownload", "*.partial", "*~", "_*")


class TemplateRule(BaseModel):
    """A rule whose jobs come from a spec template: the file ``spec`` names, overridden by inline ``template`` values."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec: str | None = Field(None, description="Spec template file (TOML or JSON).")
    template: dict[str, Any] = Field(default_factory=dict, description="Inline spec template values; override `spec`.")

    @model_validator(mode="after")
    def _read_spec_file(self) -> TemplateRule:
        if self.spec is not None:
            object.__setattr__(self, "template", {**load_spec_file(self.spec), **self.template})
            object.__setattr__(self, "spec", None)
        return self


class WatchRule(TemplateRule):
    """One job per new file under ``location``: a local folder or an object-store prefix URL."""

    location: str = Field(description="Local folder, or object-store prefix URL (s3://bucket/inbox/).")
    name: str | None = Field(None, description="Name of the rule in the seen record; default derived from `location`.")
    pattern: str = Field("*", description="Glob the file name must match (e.g. `*.parquet`).")
    ignore: tuple[str, ...] = Field(PARTIAL_PATTERNS, description="Globs of partial or hidden files that never count.")
    recursive: bool = Field(False, description="Also watch sub-folders.")
    settle_s: float = Field(2.0, ge=0, description="A file counts once its size and mtime were unchanged this long.")
    poll_s: float = Field(1.0, gt=0, description="Seconds between listings (the only signal for object stores).")

    def rule_id(self) -> str:
        """Stable id of this rule in the seen record and in job ids."""
        return self.name or "w" + hashlib.sha1(self.canonical_location().encode()).hexdigest()[:8]

    def canonical_location(self) -> str:
        """The location spelled one way: a local folder as its real absolute path (``inbox``, ``./inbox`` and
        ``/srv/inbox`` are one rule), a URL without its trailing slash."""
        if is_remote(self.location):
            return self.location.rstrip("/")
        return os.path.realpath(self.location.removeprefix("file://"))


class ScheduleRule(TemplateRule):
    """One job per cron time (``[[schedules]]`` in the serve config)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$", description="Name of the schedule; prefixes its job ids.")
    cron: str = Field(description="Cron expression, e.g. `0 2 * * *` (02:00 every day).")
    timezone: str = Field("UTC", description="IANA time zone the cron expression is read in.")

    def rule_id(self) -> str:
        return "schedule:" + self.name


def watch_rule(**values: Any) -> WatchRule:
    """A :class:`WatchRule`, or a SpecError naming the bad field."""
    return _validated(WatchRule, values)


def schedule_rule(**values: Any) -> ScheduleRule:
    """A :class:`ScheduleRule`, or a SpecError naming the bad field."""
    return _validated(ScheduleRule, values)


def _validated(kind: type[_R], values: dict[str, Any]) -> _R:
    try:
        return kind.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"field `{'.'.join(map(str, e['loc'])) or kind.__name__}`: {e['msg']}" for e in exc.errors())
        raise SpecError(f"invalid {kind.__name__}: {problems}") from None
