"""Statements: assignments, input/output, layer declarations, if/for, return, assert, train."""
from __future__ import annotations

import os
from itertools import islice
from typing import Any

from .. import ast as A
from ..attrs import short as _short
from ..diagnostics import Note, SpecError
from ..hyper import HFloat, HInt, HList, HTuple, driven, expr_name, names, plain
from ..ir import LIST_TAIL, ListValue, Node, TraceEvent
from ..limits import Abort, internal_error, short_int
from ..ops import registry
from ..source import Span
from ..symbolic import Sym
from ..types import DTYPES, TensorType, TupleType
from .sizes import own_sizes
from .syntax import _assigned_in, _assigned_names, _names_read
from .values import (
    POISON,
    GraphBuilder,
    LayerInstance,
    Scope,
    Tensor,
    TensorList,
    _Halt,
    _is_data,
    _literal,
    _Return,
    _typename,
)


class StatementsMixin:
    """Statements: assignments, input/output, layer declarations, if/for, return, assert, train."""

    def exec_body(self, body: tuple, scope: Scope, b: GraphBuilder, is_model: bool = False) -> None:
        for stmt in body:
            try:
                if b.trace is not None and isinstance(stmt, (A.Assign, A.OutputStmt)):
                    self.traced(stmt, scope, b, is_model)
                    continue
                self.exec_stmt(stmt, scope, b, is_model)
            except SpecError as e:
                self.diags.extend(e.diagnostics)
                if isinstance(stmt, A.Assert):
                    raise _Halt from None
                for name in _assigned_names(stmt):
                    scope[name] = POISON
            except (_Return, _Halt, Abort):
                raise
            except Exception as e:  # noqa: BLE001 - last resort: a bug in specc, located at this statement
                if os.environ.get("SPECC_DEBUG"):
                    raise
                raise internal_error(e, stmt.span, "this statement") from e

    def traced(self, s, scope: Scope, b: GraphBuilder, is_model: bool) -> None:
        """exec_stmt, noting in the rolled trace (ir.RolledTrace) the nodes the statement made and what it bound."""
        start = len(b.graph)
        targets = s.targets if isinstance(s, A.Assign) else (s.name,)
        before = {t: scope[t].type for t in targets if isinstance(scope.get(t), Tensor)}
        self.trace.reads = {}
        self.exec_stmt(s, scope, b, is_model)
        made = list(islice(reversed(b.graph._order), len(b.graph) - start))[::-1]  # the newest, without a full copy
        b.trace.append(TraceEvent(s.span, made, {t: _traced_value(scope.get(t)) for t in targets}, before,
                                  self.trace.reads))

    def exec_stmt(self, s, scope: Scope, b: GraphBuilder, is_model: bool) -> None:
        """Run one statement. Long because it is the dispatch over the language's statement kinds, one short branch
        each, in the order of the language reference; the longer ones (input, repeat) are methods of their own."""
        self.tick(s.span)
        if isinstance(s, A.Assign):
            stored = _stored_tensor(s)
            if stored is not None:  # `gamma = parameter(d, 1, 1)`: the layer is named after the variable
                val = self.call_named(stored.func.id, stored.func.span, [], stored.args, s.targets[0], stored.span,
                                      scope, b)
            else:
                val = self.ev(s.value, scope, b)
                if b.rolled_depth and len(s.targets) == 1 and isinstance(val, int) and not isinstance(val, bool):
                    val = HInt(int(val), expr_name(s.targets[0]))  # `level = len(mult) - 1 - up`: the emitted code's too
            self.bind(s.targets, val, scope, b, s.span)
            if len(s.targets) == 1 and _is_data(val):  # `d = features(x)`: the block's own compile-time name
                b.graph.lets[s.targets[0]] = A.unparse(s.value)
        elif isinstance(s, A.InputStmt) and b.as_model:
            self.bind_model_input(s, scope, b)
        elif isinstance(s, A.InputStmt):
            if not is_model:
                raise self.fail("E0402", "`input` is only allowed in a model; blocks take inputs as parameters", s.span)
            self.exec_input(s, scope, b)
        elif isinstance(s, A.OutputStmt) and b.as_model:  # the model's closing `return` reads it
            scope[s.name] = self.ev(s.value, scope, b) if s.value is not None else self.lookup(s.name, scope, s.span)
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
            b.name_value(val, s.name)
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
                    inst.exprs[len(inst.values)] = a.value
                    inst.values.append(v)
                else:
                    inst.spans[a.name] = a.span
                    inst.exprs[a.name] = a.value
                    inst.kw[a.name] = v
            if any(v is POISON for v in [*inst.values, *inst.kw.values()]):
                scope[s.name] = POISON
                return
            scope[s.name] = inst
        elif isinstance(s, A.If):
            if not is_model and self.resolve_default(s, scope, b):
                return
            for k, (cond, body) in enumerate(s.branches):
                b.deciding += 1
                try:
                    c = self.ev(cond, scope, b)
                finally:
                    b.deciding -= 1
                if c is POISON:
                    return
                if not isinstance(c, bool):
                    raise self.fail("E0108", f"`if` needs a compile-time bool, got {_typename(c)}", cond.span)
                self.pin(cond, c, scope, b, f"`{A.unparse(cond)}` is {'true' if c else 'false'}")
                if c:
                    if b.trace is not None:
                        self.trace.taken.add((s.span, k))
                    self.exec_body(body, scope, b, is_model)
                    return
            if s.orelse is not None:
                if b.trace is not None:
                    self.trace.taken.add((s.span, len(s.branches)))
                self.exec_body(s.orelse, scope, b, is_model)
        elif isinstance(s, A.For):
            it = self.ev(s.iterable, scope, b)
            if it is POISON:
                return
            if not isinstance(it, (list, tuple)):
                raise self.fail("E0108", f"`for` iterates over a list or tuple, got {_typename(it)}", s.iterable.span)
            if not isinstance(s.iterable, (A.ListLit, A.TupleLit)):
                self.pin_length(s.iterable, len(it), scope, b)
            outer_stack = b.stack
            # `for v in range(n) as name`, and the range loops inside it: a module list the emitted code fills in a
            # loop (`name.{v}`, GraphBuilder.site_of); over a written list, `as layer` names layer1, layer2, ...
            framed = A.range_loop(s) and (s.stack is not None or bool(b.frames)) and is_model \
                and not b.as_model  # (in a block, or a model called as one, `as` names layer1, layer2, ...)
            rolled = framed and b.trace is not None  # the emitter's elaboration: sizes in the loop's names
            for k, item in enumerate(it):
                self.tick(s.span)  # an iteration is a step even when its body is empty (or all `for`s)
                if framed:
                    b.frames.append((s.stack, s.targets[0], k))
                elif s.stack is not None:
                    b.stack = f"{s.stack}{k + 1}"  # torchvision's layer1 ... layer4
                if s.unpack:
                    if not isinstance(item, (list, tuple)) or len(item) != len(s.targets):
                        raise self.fail("E0108", f"cannot unpack {_short(item)} into {len(s.targets)} names",
                                        s.iterable.span)
                    for n, v in zip(s.targets, item):
                        scope[n] = v
                elif rolled and isinstance(item, int):
                    scope[s.targets[0]] = HInt(item, expr_name(s.targets[0]))  # `level`, not 2
                    _retag(scope, s.body)  # what the iteration starts from: `x_channels`
                else:
                    scope[s.targets[0]] = item
                before = len(self.diags)
                if b.trace is not None:
                    self.trace.taken.add((s.span, 0))
                b.rolled_depth += rolled
                try:
                    self.exec_body(s.body, scope, b, is_model)
                finally:
                    b.stack = outer_stack
                    b.rolled_depth -= rolled
                    if framed:
                        b.frames.pop()
                if len(self.diags) > before:
                    break  # the next iterations would report the same errors again (100,000 times)
            if rolled:  # after the loop, its values are sized in their own names again
                _retag(scope, s.body)
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
            if c:
                self.pin(s.cond, True, scope, b, "assert:" + (s.message or f"`{A.unparse(s.cond)}` must hold"))
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
        elif isinstance(s, A.InitSection):  # read when the block started (init_section)
            if id(s) not in self.top_init_sections:
                raise self.fail("E0404", "an `init` section belongs at the top level of a block or model body, not "
                                "inside `if`, `for` or `repeat`", s.span)
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
                if d.value >= 2 ** 63:
                    raise self.fail("E0107", f"dimension {short_int(d.value)} does not fit in 64 bits", d.span)
                dims.append(d.value)
            else:
                known = scope.get(d.value)
                if isinstance(known, (int, Sym)) and not isinstance(known, bool):
                    dims.append(known)  # a hyper-parameter or an already declared symbol
                else:
                    sym = Sym.var(d.value)
                    scope[d.value] = sym
                    dims.append(sym)
        bounds: list[tuple[str, str]] = []  # (dim, the spec expression of its bound): ("T", "ctx")
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
            if not _literal(c.bound):
                bounds.append((c.sym, A.unparse(c.bound) if c.op == "<=" else A.unparse(c.bound, 6) + " - 1"))
        if s.name in scope:
            raise self.fail("E0106", f"{s.name!r} is already defined", s.span)
        t = b.add(Node(name=s.name, kind="input", type=TensorType(s.dtype, tuple(dims)), span=s.span,
                       exprs=tuple(bounds)))
        scope[s.name] = t

    def bind(self, targets: tuple[str, ...], val: Any, scope: Scope, b: GraphBuilder, span: Span | None) -> None:
        if len(targets) == 1:
            scope[targets[0]] = val
            b.name_value(val, targets[0])
            return
        if val is POISON:
            for t in targets:
                scope[t] = POISON
            return
        items = self.unpack(val, len(targets), b, span)
        for t, v in zip(targets, items):
            scope[t] = v
            b.name_value(v, t)

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


def _stored_tensor(s: A.Assign) -> A.Call | None:
    """The call in `name = op(...)` when the op takes no tensor input (parameter, sincos): a stored tensor."""
    v = s.value
    if len(s.targets) != 1 or not isinstance(v, A.Call) or not isinstance(v.func, A.Name):
        return None
    op = registry.get(v.func.id)
    return v if op is not None and op.arity == (0, 0) else None


_PY_OPS = {"+", "-", "*", "//", "%", "**", "==", "!=", "<", "<=", ">", ">=", "and", "or", "/"}


class PinsMixin:
    """What a graph's structure took as given, as Python conditions in its own size names (Graph.pins)."""

    def pin(self, cond, value: bool, scope: Scope, b: GraphBuilder, what: str) -> None:
        text = self.size_text(cond, scope, b)
        if text is None:
            if self.reads_sizes(cond, scope, b):  # decided by sizes it cannot write down: a pin nobody can check
                b.graph.pins.append(("", what))
            return
        if not _reads_names(text):
            return
        b.graph.pins.append((text if value else f"not ({text})", what))

    def resolve_default(self, s, scope: Scope, b: GraphBuilder) -> bool:
        """`if kv_heads == 0 { kv_heads = heads }`: an `if` over sizes whose branch only gives a block parameter a
        new size is decided by the emitted code (`kv_heads = heads if kv_heads == 0 else kv_heads`, Graph.resolved),
        not pinned: the parameter keeps the value the branch gives it, under a name of its own (`kv_headsʹ`) that
        callers cannot confuse with the argument they passed. False (nothing done) for any other `if`."""
        if len(s.branches) != 1 or s.orelse is not None or b.index is not None or b.graph.block not in self.defs:
            return False
        cond, body = s.branches[0]
        if not body or not all(isinstance(st, A.Assign) and len(st.targets) == 1 for st in body):
            return False
        names = [st.targets[0] for st in body]
        if len(set(names)) != len(names) or any(not isinstance(b.graph.hparams.get(k), int) or
                                                isinstance(b.graph.hparams.get(k), bool) for k in names):
            return False
        cond_text = self.size_text(cond, scope, b)
        if cond_text is None or not _reads_names(cond_text):
            return False
        b.deciding += 1
        try:
            c = self.ev(cond, scope, b)
            texts = [(self.size_text(st.value, scope, b), self.size_text(A.Name(st.span, st.targets[0]), scope, b))
                     for st in body]
            values = [self.ev(st.value, scope, b) for st in body]
        except SpecError:
            return False
        finally:
            b.deciding -= 1
        if not isinstance(c, bool) or any(t is None or o is None for t, o in texts) or \
                any(not isinstance(v, int) or isinstance(v, bool) for v in values):
            return False
        for k, v, (then, old) in zip(names, values, texts):
            let = f"{k}\u02b9"  # kv_headsʹ: the parameter after the `if`
            scope[k] = HInt(int(v) if c else int(scope[k]), let)
            b.graph.resolved.append((let, f"({then}) if ({cond_text}) else ({old})"))
        return True

    def pin_length(self, e, n: int, scope: Scope, b: GraphBuilder) -> None:
        if isinstance(e, A.Call) and isinstance(e.func, A.Name) and e.func.id == "range" and len(e.args) == 1 \
                and e.args[0].name is None:
            text = self.size_text(e.args[0].value, scope, b)
            what = f"`{A.unparse(e)}` has {n} iterations"
            if text is not None and _reads_names(text):
                b.graph.pins.append((f"{text} == {n}", what))
            elif text is None and self.reads_sizes(e, scope, b):
                b.graph.pins.append(("", what))
            return
        text = self.size_text(e, scope, b)
        if text is not None and _reads_names(text):
            b.graph.pins.append((f"len({text}) == {n}", f"`{A.unparse(e)}` has {n} items"))
        elif text is None and self.reads_sizes(e, scope, b):
            b.graph.pins.append(("", f"`{A.unparse(e)}` has {n} items"))

    def size_text(self, e, scope: Scope, b: GraphBuilder) -> str | None:
        """`e` as Python text over the graph's size names (`stride != 1 or x_channels != expansion * width`); None
        where it reads anything else (a tensor, a string method, a block)."""
        if isinstance(e, A.BinOp) and e.op in _PY_OPS:
            a, c = self.size_text(e.left, scope, b), self.size_text(e.right, scope, b)
            return None if a is None or c is None else f"({a}) {e.op} ({c})"
        if isinstance(e, A.Unary) and e.op in ("-", "+", "not"):
            a = self.size_text(e.operand, scope, b)
            return None if a is None else f"{e.op} ({a})" if e.op == "not" else f"{e.op}({a})"
        if isinstance(e, A.Name) and e.id == b.index:  # a repeat body's index stays a name (`i < dense_layers`)
            return e.id
        if not _pure(e):  # evaluated again here: never an expression that adds nodes
            return None
        try:
            v = self.ev(e, scope, b)
        except SpecError:
            return None
        return _value_text(v)

    def reads_sizes(self, e, scope: Scope, b: GraphBuilder) -> bool:
        """Whether `e` reads a hyper-parameter or a tensor's size (without evaluating it)."""
        return any(driven(scope.get(n)) for n in _names_read_expr(e)) or _calls_size(e)


_SIZE_FUNCS = {"features", "channels", "dim", "len", "range"}


def _pure(e) -> bool:
    """A leaf the pins may evaluate twice: names, literals, indexing and the size builtins of them."""
    if isinstance(e, (A.Name, A.Lit)):
        return True
    if isinstance(e, (A.ListLit, A.TupleLit)):
        return all(_pure(x) for x in e.items)
    if isinstance(e, A.Index):
        return _pure(e.obj) and all(_pure(x) for x in e.items)
    if isinstance(e, A.Call):
        return isinstance(e.func, A.Name) and e.func.id in _SIZE_FUNCS and all(_pure(a.value) for a in e.args)
    return False


def _calls_size(e) -> bool:
    """`dim(x, 1)`, `channels(x)`, `features(x)` somewhere in e: a tensor's size (a tensor's rank or presence is
    the spec's structure, not a size)."""
    if isinstance(e, A.Call) and isinstance(e.func, A.Name) and e.func.id in ("features", "channels", "dim"):
        return True
    return any(_calls_size(x) for v in (vars(e).values() if hasattr(e, "__dict__") else ())
               for x in (v if isinstance(v, tuple) else (v,)) if hasattr(x, "span"))


def _names_read_expr(e) -> set[str]:
    if isinstance(e, A.Name):
        return {e.id}
    out: set[str] = set()
    for v in vars(e).values() if hasattr(e, "__dict__") else ():
        for x in v if isinstance(v, tuple) else (v,):
            if isinstance(x, A.Node) or hasattr(x, "span"):
                out |= _names_read_expr(getattr(x, "value", x) if isinstance(x, A.Arg) else x)
    return out


def _value_text(v) -> str | None:
    if isinstance(v, (HInt, HFloat, HList, HTuple)) and v.expr is not None:  # a list as it is: `len(widths)`
        return v.expr
    if isinstance(v, (bool, int, float, str)) or v is None:
        return repr(plain(v))
    if isinstance(v, (list, tuple)):
        items = [_value_text(x) for x in v]
        if any(i is None for i in items):
            return None
        return f"[{', '.join(items)}]" if isinstance(v, list) else f"({', '.join(items)}{',' if len(items) == 1 else ''})"
    return None


def _reads_names(text: str) -> bool:
    return bool(names(text))


def _traced_value(v):
    """A bound value as the rolled trace keeps it: a tensor's node, a list of tensors' nodes, an int, or None."""
    if isinstance(v, Tensor):
        return v.node
    if isinstance(v, list) and all(isinstance(t, Tensor) for t in v[-LIST_TAIL:]):
        return ListValue(tuple(t.node for t in v[-LIST_TAIL:]))
    if isinstance(v, int) and not isinstance(v, bool):
        return int(v)
    return None


def _retag(scope: Scope, body: tuple) -> None:
    """A rolled loop's carried values sized in their own names (`x_channels`; a list of tensors keeps its name,
    values.TensorList), as the emitted code's constructor tracks them, at each iteration's start and after it."""
    for v in sorted(_assigned_in(body)):
        if isinstance(scope.get(v), Tensor):
            scope[v] = Tensor(scope[v].node, own_sizes(v, scope[v].type), scope[v].span)
        elif isinstance(scope.get(v), TensorList) and scope[v].name == v:
            continue  # `skips + [x]` stays one (checking its entries every iteration would be quadratic)
        elif isinstance(scope.get(v), list) and all(isinstance(t, Tensor) for t in scope[v]):
            scope[v] = TensorList(scope[v], v)

