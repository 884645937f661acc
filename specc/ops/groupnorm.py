"""Normalisation over groups of channels of a [N, C, *spatial] map: groupnorm (Wu & He 2018; DDPM's U-Net) and
instancenorm (one group per channel; style transfer, GAN generators). Statistics per sample, never running."""
from __future__ import annotations

from pydantic import PositiveFloat, PositiveInt

from ..diagnostics import ShapeError
from ..types import TensorType
from .registry import LAYER, Attrs, Example, OpDef, expect_float, expect_rank, register
from .torch_rule import TorchRule, kwargs


class GroupNormAttrs(Attrs):
    num_groups: PositiveInt
    eps: PositiveFloat = 1e-5
    affine: bool = True


class InstanceNormAttrs(Attrs):
    eps: PositiveFloat = 1e-5
    affine: bool = False  # PyTorch's default for nn.InstanceNorm*d


def _channels(x: TensorType, what: str) -> int:
    expect_rank(x, (3, 4, 5), what)
    expect_float(x, what)
    if not isinstance(x.shape[1], int):
        raise ShapeError(f"{what} needs a static channel dim (dim 1), input is {x}")
    return x.shape[1]


def _gn_infer(ins: list[TensorType], a: GroupNormAttrs) -> TensorType:
    c = _channels(ins[0], "groupnorm")
    if c % a.num_groups:
        raise ShapeError(f"num_groups={a.num_groups} must divide the {c} channels", "E0305")
    return ins[0]


def _in_infer(ins: list[TensorType], a: InstanceNormAttrs) -> TensorType:
    x = ins[0]
    _channels(x, "instancenorm")
    spatial = x.shape[2:]
    if all(isinstance(d, int) for d in spatial) and all(d == 1 for d in spatial):
        raise ShapeError(f"instancenorm normalises each channel over its spatial positions, and {x} has only one "
                         "(every output would be 0; PyTorch refuses it)", "E0305")
    return x


def _affine_params(ins: list[TensorType], a) -> dict:
    c = ins[0].shape[1]
    return {"weight": (c,), "bias": (c,)} if a.affine else {}


def _normalise(x, groups: int, eps: float, params: dict):
    """NumPy reference: statistics over each sample's group of channels and all spatial positions."""
    import numpy as np

    n, c = x.shape[:2]
    g = x.astype(np.float64).reshape(n, groups, -1)
    y = (g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + eps)
    y = y.reshape(x.shape)
    if "weight" in params:
        bshape = (1, c) + (1,) * (x.ndim - 2)
        y = y * params["weight"].reshape(bshape) + params["bias"].reshape(bshape)
    return y.astype(np.float32)


def _gn_module(ins, a: GroupNormAttrs) -> str:
    extra = kwargs(a, ["eps"], {"eps": 1e-5})
    extra += "" if a.affine else ", affine=False"
    return f"nn.GroupNorm({a.num_groups}, {ins[0].shape[1]}{extra})"


def _in_module(ins, a: InstanceNormAttrs) -> str:
    extra = kwargs(a, ["eps"], {"eps": 1e-5})
    extra += ", affine=True" if a.affine else ""
    return f"nn.InstanceNorm{ins[0].rank - 2}d({ins[0].shape[1]}{extra})"


register(OpDef(
    name="groupnorm", attrs=GroupNormAttrs, positional=("num_groups", "eps"), infer=_gn_infer,
    params=_affine_params, categories=frozenset({LAYER}), torch=TorchRule(module=_gn_module, fresh=True),
    numpy=lambda xs, a, p: _normalise(xs[0], a.num_groups, a.eps, p),
    examples=(Example(("f32[2, 6, 4, 5]",), {"num_groups": 3}),
              Example(("f32[2, 4, 7]",), {"num_groups": 2, "affine": False, "eps": 1e-3})),
    waive={"macs": "normalisation: no multiply-accumulates counted (as layernorm)"},
    doc="group normalisation over [N, C, ...]: num_groups groups of channels, per sample.",
))

register(OpDef(
    name="instancenorm", attrs=InstanceNormAttrs, positional=("eps",), infer=_in_infer,
    params=_affine_params, categories=frozenset({LAYER}), torch=TorchRule(module=_in_module, fresh=True),
    numpy=lambda xs, a, p: _normalise(xs[0], xs[0].shape[1], a.eps, p),
    examples=(Example(("f32[2, 3, 4, 5]",), {"affine": True}), Example(("f32[2, 3, 6]",))),
    waive={"macs": "normalisation: no multiply-accumulates counted (as layernorm)"},
    doc="instance normalisation over [N, C, ...]: each channel of each sample (no running statistics).",
))
