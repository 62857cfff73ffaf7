"""``JobSpec``: everything a job needs, validated once at the entry point.

Field names are the CLI's long option names (``--chunk-rows`` is
``chunk_rows``; a TOML file may spell it either way). Values resolve in this
order, later winning: defaults < spec file < ``SQUALL_<FIELD>`` environment
variables < explicit arguments (CLI options or keyword arguments).

Names that plugins provide (a flavor, an input or output format, a backend)
are checked against their registries, which are the only lists of them. A
backend's options nest under it (``backend_options``, ``[backend.ray]`` in a
spec file); the flat ``ray_address`` form (``--ray-address``,
``SQUALL_RAY_ADDRESS``) sets the same option.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping

from functools import cache

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from squall.errors import SpecError

if TYPE_CHECKING:
    from squall.backends.base import BackendOptions
    from squall.registry import Registry

Method = Literal["predict", "predict_proba", "decision_function", "transform"]
BatchFormat = Literal["auto", "pandas", "numpy", "arrow"]
OutputLayout = Literal["auto", "columns", "vector"]
LogFormat = Literal["text", "json"]


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class JobSpec(BaseModel):
    """A batch-prediction job: what to read, which model to run, where to write, and the limits.

    Every field is documented in docs/reference.md; every CLI option of
    ``squall run`` sets the field of the same name.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    # what to run
    model: str = Field(description="Model file or directory, or `module:attr` for user code (see Model flavors).")
    flavor: str = Field("auto", description="How to load the model (a registered flavor); `auto` guesses from `model`.")
    method: Method = Field("predict", description="Model method to call on each batch.")
    state_dict: str | None = Field(None, description="Weights file for a `module:Class` PyTorch model.")
    model_output: str | None = Field(None, description="Which named output of a multi-output (ONNX) model to write.")
    model_sha256: str | None = Field(
        None, pattern=r"^[0-9a-fA-F]{64}$", description="Refuse the model unless its content has this sha256."
    )
    trust_model: bool = Field(False, description="Allow a model that runs code on load (pickle, MLflow) from a remote URI.")
    gpus: int = Field(0, ge=0, description="GPUs to use; worker i runs on GPU i mod gpus. 0 runs on the CPU.")
    preprocess: str | None = Field(None, description="`module:attr` called on each batch before the model.")
    postprocess: str | None = Field(None, description="`module:attr` called on each model output.")
    batch_size: int | Literal["auto"] = Field(65536, description="Rows handed to the model per call, or `auto` to measure.")
    batch_format: BatchFormat = Field("auto", description="What the model receives: pandas, numpy, arrow; `auto` lets the flavor choose.")
    output_layout: OutputLayout = Field("auto", description="A 2-D prediction as a column per position or one vector column.")

    # what to read
    input: list[str] = Field(description="Paths, directories, globs or fsspec URLs.")
    format: str = Field("auto", description="Input format (a registered one); `auto` uses the file extension or URL.")
    key: list[str] = Field(default_factory=list, description="Columns copied to the output to identify rows.")
    features: list[str] | None = Field(None, description="Columns given to the model; default all but the key.")
    delimiter: str = Field(",", min_length=1, max_length=1, description="CSV field delimiter.")
    quotechar: str = Field('"', min_length=1, max_length=1, description="CSV quote character.")
    header: bool = Field(True, description="CSV files start with a header line.")
    multiline: bool = Field(False, description="CSV quoted fields may hold newlines: split per file, not per byte range.")
    max_line_bytes: int = Field(64 * 1024 * 1024, gt=0, description="Longer CSV/JSONL lines become error rows.")
    query: str | None = Field(None, description="SQL query whose rows are the input, when `input` is a database URL.")
    partition_column: str | None = Field(None, description="Indexed integer column of `query` whose ranges cut it into chunks.")
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="Object-store options (fsspec), as JSON on the command line."
    )
    endpoint_url: str | None = Field(None, description="Object-store endpoint (an S3-compatible server).")

    # how to cut the work
    chunk_rows: int | None = Field(None, gt=0, description="Target rows per chunk.")
    chunk_bytes: int | None = Field(None, gt=0, description="Target input bytes per chunk.")
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, gt=0, description="Worker processes.")
    threads_per_worker: int | None = Field(None, gt=0, description="BLAS/OpenMP threads per worker; default cores // workers.")
    fork: bool = Field(True, description="Fork warm workers from one process that loaded the model (if the model allows).")

    # where workers run
    backend: str = Field("local", description="Where workers run (a registered backend): `local` processes, or `ray` actors on a Ray cluster.")
    backend_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Options of each backend by name (`[backend.ray]` in a spec file, `--ray-address` on the command line).",
    )

    # where to write
    output: str = Field(description="Output directory or URL.")
    output_format: str = Field("parquet", description="Format of the part files (a registered output format).")
    min_part_bytes: int = Field(
        65536, ge=0,
        description="Parquet parts smaller than this are merged into fewer files at finalize, once a job leaves at "
        "least 100 of them; 0 keeps every part.",
    )
    table: str | None = Field(None, description="Table the predictions go to, when `output` is a database URL.")
    prediction_column: str = Field("prediction", min_length=1, description="Name (or prefix) of prediction columns.")
    output_columns: list[str] | None = Field(None, description="Explicit names for the prediction columns.")
    overwrite: bool = Field(False, description="Replace an output that holds another job's results.")
    incremental: bool = Field(False, description="Add to an existing output: run only new or changed inputs (the ledger).")
    keep_stale: bool = Field(False, description="With `incremental`, keep parts made by an older model or spec.")

    # limits and failure handling
    timeout: float = Field(900.0, gt=0, description="Seconds one invocation may run before its worker is killed.")
    memory: int | None = Field(None, gt=0, description="MB of RSS a worker (with its children) may use before it is killed.")
    max_attempts: int = Field(3, ge=1, description="Attempts per chunk before it is dead-lettered.")
    backoff_base: float = Field(0.5, ge=0, description="First retry delay bound in seconds (full jitter).")
    backoff_max: float = Field(30.0, ge=0, description="Largest retry delay in seconds.")
    no_retry_on: list[str] = Field(default_factory=list, description="Exception type names whose chunks are not retried.")
    split_after: int = Field(2, ge=1, description="Timeouts, memory kills or crashes of a chunk before it is split in two.")
    min_chunk_rows: int = Field(1, ge=1, description="Chunks are not split below this many rows.")
    batch_lane: bool = Field(False, description="Run chunks that cannot be split further without the time limit.")
    batch_lane_timeout: float | None = Field(None, gt=0, description="Time limit in the batch lane; default none.")
    max_invocations_per_worker: int | None = Field(None, gt=0, description="Recycle a worker after this many invocations.")
    recycle_rss_mb: int | None = Field(None, gt=0, description="Recycle a worker whose RSS exceeds this between invocations.")
    max_error_rate: float = Field(0.0, ge=0, le=1, description="Error rows allowed, as a fraction of rows read.")
    max_dead_chunks: int = Field(0, ge=0, description="Dead-lettered chunks allowed before the job is FAILED.")

    # what is seen: logs, metrics and the prices a run is costed at
    log_format: LogFormat = Field("text", description="Format of the job log (one REPORT record per invocation): text or json.")
    log_file: str | None = Field(None, description="Where the job log goes (`-` for stderr); default the job's state folder.")
    metrics_file: str | None = Field(None, description="Write the job's Prometheus metrics (text format) to this file at the end.")
    price_per_gb_second: float = Field(
        0.0000166667, ge=0, description="Function platform price per GB-second of billed memory × duration (AWS Lambda x86)."
    )
    price_per_million_requests: float = Field(0.20, ge=0, description="Function platform price per million invocations.")
    vm_price_per_hour: float = Field(0.192, ge=0, description="On-demand VM price per hour (AWS m5.xlarge), to compare with.")
    vm_cores: int = Field(4, gt=0, description="Cores of that VM (m5.xlarge: 4 vCPUs).")

    # bookkeeping
    job_id: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="Name for the job.")
    state_dir: str | None = Field(None, description="Where job state lives; default $SQUALL_HOME or ~/.squall.")

    _split_lists = field_validator("input", "key", "features", "output_columns", "no_retry_on", mode="before")(_split_csv)

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_size_rows_or_auto(cls, value: Any) -> Any:
        text = str(value).strip()
        if text == "auto":
            return text
        if isinstance(value, bool) or not text.isdigit() or int(text) <= 0:
            raise ValueError("give a positive number of rows, or `auto`")
        return int(text)

    @field_validator("storage_options", mode="before")
    @classmethod
    def _options_from_json(cls, value: Any) -> Any:
        return _options_json(value)

    @field_validator("input")
    @classmethod
    def _input_not_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one input path, directory or glob")
        return value

    @model_validator(mode="before")
    @classmethod
    def _nest_backend_options(cls, values: Any) -> Any:
        return nest_backend_options(values) if isinstance(values, dict) else values

    @field_validator("flavor")
    @classmethod
    def _registered_flavor(cls, value: str) -> str:
        from squall.models.registry import FLAVORS

        return value if value == "auto" else _registered(FLAVORS, value)

    @field_validator("format")
    @classmethod
    def _registered_format(cls, value: str) -> str:
        from squall.formats.registry import FORMATS

        return value if value == "auto" else _registered(FORMATS, value)

    @field_validator("output_format")
    @classmethod
    def _registered_output_format(cls, value: str) -> str:
        from squall.io.part_formats import OUTPUT_FORMATS

        return _registered(OUTPUT_FORMATS, value)

    @field_validator("backend")
    @classmethod
    def _registered_backend(cls, value: str) -> str:
        from squall.backends.registry import BACKENDS

        return _registered(BACKENDS, value)

    @field_validator("backend_options", mode="before")
    @classmethod
    def _backend_options(cls, value: Any) -> Any:
        """Each backend's options, checked by that backend's options model, and kept as given."""
        from squall.backends.registry import BACKENDS

        if isinstance(value, str):
            value = _options_json(value)
        if not isinstance(value, dict):
            return value
        checked: dict[str, dict[str, Any]] = {}
        for name, options in value.items():
            kind = BACKENDS.load(_registered(BACKENDS, name))
            try:
                model = kind.Options.model_validate(_options_json(options) if isinstance(options, str) else options)
            except ValidationError as exc:
                first = exc.errors()[0]
                option = ".".join(str(part) for part in first["loc"])
                raise ValueError(f"`{name}_{option}`: {first['msg'].removeprefix('Value error, ')}") from None
            checked[name] = model.model_dump(exclude_unset=True)
        return checked

    @model_validator(mode="after")
    def _fits_together(self) -> JobSpec:
        from squall.backends.registry import BACKENDS
        from squall.io.output import OUTPUTS, output_kind

        for name, options in {self.backend: {}, **self.backend_options}.items():
            BACKENDS.load(name).Options.model_validate(options).check(self)
        OUTPUTS.load(output_kind(self.output)).location_of(self.output, self.table)
        return self

    def backend_settings(self) -> BackendOptions:
        """The chosen backend's options, as its options model reads them."""
        from squall.backends.registry import BACKENDS

        return BACKENDS.load(self.backend).Options.model_validate(self.backend_options.get(self.backend, {}))

    def resolved_state_dir(self) -> Path:
        """The state directory this job uses."""
        return default_state_dir(self.state_dir)

    def resolved_threads(self) -> int:
        """BLAS/OpenMP threads each worker may use so that workers × threads fits the cores."""
        if self.threads_per_worker:
            return self.threads_per_worker
        return self.backend_settings().threads_per_worker() or max(1, (os.cpu_count() or 1) // self.workers)

    def to_json(self) -> str:
        """The spec as JSON, the form stored with the job and sent to workers."""
        return self.model_dump_json()


def default_state_dir(explicit: str | None = None) -> Path:
    """``explicit``, else ``$SQUALL_HOME``, else ``~/.squall``."""
    return Path(explicit or os.environ.get("SQUALL_HOME") or Path.home() / ".squall").expanduser()


def field_names() -> list[str]:
    """Every spec field, in declaration order."""
    return list(JobSpec.model_fields)


@cache
def backend_option_names() -> dict[str, tuple[str, str]]:
    """Each backend option's flat name (``ray_address``) and its backend and option (``ray``, ``address``)."""
    from squall.backends.registry import BACKENDS

    names: dict[str, tuple[str, str]] = {}
    for backend in BACKENDS.names():
        for option in BACKENDS.load(backend).Options.model_fields:
            names[f"{backend.replace('-', '_')}_{option}"] = (backend, option)
    return names


def nest_backend_options(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with each flat backend option (``ray_address``: a spec file, ``--ray-address``,
    ``SQUALL_RAY_ADDRESS``, a spec stored by an older squall) moved to ``backend_options["ray"]["address"]``."""
    flat = {name: value for name, value in values.items() if name in backend_option_names()}
    if not flat:
        return dict(values)
    nested = {name: dict(options) for name, options in (values.get("backend_options") or {}).items()}
    for name, value in flat.items():
        backend, option = backend_option_names()[name]
        nested.setdefault(backend, {})[option] = value
    return {**{k: v for k, v in values.items() if k not in flat}, "backend_options": nested}


def _registered(registry: Registry[Any], name: str) -> str:
    if name not in registry.names():
        raise ValueError(registry.unknown(name))
    return name


def _options_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value) if value.strip() else {}
        except ValueError:
            raise ValueError('give a JSON object, e.g. {"anon": true}') from None
    return value


def load_spec_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (or JSON) spec file into raw field values; field names may use ``-`` or ``_``."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"cannot read spec file {path}: {exc.strerror}; check the path") from exc
    try:
        raw = json.loads(text) if path.suffix == ".json" else _toml_loads(text)
    except ValueError as exc:
        raise SpecError(f"spec file {path} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {exc}") from exc
    return _nest_backend_tables({name.replace("-", "_"): value for name, value in raw.items()})


# `[backend.NAME]` keys that set a general field rather than one of the backend's options: the pool's size.
_BACKEND_TABLE_ALIASES = {"workers": "workers", "min_workers": "workers"}


def _nest_backend_tables(values: dict[str, Any]) -> dict[str, Any]:
    """A ``[backend.NAME]`` table selects backend NAME and holds its options (``address`` of Ray...)."""
    tables = values.get("backend")
    if not isinstance(tables, dict):
        return values
    if len(tables) != 1:
        raise SpecError(f"give one [backend.NAME] table, not {len(tables)}; e.g. [backend.ray]")
    (name, table), = tables.items()
    if not isinstance(table, dict):
        raise SpecError(f"`backend.{name}` must be a table of options, e.g. [backend.{name}] address = \"auto\"")
    nested = {**values, "backend": name}
    options = dict((values.get("backend_options") or {}).get(name, {}))
    for key, value in table.items():
        key = key.replace("-", "_")
        if key in _BACKEND_TABLE_ALIASES:
            nested[_BACKEND_TABLE_ALIASES[key]] = value
        else:
            options[key] = value
    nested["backend_options"] = {**(values.get("backend_options") or {}), name: options}
    return nested


def _toml_loads(text: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib
    return tomllib.loads(text)


def dump_spec_toml(values: Mapping[str, Any]) -> str:
    """Spec field values as a TOML document that :func:`load_spec_file` reads back (unset values are left out)."""
    lines = []
    for name, value in values.items():
        if value is None:
            continue
        lines.append(f"{name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return json.dumps(str(value))  # a JSON string is a TOML basic string


def environment_values(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Spec fields set through ``SQUALL_<FIELD>`` environment variables."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name in [*field_names(), *backend_option_names()]:
        if name == "state_dir":
            continue  # SQUALL_HOME already names it
        raw = environ.get(f"SQUALL_{name.upper()}")
        if raw is not None:
            values[name] = raw
    return values


def build_spec(
    file_values: Mapping[str, Any] | None = None,
    explicit: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> JobSpec:
    """Resolve defaults < file < environment < explicit values into a validated ``JobSpec``."""
    merged: dict[str, Any] = {}
    merged.update(file_values or {})
    merged.update(environment_values(environ))
    merged.update({k: v for k, v in (explicit or {}).items() if v is not None})
    unknown = [name for name in merged if name not in JobSpec.model_fields and name not in backend_option_names()]
    if unknown:
        raise SpecError(_unknown_field_message(unknown[0]))
    try:
        return JobSpec.model_validate(merged)
    except ValidationError as exc:
        raise SpecError(_validation_message(exc)) from None


def _unknown_field_message(name: str) -> str:
    close = difflib.get_close_matches(name, [*field_names(), *backend_option_names()], n=1)
    hint = f"; did you mean `{close[0]}`?" if close else "; see docs/reference.md for the spec fields"
    return f"unknown spec field `{name}`{hint}"


def _validation_message(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "spec"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            message = f"is required (--{field.replace('_', '-')} on the command line)"
            lines.append(f"`{field}` {message}")
        elif field == "backend_options" and message.startswith("`"):
            lines.append(f"field {message}")  # named as the user wrote it: `ray_runtime_env`
        else:
            lines.append(f"field `{field}`: {message} (got {error.get('input')!r})")
    return "invalid spec: " + "; ".join(lines)


__all__ = ["JobSpec", "build_spec", "dump_spec_toml", "load_spec_file", "default_state_dir", "field_names"]
