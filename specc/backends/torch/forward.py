"""Forward code of one graph: the init lines that build its layers and the forward lines that call them, with the
spec's variable names. A thin walker: it branches on node kind only; every op's code comes from its registry entry
(``OpDef.torch``). Block classes are planned from these in classes.py, the file is assembled in emit.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ...hyper import Flag, expr_name, render_now, rendering_active
from ...ir import Graph, Module, Node
from ...naming import Namer, attribute_namer, py_name, stack_entry, unpacked_tuples
from ...ops import registry
from ...types import TensorType, TupleType
from ...walker import Interpreter
from .inits import init_call
from .kvcache import CachePlan, cached_attention_lines
from .varmap import VarMap


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
    weights: list[str] = field(default_factory=list)  # the declared initialisation: the `_init_weights` lines
    settled: list[tuple[str, str]] = field(default_factory=list)  # pins the code makes unnecessary (a loop that
    # chooses each index's block itself)


_NAMES = ["x", "y", "z", "h", "u", "v", "w"]


class _Vars:
    """Variable naming. A value the spec bound to a variable gets that name (`q, k, v = ...`), and so do the unnamed
    steps of the chain that computes it (`x = tokens -> wte -> wpe` is `x = self.wte(tokens)`, `x = self.wpe(x)`);
    other values reuse their input's variable when that dies here (register-allocation style), or get a short one."""

    def __init__(self, g: Graph, args: list[str], reuse_inputs: bool = True) -> None:
        self.g = g
        self.reuse_inputs = reuse_inputs
        self.inputs = set(g.inputs)
        self.var: dict[str, str] = VarMap()
        self.live: set[str] = set(args)
        self.hint = _name_hints(g)
        # generated names keep clear of the spec's own, so that `y` never means two things
        self.used_names: set[str] = set(args) | {py_name(v) for v in self.hint.values()}
        order = [n.name for n in g.nodes()]
        self.pos = {n: i for i, n in enumerate(order)}
        self.cursor = -1  # the position of the node being walked (_ForwardCode.run_node)
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
        holders = self.var.holders.get(v, [])
        # a holder last used before the node being walked is dead for every later question (they are asked from
        # that node on): dropped once, so a name that thousands of dead values held (x in an unrolled loop) is
        # not scanned again for every new value (quadratic: 8000 layers took 8 s)
        holders[:] = [h for h in holders if self.last_use.get(h, -1) >= self.cursor or h in self.inputs]
        for name in holders:
            if self.var.get(name) != v or name == node.name:
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
        # another live value may hold the same variable name only if it is the same value; values are assigned in
        # graph order, so a holder dead before `here` stays dead and is dropped (linear time on long chains)
        holders = self.var.holders.get(v, [])
        holders[:] = [name for name in holders if self.last_use.get(name, -1) >= here and self.var.get(name) == v]
        return any(name != src and self.last_use.get(name, -1) > here for name in holders)


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


def graph_code(m: Module, g: Graph, is_main: bool, cache: CachePlan | None = None) -> GraphCode:
    """The init and forward lines of graph `g`'s nn.Module (calls and repeats name their callees' classes as
    `@graph@`, resolved once classes are planned); with the cache plan of a causal LM, the graphs it names take
    a key/value cache (kvcache.py)."""
    return _ForwardCode(m, g, is_main, cache).code()


class _ForwardCode(Interpreter[str, None]):
    """Walks one graph (without descending into calls: each callee is its own class), a value being the Python
    variable that holds it; every node appends its init and forward lines."""

    def __init__(self, m: Module, g: Graph, is_main: bool, cache: CachePlan | None = None) -> None:
        super().__init__(m)
        self.g = g
        self.is_main = is_main
        self.args = _arg_names(g)
        self.plan = cache if cache is not None and g.name in cache.graphs else None
        self.cache = _arg_names(g, "cache")[-1] if self.plan else None  # the KVCache argument
        self.attr_of = attribute_namer(g)  # the state_dict layout every backend shares
        self.vars = _Vars(g, self.args + ([self.cache] if self.cache else []), reuse_inputs=not is_main)
        for i, a in zip(g.inputs, self.args):
            self.vars.var[i] = a
        if self.cache:  # no spec variable takes the cache's name
            self.vars.var["%cache"] = self.cache
            self.vars.last_use["%cache"] = len(g)
        self.init: list[str] = []
        self.fwd: list[str] = []
        self.comments: list[str] = []
        self.callees: list[str] = []
        self.imports: list[str] = []
        self.support: list[str] = []
        self.ties: list[str] = []
        self.weights: list[str] = []
        self.outputs: list[str] = []
        self.stacks: dict[str, tuple[int, list[str]]] = {}  # named stack -> (its init line, the modules it holds)
        # first block of a stack that is one chain -> its blocks (an nn.Sequential cannot pass the cache on)
        self.chains = _chained_stacks(g, self.attr_of, lambda n: self.takes_cache(n.target))
        self.in_chain = {c.name for members in self.chains.values() for c in members[1:]}
        self.unpacked = unpacked_tuples(g)
        # `repeat layers as layers[i]` folded by `if i < dense_layers`: one ModuleList chosen per index, one loop
        self.by_index = {head: r for head, r in g.index_runs.items() if rendering_active()
                         and len({tuple(self.pass_cache(self.repeat_body(g[k]))) for k in r.nodes}) == 1}
        self.index_ctors: dict[str, list[str]] = {}
        self.second_run = {r.nodes[1]: r.nodes[0] for r in self.by_index.values()}

    def code(self) -> GraphCode:
        self.run_graph(self.g, self.args, None)
        chained = {stack_entry(self.attr_of(first))[0] for first in self.chains}
        for head, (line, ctors) in self.stacks.items():
            if head in self.by_index:
                r = self.by_index[head]
                first, second = self.index_ctors[head]
                opening, closing = ("nn.Sequential(*[", "])") if head in chained else ("nn.ModuleList([", "])")
                self.init[line] = "\n".join([f"self.{head} = {opening}", f"    {first}",
                                             f"    if {render_now(r.cond, {r.var})} else", f"    {second}",
                                             f"    for {r.var} in range({r.count!r})", closing])
                continue
            opening, closing = ("nn.Sequential(", ")") if head in chained else ("nn.ModuleList([", "])")
            if len(ctors) <= 3:
                self.init[line] = f"self.{head} = {opening}{', '.join(ctors)}{closing}"
            else:  # one block a line
                self.init[line] = "\n".join([f"self.{head} = {opening}", *(f"    {c}," for c in ctors), closing])
        ret = self.outputs[0] if len(self.outputs) == 1 else ", ".join(self.outputs)
        if self.cache and self.is_main:  # this forward's positions are cached now
            self.line(f"if {self.cache} is not None:")
            self.line(f"    {self.cache}.advance({self.args[0]}.size(1))")
        args = self.args + ([f"{self.cache}=None"] if self.cache else [])
        return GraphCode(self.g, args, self.init + self.ties, [*self.fwd, f"return {ret}"],
                         [*self.comments, ""], self.callees, self.imports, self.support, self.attr_of.taken,
                         self.weights, [p for r in self.by_index.values() for p in r.pins])

    def input_types(self, g: Graph, n: Node) -> list:
        """The types n's rules build and call it for: its input nodes' (rolled.py: as a loop saw them)."""
        return [g[i].type for i in n.inputs]

    def takes_cache(self, graph: str) -> bool:
        """Whether this graph passes its key/value cache on to `graph`'s module."""
        return self.plan is not None and graph in self.plan.graphs

    def pass_cache(self, graph: Graph) -> list[str]:
        """The keyword argument that hands the cache to `graph`'s module's forward ([] if it takes none)."""
        return [f"{_arg_names(graph, 'cache')[-1]}={self.cache}"] if self.takes_cache(graph.name) else []

    def line(self, code: str, comment: str = "") -> None:
        self.fwd.append(code)
        self.comments.append(comment)

    # -- node kinds --------------------------------------------------------------------------------------------
    def output(self, g: Graph, n: Node, value: str, ctx: None) -> str:
        self.outputs.append(value)
        return value

    def run_node(self, g: Graph, n: Node, ins: list[str], ctx: None) -> str:
        self.vars.cursor = self.vars.pos.get(n.name, self.vars.cursor)
        if (n.kind == "op" and n.target == "getitem" and n.inputs[0] in self.unpacked) or n.name in self.in_chain \
                or n.name in self.second_run:
            return self.vars.var.get(n.name)  # unpacked by its tuple's line, or called through its stack's loop
        return super().run_node(g, n, ins, ctx)

    def op(self, g: Graph, n: Node, ins: list[str], ctx: None) -> str:
        op = registry.get(n.target)
        rule = op.torch
        if rule is None:
            raise NotImplementedError(f"op {n.target!r} has no PyTorch emitter")
        in_types = self.input_types(g, n)
        attr = self.attr_of(n.layer or n.name)
        attrs = _flagged(g, n) if rendering_active() else n.attrs
        self.imports.extend(i for i in rule.imports if i not in self.imports)
        needed = rule.support if rule.support_when is None or rule.support_when(in_types, attrs) else ()
        self.support.extend(s for s in needed if s not in self.support)
        self.callees.extend(u.graph for u in op.graph_uses(attrs))  # named in the module rule as @graph@
        layers: list[str] = []  # attributes of the layers a fused op is made of, passed to its call rule
        if rule.module is not None and (n.layer is None or n.layer == n.name):
            made = rule.module(in_types, attrs)
            if isinstance(made, dict):  # a fused op keeps each layer under its spec name: same state_dict
                layers = [f"self.{self.attr_of(k)}" for k in made]
                self.init += [f"{a} = {e}" for a, e in zip(layers, made.values())]
            else:
                self.init.append(f"self.{attr} = {made}")
            for param, init in n.init:  # a fused op's parameters are `layer.param`; a moe's `router.weight`
                owner, _, leaf = param.partition(".")
                where = f"{self.attr_of(owner)}.{leaf}" if isinstance(made, dict) and owner in made else \
                    f"{attr}.{param}"
                self.weights.append(init_call(f"self.{where}", init))
            tie = getattr(attrs, "tie", None)
            if tie:
                self.ties.append(f"self.{attr}.weight = self.{self.attr_of(tie)}.weight  # weight tying")
        if self.plan and (g.name, n.name) in self.plan.attention:
            return self.cached_attention(n, ins, in_types)
        if self.plan and rule.positions:  # positions count from the cache's start
            ins = [*ins, f"cache={self.cache}"]
        if rule.inplace is not None and _overwritable(g, n):
            expr = rule.inplace(ins, attrs, in_types)
        elif rule.call is not None:
            expr = rule.call(ins + layers, attrs, in_types)
        else:
            expr = f"self.{attr}({', '.join(ins)})"
        return self.bind(n, expr)

    def cached_attention(self, n: Node, ins: list[str], in_types: list) -> str:
        """A causal self-attention: as without a cache when there is none, else over the cached keys and values."""
        here = self.vars.pos[n.name]
        dying = len(set(ins)) == 3 and all(self.vars.last_use.get(i) == here for i in n.inputs[1:])
        kv = ins[1:] if dying else [self.vars.fresh(), self.vars.fresh()]  # k, v keep their names if unread later
        v = self.vars.assign(n)
        for code, comment in cached_attention_lines(n, ins, kv, v, in_types, self.cache):
            self.line(code, comment and (_shape(n.type) if comment == "shape" else comment))
        return v

    def call(self, g: Graph, n: Node, ins: list[str], ctx: None) -> str:
        if n.name not in self.chains:
            callee = self.module.graphs[n.target]
            cache = self.pass_cache(callee)
            named = [f"{a}={v}" if i in callee.optional else v  # `kv=memory`: an optional input, by name
                     for i, a, v in zip(callee.inputs, _arg_names(callee), ins)]
            return self.bind(n, f"{self.construct(n)}({', '.join(named + cache)})")
        members = self.chains[n.name]  # a named stack that is one chain: one nn.Sequential call
        for c in members:
            self.construct(c)
        v = self.vars.assign(n)
        self.vars.var[members[-1].name] = v
        self.line(f"{v} = self.{stack_entry(self.attr_of(n.name))[0]}({ins[0]})", _shape(members[-1].type))
        return v

    def repeat(self, g: Graph, n: Node, ins: list[str], ctx: None) -> str:
        if n.name in self.chains:
            return self.call(g, n, ins, ctx)
        held = self.construct(n)
        carried, extra = ins[:n.attrs.carried], ins[n.attrs.carried:]
        loop_vars = [self.vars.assign(n)] if n.attrs.carried == 1 else [self.vars.fresh() for _ in carried]
        # carried values flow through the loop: initialise them, then rebind each iteration
        for lv, cv in zip(loop_vars, carried):
            if lv != cv:
                self.line(f"{lv} = {cv}")
        last = n
        if n.stack in self.by_index and self.by_index[n.stack].nodes[0] == n.name:  # the whole stack, one loop
            last = self.g[self.by_index[n.stack].nodes[1]]
            self.construct(last)
            self.vars.var[last.name] = loop_vars[0]
        self.line(f"for layer in {held}:")
        cache = self.pass_cache(self.repeat_body(n))
        self.line(f"    {', '.join(loop_vars)} = layer({', '.join(loop_vars + extra + cache)})", _shape(last.type))
        if n.attrs.carried == 1:
            return loop_vars[0]
        tv = self.vars.fresh()
        self.vars.var[n.name] = tv
        self.line(f"{tv} = ({', '.join(loop_vars)}{',' if len(loop_vars) == 1 else ''})")
        return tv

    # -- helpers -----------------------------------------------------------------------------------------------
    def bind(self, n: Node, expr: str) -> str:
        """`v = expr` for node n (`out, h = expr` for a tuple read only item by item); n's variable."""
        v = self.vars.assign(n)
        target = v
        if n.name in self.unpacked:  # `out, h = self.rnn(x)` rather than `y = self.rnn(x)`, `out = y[0]`, ...
            items = self.unpacked[n.name]
            first = next((i for i, item in enumerate(items) if item is not None), None)
            for i, item in enumerate(items):
                if item is not None and self.vars.named(self.g[item]) is None:
                    self.vars.var[item] = v if i == first else self.vars.fresh()
            target = ", ".join(self.vars.var[item] if item is not None else "_" for item in items)
        elif expr in (v, f"({v})"):  # identity keeps its input's variable: no `y = y`
            return v
        elif not self.g.users(n.name):
            target = "_"  # never read (ruff F841)
        self.line(f"{target} = {expr}", _shape(n.type))
        return v

    def construct(self, node: Node) -> str:
        """The init line that builds node's module (or its entries in a named stack); the module as forward reads
        it: `self.attn`, `self.h` (a ModuleList for a repeat), `self.layer1[0]`, `self.layer1[1:3]`."""
        attr = self.attr_of(node.name)
        if node.kind == "call":
            self.callees.append(node.target)
            ctor = f"@{node.target}|{self.g.name}|{node.name}@"  # classes.py writes the class and its arguments
        else:
            body = self.repeat_body(node).name
            self.callees.append(body)
            if body == node.target:  # the body's own class, built in this graph
                site = f"{self.g.name}|{node.name}"
            else:  # the one block the body calls, built from the body's call node
                site = f"{node.target}|{next(c.name for c in self.module.graphs[node.target].nodes() if c.kind == 'call')}"
            ctor = f"@{body}|{site}@ for _ in range({node.attrs.count})"
            if node.stack in self.by_index:  # one block per index, chosen by the `if` (code() writes the list)
                if node.stack not in self.stacks:
                    self.stacks[node.stack] = (len(self.init), [])
                    self.init.append("")
                self.index_ctors.setdefault(node.stack, []).append(f"@{body}|{site}@")
                return f"self.{node.stack}"
        entry = stack_entry(attr)
        if entry is None:
            self.init.append(f"self.{attr} = " + (ctor if node.kind == "call" else f"nn.ModuleList([{ctor}])"))
            return f"self.{attr}"
        head, index, run = entry
        if head not in self.stacks:
            self.stacks[head] = (len(self.init), [])
            self.init.append("")
        self.stacks[head][1].append(f"*[{ctor}]" if run else ctor)
        return f"self.{head}[{index}:{index + node.attrs.count}]" if run else f"self.{head}[{index}]"


def _flagged(g: Graph, n: Node):
    """n's attributes, each bool that a bool hyper-parameter of g sets by name (`causal=causal`) made a Flag, so
    that the rule writes it as that name (`is_causal=self.causal`) and one class serves both values."""
    flags = {k: Flag(v, expr_name(e)) for k, e in n.exprs if isinstance(v := getattr(n.attrs, k, None), bool)
             and e.isidentifier() and isinstance(g.hparams.get(e), bool)}
    if not flags:
        return n.attrs
    attrs = n.attrs.model_copy()
    attrs.__dict__.update(flags)
    return attrs


def _arg_names(g: Graph, *extra: str) -> list[str]:
    """The forward's argument names: g's inputs, then `extra` ones (the cache), each clear of those before it."""
    arg_name = Namer(py_name)
    args = [arg_name(g[i].name) for i in g.inputs]
    more = Namer(py_name, set(args))  # its own keys: an input may be called `cache` too
    return args + [more(e) for e in extra]


def _chained_stacks(g: Graph, attr_of, takes_cache=lambda n: False) -> dict[str, list[Node]]:
    """Named stacks whose blocks form one chain, each feeding only the next (`x = x -> BasicBlock(w, 2) ->
    BasicBlock(w)`): emitted as an nn.Sequential called once, as torchvision's `self.layer1(x)`; not where a block
    takes the key/value cache (`takes_cache(node)`)."""
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
        ok = ok and pos == list(range(pos[0], pos[0] + len(pos))) and not any(takes_cache(c) for c in members)
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
