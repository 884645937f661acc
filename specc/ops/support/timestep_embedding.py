"""Helper code that specc writes into the model files that use it (read as text by specc/ops/timestep.py;
the imports above the first definition are the emitted file's own)."""
import math

import torch


def timestep_embedding(t: torch.Tensor, dim: int, flip_sin_to_cos: bool = False, freq_shift: float = 1.0,
                       base: float = 10000.0) -> torch.Tensor:
    """[B] diffusion steps -> [B, dim]: sin and cos of t * base^(-i / (dim/2 - freq_shift)) (DDPM, diffusers)."""
    half = dim // 2
    exponent = -math.log(base) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - freq_shift)
    angle = t.float()[:, None] * torch.exp(exponent)[None, :]
    parts = (angle.cos(), angle.sin()) if flip_sin_to_cos else (angle.sin(), angle.cos())
    return torch.cat(parts, dim=-1)
