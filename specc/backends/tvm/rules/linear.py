"""linear (y = x @ W.T + b; W.T folds away once the weights are bound) and embedding (a table lookup)."""
from __future__ import annotations

from tvm import relax

from . import lowering


@lowering("linear")
def _linear(ctx, x):
    bias = ctx.param("bias") if ctx.attrs.bias else None
    return relax.op.linear(x, ctx.param("weight"), bias)


@lowering("embedding")
def _embedding(ctx, idx):
    if ctx.in_types[0].dtype not in ("i32", "i64"):
        idx = ctx.emit(relax.op.astype(idx, "int64"))
    return relax.op.take(ctx.param("weight"), idx, axis=0)
