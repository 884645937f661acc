"""T5 relative position bias [1, heads, T, T], computed in the graph exactly as the PyTorch module does it (the same
float32 operations on the bucket boundaries), so a symbolic T needs no table."""
from __future__ import annotations

import math

from tvm import relax

from . import lowering


@lowering("rel_pos_bias")
def _rel_pos_bias(ctx, x):
    a, op = ctx.attrs, relax.op
    t = ctx.dim(ctx.in_types[0].shape[-2])
    pos = ctx.emit(op.arange(relax.prim_value(0), relax.prim_value(t), dtype="int64"))
    offset = ctx.emit(op.subtract(op.expand_dims(pos, 0), op.expand_dims(pos, 1)))  # [T, T]: key - query
    buckets = a.num_buckets
    i64 = lambda v: relax.const(v, "int64")  # noqa: E731
    if a.causal:
        dist = ctx.emit(op.maximum(op.negative(offset), i64(0)))
        out = None
    else:
        buckets //= 2
        out = ctx.emit(op.multiply(op.astype(op.greater(offset, i64(0)), "int64"), i64(buckets)))
        dist = ctx.emit(op.abs(offset))
    exact = buckets // 2
    ratio = op.divide(op.maximum(op.astype(dist, "float32"), relax.const(1.0, "float32")),
                      relax.const(float(exact), "float32"))
    scaled = op.multiply(op.divide(op.log(ratio), relax.const(math.log(a.max_distance / exact), "float32")),
                         relax.const(float(buckets - exact), "float32"))
    far = ctx.emit(op.add(op.astype(scaled, "int64"), i64(exact)))
    far = ctx.emit(op.minimum(far, i64(buckets - 1)))
    bucket = ctx.emit(op.where(op.less(dist, i64(exact)), dist, far))
    if out is not None:
        bucket = ctx.emit(op.add(out, bucket))
    bias = ctx.emit(op.take(ctx.param("weight"), bucket, axis=0))  # [T, T, heads]
    bias = ctx.emit(op.expand_dims(op.permute_dims(bias, [2, 0, 1]), 0))  # [1, heads, T, T]
    if a.causal:
        bias = op.where(op.greater(offset, i64(0)), relax.const(float("-inf"), "float32"), bias)
    return bias
