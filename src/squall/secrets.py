"""Secrets: never stored, never served, given back to a job from memory, the user or the environment.

What counts as a secret
-----------------------
- In an option mapping (``storage_options``, ``backend_options`` such as Ray's ``runtime_env``, at any depth,
  e.g. ``client_kwargs``), the value of a key that names a credential:
  ``key``, ``secret``, ``token``, ``password``, and any name holding
  ``secret``, ``password``, ``token``, ``credential``, ``access_key``,
  ``account_key``, ``private_key``, ``api_key`` or ``signature``.
- In a URL anywhere (a database URL, an endpoint, a message quoting one), the
  password of its userinfo (``postgresql://alice:PW@host/db``) and the value
  of a query parameter so named (``?password=``, ``?sig=``,
  ``X-Amz-Signature``).

Each is replaced by :data:`MARK` (``***``) in everything squall stores or
serves: the job store, the service's queue, the triggers' record, the
manifest and the job log, hence every HTTP answer. A user name stays: it
says whose credentials ran the job without being one.

Giving them back
----------------
A process keeps the URL passwords it was given in memory (:func:`remember`),
and hands tasks and chunks to its workers in memory (a pipe, an actor call),
never through the store. A process that meets a stored job again (``squall
resume``, ``redrive``, ``replay``, a restarted service) finds only marks:
:func:`restore` gives each back from what the user supplies again
(``--storage-options``), from memory, or leaves it to the storage client,
which reads its own environment (``AWS_*`` for S3; ``PGPASSWORD`` or
``~/.pgpass`` for PostgreSQL, read by libpq); when none of these has it,
:class:`SecretsMissing` names each one before any work starts.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any, Mapping

from squall.errors import SecretsMissing

MARK = "***"
OPTION_FIELDS = frozenset({"storage_options", "backend_options", "ray_runtime_env"})
"""Spec and task fields whose mappings hold credentials by key name."""

_URL_FIELDS = ("input", "output", "endpoint_url", "model", "state_dict")
_SECRET_NAMES = frozenset({"key", "secret", "token", "password", "passwd", "pwd", "sig"})
_SECRET_PARTS = ("secret", "password", "passwd", "token", "credential", "access_key", "account_key", "private_key",
                 "api_key", "apikey", "signature")
_PUBLIC_VALUES = frozenset({"anon", "google_default", "cloud", "cache", "browser"})  # gcsfs `token` modes, not secrets
_URL = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*)://"
    r"(?:(?P<user>[^:/?#@\s\"'<>]*)(?::(?P<password>[^@/?#\s\"'<>]*))?@)?"
    r"(?P<host>[^/?#\s\"'<>@]*)(?P<rest>[^\s\"'<>]*)"
)
_PARAM = re.compile(r"(?P<head>[?&;](?P<name>[A-Za-z0-9_.-]+)=)(?P<value>[^&#\s\"'<>]*)")
# The AWS variables each S3 option falls back to when it is not given (botocore reads them).
_AWS_FALLBACK = {
    "key": "AWS_ACCESS_KEY_ID", "aws_access_key_id": "AWS_ACCESS_KEY_ID",
    "secret": "AWS_SECRET_ACCESS_KEY", "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "token": "AWS_SESSION_TOKEN", "session_token": "AWS_SESSION_TOKEN", "aws_session_token": "AWS_SESSION_TOKEN",
}

_remembered: dict[tuple[str, ...], str] = {}
_lock = threading.Lock()


def is_secret_name(name: str) -> bool:
    """Whether an option or query parameter called ``name`` holds a credential."""
    lowered = name.lower().replace("-", "_")
    return lowered in _SECRET_NAMES or any(part in lowered for part in _SECRET_PARTS)


def redact_url(text: str) -> str:
    """``text`` with the password and credential parameters of every URL in it replaced by :data:`MARK`."""
    if not _may_hold_url_secret(text):
        return text
    return _URL.sub(_redacted_match, text)


def redact(value: Any) -> Any:
    """JSON-like ``value`` (a spec, a task, a manifest) with every secret replaced by :data:`MARK`."""
    return _redact(value, in_options=False)


def redact_json(text: str) -> str:
    """A JSON document with every secret replaced by :data:`MARK` (unchanged when it has none)."""
    # Most documents (a chunk descriptor, a report) hold none: a million chunks are stored without parsing one.
    if not _may_hold_url_secret(text) and not any(field in text for field in OPTION_FIELDS):
        return text
    try:
        return json.dumps(redact(json.loads(text)))
    except ValueError:  # not JSON after all: its URLs are still redacted
        return redact_url(text)


def remember(value: Any) -> None:
    """Keep in this process's memory the URL passwords in ``value`` (a spec's fields), for :func:`reveal_url`."""
    for text in _strings(value):
        for match in _URL.finditer(text):
            if match["password"] and match["password"] != MARK:
                _keep(_password_place(match), match["password"])
            for param in _PARAM.finditer(match["rest"]):
                if is_secret_name(param["name"]) and param["value"] not in ("", MARK):
                    _keep(_param_place(match, param["name"]), param["value"])


def reveal_url(text: str) -> str:
    """``text`` with each marked URL password or parameter given back from memory, where this process has it."""
    if MARK not in text:
        return text
    return _URL.sub(_revealed_match, text)


def for_connection(url: str) -> str:
    """The URL a driver connects with: marks given back from memory; marks nobody gave back are dropped, so that
    the driver looks for the credential itself (libpq: ``PGPASSWORD``, ``~/.pgpass``)."""
    revealed = reveal_url(url)
    if MARK not in revealed:
        return revealed
    return _URL.sub(_unmarked_match, revealed)


def restore(
    spec: Mapping[str, Any], supplied: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None,
    whose: str = "the job",
) -> dict[str, Any]:
    """A stored spec's fields with each :data:`MARK` given back, or left to the storage client's own environment.

    ``supplied`` are storage options given again by the user (``endpoint_url``
    among them sets that field); they win over the stored ones. Raises
    :class:`SecretsMissing`, naming every secret not found, before any work.
    """
    environ = os.environ if environ is None else environ
    values = dict(spec)
    again = dict(supplied or {})
    if "endpoint_url" in again:
        values["endpoint_url"] = again.pop("endpoint_url")
    missing: list[str] = []
    options = _merged(values.get("storage_options") or {}, again)
    values["storage_options"] = _restored_options(options, "storage_options", environ, missing)
    if "ray_runtime_env" in values:  # a spec stored before backend options were nested
        values["ray_runtime_env"] = _restored_runtime_env(values["ray_runtime_env"] or {}, "ray_runtime_env", environ, missing)
    values["backend_options"] = {
        name: {**options, **({"runtime_env": _restored_runtime_env(options["runtime_env"], f"backend_options.{name}.runtime_env",
                                                                   environ, missing)} if "runtime_env" in options else {})}
        for name, options in (values.get("backend_options") or {}).items()
    }
    for field in _URL_FIELDS:
        if isinstance(values.get(field), str):
            values[field] = _restored_url(field, values[field], environ, missing)
        elif isinstance(values.get(field), list):
            values[field] = [_restored_url(field, item, environ, missing) for item in values[field]]
    if missing:
        raise SecretsMissing(
            f"{whose} needs secrets that squall does not store, and these cannot be found: {'; '.join(missing)}. "
            "Give storage options again with --storage-options JSON (resume, redrive, replay), or set them in the environment"
        )
    return values


def refill(stored: Mapping[str, Any], reference: Mapping[str, Any]) -> dict[str, Any]:
    """A stored spec's marked options filled from ``reference`` (the template it was made from), whose URL
    passwords are remembered as well; what ``reference`` does not hold stays marked for :func:`restore`."""
    remember(reference)
    values = dict(stored)
    for field in OPTION_FIELDS:
        given = reference.get(field)
        if isinstance(given, str):  # as a template may spell it: JSON text
            given = json.loads(given) if given.strip() else {}
        if isinstance(values.get(field), dict) and isinstance(given, Mapping):
            values[field] = _filled(values[field], given)
    return values


# --- redaction --------------------------------------------------------------------------------


def _may_hold_url_secret(text: str) -> bool:
    """Whether ``text`` may hold a URL with a password (``…://u:p@…``) or a query parameter (``?…=``)."""
    return "://" in text and ("@" in text or ("=" in text and ("?" in text or "&" in text or ";" in text)))


def _redact(value: Any, in_options: bool) -> Any:
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, Mapping):
        redacted: dict[Any, Any] = {}
        for name, item in value.items():
            key = redact_url(name) if isinstance(name, str) else name
            if in_options and isinstance(name, str) and is_secret_name(name) and _holds_secret(item):
                redacted[key] = MARK
            else:
                redacted[key] = _redact(item, in_options or name in OPTION_FIELDS)
        return redacted
    if isinstance(value, (list, tuple)):
        return [_redact(item, in_options) for item in value]
    return value


def _holds_secret(value: Any) -> bool:
    if value is None or isinstance(value, bool) or value == "":
        return False
    return not (isinstance(value, str) and value in _PUBLIC_VALUES)


def _redacted_match(match: re.Match[str]) -> str:
    password = MARK if match["password"] else match["password"]
    return _url(match, password, _PARAM.sub(_redacted_param, match["rest"]))


def _redacted_param(param: re.Match[str]) -> str:
    if is_secret_name(param["name"]) and param["value"]:
        return param["head"] + MARK
    return param[0]


def _url(match: re.Match[str], password: str | None, rest: str) -> str:
    userinfo = ""
    if match["user"] is not None:
        userinfo = match["user"] + (f":{password}" if password is not None else "") + "@"
    return f"{match['scheme']}://{userinfo}{match['host']}{rest}"


# --- memory ----------------------------------------------------------------------------------


def _keep(place: tuple[str, ...], secret: str) -> None:
    with _lock:
        _remembered[place] = secret


def _password_place(match: re.Match[str]) -> tuple[str, ...]:
    return ("password", match["scheme"].lower(), match["user"] or "", match["host"].lower())


def _param_place(match: re.Match[str], name: str) -> tuple[str, ...]:
    return ("param", match["scheme"].lower(), match["host"].lower(), name.lower())


def _revealed_match(match: re.Match[str]) -> str:
    password = match["password"]
    if password == MARK:
        password = _remembered.get(_password_place(match), MARK)

    def revealed_param(param: re.Match[str]) -> str:
        if param["value"] != MARK:
            return param[0]
        return param["head"] + _remembered.get(_param_place(match, param["name"]), MARK)

    return _url(match, password, _PARAM.sub(revealed_param, match["rest"]))


def _unmarked_match(match: re.Match[str]) -> str:
    password = None if match["password"] == MARK else match["password"]
    path, question, query = match["rest"].partition("?")
    if not question:
        return _url(match, password, path)
    query, hash_sign, fragment = query.partition("#")
    kept = [param for param in query.split("&") if param.partition("=")[2] != MARK]
    return _url(match, password, path + ("?" + "&".join(kept) if kept else "") + hash_sign + fragment)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [text for item in value.values() for text in _strings(item)]
    if isinstance(value, (list, tuple)):
        return [text for item in value for text in _strings(item)]
    return []


# --- giving back ------------------------------------------------------------------------------


def _merged(stored: Mapping[str, Any], again: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(stored)
    for name, value in again.items():
        if isinstance(value, Mapping) and isinstance(merged.get(name), Mapping):
            merged[name] = _merged(merged[name], value)
        else:
            merged[name] = value
    return merged


def _filled(stored: Mapping[str, Any], reference: Mapping[str, Any]) -> dict[str, Any]:
    filled = dict(stored)
    for name, value in stored.items():
        if value == MARK and name in reference:
            filled[name] = reference[name]
        elif isinstance(value, Mapping) and isinstance(reference.get(name), Mapping):
            filled[name] = _filled(value, reference[name])
    return filled


def _restored_options(options: Mapping[str, Any], path: str, environ: Mapping[str, str], missing: list[str]) -> dict[str, Any]:
    """Marks left in storage options: dropped when the client finds the value in its environment, else missing."""
    restored: dict[str, Any] = {}
    for name, value in options.items():
        if isinstance(value, Mapping):
            restored[name] = _restored_options(value, f"{path}.{name}", environ, missing)
        elif value != MARK:
            restored[name] = value
        else:
            variable = _AWS_FALLBACK.get(name.lower())
            if variable is None or not (environ.get(variable) or environ.get("AWS_PROFILE")):
                missing.append(f"`{path}.{name}`" + (f" (or set {variable})" if variable else ""))
    return restored


def _restored_runtime_env(
    runtime_env: Mapping[str, Any], path: str, environ: Mapping[str, str], missing: list[str]
) -> dict[str, Any]:
    """A Ray worker's marked environment variable is given back from this process's variable of that name."""
    restored = dict(runtime_env)
    variables = dict(runtime_env.get("env_vars") or {})
    for name, value in variables.items():
        if value == MARK:
            if environ.get(name):
                variables[name] = environ[name]
            else:
                missing.append(f"`{path}.env_vars.{name}` (set {name})")
    if variables:
        restored["env_vars"] = variables
    for name, value in runtime_env.items():
        if name != "env_vars" and MARK in json.dumps(value):
            missing.append(f"`{path}.{name}` (it cannot be given again; start a new job)")
    return restored


def _restored_url(field: str, url: str, environ: Mapping[str, str], missing: list[str]) -> str:
    revealed = reveal_url(url)
    if MARK not in revealed:
        return revealed
    if revealed.lower().startswith("postgres"):
        if environ.get("PGPASSWORD") or _pgpass(environ).is_file():
            return revealed  # libpq reads them when it connects; see for_connection
        missing.append(f"the password in `{field}` {revealed} (set PGPASSWORD or add it to ~/.pgpass)")
    elif field == "endpoint_url":
        missing.append(f"the password in `endpoint_url` {revealed} (give it again as \"endpoint_url\" in --storage-options)")
    else:
        missing.append(f"the credentials in `{field}` {revealed} (they cannot be given again; start a new job)")
    return revealed


def _pgpass(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("PGPASSFILE") or Path.home() / ".pgpass").expanduser()
