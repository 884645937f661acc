"""Compile-time values as the IR stores them: ``to_attr`` turns what the elaborator computed (symbolic dims, lists,
block values) into attribute data that prints, compares and hashes; ``BlockValue`` is the one compile-time value kind
besides plain data that a block's hyper-parameters may hold. Both the elaborator and the IR printer use them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .source import Span
from .symbolic import Sym


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
        args = [short(v) for v in self.values] + [f"{k}={short(v)}" for k, v in self.kw]
        return f"{self.name}({', '.join(args)})"


def to_attr(v: Any) -> Any:
    """A compile-time value as IR attribute data: dims and block values as text, lists as tuples."""
    if isinstance(v, BlockValue):
        return str(v)
    if isinstance(v, Sym):
        return str(v)
    if isinstance(v, list):
        return tuple(to_attr(x) for x in v)
    if isinstance(v, tuple):
        return tuple(to_attr(x) for x in v)
    return v


def short(v: Any) -> str:
    """A value for a message, cut to 40 characters."""
    r = repr(v) if not isinstance(v, Sym) else str(v)
    return r if len(r) <= 40 else r[:37] + "..."
