"""Learned tokens: `cls_token` prepends one learned vector to every sequence (BERT's [CLS], ViT's class token).

The token table itself (`embedding`) is in linear.py, next to `linear`, because the two tie weights."""
from __future__ import annotations

from ..diagnostics import ShapeError
from ..types import TensorType
from .registry import LAYER, NO_MACS, Example, NoAttrs, OpDef, expect_float, register
from .torch_rule import TorchRule, support_text

_CLASS_TOKEN = support_text("class_token")


def _cls_infer(ins: list[TensorType], a: NoAttrs) -> TensorType:
    (x,) = ins
    expect_float(x, "cls_token")
    if x.rank != 3 or not isinstance(x.shape[-1], int):
        raise ShapeError(f"cls_token expects [B, N, d] with a static d, got {x}", "E0303")
    return x.with_shape((x.shape[0], x.shape[1] + 1, x.shape[2]))


def _np_cls_token(xs, a, p):
    import numpy as np

    (x,) = xs
    return np.concatenate([np.broadcast_to(p["weight"], (x.shape[0], 1, x.shape[2])), x], axis=1)


register(OpDef(
    name="cls_token", attrs=NoAttrs, infer=_cls_infer,
    params=lambda ins, a: {"weight": (1, 1, ins[0].shape[-1])},
    categories=frozenset({LAYER}),
    torch=TorchRule(module=lambda ins, a: f"ClassToken({ins[0].shape[-1]})", support=(_CLASS_TOKEN,)),
    doc="prepend a learned token: [B, N, d] -> [B, N + 1, d]; take it back with x[:, 0].",
    numpy=_np_cls_token,
    examples=(Example(("f32[2, 3, 4]",)),), waive={"macs": NO_MACS},
))
