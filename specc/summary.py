"""Parameter, buffer and cost accounting over the (folded) IR, and the `specc inspect` table.

Parameters are counted per layer instance: a shared layer (applied twice) and a tied weight count once.
Active parameters are the ones a single token touches: all of them, except that an op naming subgraphs (moe)
counts each subgraph `active` times instead of `count` times (top-2 of 8 experts: 2). The input embedding counts
in full, as in the published Mixtral / DeepSeek-MoE figures. Costs of such subgraphs scale by `active` too.
Costs are multiply-accumulates (MACs) of the matmul-like ops, as symbolic polynomials in the input dims;
FLOPs = 2 * MACs (the convention of the published GPT-2 / ResNet figures)."""
from __future__ import annotations

from dataclasses import dataclass, field

from .ir import Graph, Module, Node
from .naming import attribute_names, stack_entry
from .ops import registry
from .symbolic import Dim, Sym, prod, subs
from .types import INT_DTYPES, TensorType


def node_params(node: Node, graph: Graph) -> dict[str, tuple]:
    """Parameters this node owns (not a reuse of a shared layer, tied weights excluded)."""
    if node.kind != "op":
        return {}
    if node.layer is not None and node.layer != node.name:
        return {}
    op = registry.get(node.target)
    ps = op.param_shapes([graph[i].type for i in node.inputs], node.attrs)
    if getattr(node.attrs, "tie", None):
        ps = {k: v for k, v in ps.items() if k != "weight"}
    return ps


def node_macs(node: Node, graph: Graph) -> Dim:
    if node.kind != "op":
        return 0
    op = registry.get(node.target)
    return op.cost([graph[i].type for i in node.inputs], node.type, node.attrs)


@dataclass
class Row:
    name: str
    op: str
    type: str
    params: int
    macs: Dim
    depth: int
    count: int = 1


@dataclass
class Summary:
    model: str
    rows: list[Row] = field(default_factory=list)
    params: int = 0
    active_params: int = 0  # every weight one token touches (unrouted experts excluded)
    macs: Dim = 0
    tokens: Dim = 0  # positions in the integer (token id) inputs; 0 if there are none
    inputs: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)

    def eval_macs(self, env: dict[str, int]) -> int | Dim:
        return subs(self.macs, env)

    def to_json(self, env: dict[str, int]) -> dict:
        return {
            "model": self.model, "params": self.params, "active_params": self.active_params,
            "inputs": self.inputs, "outputs": self.outputs,
            "macs": _num(subs(self.macs, env)), "flops": _num(subs(2 * self.macs, env)),
            "flops_per_token": _num(self.flops_per_token(env)),
            "macs_symbolic": str(self.macs), "dims": env,
            "layers": [{"name": r.name, "op": r.op, "type": r.type, "params": r.params,
                        "macs": _num(subs(r.macs, env)), "count": r.count} for r in self.rows],
        }


    def flops_per_token(self, env: dict[str, int]) -> int | float | Dim | None:
        """FLOPs / number of input tokens at `env` (None for models without token-id inputs)."""
        tokens, flops = subs(self.tokens, env), subs(2 * self.macs, env)
        if not tokens:
            return None
        if isinstance(tokens, int) and isinstance(flops, int):
            return flops // tokens if flops % tokens == 0 else flops / tokens
        return Sym.var(f"({flops})/({tokens})")


def _num(d: Dim):
    return d if isinstance(d, int) else str(d)


def graph_totals(m: Module, g: Graph, memo: dict) -> tuple[int, int, Dim]:
    """(params, active params, MACs) of a graph, callees included."""
    if g.name in memo:
        return memo[g.name]
    params, active, macs = 0, 0, 0
    for n in g.nodes():
        p, a, c = _node_totals(m, n, g, memo)
        params, active, macs = params + p, active + a, macs + c
    memo[g.name] = (params, active, macs)
    return params, active, macs


def _node_totals(m: Module, n: Node, g: Graph, memo: dict) -> tuple[int, int, Dim]:
    if n.kind == "op":
        p, c = sum(_numel(s) for s in node_params(n, g).values()), node_macs(n, g)
        a = p
        for use in registry.get(n.target).graph_uses(n.attrs):  # experts of a moe
            up, ua, uc = graph_totals(m, m.graphs[use.graph], memo)
            p, a, c = p + use.count * up, a + use.active * ua, c + use.active * uc
        return p, a, c
    if n.kind == "call":
        return graph_totals(m, m.graphs[n.target], memo)
    if n.kind == "repeat":
        p, a, c = graph_totals(m, m.graphs[n.target], memo)
        return p * n.attrs.count, a * n.attrs.count, c * n.attrs.count
    return 0, 0, 0


def _numel(shape) -> int:
    v = prod(shape)
    if isinstance(v, Sym):
        raise ValueError(f"parameter shape {shape} is not static")
    return v


def summarize(m: Module, flat: bool = False) -> Summary:
    memo: dict = {}
    s = Summary(model=m.name)
    s.params, s.active_params, s.macs = graph_totals(m, m.graph, memo)
    g = m.graph
    s.tokens = sum((prod(g[i].type.shape) for i in g.inputs
                    if isinstance(g[i].type, TensorType) and g[i].type.dtype in INT_DTYPES), 0)
    s.inputs = {g[i].name: str(g[i].type) for i in g.inputs}
    s.outputs = {g[o].name: str(g[o].type) for o in g.outputs}
    _rows(m, g, "", 0, flat, memo, s.rows)
    return s


_HIDDEN = {"getitem"}


def _rows(m: Module, g: Graph, prefix: str, depth: int, flat: bool, memo: dict, out: list[Row]) -> None:
    # `for ... as layer`: layer1.0; `for v in range(n) as down_blocks`: down_blocks.1.resnets.0 (the state_dict's)
    stacked = attribute_names(g) if any(n.stack or n.site for n in g.nodes()) else {}
    for n in g.nodes():
        if n.kind in ("input", "output") or (n.kind == "op" and n.target in _HIDDEN):
            continue
        named = n.site or (n.stack and n.kind in ("call", "repeat"))
        q = prefix + (stacked.get(n.name, n.name) if named else n.name)
        p, _, c = _node_totals(m, n, g, memo)
        if n.kind == "op":
            out.append(Row(q, n.target, str(n.type), p, c, depth))
            for use in registry.get(n.target).graph_uses(n.attrs):  # a moe's experts: one row each kind
                sub = m.graphs[use.graph]
                up, _, uc = graph_totals(m, sub, memo)
                label = f"{sub.block} x{use.count}" + (f", {use.active} per token" if use.active != use.count else "")
                out.append(Row(f"{q}.{use.role}", label, str(sub.output_types()[0]), up * use.count,
                               uc * use.active, depth + 1, use.count))
                _rows(m, sub, f"{q}.{use.role}.[0-{use.count - 1}].", depth + 2, flat, memo, out)
        elif n.kind == "call":
            out.append(Row(q, m.graphs[n.target].block, str(n.type), p, c, depth))
            _rows(m, m.graphs[n.target], q + ".", depth + 1, flat, memo, out)
        elif n.kind == "repeat":
            body = m.graphs[n.target]
            k = n.attrs.count
            head, start = q, 0
            if n.stack and stack_entry(stacked.get(n.name, "")):
                head_attr, start, _ = stack_entry(stacked[n.name])
                head = prefix + head_attr  # a run of a named stack's entries: layer1.[1-2]
            out.append(Row(q if head == q else f"{head}.[{start}-{start + k - 1}]", f"repeat x{k}", str(n.type), p, c,
                           depth, k))
            if flat:
                for i in range(k):
                    _rows(m, body, f"{head}.{start + i}.", depth + 1, flat, memo, out)
            else:
                _rows(m, body, f"{head}.[{start}-{start + k - 1}].", depth + 1, flat, memo, out)


def _fmt_int(v) -> str:
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _fmt_g(v) -> str:
    if isinstance(v, int):
        if v >= 10**9:
            return f"{v / 1e9:.3f} G"
        if v >= 10**6:
            return f"{v / 1e6:.3f} M"
        if v >= 10**3:
            return f"{v / 1e3:.3f} K"
        return str(v)
    return str(v)


def render_table(s: Summary, env: dict[str, int]) -> str:
    head = ("layer", "op", "output", "params", "MACs")
    rows = [(("  " * r.depth) + r.name, r.op, r.type, _fmt_int(r.params) if r.params else "-",
             _fmt_g(subs(r.macs, env)) if r.macs != 0 else "-") for r in s.rows]
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) if rows else len(head[i]) for i in range(5)]
    widths = [min(w, 60) for w in widths]

    def line(cols):
        return "  ".join(c.ljust(widths[i]) if i < 3 else c.rjust(widths[i]) for i, c in enumerate(cols)).rstrip()

    out = [line(head), line(tuple("-" * w for w in widths))]
    out += [line(r) for r in rows]
    macs = subs(s.macs, env)
    flops = subs(2 * s.macs, env)
    dims = ", ".join(f"{k}={v}" for k, v in sorted(env.items())) or "none"
    out.append("")
    out.append(f"model {s.model}: inputs " + ", ".join(f"{k}: {v}" for k, v in s.inputs.items())
               + "; outputs " + ", ".join(f"{k}: {v}" for k, v in s.outputs.items()))
    out.append(f"total params: {s.params:,}")
    if s.active_params != s.params:  # only models that route tokens (mixture-of-experts) have a smaller active set
        out.append(f"active params per token: {s.active_params:,}")
    out.append(f"MACs: {_fmt_int(macs)} ({_fmt_g(macs)})   FLOPs: {_fmt_int(flops)} ({_fmt_g(flops)})   at {dims}")
    per_token = s.flops_per_token(env)
    if per_token is not None:
        shown = f"{per_token:,.1f}" if isinstance(per_token, float) else _fmt_int(per_token)
        out.append(f"FLOPs per token: {shown} ({_fmt_g(round(per_token) if isinstance(per_token, float) else per_token)})")
    if not isinstance(macs, int):
        out.append("  (give values for the remaining symbolic dims with --dim NAME=VALUE)")
    return "\n".join(out)


def default_env(m: Module) -> dict[str, int]:
    """Every symbolic input dim set to 1 unless given; the summary states what it used."""
    env: dict[str, int] = {}
    for i in m.graph.inputs:
        t = m.graph[i].type
        if isinstance(t, TensorType):
            for sym in sorted(t.symbols()):
                env.setdefault(sym, 1)
    return env
