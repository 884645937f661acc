"""Pooling: max/avg (1-D, 2-D), global and adaptive."""
from __future__ import annotations

from pydantic import PositiveInt

from ..diagnostics import ShapeError
from ..types import TensorType
from .conv import _squeeze, conv_out
from .registry import Attrs, NoAttrs, OpDef, expect_float, expect_rank, pair, register
from .torch_rule import TorchRule, pyval

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
        if any(2 * pi > ki for pi, ki in zip(p, k)):
            raise ShapeError(f"padding {a.padding} must be at most half the kernel size {a.kernel_size}", "E0305")
        lead = x.rank - nd
        spatial = []
        for i in range(nd):
            size = x.shape[lead + i]
            if a.ceil_mode:
                o = -((-(size + 2 * p[i] - k[i])) // s[i]) + 1
                if isinstance(o, int) and (o - 1) * s[i] >= size + p[i]:
                    o -= 1  # as PyTorch: no last window that would start inside the right padding
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
        if a.stride is not None and a.stride != a.kernel_size:
            extra += f", stride={pyval(_squeeze(a.stride))}"
        if a.padding != 0:
            extra += f", padding={pyval(_squeeze(a.padding))}"
        if a.ceil_mode:
            extra += ", ceil_mode=True"
        return f"F.{fn}({args[0]}, {pyval(_squeeze(a.kernel_size))}{extra})"
    return call


for _nd in (1, 2):
    for _kind in ("max", "avg"):
        register(OpDef(
            name=f"{_kind}pool{_nd}d", attrs=PoolAttrs, positional=("kernel_size", "stride", "padding"),
            infer=_pool_infer(_nd, f"{_kind}pool{_nd}d"),
            torch=TorchRule(call=_pool_call(f"{_kind}_pool{_nd}d")),
            doc=f"{_kind} pooling over the last {_nd} dims.",
        ))


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


for _kind in ("avg", "max"):
    register(OpDef(
        name=f"global_{_kind}pool", attrs=NoAttrs, infer=_global_infer(f"global_{_kind}pool"),
        torch=TorchRule(call=_global_call(_kind)),
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


for _nd in (1, 2):
    for _kind in ("avg", "max"):
        register(OpDef(
            name=f"adaptive_{_kind}pool{_nd}d", attrs=AdaptiveAttrs, positional=("output_size",),
            infer=_adaptive_infer(_nd), torch=TorchRule(call=_adaptive_call(_kind, _nd)),
            doc=f"adaptive {_kind} pooling to a fixed output size.",
        ))
