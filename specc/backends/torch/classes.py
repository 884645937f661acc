"""Class planning: one nn.Module class per block whose code is the same for every specialisation of it, written in
the block's own names. Sizes are HInts (specc/hyper.py): the code of each graph is generated with every size printed
as a marker naming the hyper-parameters and input sizes it came from, and the markers are then written the way each
place reads them: `width` in a block's constructor (a constructor parameter), `self.heads` in its forward (stored),
`config.d` / `self.config.d` in the model, the plain name in shape comments. A graph whose code names something it
cannot take as a parameter is written with numbers instead, and the model then accepts only the config it was
compiled with.
"""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Any, Callable

from ...attrs import BlockValue
from ...diagnostics import SpecError
from ...elaborate.sizes import size_env
from ...hyper import HFloat, HInt, Unrenderable, expr_name, implied, names, render_expr, rendering, spec_name
from ...ir import Graph, Module, Node, RolledTrace
from ...naming import Namer, attr_name, class_name, py_name, spec_relative, trivial_body
from ...ops.torch_rule import pyval
from ...types import TensorType, TupleType
from .forward import GraphCode, graph_code, reachable
from .kvcache import cache_plan, generate_support
from .merging import alias, merge_branches, shared_shape, specialisations, take_optional_inputs
from .plan import _MARK, ClassPlan, config_fields, marker
from .plan import plain as _plain
from .plan import text_of as _text_of
from .plan import write as _write
from .rolled import rolled_plan


@dataclass
class _Names:
    """How one graph's code writes a name: in its constructor and its shape comments (None: cannot). A block's
    forward reads the values its constructor stored on self (_Planner.generic); the model's reads self.config."""

    init: Callable[[str], "str | None"]
    comment: Callable[[str], str]
    params: list[str]  # the names the constructor may take, in order
    forward: Callable[[str], "str | None"] | None = None


_PRIME = "\u02b9"  # a parameter's name after an `if` gives it its value (Graph.resolved)
_LET_SIZE = re.compile(r"(features|channels)\((\w+)\)|dim\((\w+), (\d+)\)")
_RESERVED = {"self", "nn", "F", "torch", "math", "config", "super", "int", "float"}


def _size_names(g: Graph) -> list[str]:
    """The names of g's own input sizes (`x_channels`, ...), in order."""
    return list(dict.fromkeys(spec_name(d.expr) for d in _sizes_of(g) if d.expr and d.expr.isidentifier()))


def _block_names(g: Graph, hints: dict[str, str] | None = None) -> _Names:
    sizes = _size_names(g)
    rename: dict[str, str] = {}
    for k, text in g.lets.items():  # `d = features(x)`: the constructor takes x's width as `d`
        mt = _LET_SIZE.fullmatch(text.strip())
        if mt is None or k in g.hparams or k in rename.values():
            continue
        tensor = mt.group(2) or mt.group(3)
        if tensor not in g.inputs:
            continue
        t = g[tensor].type
        if not isinstance(t, TensorType):
            continue
        axis = (t.rank - 1 if mt.group(1) == "features" else 1) if mt.group(1) else int(mt.group(4))
        if 0 <= axis < t.rank and isinstance(t.shape[axis], HInt) and t.shape[axis].expr in sizes:
            rename.setdefault(t.shape[axis].expr, k)
    for size, want in (hints or {}).items():  # else the name the block it passes the size to gives it (`d`)
        if size in sizes and size not in rename and want not in g.hparams and want not in rename.values() \
                and want not in sizes:
            rename[size] = want
    if len(g.inputs) == 1:  # else, for a block of one input, torch's words: in_channels, in_features
        prefix = f"{g.inputs[0]}_"
        for size in sizes:
            want = "in_" + size.removeprefix(prefix)
            if size.startswith(prefix) and size not in rename and want not in g.hparams and size not in g.hparams \
                    and want not in rename.values() and want not in sizes and not want[3:].startswith("dim"):
                rename[size] = want
    allowed = set(sizes) | {k for k, v in g.hparams.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    allowed |= set(given_modules(g).values())  # `ffn`: the module its caller builds
    allowed |= {k for k, v in g.hparams.items() if isinstance(v, bool)}  # `causal`, where an op reads it (Flag)
    allowed |= {k for k, v in g.hparams.items() if isinstance(v, (list, tuple)) and _plain_ints(v)}  # `widths[i]`
    given = [k for k, v in g.hparams.items() if isinstance(v, BlockValue)]  # `ffn`: its sizes are `ffn_hidden`
    allowed |= {n for n in _names_in(g) if any(n.startswith(f"{k}_") for k in given)}
    text = {n: py_name(rename.get(n, n)) for n in allowed}
    if len(set(text.values())) < len(text) or set(text.values()) & _RESERVED:
        text = {}
    extra = sorted(n for n in allowed if n not in sizes and n not in g.hparams)
    for let, _ in g.resolved:  # `kv_headsʹ`, the parameter after the `if` that resolves it: the same local name
        original = let.removesuffix(_PRIME)
        if original in text:
            text[let] = text[original]
            rename[let] = rename.get(original, original)
    return _Names(init=lambda n: text.get(n), comment=lambda n: rename.get(n, n), params=[*sizes, *g.hparams, *extra])


def _plain_ints(v) -> bool:
    return all(isinstance(x, int) and not isinstance(x, bool) for x in v)


def given_modules(g: Graph) -> dict[str, str]:
    """Call node -> block-value parameter, for each block value g applies exactly once: its class takes the module
    (`RotaryDecoderLayer(d, heads, eps, ffn)`, `self.mlp = ffn`), as timm's blocks take `mlp_layer`, so one class
    serves every feed-forward its callers choose. One applied twice keeps its sizes as parameters (two modules)."""
    uses: dict[str, list[str]] = {}
    for node, param in g.given.items():
        uses.setdefault(param, []).append(node)
    return {nodes[0]: param for param, nodes in uses.items() if len(nodes) == 1}


def _names_in(g: Graph) -> set[str]:
    """The names the sizes of g's call arguments read."""
    out: set[str] = set()
    for n in g.nodes():
        if n.kind == "call":
            for _, v in n.attrs.args:
                if isinstance(v, (HInt, HFloat)) and v.expr is not None:
                    out |= names(v.expr)
    for env in g.embedded.values():
        for v in env.values():
            if isinstance(v, (HInt, HFloat)) and v.expr is not None:
                out |= names(v.expr)
    return out


def config_names(m: Module) -> Callable[[str], "str | None"]:
    """A hyper-parameter as the model's forward reads it: `self.config.d`."""
    fields = config_fields(m)
    return lambda n: f"self.config.{fields[n]}" if n in fields else None


def _main_names(m: Module) -> _Names:
    fields = config_fields(m)
    return _Names(init=lambda n: f"config.{fields[n]}" if n in fields else None, comment=lambda n: n, params=[],
                  forward=config_names(m))


def _body_names(parent: _Names) -> _Names:
    """A repeat body is written in its enclosing graph's names: its class takes each as a parameter."""
    return _Names(init=lambda n: py_name(n) if py_name(n) not in _RESERVED else None, comment=parent.comment,
                  params=[])


def plan_classes(m: Module, rolled: RolledTrace | None = None) -> tuple[list[ClassPlan], list[str], list[str]]:
    """One class per block whose code is the same for all its specialisations, planned callees first (m.graphs
    order), so that each constructor call names its callee's class and passes its parameters. Long because the
    naming of classes (no clash with helpers, models or arguments) is set up here, next to the loop it serves.
    `rolled`: the trace of a model whose `for ... as` loops are written as loops (m is then its rolled elaboration,
    rolled.py)."""
    cache = cache_plan(m)  # a causal LM's key/value cache, for generate()
    with rendering(marker):  # sizes as markers; only the numbers differ from the code with numbers
        marked = {name: graph_code(m, g, name == m.main, cache) for name, g in m.graphs.items()}
    live = reachable(m, marked)
    imports: list[str] = []
    support: list[str] = []
    for name in live:
        imports.extend(i for i in marked[name].imports if i not in imports)
        support.extend(s for s in marked[name].support if s not in support)
    if cache is not None:
        support.append(generate_support())
    parent: dict[str, str] = {}
    stack_of: dict[str, str] = {}  # a repeat body -> the stack that holds it, when the spec names one
    for name, g in m.graphs.items():
        for n in g.nodes():
            if n.kind == "repeat" and not trivial_body(m, m.graphs[n.target]):
                parent.setdefault(n.target, name)
                stack = n.stack or n.name
                if stack not in _GENERIC_STACKS and not stack.startswith("layers_"):
                    stack_of.setdefault(n.target, stack)
    names: dict[str, _Names] = {}

    def names_of(gname: str) -> _Names:
        if gname not in names:
            names[gname] = _main_names(m) if gname == m.main else \
                _body_names(names_of(parent[gname])) if gname in parent else \
                _block_names(m.graphs[gname], _size_hints(m, m.graphs[gname], by_graph))
        return names[gname]

    base_taken = {class_name(m.name), class_name(m.name) + "Config"}
    helpers = {name for snippet in support for found in _TOP_LEVEL.findall(snippet) for name in found if name}
    clash = helpers & base_taken
    if clash:
        raise SpecError.at("E0106", f"model name {m.name!r} clashes with the helper {clash.pop()} that the emitted "
                           "file defines", m.graph.span, help="rename the model")
    base_taken |= helpers
    for name in live:  # a class must not be shadowed by a constructor or forward argument that refers to it
        base_taken.update(marked[name].args)
        base_taken.update(py_name(k) for k in m.graphs[name].hparams)
        base_taken.update(_size_names(m.graphs[name]))

    def run(order: list[str], merges: dict[str, tuple[str, dict]]) -> tuple[list[ClassPlan], dict[str, ClassPlan]]:
        """One planning pass over `order`; a graph in `merges` (special -> (general, substitution)) is built by its
        general's class."""
        names.clear()
        taken = set(base_taken)

        def new_class_name(block: str, graph: str = "") -> str:
            # a repeat body is named for its stack where the spec names one (`repeat n as encoder`: EncoderBlock)
            base = class_name(f"{stack_of[graph]}_block") if graph in stack_of else class_name(block)
            if base == class_name(m.name):
                base += "Block"
            name, k = base, 1
            while name in taken:
                name = f"{base}{k}"
                k += 1
            taken.add(name)
            return name

        by_graph.clear()
        groups: dict[tuple, ClassPlan] = {}
        plans: list[ClassPlan] = []
        for name in order:
            g = m.graphs[name]
            is_main = name == m.main
            planner = _Planner(m, g, by_graph, names_of, parent)
            if is_main and rolled is not None:
                plan = rolled_plan(m, rolled, planner, spec_relative(m.path, m.path))
            else:
                plan = planner.plan(marked[name], cache,
                                    all(by_graph[c].generic for c in _callees(m, g) if c in by_graph))
            if is_main:
                plan.name = class_name(m.name)
                plan.doc = f"{m.name}, compiled by specc from {spec_relative(m.path, m.path)}"
                plan.members = [name]
                plans.append(plan)
                continue
            if name in merges and merges[name][0] in by_graph:  # a special case of another graph's class
                general = by_graph[merges[name][0]]
                by_graph[name] = alias(general, plan, merges[name][1])
                general.members.append(name)
                continue
            key = (g.block, tuple(plan.init), tuple(plan.forward), tuple(plan.weights), tuple(plan.params),
                   tuple(plan.pins), tuple(plan.fwd_args), tuple(plan.prologue))
            twin = None if key in groups else next((q for q in plans if q.members and m.graphs[q.members[0]].block
                                                     == g.block and merge_branches(q, plan)), None)
            if twin is not None:  # the same block down the other branch of an `if`: one class with that `if`
                twin.members.append(name)
                groups[key] = twin
            elif key in groups:  # the same code; only the shapes it sees differ (comments say what they share)
                groups[key].members.append(name)
                if len(groups[key].comments) == len(plan.comments):  # (not when the group is a merged `if`: longer)
                    groups[key].comments = [shared_shape(c, d) for c, d in zip(groups[key].comments, plan.comments)]
            else:
                plan.name = new_class_name(g.block, name)
                plan.members = [name]
                groups[key] = plan
                plans.append(plan)
            by_graph[name] = groups[key]
        return plans, by_graph

    by_graph: dict[str, ClassPlan] = {}
    plans, _ = run(live, {})
    merges, order = specialisations(m, plans, live, _callees)
    if merges:  # again, each special case built by its general's class (the general planned first)
        plans, _ = run(order, merges)
        for p in plans:
            take_optional_inputs(p, [v[1] for k, v in merges.items() if k in p.members])
    for p in plans:
        if p.name == class_name(m.name):
            continue
        g0 = m.graphs[p.members[0]]
        p.doc = f"{g0.block}" + (f", defined at {spec_relative(g0.span.file, m.path)}:{g0.span.line}"
                                 if g0.span else "")
    return plans, sorted(imports), support


def _size_hints(m: Module, g: Graph, by_graph: dict) -> dict[str, str]:
    """g's input size -> the constructor parameter name of the block it hands that size to, when that block names it
    (`Block` passes its width to `CausalSelfAttention(d, ...)`: Block calls it `d` too)."""
    hints: dict[str, str] = {}
    for n in g.nodes():
        plan = by_graph.get(n.target) if n.kind == "call" else None
        if plan is None or not plan.generic:
            continue
        callee = m.graphs[n.target]
        env: dict[str, Any] = {}
        for i, src in zip(callee.inputs, n.inputs):
            env.update(size_env(callee[i].type, g[src].type))
        for src, text in zip(plan.sources, plan.params):
            v = env.get(src)
            if isinstance(v, HInt) and v.expr is not None and v.expr.isidentifier() and text != src:
                hints.setdefault(spec_name(v.expr), text)
    return hints


def _callees(m: Module, g: Graph) -> list[str]:
    out = []
    for n in g.nodes():
        if n.kind == "call":
            out.append(n.target)
        elif n.kind == "repeat":
            out.append(trivial_body(m, m.graphs[n.target]) or n.target)
    return out


_GENERIC_STACKS = {"layers", "layer", "h", "blocks", "stack"}  # say nothing about the body: `{Owner}Layer`
_CTOR = re.compile(r"@([^@|]+)\|([^@|]+)\|([^@|]+)@")


class _Planner:
    """The class of one graph: its code in its own names (generic), or with the numbers of this compile."""

    def __init__(self, m: Module, g: Graph, by_graph: dict, names_of, parent: dict) -> None:
        self.m, self.g, self.by_graph, self.names_of, self.parent = m, g, by_graph, names_of, parent
        self.seen: dict[str, dict] = {}  # call node -> its callee's input sizes as a rolled loop saw them

    def plan(self, marked: GraphCode, cache, callees_generic: bool) -> ClassPlan:
        if callees_generic:
            try:
                return self.generic(marked)
            except Unrenderable:
                pass
        plain = graph_code(self.m, self.g, self.g.name == self.m.main, cache)  # with this compile's numbers
        init = [self.ctors(ln, generic=False) for ln in plain.init]
        return ClassPlan("", [], [], init, plain.forward, plain.comments, plain.args, "", plain.weights,
                         generic=False)

    def generic(self, code: GraphCode) -> ClassPlan:
        nm = self.names_of(self.g.name)
        used_init: list[str] = []
        used_fwd: list[str] = []

        def noting(fn, used):
            def wrapped(n):
                text = fn(n)
                if text is not None and n not in used:
                    used.append(n)
                return text
            return wrapped

        is_main = self.g.name == self.m.main
        stored = Namer(attr_name, set(code.attrs))  # a value the forward reads, on self beside the layers

        inherit = set() if is_main else self.inherited()

        def own_or_inherited(n: str) -> str | None:  # a name an init value reads from an enclosing scope
            text = nm.init(n)
            if text is None and n in inherit and py_name(n) not in _RESERVED:
                text = py_name(n)
            return text

        def on_self(n: str) -> str | None:
            text = own_or_inherited(n)
            return None if text is None else f"self.{stored(text)}"

        fwd_text = nm.forward if is_main else on_self
        init = [_write(self.ctors(ln, generic=True), noting(own_or_inherited, used_init)) for ln in code.init]
        prologue = [f"{nm.init(let)} = {_write(render_expr(text, (marker, set())), noting(nm.init, used_init))}"
                    for let, text in self.g.resolved if nm.init(let) is not None]
        pins = self.pins(noting(nm.init, used_init), code.settled)
        weights = [_write(ln, noting(fwd_text, used_fwd)) for ln in code.weights]
        # an input's size only the forward reads is read off the input there (`in_height = x.size(2)`), not stored
        sizes = {} if is_main else _input_sizes(self.g, code, nm, {*used_init, *used_fwd})
        read: list[str] = []
        forward = [_write(ln, noting(lambda n: nm.init(n) if n in sizes else fwd_text(n), read))
                   for ln in code.forward]
        used_fwd += [n for n in read if n not in sizes and n not in used_fwd]
        read = [n for n in read if n in sizes]
        if read:
            forward.insert(0, f"{', '.join(nm.init(n) for n in read)} = {', '.join(sizes[n] for n in read)}")
        comments = ([""] if read else []) + [_write(c, nm.comment) for c in code.comments]
        if is_main:
            return ClassPlan("", [], [], init, forward, comments, code.args, "", weights, pins=pins)
        lets = {let for let, _ in self.g.resolved}
        order = [*nm.params, *sorted(inherit)] if nm.params else [n for n in [*used_init, *used_fwd] if n not in lets]
        params = [n for n in dict.fromkeys(order) if n in used_init or n in used_fwd]
        texts = [own_or_inherited(n) for n in params]
        stores = [f"self.{stored(t)} = {t}" for n, t in zip(params, texts) if n in used_fwd and n + _PRIME not in lets]
        stores += [f"self.{stored(nm.init(n))} = {nm.init(n)}" for n in used_fwd if n in lets]
        annots = [_annot(self.g.hparams.get(n, 0)) for n in params]
        return ClassPlan("", [], texts, stores + init, forward, comments, code.args, "", weights,
                         sources=params, annots=annots, pins=pins, inherits=[n for n in params if n in inherit],
                         prologue=prologue, optional=[a for a, i in zip(code.args, self.g.inputs) if i in self.g.optional])

    def inherited(self) -> set[str]:
        """Names this graph's initialisers read that are not its own (`layers` in GPT-2's scaled c_proj init, declared
        by the model), and those its callees take so: its constructor takes them and passes them on."""
        own = set(_size_names(self.g)) | set(self.g.hparams)
        out: set[str] = set()
        for n in self.g.nodes():
            for _, init in n.init:
                for _, v in init.args:
                    if isinstance(v, (HInt, HFloat)) and v.expr is not None:
                        out |= names(v.expr)
            for callee in _callees(self.m, self.g) if n.kind in ("call", "repeat") else ():
                plan = self.by_graph.get(callee)
                if plan is not None:
                    out |= set(plan.inherits)
        return out - own

    def pins(self, fn, settled: list) -> list[tuple[str, str]]:
        """Constructor lines that raise for arguments this code was not written for: the graph's `assert`s (with
        the spec's message), the `if` branches it took and the loop lengths it unrolled (but not those `settled`:
        the code decides them itself)."""
        out = []
        who = self.m.name if self.g.name == self.m.main else self.g.block
        pins = [p for p in self.g.pins if p not in settled]
        for text, what in list(pins):  # `range(blocks + 1)` needs no check of its own beside `blocks == 2`
            if text and not what.startswith("assert:") and implied(text, [t for t, _ in pins if t != text]):
                pins.remove((text, what))
        for text, what in pins:
            if not text:  # decided by something the code cannot check: numbers of this compile only
                raise Unrenderable(what)
            cond = _write(render_expr(text, (marker, set())), fn)
            if what.startswith("assert:"):  # the spec's own words for an invalid configuration
                msg = json.dumps(f"{who}: {what.removeprefix('assert:')}")
            else:
                msg = json.dumps(f"{who}: {what} in the spec this class was compiled from; recompile with -D")
            if (cond, msg) not in out:  # the same check from several places (a loop's iterations)
                out.append((cond, msg))
        return out

    def ctors(self, line: str, generic: bool) -> str:
        """`@callee|site graph|site node@` (forward.py's construct) -> `Class(arguments)`."""
        def rep(mt: re.Match) -> str:
            callee, site_graph, site_node = mt.groups()
            if generic and site_graph == self.g.name and site_node in given_modules(self.g):
                return marker(given_modules(self.g)[site_node])
            plan = self.by_graph[callee]
            args = [self.argument(plan, callee, self.m.graphs[site_graph], site_node, src, generic)
                    for src in plan.sources]
            return f"{plan.name}({', '.join(args)})"
        line = _CTOR.sub(rep, line)

        def embedded(mt: re.Match) -> str:  # a block an op runs (moe's experts), with the sizes it was given
            attr, gname = mt.groups()  # `@shared:SwiGLU_1@`: the op's attribute naming the graph, the graph
            plan = self.by_graph[gname]
            env = self.g.embedded.get(f"{attr}:{gname}", {})
            if generic:
                if any(src not in env for src in plan.sources):
                    raise Unrenderable(gname)
                return f"{plan.name}({', '.join(_text_of(env[src]) for src in plan.sources)})"
            g = self.m.graphs[gname]
            values = {**{spec_name(d.expr): int(d) for d in _sizes_of(g)}, **g.hparams}
            return f"{plan.name}({', '.join(pyval(_plain(values[src])) for src in plan.sources)})"
        return re.sub(r"@(\w+):([\w.]+)@", embedded, line)

    def argument(self, plan: ClassPlan, callee: str, site: Graph, node: str, src: str, generic: bool) -> str:
        """The text of the callee's parameter `src` where `site`'s node `node` builds it."""
        if callee in self.parent:  # a repeat body's class takes its enclosing graph's names
            if generic:
                return marker(src)
            value = site.hparams.get(src)
            if value is None:
                value = next((v for v in _sizes_of(site) if spec_name(v.expr or "") == src), None)
            if value is None:
                raise Unrenderable(src)
            return pyval(int(value) if isinstance(value, HInt) else value)
        n: Node = site[node]
        callee_g = self.m.graphs[callee]
        inner = next((k for k, p in given_modules(callee_g).items() if p == src), None)
        if inner is not None and plan.generic:  # the module the callee applies, built here in this site's names
            inner_callee = callee_g[inner].target
            inner_plan = self.by_graph[inner_callee]
            args = [self.argument(inner_plan, inner_callee, callee_g, inner, s, generic) for s in inner_plan.sources]
            if generic:
                outer = {k: self.argument(plan, callee, site, node, k, generic) for k in _marked(args)}
                args = [_MARK.sub(lambda mt: _paren(outer[mt.group(1)]), a) for a in args]
            return f"{inner_plan.name}({', '.join(args)})"
        env: dict[str, Any] = {**dict(n.attrs.args), **site.call_values.get(node, {})}
        for i, src_in in zip(callee_g.inputs, n.inputs):
            env.update(size_env(callee_g[i].type, site[src_in].type))
        env.update(self.seen.get(node, {}) if site is self.g else {})
        if src not in env:  # inherited: the caller's own name for it
            if generic:
                return marker(src)
            env[src] = site.hparams.get(src, self.m.hparams.get(src))
        value = env[src]
        if generic:
            # `causal=causal`, `Stack(widths)`: the caller's own bool or list hyper-parameter, passed on by name
            given = site.expr(n, src)
            kind = bool if isinstance(value, bool) else (list, tuple) if isinstance(value, (list, tuple)) else None
            if kind and given and given.isidentifier() and isinstance(site.hparams.get(given), kind):
                return marker(expr_name(given))
            return _text_of(value)
        return pyval(int(value) if isinstance(value, HInt) else float(value) if isinstance(value, HFloat)
                     else _plain(value))


def _input_sizes(g: Graph, code: GraphCode, nm: _Names, stored: set[str]) -> dict[str, str]:
    """g's own input sizes the forward can read off its inputs when it starts (`x.size(2)`), by name: not those
    stored for the constructor, of an optional input (it may be None), or whose local name the forward uses."""
    taken = {mt.group(0) for ln in code.forward for mt in re.finditer(r"\b[A-Za-z_]\w*\b", _MARK.sub("", ln))}
    out: dict[str, str] = {}
    for i, arg in zip(g.inputs, code.args):
        t = g[i].type
        if i in g.optional or not isinstance(t, TensorType):
            continue
        for axis, d in enumerate(t.shape):
            n = spec_name(d.expr) if isinstance(d, HInt) and d.expr else None
            if n and n not in stored and n not in out and nm.init(n) and nm.init(n) not in taken:
                out[n] = f"{arg}.size({axis})"
    return out


_FLIP = {ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Lt: ast.GtE, ast.GtE: ast.Lt, ast.Gt: ast.LtE, ast.LtE: ast.Gt}


def _negated(cond: str) -> str:
    """`not cond` as a person writes it: `a == b` for `not a != b`, `x` for `not not x`."""
    tree = ast.parse(cond, mode="eval").body
    if isinstance(tree, ast.UnaryOp) and isinstance(tree.op, ast.Not):
        return ast.unparse(tree.operand)
    if isinstance(tree, ast.Compare) and len(tree.ops) == 1 and type(tree.ops[0]) in _FLIP:
        return ast.unparse(ast.Compare(tree.left, [_FLIP[type(tree.ops[0])]()], tree.comparators))
    return ast.unparse(ast.UnaryOp(ast.Not(), tree))


def pin_lines(pins: list[tuple[str, str]]) -> list[str]:
    out = []
    for cond, msg in pins:
        out += [f"if {_negated(cond)}:", f"    raise ValueError({msg})"]
    return out


def _sizes_of(g: Graph) -> list:
    out = []
    for i in g.inputs:
        t = g[i].type
        for item in t.items if isinstance(t, TupleType) else (t,):
            if isinstance(item, TensorType):
                out += [d for d in item.shape if isinstance(d, HInt)]
    return out


def _marked(texts: list[str]) -> list[str]:
    return list(dict.fromkeys(mt.group(1) for t in texts for mt in _MARK.finditer(t)))


def _paren(text: str) -> str:
    """text as an operand: bare when it is one name, number, attribute or call."""
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError:
        return f"({text})"
    return text if isinstance(tree, (ast.Name, ast.Constant, ast.Attribute, ast.Call, ast.Subscript)) else f"({text})"


def _annot(v: Any) -> str:
    if isinstance(v, BlockValue):
        return "nn.Module"
    return "float" if isinstance(v, float) else "bool" if isinstance(v, bool) else "int" if isinstance(v, int) \
        else "str" if isinstance(v, str) else "tuple"


_TOP_LEVEL = re.compile(r"^(?:class|def)\s+(\w+)|^(?!\s)(\w+)\s*[:=]", re.M)
