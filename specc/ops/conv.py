"""Convolution: conv1d/2d/3d (stride, padding incl. "same"/"valid", dilation, groups) and transposed convolution
conv_transpose1d/2d (output_padding)."""
from __future__ import annotations

from typing import Literal

from pydantic import PositiveInt, field_validator

from ..diagnostics import ShapeError
from ..symbolic import Dim
from ..types import TensorType
from .registry import LAYER, Attrs, Example, OpDef, expect_float, expect_rank, numel, pair, register
from .torch_rule import TorchRule, pyval, written

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
            if written(v, default):
                args.append(f"{key}={pyval(v)}")
        return f"nn.Conv{nd}d({', '.join(args)})"
    return module


def _squeeze(v):
    """(3, 3) -> 3 when all equal, as a person would write it."""
    if isinstance(v, tuple) and len(set(v)) == 1:
        return v[0]
    return v


_CONV_EXAMPLES = {
    1: (Example(("f32[2, 4, 9]",), {"out_channels": 6, "kernel_size": 3, "stride": 2, "padding": 1}),),
    2: (Example(("f32[2, 4, 7, 8]",), {"out_channels": 6, "kernel_size": 3, "padding": 1, "groups": 2}),),
    3: (Example(("f32[1, 2, 5, 6, 7]",), {"out_channels": 4, "kernel_size": (3, 2, 3), "stride": 2}),),
}


def conv_reference(x, w, b, stride, padding, dilation, groups):
    """NumPy N-d cross-correlation, [N, C, *S] x [O, C/groups, *K] (PyTorch's conv); padding per dim."""
    import numpy as np

    nd = x.ndim - 2
    x = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in padding])
    k = w.shape[2:]
    out_sp = [(x.shape[2 + i] - dilation[i] * (k[i] - 1) - 1) // stride[i] + 1 for i in range(nd)]
    cg, og = w.shape[1], w.shape[0] // groups
    y = np.zeros((x.shape[0], w.shape[0], *out_sp), dtype=np.float64)
    for g in range(groups):
        xs, ws = x[:, g * cg:(g + 1) * cg], w[g * og:(g + 1) * og]
        for off in np.ndindex(*k):
            sl = tuple(slice(off[i] * dilation[i], off[i] * dilation[i] + stride[i] * (out_sp[i] - 1) + 1, stride[i])
                       for i in range(nd))
            patch = xs[(slice(None), slice(None), *sl)]
            y[:, g * og:(g + 1) * og] += np.einsum("nc...,oc->no...", patch, ws[(slice(None), slice(None), *off)])
    if b is not None:
        y += b.reshape((1, -1) + (1,) * nd)
    return y.astype(np.float32)


def _conv_numpy(nd: int):
    def ref(xs, a: ConvAttrs, params):
        (x,) = xs
        k, s, d = pair(a.kernel_size, nd), pair(a.stride, nd), pair(a.dilation, nd)
        if a.padding == "same":
            import numpy as np

            total = [di * (ki - 1) for ki, di in zip(k, d)]
            x = np.pad(x, [(0, 0), (0, 0)] + [(t // 2, t - t // 2) for t in total])
            p = (0,) * nd
        else:
            p = (0,) * nd if a.padding == "valid" else pair(a.padding, nd)
        return conv_reference(x, params["weight"], params.get("bias"), s, p, d, a.groups)
    return ref


for _nd in (1, 2, 3):
    register(OpDef(
        name=f"conv{_nd}d", attrs=ConvAttrs,
        positional=("out_channels", "kernel_size", "stride", "padding"),
        infer=_conv_infer(_nd), params=_conv_params(_nd), macs=_conv_macs(_nd),
        categories=frozenset({LAYER}),
        torch=TorchRule(module=_conv_module(_nd), fresh=True),
        numpy=_conv_numpy(_nd), examples=_CONV_EXAMPLES[_nd],
        doc=f"{_nd}-D convolution over [N, C, ...] input.",
    ))


# ---- transposed convolution (the gradient of a conv with respect to its input; DCGAN, U-Net decoders) ----------

class ConvTransposeAttrs(Attrs):
    out_channels: PositiveInt
    kernel_size: IntOrPair
    stride: IntOrPair = 1
    padding: int | tuple[int, ...] = 0
    output_padding: int | tuple[int, ...] = 0
    dilation: IntOrPair = 1
    groups: PositiveInt = 1
    bias: bool = True

    @field_validator("padding", "output_padding")
    @classmethod
    def _nonneg(cls, v):
        if isinstance(v, int) and v < 0 or isinstance(v, tuple) and any(p < 0 for p in v):
            raise ValueError("must be >= 0")
        return v


def conv_transpose_out(size: Dim, k: int, s: int, p: int, op: int, d: int) -> Dim:
    return (size - 1) * s - 2 * p + d * (k - 1) + op + 1


def _convt_infer(nd: int):
    def infer(ins: list[TensorType], a: ConvTransposeAttrs) -> TensorType:
        (x,) = ins
        name = f"conv_transpose{nd}d"
        expect_rank(x, (nd + 2,), name)
        expect_float(x, name)
        cin = x.shape[1]
        if not isinstance(cin, int):
            raise ShapeError(f"{name} needs a static channel dim, input is {x}")
        if cin % a.groups or a.out_channels % a.groups:
            raise ShapeError(f"groups={a.groups} must divide both in_channels={cin} and out_channels={a.out_channels}",
                             "E0305")
        k, s, d = pair(a.kernel_size, nd), pair(a.stride, nd), pair(a.dilation, nd)
        p, op = pair(a.padding, nd), pair(a.output_padding, nd)
        for i in range(nd):
            if op[i] >= s[i] and op[i] >= d[i]:
                raise ShapeError(f"output_padding {op[i]} must be smaller than the stride ({s[i]}) or the dilation "
                                 f"({d[i]}), as in PyTorch", "E0305")
        spatial = tuple(conv_transpose_out(x.shape[2 + i], k[i], s[i], p[i], op[i], d[i]) for i in range(nd))
        for i, o in enumerate(spatial):
            if isinstance(o, int) and o <= 0:
                raise ShapeError(f"padding {p[i]} leaves no output from spatial size {x.shape[2 + i]}")
        return TensorType(x.dtype, (x.shape[0], a.out_channels, *spatial))
    return infer


def _convt_params(nd: int):
    def params(ins: list[TensorType], a: ConvTransposeAttrs):
        out = {"weight": (ins[0].shape[1], a.out_channels // a.groups, *pair(a.kernel_size, nd))}
        if a.bias:
            out["bias"] = (a.out_channels,)
        return out
    return params


def _convt_macs(nd: int):
    def macs(ins, out, a: ConvTransposeAttrs):
        # every input element meets every kernel tap of its group's output channels
        return numel(ins[0].shape) * (a.out_channels // a.groups) * numel(pair(a.kernel_size, nd))
    return macs


def _convt_module(nd: int):
    def module(ins: list[TensorType], a: ConvTransposeAttrs) -> str:
        args = [str(ins[0].shape[1]), str(a.out_channels), pyval(_squeeze(a.kernel_size))]
        for key, default in (("stride", 1), ("padding", 0), ("output_padding", 0), ("groups", 1), ("bias", True),
                             ("dilation", 1)):
            v = getattr(a, key)
            v = _squeeze(v) if key != "bias" else v
            if written(v, default):
                args.append(f"{key}={pyval(v)}")
        return f"nn.ConvTranspose{nd}d({', '.join(args)})"
    return module


def _convt_numpy(nd: int):
    def ref(xs, a: ConvTransposeAttrs, params):
        import numpy as np

        (x,) = xs
        w, b = params["weight"], params.get("bias")
        k, s, d = pair(a.kernel_size, nd), pair(a.stride, nd), pair(a.dilation, nd)
        p, op = pair(a.padding, nd), pair(a.output_padding, nd)
        full = [(x.shape[2 + i] - 1) * s[i] + d[i] * (k[i] - 1) + 1 + op[i] for i in range(nd)]
        y = np.zeros((x.shape[0], a.out_channels, *full), dtype=np.float64)
        cg, og = x.shape[1] // a.groups, a.out_channels // a.groups
        for g in range(a.groups):
            xs_, ws = x[:, g * cg:(g + 1) * cg], w[g * cg:(g + 1) * cg]
            for off in np.ndindex(*k):
                sl = tuple(slice(off[i] * d[i], off[i] * d[i] + s[i] * (x.shape[2 + i] - 1) + 1, s[i])
                           for i in range(nd))
                y[(slice(None), slice(g * og, (g + 1) * og), *sl)] += np.einsum(
                    "nc...,co->no...", xs_, ws[(slice(None), slice(None), *off)])
        # padding crops p from both ends of the full result; output_padding keeps op more at the end
        y = y[(slice(None), slice(None), *(slice(p[i], full[i] - p[i]) for i in range(nd)))]
        if b is not None:
            y = y + b.reshape((1, -1) + (1,) * nd)
        return y.astype(np.float32)
    return ref


_CONVT_EXAMPLES = {
    1: (Example(("f32[2, 4, 5]",), {"out_channels": 3, "kernel_size": 4, "stride": 2, "padding": 1}),),
    2: (Example(("f32[2, 4, 3, 5]",), {"out_channels": 6, "kernel_size": 3, "stride": 2, "padding": 1,
                                       "output_padding": 1, "groups": 2}),),
}

for _nd in (1, 2):
    register(OpDef(
        name=f"conv_transpose{_nd}d", attrs=ConvTransposeAttrs,
        positional=("out_channels", "kernel_size", "stride", "padding", "output_padding"),
        infer=_convt_infer(_nd), params=_convt_params(_nd), macs=_convt_macs(_nd),
        categories=frozenset({LAYER}),
        torch=TorchRule(module=_convt_module(_nd), fresh=True),
        numpy=_convt_numpy(_nd), examples=_CONVT_EXAMPLES[_nd],
        doc=f"{_nd}-D transposed convolution over [N, C, ...] input (weight [C_in, C_out/groups, *k] as PyTorch).",
    ))
