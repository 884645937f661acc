"""IR -> TVM Relax: a thin walker over specc's IR that builds one Relax function with relax.BlockBuilder.

The walker branches on node kind only. Each op's Relax code comes from the rule registered on its registry entry
(``OpDef.tvm``, see ``rules/``). Blocks and folded repeats are inlined (every repeat iteration has its own weights);
symbolic batch/sequence dims stay symbolic (``tirx.Var``, int64). Weights become function parameters named like the
emitted PyTorch module's state_dict (``layer1.0.conv1.weight``), so the same weights can be bound to both.

    main(<model inputs>..., <weights>...) -> output | (outputs...)

Nodes that a target cannot lower are all reported at once (E0501, located at the spec line).
"""
from __future__ import annotations

import ast
import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import tvm
import tvm.sym
from tvm import relax, tirx

from ...diagnostics import Diagnostic, Note, SpecError
from ...ir import Graph, Module, Node
from ...naming import attribute_names, module_entry, module_keys, py_name
from ...ops import registry
from ...symbolic import Dim, Sym
from ...types import DTYPES, TensorType, TupleType, Type
from ...walker import Interpreter
from .rules import load_rules


def tvm_dtype(dtype: str) -> str:
    return DTYPES.get(dtype, dtype)


# ---- symbolic dims ---------------------------------------------------------------------------------------------

class DimConverter:
    """specc dims (int | Sym polynomial, with opaque atoms like ``(T - 1)//2``) -> tirx int64 expressions."""

    def __init__(self, fixed: dict[str, int] | None = None) -> None:
        self.vars: dict[str, tirx.Var] = {}
        self.fixed = dict(fixed or {})  # symbolic dims specialised to a number (static-shape builds, tuning)
        self.rows: dict[Dim, tirx.PrimExpr] = {}  # while lowering a routed expert: the layer's token dim -> its rows

    @contextlib.contextmanager
    def rows_as(self, tokens: Dim, rows: tirx.PrimExpr) -> Iterator[None]:
        """Within the block: dim `tokens` (the layer's token count) stands for `rows`, a count known only at run
        time (the tokens routed to one expert). The caller checks that `tokens` never shares a symbol or a value
        with another dim of the graphs lowered meanwhile."""
        saved, self.rows = self.rows, {**self.rows, tokens: rows}
        try:
            yield
        finally:
            self.rows = saved

    def var(self, name: str) -> tirx.Var:
        if name not in self.vars:
            self.vars[name] = tirx.Var(name, "int64")
        return self.vars[name]

    def __call__(self, d: Dim) -> tirx.PrimExpr:
        if self.rows and d in self.rows:
            return self.rows[d]
        if self.fixed and isinstance(d, Sym):
            d = d.subs(self.fixed)
        if isinstance(d, int):
            return tirx.IntImm("int64", d)
        total: tirx.PrimExpr = tirx.IntImm("int64", 0)
        for mono, coef in sorted(d.terms.items()):
            term: tirx.PrimExpr = tirx.IntImm("int64", coef)
            for atom in mono:
                term = term * self.atom(atom)
            total = total + term
        return tvm.sym.Analyzer().simplify(total)

    def atom(self, text: str) -> tirx.PrimExpr:
        if text.isidentifier():
            return self.var(text)
        return self._expr(ast.parse(text, mode="eval").body, text)

    def _expr(self, n: ast.AST, text: str) -> tirx.PrimExpr:
        if isinstance(n, ast.Constant) and isinstance(n.value, int):
            return tirx.IntImm("int64", n.value)
        if isinstance(n, ast.Name):
            return self.var(n.id)
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            return -self._expr(n.operand, text)
        if isinstance(n, ast.BinOp):
            a, b = self._expr(n.left, text), self._expr(n.right, text)
            ops: dict[type, Callable] = {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b,
                                         ast.FloorDiv: lambda: tirx.floordiv(a, b)}
            if type(n.op) in ops:
                return ops[type(n.op)]()
        raise ValueError(f"cannot express dim {text!r} for TVM")


# ---- what a rule sees ------------------------------------------------------------------------------------------

@dataclass
class LowerCtx:
    """Everything a lowering rule may use: the node, its IR types, the builder, weights and dims."""

    walker: "Walker"
    graph: Graph
    node: Node
    prefix: str
    in_types: list[Type]

    @property
    def attrs(self) -> Any:
        return self.node.attrs

    @property
    def out_type(self) -> Type:
        return self.node.type

    @property
    def bb(self) -> relax.BlockBuilder:
        return self.walker.bb

    @property
    def target(self):
        return self.walker.target

    @property
    def on_gpu(self) -> bool:
        return self.walker.target is not None and self.walker.target.device == "cuda"

    def dim(self, d: Dim) -> tirx.PrimExpr:
        return self.walker.dims(d)

    def shape(self, t: TensorType | None = None) -> list[tirx.PrimExpr]:
        t = t or self.out_type
        return [self.dim(d) for d in t.shape]

    def dtype(self, t: TensorType | None = None) -> str:
        return tvm_dtype((t or self.out_type).dtype)

    def const(self, value, dtype: str | None = None) -> relax.Expr:
        return relax.const(value, dtype or self.dtype())

    def emit(self, expr: relax.Expr) -> relax.Var:
        return self.bb.emit(expr)

    def binding(self, var: relax.Expr) -> relax.Expr | None:
        """The expression a dataflow var was bound to (for small peepholes such as cancelling permutes)."""
        return self.bb.lookup_binding(var) if isinstance(var, relax.Var) else None

    def param(self, name: str) -> relax.Var:
        """The weight (or buffer) `name` of this node's layer, as a function parameter named like the emitted
        PyTorch module's state_dict entry."""
        op = registry.get(self.node.target)
        ins = [t for t in self.in_types if isinstance(t, TensorType)]
        shapes = {**op.param_shapes(ins, self.attrs), **op.buffer_shapes(ins, self.attrs)}
        if name not in shapes:
            raise KeyError(f"{self.node.target} has no parameter {name!r} (has {', '.join(shapes)})")
        return self.walker.weight(self.state_name(name), shapes[name], "float32")

    def state_name(self, name: str) -> str:
        attrs = self.walker.attributes(self.graph)
        tie = getattr(self.attrs, "tie", None)
        if tie and name == "weight":
            return f"{self.prefix}{attrs[tie]}.weight"
        if self.walker.layered(self.graph, self.node):  # a fused op: "conv1.weight" is layer conv1's weight
            layer, _, rest = name.partition(".")
            return f"{self.prefix}{attrs[layer]}.{rest}"
        return f"{self.prefix}{attrs[self.node.layer or self.node.name]}.{name}"

    def as_op(self, target: str, attrs, name: str, in_types: list[Type]) -> "LowerCtx":
        """The context of a layer a fused op absorbed (same inputs, its own op, attributes and weights)."""
        op = registry.get(target)
        node = Node(name=name, kind="op", target=target, inputs=self.node.inputs[:len(in_types)], attrs=attrs,
                    type=op.infer(in_types, attrs), span=self.node.span)
        return LowerCtx(self.walker, self.graph, node, self.prefix, in_types)

    def lower_graph(self, graph: str, prefix: str, args: list, rows: tuple[Dim, tirx.PrimExpr] | None = None
                    ) -> list:
        """Inline another graph (an op's expert block): `prefix` is its module path relative to this node's.
        `rows=(tokens, n)`: run it on `n` rows instead of the `tokens` its IR types say (see DimConverter.rows_as)."""
        base = self.walker.attributes(self.graph)[self.node.layer or self.node.name]
        g, path = self.walker.m.graphs[graph], f"{self.prefix}{base}.{prefix}"
        if rows is None:
            return self.walker.graph(g, path, args)
        with self.walker.dims.rows_as(*rows):
            return self.walker.graph(g, path, args)


Rule = Callable[..., relax.Expr]


# ---- the walker ------------------------------------------------------------------------------------------------

@dataclass
class Lowered:
    """The Relax module and how its function's parameters map to specc names."""

    mod: tvm.IRModule
    inputs: list[str]  # model input names, in order (first function params)
    input_types: list[TensorType]
    outputs: list[str]
    output_types: list[Type]
    weights: dict[str, tuple[tuple[int, ...], str]]  # state-dict name -> (shape, dtype), in param order
    taps: list[tuple[str, Node]] = field(default_factory=list)  # extra outputs (diff mode): qualified name, node
    bounds: dict[str, int] = field(default_factory=dict)  # symbolic dim -> upper bound (`T <= ctx`)
    fixed: dict[str, int] = field(default_factory=dict)  # symbolic dims this build specialised to a number


class Walker(Interpreter):
    """Builds the Relax function: op nodes through their registry rules, calls and repeats inlined (the walker base's
    loop), values named by the PyTorch module path of the graph they are in."""

    def __init__(self, module: Module, target=None, taps: bool = False, dims: dict[str, int] | None = None) -> None:
        super().__init__(module)
        self.m = module
        self.target = target
        self.want_taps = taps
        self.bb = relax.BlockBuilder()
        self.dims = DimConverter(dims)
        self.weight_vars: dict[str, relax.Var] = {}
        self.weight_info: dict[str, tuple[tuple[int, ...], str]] = {}
        self.taps: list[tuple[str, Node, relax.Expr]] = []
        self.errors: list[Diagnostic] = []
        self.analyzer = tvm.sym.Analyzer()
        self._attrs: dict[str, dict[str, str]] = {}

    # -- weights -----------------------------------------------------------------------------------------------
    def weight(self, name: str, shape: tuple[Dim, ...], dtype: str) -> relax.Var:
        if name not in self.weight_vars:
            if not all(isinstance(d, int) for d in shape):
                raise ValueError(f"weight {name} has a symbolic shape {shape}")
            self.weight_vars[name] = relax.Var(name, relax.TensorType(tuple(shape), dtype))
            self.weight_info[name] = (tuple(int(d) for d in shape), dtype)
        return self.weight_vars[name]

    # -- names -------------------------------------------------------------------------------------------------
    def attributes(self, g: Graph) -> dict[str, str]:
        if g.name not in self._attrs:
            self._attrs[g.name] = attribute_names(g)
        return self._attrs[g.name]

    def layered(self, g: Graph, n: Node) -> bool:
        return bool(module_keys(g, n))

    # -- values ------------------------------------------------------------------------------------------------
    def tensor_type(self, t: TensorType) -> relax.TensorType:
        return relax.TensorType([self.dims(d) for d in t.shape], tvm_dtype(t.dtype))

    def run(self) -> Lowered:
        g = self.m.graph
        inputs = []
        for name in g.inputs:
            t = g[name].type
            inputs.append(relax.Var(py_name(name), self.tensor_type(t)))
        with self.bb.function("main"):
            with self.bb.dataflow():
                outs = self.graph(g, "", list(inputs))
                flat = [o for o in outs]
                if self.want_taps:
                    flat += [v for _, _, v in self.taps]
                result = flat[0] if len(flat) == 1 else relax.Tuple(flat)
                gv = self.bb.emit_output(result)
            self.bb.emit_func_output(gv, params=inputs + list(self.weight_vars.values()))
        if self.errors:
            raise SpecError(*self.errors)
        mod = self.bb.get()
        bounds = {s: b for s, (b, _) in self.m.constraints.items() if isinstance(b, int) and s in self.dims.vars}
        if bounds:
            mod["main"] = mod["main"].with_attr("tir_var_upper_bound", bounds)
        return Lowered(mod, list(g.inputs), [g[i].type for i in g.inputs], list(g.outputs),
                       [g[o].type for o in g.outputs], dict(self.weight_info),
                       [(q, n) for q, n, _ in self.taps], bounds, dict(self.dims.fixed))

    def graph(self, g: Graph, prefix: str, args: list) -> list:
        """Inline graph `g` on `args`; `prefix` is its module path ("" or "layer1.0.")."""
        return self.run_graph(g, args, prefix)

    def call_context(self, g: Graph, n: Node, prefix: str) -> str:
        return f"{prefix}{self.attributes(g)[n.layer or n.name]}."

    def iteration_context(self, g: Graph, n: Node, i: int, prefix: str) -> str:
        return f"{prefix}{module_entry(self.attributes(g)[n.layer or n.name], i)}."  # h.3, layer1.4

    def op(self, g: Graph, n: Node, ins: list, prefix: str):
        op = registry.get(n.target)
        ctx = LowerCtx(self, g, n, prefix, [g[i].type for i in n.inputs])
        try:
            value = op.tvm(ctx, *ins)
            if isinstance(value, relax.Expr) and not isinstance(value, (relax.Var, tvm.ir.expr.Constant)):
                value = self.bb.emit(value, name_hint=_hint(prefix + n.name))
            value = self.known_shape(n, value)
            self.check_type(n, value)
        except SpecError:
            raise
        except Exception as err:  # noqa: BLE001 - reported as a located diagnostic, lowering goes on
            self.errors.append(_diag(n, f"lowering {n.target} failed: {type(err).__name__}: {err}"))
            return self.placeholder(n.type)
        if self.want_taps and isinstance(n.type, TensorType):
            self.taps.append((prefix + n.name, n, value))
        return value

    def placeholder(self, t: Type):
        if isinstance(t, TupleType):
            return tuple(self.placeholder(i) for i in t.items)
        return self.bb.emit(relax.op.zeros([self.dims(d) for d in t.shape], tvm_dtype(t.dtype)))

    def known_shape(self, n: Node, value):
        """Where Relax could not infer a shape (data-dependent slicing), assert the IR's at run time."""
        ty = getattr(value, "ty", None)
        if isinstance(n.type, TensorType) and isinstance(ty, relax.TensorType) and not isinstance(
                ty.shape, relax.ShapeExpr):
            return self.bb.match_cast(value, self.tensor_type(n.type))
        return value

    def check_type(self, n: Node, value) -> None:
        """The rule's Relax value has the shape and dtype the IR inferred (a rule bug otherwise)."""
        if not isinstance(n.type, TensorType):
            return
        ty = value.ty if hasattr(value, "ty") else None
        if not isinstance(ty, relax.TensorType) or ty.shape is None:
            return
        want = [self.dims(d) for d in n.type.shape]
        got = list(ty.shape.values) if isinstance(ty.shape, relax.ShapeExpr) else None
        same = got is not None and len(got) == len(want) and all(
            self.analyzer.can_prove_equal(a, b) for a, b in zip(got, want))
        if not same or str(ty.dtype) != tvm_dtype(n.type.dtype):
            raise TypeError(f"rule produced {ty.dtype}{list(got or [])}, the IR says {n.type} (a bug in specc's "
                            f"TVM rule for {n.target})")


def _hint(qualified: str) -> str:
    return qualified.replace(".", "_").replace("*", "x")


def _diag(n: Node, msg: str, help: str | None = None) -> Diagnostic:
    return Diagnostic("E0501", f"cannot lower {n.target} '{n.name}': {msg}", n.span, help=help,
                      notes=[Note(s, "fused from here") for s in n.origin])


# ---- entry point -----------------------------------------------------------------------------------------------

def unsupported(module: Module, target=None) -> list[Diagnostic]:
    """One E0501 diagnostic per op node that `target` cannot lower (all of them, each located once)."""
    load_rules()
    seen: set[tuple[str, str]] = set()
    diags = []
    for _, n, g, _ in module.walk():
        if n.kind != "op" or (g.name, n.name) in seen:
            continue
        seen.add((g.name, n.name))
        op = registry.get(n.target)
        in_types = [g[i].type for i in n.inputs]
        if op is None or op.tvm is None:
            diags.append(_diag(n, "TVM has no lowering rule for this op",
                               help="add one in specc/backends/tvm/rules/ or use a PyTorch target"))
            continue
        check = getattr(op.tvm, "check", None)
        reason = check(n, in_types, target) if check else None
        if reason is None:
            reason = _dynamic_dims(in_types + [n.type])
        if reason:
            where = f" (target {target.name})" if target is not None else ""
            diags.append(_diag(n, reason + where))
    return diags


def _dynamic_dims(types: list[Type]) -> str | None:
    conv = DimConverter()
    for t in types:
        items = t.items if isinstance(t, TupleType) else (t,)
        for it in items:
            for d in getattr(it, "shape", ()):
                if isinstance(d, Sym):
                    try:
                        conv(d)
                    except (ValueError, SyntaxError):
                        return f"dim {d} cannot be expressed as a TVM shape"
    return None


def lower(module: Module, target=None, taps: bool = False, dims: dict[str, int] | None = None) -> Lowered:
    """Lower a checked IR module to a Relax IRModule. Raises SpecError (E0501) listing every node that cannot be
    lowered for `target` (a specc.targets.Target or None). `dims` specialises symbolic dims to numbers (a
    static-shape build: what `specc tune` tunes for); the others stay symbolic."""
    diags = unsupported(module, target)
    if diags:
        raise SpecError(*diags)
    return Walker(module, target, taps, dims).run()
