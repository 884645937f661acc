"""Helper code that specc writes into the model files that use it (read as text by specc/ops/param.py;
the imports above the first definition are the emitted file's own)."""
import math

import torch
from torch import nn


class SinCosTable(nn.Module):
    """The fixed [length, dim] sin/cos position table (a non-persistent buffer): frequency i = base^(-2i/dim);
    interleaved (sin, cos pairs, Vaswani et al.) or halves (all sines, then all cosines)."""

    def __init__(self, length: int, dim: int, layout: str = "interleaved", base: float = 10000.0) -> None:
        super().__init__()
        t = torch.arange(length, dtype=torch.float32).unsqueeze(1)
        angle = t * torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(base) / dim))
        if layout == "halves":
            table = torch.cat([angle.sin(), angle.cos()], dim=1)
        else:
            table = torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(1)
        self.register_buffer("table", table, persistent=False)

    def forward(self) -> torch.Tensor:
        return self.table
