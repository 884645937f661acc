"""sdpa: softmax(q @ k^T * scale + mask) @ v over [..., T, d] operands.

On CPU it lowers to relax.op.nn.attention, which works in BSNH layout ([batch, seq, heads, head_dim]) and which
specc's CPU schedules give a fused kernel; specs usually permute [B, T, H, d] -> [B, H, T, d] before sdpa and back
after it, and those permutes cancel against the ones added here. On CUDA it lowers to two batched matmuls and a
softmax (_attention_matmuls): the CUDA pipeline's dlight rules tile those, while relax.op.nn.attention legalizes to
loops that dlight leaves to its fallback rule, one thread per output element (GPT-2 at 8x1024 on an H200: 554.7 ms,
10.9x torch, nearly all of it in attention)."""
from __future__ import annotations

import math

from tvm import relax

from ....ops.registry import numel
from . import lowering, permute

MATMULS_ON = ("cuda",)  # the devices whose attention lowers to _attention_matmuls (tests add "cpu" to check it)


def _to_nhtd(ctx, x, t, lead):
    """[*lead, T, d] (after broadcasting) -> [N, H, T, d] with H = lead[-1], N = the rest."""
    full = (*lead, *t.shape[-2:])
    if tuple(t.shape) != full:
        x = ctx.emit(relax.op.broadcast_to(x, [ctx.dim(d) for d in full]))
    if len(lead) != 2:
        heads = lead[-1] if lead else 1
        x = ctx.emit(relax.op.reshape(x, [ctx.dim(numel(lead[:-1])), ctx.dim(heads), *ctx.shape(t)[-2:]]))
    return x


def _to_bsnh(ctx, x, t, lead):
    """[*lead, T, d] (after broadcasting) -> [N, T, H, d]."""
    return permute(ctx, _to_nhtd(ctx, x, t, lead), [0, 2, 1, 3])


def _attention_matmuls(ctx, q, k, v, bias, scale: float):
    """[N, H, T, d] operands -> [N, H, Tq, dv]: softmax(q @ k^T * scale + bias) @ v, as batched matmuls."""
    scores = ctx.emit(relax.op.matmul(q, permute(ctx, k, [0, 1, 3, 2])))
    scores = ctx.emit(relax.op.multiply(scores, ctx.const(scale)))
    if bias is not None:
        scores = ctx.emit(relax.op.add(scores, bias))
    return ctx.emit(relax.op.matmul(ctx.emit(relax.op.nn.softmax(scores, axis=-1)), v))


def _repeat_heads(ctx, x, t, heads: int):
    """Grouped-query attention: each key/value head serves heads/Hkv consecutive query heads (repeat_interleave)."""
    group = heads // t.shape[-3]
    x = ctx.emit(relax.op.repeat(x, group, axis=t.rank - 3))
    return x, t.with_shape((*t.shape[:-3], heads, *t.shape[-2:]))


def _as_bias(ctx, keep):
    """A boolean mask -> an additive one: 0 where `keep`, -inf elsewhere."""
    zero, neg = ctx.const(0.0, ctx.dtype()), ctx.const(float("-inf"), ctx.dtype())
    return ctx.emit(relax.op.where(keep, zero, neg))


def _plus(ctx, mask, bias):
    return bias if mask is None else ctx.emit(relax.op.add(mask, bias))


def _band_bias(ctx, t, s, window: int | None):
    """[T, S]: 0 where key s is at or before query t (top-left aligned, as relax's causal_mask="TopLeft") and, with
    a window, within it (s > t - window); -inf elsewhere."""
    rows = ctx.emit(relax.op.reshape(relax.op.arange(0, ctx.dim(t), 1, "int64"), [ctx.dim(t), 1]))
    cols = ctx.emit(relax.op.reshape(relax.op.arange(0, ctx.dim(s), 1, "int64"), [1, ctx.dim(s)]))
    if window is None:
        return _as_bias(ctx, ctx.emit(relax.op.less_equal(cols, rows)))
    return _as_bias(ctx, ctx.emit(relax.op.greater(ctx.emit(relax.op.add(cols, ctx.const(window, "int64"))), rows)))


@lowering("sdpa")
def _sdpa(ctx, q, k, v, mask=None):
    a = ctx.attrs
    qt, kt, vt = ctx.in_types[:3]
    lead = tuple(ctx.out_type.shape[:-2])
    if qt.rank >= 4 and kt.rank >= 4 and kt.shape[-3] not in (qt.shape[-3], 1):
        k, kt = _repeat_heads(ctx, k, kt, qt.shape[-3])
        v, vt = _repeat_heads(ctx, v, vt, qt.shape[-3])
    matmuls = ctx.target is not None and ctx.target.device in MATMULS_ON
    to_4d = _to_nhtd if matmuls else _to_bsnh
    q4, k4, v4 = (to_4d(ctx, x, t, lead) for x, t in ((q, qt), (k, kt), (v, vt)))
    bias = None
    if mask is not None:
        mt = ctx.in_types[3]
        if mt.dtype == "bool":
            mask = _as_bias(ctx, mask)
    if a.window is not None:  # relax legalizes no window_size: the band's lower edge as a bias
        mask = _plus(ctx, mask, _band_bias(ctx, qt.shape[-2], kt.shape[-2], a.window))
    if matmuls and a.causal:  # the matmuls take causality as a bias too
        mask = _plus(ctx, mask, _band_bias(ctx, qt.shape[-2], kt.shape[-2], None))
    if mask is not None and matmuls and len(lead) == 2:
        bias = mask  # added to the [N, H, T, S] scores with broadcasting, not materialised at their size
    elif mask is not None:
        scores = (*lead, qt.shape[-2], kt.shape[-2])
        heads = lead[-1] if lead else 1
        bias = ctx.emit(relax.op.broadcast_to(mask, [ctx.dim(d) for d in scores]))
        if len(lead) != 2:
            bias = ctx.emit(relax.op.reshape(bias, [ctx.dim(numel(lead[:-1])), ctx.dim(heads),
                                                    ctx.dim(scores[-2]), ctx.dim(scores[-1])]))
    if matmuls:
        scale = a.scale if a.scale is not None else 1 / math.sqrt(qt.shape[-1])
        y = _attention_matmuls(ctx, q4, k4, v4, bias, scale)
    else:
        y = ctx.emit(relax.op.nn.attention(q4, k4, v4, bias, scale=a.scale,
                                           causal_mask="TopLeft" if a.causal else None))
        y = permute(ctx, y, [0, 2, 1, 3])  # [N, H, Tq, dv]
    if len(lead) != 2:
        y = relax.op.reshape(y, ctx.shape())
    return y
