"""Helper code that specc writes into the model files that use it (read as text by specc/ops/activation.py;
the imports above the first definition are the emitted file's own)."""
import torch
from torch import nn


class DropPath(nn.Module):
    """Stochastic depth: in training, zero each sample's whole input with probability p and scale the kept ones
    by 1 / (1 - p) (timm's drop_path); the identity in eval."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep
