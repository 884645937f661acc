"""Learned parameters and frozen tables as values: `gamma = parameter(d, 1, 1, init="constant", value=1e-6)` (layer
scale), a learned query, a relative-position table; `trainable=false` freezes it (a parameter without gradient,
still counted), `buffer=true` (the `buffer` declaration) makes it a buffer. `sincos(n, d)` is
the fixed sin/cos position table, interleaved (sin, cos, sin, ...) or as two halves (all sines, then all cosines).
Each takes no tensor input and gives a tensor usable in any expression (`x * gamma`, `x + table[0]`); the layer
holds it as `weight` (state_dict `gamma.weight`)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt

from ..diagnostics import ShapeError
from ..types import DTYPES, FLOAT_DTYPES, TensorType
from .registry import LAYER, Attrs, Example, OpDef, register
from .torch_rule import TorchRule, kwargs, pyval, support_text


class ParameterAttrs(Attrs):
    shape: tuple[PositiveInt, ...] = Field(min_length=0)
    init: Literal["normal", "trunc_normal", "uniform", "zeros", "ones", "constant", "sincos"] = "normal"
    std: PositiveFloat = 0.02  # normal / trunc_normal (truncated at +-2 std, as timm)
    value: float = 0.0  # constant
    layout: Literal["interleaved", "halves"] = "interleaved"  # sincos: a [length, dim] position table
    # false: a parameter that does not train (requires_grad off; counted, as Hugging Face counts Whisper's positions)
    trainable: bool = True
    buffer: bool = False  # a buffer (`buffer` declarations): in the state_dict, not a parameter
    dtype: str = "f32"


def _parameter_infer(ins: list[TensorType], a: ParameterAttrs) -> TensorType:
    if a.dtype not in FLOAT_DTYPES:
        raise ShapeError(f"a parameter holds floats, got dtype {a.dtype!r}", "E0302")
    if a.init == "sincos" and (len(a.shape) != 2 or a.shape[1] % 2):
        raise ShapeError(f"init sincos makes a [length, even width] table, the shape is {a.shape}", "E0305")
    return TensorType(a.dtype, tuple(a.shape))


_PARAMETER = support_text("parameter")


def _parameter_module(ins, a: ParameterAttrs) -> str:
    args = [pyval(tuple(a.shape))]
    if a.init != "normal":
        args.append(f"init={pyval(a.init)}")
    if a.init in ("normal", "trunc_normal", "uniform") and a.std != 0.02:
        args.append(f"std={pyval(a.std)}")
    if a.init == "constant":
        args.append(f"value={pyval(a.value)}")
    if a.init == "sincos" and a.layout != "interleaved":
        args.append(f"layout={pyval(a.layout)}")
    if not a.trainable:
        args.append("trainable=False")
    if a.buffer:
        args.append("buffer=True")
    if a.dtype != "f32":
        args.append(f"dtype=torch.{DTYPES[a.dtype]}")
    return f"LearnedTensor({', '.join(args)})"


def _parameter_numpy(xs, a: ParameterAttrs, params):
    return params["weight"]


register(OpDef(
    name="parameter", attrs=ParameterAttrs, positional=("shape",), arity=(0, 0), infer=_parameter_infer,
    params=lambda ins, a: {} if a.buffer else {"weight": tuple(a.shape)},
    buffers=lambda ins, a: {"weight": tuple(a.shape)} if a.buffer else {},
    categories=frozenset({LAYER}),
    torch=TorchRule(module=_parameter_module, imports=("import math",), support=(_PARAMETER,)),
    numpy=_parameter_numpy,
    examples=(Example((), {"shape": (4, 1, 1), "init": "constant", "value": 1e-6}),
              Example((), {"shape": (3, 5), "buffer": True, "init": "ones"}),
              Example((), {"shape": (6, 4), "init": "sincos", "layout": "halves", "trainable": False})),
    waive={"macs": "a stored tensor: no arithmetic"},
    doc="a learned tensor of the given shape (init normal/trunc_normal/uniform(std)/zeros/ones/constant(value)/"
        "sincos(layout)); trainable=false freezes it, buffer=true makes it a buffer instead of a parameter.",
))


class SinCosAttrs(Attrs):
    length: PositiveInt
    dim: PositiveInt
    layout: Literal["interleaved", "halves"] = "interleaved"
    base: PositiveFloat = 10000.0


def _sincos_infer(ins, a: SinCosAttrs) -> TensorType:
    if a.dim % 2:
        raise ShapeError(f"a sin/cos table pairs features: its width must be even, got {a.dim}", "E0305")
    return TensorType("f32", (a.length, a.dim))


def sincos_table(length: int, dim: int, layout: str = "interleaved", base: float = 10000.0):
    """[length, dim]: position t, frequency i = base^(-2i/dim); interleaved puts sin and cos of frequency i at
    2i and 2i+1 (Vaswani et al.), halves puts all sines first, then all cosines (Whisper, tensor2tensor)."""
    import math

    import numpy as np

    t = np.arange(length, dtype=np.float32)[:, None]
    angle = t * np.exp(np.arange(0, dim, 2, dtype=np.float32) * np.float32(-math.log(base) / dim))
    if layout == "halves":
        return np.concatenate([np.sin(angle), np.cos(angle)], axis=1).astype(np.float32)
    out = np.zeros((length, dim), np.float32)
    out[:, 0::2], out[:, 1::2] = np.sin(angle), np.cos(angle)
    return out


_SINCOS = support_text("sincos")


def _sincos_module(ins, a: SinCosAttrs) -> str:
    extra = kwargs(a, ["layout", "base"], {"layout": "interleaved", "base": 10000.0})
    return f"SinCosTable({a.length}, {a.dim}{extra})"


register(OpDef(
    name="sincos", attrs=SinCosAttrs, positional=("length", "dim"), arity=(0, 0), infer=_sincos_infer,
    buffers=lambda ins, a: {"table": (a.length, a.dim)},
    categories=frozenset({LAYER}),
    torch=TorchRule(module=_sincos_module, imports=("import math",), support=(_SINCOS,)),
    numpy=lambda xs, a, p: sincos_table(a.length, a.dim, a.layout, a.base),
    examples=(Example((), {"length": 6, "dim": 8}), Example((), {"length": 5, "dim": 4, "layout": "halves"})),
    waive={"macs": "a constant table"},
    doc="the fixed sin/cos position table [length, dim], layout interleaved or halves (no parameters).",
))
