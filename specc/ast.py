"""The spec AST: plain frozen dataclasses, each with its source span. Produced by parse.py, consumed by specc/elaborate/."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .source import Span


@dataclass(frozen=True)
class Node:
    span: Span | None


# ---- expressions ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Name(Node):
    id: str


@dataclass(frozen=True)
class Lit(Node):
    value: Any  # int, float, str, bool, None


@dataclass(frozen=True)
class TupleLit(Node):
    items: tuple[Any, ...]


@dataclass(frozen=True)
class ListLit(Node):
    items: tuple[Any, ...]


@dataclass(frozen=True)
class BinOp(Node):
    op: str  # + - * / // % @ ** == != < <= > >= and or
    left: Any
    right: Any


@dataclass(frozen=True)
class Unary(Node):
    op: str  # - + not
    operand: Any


@dataclass(frozen=True)
class Arg(Node):
    name: str | None
    value: Any


@dataclass(frozen=True)
class Call(Node):
    func: Any
    args: tuple[Arg, ...]


@dataclass(frozen=True)
class SliceExpr(Node):
    start: Any
    stop: Any
    step: Any


@dataclass(frozen=True)
class Index(Node):
    obj: Any
    items: tuple[Any, ...]  # exprs, SliceExpr, or Lit(...) for Ellipsis


@dataclass(frozen=True)
class Attr(Node):
    obj: Any
    name: str


@dataclass(frozen=True)
class Link(Node):
    """One step of an `a -> f(args) as name` chain."""

    func: str
    func_span: Span | None
    args: tuple[Arg, ...] | None
    alias: str | None


@dataclass(frozen=True)
class Chain(Node):
    left: Any
    link: Link


# ---- statements -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DimDecl(Node):
    value: int | str


@dataclass(frozen=True)
class Constraint(Node):
    sym: str
    op: str
    bound: Any


@dataclass(frozen=True)
class InputStmt(Node):
    name: str
    dtype: str
    dtype_span: Span | None
    dims: tuple[DimDecl, ...]
    constraints: tuple[Constraint, ...]


@dataclass(frozen=True)
class OutputStmt(Node):
    name: str
    value: Any  # None: output an existing variable of the same name


@dataclass(frozen=True)
class Assign(Node):
    targets: tuple[str, ...]
    value: Any


@dataclass(frozen=True)
class LayerStmt(Node):
    name: str
    link: Link


@dataclass(frozen=True)
class If(Node):
    branches: tuple[tuple[Any, tuple], ...]  # (condition, body)
    orelse: tuple | None


@dataclass(frozen=True)
class For(Node):
    targets: tuple[str, ...]
    iterable: Any
    body: tuple
    unpack: bool
    stack: str | None = None  # `for ... as layer`: item k's layers are stack layer{k+1}


@dataclass(frozen=True)
class Repeat(Node):
    count: Any
    var: str | None  # the iteration index (`as h[i]`)
    body: tuple
    stack: str | None = None  # `as h`: the iterations are h.0, h.1, ...


@dataclass(frozen=True)
class Return(Node):
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Assert(Node):
    cond: Any
    message: str | None


@dataclass(frozen=True)
class TrainItem(Node):
    key: str
    value: Any


@dataclass(frozen=True)
class Train(Node):
    items: tuple[TrainItem, ...]


@dataclass(frozen=True)
class InitRule(Node):
    """`linear: normal(0.02)` / `c_proj.bias: zeros`: layers of an op kind, or layers of a name, and a parameter."""

    selector: str
    param: str | None
    value: Any


@dataclass(frozen=True)
class InitSection(Node):
    rules: tuple[InitRule, ...]


# ---- definitions ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Param(Node):
    name: str
    type: str | None
    default: Any

    @property
    def is_tensor(self) -> bool:
        return self.type in (None, "tensor") and self.default is None


@dataclass(frozen=True)
class Def(Node):
    kind: str  # "block" | "model"
    name: str
    name_span: Span | None
    params: tuple[Param, ...]
    body: tuple


@dataclass(frozen=True)
class Import(Node):
    path: str


@dataclass(frozen=True)
class Program(Node):
    file: str
    imports: tuple[Import, ...]
    defs: tuple[Def, ...]


# ---- expressions back to spec text ------------------------------------------------------------------------------
def statements(body: tuple):
    """Every statement of a body, nested ones (in `if`, `for` and `repeat` bodies) after the one holding them."""
    for s in body:
        yield s
        if isinstance(s, If):
            for _, b in s.branches:
                yield from statements(b)
            if s.orelse:
                yield from statements(s.orelse)
        elif isinstance(s, (For, Repeat)):
            yield from statements(s.body)


def range_loop(s: For) -> bool:
    """`for v in range(...)` (not over a written list, not unpacking): a loop the emitted code can keep a loop."""
    it = s.iterable
    return isinstance(it, Call) and isinstance(it.func, Name) and it.func.id == "range" and not s.unpack


_PREC = {"or": 1, "and": 2, "not": 3, "==": 4, "!=": 4, "<": 4, "<=": 4, ">": 4, ">=": 4, "+": 5, "-": 5, "*": 6,
         "/": 6, "//": 6, "%": 6, "@": 6, "u": 7, "**": 8}


def unparse(e: Any, prec: int = 0) -> str:
    """An expression as spec text with the fewest parentheses that keep its meaning: `3 * d`, `(h - 1) // 2`."""
    if isinstance(e, Name):
        return e.id
    if isinstance(e, Lit):
        v = e.value
        if isinstance(v, bool):
            return "true" if v else "false"
        if v is None:
            return "none"
        if v is Ellipsis:
            return "..."
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
        return repr(v)
    if isinstance(e, TupleLit):
        items = [unparse(x) for x in e.items]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    if isinstance(e, ListLit):
        return "[" + ", ".join(unparse(x) for x in e.items) + "]"
    if isinstance(e, BinOp):
        p = _PREC[e.op]
        right_assoc = e.op == "**"
        text = f"{unparse(e.left, p + right_assoc)} {e.op} {unparse(e.right, p + (not right_assoc))}"
        return f"({text})" if p < prec else text
    if isinstance(e, Unary):
        p = _PREC["not" if e.op == "not" else "u"]
        text = f"not {unparse(e.operand, p)}" if e.op == "not" else f"{e.op}{unparse(e.operand, p)}"
        return f"({text})" if p < prec else text
    if isinstance(e, Call):
        return f"{unparse(e.func, 9)}({_args(e.args)})"
    if isinstance(e, Index):
        return f"{unparse(e.obj, 9)}[{', '.join(unparse(i) for i in e.items)}]"
    if isinstance(e, SliceExpr):
        parts = ["" if x is None else unparse(x) for x in (e.start, e.stop, e.step)]
        return ":".join(parts[:2] if e.step is None else parts)
    if isinstance(e, Attr):
        return f"{unparse(e.obj, 9)}.{e.name}"
    if isinstance(e, Chain):
        text = f"{unparse(e.left, 0)} -> {_link(e.link)}"
        return f"({text})" if prec > 0 else text
    return "?"


def _args(args: tuple) -> str:
    return ", ".join(unparse(a.value) if a.name is None else f"{a.name}={unparse(a.value)}" for a in args)


def _link(link: Any) -> str:
    text = link.func + (f"({_args(link.args)})" if link.args is not None else "")
    return text + (f" as {link.alias}" if link.alias else "")
