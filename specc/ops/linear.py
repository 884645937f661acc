"""Dense layers: linear and embedding (both can be shared instances and tied)."""
from __future__ import annotations

from pydantic import NonNegativeInt, PositiveInt

from ..diagnostics import ShapeError
from ..types import INT_DTYPES, TensorType
from .registry import LAYER, Attrs, Example, OpDef, expect_float, numel, register
from .torch_rule import TorchRule


class LinearAttrs(Attrs):
    out_features: PositiveInt
    bias: bool = True
    in_features: PositiveInt | None = None  # optional: checked against the input when given
    tie: str | None = None  # name of a layer whose `weight` this layer shares


def _linear_infer(ins: list[TensorType], a: LinearAttrs) -> TensorType:
    (x,) = ins
    expect_float(x, "linear")
    if x.rank < 1:
        raise ShapeError(f"linear expects at least a rank-1 input, got {x}", "E0303")
    fin = x.shape[-1]
    if not isinstance(fin, int):
        raise ShapeError(f"linear needs a static feature dim (last dim), input is {x}")
    if a.in_features is not None and a.in_features != fin:
        raise ShapeError(f"input has {fin} features, layer expects {a.in_features}")
    return x.with_shape((*x.shape[:-1], a.out_features))


def _linear_module(ins, a: LinearAttrs) -> str:
    return f"nn.Linear({ins[0].shape[-1]}, {a.out_features}{'' if a.bias else ', bias=False'})"


register(OpDef(
    name="linear", attrs=LinearAttrs, positional=("out_features",), infer=_linear_infer,
    params=lambda ins, a: {"weight": (a.out_features, ins[0].shape[-1]), **({"bias": (a.out_features,)} if a.bias else {})},
    macs=lambda ins, out, a: numel(out.shape) * ins[0].shape[-1],
    categories=frozenset({LAYER}), torch=TorchRule(module=_linear_module, fresh=True),
    doc="y = x @ W.T + b over the last dim.",
    numpy=lambda xs, a, p: xs[0].astype("float64") @ p["weight"].T + (p["bias"] if a.bias else 0),
    examples=(Example(("f32[2, 3, 4]",), {"out_features": 5}), Example(("f32[6]",), {"out_features": 2, "bias": False})),
))


class EmbeddingAttrs(Attrs):
    num_embeddings: PositiveInt
    embedding_dim: PositiveInt
    padding_idx: NonNegativeInt | None = None
    tie: str | None = None


def _emb_infer(ins: list[TensorType], a: EmbeddingAttrs) -> TensorType:
    (x,) = ins
    if x.dtype not in INT_DTYPES:
        raise ShapeError(f"embedding expects integer indices, got {x.dtype}", "E0302")
    return TensorType("f32", (*x.shape, a.embedding_dim))


def _emb_module(ins, a: EmbeddingAttrs) -> str:
    pad = "" if a.padding_idx is None else f", padding_idx={a.padding_idx}"
    return f"nn.Embedding({a.num_embeddings}, {a.embedding_dim}{pad})"


register(OpDef(
    name="embedding", attrs=EmbeddingAttrs, positional=("num_embeddings", "embedding_dim"), infer=_emb_infer,
    params=lambda ins, a: {"weight": (a.num_embeddings, a.embedding_dim)},
    categories=frozenset({LAYER}), torch=TorchRule(module=_emb_module),
    doc="table lookup: i64[...] -> f32[..., dim].",
    numpy=lambda xs, a, p: p["weight"][xs[0]],
    examples=(Example(("i64[2, 3]",), {"num_embeddings": 5, "embedding_dim": 4}),
              Example(("i32[4]",), {"num_embeddings": 4, "embedding_dim": 3, "padding_idx": 0})),
    waive={"macs": "a table lookup: no multiply-accumulates"},
))
