"""Activations and other shape-preserving unary ops: relu, tanh, sigmoid, gelu, silu, softmax, dropout."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..diagnostics import ShapeError
from ..types import TensorType
from .registry import ACTIVATION, ELEMENTWISE, NO_MACS, Attrs, Example, NoAttrs, OpDef, expect_float, register
from .torch_rule import TorchRule, pyval


def _same(ins: list[TensorType], a) -> TensorType:
    expect_float(ins[0], "activation")
    return ins[0]


UNARY_EXAMPLES = (Example(("f32[2, 3, 4]",)), Example(("f32[5]",)))


def _unary(name: str, fn: str, doc: str, ref, inplace: str | None = None) -> None:
    """inplace: the in-place spelling, for ops whose backward reads only their result (relu).
    ref: the NumPy reference of one array (numpy passed in, so that specc never imports it before a test does)."""
    rule = TorchRule(call=lambda args, a, ins, fn=fn: f"{fn}({args[0]})",
                     inplace=(lambda args, a, ins, fn=inplace: f"{fn}({args[0]}, inplace=True)") if inplace else None)

    def numpy(xs, a, params, ref=ref):
        import numpy as np

        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            return ref(np, xs[0].astype(np.float64))

    register(OpDef(name=name, attrs=NoAttrs, infer=_same, categories=frozenset({ACTIVATION, ELEMENTWISE}),
                   torch=rule, doc=doc, numpy=numpy, examples=UNARY_EXAMPLES, waive={"macs": NO_MACS}))


_unary("relu", "F.relu", "max(x, 0)", lambda np, x: np.maximum(x, 0), inplace="F.relu")
_unary("tanh", "torch.tanh", "hyperbolic tangent", lambda np, x: np.tanh(x))
_unary("sigmoid", "torch.sigmoid", "logistic sigmoid", lambda np, x: 1 / (1 + np.exp(-x)))
_unary("silu", "F.silu", "x * sigmoid(x) (swish)", lambda np, x: x / (1 + np.exp(-x)))
_unary("exp", "torch.exp", "e^x", lambda np, x: np.exp(x))
_unary("sqrt", "torch.sqrt", "square root", lambda np, x: np.sqrt(x))
_unary("rsqrt", "torch.rsqrt", "1 / sqrt(x)", lambda np, x: 1 / np.sqrt(x))
_unary("identity", "", "no-op", lambda np, x: x)


def _np_gelu(xs, a, params):
    import math

    import numpy as np

    x = xs[0].astype(np.float64)
    if a.approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


class GeluAttrs(Attrs):
    approximate: Literal["none", "tanh"] = "none"


register(OpDef(
    name="gelu", attrs=GeluAttrs, positional=("approximate",), infer=_same,
    categories=frozenset({ACTIVATION, ELEMENTWISE}),
    torch=TorchRule(call=lambda args, a, ins: f"F.gelu({args[0]}"
                    + ("" if a.approximate == "none" else f", approximate={pyval(a.approximate)}") + ")"),
    doc="Gaussian error linear unit (exact erf, or the tanh approximation).",
    numpy=_np_gelu, examples=(Example(("f32[2, 8]",)), Example(("f32[3, 4]",), {"approximate": "tanh"})),
    waive={"macs": NO_MACS},
))


class DimAttrs(Attrs):
    dim: int = -1


def _dim_infer(ins: list[TensorType], a: DimAttrs) -> TensorType:
    (x,) = ins
    expect_float(x, "softmax")
    if not -x.rank <= a.dim < x.rank:
        raise ShapeError(f"dim {a.dim} is out of range for {x}", "E0305")
    return x


def _np_softmax(log: bool):
    def ref(xs, a, params):
        import numpy as np

        x = xs[0].astype(np.float64)
        z = x - x.max(axis=a.dim, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=a.dim, keepdims=True))
        return z - lse if log else np.exp(z - lse)
    return ref


for _name, _fn in (("softmax", "F.softmax"), ("log_softmax", "F.log_softmax")):
    register(OpDef(
        name=_name, attrs=DimAttrs, positional=("dim",), infer=_dim_infer,
        torch=TorchRule(call=lambda args, a, ins, fn=_fn: f"{fn}({args[0]}, dim={a.dim})"),
        doc=f"{_name} over one dim (default last).",
        numpy=_np_softmax(_name == "log_softmax"),
        examples=(Example(("f32[2, 3, 5]",)), Example(("f32[2, 3, 5]",), {"dim": 1})),
        waive={"macs": NO_MACS},
    ))


class DropoutAttrs(Attrs):
    p: float = Field(0.5, ge=0.0, lt=1.0)


register(OpDef(
    name="dropout", attrs=DropoutAttrs, positional=("p",), infer=lambda ins, a: ins[0],
    torch=TorchRule(module=lambda ins, a: f"nn.Dropout({pyval(a.p)})"),
    doc="zeroes elements with probability p in training; identity in eval.",
    numpy=lambda xs, a, params: xs[0],  # eval mode
    examples=(Example(("f32[2, 6]",), {"p": 0.3}),), waive={"macs": NO_MACS},
))


class LeakyAttrs(Attrs):
    negative_slope: float = 0.01


register(OpDef(
    name="leaky_relu", attrs=LeakyAttrs, positional=("negative_slope",), infer=_same,
    categories=frozenset({ACTIVATION, ELEMENTWISE}),
    torch=TorchRule(call=lambda args, a, ins: f"F.leaky_relu({args[0]}, {pyval(a.negative_slope)})"),
    doc="max(x, 0) + slope * min(x, 0)",
    numpy=lambda xs, a, params: (xs[0] > 0) * xs[0] + (xs[0] <= 0) * a.negative_slope * xs[0],
    examples=(Example(("f32[2, 6]",)), Example(("f32[4]",), {"negative_slope": 0.2})), waive={"macs": NO_MACS},
))
