"""The chunk ledger: what an output holds, read from its manifest, and what an incremental run must redo.

Every part in ``_manifest.json`` names the input files its chunk read and the
run that wrote it; the ledger beside the parts records each input file's
fingerprint (size, modification time or ETag, and for Parquet each row
group's rows and bytes), the model's fingerprint (content hash of the model
file, or of the module of ``module:attr`` code) and the spec's (the fields
that change results). An incremental run compares the inputs of today with
that record:

- unchanged file: its parts are kept (each part also records the model and
  spec fingerprints it was made with);
- new file: planned whole;
- Parquet file whose first row groups are the recorded ones and that has more:
  only the new row groups are planned; the old parts are kept;
- any other change, or a deleted file: its old parts are dropped (and the
  other files that shared a part with it are planned again, so no part is
  half stale);
- parts made by another model or spec: their files are planned again,
  unless ``keep_stale``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from squall.formats.base import FileInfo
from squall.spec import JobSpec

LEDGER_VERSION = 1
# The spec fields a row's result depends on, besides the model's content and the input's: the spec fingerprint.
RESULT_FIELDS = (
    "flavor", "method", "model_output", "preprocess", "postprocess", "batch_format", "key", "features", "delimiter",
    "quotechar", "header", "multiline", "output_format", "prediction_column", "output_columns", "output_layout",
)
# What a job reads (its model and rows) and where its results go: fingerprinted apart (file stamps, model hash).
SOURCE_FIELDS = (
    "model", "state_dict", "model_sha256", "input", "format", "query", "partition_column", "max_line_bytes", "output",
    "table",
)
# What a job made so far was made with: a redrive (or any change to a running job) may not change these.
FIXED_FIELDS = RESULT_FIELDS + SOURCE_FIELDS


@dataclass(frozen=True)
class FileStamp:
    """The fingerprint of one input file."""

    uri: str
    size: int
    version: str
    groups: tuple[str, ...] = ()

    @classmethod
    def of(cls, info: FileInfo) -> FileStamp:
        groups = tuple(f"{rows}:{size}" for rows, size in zip(info.row_group_rows, info.row_group_bytes))
        return cls(info.file.uri, info.file.size, info.file.version, groups)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileStamp:
        return cls(data["uri"], int(data["size"]), str(data["version"]), tuple(data.get("groups", ())))


@dataclass(frozen=True)
class Ledger:
    """An output's record: fingerprints, runs, and the part and error files with the inputs behind each."""

    model: str
    spec: str
    files: dict[str, FileStamp]
    runs: list[dict[str, Any]]
    parts: list[dict[str, Any]]
    errors: list[dict[str, Any]]

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> Ledger:
        record = manifest.get("ledger") or {}
        files = {uri: FileStamp.from_dict(stamp) for uri, stamp in record.get("files", {}).items()}
        return cls(
            record.get("model", ""), record.get("spec", ""), files, list(record.get("runs", [])),
            list(manifest.get("parts", [])), list(manifest.get("errors", [])),
        )

    @property
    def next_run(self) -> int:
        return 1 + max((int(run["run"]) for run in self.runs), default=0)


@dataclass(frozen=True)
class Increment:
    """What an incremental run does: which files to plan (uri → first row group), which old entries stay."""

    run: int
    only: dict[str, int]
    kept_parts: list[dict[str, Any]] = field(default_factory=list)
    kept_errors: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    previous_runs: list[dict[str, Any]] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    model: str = ""
    spec: str = ""
    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Increment:
        return cls(**json.loads(text))


class Selection:
    """Called by the planner with every described input: records the run's increment and names what to plan."""

    def __init__(self, spec: JobSpec, ledger: Ledger | None) -> None:
        self._spec = spec
        self._ledger = ledger
        self._model = model_fingerprint(spec.model, spec.state_dict)
        self._spec_fp = spec_fingerprint(spec)
        self.increment: Increment | None = None

    def __call__(self, infos: list[FileInfo]) -> dict[str, int]:
        ledger = self._ledger if self._spec.incremental else None
        found = plan_increment(ledger, infos, self._model, self._spec_fp, self._spec.keep_stale)
        stamps = {info.file.uri: asdict(FileStamp.of(info)) for info in infos}
        self.increment = replace(found, model=self._model, spec=self._spec_fp, files=stamps)
        return self.increment.only


def model_fingerprint(model: str, state_dict: str | None = None) -> str:
    """SHA-256 of the model file or directory, or of the source of the module that ``module:attr`` names,
    plus that of the weights file for a ``module:Class`` model."""
    from squall.io.storage import is_remote
    from squall.models.artifact import file_sha256, tree_sha256
    from squall.models.code import is_code_ref

    if state_dict:
        return model_fingerprint(model) + "+" + file_sha256(state_dict)
    if is_code_ref(model):
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # as in the workers, user code imports from the working directory
        spec = importlib.util.find_spec(model.split(":")[0])
        origin = spec.origin if spec else None
        return "code:" + (file_sha256(origin) if origin and origin.endswith(".py") else model)
    if os.path.isdir(model):
        return tree_sha256(model)
    if is_remote(model) and "://" not in model:
        return "name:" + model  # a registry URI (runs:/, models:/): MLflow alone can resolve it
    return file_sha256(model)


def spec_fingerprint(spec: JobSpec) -> str:
    """SHA-256 of the spec fields that change results."""
    fields = {name: getattr(spec, name) for name in RESULT_FIELDS}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def plan_increment(
    ledger: Ledger | None, infos: list[FileInfo], model_fp: str, spec_fp: str, keep_stale: bool
) -> Increment:
    """Compare today's inputs with the ledger and decide what to plan, keep and drop (module docstring)."""
    if ledger is None:
        return Increment(1, {info.file.uri: 0 for info in infos})
    current = {info.file.uri: FileStamp.of(info) for info in infos}
    stale = set() if keep_stale else _stale_files(ledger, model_fp, spec_fp)
    reasons: dict[str, str] = {}
    only: dict[str, int] = {}
    dirty: set[str] = set()
    for uri, stamp in current.items():
        old = ledger.files.get(uri)
        if old is None:
            only[uri], reasons[uri] = 0, "new file"
        elif uri in stale:
            only[uri], reasons[uri] = 0, "model or spec changed"
        elif (old.size, old.version) == (stamp.size, stamp.version):
            continue
        elif old.groups and stamp.groups[: len(old.groups)] == old.groups and len(stamp.groups) > len(old.groups):
            only[uri], reasons[uri] = len(old.groups), f"{len(stamp.groups) - len(old.groups)} row groups appended"
        else:
            only[uri], reasons[uri] = 0, "changed"
            dirty.add(uri)
    dirty |= (set(ledger.files) - set(current)) | stale
    return _settle(ledger, current, only, dirty, reasons)


def _stale_files(ledger: Ledger, model_fp: str, spec_fp: str) -> set[str]:
    """Inputs with a part or error part made by another model or spec."""
    return {
        uri
        for entry in ledger.parts + ledger.errors
        if (entry.get("model"), entry.get("spec")) != (model_fp, spec_fp)
        for uri in entry.get("files", [])
    }


def _settle(
    ledger: Ledger, current: dict[str, FileStamp], only: dict[str, int], dirty: set[str], reasons: dict[str, str]
) -> Increment:
    """Drop every old entry that read a dirty file, and every entry that shares a file with a dropped one (a
    merged part holds several chunks' rows, and goes whole); the files they read are planned again, whole."""
    entries = ledger.parts + ledger.errors
    while True:
        gone = {e["path"] for e in entries if set(e.get("files", [])) & dirty}
        dropped = [e for e in entries if e["path"] in gone]
        spread = {uri for e in dropped for uri in e.get("files", []) if uri in current} - dirty
        if not spread:
            break
        for uri in spread:
            only[uri], reasons[uri] = 0, reasons.get(uri, "shared a part with a changed file")
        dirty |= spread

    def keep(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in items if e["path"] not in gone]

    return Increment(
        run=ledger.next_run,
        only=only,
        kept_parts=keep(ledger.parts),
        kept_errors=keep(ledger.errors),
        dropped=list(dict.fromkeys(e["path"] for e in dropped)),
        previous_runs=ledger.runs,
        reasons=reasons,
    )
