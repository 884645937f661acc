"""Forward code of one graph: the init lines that build its layers and the forward lines that call them, with the
spec's variable names. A thin walker: it branches on node kind only; every op's code comes from its registry entry
(``OpDef.torch``). Block classes are planned from these in classes.py, the file is assembled in emit.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ...ir import Graph, Module, Node
from ...naming import (
    Namer,
    attribute_namer,
    py_name,
    stack_entry,
    trivial_body,
    unpacked_tuples,
)
from ...ops import registry
from ...types import TensorType, TupleType


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
