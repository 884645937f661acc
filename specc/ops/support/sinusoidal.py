"""Helper code that specc writes into the model files that use it (read as text by specc/ops/posenc.py;
the imports above the first definition are the emitted file's own)."""
import math

import torch
from torch import nn


class SinusoidalPositions(nn.Module):
    """x + the fixed table PE[t, 2i] = sin(t / base^(2i/d)), PE[t, 2i+1] = cos(...) (Vaswani et al. 2017)."""

    def __init__(self, max_len: int, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        t = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
        inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(base) / dim))
        pe = torch.zeros(max_len, dim)
        pe[:, 0::2] = torch.sin(t * inv_freq)
        pe[:, 1::2] = torch.cos(t * inv_freq)
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, x: torch.Tensor, cache=None) -> torch.Tensor:
        if cache is None:
            return x + self.pe[: x.size(-2)].to(x.dtype)
        # generating with a KVCache: x holds the positions from cache.start on
        start, end = cache.start, cache.start + x.size(-2)
        if end > self.pe.size(0):
            raise ValueError(f"positions {start}..{end - 1} do not fit the table of {self.pe.size(0)} positions")
        return x + self.pe[start:end].to(x.dtype)
