"""Activations and other shape-preserving unary ops. Dropout is the identity (inference)."""
from __future__ import annotations

from tvm import relax

from . import lowering

_UNARY = {
    "relu": relax.op.nn.relu, "tanh": relax.op.tanh, "sigmoid": relax.op.sigmoid, "silu": relax.op.nn.silu,
    "exp": relax.op.exp, "sqrt": relax.op.sqrt, "rsqrt": relax.op.rsqrt,
}

for _name, _fn in _UNARY.items():
    lowering(_name)(lambda ctx, x, fn=_fn: fn(x))


@lowering("identity", "dropout")
def _identity(ctx, x):
    return x


@lowering("gelu")
def _gelu(ctx, x):
    return relax.op.nn.gelu_tanh(x) if ctx.attrs.approximate == "tanh" else relax.op.nn.gelu(x)


@lowering("softmax")
def _softmax(ctx, x):
    return relax.op.nn.softmax(x, axis=ctx.attrs.dim)


@lowering("log_softmax")
def _log_softmax(ctx, x):
    return relax.op.nn.log_softmax(x, axis=ctx.attrs.dim)


@lowering("leaky_relu")
def _leaky_relu(ctx, x):
    return relax.op.nn.leakyrelu(x, alpha=ctx.attrs.negative_slope)


# ---- issue 14 activations (clip-based ones fuse into the producer's epilogue like relu) -----------------------

def _clip(x, lo, hi):
    return relax.op.clip(x, lo, hi)


@lowering("relu6")
def _relu6(ctx, x):
    return _clip(x, 0.0, 6.0)


@lowering("hardtanh")
def _hardtanh(ctx, x):
    return _clip(x, ctx.attrs.min_val, ctx.attrs.max_val)


@lowering("clamp")
def _clamp(ctx, x):
    a = ctx.attrs
    if a.min is not None and a.max is not None:
        return _clip(x, a.min, a.max)
    if a.min is not None:
        return relax.op.maximum(x, ctx.const(a.min))
    return relax.op.minimum(x, ctx.const(a.max))


@lowering("hardsigmoid")
def _hardsigmoid(ctx, x):
    y = ctx.emit(_clip(ctx.emit(relax.op.add(x, ctx.const(3.0))), 0.0, 6.0))
    return relax.op.divide(y, ctx.const(6.0))


@lowering("hardswish")
def _hardswish(ctx, x):
    return relax.op.multiply(x, ctx.emit(_hardsigmoid(ctx, x)))


@lowering("elu")
def _elu(ctx, x):
    neg = ctx.emit(relax.op.multiply(ctx.const(ctx.attrs.alpha),
                                     ctx.emit(relax.op.subtract(relax.op.exp(relax.op.minimum(x, ctx.const(0.0))),
                                                                ctx.const(1.0)))))
    return relax.op.where(relax.op.greater(x, ctx.const(0.0)), x, neg)


@lowering("softplus")
def _softplus(ctx, x):
    return relax.op.nn.softplus(x, beta=ctx.attrs.beta, threshold=ctx.attrs.threshold)


@lowering("mish")
def _mish(ctx, x):
    return relax.op.multiply(x, ctx.emit(relax.op.tanh(ctx.emit(relax.op.nn.softplus(x)))))


@lowering("glu")
def _glu(ctx, x):
    parts = ctx.emit(relax.op.split(x, 2, axis=ctx.attrs.dim))
    a, b = ctx.emit(relax.TupleGetItem(parts, 0)), ctx.emit(relax.TupleGetItem(parts, 1))
    return relax.op.multiply(a, ctx.emit(relax.op.sigmoid(b)))


lowering("drop_path")(_identity)  # the identity outside training
