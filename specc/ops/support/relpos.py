"""Helper code that specc writes into the model files that use it (read as text by specc/ops/relpos.py;
the imports above the first definition are the emitted file's own)."""
import math

import torch
from torch import nn


class RelativePositionBias(nn.Module):
    """T5 relative position bias: weight[bucket(key - query), head] as a [1, heads, T, T] score bias; causal: only
    past offsets are bucketed and future keys get -inf (Raffel et al. 2020; Hugging Face T5's bucketing)."""

    def __init__(self, heads: int, num_buckets: int = 32, max_distance: int = 128, causal: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_buckets, heads))
        nn.init.normal_(self.weight, std=0.02)
        self.num_buckets, self.max_distance, self.causal = num_buckets, max_distance, causal

    def bucket(self, offset: torch.Tensor) -> torch.Tensor:
        buckets, out = self.num_buckets, torch.zeros_like(offset)
        if self.causal:
            dist = (-offset).clamp(min=0)
        else:
            buckets //= 2
            out = out + (offset > 0).long() * buckets
            dist = offset.abs()
        exact = buckets // 2
        far = exact + (torch.log(dist.float().clamp(min=1) / exact) / math.log(self.max_distance / exact)
                       * (buckets - exact)).long()
        return out + torch.where(dist < exact, dist, far.clamp(max=buckets - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(x.size(-2), device=x.device)
        offset = pos[None, :] - pos[:, None]  # [T, T]: key position - query position
        bias = self.weight[self.bucket(offset)].permute(2, 0, 1).unsqueeze(0).to(x.dtype)  # [1, heads, T, T]
        if self.causal:
            bias = bias.masked_fill(offset > 0, float("-inf"))
        return bias
