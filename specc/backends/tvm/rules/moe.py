"""Top-k mixture of experts, dense form: every expert runs on every token and a [N, E] gate matrix (the top-k
routing weights, zero elsewhere) combines them. Exact, works with a symbolic token count N, and needs no
data-dependent shapes; it does E/k times the expert work of a gather/dispatch form (fine for small E).

Routing as in specc/ops/moe.py: softmax before (optionally renormalised) or after top-k; with a capacity factor
each expert keeps its first ceil(c * N * k / E) (token, slot) pairs, slot-major (all first choices first)."""
from __future__ import annotations

from tvm import relax

from ....ops.registry import numel
from . import lowering


@lowering("moe")
def _moe(ctx, x):
    a, op = ctx.attrs, relax.op
    xt = ctx.in_types[0]
    d, e, k = xt.shape[-1], a.experts, a.top_k
    tokens = ctx.emit(op.reshape(x, [ctx.dim(numel(xt.shape[:-1])), d]))  # [N, d]
    logits = ctx.emit(op.linear(tokens, ctx.param("router.weight")))  # [N, E]
    if a.softmax == "after":
        top = ctx.emit(op.topk(logits, k, axis=-1, ret_type="both", dtype="int64"))
        weights = ctx.emit(op.nn.softmax(ctx.emit(relax.TupleGetItem(top, 0)), axis=-1))
    else:
        probs = ctx.emit(op.nn.softmax(logits, axis=-1))
        top = ctx.emit(op.topk(probs, k, axis=-1, ret_type="both", dtype="int64"))
        weights = ctx.emit(relax.TupleGetItem(top, 0))
        if a.renormalize:
            weights = ctx.emit(op.divide(weights, op.sum(weights, axis=[-1], keepdims=True)))
    chosen = ctx.emit(relax.TupleGetItem(top, 1))  # [N, k]
    one, zero = relax.prim_value(1.0, "float32"), relax.prim_value(0.0, "float32")
    picks = ctx.emit(op.one_hot(chosen, one, zero, e, axis=-1))  # [N, k, E]
    if a.capacity_factor is not None:
        picks = ctx.emit(op.multiply(picks, _within_capacity(ctx, picks, a)))
    gates = ctx.emit(op.sum(op.multiply(picks, op.expand_dims(weights, -1)), axis=[1]))  # [N, E]
    out = None
    for i in range(e):
        (y,) = ctx.lower_graph(a.expert, f"experts.{i}.", [tokens])
        g = ctx.emit(op.strided_slice(gates, [1], [i], [i + 1]))
        term = ctx.emit(op.multiply(y, g))
        out = term if out is None else ctx.emit(op.add(out, term))
    if a.shared is not None:
        for i in range(a.shared_experts):
            (y,) = ctx.lower_graph(a.shared, f"shared.{i}.", [tokens])
            out = ctx.emit(op.add(out, y))
    return op.reshape(out, ctx.shape())


def _within_capacity(ctx, picks, a):
    """[N, k, 1] mask of the (token, slot) pairs each expert keeps: its first `capacity` pairs, slot-major."""
    op = relax.op
    slot_major = ctx.emit(op.permute_dims(picks, [1, 0, 2]))  # [k, N, E]
    tokens = ctx.dim(numel(ctx.in_types[0].shape[:-1]))
    flat = ctx.emit(op.reshape(slot_major, [-1, a.experts]))  # [k*N, E]
    seen = ctx.emit(op.cumsum(flat, axis=0))  # pairs routed to each expert so far, this one included
    rank = ctx.emit(op.sum(op.multiply(seen, flat), axis=[1], keepdims=True))  # 1-based rank within its expert
    n = ctx.emit(op.sum(op.ones_like(op.strided_slice(flat, [1], [0], [1]))))  # k*N as a float scalar
    capacity = ctx.emit(op.ceil(op.multiply(n, ctx.const(a.capacity_factor / a.experts, "float32"))))
    keep = ctx.emit(op.astype(op.less_equal(rank, capacity), "float32"))  # [k*N, 1]
    keep = ctx.emit(op.reshape(keep, [a.top_k, tokens, 1]))
    return ctx.emit(op.permute_dims(keep, [1, 0, 2]))  # [N, k, 1]
