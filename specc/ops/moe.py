"""Mixture of experts: `x -> moe(SwiGLU(1408), experts=64, top_k=6, shared=SwiGLU(1408), shared_experts=2)`.

The experts are any block, given without its tensor input (`SwiGLU(1408)` is a block value): the elaborator
specialises it for the layer's tokens, f32[N, d] with N the product of x's leading dims, and stores the graph's
name in the attribute. The IR node stays one `moe` op whose attributes name its expert graphs (`GraphUse`), so the
printer, verifier and summary need no new node kind.

Routing (Shazeer 2017; Switch, Fedus 2021; Mixtral 2024; DeepSeekMoE, Dai 2024):
  logits = router(x)                      linear d -> E, no bias; in training the router input is multiplied by
                                          uniform(1 - jitter, 1 + jitter) noise (Switch)
  softmax="before": p = softmax(logits), (w, idx) = topk(p, k), w /= sum(w) if renormalize
  softmax="after":  (l, idx) = topk(logits, k), w = softmax(l)        (= "before" with renormalize, Mixtral)
  y_t = sum_j w[t, j] * expert_idx[t, j](x_t) + sum_s shared_s(x_t)

Capacity (Switch/GShard): with capacity_factor c each expert takes at most ceil(c * N * k / E) (token, slot)
pairs. All first choices rank before all second choices, then by token order; a dropped pair contributes nothing
(its weight is not renormalised away), so a token whose every choice is dropped gets only the shared experts
(zero without them): the residual around the layer carries it.

Auxiliary losses, set each forward as `last_aux_loss = balance_coef * balance + z_coef * z` (the emitted model's
`aux_loss()` sums them):
  balance = E * sum_i f_i * P_i   f_i: fraction of the N*k (token, slot) assignments routed to expert i, before
                                  any dropping (sums to 1; Switch's f_i for k = 1; Hugging Face Mixtral's loss is
                                  k times this); P_i = mean over tokens of softmax(logits)[:, i]. Balanced: 1.
  z = mean_t logsumexp(logits_t)^2   (router z-loss, ST-MoE)
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveInt, ValidationInfo, field_validator

from ..diagnostics import Note, ShapeError
from ..types import TensorType
from .context import graphs
from .registry import LAYER, Attrs, GraphUse, OpDef, expect_float, numel, register
from .torch_rule import TorchRule, pyval, support_text


class MoEAttrs(Attrs):
    expert: str  # graph of one routed expert (filled in by the elaborator from a block value)
    experts: PositiveInt
    top_k: PositiveInt = 1
    shared: str | None = None  # graph of one always-on expert (DeepSeekMoE)
    shared_experts: NonNegativeInt = 1  # how many copies of `shared` (0: none, the block only typed)
    softmax: Literal["before", "after"] = "before"
    renormalize: bool = False
    capacity_factor: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None  # None: no token is dropped
    jitter: NonNegativeFloat = Field(0.0, lt=1.0)
    balance_coef: NonNegativeFloat = 0.01
    z_coef: NonNegativeFloat = 0.0

    @field_validator("top_k")
    @classmethod
    def _k_fits(cls, k: int, info: ValidationInfo) -> int:
        e = info.data.get("experts")
        if e is not None and k > e:
            raise ValueError(f"top_k = {k} picks more experts than the layer has (experts = {e})")
        return k

    @field_validator("shared_experts")
    @classmethod
    def _shared_given(cls, n: int, info: ValidationInfo) -> int:
        if n != 1 and info.data.get("shared") is None:
            raise ValueError(f"shared_experts = {n} without a shared expert block (shared=...)")
        return n


def _tokens(x: TensorType) -> TensorType:
    """What an expert sees: the layer's tokens flattened, [N, d]."""
    return TensorType(x.dtype, (numel(x.shape[:-1]), x.shape[-1]))


def _check_expert(role: str, gname: str, tokens: TensorType) -> None:
    table = graphs()
    if table is None:  # re-typed outside the elaborator and verifier: they check the experts
        return
    g = table.get(gname)
    if g is None:
        raise ShapeError(f"{role} {gname!r} is not a block: pass one without its input, e.g. SwiGLU(1408)", "E0108")
    ins, outs = [g[i].type for i in g.inputs], g.output_types()
    if ins != [tokens] or len(outs) != 1:
        raise ShapeError(f"{role} block {g.block} must take one tensor {tokens} and return one tensor", "E0301",
                         notes=[Note(g.span, f"{g.block} defined here")])
    out = outs[0]
    if not isinstance(out, TensorType) or out.shape != tokens.shape:
        width = out.shape[-1] if isinstance(out, TensorType) and out.rank else out
        ret = g[g.outputs[0]]
        raise ShapeError(f"{role} {g.block} returns {width} features, the layer's input has {tokens.shape[-1]}: "
                         f"experts must map width {tokens.shape[-1]} back to {tokens.shape[-1]}", "E0301",
                         notes=[Note(ret.span, f"{g.block} returns {out} here")])


def _moe_infer(ins: list[TensorType], a: MoEAttrs) -> TensorType:
    (x,) = ins
    expect_float(x, "moe")
    if x.rank < 1 or not isinstance(x.shape[-1], int):
        raise ShapeError(f"moe needs a static feature dim (last dim), input is {x}", "E0303")
    tokens = _tokens(x)
    _check_expert("expert", a.expert, tokens)
    if a.shared is not None:
        _check_expert("shared expert", a.shared, tokens)
    return x


def _moe_uses(a: MoEAttrs) -> tuple[GraphUse, ...]:
    uses = [GraphUse("expert", a.expert, a.experts, a.top_k)]
    if a.shared is not None:
        uses.append(GraphUse("shared", a.shared, a.shared_experts, a.shared_experts))
    return tuple(uses)


_DEFAULTS = {"softmax": "before", "renormalize": False, "capacity_factor": None, "jitter": 0.0,
             "balance_coef": 0.01, "z_coef": 0.0}


def _moe_module(ins: list[TensorType], a: MoEAttrs) -> str:
    # `@attribute:graph@` is the emitter's placeholder for the class constructor of the graph that attribute names
    d = ins[0].shape[-1]
    out = f"MixtureOfExperts({d}, [@expert:{a.expert}@ for _ in range({a.experts})], top_k={a.top_k}"
    if a.shared is not None:
        out += f", shared=[@shared:{a.shared}@ for _ in range({a.shared_experts})]"
    for k, default in _DEFAULTS.items():
        v = getattr(a, k)
        if v != default:
            out += f", {k}={pyval(v)}"
    return out + ")"


_MOE = support_text("moe")


register(OpDef(
    name="moe", attrs=MoEAttrs, positional=("expert", "experts", "top_k"), infer=_moe_infer,
    params=lambda ins, a: {"router.weight": (a.experts, ins[0].shape[-1])},
    macs=lambda ins, out, a: numel(ins[0].shape) * a.experts,  # the router; experts are counted per GraphUse
    categories=frozenset({LAYER}),
    block_inputs=lambda ins: [_tokens(ins[0])],
    subgraphs=_moe_uses,
    torch=TorchRule(module=_moe_module, imports=("import math",), support=(_MOE,), aux_loss=True),
    doc="top-k mixture of experts over the last dim; experts are any block given without its input, "
        "e.g. moe(SwiGLU(1408), experts=64, top_k=6)",
    waive={reason: "takes a block (the experts) as an argument, which a one-op module cannot hold: "
                   "tests/test_moe.py checks the emitted layer against the loop-over-experts reference "
                   "(tests/references/moe.py: routing, capacity drops, aux losses, gradients) and "
                   "tests/test_tvm_models.py the TVM lowering on the zoo's MoE specs"
           for reason in ("examples", "numpy")},
))
