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
