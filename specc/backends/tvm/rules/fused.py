"""Ops made by the fusion passes: `fused` (conv/linear, optional batchnorm, epilogue of residual adds and
activations) and `merged_linear` (sibling linears as one matmul). Both reuse the plain ops' rules, with each
absorbed layer's own weights; TVM's FuseOps then fuses the epilogue into the kernel again."""
from __future__ import annotations

from tvm import relax

from ....ops.fused import base_attrs, bn_attrs
from . import lowering

_ACTIVATIONS = {"relu": relax.op.nn.relu, "silu": relax.op.nn.silu, "tanh": relax.op.tanh,
                "sigmoid": relax.op.sigmoid, "gelu": relax.op.nn.gelu, "gelu_tanh": relax.op.nn.gelu_tanh}


def _apply(ctx, sub, *args):
    from ....ops import registry

    value = registry.get(sub.node.target).tvm(sub, *args)
    return value if isinstance(value, relax.Var) else ctx.emit(value)


@lowering("fused")
def _fused(ctx, x, *residuals):
    a = ctx.attrs
    x_t = ctx.in_types[0]
    base = ctx.as_op(a.base, base_attrs(a), a.layer, [x_t])
    y = _apply(ctx, base, x)
    if a.bn is not None:
        y = _apply(ctx, ctx.as_op("batchnorm", bn_attrs(a), a.bn, [base.out_type]), y)
    rest = iter(residuals)
    for step in a.epilogue:
        y = ctx.emit(relax.op.add(y, next(rest)) if step == "add" else _ACTIVATIONS[step](y))
    return y


@lowering("merged_linear")
def _merged_linear(ctx, x):
    a = ctx.attrs
    w = ctx.emit(relax.op.concat([ctx.param(f"{n}.weight") for n in a.layers], axis=0))
    b = ctx.emit(relax.op.concat([ctx.param(f"{n}.bias") for n in a.layers], axis=0)) if a.bias else None
    y = ctx.emit(relax.op.linear(x, w, b))
    cuts, total = [], 0
    for o in a.out_features[:-1]:
        total += o
        cuts.append(total)
    return relax.op.split(y, cuts, axis=-1)
