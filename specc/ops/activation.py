"""Activations and other shape-preserving unary ops: relu, tanh, sigmoid, gelu, silu, softmax, dropout, the clamping
family (relu6, hardtanh, clamp), hard-swish/hard-sigmoid, ELU, softplus, mish, GLU and drop-path."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..diagnostics import ShapeError
from ..types import TensorType
from .registry import ACTIVATION, ELEMENTWISE, NO_MACS, Attrs, Example, NoAttrs, OpDef, expect_float, register
from .torch_rule import TorchRule, kwargs, pyval, support_text


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
                    + kwargs(a, ["approximate"], {"approximate": "none"}) + ")"),
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


# ---- issue 14: the activations of mobile and generative models ---------------------------------------------------

_ACT_EXAMPLE = (Example(("f32[2, 3, 8]",)),)
_NO_MACS = {"macs": "elementwise: no multiply-accumulates counted"}


def _np_softplus(x, beta=1.0, threshold=20.0):
    import numpy as np

    bx = beta * x
    return np.where(bx > threshold, x, np.log1p(np.exp(np.minimum(bx, threshold))) / beta)


def _unary_new(name: str, call: str, ref, doc: str) -> None:
    register(OpDef(name=name, attrs=NoAttrs, infer=_same, categories=frozenset({ACTIVATION, ELEMENTWISE}),
                   torch=TorchRule(call=lambda args, a, ins, fn=call: f"{fn}({args[0]})"),
                   numpy=lambda xs, a, p, ref=ref: ref(xs[0]), examples=_ACT_EXAMPLE, waive=_NO_MACS, doc=doc))


def _clip(x, lo, hi):
    import numpy as np

    return np.clip(x, lo, hi)


_unary_new("relu6", "F.relu6", lambda x: _clip(x, 0.0, 6.0), "min(max(x, 0), 6) (MobileNet)")
_unary_new("hardswish", "F.hardswish", lambda x: x * _clip(x + 3.0, 0.0, 6.0) / 6.0,
           "x * relu6(x + 3) / 6 (MobileNetV3)")
_unary_new("hardsigmoid", "F.hardsigmoid", lambda x: _clip(x + 3.0, 0.0, 6.0) / 6.0, "relu6(x + 3) / 6")
_unary_new("mish", "F.mish", lambda x: x * __import__("numpy").tanh(_np_softplus(x)), "x * tanh(softplus(x))")


class HardtanhAttrs(Attrs):
    min_val: float = -1.0
    max_val: float = 1.0


def _bounds_infer(ins: list[TensorType], a) -> TensorType:
    lo, hi = (a.min_val, a.max_val) if isinstance(a, HardtanhAttrs) else (a.min, a.max)
    if lo is not None and hi is not None and lo > hi:
        raise ShapeError(f"the lower bound {lo} is above the upper bound {hi}", "E0305")
    return _same(ins, a)


register(OpDef(
    name="hardtanh", attrs=HardtanhAttrs, positional=("min_val", "max_val"), infer=_bounds_infer,
    categories=frozenset({ACTIVATION, ELEMENTWISE}),
    torch=TorchRule(call=lambda args, a, ins: f"F.hardtanh({args[0]}, {pyval(a.min_val)}, {pyval(a.max_val)})"),
    numpy=lambda xs, a, p: _clip(xs[0], a.min_val, a.max_val),
    examples=(Example(("f32[2, 3, 8]",), {"min_val": -0.5, "max_val": 2.0}),), waive=_NO_MACS,
    doc="x clamped to [min_val, max_val] (default [-1, 1]).",
))


class ClampAttrs(Attrs):
    min: float | None = None
    max: float | None = None


def _clamp_infer(ins: list[TensorType], a: ClampAttrs) -> TensorType:
    if a.min is None and a.max is None:
        raise ShapeError("clamp needs min=, max= or both", "E0305")
    return _bounds_infer(ins, a)


def _clamp_call(args, a: ClampAttrs, ins) -> str:
    bounds = ", ".join(f"{k}={pyval(v)}" for k, v in (("min", a.min), ("max", a.max)) if v is not None)
    return f"torch.clamp({args[0]}, {bounds})"


register(OpDef(
    name="clamp", attrs=ClampAttrs, positional=("min", "max"), infer=_clamp_infer,
    categories=frozenset({ACTIVATION, ELEMENTWISE}), torch=TorchRule(call=_clamp_call),
    numpy=lambda xs, a, p: _clip(xs[0], a.min, a.max),
    examples=(Example(("f32[2, 3, 8]",), {"min": -0.5, "max": 0.75}), Example(("f32[4, 5]",), {"min": 0.1})),
    waive=_NO_MACS, doc="x clamped to [min, max]; either bound may be left out.",
))


class EluAttrs(Attrs):
    alpha: float = 1.0


def _np_elu(x, alpha):
    import numpy as np

    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


register(OpDef(
    name="elu", attrs=EluAttrs, positional=("alpha",), infer=_same, categories=frozenset({ACTIVATION, ELEMENTWISE}),
    torch=TorchRule(call=lambda args, a, ins: f"F.elu({args[0]}"
                    + kwargs(a, ["alpha"], {"alpha": 1.0}) + ")"),
    numpy=lambda xs, a, p: _np_elu(xs[0], a.alpha),
    examples=(Example(("f32[2, 3, 8]",), {"alpha": 0.5}),), waive=_NO_MACS,
    doc="x for x > 0, alpha * (exp(x) - 1) otherwise.",
))


class SoftplusAttrs(Attrs):
    beta: float = Field(1.0, gt=0)
    threshold: float = 20.0


register(OpDef(
    name="softplus", attrs=SoftplusAttrs, positional=("beta", "threshold"), infer=_same,
    categories=frozenset({ACTIVATION, ELEMENTWISE}),
    torch=TorchRule(call=lambda args, a, ins: f"F.softplus({args[0]}"
                    + kwargs(a, ["beta", "threshold"], {"beta": 1.0, "threshold": 20.0}) + ")"),
    numpy=lambda xs, a, p: _np_softplus(xs[0], a.beta, a.threshold),
    examples=(Example(("f32[2, 3, 8]",)), Example(("f32[2, 8]",), {"beta": 2.0, "threshold": 1.0})),
    waive=_NO_MACS, doc="log(1 + exp(beta * x)) / beta; x itself where beta * x > threshold.",
))


def _glu_infer(ins: list[TensorType], a: DimAttrs) -> TensorType:
    (x,) = ins
    expect_float(x, "glu")
    if not -x.rank <= a.dim < x.rank:
        raise ShapeError(f"dim {a.dim} is out of range for {x}", "E0305")
    n = x.shape[a.dim]
    if not isinstance(n, int) or n % 2:
        raise ShapeError(f"glu halves dim {a.dim}: it must be a static even size, got {x}", "E0305")
    shape = list(x.shape)
    shape[a.dim] = n // 2
    return x.with_shape(tuple(shape))


def _np_glu(x, dim):
    import numpy as np

    a, b = np.split(x, 2, axis=dim)
    return a / (1.0 + np.exp(-b))


register(OpDef(
    name="glu", attrs=DimAttrs, positional=("dim",), infer=_glu_infer,
    torch=TorchRule(call=lambda args, a, ins: f"F.glu({args[0]}" + kwargs(a, ["dim"], {"dim": -1}) + ")"),
    numpy=lambda xs, a, p: _np_glu(xs[0], a.dim),
    examples=(Example(("f32[2, 6, 5]",), {"dim": 1}),), waive=_NO_MACS,
    doc="gated linear unit: first half of dim * sigmoid(second half); that dim halves.",
))


# ---- drop-path (stochastic depth, Huang et al. 2016): a whole sample's residual branch dropped in training ----

_DROP_PATH = support_text("drop_path")

register(OpDef(
    name="drop_path", attrs=DropoutAttrs, positional=("p",), infer=lambda ins, a: ins[0],
    torch=TorchRule(module=lambda ins, a: f"DropPath({pyval(a.p)})", support=(_DROP_PATH,)),
    numpy=lambda xs, a, p: xs[0],  # the eval-mode result; training draws per-sample masks
    examples=(Example(("f32[4, 3, 8]",), {"p": 0.2}),), waive={"macs": "a per-sample mask: no multiply-adds"},
    doc="stochastic depth: drops a whole sample with probability p in training (kept ones scaled by 1/(1-p)).",
))
