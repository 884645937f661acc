"""A block's sizes in its own names: the static sizes of its inputs become HInts named after the input and the dim
(`x_channels`), so the sizes its layers get are expressions of its hyper-parameters and input sizes; a call's result
sizes go back into the caller's names (specc/hyper.py)."""
from __future__ import annotations

from typing import Any

from ..hyper import HInt, InputSize, expr_name, names, pinned_equal, spec_name, substitute
from ..symbolic import Sym
from ..types import TensorType, TupleType


def size_name(tensor: str, rank: int, i: int) -> str:
    """`x_channels`, `x_height`, `x_width` ([B, C, H, W]), `x_features` (the last dim of [B, d] and [B, T, d]),
    `x_dim1` otherwise."""
    if rank == 2 and i == 1:
        return f"{tensor}_features"
    if rank == 3 and i == 2:
        return f"{tensor}_features"
    if rank >= 4:
        spatial = ["depth", "height", "width"][-(rank - 2):] if rank <= 5 else None
        if i == 1:
            return f"{tensor}_channels"
        if spatial is not None and i >= 2:
            return f"{tensor}_{spatial[i - 2]}"
    return f"{tensor}_dim{i}"


def own_sizes(tensor: str, t: Any) -> Any:
    """`t` with each static size an HInt named after `tensor` and its dim (symbolic dims stay as they are)."""
    if isinstance(t, TupleType):
        return TupleType(tuple(own_sizes(f"{tensor}{k}", item) for k, item in enumerate(t.items)))
    if not isinstance(t, TensorType):
        return t
    return t.with_shape(InputSize(int(d), expr_name(size_name(tensor, t.rank, i))) if _static(d) else d
                        for i, d in enumerate(t.shape))


def size_env(own: Any, given: Any) -> dict[str, Any]:
    """The callee's input size names -> the caller's sizes for them."""
    if isinstance(own, TupleType) and isinstance(given, TupleType):
        env: dict[str, Any] = {}
        for a, b in zip(own.items, given.items):
            env.update(size_env(a, b))
        return env
    if not isinstance(own, TensorType) or not isinstance(given, TensorType):
        return {}
    return {spec_name(d.expr): g for d, g in zip(own.shape, given.shape)
            if isinstance(d, HInt) and d.expr is not None and isinstance(g, int)}


def in_caller_terms(t: Any, env: dict[str, Any]) -> Any:
    if isinstance(t, TupleType):
        return TupleType(tuple(in_caller_terms(i, env) for i in t.items))
    if not isinstance(t, TensorType):
        return t
    return t.with_shape(substitute(d, env) if isinstance(d, HInt) else d for d in t.shape)


def _static(d: Any) -> bool:
    return isinstance(d, int) and not isinstance(d, (bool, Sym))


def as_computed(t: Any, pins: list[str], known: set[str]) -> Any:
    """A block's result type with each of its input sizes that the block's conditions hold equal to a size it computes
    written as that size: after `if channels(x) != out { x = x -> conv2d(out, 1) }` not taken, the `x` it returns has
    `out` channels (which is what the other branch returns too), not `x_channels`. Only a size written in `known`
    names (what the caller can put its own for) replaces one: else the caller would get a bare number."""
    if isinstance(t, TupleType):
        return TupleType(tuple(as_computed(i, pins, known) for i in t.items))
    if not isinstance(t, TensorType) or not any(isinstance(d, InputSize) for d in t.shape):
        return t
    equal = {k: v for k, v in pinned_equal(pins).items() if names(v) <= known and v not in _input_names(t)}
    return t.with_shape(HInt(int(d), equal[spec_name(d.expr)]) if isinstance(d, InputSize) and d.expr is not None
                        and spec_name(d.expr) in equal else d for d in t.shape)


def _input_names(t: TensorType) -> set[str]:
    return {spec_name(d.expr) for d in t.shape if isinstance(d, InputSize) and d.expr is not None}
