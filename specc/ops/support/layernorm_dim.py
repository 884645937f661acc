"""Helper code that specc writes into the model files that use it (read as text by specc/ops/norm.py;
the imports above the first definition are the emitted file's own)."""
import torch
from torch import nn


class LayerNormDim(nn.LayerNorm):
    """Layer norm over one dim other than the last (the channels of a [N, C, H, W] map, as in ConvNeXt)."""

    def __init__(self, features: int, dim: int, **kwargs) -> None:
        super().__init__(features, **kwargs)
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(self.dim, -1)).movedim(-1, self.dim)
