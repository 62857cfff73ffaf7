"""Where a model runs: the CPU, or the one GPU the backend made visible to this worker."""

from __future__ import annotations

from squall.errors import ModelLoadError
from squall.models.base import ModelRef


def on_gpu(ref: ModelRef) -> bool:
    """Whether ``ref`` asks for a GPU."""
    return ref.device.startswith("cuda")


def require_cpu(ref: ModelRef, what: str) -> None:
    """Refuse a GPU placement for a model kind that only predicts on the CPU."""
    if on_gpu(ref):
        raise ModelLoadError(f"{what} predict on the CPU only; drop --gpus for this model")


def torch_device(ref: ModelRef) -> str:
    """The torch device for ``ref``, after checking that CUDA is there when it asks for a GPU."""
    if not on_gpu(ref):
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        raise ModelLoadError(
            f"--gpus asks for {ref.device} but torch sees no CUDA device (torch {torch.__version__}); "
            "run on a machine with a GPU and a CUDA build of torch, or drop --gpus"
        )
    return ref.device
