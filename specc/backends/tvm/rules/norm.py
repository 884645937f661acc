"""batchnorm (eval mode: running statistics), layernorm (over any one dim), rmsnorm, groupnorm, instancenorm."""
from __future__ import annotations

from tvm import relax

from . import lowering


@lowering("batchnorm")
def _batchnorm(ctx, x):
    # y = (x - mean) / sqrt(var + eps) * w + b == x * scale + shift; with bound weights scale/shift fold to
    # constants and the multiply-add fuses into the producing conv's epilogue
    a = ctx.attrs
    rank = ctx.in_types[0].rank
    c = ctx.in_types[0].shape[1]
    op = relax.op
    scale = op.rsqrt(op.add(ctx.param("running_var"), ctx.const(a.eps, "float32")))
    if a.affine:
        scale = op.multiply(scale, ctx.param("weight"))
    scale = ctx.emit(scale)
    shift = op.negative(op.multiply(ctx.param("running_mean"), scale))
    if a.affine:
        shift = op.add(shift, ctx.param("bias"))
    bshape = (1, c) + (1,) * (rank - 2)
    y = ctx.emit(op.multiply(x, op.reshape(scale, bshape)))
    return op.add(y, op.reshape(ctx.emit(shift), bshape))


@lowering("layernorm")
def _layernorm(ctx, x):
    a = ctx.attrs
    d = ctx.in_types[0].shape[a.dim]
    # affine=False (a hand-written layernorm the fusion pass recognised) has no weight and no bias
    gamma = ctx.param("weight") if a.affine else relax.const(_zeros(d) + 1, "float32")
    beta = ctx.param("bias") if a.affine and a.bias else relax.const(_zeros(d), "float32")
    return relax.op.nn.layer_norm(x, gamma, beta, axes=[a.dim], epsilon=a.eps)


@lowering("rmsnorm")
def _rmsnorm(ctx, x):
    return relax.op.nn.rms_norm(x, ctx.param("weight"), axes=[-1], epsilon=ctx.attrs.eps)


def _zeros(n: int):
    import numpy as np

    return np.zeros((n,), "float32")


@lowering("groupnorm")
def _groupnorm(ctx, x):
    a, t = ctx.attrs, ctx.in_types[0]
    gamma, beta = _affine(ctx, t.shape[1])
    return relax.op.nn.group_norm(x, gamma, beta, num_groups=a.num_groups, channel_axis=1,
                                  axes=list(range(2, t.rank)), epsilon=a.eps)


@lowering("instancenorm")
def _instancenorm(ctx, x):
    t = ctx.in_types[0]
    gamma, beta = _affine(ctx, t.shape[1])
    return relax.op.nn.instance_norm(x, gamma, beta, channel_axis=1, axes=list(range(2, t.rank)),
                                     epsilon=ctx.attrs.eps)


def _affine(ctx, c: int):
    import numpy as np

    if ctx.attrs.affine:
        return ctx.param("weight"), ctx.param("bias")
    return relax.const(np.ones((c,), "float32")), relax.const(_zeros(c))
