"""Helper code that specc writes into the model files that use it (read as text by specc/ops/posenc.py;
the imports above the first definition are the emitted file's own)."""
import torch


def apply_rope(x: torch.Tensor, base: float = 10000.0, interleaved: bool = False, cache=None) -> torch.Tensor:
    """Rotary position embedding (Su et al. 2021) of x [..., T, d]: feature pair i of position t turns by
    t * base^(-2i/d). Pairs are (i, i + d/2), or (2i, 2i + 1) when interleaved. Generating with a KVCache, x holds
    the positions from cache.start on."""
    t, d = x.size(-2), x.size(-1)
    start = 0 if cache is None else cache.start
    inv_freq = base ** -(torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    angle = torch.outer(torch.arange(start, start + t, device=x.device, dtype=torch.float32), inv_freq)  # [T, d/2]
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    if interleaved:
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
