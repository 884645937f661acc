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


# ---- initialisation -------------------------------------------------------------------------------------------

# The initialisers a spec may declare: name -> (parameters in positional order, defaults). Each is one
# `torch.nn.init.<name>_` call in emitted code, with these keyword names (defaults left out).
INITS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "normal": (("std", "mean"), {"mean": 0.0}),
    "trunc_normal": (("std", "a", "b", "mean"), {"a": -2.0, "b": 2.0, "mean": 0.0}),
    "uniform": (("a", "b"), {}),
    "kaiming_normal": (("mode", "nonlinearity", "a"), {"mode": "fan_in", "nonlinearity": "leaky_relu", "a": 0.0}),
    "kaiming_uniform": (("mode", "nonlinearity", "a"), {"mode": "fan_in", "nonlinearity": "leaky_relu", "a": 0.0}),
    "xavier_normal": (("gain",), {"gain": 1.0}),
    "xavier_uniform": (("gain",), {"gain": 1.0}),
    "zeros": ((), {}),
    "ones": ((), {}),
    "constant": (("val",), {}),
}
FAN_INITS = frozenset({"kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform"})  # need rank >= 2


@dataclass(frozen=True)
class Init:
    """An initialiser as a spec declared it, `normal(0.02 / sqrt(2 * layers))`: its kind, its arguments (defaults
    left out) and, where an argument was computed, the spec text (for the comment beside the emitted call)."""

    kind: str
    args: tuple[tuple[str, Any], ...] = ()
    text: str = field(default="", compare=False)

    def __str__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.args)
        return f"{self.kind}({inner})" if inner or self.kind not in ("zeros", "ones") else self.kind

    def data(self) -> tuple:
        """As plain literals (the IR printer writes these; ``Init.of`` reads them back)."""
        return (self.kind, self.args, self.text) if self.text else (self.kind, self.args)

    @staticmethod
    def of(data: tuple) -> "Init":
        return Init(data[0], tuple(tuple(a) for a in data[1]), data[2] if len(data) > 2 else "")
