"""T5 relative position bias (Raffel et al. 2020, §2.1): one learned scalar per head for each bucket of the
key - query offset, added to the attention scores. Exact offsets below num_buckets/4 (bidirectional) get a bucket
each, larger ones share log-spaced buckets up to max_distance. `causal` (a decoder's self-attention): only past
offsets are bucketed, and future keys get -inf, so the bias is also the causal mask.

`x[..., T, d] -> rel_pos_bias(heads)` gives the bias [1, heads, T, T] for self-attention over x, to be passed as
the mask of `sdpa` (T5 computes it in the first layer of each stack and shares it with the others)."""
from __future__ import annotations

from pydantic import PositiveInt

from ..diagnostics import ShapeError
from ..types import TensorType
from .registry import LAYER, NO_MACS, Attrs, Example, OpDef, expect_float, register
from .torch_rule import TorchRule, kwargs, support_text


class RelPosBiasAttrs(Attrs):
    heads: PositiveInt
    num_buckets: PositiveInt = 32
    max_distance: PositiveInt = 128
    causal: bool = False


def _relpos_infer(ins: list[TensorType], a: RelPosBiasAttrs) -> TensorType:
    (x,) = ins
    expect_float(x, "rel_pos_bias")
    if x.rank < 2:
        raise ShapeError(f"rel_pos_bias expects a sequence [..., T, d], got {x}", "E0303")
    buckets = a.num_buckets if a.causal else a.num_buckets // 2
    if buckets < 2 or a.max_distance <= buckets // 2:
        raise ShapeError(f"rel_pos_bias: {a.num_buckets} buckets up to distance {a.max_distance} leave no "
                         "log-spaced buckets (need num_buckets >= 4 and max_distance > num_buckets / 4)", "E0107")
    t = x.shape[-2]
    return TensorType(x.dtype, (1, a.heads, t, t))


_RELPOS = support_text("relpos")


def _relpos_module(ins, a: RelPosBiasAttrs) -> str:
    extra = kwargs(a, ["num_buckets", "max_distance"], {"num_buckets": 32, "max_distance": 128})
    extra += ", causal=True" if a.causal else ""
    return f"RelativePositionBias({a.heads}{extra})"


def _np_relpos(xs, a: RelPosBiasAttrs, p):
    """T5's _relative_position_bucket (Hugging Face transformers), then one weight per (bucket, head)."""
    import numpy as np

    t = xs[0].shape[-2]
    rel = np.arange(t)[None, :] - np.arange(t)[:, None]  # key - query
    buckets, out = a.num_buckets, np.zeros_like(rel)
    if a.causal:
        n = np.maximum(-rel, 0)
    else:
        buckets //= 2
        out += (rel > 0) * buckets
        n = np.abs(rel)
    exact = buckets // 2
    large = exact + (np.log(np.maximum(n, 1).astype(np.float32) / exact) / np.log(a.max_distance / exact)
                     * (buckets - exact)).astype(np.int64)  # used only where n >= exact
    out += np.where(n < exact, n, np.minimum(large, buckets - 1))
    bias = p["weight"][out].transpose(2, 0, 1)[None].astype(np.float64)  # [1, heads, T, T]
    return np.where(rel > 0, -np.inf, bias) if a.causal else bias


register(OpDef(
    name="rel_pos_bias", attrs=RelPosBiasAttrs, positional=("heads",), infer=_relpos_infer,
    params=lambda ins, a: {"weight": (a.num_buckets, a.heads)},
    categories=frozenset({LAYER}),
    torch=TorchRule(module=_relpos_module, imports=("import math",), support=(_RELPOS,)),
    doc="T5 relative position bias [1, heads, T, T] for self-attention over x[..., T, d] (an additive sdpa mask).",
    numpy=_np_relpos, waive={"macs": NO_MACS},
    # 12 positions over 8 buckets reach the log-spaced buckets and the clamp at max_distance
    examples=(Example(("f32[2, 12, 4]",), {"heads": 2, "num_buckets": 8, "max_distance": 6}),
              Example(("f32[1, 12, 4]",), {"heads": 3, "num_buckets": 8, "max_distance": 10, "causal": True})),
))
