"""Position encodings over [..., T, d] sequences: learned and sinusoidal tables (added to x), rotary (applied to q, k).

The table ops check the sequence length statically: T must be a number or a symbol bounded in the model
(`input ids: i64[B, T] where T <= ctx`), and the bound may not exceed the table (GPT-2's 1024 positions)."""
from __future__ import annotations

from pydantic import PositiveFloat, PositiveInt

from ..diagnostics import ShapeError
from ..symbolic import Dim
from ..types import TensorType
from .context import bound_hint, bounds, upper_bound
from .registry import LAYER, NO_MACS, Attrs, Example, OpDef, expect_float, register
from .torch_rule import TorchRule, kwargs, support_text


def _sequence(ins: list[TensorType], what: str) -> TensorType:
    (x,) = ins
    expect_float(x, what)
    if x.rank < 2 or not isinstance(x.shape[-1], int):
        raise ShapeError(f"{what} expects [..., T, d] with a static d, got {x}", "E0303")
    return x


def check_length(t: Dim, max_len: int, table: str) -> None:
    if isinstance(t, int):
        if t > max_len:
            raise ShapeError(f"sequence length {t} exceeds the {table} ({max_len} positions)", "E0304", 0)
        return
    if bounds() is None:  # e.g. the verifier re-inferring types: lengths were checked when elaborated
        return
    bound, notes = upper_bound(t)
    if bound is None:
        raise ShapeError(f"cannot check sequence length {t} against the {table} ({max_len} positions): "
                         + bound_hint(t, max_len), "E0304", 0)
    if bound > max_len:
        raise ShapeError(f"the {table} has {max_len} positions, but sequence length {t} can be up to {bound}",
                         "E0304", 0, notes=notes)


# ---- learned: x + table[:T] ---------------------------------------------------------------------------------

class LearnedPosAttrs(Attrs):
    max_len: PositiveInt


def _learned_infer(ins: list[TensorType], a: LearnedPosAttrs) -> TensorType:
    x = _sequence(ins, "learned_pos")
    check_length(x.shape[-2], a.max_len, "learned position table")
    return x


_LEARNED = support_text("learned_positions")

register(OpDef(
    name="learned_pos", attrs=LearnedPosAttrs, positional=("max_len",), infer=_learned_infer,
    params=lambda ins, a: {"weight": (a.max_len, ins[0].shape[-1])},
    categories=frozenset({LAYER}),
    torch=TorchRule(module=lambda ins, a: f"LearnedPositions({a.max_len}, {ins[0].shape[-1]})", support=(_LEARNED,),
                    positions=True),
    doc="x[..., T, d] + a learned [max_len, d] position table's first T rows; checks T <= max_len.",
    numpy=lambda xs, a, p: xs[0] + p["weight"][: xs[0].shape[-2]], waive={"macs": NO_MACS},
    examples=(Example(("f32[2, 3, 4]",), {"max_len": 5}), Example(("f32[5, 2]",), {"max_len": 5})),
))


# ---- sinusoidal: x + fixed table[:T] (a buffer) ---------------------------------------------------------------

class SinusoidalAttrs(Attrs):
    max_len: PositiveInt = 5000
    base: PositiveFloat = 10000.0


def _sinusoidal_infer(ins: list[TensorType], a: SinusoidalAttrs) -> TensorType:
    x = _sequence(ins, "sinusoidal_pos")
    if x.shape[-1] % 2:
        raise ShapeError(f"sinusoidal positions pair sin and cos: the width must be even, got {x}", "E0305", 0)
    check_length(x.shape[-2], a.max_len, "sinusoidal position table")
    return x


_SINUSOIDAL = support_text("sinusoidal")


def _sinusoidal_module(ins, a: SinusoidalAttrs) -> str:
    base = kwargs(a, ["base"], {"base": 10000.0})
    return f"SinusoidalPositions({a.max_len}, {ins[0].shape[-1]}{base})"


def _np_sinusoidal(xs, a: SinusoidalAttrs, p):
    """PE[t, 2i] = sin(t / base^(2i/d)), PE[t, 2i+1] = cos(t / base^(2i/d)) (Vaswani et al. 2017, §3.5)."""
    import numpy as np

    x = xs[0].astype(np.float64)
    t, d = x.shape[-2:]
    angle = np.arange(t)[:, None] / a.base ** (np.arange(0, d, 2) / d)
    pe = np.zeros((t, d))
    pe[:, 0::2], pe[:, 1::2] = np.sin(angle), np.cos(angle)
    return x + pe


register(OpDef(
    name="sinusoidal_pos", attrs=SinusoidalAttrs, positional=("max_len",), infer=_sinusoidal_infer,
    buffers=lambda ins, a: {"pe": (a.max_len, ins[0].shape[-1])},
    categories=frozenset({LAYER}),
    torch=TorchRule(module=_sinusoidal_module, imports=("import math",), support=(_SINUSOIDAL,), positions=True),
    doc="x[..., T, d] + the fixed sin/cos position table (no parameters); checks T <= max_len.",
    numpy=_np_sinusoidal, waive={"macs": NO_MACS},
    examples=(Example(("f32[2, 5, 6]",), {"max_len": 8}), Example(("f32[7, 4]",), {"max_len": 7, "base": 100.0})),
))


# ---- rotary: rotate feature pairs of q or k by t * base^(-2i/d) -----------------------------------------------

class RopeAttrs(Attrs):
    base: PositiveFloat = 10000.0
    interleaved: bool = False  # pairs (2i, 2i+1) as in RoFormer / Meta LLaMA; else (i, i + d/2) as GPT-NeoX / HF


def _rope_infer(ins: list[TensorType], a: RopeAttrs) -> TensorType:
    x = _sequence(ins, "rope")
    if x.shape[-1] % 2:
        raise ShapeError(f"rope rotates feature pairs: the head dim must be even, got {x}", "E0305", 0)
    return x


_ROPE = support_text("rope")


def _rope_call(args, a: RopeAttrs, ins) -> str:
    extra = kwargs(a, ["base"], {"base": 10000.0})
    extra += ", interleaved=True" if a.interleaved else ""
    extra += "".join(f", {kw}" for kw in args[1:])  # the key/value cache of a generating model (`cache=cache`)
    return f"apply_rope({args[0]}{extra})"


def _np_rope(xs, a: RopeAttrs, p):
    """Feature pair i of position t turned by angle t * base^(-2i/d); pairs (i, i + d/2), or (2i, 2i+1)."""
    import numpy as np

    x = xs[0].astype(np.float64)
    t, d = x.shape[-2:]
    angle = np.arange(t)[:, None] * a.base ** (-np.arange(0, d, 2) / d)  # [T, d/2]
    cos, sin = np.cos(angle), np.sin(angle)
    if a.interleaved:
        x1, x2 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2], out[..., 1::2] = x1 * cos - x2 * sin, x2 * cos + x1 * sin
        return out
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


register(OpDef(
    name="rope", attrs=RopeAttrs, positional=("base",), infer=_rope_infer,
    torch=TorchRule(call=_rope_call, support=(_ROPE,), positions=True),
    doc="rotary position embedding of q or k [..., T, head_dim] (no parameters).",
    numpy=_np_rope, waive={"macs": NO_MACS},
    examples=(Example(("f32[2, 2, 5, 8]",)), Example(("f32[1, 3, 4, 6]",), {"base": 500.0, "interleaved": True})),
))
