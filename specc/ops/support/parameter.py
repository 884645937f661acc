"""Helper code that specc writes into the model files that use it (read as text by specc/ops/param.py;
the imports above the first definition are the emitted file's own)."""
import math

import torch
from torch import nn


class LearnedTensor(nn.Module):
    """A free-standing tensor of the spec (a layer scale, a learned query, a position table): a parameter (frozen:
    without gradient), or a buffer. Calling the module gives the tensor."""

    def __init__(self, shape: tuple, init: str = "normal", std: float = 0.02, value: float = 0.0,
                 layout: str = "interleaved", trainable: bool = True, buffer: bool = False,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        t = torch.empty(shape, dtype=dtype)
        if init == "sincos":  # [length, dim]: sin/cos of t * 10000^(-2i/dim), interleaved or as two halves
            pos = torch.arange(shape[0], dtype=torch.float32).unsqueeze(1)
            angle = pos * torch.exp(torch.arange(0, shape[1], 2, dtype=torch.float32) * (-math.log(10000.0) / shape[1]))
            if layout == "halves":
                t.copy_(torch.cat([angle.sin(), angle.cos()], dim=1))
            else:
                t.copy_(torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(1))
        elif init == "normal":
            nn.init.normal_(t, std=std)
        elif init == "trunc_normal":
            nn.init.trunc_normal_(t, std=std, a=-2 * std, b=2 * std)
        elif init == "uniform":
            nn.init.uniform_(t, -std, std)
        else:
            nn.init.constant_(t, {"zeros": 0.0, "ones": 1.0}.get(init, value))
        if buffer:
            self.register_buffer("weight", t)
        else:
            self.weight = nn.Parameter(t, requires_grad=trainable)

    def forward(self) -> torch.Tensor:
        return self.weight
