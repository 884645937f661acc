"""Causal language models: which emitted models get `generate()` and a key/value cache, and the code that threads
the cache through them.

A model generates when its IR says it is a causal LM: one integer input [B, T], one float output [B, T, V] (the
next-token logits at every position), at least one causal self-attention (`sdpa(q, k, v, causal=true)` over T), and
nothing else that mixes positions (each other op keeps T as one whole axis, and is one the emitter knows to act per
position). Then every graph that reaches such an attention or an op that reads absolute positions
(`TorchRule.positions`: learned / sinusoidal tables, rope) takes an optional `cache` (the `KVCache` of
specc/ops/support/generate.py) and passes it on; with `cache=None` the forward computes exactly what it computes
without one. Anything else gets no cache and no generate(): the cache would change its results.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ...ir import Graph, Module, Node
from ...ops import registry
from ...ops.torch_rule import support_text
from ...symbolic import Sym
from ...types import FLOAT_DTYPES, INT_DTYPES, TensorType, TupleType
from .checks import in_fstring

# Ops that compute each position from that position alone, unless their `dim` attribute is T's axis (softmax over
# the sequence; checked below): per-token layers, the routed experts of a mixture, constants. Elementwise,
# activation, shape and reduction ops are per position as long as T stays one whole axis (checked on their types).
_PER_POSITION = frozenset({"linear", "merged_linear", "embedding", "layernorm", "rmsnorm", "dropout", "drop_path",
                           "moe", "getitem", "softmax", "log_softmax", "glu", "matmul", "parameter", "sincos",
                           "timestep_embedding"})
_PER_POSITION_CATEGORIES = frozenset({registry.ELEMENTWISE, registry.ACTIVATION, registry.SHAPE, registry.REDUCTION})


@dataclass(frozen=True)
class CachePlan:
    """Where the cache goes in one model: the graphs whose forward takes it (by graph name), and the context limit
    on T (None if the spec sets none) with the spec expression behind it (`ctx`)."""

    graphs: frozenset[str]
    attention: frozenset[tuple[str, str]]  # (graph, node) of every causal self-attention
    max_len: int | None
    max_len_expr: str | None


def cache_plan(m: Module) -> CachePlan | None:
    """The cache plan of a causal LM; None for any other model (it gets no cache and no generate())."""
    g = m.graph
    if len(g.inputs) != 1 or len(g.outputs) != 1:
        return None
    t_in, t_out = g[g.inputs[0]].type, g[g.outputs[0]].type
    if not (isinstance(t_in, TensorType) and t_in.dtype in INT_DTYPES and t_in.rank == 2
            and isinstance(t_out, TensorType) and t_out.dtype in FLOAT_DTYPES and t_out.rank == 3
            and t_out.shape[:2] == t_in.shape and _is_symbol(t_in.shape[1])):
        return None
    walk = _Walk(m, t_in.shape[1])
    if not walk.ok(g) or not walk.attention:
        return None
    sym = next(iter(t_in.shape[1].symbols()))
    bound = m.constraints.get(sym, (None, None))[0]
    return CachePlan(frozenset(walk.needs), frozenset(walk.attention), bound if isinstance(bound, int) else None,
                     dict(g[g.inputs[0]].exprs).get(sym))


def _is_symbol(d) -> bool:
    return isinstance(d, Sym) and len(d.symbols()) == 1 and d == Sym.var(next(iter(d.symbols())))


class _Walk:
    """Checks every graph a model runs (calls and repeat bodies, not a moe's experts: those act per token) and
    collects the graphs that need the cache."""

    def __init__(self, m: Module, seq: Sym) -> None:
        self.m, self.seq = m, seq
        self.needs: set[str] = set()
        self.attention: set[tuple[str, str]] = set()  # (graph, node) of the causal self-attentions
        self.seen: dict[str, bool] = {}

    def ok(self, g: Graph) -> bool:
        if g.name not in self.seen:
            self.seen[g.name] = all(self.node_ok(g, n) for n in g.nodes())
        return self.seen[g.name]

    def node_ok(self, g: Graph, n: Node) -> bool:
        if n.kind in ("input", "output"):
            return True
        if n.kind in ("call", "repeat"):
            body = self.m.graphs[n.target]
            if not self.ok(body):
                return False
            if body.name in self.needs:
                self.needs.add(g.name)
            return True
        op = registry.get(n.target)
        ins = [g[i].type for i in n.inputs]
        if is_cached_attention(n, ins, self.seq):
            self.attention.add((g.name, n.name))
            self.needs.add(g.name)
            return True
        if n.target == "sdpa" or op is None or op.torch is None:
            return False  # attention that is not causal self-attention: a cache would change it
        if n.target == "slice" and n.attrs.symbolic():
            return False  # `pos[:T]` counts from position 0, so a cached step would read the first rows again
        if op.torch.positions:
            self.needs.add(g.name)
            return self.keeps_positions(ins, n.type)
        if n.target in _PER_POSITION:
            return self.keeps_positions(ins, n.type) and not self.mixes_along_dim(n, ins)
        # elementwise, shape and reduction ops: one along T changes or drops it, which keeps_positions sees
        linear = n.target == "fused" and n.attrs.base == "linear"
        return bool(linear or op.categories & _PER_POSITION_CATEGORIES) and self.keeps_positions(ins, n.type)

    def keeps_positions(self, ins: list, out) -> bool:
        """T stays one whole axis: in every operand and result that mention it, exactly one dim is T; the result
        has it if and only if an operand does (a reduction over T, `T + 1` or `B * T` fails)."""
        counts_in = [self.count(t) for x in ins for t in _items(x)]
        counts_out = [self.count(t) for t in _items(out)]
        if None in counts_in or None in counts_out:
            return False
        return all(counts_out) if any(counts_in) else not any(counts_out)

    def count(self, t) -> int | None:
        """How many dims of t are exactly T (0 or 1); None if a dim mentions T otherwise or T is there twice."""
        if not isinstance(t, TensorType):
            return 0
        name = next(iter(self.seq.symbols()))
        exact = sum(1 for d in t.shape if d == self.seq)
        other = sum(1 for d in t.shape if isinstance(d, Sym) and d != self.seq and name in d.symbols())
        return None if other or exact > 1 else exact

    def mixes_along_dim(self, n: Node, ins: list) -> bool:
        """An op whose `dim` attribute is T's axis (softmax over the sequence): it keeps T but mixes positions."""
        dims = getattr(n.attrs, "dim", None)
        if dims is None or not ins or not isinstance(ins[0], TensorType):
            return False
        rank = ins[0].rank
        dims = dims if isinstance(dims, (tuple, list)) else (dims,)
        axis = [i for i, d in enumerate(ins[0].shape) if d == self.seq]
        return any(isinstance(d, int) and d % max(rank, 1) in axis for d in dims)


def _items(t) -> list:
    return list(t.items) if isinstance(t, TupleType) else [t]


def is_cached_attention(n: Node, ins: list, seq: Sym) -> bool:
    """A causal self-attention over the sequence: sdpa(q, k, v, causal=true), no mask, q, k and v all [..., T, d]."""
    if n.kind != "op" or n.target != "sdpa" or not n.attrs.causal or len(ins) != 3:
        return False
    return all(isinstance(t, TensorType) and t.rank >= 3 and t.shape[-2] == seq for t in ins)


# ---- emitted code ----------------------------------------------------------------------------------------------

def cached_attention_lines(n: Node, ins: list[str], kv: list[str], out: str, in_types: list, cache: str
                           ) -> list[tuple[str, str]]:
    """(line, comment) of a causal self-attention in a graph that takes the cache: the sdpa rule's own call when
    there is none, else this step's keys and values stored after the cached ones (into the variables `kv`) and
    attended to with an explicit causal mask (query t at position start + t sees keys up to it, within its sliding
    window if it has one). Comment "shape":
    the result's shape."""
    rule = registry.get("sdpa").torch
    q, k, v = ins
    window = "" if n.attrs.window is None else f", window={n.attrs.window}"
    masked = rule.call([q, *kv, f"{cache}.causal_mask({q}, {kv[0]}{window})"],
                       n.attrs.model_copy(update={"causal": False, "window": None}), [*in_types, in_types[0]])
    return [(f"if {cache} is None:", ""),
            (f"    {out} = {rule.call(ins, n.attrs, in_types)}", "shape"),
            ("else:  # generating: attend to the cached positions too", ""),
            (f"    {kv[0]}, {kv[1]} = {cache}.update({k}, {v})", "keys and values of every position so far"),
            (f"    {out} = {masked}", "shape")]


def generate_support() -> str:
    """KVCache, next_token and generate_tokens, as the emitted file carries them."""
    return support_text("generate")


def generate_method(plan: CachePlan, model: str) -> list[str]:
    """The model class's generate() (indented as a method): the context check, then generate_tokens."""
    lines = ["@torch.no_grad()",
             "def generate(self, tokens: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,",
             "             top_k: int | None = None, top_p: float | None = None, eos_token: int | None = None,",
             "             generator: torch.Generator | None = None) -> torch.Tensor:",
             '    """tokens [B, T] followed by up to max_new_tokens new tokens, [B, T + n]: the most likely one when',
             "    temperature is 0, else sampled (top_k / top_p keep the k most likely / the smallest set with that",
             "    probability; `generator` seeds the draw). A row that produces eos_token ends there and is padded",
             "    with it. The prompt runs once, then each new token alone on a KVCache. Dropout acts in training",
             '    mode: call .eval() first."""']
    if plan.max_len is not None:
        why = f" ({plan.max_len_expr})" if plan.max_len_expr and _SAFE.fullmatch(plan.max_len_expr) else ""
        lines += [f"    if tokens.size(1) + max_new_tokens > {plan.max_len}:",
                  '        raise ValueError(f"tokens has T = {tokens.size(1)} and max_new_tokens = {max_new_tokens}: "',
                  f'                         f"{{tokens.size(1) + max_new_tokens}} positions, {model} was built for '
                  f'T <= {in_fstring(plan.max_len)}{why}")']
    lines.append("    return generate_tokens(self, tokens, max_new_tokens, temperature, top_k, top_p, eos_token, "
                 "generator)")
    return lines


_SAFE = re.compile(r"[\w .+\-*/%()]+")  # a spec expression shown in a message: no quotes, no braces
