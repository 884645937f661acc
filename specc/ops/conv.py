"""Convolution: conv1d, conv2d (stride, padding incl. "same"/"valid", dilation, groups)."""
from __future__ import annotations

from typing import Literal

from pydantic import PositiveInt, field_validator

from ..diagnostics import ShapeError
from ..symbolic import Dim
from ..types import TensorType
from .registry import LAYER, Attrs, Example, OpDef, expect_float, expect_rank, numel, pair, register
from .torch_rule import TorchRule, pyval

IntOrPair = PositiveInt | tuple[PositiveInt, ...]


class ConvAttrs(Attrs):
    out_channels: PositiveInt
    kernel_size: IntOrPair
    stride: IntOrPair = 1
    padding: int | tuple[int, ...] | Literal["same", "valid"] = 0
    dilation: IntOrPair = 1
    groups: PositiveInt = 1
    bias: bool = True
    in_channels: PositiveInt | None = None  # optional: checked against the input when given

    @field_validator("padding")
    @classmethod
    def _nonneg(cls, v):
        if isinstance(v, int) and v < 0 or isinstance(v, tuple) and any(p < 0 for p in v):
            raise ValueError("padding must be >= 0")
        return v


def conv_out(size: Dim, k: int, s: int, p: int, d: int) -> Dim:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _conv_infer(nd: int):
    def infer(ins: list[TensorType], a: ConvAttrs) -> TensorType:
        (x,) = ins
        name = f"conv{nd}d"
        expect_rank(x, (nd + 2,), name)
        expect_float(x, name)
        cin = x.shape[1]
        if not isinstance(cin, int):
            raise ShapeError(f"{name} needs a static channel dim, input is {x}")
        if a.in_channels is not None and a.in_channels != cin:
            raise ShapeError(f"input has {cin} channels, layer expects {a.in_channels}")
        if cin % a.groups or a.out_channels % a.groups:
            raise ShapeError(f"groups={a.groups} must divide both in_channels={cin} and out_channels={a.out_channels}",
                             "E0305")
        k, s, d = pair(a.kernel_size, nd), pair(a.stride, nd), pair(a.dilation, nd)
        if a.padding == "same":
            if any(si != 1 for si in s):
                raise ShapeError("padding='same' needs stride 1 (as in PyTorch)", "E0305")
            spatial = x.shape[2:]
        else:
            p = (0,) * nd if a.padding == "valid" else pair(a.padding, nd)
            spatial = tuple(conv_out(x.shape[2 + i], k[i], s[i], p[i], d[i]) for i in range(nd))
            for i, o in enumerate(spatial):
                if isinstance(o, int) and o <= 0:
                    raise ShapeError(f"kernel {k[i]} (dilation {d[i]}, padding {p[i]}) is larger than the input's "
                                     f"spatial size {x.shape[2 + i]}")
        return TensorType(x.dtype, (x.shape[0], a.out_channels, *spatial))
    return infer


def _conv_params(nd: int):
    def params(ins: list[TensorType], a: ConvAttrs):
        k = pair(a.kernel_size, nd)
        out = {"weight": (a.out_channels, ins[0].shape[1] // a.groups, *k)}
        if a.bias:
            out["bias"] = (a.out_channels,)
        return out
    return params


def _conv_macs(nd: int):
    def macs(ins, out, a: ConvAttrs):
        k = pair(a.kernel_size, nd)
        return numel(out.shape) * (ins[0].shape[1] // a.groups) * numel(k)
    return macs


def _conv_module(nd: int):
    def module(ins: list[TensorType], a: ConvAttrs) -> str:
        args = [str(ins[0].shape[1]), str(a.out_channels), pyval(_squeeze(a.kernel_size))]
        for key, default in (("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1), ("bias", True)):
            v = getattr(a, key)
            v = _squeeze(v) if key != "bias" else v
            if v != default:
                args.append(f"{key}={pyval(v)}")
        return f"nn.Conv{nd}d({', '.join(args)})"
    return module


def _squeeze(v):
    """(3, 3) -> 3 when all equal, as a person would write it."""
    if isinstance(v, tuple) and len(set(v)) == 1:
        return v[0]
    return v


def _np_conv(nd: int):
    """Reference: a sum over kernel offsets of strided input slices times that offset's weights, per group."""
    def ref(xs, a: ConvAttrs, p):
        import itertools

        import numpy as np

        x, w = xs[0].astype(np.float64), p["weight"].astype(np.float64)
        k, s, d = pair(a.kernel_size, nd), pair(a.stride, nd), pair(a.dilation, nd)
        if a.padding == "same":  # PyTorch: the odd pixel of an uneven total goes to the end
            pads = [(t // 2, t - t // 2) for t in (d[i] * (k[i] - 1) for i in range(nd))]
        else:
            pads = [(q, q) for q in ((0,) * nd if a.padding == "valid" else pair(a.padding, nd))]
        x = np.pad(x, [(0, 0), (0, 0), *pads])
        sizes = [(x.shape[2 + i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in range(nd)]
        n, c, g, o = x.shape[0], x.shape[1], a.groups, w.shape[0]
        xg = x.reshape(n, g, c // g, *x.shape[2:])
        wg = w.reshape(g, o // g, c // g, *k)
        out = np.zeros((n, g, o // g, *sizes))
        for off in itertools.product(*(range(ki) for ki in k)):
            window = tuple(slice(off[i] * d[i], off[i] * d[i] + (sizes[i] - 1) * s[i] + 1, s[i]) for i in range(nd))
            out += np.einsum("ngc...,goc->ngo...", xg[(slice(None),) * 3 + window], wg[(slice(None),) * 3 + off])
        out = out.reshape(n, o, *sizes)
        return out + p["bias"].reshape((1, o) + (1,) * nd) if a.bias else out
    return ref


CONV_EXAMPLES = {
    1: (Example(("f32[2, 3, 9]",), {"out_channels": 4, "kernel_size": 3}),
        Example(("f32[1, 4, 10]",), {"out_channels": 2, "kernel_size": 3, "stride": 2, "padding": 1, "dilation": 2,
                                     "groups": 2, "bias": False}),
        Example(("f32[1, 2, 7]",), {"out_channels": 3, "kernel_size": 4, "padding": "same"})),
    2: (Example(("f32[2, 3, 7, 7]",), {"out_channels": 4, "kernel_size": 3}),
        Example(("f32[1, 4, 8, 9]",), {"out_channels": 4, "kernel_size": (3, 2), "stride": (2, 1),
                                       "padding": (1, 0), "groups": 4}),
        Example(("f32[1, 2, 6, 6]",), {"out_channels": 2, "kernel_size": 3, "dilation": 2, "padding": "same",
                                       "bias": False}),
        Example(("f32[1, 2, 5, 5]",), {"out_channels": 3, "kernel_size": 2, "padding": "valid"})),
}

for _nd in (1, 2):
    register(OpDef(
        name=f"conv{_nd}d", attrs=ConvAttrs,
        positional=("out_channels", "kernel_size", "stride", "padding"),
        infer=_conv_infer(_nd), params=_conv_params(_nd), macs=_conv_macs(_nd),
        categories=frozenset({LAYER}),
        torch=TorchRule(module=_conv_module(_nd), fresh=True),
        doc=f"{_nd}-D convolution over [N, C, ...] input.",
        numpy=_np_conv(_nd), examples=CONV_EXAMPLES[_nd],
    ))
