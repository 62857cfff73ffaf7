"""PyTorch models: TorchScript files, or ``module:Class`` nn.Modules with their weights in a state dict.

A state dict is loaded with ``weights_only=True``, so it cannot run code; a
TorchScript archive holds TorchScript, not pickled Python. Batches become one
tensor (one copy from Arrow's columns, none more), predictions run under
``torch.inference_mode()`` on the worker's device. ``predict`` writes the
module's output; ``predict_proba`` its softmax over the last dimension. A
module returning a tuple writes one column per element; a dict, one per key.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np

from squall.errors import ModelLoadError
from squall.models.base import ModelArtifact, ModelRef
from squall.models.code import is_code_ref, resolve
from squall.models.device import torch_device
from squall.models.matrix import as_matrix
from squall.models.requirement import require


class TorchModel:
    """A module in eval mode on one device."""

    labels = None
    batch_format = "arrow"
    vector_output = False

    def __init__(self, module: Any, device: str, method: str) -> None:
        import torch

        self._torch = torch
        self._module = module
        self._device = torch.device(device)
        self._softmax = method == "predict_proba"
        self._dtype = _input_dtype(module, torch)

    def call(self, batch: Any) -> Any:
        torch = self._torch
        # NumPy has no bfloat16: such modules get float32 rows, cast on the device.
        numpy_dtype = np.float32 if self._dtype == torch.bfloat16 else torch.empty((), dtype=self._dtype).numpy().dtype
        matrix = as_matrix(batch, numpy_dtype)
        with torch.inference_mode():
            inputs = torch.from_numpy(matrix).to(self._device, dtype=self._dtype, non_blocking=True)
            return _to_numpy(self._module(inputs), self._softmax, torch)


class TorchFlavor:
    """TorchScript files (``.pt``, ``.torchscript``) and ``module:Class`` with ``state_dict``."""

    name = "torch"
    runs_code_on_load = False

    def load(self, ref: ModelRef, artifact: ModelArtifact) -> TorchModel:
        torch = require("torch", "torch")
        torch.set_num_threads(ref.threads)
        # Arrow's zero-copy views are read-only; the module only reads its input, so torch's warning is noise.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        device = torch_device(ref)
        module = _module_from_code(ref, artifact, device, torch) if is_code_ref(ref.uri) else _script(ref, artifact, device, torch)
        module.eval()
        return TorchModel(module.to(device), device, ref.method)


def _script(ref: ModelRef, artifact: ModelArtifact, device: str, torch: Any) -> Any:
    try:
        return torch.jit.load(io.BytesIO(artifact.content()), map_location=device)
    except RuntimeError as exc:
        raise ModelLoadError(
            f"{ref.uri}: not a TorchScript archive ({str(exc).splitlines()[0]}); save it with torch.jit.script(model).save(path), "
            "or give `model = 'package.module:Class'` and this file as `state_dict`"
        ) from exc


def _module_from_code(ref: ModelRef, artifact: ModelArtifact, device: str, torch: Any) -> Any:
    target = resolve(ref.uri, "model")
    try:
        module = target if isinstance(target, torch.nn.Module) else target()
    except Exception as exc:
        raise ModelLoadError(f"constructing {ref.uri}() failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(module, torch.nn.Module):
        raise ModelLoadError(f"{ref.uri} gave a {type(module).__name__}, not a torch.nn.Module; use the `callable` flavor")
    if ref.state_dict:
        module.load_state_dict(_weights(ref, artifact, device, torch))
    return module


def _weights(ref: ModelRef, artifact: ModelArtifact, device: str, torch: Any) -> Any:
    try:
        return torch.load(io.BytesIO(artifact.content()), map_location=device, weights_only=True)
    except Exception as exc:
        raise ModelLoadError(
            f"{ref.state_dict}: not a state dict of tensors ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
            "save it with torch.save(model.state_dict(), path)"
        ) from exc


def _input_dtype(module: Any, torch: Any) -> Any:
    for parameter in module.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32


def _to_numpy(output: Any, softmax: bool, torch: Any) -> Any:
    if isinstance(output, (tuple, list)):
        return tuple(_to_numpy(item, softmax, torch) for item in output)
    if isinstance(output, dict):
        return {name: _to_numpy(item, softmax, torch) for name, item in output.items()}
    if softmax:
        output = torch.softmax(output, dim=-1)
    return output.detach().float().cpu().numpy() if output.dtype in (torch.float16, torch.bfloat16) else output.detach().cpu().numpy()
