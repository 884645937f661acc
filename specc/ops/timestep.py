"""Diffusion timestep embedding: t [B] (integer or float steps) -> [B, dim] sinusoids, as DDPM (Ho et al. 2020) and
diffusers' `get_timestep_embedding`: frequency i = base^(-i / (dim/2 - freq_shift)), sines then cosines (or cosines
first with flip_sin_to_cos)."""
from __future__ import annotations

from pydantic import PositiveFloat, PositiveInt

from ..diagnostics import ShapeError
from ..types import INT_DTYPES, TensorType
from .registry import Attrs, Example, OpDef, expect_rank, register
from .torch_rule import TorchRule, kwargs, support_text


class TimestepAttrs(Attrs):
    dim: PositiveInt
    flip_sin_to_cos: bool = False
    freq_shift: float = 1.0
    base: PositiveFloat = 10000.0


def _infer(ins: list[TensorType], a: TimestepAttrs) -> TensorType:
    (t,) = ins
    expect_rank(t, (1,), "timestep_embedding")
    if a.dim % 2 or a.dim // 2 == a.freq_shift:
        raise ShapeError(f"timestep_embedding needs an even dim with dim/2 != freq_shift, got dim={a.dim}", "E0305")
    dtype = "f32" if t.dtype in INT_DTYPES else t.dtype
    return TensorType(dtype, (t.shape[0], a.dim))


def frequencies(a: TimestepAttrs):
    import math

    import numpy as np

    half = a.dim // 2
    return np.exp(-math.log(a.base) * np.arange(half, dtype=np.float32) / np.float32(half - a.freq_shift))


def _numpy(xs, a: TimestepAttrs, params):
    import numpy as np

    angle = xs[0].astype(np.float32)[:, None] * frequencies(a)[None, :]
    parts = [np.cos(angle), np.sin(angle)] if a.flip_sin_to_cos else [np.sin(angle), np.cos(angle)]
    return np.concatenate(parts, axis=1).astype(np.float32)


_SUPPORT = support_text("timestep_embedding")


def _call(args, a: TimestepAttrs, ins) -> str:
    extra = ", flip_sin_to_cos=True" if a.flip_sin_to_cos else ""
    extra += kwargs(a, ["freq_shift", "base"], {"freq_shift": 1.0, "base": 10000.0})
    return f"timestep_embedding({args[0]}, {a.dim}{extra})"


register(OpDef(
    name="timestep_embedding", attrs=TimestepAttrs, positional=("dim",), infer=_infer,
    torch=TorchRule(call=_call, imports=("import math",), support=(_SUPPORT,)), numpy=_numpy,
    examples=(Example(("i64[3]",), {"dim": 8}), Example(("f32[2]",), {"dim": 6, "flip_sin_to_cos": True,
                                                                       "freq_shift": 0.0})),
    waive={"macs": "a handful of sines and cosines per sample"},
    doc="diffusion timestep t [B] -> [B, dim] sinusoidal embedding (DDPM / diffusers layout).",
))
