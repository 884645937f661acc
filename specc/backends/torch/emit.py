"""IR -> PyTorch source that reads like nanoGPT: a config dataclass, one nn.Module per block, ModuleList loops for
`repeat`, short forwards with shape comments. A thin walker: it branches on node kind only; every op's code comes
from its registry entry (``OpDef.torch``).

Block specialisations that differ only in numbers share one class: numbers that vary between them become
constructor arguments, named after the block's hyper-parameter (or input width) whose values they match.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from pydantic import BaseModel

from ...diagnostics import Diagnostic, SpecError
from ...ir import Graph, Module, Node
from ...naming import (
    Namer,
    attr_name,
    attribute_namer,
    class_name,
    py_name,
    spec_relative,
    stack_entry,
    trivial_body,
    unpacked_tuples,
)
from ...ops import registry
from ...ops.torch_rule import pyval
from ...types import TensorType, TupleType
from ...version import __version__
from .checks import input_checks


def _shape(t) -> str:
    if isinstance(t, TensorType):
        return "[" + ", ".join(str(d) for d in t.shape) + "]"
    if isinstance(t, TupleType):
        return "(" + ", ".join(_shape(i) for i in t.items) + ")"
    return "?"


# ---- per-graph code -------------------------------------------------------------------------------------------

@dataclass
class GraphCode:
    """The code of one graph with numbers still literal; `init` and `forward` are line lists."""

    graph: Graph
    args: list[str]
    init: list[str]
    forward: list[str]
    comments: list[str]  # one per forward line ("" for none)
    callees: list[str] = field(default_factory=list)  # graph names instantiated by this graph
    imports: list[str] = field(default_factory=list)
    support: list[str] = field(default_factory=list)
    attrs: set[str] = field(default_factory=set)  # attribute names the init assigns on self


_NAMES = ["x", "y", "z", "h", "u", "v", "w"]


class _Vars:
    """Variable naming. A value the spec bound to a variable gets that name (`q, k, v = ...`), and so do the unnamed
    steps of the chain that computes it (`x = tokens -> wte -> wpe` is `x = self.wte(tokens)`, `x = self.wpe(x)`);
    other values reuse their input's variable when that dies here (register-allocation style), or get a short one."""

    def __init__(self, g: Graph, args: list[str], reuse_inputs: bool = True) -> None:
        self.g = g
        self.reuse_inputs = reuse_inputs
        self.inputs = set(g.inputs)
        self.var: dict[str, str] = {}
        self.live: set[str] = set(args)
        self.hint = _name_hints(g)
        # generated names keep clear of the spec's own, so that `y` never means two things
        self.used_names: set[str] = set(args) | {py_name(v) for v in self.hint.values()}
        order = [n.name for n in g.nodes()]
        self.pos = {n: i for i, n in enumerate(order)}
        self.last_use: dict[str, int] = {}
        for n in g.nodes():
            # an output is read by the final `return`, after every other node
            use = len(order) if n.kind == "output" else self.pos[n.name]
            for i in n.inputs:
                self.last_use[i] = max(self.last_use.get(i, -1), use)

    def fresh(self) -> str:
        for base in _NAMES:
            if base not in self.used_names:
                self.used_names.add(base)
                return base
        k = 1
        while f"y{k}" in self.used_names:
            k += 1
        self.used_names.add(f"y{k}")
        return f"y{k}"

    def named(self, node: Node) -> str | None:
        """The spec's name for node's value (deduplicated against live values), if it has one."""
        want = self.hint.get(node.name)
        if want is None:
            return None
        here = self.pos[node.name]
        base = cand = py_name(want)
        k = 1
        while self._busy(cand, node, here):
            cand = f"{base}_{k}"
            k += 1
        self.used_names.add(cand)
        self.var[node.name] = cand
        return cand

    def _busy(self, v: str, node: Node, here: int) -> bool:
        """Whether another value still needed after `here` (or a model input, which keeps its name) holds `v`."""
        for name, var in self.var.items():
            if var != v or name == node.name:
                continue
            if self.last_use.get(name, -1) > here or (name in self.inputs and not self.reuse_inputs):
                return True
        return False

    def assign(self, node: Node) -> str:
        """Variable for node's result: the spec's name for it; else the first input's, if this node is that value's
        last use; else a fresh short one."""
        named = self.named(node)
        if named is not None:
            return named
        here = self.pos[node.name]
        for src in node.inputs[:1]:
            v = self.var.get(src)
            if src in self.inputs and not self.reuse_inputs:
                continue
            if v is not None and self.last_use.get(src) == here and not self._shared(v, src, here):
                self.var[node.name] = v
                return v
        v = self.fresh()
        self.var[node.name] = v
        return v

    def _shared(self, v: str, src: str, here: int) -> bool:
        # another live value may hold the same variable name only if it is the same value
        return any(name != src and var == v and self.last_use.get(name, -1) > here for name, var in self.var.items())


def _name_hints(g: Graph) -> dict[str, str]:
    """node -> the spec variable it is (or, for the unnamed steps of a chain, that its chain ends in) bound to."""
    hint: dict[str, str] = {}
    chained: set[str] = set()  # nodes whose name their chain's earlier steps share
    for n in reversed(g.nodes()):
        if n.kind in ("input", "output"):
            continue
        if n.var:
            hint[n.name] = n.var
            # a returned value's name is for it alone: `x = self.ln_f(x)`, `logits = self.lm_head(x)`
            if not any(g[u].kind == "output" for u in g.users(n.name)):
                chained.add(n.name)
            continue
        users = g.users(n.name)
        if len(users) == 1 and users[0] in chained and g[users[0]].inputs[:1] == (n.name,) \
                and g[users[0]].inputs.count(n.name) == 1 and not isinstance(n.type, TupleType):
            hint[n.name] = hint[users[0]]
            chained.add(n.name)
    return hint


def graph_code(m: Module, g: Graph, cls_of: dict[str, str], is_main: bool) -> GraphCode:
    arg_name = Namer(py_name)
    args = [arg_name(g[i].name) for i in g.inputs]
    attr_of = attribute_namer(g)  # the state_dict layout every backend shares
    vars_ = _Vars(g, args, reuse_inputs=not is_main)
    for i, a in zip(g.inputs, args):
        vars_.var[i] = a
    init: list[str] = []
    fwd: list[str] = []
    comments: list[str] = []
    callees: list[str] = []
    imports: list[str] = []
    support: list[str] = []
    ties: list[str] = []
    outputs: list[str] = []
    stacks: dict[str, tuple[int, list[str]]] = {}  # named stack -> (its init line, the modules it holds)
    chains = _chained_stacks(g, attr_of)  # first block of a stack that is one chain -> all its blocks
    in_chain = {c.name for members in chains.values() for c in members[1:]}
    unpacked = unpacked_tuples(g)

    def construct(node: Node) -> str:
        """The init line that builds node's module (or its entries in a named stack); the module as forward reads
        it: `self.attn`, `self.h` (a ModuleList for a repeat), `self.layer1[0]`, `self.layer1[1:3]`."""
        attr = attr_of(node.name)
        if node.kind == "call":
            callees.append(node.target)
            ctor = f"@{node.target}@"
        else:
            body = trivial_body(m, m.graphs[node.target]) or node.target
            callees.append(body)
            ctor = f"@{body}@ for _ in range({node.attrs.count})"
        entry = stack_entry(attr)
        if entry is None:
            init.append(f"self.{attr} = " + (ctor if node.kind == "call" else f"nn.ModuleList([{ctor}])"))
            return f"self.{attr}"
        head, index, run = entry
        if head not in stacks:
            stacks[head] = (len(init), [])
            init.append("")
        stacks[head][1].append(f"*[{ctor}]" if run else ctor)
        return f"self.{head}[{index}:{index + node.attrs.count}]" if run else f"self.{head}[{index}]"

    for n in g.nodes():
        if n.kind == "input" or (n.kind == "op" and n.target == "getitem" and n.inputs[0] in unpacked):
            continue
        if n.kind == "output":
            outputs.append(vars_.var[n.inputs[0]])
            continue
        if n.name in in_chain:
            continue  # called through its stack's nn.Sequential
        ins = [vars_.var[i] for i in n.inputs]
        in_types = [g[i].type for i in n.inputs]
        attr = attr_of(n.layer or n.name)
        if n.kind == "op":
            op = registry.get(n.target)
            rule = op.torch
            if rule is None:
                raise NotImplementedError(f"op {n.target!r} has no PyTorch emitter")
            imports.extend(i for i in rule.imports if i not in imports)
            support.extend(s for s in rule.support if s not in support)
            callees.extend(u.graph for u in op.graph_uses(n.attrs))  # named in the module rule as @graph@
            layers: list[str] = []  # attributes of the layers a fused op is made of, passed to its call rule
            if rule.module is not None and (n.layer is None or n.layer == n.name):
                made = rule.module(in_types, n.attrs)
                if isinstance(made, dict):  # a fused op keeps each layer under its spec name: same state_dict
                    layers = [f"self.{attr_of(k)}" for k in made]
                    init += [f"{a} = {e}" for a, e in zip(layers, made.values())]
                else:
                    init.append(f"self.{attr} = {made}")
                tie = getattr(n.attrs, "tie", None)
                if tie:
                    ties.append(f"self.{attr}.weight = self.{attr_of(tie)}.weight  # weight tying")
            if rule.inplace is not None and _overwritable(g, n):
                expr = rule.inplace(ins, n.attrs, in_types)
            elif rule.call is not None:
                expr = rule.call(ins + layers, n.attrs, in_types)
            else:
                expr = f"self.{attr}({', '.join(ins)})"
        elif n.name in chains:
            members = chains[n.name]
            for c in members:
                construct(c)
            v = vars_.assign(n)
            vars_.var[members[-1].name] = v
            fwd.append(f"{v} = self.{stack_entry(attr)[0]}({ins[0]})")
            comments.append(_shape(members[-1].type))
            continue
        elif n.kind == "call":
            expr = f"{construct(n)}({', '.join(ins)})"
        elif n.kind == "repeat":
            held = construct(n)
            carried = ins[:n.attrs.carried]
            extra = ins[n.attrs.carried:]
            loop_vars = [vars_.assign(n)] if n.attrs.carried == 1 else [vars_.fresh() for _ in carried]
            # carried values flow through the loop: initialise them, then rebind each iteration
            for lv, cv in zip(loop_vars, carried):
                if lv != cv:
                    fwd.append(f"{lv} = {cv}")
                    comments.append("")
            call_args = ", ".join(loop_vars + extra)
            fwd.append(f"for layer in {held}:")
            comments.append("")
            fwd.append(f"    {', '.join(loop_vars)} = layer({call_args})")
            comments.append(_shape(n.type))
            if n.attrs.carried != 1:
                tv = vars_.fresh()
                vars_.var[n.name] = tv
                fwd.append(f"{tv} = ({', '.join(loop_vars)}{',' if len(loop_vars) == 1 else ''})")
                comments.append("")
            continue
        else:  # pragma: no cover
            raise AssertionError(n.kind)
        v = vars_.assign(n)
        if n.name in unpacked:  # `out, h = self.rnn(x)` rather than `y = self.rnn(x)`, `out = y[0]`, ...
            items = unpacked[n.name]
            first = next((i for i, item in enumerate(items) if item is not None), None)
            for i, item in enumerate(items):
                if item is not None and vars_.named(g[item]) is None:
                    vars_.var[item] = v if i == first else vars_.fresh()
            v = ", ".join(vars_.var[item] if item is not None else "_" for item in items)
        fwd.append(f"{v} = {expr}")
        comments.append(_shape(n.type))
    chained = {stack_entry(attr_of(first))[0] for first in chains}
    for head, (line, ctors) in stacks.items():
        opening, closing = ("nn.Sequential(", ")") if head in chained else ("nn.ModuleList([", "])")
        if len(ctors) <= 3:
            init[line] = f"self.{head} = {opening}{', '.join(ctors)}{closing}"
        else:  # one block a line
            init[line] = "\n".join([f"self.{head} = {opening}", *(f"    {c}," for c in ctors), closing])
    init.extend(ties)
    ret = outputs[0] if len(outputs) == 1 else ", ".join(outputs)
    fwd.append(f"return {ret}")
    comments.append("")
    return GraphCode(g, args, init, fwd, comments, callees, imports, support, attr_of.taken)


def _chained_stacks(g: Graph, attr_of) -> dict[str, list[Node]]:
    """Named stacks whose blocks form one chain, each feeding only the next (`x = x -> BasicBlock(w, 2) ->
    BasicBlock(w)`): emitted as an nn.Sequential called once, as torchvision's `self.layer1(x)`."""
    order = [n.name for n in g.nodes()]
    stacks: dict[str, list[Node]] = {}
    for n in g.nodes():
        if n.kind in ("call", "repeat") and stack_entry(attr_of(n.name)) is not None:
            stacks.setdefault(stack_entry(attr_of(n.name))[0], []).append(n)
    out = {}
    for members in stacks.values():
        pos = [order.index(c.name) for c in members]
        ok = all(len(c.inputs) == 1 and not isinstance(c.type, TupleType) and (c.kind == "call" or c.attrs.carried == 1)
                 for c in members)
        ok = ok and pos == list(range(pos[0], pos[0] + len(pos)))
        ok = ok and all(b.inputs == (a.name,) and g.users(a.name) == [b.name] for a, b in zip(members, members[1:]))
        if ok:
            out[members[0].name] = members
    return out


def _overwritable(g: Graph, n: Node) -> bool:
    """n may overwrite its first input: an op's fresh result (see TorchRule.fresh) that nothing else reads."""
    src = g[n.inputs[0]]
    if src.kind != "op" or g.users(src.name) != [n.name] or n.inputs.count(src.name) != 1:
        return False
    rule = registry.get(src.target).torch
    return rule is not None and rule.fresh


def reachable(m: Module, codes: dict[str, "GraphCode"]) -> list[str]:
    seen, stack = set(), [m.main]
    while stack:
        g = stack.pop()
        if g in seen:
            continue
        seen.add(g)
        stack.extend(codes[g].callees)
    return [g for g in m.graphs if g in seen]


# ---- classes: share one class between specialisations that differ only in numbers ----------------------------

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


def _parametrize(codes: list[GraphCode]) -> tuple[list[str], list[str], list[str], list[str], list[list]] | None:
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
    if init is None or fwd is None:
        return None
    comments = subst([c.comments for c in codes], str, soft=True)
    params = [k for k in names if k in used]
    stores = [f"self.{stored.names[p]} = {p}" for p in params if p in stored.names]
    args = [[cands[i][p] for p in params] for i in range(len(codes))]
    return params, stores + init, fwd, comments, args


def plan_classes(m: Module) -> tuple[list[ClassPlan], dict[str, str], list[str], list[str]]:
    codes = {name: graph_code(m, g, {}, name == m.main) for name, g in m.graphs.items()}
    live = reachable(m, codes)
    imports: list[str] = []
    support: list[str] = []
    for name in live:
        imports.extend(i for i in codes[name].imports if i not in imports)
        support.extend(s for s in codes[name].support if s not in support)
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
            key = (m.graphs[name].block, _template(c.init), _template(c.forward), tuple(c.args))
            groups.setdefault(key, []).append(name)
        for members in groups.values():
            _plan_group(m, members, codes, plans, by_graph, cls_of, new_class_name)
    main = codes[m.main]
    main.init = [_resolve_ctor(ln, by_graph) for ln in main.init]
    cname = class_name(m.name)
    cls_of[m.main] = cname
    plans.append(ClassPlan(cname, [m.main], [], {m.main: []}, main.init, main.forward, main.comments, main.args,
                           f"{m.name}, compiled by specc from {spec_relative(m.path, m.path)}"))
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
            params, init, fwd, comments, args = res
        else:
            params, init, fwd, comments, args = [], sc[0].init, sc[0].forward, sc[0].comments, [[]]
        cname = new_class_name(m.graphs[sub[0]].block)
        g0 = m.graphs[sub[0]]
        doc = f"{g0.block}" + (f" ({len(sub)} variants)" if len(sub) > 1 else "") + \
            (f", defined at {spec_relative(g0.span.file, m.path)}:{g0.span.line}" if g0.span else "")
        plan = ClassPlan(cname, sub, params, {n: a for n, a in zip(sub, args)}, init, fwd, comments,
                         sc[0].args, doc)
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


# ---- values Python cannot write down --------------------------------------------------------------------------

_MAX_INT_BITS = 14_000  # about 4200 decimal digits: Python refuses str() of ints over 4300 digits


def check_emittable(m: Module) -> None:
    """Every number the file would contain can be printed as Python source; else a located error per value."""
    diags = []
    where = m.graph.span
    for k, v in m.hparams.items():
        if not _plain_data(v):
            diags.append(Diagnostic("E0107", f"hyper-parameter {k!r} is a {type(v).__name__}: only numbers, strings, "
                                    "booleans, none and lists of them can be compiled into a model", where))
        elif _too_big(v):
            diags.append(Diagnostic("E0107", f"hyper-parameter {k!r} is too large to emit as Python source", where))
    for g in m.graphs.values():
        for n in g.nodes():
            values = n.attrs.model_dump().values() if isinstance(n.attrs, BaseModel) else ()
            if any(_too_big(v) for v in values):
                diags.append(Diagnostic("E0107", f"{n.target or n.kind} {n.name!r}: an argument is too large to emit"
                                        " as Python source", n.span or g.span))
    if diags:
        raise SpecError(*diags)


def _plain_data(v) -> bool:
    if v is None or isinstance(v, (bool, int, float, str)):
        return True
    return isinstance(v, (tuple, list)) and all(_plain_data(x) for x in v)


def _too_big(v) -> bool:
    if isinstance(v, int):
        return v.bit_length() > _MAX_INT_BITS
    if isinstance(v, (tuple, list)):
        return any(_too_big(x) for x in v)
    if isinstance(v, dict):
        return any(_too_big(x) for x in v.values())
    return False


# ---- the file -------------------------------------------------------------------------------------------------

def emit_module_source(m: Module, target=None, source_name: str | None = None) -> str:
    check_emittable(m)
    plans, _, imports, support = plan_classes(m)
    by_graph = {g: p for p in plans for g in p.members}
    model_cls = class_name(m.name)
    src = source_name or m.path
    out: list[str] = []
    for snippet in support:
        out += ["", ""] + snippet.strip("\n").splitlines()
    out += [
        "",
        "",
        "@dataclass(frozen=True)",
        f"class {model_cls}Config:",
        f'    """The hyper-parameters {model_cls} was compiled with (change them with `specc compile -D name=value`)."""',
    ]
    if m.hparams:
        out.append("")
        field_name = Namer(py_name)
        for k, v in m.hparams.items():
            out.append(f"    {field_name(k)}: {_annot(v)} = {pyval(_plain(v))}")
    for p in plans:
        out += ["", ""]
        is_main = p.name == model_cls
        out.append(f"class {p.name}(nn.Module):")
        out.append(f'    """{_safe_doc(p.doc)}"""')
        out.append("")
        if is_main:
            out.append(f"    def __init__(self, config: {model_cls}Config = {model_cls}Config()) -> None:")
            out.append("        super().__init__()")
            out.append(f"        if config != {model_cls}Config():  # the layers below are specialised to these values")
            out.append(f"            raise ValueError(f\"compiled for {{{model_cls}Config()}}: recompile with -D to change it\")")
            out.append("        self.config = config")
        else:
            sig = "".join(f", {a}: int" for a in p.params)
            out.append(f"    def __init__(self{sig}) -> None:")
            out.append("        super().__init__()")
        for ln in p.init:
            out.extend("        " + part for part in _resolve_ctor(ln, by_graph).split("\n"))
        out.append("")
        fargs = "".join(f", {a}" for a in p.fwd_args)
        out.append(f"    def forward(self{fargs}):")
        if is_main:
            out.extend("        " + ln for ln in input_checks(m, p.fwd_args, model_cls))
        for ln, c in zip(p.forward, p.comments):
            out.append("        " + ln + (f"  # {c}" if c else ""))
        if is_main:
            out.append("")
            out.append("    def aux_loss(self) -> torch.Tensor:")
            out.append('        """Auxiliary losses of the last forward (mixture-of-experts balancing); 0 if none."""')
            out.append("        losses = [m.last_aux_loss for m in self.modules() if getattr(m, \"last_aux_loss\", None) "
                       "is not None]")
            out.append("        return sum(losses) if losses else torch.zeros(())")
    body = "\n".join(out) + "\n"
    imports = ["from dataclasses import dataclass", "import torch", "from torch import nn", *imports]
    if re.search(r"\bF\.", body):
        imports.append("import torch.nn.functional as F")
    stdlib = [i for i in imports if i.split()[1].split(".")[0] in _STDLIB]
    third = [i for i in imports if i not in stdlib]
    head = [
        f"# generated by specc {__version__} from {_safe_comment(src)}: do not edit, recompile the spec instead",
        f'"""{model_cls}: PyTorch module compiled by specc."""',
        *_isort(stdlib),
        "",
        *_isort(third),
    ]
    return "\n".join(head) + "\n" + body


def _isort(lines: list[str]) -> list[str]:
    """One import section the way ruff's isort orders it: `import a` lines, then `from a import b` lines."""
    return sorted(set(lines), key=lambda ln: (ln.startswith("from "), ln.split()[1].lower(), ln))


_STDLIB = {"math", "dataclasses", "typing", "itertools", "functools"}


def _annot(v) -> str:
    if v is None:
        return "None"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "str"
    return "tuple"


def _plain(v):
    if isinstance(v, list):
        return tuple(_plain(x) for x in v)
    if isinstance(v, tuple):
        return tuple(_plain(x) for x in v)
    return v


def _safe_comment(s: str) -> str:
    return re.sub(r"[^\w./\- ]", "_", s)


def _safe_doc(s: str) -> str:
    return re.sub(r"[^\w./\-:,() ]", "_", s)
