"""Pooling: max/avg (1-D, 2-D, 3-D), global and adaptive."""
from __future__ import annotations

from pydantic import PositiveInt

from ..diagnostics import ShapeError
from ..types import TensorType
from .conv import _squeeze, conv_out
from .registry import NO_MACS, Attrs, Example, NoAttrs, OpDef, expect_float, expect_rank, pair, register
from .torch_rule import TorchRule, pyval, written

IntOrPair = PositiveInt | tuple[PositiveInt, ...]


class PoolAttrs(Attrs):
    kernel_size: IntOrPair
    stride: IntOrPair | None = None  # default: kernel_size, as in PyTorch
    padding: int | tuple[int, ...] = 0
    ceil_mode: bool = False


def _pool_infer(nd: int, name: str):
    def infer(ins: list[TensorType], a: PoolAttrs) -> TensorType:
        (x,) = ins
        expect_rank(x, (nd + 2, nd + 1), name)
        expect_float(x, name)  # PyTorch pools floating-point tensors only
        k = pair(a.kernel_size, nd)
        s = pair(a.stride if a.stride is not None else a.kernel_size, nd)
        p = pair(a.padding, nd)
        if any(pi < 0 for pi in p):
            raise ShapeError(f"padding {a.padding} must be >= 0", "E0305")
        if any(2 * pi > ki for pi, ki in zip(p, k)):
            raise ShapeError(f"padding {a.padding} must be at most half the kernel size {a.kernel_size}", "E0305")
        lead = x.rank - nd
        spatial = []
        for i in range(nd):
            size = x.shape[lead + i]
            if name == "avgpool3d" and isinstance(size, int) and size + 2 * p[i] < k[i]:
                # PyTorch's avg_pool3d refuses it even where ceil_mode would give one window (the others don't)
                raise ShapeError(f"pool window {k[i]} is larger than the input's spatial size {size}"
                                 + (f" padded by {p[i]}" if p[i] else ""))
            if a.ceil_mode:
                o = -((-(size + 2 * p[i] - k[i])) // s[i]) + 1
                if isinstance(o, int) and (o - 1) * s[i] >= size + p[i]:
                    o -= 1  # as PyTorch: no last window that would start inside the right padding
                elif not isinstance(o, int) and s[i] > k[i] - p[i]:  # then that rule never applies
                    raise ShapeError(f"ceil_mode=true with stride {s[i]} > kernel {k[i]} - padding {p[i]}: the output "
                                     f"size of {size} positions depends on {size} mod {s[i]}; give a static size "
                                     "or ceil_mode=false", "E0305")
            else:
                o = conv_out(size, k[i], s[i], p[i], 1)
            if isinstance(o, int) and o <= 0:
                raise ShapeError(f"pool window {k[i]} is larger than the input's spatial size {size}")
            spatial.append(o)
        return x.with_shape((*x.shape[:lead], *spatial))
    return infer


def _pool_call(fn: str):
    def call(args, a: PoolAttrs, ins) -> str:
        extra = ""
        if a.stride is not None and written(a.stride, a.kernel_size):
            extra += f", stride={pyval(_squeeze(a.stride))}"
        if written(a.padding, 0):
            extra += f", padding={pyval(_squeeze(a.padding))}"
        if a.ceil_mode:
            extra += ", ceil_mode=True"
        return f"F.{fn}({args[0]}, {pyval(_squeeze(a.kernel_size))}{extra})"
    return call


def _pool_numpy(kind: str, nd: int):
    """Windows over the last nd dims; max pads with -inf, avg counts the zero padding (PyTorch's defaults)."""
    def ref(xs, a: PoolAttrs, params):
        import numpy as np

        (x,) = xs
        k = pair(a.kernel_size, nd)
        s = pair(a.stride if a.stride is not None else a.kernel_size, nd)
        p = pair(a.padding, nd)
        out = _pool_infer(nd, "pool")([_Shape(x.shape)], a).shape[x.ndim - nd:]
        fill = -np.inf if kind == "max" else 0.0
        extra = [max(0, (o - 1) * si + ki - (n + pi)) for o, si, ki, n, pi in zip(out, s, k, x.shape[-nd:], p)]
        xp = np.pad(x.astype(np.float64), [(0, 0)] * (x.ndim - nd) + [(pi, pi + e) for pi, e in zip(p, extra)],
                    constant_values=fill)
        acc = None
        for off in np.ndindex(*k):
            sl = tuple(slice(off[i], off[i] + s[i] * (out[i] - 1) + 1, s[i]) for i in range(nd))
            win = xp[(Ellipsis, *sl)]
            acc = win if acc is None else (np.maximum(acc, win) if kind == "max" else acc + win)
        return (acc if kind == "max" else acc / np.prod(k)).astype(np.float32)
    return ref


class _Shape:
    """Just enough of a TensorType for the shape rule (the reference reuses it for the output size)."""

    dtype = "f32"  # the references run on float arrays

    def __init__(self, shape):
        self.shape, self.rank = tuple(shape), len(shape)

    def with_shape(self, shape):
        return _Shape(shape)


_POOL_EXAMPLES = {
    1: (Example(("f32[2, 3, 9]",), {"kernel_size": 3, "stride": 2, "padding": 1}),),
    2: (Example(("f32[2, 3, 7, 8]",), {"kernel_size": 2}),),
    3: (Example(("f32[1, 2, 5, 6, 7]",), {"kernel_size": 3, "stride": 2, "padding": 1}),
        Example(("f32[2, 4, 4, 6]",), {"kernel_size": 2})),
}

for _nd in (1, 2, 3):
    for _kind in ("max", "avg"):
        register(OpDef(
            name=f"{_kind}pool{_nd}d", attrs=PoolAttrs, positional=("kernel_size", "stride", "padding"),
            infer=_pool_infer(_nd, f"{_kind}pool{_nd}d"),
            torch=TorchRule(call=_pool_call(f"{_kind}_pool{_nd}d")),
            numpy=_pool_numpy(_kind, _nd), examples=_POOL_EXAMPLES[_nd],
            waive={"macs": "comparisons and additions only"},
            doc=f"{_kind} pooling over the last {_nd} dims.",
        ))


def _windows(nd: int, x, out_sizes, starts, ends):
    """For each output position over the last nd dims: (output index, the window's slices of x)."""
    import itertools

    for idx in itertools.product(*(range(o) for o in out_sizes)):
        yield idx, tuple(slice(starts[i](idx[i]), ends[i](idx[i])) for i in range(nd))


def _global_infer(name: str):
    def infer(ins: list[TensorType], a) -> TensorType:
        (x,) = ins
        expect_rank(x, (3, 4), name)
        expect_float(x, name)
        return x.with_shape((*x.shape[:2], *([1] * (x.rank - 2))))
    return infer


def _global_call(kind: str):
    def call(args, a, ins) -> str:
        nd = ins[0].rank - 2
        return f"F.adaptive_{kind}_pool{nd}d({args[0]}, 1)"
    return call


def _np_global(kind: str):
    def ref(xs, a, p):
        x = xs[0].astype("float64")
        axes = tuple(range(2, x.ndim))
        return x.mean(axes, keepdims=True) if kind == "avg" else x.max(axes, keepdims=True)
    return ref


for _kind in ("avg", "max"):
    register(OpDef(
        name=f"global_{_kind}pool", attrs=NoAttrs, infer=_global_infer(f"global_{_kind}pool"),
        torch=TorchRule(call=_global_call(_kind)),
        numpy=_np_global(_kind), examples=(Example(("f32[2, 3, 4, 5]",)), Example(("f32[2, 3, 6]",))),
        waive={"macs": NO_MACS},
        doc=f"global {_kind} pooling: [N, C, ...] -> [N, C, 1, ...] (keeps dims, like torchvision).",
    ))


class AdaptiveAttrs(Attrs):
    output_size: IntOrPair


def _adaptive_infer(nd: int):
    def infer(ins: list[TensorType], a: AdaptiveAttrs) -> TensorType:
        (x,) = ins
        expect_rank(x, (nd + 2, nd + 1), f"adaptive pool {nd}d")
        expect_float(x, f"adaptive pool {nd}d")
        return x.with_shape((*x.shape[:-nd], *pair(a.output_size, nd)))
    return infer


def _adaptive_call(kind: str, nd: int):
    def call(args, a: AdaptiveAttrs, ins) -> str:
        return f"F.adaptive_{kind}_pool{nd}d({args[0]}, {pyval(_squeeze(a.output_size))})"
    return call


def _np_adaptive(nd: int, kind: str):
    """PyTorch's adaptive windows: output i of n over length L reads [floor(i L / n), ceil((i + 1) L / n))."""
    def ref(xs, a: AdaptiveAttrs, p):
        import numpy as np

        x = xs[0].astype(np.float64)
        outs, size = pair(a.output_size, nd), x.shape[-nd:]
        out = np.zeros((*x.shape[:-nd], *outs))
        lead = (slice(None),) * (x.ndim - nd)
        starts = [lambda o, i=i: (o * size[i]) // outs[i] for i in range(nd)]
        ends = [lambda o, i=i: -((-(o + 1) * size[i]) // outs[i]) for i in range(nd)]
        for idx, win in _windows(nd, x, outs, starts, ends):
            patch = x[lead + win].reshape(*x.shape[:-nd], -1)
            out[lead + idx] = patch.max(-1) if kind == "max" else patch.mean(-1)
        return out
    return ref


ADAPTIVE_EXAMPLES = {
    1: (Example(("f32[2, 3, 10]",), {"output_size": 4}), Example(("f32[1, 2, 5]",), {"output_size": 5})),
    2: (Example(("f32[2, 3, 7, 9]",), {"output_size": (3, 4)}), Example(("f32[1, 2, 6, 6]",), {"output_size": 1})),
}

for _nd in (1, 2):
    for _kind in ("avg", "max"):
        register(OpDef(
            name=f"adaptive_{_kind}pool{_nd}d", attrs=AdaptiveAttrs, positional=("output_size",),
            infer=_adaptive_infer(_nd), torch=TorchRule(call=_adaptive_call(_kind, _nd)),
            numpy=_np_adaptive(_nd, _kind), examples=ADAPTIVE_EXAMPLES[_nd], waive={"macs": NO_MACS},
            doc=f"adaptive {_kind} pooling to a fixed output size.",
        ))
