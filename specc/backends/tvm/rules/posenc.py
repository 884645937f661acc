"""Position encodings: learned and sinusoidal tables added to x[..., T, d], rotary rotation of q/k, and the
learned class token. Tables are computed like the PyTorch helpers do (float32)."""
from __future__ import annotations

import math

import numpy as np
from tvm import relax

from . import lowering


def _first_rows(ctx, table, t):
    """table[:T] for a [max_len, d] table (T may be symbolic)."""
    return ctx.emit(relax.op.strided_slice(table, [0], [0], [ctx.dim(t)], assume_inbound=True))


@lowering("learned_pos")
def _learned(ctx, x):
    return relax.op.add(x, _first_rows(ctx, ctx.param("weight"), ctx.in_types[0].shape[-2]))


def sinusoid_table(max_len: int, dim: int, base: float) -> np.ndarray:
    t = np.arange(max_len, dtype=np.float32)[:, None]
    inv_freq = np.exp(np.arange(0, dim, 2, dtype=np.float32) * np.float32(-math.log(base) / dim))
    pe = np.zeros((max_len, dim), np.float32)
    pe[:, 0::2] = np.sin(t * inv_freq)
    pe[:, 1::2] = np.cos(t * inv_freq)
    return pe


@lowering("sinusoidal_pos")
def _sinusoidal(ctx, x):
    # a non-persistent buffer in PyTorch (not in the state_dict): a constant here
    xt = ctx.in_types[0]
    table = relax.const(sinusoid_table(ctx.attrs.max_len, xt.shape[-1], ctx.attrs.base))
    return relax.op.add(x, _first_rows(ctx, table, xt.shape[-2]))


@lowering("rope")
def _rope(ctx, x):
    """Feature pair i of position t turns by t * base^(-2i/d); pairs (i, i + d/2), or (2i, 2i + 1) interleaved."""
    xt = ctx.in_types[0]
    d, t = xt.shape[-1], xt.shape[-2]
    inv_freq = relax.const(np.float32(ctx.attrs.base) ** -(np.arange(0, d, 2, dtype=np.float32) / np.float32(d)))
    pos = ctx.emit(relax.op.arange(relax.prim_value(0), relax.prim_value(ctx.dim(t)), dtype="float32"))
    angle = ctx.emit(relax.op.multiply(relax.op.expand_dims(pos, 1), inv_freq))  # [T, d/2]
    cos, sin = ctx.emit(relax.op.cos(angle)), ctx.emit(relax.op.sin(angle))
    last = xt.rank - 1
    if ctx.attrs.interleaved:
        x1 = ctx.emit(relax.op.strided_slice(x, [last], [0], [d], [2]))
        x2 = ctx.emit(relax.op.strided_slice(x, [last], [1], [d], [2]))
    else:
        x1 = ctx.emit(relax.op.strided_slice(x, [last], [0], [d // 2]))
        x2 = ctx.emit(relax.op.strided_slice(x, [last], [d // 2], [d]))
    op = relax.op
    a = ctx.emit(op.subtract(op.multiply(x1, cos), op.multiply(x2, sin)))
    b = ctx.emit(op.add(op.multiply(x2, cos), op.multiply(x1, sin)))
    if ctx.attrs.interleaved:
        return op.reshape(ctx.emit(op.stack([a, b], axis=last + 1)), ctx.shape())
    return op.concat([a, b], axis=last)


@lowering("cls_token")
def _cls_token(ctx, x):
    xt = ctx.in_types[0]
    tok = ctx.emit(relax.op.broadcast_to(ctx.param("weight"), [ctx.dim(xt.shape[0]), 1, xt.shape[-1]]))
    return relax.op.concat([tok, x], axis=1)


@lowering("parameter")
def _parameter(ctx):
    return ctx.param("weight")


@lowering("sincos")
def _sincos(ctx):
    from ....ops.param import sincos_table

    a = ctx.attrs
    return relax.const(sincos_table(a.length, a.dim, a.layout, a.base))


@lowering("timestep_embedding")
def _timestep_embedding(ctx, t):
    from ....ops.timestep import frequencies

    a = ctx.attrs
    tf = t if ctx.in_types[0].dtype == "f32" else ctx.emit(relax.op.astype(t, "float32"))
    angle = ctx.emit(relax.op.multiply(relax.op.expand_dims(tf, 1), relax.const(frequencies(a)[None, :])))
    sin, cos = ctx.emit(relax.op.sin(angle)), ctx.emit(relax.op.cos(angle))
    return relax.op.concat([cos, sin] if a.flip_sin_to_cos else [sin, cos], axis=1)
