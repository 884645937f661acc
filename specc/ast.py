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


@dataclass(frozen=True)
class Repeat(Node):
    count: Any
    var: str | None
    body: tuple


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
