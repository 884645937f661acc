"""The elaborator: its state, error collection and the model entry point; the rest of the recursive interpreter
lives in the mixins it is built from."""
from __future__ import annotations

from typing import Any

from .. import ast as A
from ..attrs import short as _short
from ..diagnostics import Diagnostic, Note, SpecError
from ..hyper import expr_name, named
from ..ir import Graph, Module, RolledTrace
from ..limits import Limits, int_digits, over_budget
from ..ops.context import shape_context
from ..source import SourceMap, Span
from ..symbolic import Sym
from .blocks import BlocksMixin
from .calls import CallsMixin
from .expressions import ExpressionsMixin
from .inits import InitsMixin
from .loader import LoaderMixin
from .minimums import size_minimums
from .models import ModelCallMixin
from .repeat import RepeatMixin
from .statements import PinsMixin, StatementsMixin
from .syntax import _walk_stmts
from .values import (
    _PY_TYPES,
    POISON,
    GraphBuilder,
    Scope,
    _Halt,
    _Return,
    _typename,
)


class Elaborator(LoaderMixin, StatementsMixin, PinsMixin, RepeatMixin, ExpressionsMixin, CallsMixin, BlocksMixin,
                 ModelCallMixin, InitsMixin):
    def __init__(self, sources: SourceMap | None = None, limits: Limits | None = None) -> None:
        self.last_instance_env: dict | None = None  # the sizes of the last block value an op specialised
        self.sources = sources or SourceMap()
        self.limits = limits or Limits()
        self.steps = 0  # evaluation steps spent (see Limits.steps)
        self.elaborations = 0  # graphs elaborated (see Limits.specializations)
        self.diags: list[Diagnostic] = []
        self.defs: dict[str, A.Def] = {}
        self.graphs: dict[str, Graph] = {}
        self.memo: dict[Any, str] = {}
        self.block_depth = 0  # blocks being elaborated inside each other (recursion guard)
        self.by_signature: dict[tuple[str, str], str] = {}  # (block, structure) -> graph name
        self.reads_index: set[str] = set()  # repeat bodies that read their index other than in an `if` on it
        self.index_pins: dict[str, list] = {}  # repeat body -> the pins of its `if`s on its index
        self.block_counts: dict[str, int] = {}
        self.constraints: dict[str, tuple[Any, Span | None]] = {}
        self.needs: list = []  # (dim, least, span, op) the shape rules asked for (ops/context.py `need`)
        self.train: dict[str, tuple[Any, Span | None]] = {}
        self.init_scopes: list[tuple] = []  # the `init { }` rules of the blocks being elaborated, outermost first
        self.init_rules: dict[Span | None, list] = {}  # each rule's span -> [rule, whether it initialised anything]
        self.top_init_sections: set[int] = set()  # the sections at the top of a body (elsewhere they are errors)
        # the PyTorch emitter's second elaboration: a `for` over a computed range keeps its index's name in the sizes
        # it reaches (`ch * mult[level]`), so one iteration's code can stand for all (backends/torch/rolled.py)
        self.rolling = False
        self.trace: RolledTrace | None = None  # with rolling: the model body's statement runs
        self._loading: list[str] = []
        self._loaded: set[str] = set()

    # ---- errors ---------------------------------------------------------------------------------------------
    def error(self, code: str, message: str, span: Span | None, *, label: str = "", notes=None, help=None) -> None:
        self.diags.append(Diagnostic(code, message, span, label, notes or [], help))

    def fail(self, code: str, message: str, span: Span | None, **kw) -> SpecError:
        return SpecError.at(code, message, span, **kw)

    # ---- budgets --------------------------------------------------------------------------------------------
    def tick(self, span: Span | None, steps: int = 1) -> None:
        self.steps += steps
        if self.steps > self.limits.steps:
            raise over_budget(self.limits, "steps", span, "a loop, recursion or repeat that does too much work")

    def check_size(self, v: Any, span: Span | None) -> Any:
        """A compile-time value within the integer, collection and symbolic-dim budgets, or a located error."""
        if isinstance(v, int):
            if not -10**18 < v < 10**18 and int_digits(v) > self.limits.int_digits:
                raise over_budget(self.limits, "int_digits", span, f"an integer of {int_digits(v):,} digits")
        elif isinstance(v, (list, tuple, str)):
            if len(v) > self.limits.collection:
                raise over_budget(self.limits, "collection", span, f"{len(v):,} elements")
        elif isinstance(v, Sym):
            if len(v.terms) > self.limits.dim_terms:
                raise over_budget(self.limits, "dim_terms", span, f"a dim of {len(v.terms):,} terms")
            for c in v.terms.values():
                self.check_size(c, span)
            if any(len(m) > 64 for m in v.terms):
                raise over_budget(self.limits, "dim_terms", span, "a product of more than 64 symbols")
        return v

    # ---- model ----------------------------------------------------------------------------------------------
    def elaborate_model(self, prog: A.Program, model: str | None, overrides: dict[str, Any]) -> Module | None:
        from ..parse import gc_paused

        with gc_paused():  # see gc_paused: keeps check time linear in the size of the spec
            return self._elaborate_model(prog, model, overrides)

    def _choose_model(self, prog: A.Program, model: str | None):
        models = [d for d in prog.defs if d.kind == "model"]
        if not models:
            self.error("E0401", f"{prog.file} defines no model", None,
                       help="add `model Name(...) { input ...; output ... }`")
            return None
        if model is None:
            return models[0]
        chosen = next((m for m in models if m.name == model), None)
        if chosen is None:
            names = ", ".join(m.name for m in models)
            raise SpecError.at("E0401", f"no model named {model!r} in {prog.file} (it defines: {names})")
        return chosen

    def _elaborate_model(self, prog: A.Program, model: str | None, overrides: dict[str, Any]) -> Module | None:
        chosen = self._choose_model(prog, model)
        if chosen is None:
            return None
        chosen = self.unique_params(chosen)
        names = {p.name for p in chosen.params}
        for k in overrides:
            if k not in names:
                avail = ", ".join(sorted(names)) or "none"
                self.error("E0110", f"-D {k}: model {chosen.name} has no hyper-parameter {k!r} (it has: {avail})",
                           chosen.name_span)
        b = GraphBuilder(chosen.name, chosen.name, {}, chosen.span)
        b.reserved = {s.name for s in _walk_stmts(chosen.body) if isinstance(s, A.OutputStmt)}
        if self.rolling:
            b.trace = []
            self.trace = RolledTrace(body=chosen.body, events=b.trace)
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
            scope[p.name] = named(val, p.name)  # sizes computed from it remember it (specc/hyper.py)
            hparams[p.name] = val
        b.graph.hparams = dict(hparams)
        with shape_context(graphs=self.graphs, bounds=self.constraints):
            self.init_scopes.append(self.init_section(chosen.body, scope, b))
            try:
                self.exec_body(chosen.body, scope, b, is_model=True)
            except _Return as r:
                self.error("E0402", "a model returns values with `output name = ...`, not `return`", None)
                del r
            except _Halt:
                pass
            self.init_scopes.pop()
        if not self.diags:
            self.check_init_rules_used()
        g = b.graph
        for k, v in hparams.items():  # a string picks structure at compile time (`act`): the emitted code is that pick
            if isinstance(v, str):
                g.pins.append((f"{expr_name(k)} == {v!r}", f"`{k}` is {v!r}"))
        # an `input`/`output` that is written but failed (or was skipped by a failed assert) is already reported
        written = {type(s) for s in _walk_stmts(chosen.body)} if self.diags else set()
        if not g.inputs and A.InputStmt not in written:
            self.error("E0402", f"model {chosen.name} declares no `input`", chosen.name_span)
        if not g.outputs and A.OutputStmt not in written:
            self.error("E0402", f"model {chosen.name} declares no `output`", chosen.name_span)
        self.graphs[g.name] = g
        self.check_expanded_size(g)
        minimums = self.check_minimums()
        return Module(name=chosen.name, graphs=dict(self.graphs), main=g.name, hparams=hparams,
                      constraints=dict(self.constraints), train=dict(self.train), path=prog.file,
                      minimums=minimums)

    def check_minimums(self) -> dict:
        """The smallest size of each symbolic dim that windows need (elaborate/minimums.py); an error where the
        spec's own bound (`where T <= 9`) is below it."""
        minimums = size_minimums(self.graphs, self.needs) if not self.diags else {}
        for sym, (least, span, op) in minimums.items():
            bound, bspan = self.constraints.get(sym, (None, None))
            if isinstance(bound, int) and bound < least:
                self.error("E0305", f"{op} needs {sym} >= {least} (smaller sizes leave it no output or out of range), but "
                           f"{sym} <= {bound}", span, label=f"needs {sym} >= {least}",
                           notes=[Note(bspan, f"{sym} <= {bound} is declared here")] if bspan else None)
        return minimums

    def check_expanded_size(self, main: Graph) -> None:
        """Blocks are specialised once and memoised, so a block calling another twice, 40 levels deep, checks in
        linear time, but describes 2^40 nodes that every walk of the module (summary, pictures, lowering) expands.
        Refuse it here, pointing at the call in the model that expands the most."""
        sizes: dict[str, int] = {}

        def size(name: str) -> int:
            if name not in sizes:
                sizes[name] = 0  # a graph that reaches itself (names clashing, already reported) counts once
                sizes[name] = sum(1 + (size(n.target) if n.kind in ("call", "repeat") else 0)
                                  for n in self.graphs[name].nodes())
            return sizes[name]

        limit = self.limits.nodes
        if size(main.name) > limit:
            worst = max((n for n in main.nodes() if n.kind in ("call", "repeat")), key=lambda n: size(n.target),
                        default=None)
            raise over_budget(self.limits, "nodes", worst.span if worst is not None else None,
                              f"{size(main.name):,} once every block call is expanded")

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
