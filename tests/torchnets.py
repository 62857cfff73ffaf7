"""PyTorch modules that tests load as `torchnets:Class` with a state dict (workers import this file)."""

from __future__ import annotations

import torch
from torch import nn


class TinyNet(nn.Module):
    """Six features in, three scores out."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class TwoHeads(nn.Module):
    """Six features in; a score and a four-number embedding out, as a tuple."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(6, 4)
        self.score = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = torch.tanh(self.body(x))
        return self.score(embedding).squeeze(-1), embedding
