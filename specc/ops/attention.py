"""Attention. `sdpa` is the core op (softmax(q @ k^T * scale + mask) @ v over [..., T, d] tensors), emitted as
F.scaled_dot_product_attention and produced by the attention-fusion pass from hand-written patterns.

Multi-head attention itself is a block of linears, reshapes and sdpa (specs/std/transformer.nn), so that specs
read like the paper and the fusion and TVM passes see one core op. sdpa adds to the plain product:
  * grouped-query attention: q [B, H, T, d] with k, v [B, Hkv, S, d] where Hkv divides H;
  * a mask (bool, true = attend, or additive float) broadcastable to the scores [B, H, T, S], also with causal;
  * a sliding window with causal (`window=w`, Mistral): query t sees the keys t - w < s <= t."""
from __future__ import annotations

from pydantic import Field, PositiveInt

from ..diagnostics import ShapeError
from ..hyper import HInt, rendering_active
from ..types import TensorType
from .elementwise import broadcast
from .registry import Attrs, Example, OpDef, expect_float, numel, register
from .torch_rule import TorchRule, pyval, written


class SDPAAttrs(Attrs):
    causal: bool = False
    scale: float | None = None  # default 1/sqrt(d)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    window: PositiveInt | None = None  # with causal: query t sees the last `window` keys, t - window < s <= t


def _sdpa_infer(ins: list[TensorType], a: SDPAAttrs) -> TensorType:
    q, k, v = ins[:3]
    if a.window is not None and not a.causal:
        raise ShapeError(f"sdpa window={a.window} is a sliding window over causal attention: set causal=true",
                         "E0305")
    for i, t in enumerate((q, k, v)):
        expect_float(t, "sdpa", i)
        if t.rank < 2:
            raise ShapeError(f"sdpa operand {i} must be at least rank 2 ([..., T, d]), got {t}", "E0303", i)
    if q.shape[-1] != k.shape[-1]:
        raise ShapeError(f"query head dim {q.shape[-1]} differs from key head dim {k.shape[-1]}", "E0301", 1)
    if k.shape[-2] != v.shape[-2]:
        raise ShapeError(f"keys have length {k.shape[-2]}, values have length {v.shape[-2]}", "E0301", 2)
    kbatch = k.shape[:-2]
    if _gqa(q, k):
        if not (isinstance(q.shape[-3], int) and isinstance(k.shape[-3], int)) or q.shape[-3] % k.shape[-3]:
            raise ShapeError(f"grouped-query attention: keys/values have {k.shape[-3]} heads, which does not divide "
                             f"the {q.shape[-3]} query heads", "E0301", 1)
        if v.shape[-3] != k.shape[-3]:
            raise ShapeError(f"keys have {k.shape[-3]} heads, values have {v.shape[-3]}", "E0301", 2)
        kbatch = (*k.shape[:-3], q.shape[-3])
    batch = broadcast(TensorType(q.dtype, q.shape[:-2]), TensorType(k.dtype, kbatch))
    if len(ins) == 4:
        m = ins[3]
        try:
            broadcast(m, TensorType(q.dtype, (*batch, q.shape[-2], k.shape[-2])))
        except ShapeError:
            raise ShapeError(f"mask {m} does not broadcast to the scores [{', '.join(map(str, (*batch, q.shape[-2], k.shape[-2])))}]",
                             "E0301", 3) from None
    return TensorType(q.dtype, (*batch, q.shape[-2], v.shape[-1]))


def _gqa(q: TensorType, k: TensorType) -> bool:
    """Fewer key/value heads than query heads (dim -3 of the [B, H, T, d] layout)."""
    return q.rank >= 4 and k.rank >= 4 and k.shape[-3] != q.shape[-3] and k.shape[-3] != 1


def _heads_apart(q: TensorType, k: TensorType) -> bool:
    """Query and key heads equal here but named apart, while the code follows the config (rendering): it must
    work for a config where they differ."""
    if q.rank < 4 or k.rank < 4 or not rendering_active():
        return False
    hq, hk = q.shape[-3], k.shape[-3]
    return isinstance(hq, HInt) and isinstance(hk, HInt) and hq.expr is not None and hk.expr is not None \
        and hq.expr != hk.expr


def _with_causal(args: list[str], mask: TensorType, window: int | None) -> str:
    """The mask and "query t sees keys <= t" (top-left aligned, as is_causal; within the window when there is one),
    for a bool or an additive mask."""
    q, k, m = args[0], args[1], args[3]
    tri = f"torch.ones({q}.size(-2), {k}.size(-2), dtype=torch.bool, device={m}.device)"
    if window is not None:
        band = f"{tri}.tril().triu({1 - window})"
        return f"{m} & {band}" if mask.dtype == "bool" else f"{m}.masked_fill(~{band}, float(\"-inf\"))"
    if mask.dtype == "bool":
        return f"{m} & {tri}.tril()"
    return f"{m}.masked_fill({tri}.triu(1), float(\"-inf\"))"


def _sdpa_call(args, a: SDPAAttrs, ins) -> str:
    extra = ""
    if len(args) == 4 and a.causal:  # F.sdpa takes a mask or is_causal, not both: fold the triangle in
        extra += f", attn_mask={_with_causal(args, ins[3], a.window)}"
    elif len(args) == 4:
        extra += f", attn_mask={args[3]}"
    elif a.window is not None:  # the causal band: query t sees keys t - window < s <= t
        extra += (f", attn_mask=torch.ones({args[0]}.size(-2), {args[1]}.size(-2), dtype=torch.bool, "
                  f"device={args[0]}.device).tril().triu({1 - a.window})")
    if written(a.dropout, 0.0):  # `dropout_p=self.dropout` when a hyper-parameter gives it
        extra += f", dropout_p={pyval(a.dropout)} if self.training else 0.0"
    if len(args) == 3 and a.window is None and written(a.causal, False):  # `is_causal=self.causal` when driven
        extra += f", is_causal={pyval(a.causal)}"
    if _gqa(ins[0], ins[1]):
        extra += ", enable_gqa=True"
    elif _heads_apart(ins[0], ins[1]):  # equal in this compile, set apart by hyper-parameters (kv_heads, heads)
        extra += f", enable_gqa={ins[1].shape[-3]!r} != {ins[0].shape[-3]!r}"
    if a.scale is not None:
        extra += f", scale={pyval(a.scale)}"
    return f"F.scaled_dot_product_attention({args[0]}, {args[1]}, {args[2]}{extra})"


def _sdpa_macs(ins, out, a) -> object:
    q, k = ins[0], ins[1]
    return numel(q.shape) * k.shape[-2] + numel(out.shape) * k.shape[-2]


def _np_sdpa(xs, a: SDPAAttrs, p):
    """softmax(q k^T * scale + mask) v; grouped-query heads repeat each key/value head; eval mode (no dropout)."""
    import numpy as np

    q, k, v = (t.astype(np.float64) for t in xs[:3])
    if q.ndim >= 4 and k.ndim >= 4 and k.shape[-3] not in (1, q.shape[-3]):
        rep = q.shape[-3] // k.shape[-3]
        k, v = np.repeat(k, rep, axis=-3), np.repeat(v, rep, axis=-3)
    scale = a.scale if a.scale is not None else 1 / np.sqrt(q.shape[-1])
    s = q @ k.swapaxes(-1, -2) * scale
    t, n = s.shape[-2:]
    if len(xs) == 4:
        m = xs[3]
        s = np.where(m, s, -np.inf) if m.dtype == np.bool_ else s + m
    if a.causal:
        s = np.where(np.tril(np.ones((t, n), bool)), s, -np.inf)
    if a.window is not None:
        s = np.where(np.triu(np.ones((t, n), bool), 1 - a.window), s, -np.inf)
    with np.errstate(invalid="ignore"):
        e = np.exp(s - s.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True) @ v


register(OpDef(
    name="sdpa", attrs=SDPAAttrs, positional=("causal",), arity=(3, 4), infer=_sdpa_infer, macs=_sdpa_macs,
    torch=TorchRule(call=_sdpa_call, none_keywords=(("F.scaled_dot_product_attention", "attn_mask"),)),
    doc="scaled dot-product attention over [..., T, d] (q, k, v[, mask]); causal, window= (a causal sliding window); "
        "BSHD users permute first",
    numpy=_np_sdpa,
    examples=(Example(("f32[2, 2, 3, 4]",) * 3), Example(("f32[1, 2, 4, 4]",) * 3, {"causal": True, "scale": 0.3}),
              Example(("f32[1, 2, 3, 4]", "f32[1, 2, 5, 4]", "f32[1, 2, 5, 3]", "f32[1, 1, 3, 5]")),  # additive mask
              Example(("f32[1, 4, 3, 4]", "f32[1, 2, 3, 4]", "f32[1, 2, 3, 4]", "f32[3, 3]"), {"causal": True}),
              Example(("f32[1, 4, 3, 4]", "f32[1, 2, 3, 4]", "f32[1, 2, 3, 4]")),  # grouped-query
              Example(("f32[1, 2, 6, 4]",) * 3, {"causal": True, "window": 3}),  # a sliding window
              Example(("f32[1, 2, 5, 4]",) * 3 + ("bool[5, 5]",), {"causal": True, "window": 2}),
              # a bool mask (true = attend); 6 keys so that no row is fully masked (backends disagree there)
              Example(("f32[1, 2, 3, 4]", "f32[1, 2, 6, 4]", "f32[1, 2, 6, 4]", "bool[3, 6]")),
              Example(("f32[3, 4]", "f32[5, 4]", "f32[5, 2]"), {"dropout": 0.1})),
))
