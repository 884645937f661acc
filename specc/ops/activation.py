"""Activations and other shape-preserving unary ops: relu, tanh, sigmoid, gelu, silu, softmax, dropout."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..diagnostics import ShapeError
from ..types import TensorType
from .registry import ACTIVATION, ELEMENTWISE, Attrs, NoAttrs, OpDef, expect_float, register
from .torch_rule import TorchRule, pyval


def _same(ins: list[TensorType], a) -> TensorType:
    expect_float(ins[0], "activation")
    return ins[0]


def _unary(name: str, fn: str, doc: str, inplace: str | None = None) -> None:
    """inplace: the in-place spelling, for ops whose backward reads only their result (relu)."""
    rule = TorchRule(call=lambda args, a, ins, fn=fn: f"{fn}({args[0]})",
                     inplace=(lambda args, a, ins, fn=inplace: f"{fn}({args[0]}, inplace=True)") if inplace else None)
    register(OpDef(name=name, attrs=NoAttrs, infer=_same, categories=frozenset({ACTIVATION, ELEMENTWISE}),
                   torch=rule, doc=doc))


_unary("relu", "F.relu", "max(x, 0)", inplace="F.relu")
_unary("tanh", "torch.tanh", "hyperbolic tangent")
_unary("sigmoid", "torch.sigmoid", "logistic sigmoid")
_unary("silu", "F.silu", "x * sigmoid(x) (swish)")
_unary("exp", "torch.exp", "e^x")
_unary("sqrt", "torch.sqrt", "square root")
_unary("rsqrt", "torch.rsqrt", "1 / sqrt(x)")
_unary("identity", "", "no-op")


class GeluAttrs(Attrs):
    approximate: Literal["none", "tanh"] = "none"


register(OpDef(
    name="gelu", attrs=GeluAttrs, positional=("approximate",), infer=_same,
    categories=frozenset({ACTIVATION, ELEMENTWISE}),
    torch=TorchRule(call=lambda args, a, ins: f"F.gelu({args[0]}"
                    + ("" if a.approximate == "none" else f", approximate={pyval(a.approximate)}") + ")"),
    doc="Gaussian error linear unit (exact erf, or the tanh approximation).",
))


class DimAttrs(Attrs):
    dim: int = -1


def _dim_infer(ins: list[TensorType], a: DimAttrs) -> TensorType:
    (x,) = ins
    expect_float(x, "softmax")
    if not -x.rank <= a.dim < x.rank:
        raise ShapeError(f"dim {a.dim} is out of range for {x}", "E0305")
    return x


for _name, _fn in (("softmax", "F.softmax"), ("log_softmax", "F.log_softmax")):
    register(OpDef(
        name=_name, attrs=DimAttrs, positional=("dim",), infer=_dim_infer,
        torch=TorchRule(call=lambda args, a, ins, fn=_fn: f"{fn}({args[0]}, dim={a.dim})"),
        doc=f"{_name} over one dim (default last).",
    ))


class DropoutAttrs(Attrs):
    p: float = Field(0.5, ge=0.0, lt=1.0)


register(OpDef(
    name="dropout", attrs=DropoutAttrs, positional=("p",), infer=lambda ins, a: ins[0],
    torch=TorchRule(module=lambda ins, a: f"nn.Dropout({pyval(a.p)})"),
    doc="zeroes elements with probability p in training; identity in eval.",
))


class LeakyAttrs(Attrs):
    negative_slope: float = 0.01


register(OpDef(
    name="leaky_relu", attrs=LeakyAttrs, positional=("negative_slope",), infer=_same,
    categories=frozenset({ACTIVATION, ELEMENTWISE}),
    torch=TorchRule(call=lambda args, a, ins: f"F.leaky_relu({args[0]}, {pyval(a.negative_slope)})"),
    doc="max(x, 0) + slope * min(x, 0)",
))
