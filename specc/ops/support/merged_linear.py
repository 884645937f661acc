"""Helper code that specc writes into the model files that use it (read as text by specc/ops/fused.py;
the imports above the first definition are the emitted file's own)."""
import torch
import torch.nn.functional as F
from torch import nn

from .derived import derived


def merged_linear(x: torch.Tensor, *layers: nn.Linear) -> tuple[torch.Tensor, ...]:
    """Several nn.Linear of the same input as one matmul on their concatenated weights, split back per layer.
    -O2 only: the layers' own forward (and any hook or adapter on them) is not called; -O1 (the default) calls each."""
    def cat():
        bias = None if layers[0].bias is None else torch.cat([m.bias for m in layers])
        return torch.cat([m.weight for m in layers]), bias

    sources = [t for m in layers for t in (m.weight, m.bias)]
    weight, bias = derived(layers[0], "merged", cat, *sources)
    return F.linear(x, weight, bias).split([m.out_features for m in layers], dim=-1)
