"""Binary arithmetic with broadcasting (tensor-tensor or tensor-scalar), negation and matmul."""
from __future__ import annotations

from tvm import relax

from . import lowering

_BINARY = {"add": relax.op.add, "sub": relax.op.subtract, "mul": relax.op.multiply, "div": relax.op.divide,
           "pow": relax.op.power}


def _binary(fn):
    def rule(ctx, *xs):
        dtype = ctx.dtype()
        if len(xs) == 1:
            x, s = xs[0], ctx.const(ctx.attrs.scalar, dtype)
            if ctx.in_types[0].dtype != ctx.out_type.dtype:
                x = ctx.emit(relax.op.astype(x, dtype))
            return fn(s, x) if ctx.attrs.reverse else fn(x, s)
        a, b = (x if t.dtype == ctx.out_type.dtype else ctx.emit(relax.op.astype(x, dtype))
                for x, t in zip(xs, ctx.in_types))
        return fn(a, b)
    return rule


for _name, _fn in _BINARY.items():
    lowering(_name)(_binary(_fn))


@lowering("neg")
def _neg(ctx, x):
    return relax.op.negative(x)


@lowering("matmul")
def _matmul(ctx, a, b):
    return relax.op.matmul(a, b)
