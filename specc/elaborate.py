"""AST -> IR. Evaluates compile-time code (hyper-parameters, if/for, arithmetic), specialises blocks, infers every
shape through the op registry, and collects located diagnostics for all independent errors.

Values in scope are either compile-time data (int, float, bool, str, None, tuple, list, symbolic dims) or
``Tensor`` references to IR nodes. A value that failed to elaborate is ``POISON``; using it reports nothing more,
so one mistake yields one error, not a cascade.
"""
from __future__ import annotations

import contextvars
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic

from . import ast as A
from .diagnostics import Diagnostic, Note, ShapeError, SpecError
from .ir import CallAttrs, Graph, Module, Node, RepeatAttrs
from .ops import registry
from .source import SourceMap, Span
from .symbolic import Sym
from .types import DTYPES, ErrorType, TensorType, TupleType, Type

STDLIB = Path(__file__).resolve().parent.parent / "specs"


class _Poison:
    def __repr__(self) -> str:
        return "<error>"


POISON = _Poison()

MAX_BLOCK_DEPTH = 48  # nested block calls; deeper is almost surely a block calling itself without end
MAX_UNROLL = 100_000  # iterations of a `repeat ... as i` whose body reads i


@dataclass(frozen=True)
class Tensor:
    node: str
    type: Type
    span: Span | None


@dataclass(frozen=True)
class BlockValue:
    """A block called without its tensor inputs, `SwiGLU(1408)`: a value that ops such as `moe` take as an argument
    and specialise for the inputs they feed it (OpDef.block_inputs)."""

    name: str
    values: tuple
    kw: tuple[tuple[str, Any], ...]
    span: Span | None = field(default=None, compare=False)
    spans: tuple = field(default=(), compare=False)  # (key, span) of each argument

    def __str__(self) -> str:
        args = [_short(v) for v in self.values] + [f"{k}={_short(v)}" for k, v in self.kw]
        return f"{self.name}({', '.join(args)})"


@dataclass
class LayerInstance:
    """`layer fc = linear(10)`: one set of parameters, applied wherever `fc` is used."""

    name: str
    link: A.Link
    span: Span | None
    values: list = field(default_factory=list)
    kw: dict = field(default_factory=dict)
    spans: dict = field(default_factory=dict)
    first: Node | None = None
    params: dict[str, tuple] = field(default_factory=dict)


# Shape rules that need the model's dimension constraints (e.g. `T <= ctx`) read them from here.
CONSTRAINTS: contextvars.ContextVar[dict] = contextvars.ContextVar("specc_constraints")


def constraints() -> dict:
    """The dimension bounds of the model being elaborated: {sym: (bound, span)}."""
    return CONSTRAINTS.get({})

_PY_TYPES = {"int": (int,), "float": (float, int), "bool": (bool,), "str": (str,), "list": (list, tuple),
             "tuple": (tuple, list), "dim": (int, Sym), "tensor": (Tensor,), "any": (object,)}


def _typename(v: Any) -> str:
    if isinstance(v, BlockValue):
        return f"block {v}"
    if isinstance(v, Tensor):
        return f"tensor {v.type}"
    if isinstance(v, Sym):
        return f"dim {v}"
    return type(v).__name__


class _Return(Exception):
    def __init__(self, values: list) -> None:
        self.values = values


class _Halt(Exception):
    """A failed `assert` ends its block (or model): what follows relies on it, so its errors would be noise."""


class GraphBuilder:
    def __init__(self, name: str, block: str, hparams: dict, span: Span | None) -> None:
        self.graph = Graph(name=name, block=block, hparams=hparams, span=span)
        self.counts: dict[str, int] = {}
        self.reserved: set[str] = set()  # the model's output names: `output add = x + y` keeps the name `add`

    def free(self, name: str) -> bool:
        return name not in self.graph and name not in self.reserved

    def fresh(self, base: str) -> str:
        base = base or "v"
        n = self.counts.get(base, 0)
        while True:
            name = base if n == 0 else f"{base}_{n}"
            n += 1
            if self.free(name):
                self.counts[base] = n
                return name

    def add(self, node: Node) -> Tensor:
        self.graph.add(node)
        return Tensor(node.name, node.type, node.span)


class Scope(dict):
    pass


class Elaborator:
    def __init__(self, sources: SourceMap | None = None) -> None:
        self.sources = sources or SourceMap()
        self.diags: list[Diagnostic] = []
        self.defs: dict[str, A.Def] = {}
        self.graphs: dict[str, Graph] = {}
        self.memo: dict[Any, str] = {}
        self.block_depth = 0  # blocks being elaborated inside each other (recursion guard)
        self.by_signature: dict[tuple[str, str], str] = {}  # (block, structure) -> graph name
        self.block_counts: dict[str, int] = {}
        self.constraints: dict[str, tuple[Any, Span | None]] = {}
        self.train: dict[str, tuple[Any, Span | None]] = {}
        self._loading: list[str] = []
        self._loaded: set[str] = set()

    # ---- errors ---------------------------------------------------------------------------------------------
    def error(self, code: str, message: str, span: Span | None, *, label: str = "", notes=None, help=None) -> None:
        self.diags.append(Diagnostic(code, message, span, label, notes or [], help))

    def fail(self, code: str, message: str, span: Span | None, **kw) -> SpecError:
        return SpecError.at(code, message, span, **kw)

    # ---- files ----------------------------------------------------------------------------------------------
    def load_file(self, path: Path, span: Span | None = None) -> A.Program | None:
        from .parse import parse

        key = str(path.resolve())
        if key in self._loading:
            chain = " -> ".join(Path(p).name for p in [*self._loading[self._loading.index(key):], key])
            self.error("E0202", f"import cycle: {chain}", span, label="this import closes the cycle")
            return None
        if key in self._loaded:
            return None
        self._loading.append(key)
        try:
            try:
                text = self.sources.read(path)
            except (OSError, UnicodeDecodeError) as e:
                if span is None:
                    raise SpecError.at("E0201", f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
                self.error("E0201", f"cannot read imported file {path}: {getattr(e, 'strerror', None) or e}", span)
                return None
            try:
                prog = parse(text, str(path))
            except SpecError as e:
                self.diags.extend(e.diagnostics)
                return None
            self.add_program(prog, path)
            self._loaded.add(key)
            return prog
        finally:
            self._loading.pop()

    def add_program(self, prog: A.Program, path: Path) -> None:
        """Load a parsed file's imports (relative to `path`) and register its blocks."""
        for imp in prog.imports:
            target = self.resolve_import(path, imp)
            if target is not None:
                self.load_file(target, imp.span)
        for d in prog.defs:
            if d.kind == "block":
                self.add_def(d)

    def resolve_import(self, importer: Path, imp: A.Import) -> Path | None:
        rel = Path(imp.path)
        if rel.is_absolute() or ".." in rel.parts or not imp.path.endswith(".nn"):
            self.error("E0201", f"import path {imp.path!r} must be a relative path to a .nn file, without '..'",
                       imp.span)
            return None
        for base in (importer.parent, STDLIB):
            cand = base / rel
            if cand.is_file():
                return cand
        self.error("E0201", f"import file not found: {imp.path!r}", imp.span,
                   help=f"looked in {importer.parent} and the standard library {STDLIB}")
        return None

    def add_def(self, d: A.Def) -> None:
        prev = self.defs.get(d.name)
        if prev is not None and prev is not d:
            if prev.span == d.span:
                return
            self.error("E0106", f"block {d.name!r} is defined twice", d.name_span,
                       notes=[Note(prev.name_span, "first defined here")])
            return
        if registry.get(d.name) is not None:
            self.error("E0106", f"block {d.name!r} has the same name as a built-in op", d.name_span)
            return
        self.defs[d.name] = self.unique_params(d)

    def unique_params(self, d: A.Def) -> A.Def:
        """Report parameters declared twice, and keep the first of each name so the rest can be checked."""
        seen: dict[str, A.Param] = {}
        for p in d.params:
            if p.name in seen:
                self.error("E0106", f"{d.kind} {d.name}: parameter {p.name!r} is declared twice", p.span,
                           notes=[Note(seen[p.name].span, "first declared here")])
            else:
                seen[p.name] = p
        return d if len(seen) == len(d.params) else dataclasses.replace(d, params=tuple(seen.values()))

    # ---- model ----------------------------------------------------------------------------------------------
    def elaborate_model(self, prog: A.Program, model: str | None, overrides: dict[str, Any]) -> Module | None:
        from .parse import gc_paused

        with gc_paused():  # see gc_paused: keeps check time linear in the size of the spec
            return self._elaborate_model(prog, model, overrides)

    def _elaborate_model(self, prog: A.Program, model: str | None, overrides: dict[str, Any]) -> Module | None:
        models = [d for d in prog.defs if d.kind == "model"]
        if not models:
            self.error("E0401", f"{prog.file} defines no model", None,
                       help="add `model Name(...) { input ...; output ... }`")
            return None
        if model is None:
            chosen = models[0]
        else:
            chosen = next((m for m in models if m.name == model), None)
            if chosen is None:
                names = ", ".join(m.name for m in models)
                raise SpecError.at("E0401", f"no model named {model!r} in {prog.file} (it defines: {names})")
        chosen = self.unique_params(chosen)
        names = {p.name for p in chosen.params}
        for k in overrides:
            if k not in names:
                avail = ", ".join(sorted(names)) or "none"
                self.error("E0110", f"-D {k}: model {chosen.name} has no hyper-parameter {k!r} (it has: {avail})",
                           chosen.name_span)
        b = GraphBuilder(chosen.name, chosen.name, {}, chosen.span)
        b.reserved = {s.name for s in _walk_stmts(chosen.body) if isinstance(s, A.OutputStmt)}
        scope = Scope()
        hparams: dict[str, Any] = {}
        for p in chosen.params:
            if p.name in overrides:
                val = overrides[p.name]
            elif p.default is not None:
                val = self.ev(p.default, scope, b)
            else:
                self.error("E0105", f"model hyper-parameter {p.name!r} has no default; give it with -D {p.name}=...",
                           p.span)
                val = POISON
            val = self.check_param_type(p, val, chosen.name)
            scope[p.name] = val
            hparams[p.name] = val
        b.graph.hparams = dict(hparams)
        token = CONSTRAINTS.set(self.constraints)
        gtoken = registry.GRAPHS.set(self.graphs)
        try:
            self.exec_body(chosen.body, scope, b, is_model=True)
        except _Return as r:
            self.error("E0402", "a model returns values with `output name = ...`, not `return`", None)
            del r
        except _Halt:
            pass
        finally:
            registry.GRAPHS.reset(gtoken)
            CONSTRAINTS.reset(token)
        g = b.graph
        # an `input`/`output` that is written but failed (or was skipped by a failed assert) is already reported
        written = {type(s) for s in _walk_stmts(chosen.body)} if self.diags else set()
        if not g.inputs and A.InputStmt not in written:
            self.error("E0402", f"model {chosen.name} declares no `input`", chosen.name_span)
        if not g.outputs and A.OutputStmt not in written:
            self.error("E0402", f"model {chosen.name} declares no `output`", chosen.name_span)
        self.graphs[g.name] = g
        return Module(name=chosen.name, graphs=dict(self.graphs), main=g.name, hparams=hparams,
                      constraints=dict(self.constraints), train=dict(self.train), path=prog.file)

    def check_param_type(self, p: A.Param, val: Any, owner: str) -> Any:
        if val is POISON or p.type is None:
            return val
        allowed = _PY_TYPES.get(p.type)
        if allowed is None:
            self.error("E0107", f"unknown type {p.type!r} for {p.name!r} (use one of: {', '.join(_PY_TYPES)})", p.span)
            return POISON
        if isinstance(val, bool) and p.type in ("int", "float"):
            ok = False
        else:
            ok = isinstance(val, allowed)
        if not ok:
            self.error("E0107", f"{owner}: {p.name!r} is declared {p.type}, got {_typename(val)} {_short(val)}",
                       p.span)
            return POISON
        if p.type == "float" and isinstance(val, int):
            return float(val)
        return val

    # ---- statements -----------------------------------------------------------------------------------------
    def exec_body(self, body: tuple, scope: Scope, b: GraphBuilder, is_model: bool = False) -> None:
        for stmt in body:
            try:
                self.exec_stmt(stmt, scope, b, is_model)
            except SpecError as e:
                self.diags.extend(e.diagnostics)
                if isinstance(stmt, A.Assert):
                    raise _Halt from None
                for name in _assigned_names(stmt):
                    scope[name] = POISON

    def exec_stmt(self, s, scope: Scope, b: GraphBuilder, is_model: bool) -> None:
        if isinstance(s, A.Assign):
            val = self.ev(s.value, scope, b)
            self.bind(s.targets, val, scope, b, s.span)
        elif isinstance(s, A.InputStmt):
            if not is_model:
                raise self.fail("E0402", "`input` is only allowed in a model; blocks take inputs as parameters", s.span)
            self.exec_input(s, scope, b)
        elif isinstance(s, A.OutputStmt):
            if not is_model:
                raise self.fail("E0402", "`output` is only allowed in a model; blocks use `return`", s.span)
            val = self.ev(s.value, scope, b) if s.value is not None else self.lookup(s.name, scope, s.span)
            if val is POISON:
                return
            if not isinstance(val, Tensor):
                raise self.fail("E0108", f"output {s.name!r} must be a tensor, got {_typename(val)}", s.span)
            if s.name in b.graph:
                if b.graph[s.name].kind == "output":
                    raise self.fail("E0106", f"output {s.name!r} is declared twice", s.span)
            name = s.name if s.name not in b.graph else b.fresh(s.name)
            b.add(Node(name=name, kind="output", inputs=(val.node,), type=val.type, span=s.span))
            scope[s.name] = val
        elif isinstance(s, A.LayerStmt):
            if s.link.func in self.defs:
                raise self.fail("E0102", f"`layer` names one op instance; {s.link.func!r} is a block", s.link.func_span,
                                help="call the block directly where it is used")
            if registry.get(s.link.func) is None:
                raise self.unknown_callable(s.link.func, s.link.func_span, scope)
            if s.name in scope:
                raise self.fail("E0106", f"{s.name!r} is already defined", s.span)
            inst = LayerInstance(s.name, s.link, s.span)
            for a in s.link.args or ():
                v = self.ev(a.value, scope, b)
                if isinstance(v, Tensor):
                    raise self.fail("E0108", f"layer {s.name!r} is configured with compile-time values; apply it "
                                    f"to tensors where it is used (x -> {s.name})", a.span)
                if a.name is None:
                    inst.spans[len(inst.values)] = a.span
                    inst.values.append(v)
                else:
                    inst.spans[a.name] = a.span
                    inst.kw[a.name] = v
            if any(v is POISON for v in [*inst.values, *inst.kw.values()]):
                scope[s.name] = POISON
                return
            scope[s.name] = inst
        elif isinstance(s, A.If):
            for cond, body in s.branches:
                c = self.ev(cond, scope, b)
                if c is POISON:
                    return
                if not isinstance(c, bool):
                    raise self.fail("E0108", f"`if` needs a compile-time bool, got {_typename(c)}", cond.span)
                if c:
                    self.exec_body(body, scope, b, is_model)
                    return
            if s.orelse is not None:
                self.exec_body(s.orelse, scope, b, is_model)
        elif isinstance(s, A.For):
            it = self.ev(s.iterable, scope, b)
            if it is POISON:
                return
            if not isinstance(it, (list, tuple)):
                raise self.fail("E0108", f"`for` iterates over a list or tuple, got {_typename(it)}", s.iterable.span)
            for item in it:
                if s.unpack:
                    if not isinstance(item, (list, tuple)) or len(item) != len(s.targets):
                        raise self.fail("E0108", f"cannot unpack {_short(item)} into {len(s.targets)} names",
                                        s.iterable.span)
                    for n, v in zip(s.targets, item):
                        scope[n] = v
                else:
                    scope[s.targets[0]] = item
                self.exec_body(s.body, scope, b, is_model)
        elif isinstance(s, A.Repeat):
            self.exec_repeat(s, scope, b)
        elif isinstance(s, A.Return):
            if is_model:
                raise self.fail("E0402", "a model returns values with `output name = ...`, not `return`", s.span)
            raise _Return([self.ev(v, scope, b) for v in s.values])
        elif isinstance(s, A.Assert):
            c = self.ev(s.cond, scope, b)
            if c is POISON:
                return
            if not isinstance(c, bool):
                raise self.fail("E0108", f"`assert` needs a compile-time bool, got {_typename(c)}", s.cond.span)
            if not c:
                read = sorted(_names_read(s.cond) & set(scope))
                vals = [f"{n} = {_short(scope[n])}" for n in read if isinstance(scope[n], (int, float, str, Sym))]
                notes = [Note(scope[n].span, f"{n} ({scope[n].type}) comes from here") for n in read
                         if isinstance(scope[n], Tensor)]
                raise self.fail("E0109", f"assertion failed: {s.message or 'condition is false'}"
                                + (f" ({', '.join(vals)})" if vals else ""), s.cond.span, notes=notes)
        elif isinstance(s, A.Train):
            if not is_model:
                raise self.fail("E0403", "a `train` section belongs in the model", s.span)
            for item in s.items:
                self.train[item.key] = (self.ev(item.value, scope, b), item.span)
        else:  # pragma: no cover - grammar and AST agree
            raise AssertionError(type(s).__name__)

    def exec_input(self, s: A.InputStmt, scope: Scope, b: GraphBuilder) -> None:
        if s.dtype not in DTYPES:
            raise self.fail("E0302", f"unknown dtype {s.dtype!r}", s.dtype_span,
                            help=f"use one of: {', '.join(DTYPES)}")
        dims = []
        for d in s.dims:
            if isinstance(d.value, int):
                if d.value <= 0:
                    raise self.fail("E0107", f"dimension must be positive, got {d.value}", d.span)
                dims.append(d.value)
            else:
                known = scope.get(d.value)
                if isinstance(known, (int, Sym)) and not isinstance(known, bool):
                    dims.append(known)  # a hyper-parameter or an already declared symbol
                else:
                    sym = Sym.var(d.value)
                    scope[d.value] = sym
                    dims.append(sym)
        for c in s.constraints:
            if c.op not in ("<=", "<"):
                raise self.fail("E0108", f"dimension bounds are written `{c.sym} <= n`, got {c.op!r}", c.span)
            bound = self.ev(c.bound, scope, b)
            if bound is POISON:
                continue
            if not isinstance(bound, int) or isinstance(bound, bool) or bound <= 0:
                raise self.fail("E0107", f"the bound of {c.sym} must be a positive int, got {_short(bound)}",
                                c.bound.span)
            if not isinstance(scope.get(c.sym), Sym):
                raise self.fail("E0101", f"{c.sym!r} is not a symbolic dim of this input", c.span)
            self.constraints[c.sym] = (bound - (1 if c.op == "<" else 0), c.span)
        if s.name in scope:
            raise self.fail("E0106", f"{s.name!r} is already defined", s.span)
        t = b.add(Node(name=s.name, kind="input", type=TensorType(s.dtype, tuple(dims)), span=s.span))
        scope[s.name] = t

    def bind(self, targets: tuple[str, ...], val: Any, scope: Scope, b: GraphBuilder, span: Span | None) -> None:
        if len(targets) == 1:
            scope[targets[0]] = val
            return
        if val is POISON:
            for t in targets:
                scope[t] = POISON
            return
        items = self.unpack(val, len(targets), b, span)
        for t, v in zip(targets, items):
            scope[t] = v

    def unpack(self, val: Any, n: int, b: GraphBuilder, span: Span | None) -> list:
        if isinstance(val, Tensor) and isinstance(val.type, TupleType):
            if len(val.type.items) != n:
                raise self.fail("E0104", f"cannot unpack a {len(val.type.items)}-tuple into {n} names", span)
            return [self.getitem(val, i, b, span) for i in range(n)]
        if isinstance(val, (tuple, list)):
            if len(val) != n:
                raise self.fail("E0104", f"cannot unpack {len(val)} values into {n} names", span)
            return list(val)
        raise self.fail("E0104", f"cannot unpack {_typename(val)} into {n} names", span)

    def getitem(self, val: Tensor, i: int, b: GraphBuilder, span: Span | None) -> Tensor:
        t = val.type.items[i]
        return b.add(Node(name=b.fresh(f"{val.node}_{i}"), kind="op", target="getitem", inputs=(val.node,),
                          attrs=registry.get("getitem").attrs(index=i), type=t, span=span))

    # ---- repeat ---------------------------------------------------------------------------------------------
    def exec_repeat(self, s: A.Repeat, scope: Scope, b: GraphBuilder) -> None:
        n = self.ev(s.count, scope, b)
        if n is POISON:
            return
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise self.fail("E0107", f"repeat count must be a non-negative int, got {_short(n)}", s.count.span)
        assigned = _assigned_in(s.body)
        read = _names_read(s.body)
        carried = [v for v in sorted(assigned) if isinstance(scope.get(v), Tensor)]
        captured = [v for v in sorted(read - assigned) if isinstance(scope.get(v), Tensor)]
        if any(scope.get(v) is POISON for v in read):
            return
        shared = [v for v in sorted(read) if isinstance(scope.get(v), LayerInstance)]
        if shared:
            raise self.fail("E0108", f"layer {shared[0]!r} is declared outside this `repeat`: a repeat body cannot "
                            "share one layer across its iterations", s.span,
                            help=f"declare the layer inside the body, or unroll with `for i in range(...)` to share "
                            f"{shared[0]!r}")
        uses_var = s.var is not None and s.var in read
        if uses_var and n > MAX_UNROLL:
            raise self.fail("E0107", f"repeat {n} as {s.var}: a body that reads {s.var} is elaborated once per "
                            f"iteration, at most {MAX_UNROLL:,}", s.count.span)
        consts = tuple(sorted((k, _freeze(scope[k])) for k in read
                              if k in scope and not isinstance(scope[k], (Tensor, LayerInstance))))
        runs: list[list] = []  # [graph name, count]
        for i in range(n):
            types = tuple(scope[v].type for v in carried + captured)
            if any(isinstance(t, ErrorType) for t in types):
                return
            key = ("repeat", s.span, i if uses_var else None, types, consts)
            gname = self.memo.get(key)
            if gname is None:
                gname = self.elaborate_repeat_body(s, scope, carried, captured, i, b.graph.block)
                if gname is None:
                    for v in carried:
                        scope[v] = POISON
                    return
                self.memo[key] = gname
            if runs and runs[-1][0] == gname:
                runs[-1][1] += 1
            else:
                runs.append([gname, 1])
            body = self.graphs[gname]
            # advance carried types for the next iteration's key
            for v, o in zip(carried, body.outputs):
                scope[v] = Tensor(scope[v].node, body[o].type, scope[v].span)
            if not uses_var and tuple(scope[v].type for v in carried + captured) == types:
                runs[-1][1] += n - 1 - i  # a fixpoint: every later iteration is this same body graph
                break
        # re-read the values from before the loop: the types above were only for keys
        for v in carried:
            scope[v] = Tensor(scope[v].node, b.graph[scope[v].node].type, scope[v].span)
        for gname, count in runs:
            body = self.graphs[gname]
            outs = [body[o].type for o in body.outputs]
            ty = outs[0] if len(outs) == 1 else TupleType(tuple(outs))
            ref = b.add(Node(name=b.fresh("layers"), kind="repeat", target=gname,
                             inputs=tuple(scope[v].node for v in carried + captured),
                             attrs=RepeatAttrs(count=count, carried=len(carried)), type=ty, span=s.span))
            if len(carried) == 1:
                scope[carried[0]] = ref
            else:
                for k, v in enumerate(carried):
                    scope[v] = self.getitem(ref, k, b, s.span)

    def elaborate_repeat_body(self, s: A.Repeat, outer: Scope, carried: list[str], captured: list[str], i: int,
                              owner: str) -> str | None:
        base = f"{owner}_layer"
        name = self.unique_graph_name(base)
        # the body's hyper-parameters are the compile-time values it reads from outside (not its index: bodies
        # that differ only in `i` but are built alike must stay one folded run)
        read = _names_read(s.body) - ({s.var} if s.var else set())
        hp = {k: v for k, v in outer.items() if k in read and isinstance(v, (int, float, bool, str))}
        bb = GraphBuilder(name, base, dict(sorted(hp.items())), s.span)
        scope = Scope({k: v for k, v in outer.items() if not isinstance(v, (Tensor, LayerInstance))})
        for v in carried + captured:
            scope[v] = bb.add(Node(name=v, kind="input", type=outer[v].type, span=outer[v].span))
        if s.var is not None:
            scope[s.var] = i
        before = len(self.diags)
        try:
            self.exec_body(s.body, scope, bb)
        except _Halt:
            pass
        if len(self.diags) > before:
            return None
        for v in carried:
            val = scope[v]
            if not isinstance(val, Tensor):
                return None
            bb.add(Node(name=bb.fresh(f"{v}_out"), kind="output", inputs=(val.node,), type=val.type, span=s.span))
        return self.finish_graph(bb.graph)

    def unique_graph_name(self, base: str) -> str:
        n = self.block_counts.get(base, 0)
        self.block_counts[base] = n + 1
        return base if n == 0 else f"{base}_{n}"

    def finish_graph(self, g: Graph) -> str:
        """Register a finished graph, reusing an identical earlier one (so `if i == 0` bodies fold back)."""
        from .printer import graph_signature

        key = (g.block, graph_signature(g))
        other = self.by_signature.get(key)  # a dict, not a scan: check time stays linear in the number of blocks
        if other is not None:
            return other
        self.graphs[g.name] = g
        self.by_signature[key] = g.name
        return g.name

    # ---- expressions ----------------------------------------------------------------------------------------
    def lookup(self, name: str, scope: Scope, span: Span | None) -> Any:
        if name in scope:
            return scope[name]
        if name in self.defs or registry.get(name) is not None:
            raise self.fail("E0108", f"{name!r} is a {'block' if name in self.defs else 'op'}; call it or use it "
                            f"in a chain (x -> {name})", span)
        raise self.unknown_name(name, span, scope)

    def unknown_name(self, name: str, span: Span | None, scope: Scope) -> SpecError:
        close = _closest(name, [k for k in scope if isinstance(k, str)])
        return self.fail("E0101", f"unknown name {name!r}", span, label="not defined",
                         help=f"did you mean {close!r}?" if close else None)

    def unknown_callable(self, name: str, span: Span | None, scope: Scope) -> SpecError:
        cands = list(registry.all_ops()) + list(self.defs) + list(BUILTINS) + \
            [k for k, v in scope.items() if isinstance(v, LayerInstance)]
        close = _closest(name, cands)
        return self.fail("E0102", f"unknown op or block {name!r}", span, label="not an op, block or layer",
                         help=f"did you mean {close!r}?" if close else "`specc ops` lists the built-in ops")

    def ev(self, e, scope: Scope, b: GraphBuilder) -> Any:
        if isinstance(e, A.Lit):
            return e.value
        if isinstance(e, A.Name):
            return self.lookup(e.id, scope, e.span)
        if isinstance(e, A.TupleLit):
            return tuple(self.ev(x, scope, b) for x in e.items)
        if isinstance(e, A.ListLit):
            return [self.ev(x, scope, b) for x in e.items]
        if isinstance(e, A.BinOp):
            return self.ev_binop(e, scope, b)
        if isinstance(e, A.Unary):
            v = self.ev(e.operand, scope, b)
            if v is POISON:
                return POISON
            if e.op == "not":
                if not isinstance(v, bool):
                    raise self.fail("E0108", f"`not` needs a bool, got {_typename(v)}", e.span)
                return not v
            if isinstance(v, Tensor):
                return v if e.op == "+" else self.apply_op("neg", [v], [], {}, e.span, None, b)
            if not isinstance(v, (int, float, Sym)) or isinstance(v, bool):
                raise self.fail("E0108", f"unary {e.op} needs a number, got {_typename(v)}", e.span)
            return v if e.op == "+" else -v
        if isinstance(e, A.Chain):
            # `a -> f -> g -> ...` nests to the left: walk it in a loop so long chains stay off the Python stack
            links = []
            while isinstance(e, A.Chain):
                links.append(e.link)
                e = e.left
            val = self.ev(e, scope, b)
            for link in reversed(links):
                firsts = list(val) if isinstance(val, tuple) and all(isinstance(x, Tensor) for x in val) else [val]
                val = self.call_named(link.func, link.func_span, firsts, link.args or (), link.alias, link.span,
                                      scope, b)
            return val
        if isinstance(e, A.Call):
            if not isinstance(e.func, A.Name):
                raise self.fail("E0108", "only ops, blocks, layers and built-in functions can be called", e.func.span)
            return self.call_named(e.func.id, e.func.span, [], e.args, None, e.span, scope, b)
        if isinstance(e, A.Index):
            return self.ev_index(e, scope, b)
        if isinstance(e, A.Attr):
            obj = self.ev(e.obj, scope, b)
            if obj is POISON:
                return POISON
            if isinstance(obj, Tensor) and isinstance(obj.type, TensorType):
                if e.name == "shape":
                    return tuple(obj.type.shape)
                if e.name == "rank":
                    return obj.type.rank
                if e.name == "T" and obj.type.rank >= 2:
                    return self.apply_op("transpose", [obj], [], {}, e.span, None, b)
            raise self.fail("E0101", f"{_typename(obj)} has no attribute {e.name!r}", e.span,
                            help="tensors have .shape, .rank and .T")
        raise AssertionError(type(e).__name__)  # pragma: no cover

    def ev_binop(self, e: A.BinOp, scope: Scope, b: GraphBuilder) -> Any:
        if e.op in ("and", "or"):
            left = self.ev(e.left, scope, b)
            if left is POISON:
                return POISON
            if not isinstance(left, bool):
                raise self.fail("E0108", f"`{e.op}` needs bools, got {_typename(left)}", e.left.span)
            if (e.op == "and" and not left) or (e.op == "or" and left):
                return left
            right = self.ev(e.right, scope, b)
            if right is not POISON and not isinstance(right, bool):
                raise self.fail("E0108", f"`{e.op}` needs bools, got {_typename(right)}", e.right.span)
            return right
        left, right = self.ev(e.left, scope, b), self.ev(e.right, scope, b)
        if left is POISON or right is POISON:
            return POISON
        if e.op in ("==", "!=") and (left is None or right is None):  # `if mask != none`: is a tensor given?
            return (left is right) == (e.op == "==")
        if isinstance(left, Tensor) or isinstance(right, Tensor):
            return self.tensor_binop(e, left, right, b)
        try:
            return _const_binop(e.op, left, right)
        except ZeroDivisionError:
            raise self.fail("E0108", "division by zero in a compile-time expression", e.span) from None
        except (TypeError, ValueError, OverflowError):
            raise self.fail("E0108", f"cannot apply {e.op!r} to {_typename(left)} and {_typename(right)}",
                            e.span) from None

    def tensor_binop(self, e: A.BinOp, left: Any, right: Any, b: GraphBuilder) -> Any:
        ops = {"+": "add", "-": "sub", "*": "mul", "/": "div", "**": "pow", "@": "matmul"}
        if e.op not in ops:
            raise self.fail("E0108", f"operator {e.op!r} is not defined on tensors", e.span)
        op = ops[e.op]
        if isinstance(left, Tensor) and isinstance(right, Tensor):
            return self.apply_op(op, [left, right], [], {}, e.span, None, b)
        scalar, tensor, reverse = (right, left, False) if isinstance(left, Tensor) else (left, right, True)
        if op == "matmul" or not isinstance(scalar, (int, float)) or isinstance(scalar, bool):
            raise self.fail("E0108", f"cannot apply {e.op!r} to a tensor and {_typename(scalar)}", e.span)
        return self.apply_op(op, [tensor], [], {"scalar": scalar, "reverse": reverse}, e.span, None, b)

    def ev_index(self, e: A.Index, scope: Scope, b: GraphBuilder) -> Any:
        obj = self.ev(e.obj, scope, b)
        if obj is POISON:
            return POISON
        items = []
        for it in e.items:
            if isinstance(it, A.SliceExpr):
                parts = [None if p is None else self.ev(p, scope, b) for p in (it.start, it.stop, it.step)]
                for p, sub in zip(parts, (it.start, it.stop, it.step)):
                    if p is not None and (not isinstance(p, int) or isinstance(p, bool)):
                        raise self.fail("E0108", f"slice bounds must be compile-time ints, got {_typename(p)}",
                                        sub.span)
                items.append(tuple(parts))
            elif isinstance(it, A.Lit) and it.value is Ellipsis:
                items.append("...")
            else:
                v = self.ev(it, scope, b)
                if v is None:
                    items.append("new")
                elif isinstance(v, int) and not isinstance(v, bool):
                    items.append(v)
                else:
                    raise self.fail("E0108", f"index must be a compile-time int, got {_typename(v)}", it.span)
        if isinstance(obj, Tensor):
            if isinstance(obj.type, TupleType):
                if len(items) != 1 or not isinstance(items[0], int):
                    raise self.fail("E0108", "a tuple value takes one integer index", e.span)
                n = len(obj.type.items)
                if not -n <= items[0] < n:
                    raise self.fail("E0305", f"index {items[0]} is out of range for a {n}-tuple", e.span)
                return self.getitem(obj, items[0] % n, b, e.span)
            return self.apply_op("slice", [obj], [tuple(items)], {}, e.span, None, b)
        if isinstance(obj, (tuple, list)):
            if len(items) != 1:
                raise self.fail("E0108", "lists and tuples take one index", e.span)
            it = items[0]
            try:
                return obj[slice(*it)] if isinstance(it, tuple) else obj[it]
            except IndexError:
                raise self.fail("E0305", f"index {it} is out of range for a length-{len(obj)} list", e.span) from None
        raise self.fail("E0108", f"{_typename(obj)} cannot be indexed", e.span)

    # ---- calls ----------------------------------------------------------------------------------------------
    def call_named(self, name: str, name_span: Span | None, firsts: list, args: tuple, alias: str | None,
                   span: Span | None, scope: Scope, b: GraphBuilder) -> Any:
        pos, kw, arg_spans = list(firsts), {}, {}
        first_spans = [getattr(f, "span", None) for f in firsts]
        for a in args:
            v = self.ev(a.value, scope, b)
            if a.name is None:
                if kw:
                    raise self.fail("E0104", "positional argument after a keyword argument", a.span)
                arg_spans[len(pos)] = a.span
                pos.append(v)
            else:
                if a.name in kw:
                    raise self.fail("E0103", f"argument {a.name!r} given twice", a.span)
                arg_spans[a.name] = a.span
                kw[a.name] = v
        for i, s in enumerate(first_spans):
            arg_spans.setdefault(i, s)
        if any(v is POISON for v in [*pos, *kw.values()]):
            return POISON
        inst = scope.get(name)
        if isinstance(inst, LayerInstance):
            return self.apply_instance(inst, pos, kw, span, alias, b)
        if isinstance(inst, BlockValue):  # `ffn = SwiGLU(1408)` ... `x -> ffn`: the block with its arguments
            return self.apply_block_value(inst, pos, kw, span, arg_spans, alias, b)
        if name in BUILTINS and name not in self.defs:
            return BUILTINS[name](self, pos, kw, span, arg_spans, b)
        if name in self.defs:
            return self.apply_block(self.defs[name], pos, kw, span, arg_spans, alias, b)
        if registry.get(name) is not None:
            tensors = [v for v in pos if isinstance(v, Tensor)]
            values = [v for v in pos if not isinstance(v, Tensor)]
            # positions of value args relative to the op's positional attrs
            vspans = {}
            k = 0
            for i, v in enumerate(pos):
                if not isinstance(v, Tensor):
                    vspans[k] = arg_spans.get(i)
                    k += 1
            for kname in kw:
                vspans[kname] = arg_spans.get(kname)
            tspans = [arg_spans.get(i) for i, v in enumerate(pos) if isinstance(v, Tensor)]
            return self.apply_op(name, tensors, values, kw, span, alias, b, vspans, tspans)
        raise self.unknown_callable(name, name_span, scope)

    def make_attrs(self, op: registry.OpDef, values: list, kw: dict, span: Span | None, spans: dict | None,
                   label: str) -> Any:
        spans = spans or {}
        positional = op.positional
        if len(values) > len(positional) and len(positional) == 1:
            if _takes_tuple(op.attrs, positional[0]):
                values = [tuple(values)]  # reshape(x, B, T, -1) / permute(x, 0, 2, 1)
        if len(values) > len(positional):
            raise self.fail("E0104", f"{label} takes at most {len(positional)} value argument(s) "
                            f"({', '.join(positional) or 'none'}), got {len(values)}",
                            spans.get(len(positional), span))
        data: dict[str, Any] = {}
        where: dict[str, Span | None] = {}
        for i, v in enumerate(values):
            data[positional[i]] = v
            where[positional[i]] = spans.get(i, span)
        for k, v in kw.items():
            if k in data:
                raise self.fail("E0103", f"{label}: argument {k!r} given twice", spans.get(k, span))
            data[k] = v
            where[k] = spans.get(k, span)
        for k, v in list(data.items()):
            if isinstance(v, LayerInstance):
                data[k] = v.name
            elif isinstance(v, Tensor):
                raise self.fail("E0108", f"{label}: argument {k!r} must be a compile-time value, got a tensor",
                                where[k])
            else:
                data[k] = _to_attr(v)
        try:
            return op.attrs(**data)
        except pydantic.ValidationError as err:
            diags = []
            for item in err.errors():
                key = str(item["loc"][0]) if item["loc"] else None
                sp = where.get(key, span) if key else span
                if item["type"] == "extra_forbidden":
                    fields = ", ".join(op.attrs.model_fields)
                    close = _closest(key or "", list(op.attrs.model_fields))
                    diags.append(Diagnostic("E0103", f"{label} has no argument {key!r}", sp, "unknown argument",
                                            help=(f"did you mean {close!r}? " if close else "") + f"it takes: {fields}"))
                elif item["type"] == "missing":
                    diags.append(Diagnostic("E0105", f"{label}: missing argument {key!r}", span,
                                            help=f"positional order: {', '.join(positional)}"))
                else:
                    got = data.get(key)
                    diags.append(Diagnostic("E0107", f"{label}: bad value {_short(got)} for {key!r}: {item['msg']}",
                                            sp))
            raise SpecError(*diags) from None

    def apply_op(self, opname: str, tensors: list, values: list, kw: dict, span: Span | None, alias: str | None,
                 b: GraphBuilder, vspans: dict | None = None, tspans: list | None = None,
                 layer: LayerInstance | None = None) -> Any:
        op = registry.get(opname)
        label = f"{opname} '{alias}'" if alias else opname
        lo, hi = op.arity
        if not lo <= len(tensors) <= (hi if hi is not None else len(tensors)):
            want = f"{lo}" if lo == hi else f"{lo} to {hi}" if hi is not None else f"at least {lo}"
            raise self.fail("E0104", f"{label} takes {want} tensor input(s), got {len(tensors)}", span)
        blocks = self.block_args(op, label, tensors, values, kw, vspans or {}, span, b)
        if blocks is None:
            return POISON
        values, kw = blocks
        attrs = self.make_attrs(op, values, kw, span, vspans, label)
        if any(isinstance(t.type, ErrorType) for t in tensors):
            return POISON
        name = alias if alias and b.free(alias) else b.fresh(alias or opname)
        label = f"{opname} '{name}'" if alias else opname
        ins = [t.type for t in tensors]
        try:
            out = op.infer(ins, attrs)
        except ShapeError as err:
            notes = []
            if err.operand is not None and err.operand < len(tensors):
                src = tensors[err.operand]
                which = f"input {err.operand}" if len(tensors) > 1 else "input"
                notes.append(Note(src.span, f"{which} ({src.type}) comes from here"))
            else:  # about all inputs (e.g. two shapes that do not broadcast): show where each comes from
                for i, t in enumerate(tensors):
                    which = f"input {i}" if len(tensors) > 1 else "input"
                    notes.append(Note(t.span, f"{which} ({t.type}) comes from here"))
            notes.extend(err.notes)
            # "conv2d: expects a rank-4 input", not "conv2d: conv2d expects ..."
            raise self.fail(err.code, f"{label}: {str(err).removeprefix(opname + ' ')}", span, notes=notes) from None
        node = Node(name=name, kind="op", target=opname, inputs=tuple(t.node for t in tensors), attrs=attrs,
                    type=out, span=span, layer=layer.name if layer else None)
        self.check_tie(op, node, ins, b)
        return b.add(node)

    def block_args(self, op: registry.OpDef, label: str, tensors: list, values: list, kw: dict, spans: dict,
                   span: Span | None, b: GraphBuilder) -> tuple[list, dict] | None:
        """Specialise the block values among an op's arguments (`moe(SwiGLU(1408), ...)`) for the inputs the op
        feeds them; the op's attribute gets the graph's name. None when a block failed (its errors are reported)."""
        if not any(isinstance(v, BlockValue) for v in [*values, *kw.values()]):
            return values, kw
        if any(isinstance(t.type, ErrorType) for t in tensors):
            return None

        def resolve(v: Any, where: Span | None) -> Any:
            if not isinstance(v, BlockValue):
                return v
            if op.block_inputs is None:
                raise self.fail("E0108", f"{label} takes no block arguments, got {_typename(v)}", where)
            try:
                types = op.block_inputs([t.type for t in tensors])
            except ShapeError as err:
                raise self.fail(err.code, f"{label}: {err}", span) from None
            return self.instantiate(v, types)

        values = [resolve(v, spans.get(i, span)) for i, v in enumerate(values)]
        kw = {k: resolve(v, spans.get(k, span)) for k, v in kw.items()}
        return None if any(v is POISON for v in [*values, *kw.values()]) else (values, kw)

    def apply_block_value(self, bv: BlockValue, pos: list, kw: dict, span: Span | None, spans: dict,
                          alias: str | None, b: GraphBuilder) -> Any:
        twice = sorted(set(kw) & {k for k, _ in bv.kw})
        if twice:
            raise self.fail("E0103", f"block {bv}: argument {twice[0]!r} is already given", spans.get(twice[0], span),
                            notes=[Note(bv.span, "given here")])
        tensors = [v for v in pos if isinstance(v, Tensor)]
        values = [v for v in pos if not isinstance(v, Tensor)]
        return self.apply_block(self.defs[bv.name], [*tensors, *bv.values, *values], {**dict(bv.kw), **kw}, span,
                                {**dict(bv.spans), **spans}, alias, b)

    def instantiate(self, bv: BlockValue, types: list) -> str | _Poison:
        """The graph of block value `bv` specialised for inputs of `types` (memoised like any block call)."""
        scratch = GraphBuilder("_", "_", {}, None)  # only the call node's target is kept
        ins = [scratch.add(Node(name=f"in{i}", kind="input", type=t, span=bv.span)) for i, t in enumerate(types)]
        call = self.apply_block(self.defs[bv.name], [*ins, *bv.values], dict(bv.kw), bv.span, dict(bv.spans), None,
                                scratch)
        return call if call is POISON else scratch.graph[call.node].target

    def check_tie(self, op: registry.OpDef, node: Node, ins: list, b: GraphBuilder) -> None:
        tie = getattr(node.attrs, "tie", None)
        if tie is None:
            return
        other = b.graph[tie] if tie in b.graph else None
        if other is None or other.kind != "op":
            raise self.fail("E0101", f"{node.target} '{node.name}': tie={tie!r} must name a layer applied earlier in "
                            "this block", node.span)
        mine = op.param_shapes(ins, node.attrs).get("weight")
        odef = registry.get(other.target)
        theirs = odef.param_shapes([b.graph[i].type for i in other.inputs], other.attrs).get("weight")
        if mine != theirs:
            raise self.fail("E0301", f"{node.target} '{node.name}': cannot tie weight {_shape(mine)} to "
                            f"{other.target} '{other.name}' weight {_shape(theirs)}", node.span,
                            notes=[Note(other.span, f"{other.name} defined here")])

    def apply_instance(self, inst: LayerInstance, pos: list, kw: dict, span: Span | None, alias: str | None,
                       b: GraphBuilder) -> Any:
        if kw or any(not isinstance(v, Tensor) for v in pos):
            raise self.fail("E0104", f"layer {inst.name!r} is already configured; apply it to tensors only", span,
                            notes=[Note(inst.span, "configured here")])
        link = inst.link
        name = inst.name if inst.first is None else b.fresh(inst.name)
        if inst.first is not None and alias:
            name = b.fresh(alias)
        result = self.apply_op(link.func, pos, inst.values, inst.kw, span, name, b, inst.spans, layer=inst)
        if result is POISON:
            return result
        node = b.graph[result.node]
        op = registry.get(link.func)
        params = op.param_shapes([b.graph[i].type for i in node.inputs], node.attrs)
        if inst.first is None:
            inst.first, inst.params = node, params
        elif params != inst.params:
            raise self.fail("E0301", f"{link.func} '{inst.name}': this use needs parameters "
                            f"{_params_str(params)}, the first use made {_params_str(inst.params)}", span,
                            notes=[Note(inst.first.span, "first used here"), Note(inst.span, "declared here")])
        return result

    def apply_block(self, d: A.Def, pos: list, kw: dict, span: Span | None, spans: dict, alias: str | None,
                    b: GraphBuilder) -> Any:
        tparams = [p for p in d.params if p.is_tensor]
        oparams = [p for p in d.params if _optional_tensor(p)]  # `mask: tensor = none`
        vparams = [p for p in d.params if not p.is_tensor and not _optional_tensor(p)]
        tensors = [v for v in pos if isinstance(v, Tensor)]
        values = [v for v in pos if not isinstance(v, Tensor)]
        if tparams and not tensors and not any(isinstance(v, Tensor) for v in kw.values()):
            return BlockValue(d.name, tuple(values), tuple(kw.items()), span, tuple(spans.items()))
        if not len(tparams) <= len(tensors) <= len(tparams) + len(oparams):
            raise self.fail("E0104", f"block {d.name} takes {len(tparams)} tensor input(s) "
                            f"({', '.join(p.name for p in tparams)}), got {len(tensors)}", span,
                            notes=[Note(d.name_span, f"{d.name} defined here")])
        given = {p.name: t for p, t in zip(tparams + oparams, tensors)}
        kw = dict(kw)
        for p in oparams:
            v = kw.pop(p.name, None)
            if v is None:
                continue
            if not isinstance(v, Tensor) or p.name in given:
                msg = "given twice" if p.name in given else f"must be a tensor or none, got {_typename(v)}"
                raise self.fail("E0103", f"block {d.name}: tensor input {p.name!r} {msg}", spans.get(p.name, span))
            given[p.name] = v
        present = [p for p in d.params if p.name in given]  # tensor inputs, in declaration order
        tensors = [given[p.name] for p in present]
        if len(values) > len(vparams):
            raise self.fail("E0104", f"block {d.name} takes {len(vparams)} hyper-parameter(s), got {len(values)}",
                            span, notes=[Note(d.name_span, f"{d.name} defined here")])
        bound: dict[str, Any] = {}
        for p, v in zip(vparams, values):
            bound[p.name] = v
        for k, v in kw.items():
            if k not in {p.name for p in vparams}:
                close = _closest(k, [p.name for p in vparams])
                raise self.fail("E0103", f"block {d.name} has no parameter {k!r}", spans.get(k, span),
                                help=f"did you mean {close!r}?" if close else None,
                                notes=[Note(d.name_span, f"{d.name} defined here")])
            if k in bound:
                raise self.fail("E0103", f"block {d.name}: parameter {k!r} given twice", spans.get(k, span))
            bound[k] = v
        if any(isinstance(t.type, ErrorType) for t in tensors):
            return POISON
        scope = Scope({p.name: None for p in oparams})
        hp: dict[str, Any] = {}
        gb_dummy = GraphBuilder("_", "_", {}, None)
        for p in vparams:
            if p.name in bound:
                val = bound[p.name]
            elif p.default is not None:
                val = self.ev(p.default, scope, gb_dummy)
            else:
                raise self.fail("E0105", f"block {d.name}: missing argument {p.name!r}", span,
                                notes=[Note(p.span, "declared here")])
            before = len(self.diags)
            val = self.check_param_type(p, val, d.name)
            if len(self.diags) > before:
                bad = self.diags.pop()
                raise SpecError(Diagnostic(bad.code, bad.message, spans.get(p.name, span), notes=[
                    Note(p.span, "declared here")]))
            scope[p.name] = val
            hp[p.name] = val
        key = ("block", d.name, tuple((k, _freeze(v)) for k, v in hp.items()),
               tuple((p.name, t.type) for p, t in zip(present, tensors)))
        gname = self.memo.get(key)
        if gname is None:
            before = len(self.diags)
            gname = self.elaborate_block(d, scope, hp, present, tensors)
            self.memo[key] = gname
            for dg in self.diags[before:]:
                _seen_from_caller(dg, d, present, tensors, span)
        if gname is None:
            return POISON
        g = self.graphs[gname]
        outs = g.output_types()
        ty = outs[0] if len(outs) == 1 else TupleType(tuple(outs))
        name = alias if alias and b.free(alias) else b.fresh(alias or _snake(d.name))
        return b.add(Node(name=name, kind="call", target=gname, inputs=tuple(t.node for t in tensors),
                          attrs=CallAttrs(args=tuple((k, _to_attr(v)) for k, v in hp.items())), type=ty, span=span))

    def elaborate_block(self, d: A.Def, scope: Scope, hp: dict, tparams: list, tensors: list) -> str | None:
        if self.block_depth >= MAX_BLOCK_DEPTH:
            self.error("E0111", f"block {d.name}: blocks nest more than {MAX_BLOCK_DEPTH} calls deep", d.name_span,
                       help="a block that calls itself needs an `if` that stops the recursion")
            return None
        name = self.unique_graph_name(d.name)
        bb = GraphBuilder(name, d.name, hp, d.span)
        for p, t in zip(tparams, tensors):
            scope[p.name] = bb.add(Node(name=p.name, kind="input", type=t.type, span=p.span))
        before = len(self.diags)
        returned = None
        self.block_depth += 1
        try:
            self.exec_body(d.body, scope, bb)
        except _Return as r:
            returned = r.values
        except SpecError as e:
            self.diags.extend(e.diagnostics)
        except _Halt:
            pass
        self.block_depth -= 1  # every exception of the body is caught above
        if len(self.diags) > before:
            return None
        if returned is None:
            self.error("E0402", f"block {d.name} ends without `return`", d.name_span)
            return None
        for i, v in enumerate(returned):
            if v is POISON:
                return None
            if not isinstance(v, Tensor):
                self.error("E0108", f"block {d.name} must return tensors, value {i} is {_typename(v)}", d.name_span)
                return None
            bb.add(Node(name=bb.fresh("out" if len(returned) == 1 else f"out{i}"), kind="output", inputs=(v.node,),
                        type=v.type, span=v.span))
        return self.finish_graph(bb.graph)


# ---- built-in compile-time functions ---------------------------------------------------------------------------

def _tensor_arg(el: Elaborator, pos: list, i: int, fname: str, span: Span | None) -> TensorType:
    if len(pos) <= i or not isinstance(pos[i], Tensor) or not isinstance(pos[i].type, TensorType):
        raise el.fail("E0108", f"{fname}() needs a tensor argument", span)
    return pos[i].type


def _b_channels(el, pos, kw, span, spans, b):
    t = _tensor_arg(el, pos, 0, "channels", span)
    if t.rank < 2:
        raise el.fail("E0303", f"channels() needs a rank >= 2 tensor, got {t}", span)
    return t.shape[1]


def _b_features(el, pos, kw, span, spans, b):
    return _tensor_arg(el, pos, 0, "features", span).shape[-1]


def _b_dim(el, pos, kw, span, spans, b):
    t = _tensor_arg(el, pos, 0, "dim", span)
    if len(pos) != 2 or not isinstance(pos[1], int):
        raise el.fail("E0104", "dim(x, i) takes a tensor and an int", span)
    if not -t.rank <= pos[1] < t.rank:
        raise el.fail("E0305", f"dim {pos[1]} is out of range for {t}", span)
    return t.shape[pos[1]]


def _b_len(el, pos, kw, span, spans, b):
    if len(pos) != 1 or not isinstance(pos[0], (list, tuple, str)):
        raise el.fail("E0108", "len() takes one list, tuple or string", span)
    return len(pos[0])


def _b_range(el, pos, kw, span, spans, b):
    if not 1 <= len(pos) <= 3 or not all(isinstance(p, int) and not isinstance(p, bool) for p in pos):
        raise el.fail("E0108", "range() takes one to three ints", span)
    if len(range(*pos)) > 100_000:
        raise el.fail("E0107", "range() longer than 100000", span)
    return list(range(*pos))


def _b_minmax(fn):
    def f(el, pos, kw, span, spans, b):
        vals = pos[0] if len(pos) == 1 and isinstance(pos[0], (list, tuple)) else pos
        if not vals or not all(isinstance(v, (int, float)) for v in vals):
            raise el.fail("E0108", f"{fn.__name__}() takes numbers", span)
        return fn(vals)
    return f


def _b_cast(fn):
    def f(el, pos, kw, span, spans, b):
        if len(pos) != 1 or not isinstance(pos[0], (int, float, bool)):
            raise el.fail("E0108", f"{fn.__name__}() takes one number", span)
        return fn(pos[0])
    return f


BUILTINS = {
    "channels": _b_channels, "features": _b_features, "dim": _b_dim, "len": _b_len, "range": _b_range,
    "min": _b_minmax(min), "max": _b_minmax(max), "int": _b_cast(int), "float": _b_cast(float),
}


# ---- helpers -------------------------------------------------------------------------------------------------

def _const_binop(op: str, a: Any, b: Any) -> Any:
    if op in ("==", "!="):
        eq = a == b
        return eq if op == "==" else not eq
    if isinstance(a, bool) or isinstance(b, bool):
        raise TypeError
    if op in ("<", "<=", ">", ">="):
        if isinstance(a, Sym) or isinstance(b, Sym):
            raise TypeError
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
    if isinstance(a, (list, tuple)) and op in ("+", "*"):
        return a + b if op == "+" else a * b
    if not isinstance(a, (int, float, Sym)) or not isinstance(b, (int, float, Sym)):
        raise TypeError
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        if isinstance(a, Sym) or isinstance(b, Sym):
            raise TypeError
        return a / b
    if op == "//":
        if isinstance(b, int) and b == 0:
            raise ZeroDivisionError
        return a // b
    if op == "%":
        if isinstance(a, Sym) or isinstance(b, Sym):
            raise TypeError
        return a % b
    if op == "**":
        if isinstance(a, Sym) or isinstance(b, Sym) or (isinstance(b, int) and b > 64) or abs(a) > 1e6:
            raise TypeError
        return a ** b
    raise TypeError


def _to_attr(v: Any) -> Any:
    if isinstance(v, BlockValue):
        return str(v)
    if isinstance(v, Sym):
        return str(v)
    if isinstance(v, list):
        return tuple(_to_attr(x) for x in v)
    if isinstance(v, tuple):
        return tuple(_to_attr(x) for x in v)
    return v


def _freeze(v: Any) -> Any:
    if isinstance(v, BlockValue):
        return ("block", v.name, _freeze(v.values), tuple((k, _freeze(x)) for k, x in v.kw))
    if isinstance(v, list):
        return ("list", tuple(_freeze(x) for x in v))
    if isinstance(v, tuple):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, Sym):
        return ("sym", str(v))
    return (type(v).__name__, v)


def _short(v: Any) -> str:
    r = repr(v) if not isinstance(v, Sym) else str(v)
    return r if len(r) <= 40 else r[:37] + "..."


def _shape(s) -> str:
    return "[" + ", ".join(str(d) for d in s) + "]" if s is not None else "none"


def _params_str(p: dict) -> str:
    return ", ".join(f"{k}{_shape(v)}" for k, v in p.items()) or "none"


def _snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and (not name[i - 1].isupper() or (i + 1 < len(name) and name[i + 1].islower())):
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def _closest(name: str, cands: list[str]) -> str | None:
    import difflib

    m = difflib.get_close_matches(name, sorted(set(cands)), n=1, cutoff=0.75)
    return m[0] if m else None


def _optional_tensor(p: A.Param) -> bool:
    return p.type == "tensor" and isinstance(p.default, A.Lit) and p.default.value is None


def _seen_from_caller(dg: Diagnostic, d: A.Def, present: list, tensors: list, call: Span | None) -> None:
    """An error inside a block also shows the call: notes about the block's tensor inputs point at where the
    caller's tensors come from, and a last note points at the call itself."""
    origin = {p.span: t for p, t in zip(present, tensors) if p.span is not None}
    dg.notes = [Note(origin[n.span].span, n.message) if n.span in origin else n for n in dg.notes]
    note = Note(call, f"in block {d.name}, called here")
    if note not in dg.notes:  # a block calling itself: one note per call site, not one per level
        dg.notes.append(note)


def _assigned_names(stmt) -> list[str]:
    if isinstance(stmt, A.Assign):
        return list(stmt.targets)
    if isinstance(stmt, A.OutputStmt):
        return [stmt.name]
    return []


def _walk_stmts(body):
    for s in body:
        yield s
        if isinstance(s, A.If):
            for _, bd in s.branches:
                yield from _walk_stmts(bd)
            if s.orelse:
                yield from _walk_stmts(s.orelse)
        elif isinstance(s, (A.For, A.Repeat)):
            yield from _walk_stmts(s.body)


def _assigned_in(body) -> set[str]:
    out: set[str] = set()
    for s in _walk_stmts(body):
        if isinstance(s, A.Assign):
            out |= set(s.targets)
        elif isinstance(s, A.For):
            out |= set(s.targets)
    return out


def _names_read(node) -> set[str]:
    out: set[str] = set()
    todo = [node]  # an explicit stack, not recursion: a 1000-step `->` chain is 1000 nested Chain nodes
    while todo:
        x = todo.pop()
        if isinstance(x, A.Name):
            out.add(x.id)
        elif isinstance(x, A.Link):
            out.add(x.func)
            todo.extend(x.args or ())
        elif isinstance(x, (tuple, list)):
            todo.extend(x)
        elif isinstance(x, A.Node):
            todo.extend(getattr(x, f) for f in x.__dataclass_fields__ if f != "span")
    return out


def _takes_tuple(attrs: type, field: str) -> bool:
    """Whether an attribute accepts a tuple, so `reshape(x, B, T, -1)` may pass its items one by one."""
    ann = attrs.model_fields[field].annotation
    return typing.get_origin(ann) is tuple or any(typing.get_origin(a) is tuple for a in typing.get_args(ann))
