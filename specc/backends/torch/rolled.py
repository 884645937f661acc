"""A model body with `for v in range(n) as name` loops, written as the loops it is: the constructor fills one
nn.ModuleList per named loop (`self.down_blocks[level].resnets[i]`, the state_dict keys naming.py gives every
backend) and the forward runs the same loops, so any config builds, whatever its counts (`blocks`, `len(mult)`).

Transliteration, not reverse engineering: the model is elaborated again with Elaborator.rolling, which keeps the
loops' names in the sizes (`ch * mult[level]`, `x_channels` for x's channels where an iteration starts,
`skips_channels[-1]` for the entry of a carried list) and notes what each run of each statement made
(ir.RolledTrace). Each statement is then written once from its runs: every run must write the same code, as a
loop body must. Tensors' code comes from the op registry's rules through forward.py's walker; the body's ints and
lists of tensors are written as the spec writes them, and the constructor tracks the sizes the layers are built
from beside the tensors that carry them (`x_channels = config.ch * config.mult[level]`). A branch no run took
cannot be written: the constructor raises where the config would take it, so the forward never needs it.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace

from ... import ast as A
from ...diagnostics import SpecError
from ...elaborate.sizes import size_name
from ...hyper import Unrenderable, render_expr, rendering
from ...ir import Graph, ListValue, Module, Node, RolledTrace, TraceEvent
from ...naming import attr_name, attribute_names, py_name, site_path
from ...types import TensorType
from .forward import _arg_names, _ForwardCode, _shape
from .merging import shared_shape
from .plan import ClassPlan, config_fields, text_of, write
from .plan import marker as _marker

_SITE = re.compile(r"self\.__site_(\w+?)__")
_CTOR_LINE = re.compile(r"^self\.__site_(\w+?)__ = (.*)$", re.S)


class NotRolled(Exception):
    """Why a model body cannot be written as loops (the emitter reports it at `span`)."""

    def __init__(self, why: str, span=None) -> None:
        super().__init__(why)
        self.span = span


def has_rolled_loops(m: Module) -> bool:
    """Whether m's model body has `for v in range(n) as name` loops (layers with a Node.site)."""
    return any(n.site for n in m.graph.nodes())


def rolled_body(optimized: Module, elaborated: Module) -> Module:
    """`optimized` with the model body as elaborated: the loops are written statement by statement from the trace of
    that elaboration, so the passes rewrite the blocks' classes, not the body (a fusion across a loop's statements
    could not be written as the statements' code)."""
    graphs = {**optimized.graphs, optimized.main: elaborated.graph}
    for n in elaborated.graph.nodes():
        if n.kind == "call" and n.target not in graphs:
            graphs[n.target] = elaborated.graphs[n.target]
    return replace(optimized, graphs=graphs)


@dataclass
class Written:
    """One run of a statement as code: forward lines (with shape comments), constructor lines (layers built, in
    order, and the sizes it tracks), and the constructor lines each enclosing loop needs (ModuleLists)."""

    forward: list[tuple[str, str]] = field(default_factory=list)
    init: list[str] = field(default_factory=list)
    mirror: list[str] = field(default_factory=list)
    before: dict[int, list[str]] = field(default_factory=dict)  # loop depth -> lines before that loop
    start: dict[int, list[str]] = field(default_factory=dict)  # loop depth -> lines at its body's start

    def key(self) -> tuple:
        """What every run of a statement must share: its code (shape comments may differ, merging.shared_shape)."""
        return (tuple(ln for ln, _ in self.forward), tuple(self.init), tuple(self.mirror),
                tuple(sorted((k, tuple(v)) for k, v in self.before.items())),
                tuple(sorted((k, tuple(v)) for k, v in self.start.items())))


class _Code(_ForwardCode):
    """forward.py's walker over the rolled main graph, node by node: layers made in a loop are written as
    `self.__site_<node>__` placeholders, each value as the variable the statement writer chose."""

    def __init__(self, m: Module, g: Graph) -> None:
        super().__init__(m, g, True, None)
        real = self.attr_of
        sites = {n.name for n in g.nodes() if n.site}

        class Attrs:
            taken = real.taken

            def __call__(self, key: str) -> str:
                return f"__site_{key}__" if key in sites else real(key)
        self.attr_of = Attrs()
        self.want: dict[str, str] = {}
        self.seen: dict[str, list] = {}  # node -> its input types as the loop saw them (RolledTrace.inputs)

    def input_types(self, g: Graph, n: Node) -> list:
        return self.seen.get(n.name) or super().input_types(g, n)

    def bind(self, n: Node, expr: str) -> str:
        v = self.want[n.name]
        if expr not in (v, f"({v})"):
            self.line(f"{v} = {expr}", _shape(n.type))
        return v


class _Writer:
    """Replays the trace's runs in order, keeping what each spec variable holds, and writes each run."""

    def __init__(self, m: Module, trace: RolledTrace, ctor) -> None:
        self.m, self.g, self.trace, self.ctor = m, m.graph, trace, ctor
        self.code = _Code(m, self.g)
        self.code.seen = trace.inputs
        attrs = attribute_names(self.g)
        self.heads = {n.site[0][0]: attrs[n.name].split(".")[0] for n in self.g.nodes() if n.site}
        self.env: dict[str, object] = {self.g[i].name: i for i in self.g.inputs}  # the model's inputs hold theirs
        self.args = dict(zip(self.g.inputs, _arg_names(self.g)))
        self.runs: dict = {}  # statement span -> [Written]
        self.ints: set[str] = set()  # variables the body binds to ints (`level`): locals of both methods
        self.sizes: set[str] = set()  # the size names the constructor tracks (`x_channels`)
        self.stmts = {s.span: s for s in A.statements(trace.body)}
        self.list_types: dict[str, dict] = {}  # list variable -> {rank: a type it held} (when it empties)

    def input_sizes(self) -> list[str]:
        """The constructor's first tracking lines: the inputs' sizes as declared (`x_features = 8`)."""
        out = []
        for i in self.g.inputs:
            t = self.g[i].type
            for k, d in enumerate(t.shape if isinstance(t, TensorType) else ()):
                if isinstance(d, int):
                    self.sizes.add(size_name(self.g[i].name, t.rank, k))
                    out.append(_MIRROR + f"{py_name(size_name(self.g[i].name, t.rank, k))} = {text_of(d)}")
        return out

    def replay(self) -> None:
        for ev in self.trace.events:  # what each list variable holds, also where it is empty (`feats = []`)
            for var, value in ev.bound.items():
                if isinstance(value, ListValue):
                    self.list_types.setdefault(var, {}).update({self.g[n].type.rank: self.g[n].type
                                                                for n in value.tail})
        made = set()
        for ev in self.trace.events:
            made |= set(ev.nodes)
            self.runs.setdefault(ev.span, []).append(self.write(ev))
            self.env.update(ev.bound)
        stray = [n.name for n in self.g.nodes() if n.kind not in ("input", "output") and n.name not in made]
        if stray:
            raise NotRolled(f"layers made outside an assignment ({', '.join(stray[:3])})", self.g.span)

    def text_of(self, node: str, ev: TraceEvent) -> str:
        """How a statement reads a value it did not make: as the list entry it read (`skips[-1]`, as written), or
        as the variable holding it."""
        if node in ev.reads:
            return render_expr(ev.reads[node], (self.name, set()))
        for var, value in self.env.items():
            if value == node:
                return self.args[node] if node in self.args and var == self.g[node].name else py_name(var)
        raise NotRolled(f"a value no variable holds ({node})", ev.span)

    def name(self, n: str) -> str:
        """A name in an expression the body writes: a tensor or list variable as itself, others as markers."""
        return py_name(n) if isinstance(self.env.get(n), (str, ListValue)) else _marker(n)

    def write(self, ev: TraceEvent) -> Written:
        out = Written()
        if len(ev.bound) != 1:
            raise NotRolled("an assignment of several values", ev.span)
        (var, value), = ev.bound.items()
        nodes = [self.g[n] for n in ev.nodes]
        if nodes and nodes[-1].kind == "output":
            value, nodes = nodes[-1].inputs[0], nodes[:-1]
        if isinstance(value, str):
            self.write_tensor(ev, var, value, nodes, out)
        elif nodes:
            raise NotRolled("a statement that makes layers but binds no tensor", ev.span)
        elif isinstance(value, int):  # `level = len(mult) - 1 - up`: in both methods
            self.ints.add(var)
            line = f"{py_name(var)} = {self.expr(ev.span, var)}"
            out.forward.append((line, ""))
            out.mirror.append(line)
        elif isinstance(value, ListValue):
            out.forward.append((f"{py_name(var)} = {self.expr(ev.span, var)}", ""))
            self.mirror_list(ev, var, value, out)
        else:
            raise NotRolled(f"`{var}` is neither a tensor, a list of tensors nor an int", ev.span)
        return out

    def expr(self, span, var: str, rename=None) -> str:
        """The statement's right-hand side as written, hyper-parameters as markers (`rename`: other names)."""
        stmt = self.stmts[span]

        def name(n: str) -> str:
            return rename(n) if rename is not None and rename(n) else self.name(n)
        return render_expr(A.unparse(stmt.value), (name, set()))

    def write_tensor(self, ev: TraceEvent, var: str, value: str, nodes: list[Node], out: Written) -> None:
        made = {n.name for n in nodes}
        outside = [[self.text_of(i, ev) for i in n.inputs if i not in made] for n in nodes]
        inside: dict[str, str] = {}
        target, temps = py_name(var), 0
        for k, n in enumerate(nodes):
            if not isinstance(n.type, TensorType) or n.kind not in ("op", "call"):
                raise NotRolled(f"{n.kind} {n.target} (only layers and blocks of one tensor)", ev.span)
            later = [t for texts in outside[k + 1:] for t in texts]
            nxt = [nodes[k + 1].name] if k + 1 < len(nodes) else []
            if n.name == value or (self.g.users(n.name) == nxt and target not in later):
                inside[n.name] = target
            else:
                temps += 1
                inside[n.name] = f"{target}{temps}"
            self.code.want[n.name] = inside[n.name]
            ins = [inside[i] if i in made else self.text_of(i, ev) for i in n.inputs]
            n_init, n_fwd = len(self.code.init), len(self.code.fwd)
            with rendering(_marker):
                (self.code.op if n.kind == "op" else self.code.call)(self.g, n, ins, None)
            out.forward += [(_SITE.sub(lambda mt: self.path(self.g[mt.group(1)]), ln), c)
                            for ln, c in zip(self.code.fwd[n_fwd:], self.code.comments[n_fwd:])]
            for line in self.code.init[n_init:]:
                self.site_line(n, line, out)
        if any("__site_" in ln for ln in self.code.ties):
            raise NotRolled("a weight tied to or from a layer in a loop", ev.span)
        if not nodes:
            out.forward.append((f"{target} = {self.text_of(value, ev)}", ""))
        t, was = self.g[value].type, ev.before.get(var)
        for i, d in enumerate(t.shape):
            if not isinstance(d, int):
                continue
            name = size_name(var, t.rank, i)
            self.sizes.add(name)
            if isinstance(was, TensorType) and was.rank == t.rank and text_of(was.shape[i]) == text_of(d):
                continue  # the size it had (an AttnBlock keeps x's channels): nothing to track
            out.mirror.append(f"{py_name(name)} = {text_of(d)}")

    def mirror_list(self, ev: TraceEvent, var: str, value: ListValue, out: Written) -> None:
        """`skips = skips + [x]` tracks `skips_channels = skips_channels + [x_channels]` (one list per size)."""
        types = self.list_types.get(var, {})
        if len(types) > 1:
            raise NotRolled(f"`{var}` holds tensors of different ranks", ev.span)
        if not types:  # never holds a tensor: no sizes to track
            return
        (rank, t), = types.items()
        for i, d in enumerate(t.shape):
            if not isinstance(d, int):
                continue

            def rename(n: str, i=i) -> str | None:
                held = self.env.get(n)
                if isinstance(held, (str, ListValue)):
                    first = held if isinstance(held, str) else held.tail[0] if held.tail else None
                    got = rank if first is None else self.g[first].type.rank
                    if got != rank:
                        raise NotRolled(f"`{n}` and `{var}` hold tensors of different ranks", ev.span)
                    return _marker(size_name(n, rank, i))
                return None
            name = size_name(var, rank, i)
            self.sizes.add(name)
            out.mirror.append(f"{py_name(name)} = {self.expr(ev.span, var, rename)}")

    def path(self, n: Node) -> str:
        """`self.down_blocks[level].resnets[i]`: where a layer made in the loops sits, in their variables."""
        return "self." + site_path(n.site, self.heads[n.site[0][0]], lambda v, _: f"[{py_name(v)}]")

    def site_line(self, n: Node, line: str, out: Written) -> None:
        """A layer's constructor line where its loops put it (`self.down_blocks[level].resnets.append(...)`), and
        the lists those loops fill, made before the loop and appended to at each iteration's start."""
        line = self.ctor(line)
        mt = _CTOR_LINE.match(line)
        if mt is None:
            out.init.append(line)
            return
        ctor, depth, path = mt.group(2), 0, "self"
        for k, (name, loops) in enumerate(n.site):
            last = k == len(n.site) - 1
            lst = f"{path}.{self.heads[name] if k == 0 else attr_name(name)}"
            if not loops:
                out.init.append(f"{lst} = {ctor}")
                return
            out.before.setdefault(depth, []).append(f"{lst} = nn.ModuleList()")
            for j, (v, _) in enumerate(loops):
                if last and j == len(loops) - 1:
                    out.init.append(f"{lst}.append({ctor})")
                    return
                entry = "nn.Module()" if j == len(loops) - 1 else "nn.ModuleList()"
                out.start.setdefault(depth + j, []).append(f"{lst}.append({entry})")
                lst += f"[{py_name(v)}]"
            path, depth = lst, depth + len(loops)


# ---- the body, statement by statement -------------------------------------------------------------------------

_SKIPPED = (A.InputStmt, A.InitSection, A.Train, A.LayerStmt)  # a `layer` is built where it is first used
_MIRROR = "\x00"  # marks a constructor line that only tracks a size (dropped when nothing reads it)


@dataclass
class _Block:
    forward: list[tuple[str, str]] = field(default_factory=list)
    init: list[str] = field(default_factory=list)
    before: dict[int, list[str]] = field(default_factory=dict)
    start: dict[int, list[str]] = field(default_factory=dict)

    def add(self, other: "_Block", indent: str = "") -> None:
        self.forward += [(indent + ln, c) for ln, c in other.forward]
        self.init += [indent + ln for ln in other.init]
        for mine, theirs in ((self.before, other.before), (self.start, other.start)):
            for d, lines in theirs.items():
                mine.setdefault(d, [])
                mine[d] += [ln for ln in lines if ln not in mine[d]]


class _Assembler:
    """The model body's code from its statements' runs: loops and `if`s as written, each statement once."""

    def __init__(self, w: _Writer, model: str, source: str) -> None:
        self.w, self.model, self.source = w, model, source
        self.loop_vars: set[str] = set()

    def body(self, stmts: tuple, depth: int) -> _Block:
        out = _Block()
        for s in stmts:
            if isinstance(s, _SKIPPED) or (isinstance(s, A.Assert) and depth == 0):
                continue
            if isinstance(s, (A.Assign, A.OutputStmt)):
                out.add(self.statement(s))
            elif isinstance(s, A.If):
                out.add(self.branches(s, depth))
            elif isinstance(s, A.For) and A.range_loop(s):
                out.add(self.loop(s, depth))
            else:
                raise NotRolled(f"{type(s).__name__.lower()} statements in a model with `for ... as` loops", s.span)
        return out

    def statement(self, s) -> _Block:
        runs = self.w.runs.get(s.span, [])
        if not runs:  # in a branch or loop no run took: the constructor raises there
            return _Block()
        first = runs[0]
        if any(r.key() != first.key() for r in runs[1:]):
            raise NotRolled("its runs write different code (a loop body must be the same code every iteration)",
                            s.span)
        comments = [c for _, c in first.forward]
        for r in runs[1:]:
            comments = [shared_shape(a, b) for a, (_, b) in zip(comments, r.forward)]
        forward = [(ln, c) for (ln, _), c in zip(first.forward, comments)]
        return _Block(forward, [*first.init, *(_MIRROR + ln for ln in first.mirror)],
                      {d: list(v) for d, v in first.before.items()}, {d: list(v) for d, v in first.start.items()})

    def unreached(self, what: str, span) -> str:
        where = f"{self.source}:{span.line}" if span is not None else self.source
        msg = json.dumps(f"{self.model}: this config takes {what} ({where}), which the spec was compiled without "
                         "taking; recompile with -D")
        return f"raise ValueError({msg})"

    def branches(self, s: A.If, depth: int) -> _Block:
        """The `if` in both methods; the forward leaves out the branches no run took (the constructor raises
        before a config could take one)."""
        out = _Block()
        fwd: list[tuple[str, str]] = []
        parts = [(c, b) for c, b in s.branches] + ([(None, s.orelse)] if s.orelse is not None else [])
        for k, (cond, stmts) in enumerate(parts):
            sub = self.body(stmts, depth)
            reached = (s.span, k) in self.w.trace.taken
            text = None if cond is None else render_expr(A.unparse(cond), (_marker, set()))
            out.init.append("else:" if cond is None else f"{'if' if k == 0 else 'elif'} {text}:")
            out.init += ["    " + ln for ln in sub.init] if reached else \
                ["    " + self.unreached(f"`{A.unparse(cond)}`" if cond is not None else "an `else`", s.span)]
            if reached:
                if cond is None:
                    head = ["else:"] if fwd else []
                else:
                    head = [f"{'elif' if fwd else 'if'} {text}:"]
                fwd += [(ln, "") for ln in head]
                fwd += [(("    " if head else "") + ln, c) for ln, c in sub.forward or [("pass", "")]]
            sub.forward, sub.init = [], []
            out.add(sub)
        if any(ln.strip() != "pass" for ln, _ in fwd if not ln.startswith(("if ", "elif ", "else:"))):
            out.forward = fwd
        return out

    def loop(self, s: A.For, depth: int) -> _Block:
        var = py_name(s.targets[0])
        self.loop_vars.add(s.targets[0])
        head = f"for {var} in {render_expr(A.unparse(s.iterable), (_marker, set()))}:"
        sub = self.body(s.body, depth + 1)
        out = _Block()
        out.init += sub.before.pop(depth, [])
        out.init.append(head)
        out.init += ["    " + ln for ln in sub.start.pop(depth, [])]
        out.init += ["    " + ln for ln in sub.init] if (s.span, 0) in self.w.trace.taken else \
            ["    " + self.unreached(f"an iteration of `{A.unparse(s.iterable)}`", s.span)]
        if sub.forward:
            out.forward.append((head, ""))
            out.forward += [("    " + ln, c) for ln, c in sub.forward]
        sub.forward, sub.init = [], []
        out.add(sub)
        return out


# ---- the model class ------------------------------------------------------------------------------------------

def rolled_plan(m: Module, trace: RolledTrace, planner, source: str):
    """The model's ClassPlan with its `for ... as` loops as loops (planner: classes._Planner of the main graph,
    which writes each block's constructor call). Raises SpecError (E0501) where the body cannot be written so."""
    planner.seen = trace.sizes
    w = _Writer(m, trace, lambda line: planner.ctors(line, generic=True))
    asm = _Assembler(w, m.name, source)
    try:
        w.replay()
        block = asm.body(trace.body, 0)
        block.init[:0] = w.input_sizes()
        if any(n.site for n in m.graph.nodes() if n.init):
            raise NotRolled("declared initialisation of a layer in a loop", m.graph.span)
        fields = config_fields(m)
        local = w.ints | asm.loop_vars
        in_init = {**{k: f"config.{f}" for k, f in fields.items()}, **{n: py_name(n) for n in local | w.sizes}}
        in_fwd = {**{k: f"self.config.{f}" for k, f in fields.items()}, **{n: py_name(n) for n in local}}
        try:
            init = _live([write(ln, in_init.get) for ln in [*block.init, *w.code.ties]])
            forward = [write(ln, in_fwd.get) for ln, _ in block.forward]
            weights = [write(ln, in_fwd.get) for ln in w.code.weights]
        except Unrenderable as e:
            raise NotRolled(f"`{e}` cannot be computed where the loop needs it", m.graph.span) from None
    except NotRolled as e:
        raise SpecError.at("E0501", f"{m.name}: cannot write the model's `for ... as` loops as loops: {e}",
                           e.span or m.graph.span, help="drop `as` from the loop to unroll it into the "
                           "model (the module then accepts only the loop counts it was compiled with)") from None
    comments = [write(c, lambda n: n) for _, c in block.forward]
    forward, comments = _live_forward(forward, comments, {py_name(n) for n in w.ints})
    outputs = [w.args.get(o, py_name(m.graph[o].name)) for o in m.graph.outputs]
    pins = [(write(render_expr(text, (_marker, set())), in_init.get), json.dumps(f"{m.name}: {what[7:]}"))
            for text, what in m.graph.pins if what.startswith("assert:")]
    return ClassPlan("", [], [], init, [*forward, f"return {', '.join(outputs)}"], [*comments, ""],
                     list(w.args.values()), "", weights, pins=pins)


def _words(line: str) -> set[str]:
    return set(re.findall(r"[A-Za-z_]\w*", line))


def _live(lines: list[str]) -> list[str]:
    """The constructor without the size tracking nothing reads (a loop's heights where only channels size layers)."""
    mirrors = {i: ln.replace(_MIRROR, "") for i, ln in enumerate(lines) if _MIRROR in ln}
    live: set[str] = set()
    for i, ln in enumerate(lines):
        if i not in mirrors:
            live |= _words(ln)
    keep: set[int] = set()
    grew = True
    while grew:
        grew = False
        for i, ln in mirrors.items():
            if i not in keep and ln.split("=", 1)[0].strip() in live:
                keep.add(i)
                live |= _words(ln.split("=", 1)[1])
                grew = True
    return _loop_vars_read(_filled([ln.replace(_MIRROR, "") for i, ln in enumerate(lines)
                                    if i not in mirrors or i in keep]))


def _live_forward(lines: list[str], comments: list[str], ints: set[str]) -> tuple[list[str], list[str]]:
    """The forward without the body's int assignments it never reads (those only the constructor needs)."""
    read = set()
    for ln in lines:
        target, eq, value = ln.partition(" = ")
        read |= _words(value if eq and target.strip() in ints else ln)
    pairs = [(ln, c) for ln, c in zip(lines, comments)
             if not (" = " in ln and ln.split(" = ")[0].strip() in ints and ln.split(" = ")[0].strip() not in read)]
    filled = _loop_vars_read(_filled([ln for ln, _ in pairs]))
    out_c, k = [], 0
    for ln in filled:
        if k < len(pairs) and ln == pairs[k][0]:
            out_c.append(pairs[k][1])
            k += 1
        else:
            out_c.append("")
    return filled, out_c


def _loop_vars_read(lines: list[str]) -> list[str]:
    """`for _ in ...` where the body never reads the loop's variable (the constructor's `for i in range(blocks)`)."""
    out = list(lines)
    for k, ln in enumerate(lines):
        mt = re.match(r"(\s*)for (\w+) in (.*):$", ln)
        if mt is None:
            continue
        indent, body = len(mt.group(1)), []
        for nxt in lines[k + 1:]:
            if len(nxt) - len(nxt.lstrip()) <= indent:
                break
            body.append(nxt)
        if mt.group(2) not in set().union(*map(_words, body)):
            out[k] = f"{mt.group(1)}for _ in {mt.group(3)}:"
    return out


def _filled(lines: list[str]) -> list[str]:
    """The lines without the `if`s and loops the dropping left empty (`pass` where a branch must stay)."""
    while True:
        out: list[str] = []
        for i, ln in enumerate(lines):
            indent = len(ln) - len(ln.lstrip())
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            empty = ln.rstrip().endswith(":") and (not nxt or len(nxt) - len(nxt.lstrip()) <= indent)
            if empty and ln.lstrip().startswith(("if ", "for ")) and not nxt.lstrip().startswith(("elif", "else")):
                continue
            out.append(ln)
            if empty:
                out.append(" " * (indent + 4) + "pass")
        if out == lines:
            return out
        lines = out
