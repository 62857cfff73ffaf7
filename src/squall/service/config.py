"""``ServeConfig``: what ``squall serve`` listens on, who may call it, and how much work it runs at once.

Read from a TOML file (``--config squall-serve.toml``); ``SQUALL_TOKEN`` and
explicit CLI options win over the file. Unknown keys are refused. The
``[[watches]]`` and ``[[schedules]]`` tables are the built-in triggers' rules
(:mod:`squall.triggers.rules`), and ``[[triggers]]`` tables with ``kind =
"NAME"`` hold the rules of any registered trigger
(:mod:`squall.triggers.registry`); a relative ``spec`` or local ``location``
in them is read from the config file's folder.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from pathlib import Path
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from squall.errors import SpecError, UsageError
from squall.io.storage import is_remote
from squall.spec import default_state_dir
from squall.triggers.rules import ScheduleRule, WatchRule


class ServeConfig(BaseModel):
    """The service's settings; every field is documented in docs/service.md."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    host: str = Field("127.0.0.1", description="Address to listen on; a non-loopback address needs a token.")
    port: int = Field(8700, ge=0, le=65535, description="Port to listen on (0 picks a free one).")
    token: str | None = Field(None, min_length=1, description="Bearer token every route but /healthz requires.")
    state_dir: str | None = Field(None, description="Job state (the same SQLite store as the CLI); default $SQUALL_HOME.")
    allowed_roots: list[str] = Field(
        default_factory=list, description="Prefixes that input and output paths must lie under; empty allows any."
    )
    max_concurrency: int = Field(
        default_factory=lambda: os.cpu_count() or 1, gt=0, description="Workers busy at once across all jobs."
    )
    max_running_jobs: int = Field(4, gt=0, description="Jobs running at once; the rest wait in the queue.")
    warm_workers: dict[str, int] = Field(
        default_factory=dict, description="Model → workers kept loaded between jobs (provisioned concurrency)."
    )
    warm_workers_per_job: int | None = Field(
        None, gt=0, description="Warm workers lent to one job; default all of a model's warm workers as one pool."
    )
    watches: list[WatchRule] = Field(default_factory=list, description="Folders and prefixes whose new files each start a job.")
    schedules: list[ScheduleRule] = Field(default_factory=list, description="Cron times that each start a job.")
    triggers: list[dict[str, Any]] = Field(
        default_factory=list, description="Rules of any registered trigger, each with `kind = \"NAME\"` and that trigger's fields."
    )

    @model_validator(mode="after")
    def _trigger_kinds_registered(self) -> ServeConfig:
        self.trigger_rules()
        return self

    def trigger_rules(self) -> list[tuple[str, Any]]:
        """Every trigger rule as ``(trigger name, rule)``: the ``watches``, the ``schedules``, then ``triggers``
        (each checked against its trigger's rule model)."""
        from squall.triggers.registry import TRIGGERS

        rules: list[tuple[str, Any]] = [("watch", w) for w in self.watches] + [("schedule", r) for r in self.schedules]
        for table in self.triggers:
            kind = str(table.get("kind", ""))
            if kind not in TRIGGERS.names():
                raise ValueError(f"[[triggers]] `kind`: {TRIGGERS.unknown(kind)}")
            fields = {key: value for key, value in table.items() if key != "kind"}
            rules.append((kind, TRIGGERS.load(kind).Rule.model_validate(fields)))
        return rules

    @model_validator(mode="after")
    def _rule_names_unique(self) -> ServeConfig:
        for kind, ids in (("watches", [w.rule_id() for w in self.watches]), ("schedules", [r.name for r in self.schedules])):
            twice = sorted({rule for rule in ids if ids.count(rule) > 1})
            if twice:
                raise ValueError(f"two [[{kind}]] share {twice[0]!r}: give each its own `name` (or location)")
        return self

    def resolved_state_dir(self) -> Path:
        """The state directory the service uses."""
        return default_state_dir(self.state_dir)

    def is_loopback(self) -> bool:
        """Whether ``host`` only accepts connections from this machine."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            try:
                return ipaddress.ip_address(socket.gethostbyname(self.host)).is_loopback
            except (OSError, ValueError):
                return False

    def check_bind(self) -> None:
        """Refuse to listen beyond loopback without a token."""
        if not self.token and not self.is_loopback():
            raise UsageError(
                f"refusing to listen on {self.host} without a token: set SQUALL_TOKEN (or `token` in the config), "
                "or listen on 127.0.0.1"
            )


def load_config(
    path: str | Path | None = None, explicit: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> ServeConfig:
    """Resolve defaults < config file < ``SQUALL_TOKEN`` < explicit values into a ``ServeConfig``."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    if path is not None:
        values.update(_read_file(Path(path)))
    if environ.get("SQUALL_TOKEN"):
        values["token"] = environ["SQUALL_TOKEN"]
    values.update({k: v for k, v in (explicit or {}).items() if v is not None})
    try:
        return ServeConfig.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"`{'.'.join(map(str, e['loc']))}`: {e['msg']}" for e in exc.errors())
        raise SpecError(f"invalid serve config: {problems}; see docs/service.md") from None


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"cannot read serve config {path}: {exc.strerror}; check --config") from exc
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib
    try:
        raw = tomllib.loads(text)
    except ValueError as exc:
        raise SpecError(f"serve config {path} is not valid TOML: {exc}") from exc
    values = {name.replace("-", "_"): value for name, value in raw.items()}
    for section in ("watches", "schedules", "triggers"):
        if isinstance(values.get(section), list):
            values[section] = [_beside(path.parent, rule) for rule in values[section]]
    return values


def _beside(folder: Path, rule: Any) -> Any:
    """A rule whose relative spec file and local folder are read from ``folder`` (the config file's)."""
    if not isinstance(rule, dict):
        return rule
    rule = dict(rule)
    for key in ("spec", "schedule_spec", "location"):
        value = rule.get(key)
        if isinstance(value, str) and not is_remote(value) and not Path(value).is_absolute():
            rule[key] = str(folder / value)
    return rule
