"""Resampling and padding of [N, C, *spatial] maps: upsample/interpolate (nearest, bilinear; scale or size),
pixel_shuffle / pixel_unshuffle (sub-pixel convolution, Shi et al. 2016) and pad (constant, reflect, replicate)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, PositiveInt, model_validator

from ..diagnostics import ShapeError
from ..symbolic import Dim
from ..types import TensorType
from .registry import SHAPE, Attrs, Example, OpDef, expect_float, expect_rank, register
from .torch_rule import TorchRule, kwargs, pyval

_NO_MACS = {"macs": "data movement (bilinear's 4-tap blend is not counted)"}


Scale = Annotated[float, Field(gt=0, allow_inf_nan=False)]  # a finite factor: inf would be a size of infinity


class UpsampleAttrs(Attrs):
    scale_factor: Scale | tuple[Scale, ...] | None = None
    size: PositiveInt | tuple[PositiveInt, ...] | None = None
    mode: Literal["nearest", "bilinear"] = "nearest"
    align_corners: bool = False

    @model_validator(mode="after")
    def _one_of(self):
        if (self.scale_factor is None) == (self.size is None):
            raise ValueError("give exactly one of scale_factor= and size=")
        if self.align_corners and self.mode == "nearest":
            raise ValueError("align_corners applies to bilinear only")
        return self


def _per_dim(v, nd: int) -> tuple:
    return tuple(v) if isinstance(v, tuple) else (v,) * nd


def _upsample_infer(ins: list[TensorType], a: UpsampleAttrs) -> TensorType:
    (x,) = ins
    expect_rank(x, (4,) if a.mode == "bilinear" else (3, 4, 5), f"upsample ({a.mode})")
    expect_float(x, "upsample")
    nd = x.rank - 2
    if a.size is not None:
        size = _per_dim(a.size, nd)
        if len(size) != nd:
            raise ShapeError(f"size= gives {len(size)} sizes for {nd} spatial dims of {x}", "E0305")
        return x.with_shape((*x.shape[:2], *size))
    scale = _per_dim(a.scale_factor, nd)
    if len(scale) != nd:
        raise ShapeError(f"scale_factor= gives {len(scale)} factors for {nd} spatial dims of {x}", "E0305")
    out: list[Dim] = []
    for d, s in zip(x.shape[2:], scale):
        if float(s).is_integer():
            out.append(d * int(s))
        elif isinstance(d, int):
            if int(d * s) < 1:
                raise ShapeError(f"scale_factor={s} shrinks a dim of {d} to {int(d * s)} in {x}", "E0305")
            out.append(int(d * s))
        else:
            raise ShapeError(f"a fractional scale_factor ({s}) needs a static size, got {x}: give size= instead",
                             "E0305")
    return x.with_shape((*x.shape[:2], *out))


def _upsample_call(args, a: UpsampleAttrs, ins) -> str:
    how = (f"size={pyval(a.size)}" if a.size is not None else f"scale_factor={pyval(a.scale_factor)}")
    extra = f", mode={pyval(a.mode)}"
    extra += ", align_corners=True" if a.align_corners else ""
    return f"F.interpolate({args[0]}, {how}{extra})"


def _source_coords(n_in: int, n_out: int, scale, mode: str, align_corners: bool):
    """Where each output index samples the input, as PyTorch's interpolate computes it."""
    import numpy as np

    dst = np.arange(n_out, dtype=np.float64)
    if align_corners:
        return dst * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
    ratio = 1.0 / scale if scale is not None else n_in / n_out
    if mode == "nearest":
        return np.minimum(np.floor(dst * ratio), n_in - 1)
    return np.maximum((dst + 0.5) * ratio - 0.5, 0.0)


def _upsample_numpy(xs, a: UpsampleAttrs, params):
    import numpy as np

    (x,) = xs
    nd = x.ndim - 2
    out_shape = _upsample_infer([TensorType("f32", x.shape)], a).shape[2:]
    scales = _per_dim(a.scale_factor, nd) if a.scale_factor is not None else (None,) * nd
    y = x.astype(np.float64)
    for i in range(nd):
        axis = 2 + i
        src = _source_coords(x.shape[axis], out_shape[i], scales[i], a.mode, a.align_corners)
        if a.mode == "nearest":
            y = np.take(y, src.astype(np.int64), axis=axis)
            continue
        lo = np.floor(src).astype(np.int64)
        hi = np.minimum(lo + 1, x.shape[axis] - 1)
        w = (src - lo).reshape([-1 if j == axis else 1 for j in range(x.ndim)])
        y = np.take(y, lo, axis=axis) * (1 - w) + np.take(y, hi, axis=axis) * w
    return y.astype(np.float32)


for _name in ("upsample", "interpolate"):
    register(OpDef(
        name=_name, attrs=UpsampleAttrs, positional=("scale_factor",), infer=_upsample_infer,
        categories=frozenset({SHAPE}), torch=TorchRule(call=_upsample_call), numpy=_upsample_numpy,
        examples=(Example(("f32[2, 3, 4, 5]",), {"scale_factor": 2}),
                  Example(("f32[2, 3, 4, 5]",), {"size": (7, 9), "mode": "bilinear"}),
                  Example(("f32[1, 2, 3, 4]",), {"scale_factor": 2, "mode": "bilinear", "align_corners": True}),
                  Example(("f32[2, 3, 6]",), {"scale_factor": 3})),
        waive=_NO_MACS,
        doc="resize [N, C, *spatial] by scale_factor= or to size= (mode nearest or bilinear), as F.interpolate.",
    ))


class ShuffleAttrs(Attrs):
    factor: PositiveInt


def _shuffle_infer(ins: list[TensorType], a: ShuffleAttrs) -> TensorType:
    (x,) = ins
    expect_rank(x, (4,), "pixel_shuffle")
    n, c, h, w = x.shape
    r = a.factor
    if not isinstance(c, int) or c % (r * r):
        raise ShapeError(f"pixel_shuffle by {r} needs channels divisible by {r * r}, got {x}", "E0305")
    return x.with_shape((n, c // (r * r), h * r, w * r))


def _unshuffle_infer(ins: list[TensorType], a: ShuffleAttrs) -> TensorType:
    (x,) = ins
    expect_rank(x, (4,), "pixel_unshuffle")
    n, c, h, w = x.shape
    r = a.factor
    for d in (h, w):
        if not isinstance(d, int) or d % r:
            raise ShapeError(f"pixel_unshuffle by {r} needs static heights and widths divisible by {r}, got {x}",
                             "E0305")
    return x.with_shape((n, c * r * r, h // r, w // r))


def _np_shuffle(x, r):
    n, c, h, w = x.shape
    return x.reshape(n, c // (r * r), r, r, h, w).transpose(0, 1, 4, 2, 5, 3).reshape(n, c // (r * r), h * r, w * r)


def _np_unshuffle(x, r):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // r, r, w // r, r).transpose(0, 1, 3, 5, 2, 4).reshape(n, c * r * r, h // r, w // r)


register(OpDef(
    name="pixel_shuffle", attrs=ShuffleAttrs, positional=("factor",), infer=_shuffle_infer,
    categories=frozenset({SHAPE}),
    torch=TorchRule(call=lambda args, a, ins: f"F.pixel_shuffle({args[0]}, {a.factor})"),
    numpy=lambda xs, a, p: _np_shuffle(xs[0], a.factor), examples=(Example(("f32[2, 8, 3, 5]",), {"factor": 2}),),
    waive={"macs": "data movement"},
    doc="[N, C*r*r, H, W] -> [N, C, H*r, W*r] (sub-pixel convolution's rearrangement).",
))

register(OpDef(
    name="pixel_unshuffle", attrs=ShuffleAttrs, positional=("factor",), infer=_unshuffle_infer,
    categories=frozenset({SHAPE}),
    torch=TorchRule(call=lambda args, a, ins: f"F.pixel_unshuffle({args[0]}, {a.factor})"),
    numpy=lambda xs, a, p: _np_unshuffle(xs[0], a.factor), examples=(Example(("f32[2, 3, 4, 6]",), {"factor": 2}),),
    waive={"macs": "data movement"},
    doc="[N, C, H*r, W*r] -> [N, C*r*r, H, W] (the inverse of pixel_shuffle).",
))


class PadAttrs(Attrs):
    pad: tuple[int, ...] = Field(min_length=2)  # PyTorch's order: (left, right) of the last dim, then the one before
    mode: Literal["constant", "reflect", "replicate"] = "constant"
    value: float = 0.0


def _pad_infer(ins: list[TensorType], a: PadAttrs) -> TensorType:
    (x,) = ins
    if len(a.pad) % 2 or len(a.pad) // 2 > x.rank:
        raise ShapeError(f"pad takes (before, after) pairs for at most {x.rank} dims, got {len(a.pad)} values",
                         "E0305")
    if any(p < 0 for p in a.pad):
        raise ShapeError(f"pad amounts must be >= 0, got {a.pad} (cropping is slicing)", "E0305")
    shape = list(x.shape)
    for i in range(len(a.pad) // 2):
        d = x.rank - 1 - i
        if a.mode == "reflect" and isinstance(shape[d], int) and max(a.pad[2 * i:2 * i + 2]) >= shape[d]:
            raise ShapeError(f"reflect padding {max(a.pad[2 * i:2 * i + 2])} must be smaller than dim {d} "
                             f"({shape[d]})", "E0305")
        shape[d] = shape[d] + a.pad[2 * i] + a.pad[2 * i + 1]
    if a.mode != "constant":
        expect_float(x, f"pad ({a.mode})")
        k = len(a.pad) // 2
        if k > 3 or x.rank not in (k + 1, k + 2):  # F.pad's non-constant modes: the padded dims and one or two leading ones
            raise ShapeError(f"mode=\"{a.mode}\" pads the last 1-3 dims of a tensor with one or two more dims: "
                             f"{k} padded dim(s) need rank {k + 1} or {k + 2}, got {x}", "E0305")
        if a.value != 0.0:
            raise ShapeError(f"value={a.value} fills only mode=\"constant\" padding; mode=\"{a.mode}\" copies the "
                             "input's own values", "E0305")
    return x.with_shape(tuple(shape))


def _pad_call(args, a: PadAttrs, ins) -> str:
    extra = kwargs(a, ["mode", "value"], {"mode": "constant", "value": 0.0})
    return f"F.pad({args[0]}, {pyval(a.pad)}{extra})"


def pad_widths(a: PadAttrs, rank: int) -> list[tuple[int, int]]:
    """(before, after) for every dim, first dim first."""
    widths = [(0, 0)] * rank
    for i in range(len(a.pad) // 2):
        widths[rank - 1 - i] = (a.pad[2 * i], a.pad[2 * i + 1])
    return widths


def _pad_numpy(xs, a: PadAttrs, params):
    import numpy as np

    (x,) = xs
    widths = pad_widths(a, x.ndim)
    if a.mode == "constant":
        return np.pad(x, widths, constant_values=a.value)
    return np.pad(x, widths, mode={"reflect": "reflect", "replicate": "edge"}[a.mode])


register(OpDef(
    name="pad", attrs=PadAttrs, positional=("pad",), infer=_pad_infer, categories=frozenset({SHAPE}),
    torch=TorchRule(call=_pad_call), numpy=_pad_numpy,
    examples=(Example(("f32[2, 3, 4, 5]",), {"pad": (1, 2, 0, 1), "value": 0.5}),
              Example(("f32[2, 3, 6]",), {"pad": (2, 1), "mode": "reflect"}),
              Example(("f32[2, 3, 4, 5]",), {"pad": (1, 1, 2, 2), "mode": "replicate"})),
    waive={"macs": "data movement"},
    doc="pad the last dims: pad=(left, right[, top, bottom, ...]) in PyTorch's order; constant, reflect, replicate.",
))
