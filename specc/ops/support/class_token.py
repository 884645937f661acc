"""Helper code that specc writes into the model files that use it (read as text by specc/ops/embedding_ops.py;
the imports above the first definition are the emitted file's own)."""
import torch
from torch import nn


class ClassToken(nn.Module):
    """Prepends one learned [d] vector to every sequence: [B, N, d] -> [B, N + 1, d] (ViT's class token)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.weight.expand(x.size(0), -1, -1), x), dim=1)
