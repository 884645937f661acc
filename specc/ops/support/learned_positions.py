"""Helper code that specc writes into the model files that use it (read as text by specc/ops/posenc.py;
the imports above the first definition are the emitted file's own)."""
import torch
from torch import nn


class LearnedPositions(nn.Module):
    """x + the first T rows of a learned [max_len, d] table (GPT-2 wpe, BERT position embeddings, ViT)."""

    def __init__(self, max_len: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_len, dim))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor, cache=None) -> torch.Tensor:
        if cache is None:
            return x + self.weight[: x.size(-2)]
        # generating with a KVCache: x holds the positions from cache.start on
        start, end = cache.start, cache.start + x.size(-2)
        if end > self.weight.size(0):
            raise ValueError(f"positions {start}..{end - 1} do not fit the table of {self.weight.size(0)} positions")
        return x + self.weight[start:end]
