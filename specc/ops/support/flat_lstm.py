"""Helper code that specc writes into the model files that use it (read as text by specc/ops/recurrent.py;
the imports above the first definition are the emitted file's own)."""
import torch
from torch import nn


class FlatLSTM(nn.LSTM):
    """nn.LSTM (same parameters) taking (x[, h0, c0]) and returning (out, h_n, c_n) as one flat tuple."""

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None, c0: torch.Tensor | None = None):
        out, (h, c) = super().forward(x, None if h0 is None else (h0, c0))
        return out, h, c
