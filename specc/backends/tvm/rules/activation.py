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
