"""The shape context: what a shape rule may read beyond its inputs and attributes, set by whoever runs the rules.

* ``graphs()``: the module's graphs by name, for ops that run a block (``moe`` checks its experts). Set by the
  elaborator and the verifier; None elsewhere (a pass re-typing a graph: the experts were checked already).
* ``bounds()``: the model's dimension bounds ``{sym: (bound, span)}`` from ``where T <= ctx``. Set by the elaborator
  and by the passes (re-inferring shapes); None elsewhere (e.g. the verifier: lengths were checked when elaborated).
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

from ..diagnostics import Note
from ..symbolic import Dim, base_symbols, is_monotone, largest_within

_GRAPHS: contextvars.ContextVar[dict] = contextvars.ContextVar("specc_graphs")
_BOUNDS: contextvars.ContextVar[dict] = contextvars.ContextVar("specc_bounds")
_NEEDS: contextvars.ContextVar[list] = contextvars.ContextVar("specc_needs")


def graphs() -> dict | None:
    """The module's graphs by name; None outside the elaborator and the verifier."""
    return _GRAPHS.get(None)


def bounds() -> dict | None:
    """The model's dimension bounds {sym: (bound, span)}; None when no model is being elaborated or rewritten."""
    return _BOUNDS.get(None)


@contextlib.contextmanager
def shape_context(*, graphs: dict | None = None, bounds: dict | None = None) -> Iterator[None]:
    """Let the shape rules run inside read `graphs` and/or `bounds` (those given; the others stay as they are)."""
    tokens = []
    if graphs is not None:
        tokens.append((_GRAPHS, _GRAPHS.set(graphs)))
    if bounds is not None:
        tokens.append((_BOUNDS, _BOUNDS.set(bounds)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def upper_bound(d: Dim) -> tuple[int | None, list[Note]]:
    """The largest value dim `d` can take under the model's `where` bounds (None if unbounded), and the bounds
    used. Sound for dims that never decrease as their symbols grow: T, T + 1, 2*T, and what conv, pool and reshape
    make of them, e.g. (T - 1)//2 + 1 after a stride-2 convolution."""
    if isinstance(d, int):
        return d, []
    known = bounds() or {}
    syms = base_symbols(d)
    if not is_monotone(d) or not all(s in known for s in syms):
        return None, []
    env = {s: known[s][0] for s in syms}
    notes = [Note(known[s][1], f"{s} is bounded here: {s} <= {known[s][0]}") for s in sorted(env)]
    value = d.subs(env)
    return (value if isinstance(value, int) else None), notes


def bound_hint(d: Dim, limit: int) -> str:
    """A `where` clause that makes `d <= limit` hold, as spec text a user can paste into the input line."""
    known = bounds() or {}
    free = sorted(s for s in base_symbols(d) if s not in known)
    if len(free) == 1 and is_monotone(d):
        env = {s: b for s, (b, _) in known.items()}
        largest = largest_within(d, free[0], env, limit)
        if largest is not None:
            return f"bound it in the input, e.g. `where {free[0]} <= {largest}`"
    return f"bound {', '.join(free) or 'its symbols'} in the input with `where NAME <= n`"


def need(d, least: int) -> None:
    """A shape rule's note that symbolic dim `d` must be at least `least` at run time (x[8] on a dim of size B needs
    B >= 9); the elaborator turns these into the model's smallest sizes (elaborate/minimums.py)."""
    found = _NEEDS.get(None)
    if found is not None and not isinstance(d, int):
        found.append((d, least))


@contextlib.contextmanager
def collect_needs() -> Iterator[list]:
    """Gather the `need`s of the shape rules run inside, as (dim, least)."""
    found: list = []
    token = _NEEDS.set(found)
    try:
        yield found
    finally:
        _NEEDS.reset(token)
