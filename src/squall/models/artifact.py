"""A model's content, read once: its bytes or local directory, its sha256, the pin and the trust rule.

Loading a pickle runs whatever code the file holds, so a flavor that runs
code on load is refused from a remote location unless the job trusts the
model; ``model_sha256`` pins the exact content whatever its source. The
hash is taken over the very bytes that are then loaded, so a file swapped
between the check and the load cannot slip through.
"""

from __future__ import annotations

import hashlib
import os

import fsspec

from squall.errors import ModelLoadError
from squall.io.storage import is_remote
from squall.models.base import ModelArtifact, ModelRef
from squall.models.code import is_code_ref

_BLOCK = 1 << 20


def check_trust(uri: str, flavor: str, runs_code_on_load: bool, trust: bool) -> None:
    """Refuse a model whose loading runs code, from a remote location, unless the job trusts it."""
    if runs_code_on_load and is_remote(uri) and not trust:
        raise ModelLoadError(
            f"{uri}: loading a {flavor} model runs code stored in it, and this one comes from a remote location; "
            "pass --trust-model (trust_model = true) if you trust its source, and pin it with --model-sha256"
        )


def fetch(ref: ModelRef) -> ModelArtifact:
    """The content ``ref`` loads from (its ``state_dict`` when it has one), checked against ``ref.sha256``."""
    source = ref.state_dict or ref.uri
    artifact = _read(source)
    if ref.sha256:
        _verify(ref.sha256, artifact)
    return artifact


def _read(source: str) -> ModelArtifact:
    if is_code_ref(source):
        return ModelArtifact(source, _name_hash(source))
    if os.path.isdir(source):
        return ModelArtifact(source, tree_sha256(source), directory=source)
    try:
        with fsspec.open(source, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise ModelLoadError(f"{source}: no such model file; check `model`") from None
    except IsADirectoryError:
        return ModelArtifact(source, _name_hash(source), directory=source)
    except (ValueError, ImportError):  # a scheme fsspec does not know (runs:/, models:/): the flavor resolves it
        return ModelArtifact(source, _name_hash(source), directory=source)
    except Exception as exc:  # each store raises its own kinds (botocore's NoCredentialsError is none of OSError's)
        raise ModelLoadError(f"{source}: cannot read the model ({type(exc).__name__}: {exc}); check the path and credentials") from exc
    return ModelArtifact(source, hashlib.sha256(data).hexdigest(), data=data)


def tree_sha256(directory: str) -> str:
    """One hash over every file under ``directory``: relative paths and contents, in sorted order."""
    digest = hashlib.sha256()
    seen: set[str] = set()
    for root, dirs, files in os.walk(directory, followlinks=True):  # a linked weights folder is part of the model
        real = os.path.realpath(root)
        if real in seen:
            dirs.clear()  # a link back up the tree: hashed once already
            continue
        seen.add(real)
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            digest.update(os.path.relpath(path, directory).encode() + b"\0")
            digest.update(file_sha256(path).encode())
    return digest.hexdigest()


def file_sha256(uri: str) -> str:
    """The sha256 of one file, local or remote, streamed; an unreadable file is a :class:`ModelLoadError`."""
    digest = hashlib.sha256()
    try:
        with fsspec.open(uri, "rb") as handle:
            for block in iter(lambda: handle.read(_BLOCK), b""):
                digest.update(block)
    except Exception as exc:  # each store raises its own kinds (botocore's NoCredentialsError is none of OSError's)
        raise ModelLoadError(f"{uri}: cannot read the model ({type(exc).__name__}: {exc}); check the path and credentials") from exc
    return digest.hexdigest()


def _name_hash(name: str) -> str:
    return "name:" + hashlib.sha256(name.encode()).hexdigest()


def _verify(pin: str, artifact: ModelArtifact) -> None:
    if artifact.sha256.startswith("name:"):
        raise ModelLoadError(
            f"{artifact.uri}: --model-sha256 pins a file or a local directory, and this model is neither; "
            "copy it locally or drop the pin"
        )
    if pin.lower() != artifact.sha256:
        raise ModelLoadError(
            f"{artifact.uri}: its sha256 is {artifact.sha256}, but --model-sha256 pins {pin.lower()}; "
            "the model changed since it was pinned: check where it came from, then update the pin"
        )
