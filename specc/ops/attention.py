"""Attention. `sdpa` is the core op (softmax(q @ k^T * scale + mask) @ v over [..., T, d] tensors), emitted as
F.scaled_dot_product_attention and produced by the attention-fusion pass from hand-written patterns."""
from __future__ import annotations

from pydantic import Field

from ..diagnostics import ShapeError
from ..types import TensorType
from .elementwise import broadcast
from .registry import Attrs, OpDef, expect_float, numel, register
from .torch_rule import TorchRule, pyval


class SDPAAttrs(Attrs):
    causal: bool = False
    scale: float | None = None  # default 1/sqrt(d)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


def _sdpa_infer(ins: list[TensorType], a: SDPAAttrs) -> TensorType:
    q, k, v = ins[:3]
    for i, t in enumerate((q, k, v)):
        expect_float(t, "sdpa", i)
        if t.rank < 2:
            raise ShapeError(f"sdpa operand {i} must be at least rank 2 ([..., T, d]), got {t}", "E0303", i)
    if q.shape[-1] != k.shape[-1]:
        raise ShapeError(f"query head dim {q.shape[-1]} differs from key head dim {k.shape[-1]}", "E0301", 1)
    if k.shape[-2] != v.shape[-2]:
        raise ShapeError(f"keys have length {k.shape[-2]}, values have length {v.shape[-2]}", "E0301", 2)
    batch = broadcast(TensorType(q.dtype, q.shape[:-2]), TensorType(k.dtype, k.shape[:-2]))
    if len(ins) == 4:
        m = ins[3]
        try:
            broadcast(m, TensorType(q.dtype, (*batch, q.shape[-2], k.shape[-2])))
        except ShapeError:
            raise ShapeError(f"mask {m} does not broadcast to the scores [{', '.join(map(str, (*batch, q.shape[-2], k.shape[-2])))}]",
                             "E0301", 3) from None
    return TensorType(q.dtype, (*batch, q.shape[-2], v.shape[-1]))


def _sdpa_call(args, a: SDPAAttrs, ins) -> str:
    extra = ""
    if len(args) == 4:
        extra += f", attn_mask={args[3]}"
    if a.dropout:
        extra += f", dropout_p={pyval(a.dropout)} if self.training else 0.0"
    if a.causal:
        extra += ", is_causal=True"
    if a.scale is not None:
        extra += f", scale={pyval(a.scale)}"
    return f"F.scaled_dot_product_attention({args[0]}, {args[1]}, {args[2]}{extra})"


def _sdpa_macs(ins, out, a) -> object:
    q, k = ins[0], ins[1]
    return numel(q.shape) * k.shape[-2] + numel(out.shape) * k.shape[-2]


register(OpDef(
    name="sdpa", attrs=SDPAAttrs, positional=("causal",), arity=(3, 4), infer=_sdpa_infer, macs=_sdpa_macs,
    torch=TorchRule(call=_sdpa_call),
    doc="scaled dot-product attention over [..., T, d] (q, k, v[, mask]); BSHD users permute first",
))
