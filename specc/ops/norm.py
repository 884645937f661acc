"""Normalisation: batchnorm, layernorm, rmsnorm."""
from __future__ import annotations

from pydantic import PositiveFloat

from ..diagnostics import ShapeError
from ..types import TensorType
from .registry import LAYER, NO_MACS, Attrs, Example, OpDef, expect_float, expect_rank, register
from .torch_rule import TorchRule, kwargs, pyval, support_text


class BatchNormAttrs(Attrs):
    eps: PositiveFloat = 1e-5
    momentum: float = 0.1
    affine: bool = True
    num_features: int | None = None


def _bn_infer(ins: list[TensorType], a: BatchNormAttrs) -> TensorType:
    (x,) = ins
    expect_rank(x, (2, 3, 4, 5), "batchnorm")
    expect_float(x, "batchnorm")
    if not isinstance(x.shape[1], int):
        raise ShapeError(f"batchnorm needs a static channel dim (dim 1), input is {x}")
    if a.num_features is not None and a.num_features != x.shape[1]:
        raise ShapeError(f"input has {x.shape[1]} channels, layer expects {a.num_features}")
    return x


def _bn_module(ins: list[TensorType], a: BatchNormAttrs) -> str:
    nd = {2: 1, 3: 1, 4: 2, 5: 3}[ins[0].rank]
    extra = kwargs(a, ["eps", "momentum"], {"eps": 1e-5, "momentum": 0.1})
    extra += "" if a.affine else ", affine=False"
    return f"nn.BatchNorm{nd}d({ins[0].shape[1]}{extra})"


def _np_batchnorm(xs, a: BatchNormAttrs, p):
    """Eval mode: the running statistics."""
    import numpy as np

    x = xs[0].astype(np.float64)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = (x - p["running_mean"].reshape(shape)) / np.sqrt(p["running_var"].reshape(shape) + a.eps)
    return y * p["weight"].reshape(shape) + p["bias"].reshape(shape) if a.affine else y


def _np_layernorm(xs, a: LayerNormAttrs, p):
    import numpy as np

    x = np.moveaxis(xs[0].astype(np.float64), a.dim, -1)
    mu = x.mean(-1, keepdims=True)
    y = (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + a.eps)
    if a.affine:
        y = y * p["weight"] + (p["bias"] if a.bias else 0)
    return np.moveaxis(y, -1, a.dim)


def _np_rmsnorm(xs, a, p):
    import numpy as np

    x = xs[0].astype(np.float64)
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + a.eps) * p["weight"]


NORM_WAIVERS = {"macs": NO_MACS}

register(OpDef(
    name="batchnorm", attrs=BatchNormAttrs, positional=("eps",), infer=_bn_infer,
    params=lambda ins, a: {"weight": (ins[0].shape[1],), "bias": (ins[0].shape[1],)} if a.affine else {},
    buffers=lambda ins, a: {"running_mean": (ins[0].shape[1],), "running_var": (ins[0].shape[1],),
                            "num_batches_tracked": ()},
    categories=frozenset({LAYER}), torch=TorchRule(module=_bn_module, fresh=True),
    doc="batch normalisation over dim 1 (BatchNorm1d/2d/3d by rank).",
    numpy=_np_batchnorm, waive=NORM_WAIVERS,
    examples=(Example(("f32[2, 3, 4, 4]",)), Example(("f32[4, 3]",), {"eps": 1e-3, "affine": False}),
              Example(("f32[2, 2, 5]",))),
))


class LayerNormAttrs(Attrs):
    eps: PositiveFloat = 1e-5
    bias: bool = True
    normalized_shape: int | None = None
    affine: bool = True  # False: no weight/bias (what the layernorm-fusion pass makes of a hand-written one)
    dim: int = -1  # the normalised dim: 1 for the channels of a conv feature map [N, C, H, W] (ConvNeXt)


def _ln_infer(ins: list[TensorType], a) -> TensorType:
    (x,) = ins
    dim = getattr(a, "dim", -1)
    expect_float(x, "norm")
    if not -x.rank <= dim < x.rank:
        raise ShapeError(f"dim {dim} is out of range for {x}", "E0305")
    if not isinstance(x.shape[dim], int):
        raise ShapeError(f"norm needs a static dim {dim}, input is {x}")
    if a.normalized_shape is not None and a.normalized_shape != x.shape[dim]:
        raise ShapeError(f"input has {x.shape[dim]} features, layer expects {a.normalized_shape}")
    return x


_LAYERNORM_DIM = support_text("layernorm_dim")


def _ln_module(ins, a: LayerNormAttrs) -> str:
    extra = kwargs(a, ["eps"], {"eps": 1e-5})
    if not a.affine:
        extra += ", elementwise_affine=False"
    else:
        extra += "" if a.bias else ", bias=False"
    if a.dim not in (-1, ins[0].rank - 1):
        return f"LayerNormDim({ins[0].shape[a.dim]}, {a.dim}{extra})"
    return f"nn.LayerNorm({ins[0].shape[-1]}{extra})"


register(OpDef(
    name="layernorm", attrs=LayerNormAttrs, positional=("eps",), infer=_ln_infer,
    params=lambda ins, a: {} if not a.affine else
    {"weight": (ins[0].shape[a.dim],), **({"bias": (ins[0].shape[a.dim],)} if a.bias else {})},
    categories=frozenset({LAYER}), torch=TorchRule(module=_ln_module, fresh=True,
                    support=(_LAYERNORM_DIM,),
                    support_when=lambda ins, a: a.dim not in (-1, ins[0].rank - 1)),
    doc="layer normalisation over the last dim, or over dim= (e.g. 1: the channels of a conv feature map).",
    numpy=_np_layernorm, waive=NORM_WAIVERS,
    examples=(Example(("f32[2, 3, 8]",)), Example(("f32[4, 6]",), {"eps": 1e-3, "bias": False}),
              Example(("f32[2, 5]",), {"affine": False}), Example(("f32[2, 4, 3, 3]",), {"dim": 1})),
))


class RMSNormAttrs(Attrs):
    eps: PositiveFloat = 1e-6
    normalized_shape: int | None = None


register(OpDef(
    name="rmsnorm", attrs=RMSNormAttrs, positional=("eps",), infer=_ln_infer,
    params=lambda ins, a: {"weight": (ins[0].shape[-1],)},
    categories=frozenset({LAYER}),
    torch=TorchRule(module=lambda ins, a: f"nn.RMSNorm({ins[0].shape[-1]}, eps={pyval(a.eps)})"),
    doc="RMS normalisation over the last dim (LLaMA / Mixtral).",
    numpy=_np_rmsnorm, waive=NORM_WAIVERS,
    examples=(Example(("f32[2, 3, 8]",)), Example(("f32[4, 6]",), {"eps": 1e-2})),
))
