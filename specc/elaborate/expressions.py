"""Expressions: names, literals, arithmetic, chains, indexing, attributes."""
from __future__ import annotations

import math
from typing import Any

from .. import ast as A
from ..diagnostics import SpecError
from ..hyper import HInt, InputSize, expr_name
from ..limits import over_budget, short_int
from ..ops import registry
from ..source import Span
from ..symbolic import DimTypeError, Sym
from ..types import TensorType, TupleType
from .builtins import BUILTINS, INIT_CONSTANTS
from .sizes import _static, size_name
from .values import (
    POISON,
    GraphBuilder,
    LayerInstance,
    Scope,
    Tensor,
    TensorList,
    _closest,
    _const_binop,
    _typename,
)


class ExpressionsMixin:
    """Expressions: names, literals, arithmetic, chains, indexing, attributes."""

    def lookup(self, name: str, scope: Scope, span: Span | None) -> Any:
        if name in scope:
            return scope[name]
        if name in INIT_CONSTANTS:  # `bias_init=zeros`
            return INIT_CONSTANTS[name]
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
        self.tick(e.span)
        if isinstance(e, A.Lit):
            return self.check_size(e.value, e.span)
        if isinstance(e, A.Name):
            if e.id == b.index and not b.deciding:
                b.index_read = True
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
        self.check_binop(e, left, right)
        try:
            return self.check_size(_const_binop(e.op, left, right), e.span)
        except ZeroDivisionError:
            raise self.fail("E0108", "division by zero in a compile-time expression", e.span) from None
        except DimTypeError as err:
            raise self.fail("E0108", f"{err}", e.span, label="not a whole number",
                            help="a size must be a whole number: write e.g. `B * 3 // 2`, or use an int") from None
        except OverflowError:
            raise self.fail("E0108", f"{_typename(left)} {e.op} {_typename(right)}: the result is too large for a "
                            "float", e.span) from None
        except (TypeError, ValueError):
            raise self.fail("E0108", f"cannot apply {e.op!r} to {_typename(left)} and {_typename(right)}",
                            e.span) from None

    def check_binop(self, e: A.BinOp, left: Any, right: Any) -> None:
        """Refuse, before computing it, a result beyond the budgets: `[1] * 10**9`, `10 ** 10**6`."""
        lim = self.limits
        if e.op == "*":
            seq, n = (left, right) if isinstance(left, (list, tuple, str)) else (right, left)
            if isinstance(seq, (list, tuple, str)) and isinstance(n, int) and len(seq) * n > lim.collection:
                raise over_budget(lim, "collection", e.span, f"{len(seq):,} x {short_int(n)} elements")
            if isinstance(left, Sym) and isinstance(right, Sym) and \
                    len(left.terms) * len(right.terms) > lim.dim_terms ** 2:
                raise over_budget(lim, "dim_terms", e.span)
        if e.op == "**" and isinstance(left, int) and isinstance(right, int) and not isinstance(left, bool) \
                and abs(left) > 1 and right > 0 and right * math.log10(abs(left)) > lim.int_digits + 1:
            raise over_budget(lim, "int_digits", e.span, f"{short_int(left)} ** {short_int(right)}")

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
        items, symbolic = [], []
        for it in e.items:
            if isinstance(it, A.SliceExpr):
                parts = [None if p is None else self.ev(p, scope, b) for p in (it.start, it.stop, it.step)]
                for i, (p, sub) in enumerate(zip(parts, (it.start, it.stop, it.step))):
                    if i < 2 and isinstance(p, Sym):  # `table[:T]`: read from a tensor's size at run time
                        parts[i] = str(p)
                        symbolic.append((p, sub.span))
                    elif p is not None and (not isinstance(p, int) or isinstance(p, bool)):
                        want = "a compile-time int" if i == 2 else "compile-time ints or sizes (T, T - 1)"
                        raise self.fail("E0108", f"slice {'step' if i == 2 else 'bounds'} must be {want}, got "
                                        f"{_typename(p)}", sub.span)
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
            carriers = self.size_carriers(obj, symbolic, b)
            return self.apply_op("slice", [obj, *carriers], [tuple(items)], {}, e.span, None, b)
        if symbolic:
            raise self.fail("E0108", f"{_typename(obj)} takes compile-time int slice bounds, got {symbolic[0][0]}",
                            symbolic[0][1])
        if isinstance(obj, (tuple, list)):
            if len(items) != 1:
                raise self.fail("E0108", "lists and tuples take one index", e.span)
            it = items[0]
            try:
                got = obj[slice(*it)] if isinstance(it, tuple) else obj[it]
            except IndexError:
                raise self.fail("E0305", f"index {it} is out of range for a length-{len(obj)} list", e.span) from None
            if b.trace is not None and isinstance(got, Tensor) and isinstance(e.obj, A.Name):
                self.trace.reads[got.node] = f"{e.obj.id}[{A.unparse(e.items[0])}]"  # how the emitted code reads it
            if isinstance(obj, TensorList):  # `skips[-1]`: sized as the list's entry at that index
                return _list_entry(obj, e.items[0], got)
            return _indexed(obj, it, got) if b.trace is not None else got
        raise self.fail("E0108", f"{_typename(obj)} cannot be indexed", e.span)

    def size_carriers(self, obj: Tensor, symbolic: list[tuple[Sym, Span | None]], b: GraphBuilder) -> list[Tensor]:
        """The tensors whose sizes give symbolic slice bounds at run time (`table[:T]` reads T from an input
        [B, T, 8]): none when `obj`'s own dims give it; else tensors with each of its symbols as a dim (the graph's
        inputs first), else one with the whole bound as a dim (`dim(y, 1)` of y: [1, 8*N])."""
        def has(t: Any, dim: Sym) -> bool:
            return isinstance(t, TensorType) and dim in t.shape

        nodes = [b.graph[n] for n in b.graph.inputs] + [n for n in b.graph.nodes() if n.kind != "output"]

        def find(dim: Sym) -> Tensor | None:
            n = next((n for n in nodes if has(n.type, dim)), None)
            return None if n is None else Tensor(n.name, n.type, n.span)

        out: list[Tensor] = []
        for d, span in symbolic:
            have = [obj.type, *(t.type for t in out)]
            atoms = [Sym.var(a) for a in sorted(d.symbols())]
            missing = [a for a in atoms if not any(has(t, a) for t in have)]
            if not missing or any(has(t, d) for t in have):
                continue
            found = [find(a) for a in missing]
            if None in found:
                found = [find(d)]
            if None in found:
                atom = missing[[find(a) for a in missing].index(None)]
                raise self.fail("E0305", f"slice bound {d}: no tensor here has a dim {atom} to read its size "
                                "from at run time", span)
            for t in found:
                if all(t.node != o.node for o in out):
                    out.append(t)
        return out


def _indexed(obj, index, got):
    """`mult[level]` with `level` a rolled loop's index (Elaborator.rolling): the element, its size named by the
    index's expression rather than by its position (`mult[level]`, not `mult[1]`)."""
    base, at = getattr(obj, "expr", None), getattr(index, "expr", None)
    if at is None and isinstance(index, int) and not isinstance(index, bool):
        at = str(index)  # `mult[-1]`: the last entry whatever the length, not `mult[3]`
    if base is None or at is None or isinstance(index, bool) or not isinstance(got, int) or isinstance(got, bool):
        return got
    return HInt(int(got), f"{base}[{at}]")


def _list_entry(obj, index_ast, got):
    """An entry of a rolled loop's tensor list (values.TensorList): a slice stays a named list; an element's static
    sizes are the list's size lists at the index as written (`skips_channels[-1]`)."""
    if isinstance(got, list):
        return TensorList(got, obj.name)
    if not isinstance(got, Tensor) or not isinstance(got.type, TensorType):
        return got
    at = A.unparse(index_ast)
    shape = [InputSize(int(d), f"{expr_name(size_name(obj.name, got.type.rank, i))}[{at}]") if _static(d) else d
             for i, d in enumerate(got.type.shape)]
    return Tensor(got.node, got.type.with_shape(shape), got.span)
