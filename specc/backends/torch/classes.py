"""Class planning: one nn.Module class per group of block specialisations whose code differs only in numbers;
numbers that vary become constructor arguments named after the block's hyper-parameter (or input width) whose
values they match.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from ...diagnostics import SpecError
from ...ir import Graph, Module
from ...naming import Namer, attr_name, class_name, py_name, spec_relative
from ...ops.torch_rule import pyval
from ...types import TensorType
from .forward import GraphCode, graph_code, reachable
from .kvcache import cache_plan, generate_support

# an integer literal, not part of a name, a float (1.5, 1e-05) or a string escape
_NUM = re.compile(r"(?<![\w.\\])(?<![eE][-+])\d+(?![\w.])")


def _template(lines: list[str]) -> str:
    return "\n".join(_NUM.sub("#", ln) for ln in lines)


@dataclass
class ClassPlan:
    name: str
    members: list[str]  # graph names
    params: list[str]  # constructor parameter names
    args: dict[str, list]  # graph name -> constructor argument values
    init: list[str]
    forward: list[str]
    comments: list[str]
    fwd_args: list[str]
    doc: str
    weights: list[str] = field(default_factory=list)  # the `_init_weights` lines


def _candidates(g: Graph) -> list[tuple[str, int]]:
    """(constructor parameter name, value) for the numbers a shared class may take as arguments."""
    name = Namer(py_name)
    out = [(name(k), v) for k, v in g.hparams.items() if isinstance(v, int) and not isinstance(v, bool)]
    for i in g.inputs:
        t = g[i].type
        if isinstance(t, TensorType) and t.rank >= 2 and isinstance(t.shape[1], int):
            out.append((name(f"{i}_channels" if t.rank >= 3 else f"{i}_features"), t.shape[1]))
        if isinstance(t, TensorType) and t.rank == 3 and isinstance(t.shape[-1], int):
            out.append((name(f"{i}_features"), t.shape[-1]))
    return out


def _match(pool: list[str], cands: list[dict], vals: list[int], derived: list[str]) -> tuple[str | None, str]:
    """The parameter whose values across members are `vals` (the block's hyper-parameters first, then input widths);
    failing that, a hyper-parameter times, divided by or minus a small constant (a Bottleneck's `width * 4`).
    Returns (parameter, expression suffix)."""
    ordered = [k for k in pool if k in derived] + [k for k in pool if k not in derived]
    for k in ordered:
        if all(c.get(k) == v for c, v in zip(cands, vals)):
            return k, ""
    for factor in (2, 4, 8):
        for k in derived:
            if all(isinstance(c.get(k), int) and c[k] * factor == v for c, v in zip(cands, vals)):
                return k, f" * {factor}"
            if all(isinstance(c.get(k), int) and c[k] % factor == 0 and c[k] // factor == v
                   for c, v in zip(cands, vals)):
                return k, f" // {factor}"
    for k in derived:
        if all(isinstance(c.get(k), int) and c[k] - 1 == v for c, v in zip(cands, vals)):
            return k, " - 1"
    return None, ""


def _parametrize(codes: list[GraphCode]) -> tuple[list[str], list[str], list[str], list[str], list[list],
                                                   list[str]] | None:
    """Replace numbers that differ between members by constructor parameters; None if some cannot be named."""
    cands = [dict(_candidates(c.graph)) for c in codes]
    names = [k for k, _ in _candidates(codes[0].graph)]
    hp_names = set(names[:sum(1 for v in codes[0].graph.hparams.values() if type(v) is int)])
    used: list[str] = []
    # a value the forward reads is stored on self, under an attribute name no layer uses
    stored = Namer(attr_name, set().union(*(c.attrs for c in codes)))

    def subst(lines_per_member: list[list[str]], prefix: Callable[[str], str], soft: bool):
        out = []
        for li, line in enumerate(lines_per_member[0]):
            toks = [_NUM.findall(lm[li]) for lm in lines_per_member]
            if len({len(t) for t in toks}) > 1:  # `[B, T, 64]` vs `[B, 10, 64]`: the numbers do not line up
                if not soft:
                    return None
                out.append("")  # a shape comment that differs in form between members is left out
                continue
            pieces = _NUM.split(line)
            new = pieces[0]
            for ti, tok in enumerate(toks[0]):
                vals = [int(t[ti]) for t in toks]
                if len(set(vals)) == 1:
                    rep = tok
                else:
                    pool = names if not soft else [k for k in used if k in hp_names]
                    match, suffix = _match(pool, cands, vals, derived=[k for k in pool if k in hp_names])
                    if match is None:
                        if not soft:
                            return None
                        rep = "*"
                    else:
                        if match not in used:
                            used.append(match)
                        rep = prefix(match) + suffix
                new += rep + pieces[ti + 1]
            out.append(new)
        return out

    init = subst([c.init for c in codes], str, soft=False)
    fwd = subst([c.forward for c in codes], lambda k: "self." + stored(k), soft=False)
    weights = subst([c.weights for c in codes], lambda k: "self." + stored(k), soft=False)
    if init is None or fwd is None or weights is None:
        return None
    comments = subst([c.comments for c in codes], str, soft=True)
    params = [k for k in names if k in used]
    stores = [f"self.{stored.names[p]} = {p}" for p in params if p in stored.names]
    args = [[cands[i][p] for p in params] for i in range(len(codes))]
    return params, stores + init, fwd, comments, args, weights


def plan_classes(m: Module) -> tuple[list[ClassPlan], dict[str, str], list[str], list[str]]:
    """One class per group of block specialisations that differ only in numbers, planned bottom-up by call depth.
    Long because the naming of classes (no clash with helpers, models or arguments) is set up here, next to the
    loop it serves; issue 12's "one class per block" replaces this."""
    cache = cache_plan(m)  # a causal LM's key/value cache, for generate()
    codes = {name: graph_code(m, g, name == m.main, cache) for name, g in m.graphs.items()}
    live = reachable(m, codes)
    imports: list[str] = []
    support: list[str] = []
    for name in live:
        imports.extend(i for i in codes[name].imports if i not in imports)
        support.extend(s for s in codes[name].support if s not in support)
    if cache is not None:
        support.append(generate_support())
    # Plan bottom-up, one call depth at a time, so that a caller's constructor lines already name its callees'
    # classes (and their numeric arguments can be shared like any other number).
    depth: dict[str, int] = {}
    for name in live:  # callees come before callers in m.graphs
        depth[name] = 1 + max((depth[c] for c in codes[name].callees), default=-1)
    levels = sorted({depth[n] for n in live if n != m.main})
    by_graph: dict[str, ClassPlan] = {}
    plans: list[ClassPlan] = []
    cls_of: dict[str, str] = {}
    taken: set[str] = set()

    def new_class_name(block: str) -> str:
        base = class_name(block)
        if base == class_name(m.name):
            base += "Block"
        name, k = base, 1
        while name in taken:
            name = f"{base}{k}"
            k += 1
        taken.add(name)
        return name

    taken.add(class_name(m.name))
    taken.add(class_name(m.name) + "Config")
    # helper classes and functions that op rules put in the file keep their names
    helpers = {name for snippet in support for found in _TOP_LEVEL.findall(snippet) for name in found if name}
    clash = helpers & {class_name(m.name), class_name(m.name) + "Config"}
    if clash:
        raise SpecError.at("E0106", f"model name {m.name!r} clashes with the helper {clash.pop()} that the emitted "
                           "file defines", m.graph.span, help="rename the model")
    taken |= helpers
    # a class must not be shadowed by a constructor or forward argument that refers to it
    for name in live:
        taken.update(codes[name].args)
        taken.update(k for k, _ in _candidates(m.graphs[name]))
    for level in levels:
        groups: dict[tuple, list[str]] = {}
        for name in live:
            if name == m.main or depth[name] != level:
                continue
            c = codes[name]
            c.init = [_resolve_ctor(ln, by_graph) for ln in c.init]
            key = (m.graphs[name].block, _template(c.init), _template(c.forward), tuple(c.args), _template(c.weights))
            groups.setdefault(key, []).append(name)
        for members in groups.values():
            _plan_group(m, members, codes, plans, by_graph, cls_of, new_class_name)
    main = codes[m.main]
    main.init = [_resolve_ctor(ln, by_graph) for ln in main.init]
    cname = class_name(m.name)
    cls_of[m.main] = cname
    plans.append(ClassPlan(cname, [m.main], [], {m.main: []}, main.init, main.forward, main.comments, main.args,
                           f"{m.name}, compiled by specc from {spec_relative(m.path, m.path)}", main.weights))
    return plans, cls_of, sorted(imports), support


def _plan_group(m: Module, members: list[str], codes: dict, plans: list, by_graph: dict, cls_of: dict,
            new_class_name) -> None:
    # greedy clustering: a member joins the first class whose numbers it can share
    subsets: list[list[str]] = []
    results: list = []
    for n in members:
        for i, sub in enumerate(subsets):
            res = _parametrize([codes[x] for x in [*sub, n]])
            if res is not None:
                subsets[i], results[i] = [*sub, n], res
                break
        else:
            subsets.append([n])
            results.append(None)
    for sub, res in zip(subsets, results):
        sc = [codes[n] for n in sub]
        if len(sub) > 1:
            params, init, fwd, comments, args, weights = res
        else:
            params, init, fwd, comments, args, weights = [], sc[0].init, sc[0].forward, sc[0].comments, [[]], \
                sc[0].weights
        cname = new_class_name(m.graphs[sub[0]].block)
        g0 = m.graphs[sub[0]]
        doc = f"{g0.block}" + (f" ({len(sub)} variants)" if len(sub) > 1 else "") + \
            (f", defined at {spec_relative(g0.span.file, m.path)}:{g0.span.line}" if g0.span else "")
        plan = ClassPlan(cname, sub, params, {n: a for n, a in zip(sub, args)}, init, fwd, comments,
                         sc[0].args, doc, weights)
        plans.append(plan)
        for n in sub:
            cls_of[n] = cname
            by_graph[n] = plan


_TOP_LEVEL = re.compile(r"^(?:class|def)\s+(\w+)|^(?!\s)(\w+)\s*[:=]", re.M)


def _resolve_ctor(line: str, plans_by_graph: dict[str, ClassPlan]) -> str:
    def rep(mt):
        gname = mt.group(1)
        p = plans_by_graph[gname]
        args = ", ".join(pyval(v) for v in p.args[gname])
        return f"{p.name}({args})"
    return re.sub(r"@([\w.]+)@", rep, line)


