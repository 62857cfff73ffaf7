"""ONNX models run by ONNX Runtime.

A graph with one input takes the feature matrix (rows × features, cast to
the input's element type). A graph with several inputs takes one feature
column per input, matched by name. Which output is written: ``output`` when
the job names one, else the one ``method`` implies (``predict`` the first,
``predict_proba`` the one whose name says probabilities, else the second).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from squall.errors import BatchShapeError, ModelLoadError
from squall.models.base import ModelArtifact, ModelRef
from squall.models.device import on_gpu
from squall.models.matrix import as_matrix
from squall.models.requirement import require

_ELEMENT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint64)": np.uint64,
    "tensor(uint32)": np.uint32,
    "tensor(uint16)": np.uint16,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}


@dataclass(frozen=True)
class _Input:
    name: str
    dtype: Any
    rank: int
    width: int | None


class OnnxModel:
    """An ``InferenceSession`` fed from Arrow batches."""

    labels = None
    batch_format = "arrow"
    vector_output = False

    def __init__(self, session: Any, output: str, uri: str) -> None:
        self._session = session
        self._output = output
        self._uri = uri
        self._inputs = [_describe(node) for node in session.get_inputs()]

    def call(self, batch: Any) -> Any:
        feeds = self._feeds(batch)
        (values,) = self._session.run([self._output], feeds)
        if isinstance(values, list):
            raise BatchShapeError(
                f"output {self._output!r} is a sequence of maps (a ZipMap); export the model without ZipMap "
                "(skl2onnx: options={'zipmap': False}) or pick another output with `model_output`"
            )
        return values

    def _feeds(self, batch: Any) -> dict[str, np.ndarray]:
        if len(self._inputs) == 1:
            node = self._inputs[0]
            matrix = as_matrix(batch, node.dtype)
            width = 1 if node.rank == 1 else node.width
            if width is not None and matrix.shape[1] != width:
                raise BatchShapeError(
                    f"{self._uri}: input {node.name!r} takes {width} features but the job gives {matrix.shape[1]}; "
                    "set `features` to the model's columns, in order"
                )
            return {node.name: matrix if node.rank != 1 else matrix[:, 0]}
        return {node.name: _named_column(batch, node) for node in self._inputs}


class OnnxFlavor:
    """``.onnx`` files."""

    name = "onnx"
    runs_code_on_load = False

    def load(self, ref: ModelRef, artifact: ModelArtifact) -> OnnxModel:
        ort = require("onnxruntime", "onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = ref.threads
        options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(artifact.content(), sess_options=options, providers=_providers(ort, ref))
        except Exception as exc:
            raise ModelLoadError(f"{ref.uri}: ONNX Runtime cannot load this model ({type(exc).__name__}: {exc})") from exc
        return OnnxModel(session, _pick_output(session, ref), ref.uri)


def _providers(ort: Any, ref: ModelRef) -> list[Any]:
    if not on_gpu(ref):
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise ModelLoadError(
            "--gpus asks for a GPU but this onnxruntime has no CUDAExecutionProvider; "
            "install onnxruntime-gpu, or drop --gpus"
        )
    return [("CUDAExecutionProvider", {"device_id": int(ref.device.partition(":")[2] or 0)}), "CPUExecutionProvider"]


def _pick_output(session: Any, ref: ModelRef) -> str:
    names = [node.name for node in session.get_outputs()]
    if ref.output:
        if ref.output not in names:
            raise ModelLoadError(f"{ref.uri}: no output named {ref.output!r}; the model's outputs are {names}")
        return ref.output
    if ref.method == "predict_proba":
        chosen = next((n for n in names if "prob" in n.lower()), names[1] if len(names) > 1 else None)
        if chosen is None:
            raise ModelLoadError(f"{ref.uri}: one output only ({names[0]!r}); use `method` = predict")
        return chosen
    return names[0]


def _describe(node: Any) -> _Input:
    dtype = _ELEMENT_TYPES.get(node.type)
    if dtype is None:
        raise ModelLoadError(f"input {node.name!r} has type {node.type}, which squall cannot feed; cast it in the graph")
    shape = list(node.shape or [])
    width = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None
    return _Input(node.name, dtype, len(shape), width)


def _named_column(batch: Any, node: _Input) -> np.ndarray:
    try:
        column = batch[node.name] if not hasattr(batch, "column") else batch.column(node.name)
    except (KeyError, IndexError):
        raise BatchShapeError(f"the model has an input {node.name!r} but the batch has no such feature column") from None
    values = as_matrix({node.name: column.to_numpy(zero_copy_only=False) if hasattr(column, "type") else column}, node.dtype)
    return values if node.rank == 2 else values[:, 0]
