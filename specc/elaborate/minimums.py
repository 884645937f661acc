"""The smallest size each symbolic dim may take: a window (conv, pool, unfold) over a dim of size `T` leaves
`(T - 8)//8 + 1` positions, which is 0 for T < 8. Found here, from the shapes the checker inferred, so that a bound
that rules every size out is an error at check time, and so that the emitted forward refuses a too-short input with
the spec's words instead of PyTorch's "Output size is too small" from deep inside."""
from __future__ import annotations

from ..ir import Graph
from ..source import Span
from ..symbolic import Sym, base_symbols, is_monotone, smallest_reaching
from ..types import TensorType

Minimum = tuple[int, "Span | None", str]  # (smallest size, the node that needs it, that node's op)


def size_minimums(graphs: dict[str, Graph], needs: list = ()) -> dict[str, Minimum]:
    """For each symbol, the smallest size for which every dim built from it alone is at least 1, and every
    (dim, least, span, op) a shape rule asked for (an index or a slice into a symbolic dim) holds."""
    out: dict[str, Minimum] = {}
    for d, least, span, op in needs:
        syms = base_symbols(d)
        if len(syms) == 1 and is_monotone(d):
            (sym,) = syms
            v = smallest_reaching(d, sym, least)
            if v is not None and v > 1 and v > out.get(sym, (1,))[0]:
                out[sym] = (v, span, op)
    seen: set[Sym] = set()
    for g in graphs.values():
        for node in g.nodes():
            t = node.type
            for item in getattr(t, "items", None) or (t,):
                if not isinstance(item, TensorType):
                    continue
                for d in item.shape:
                    if not isinstance(d, Sym) or d in seen:
                        continue
                    seen.add(d)
                    syms = base_symbols(d)
                    if len(syms) != 1 or not is_monotone(d):
                        continue
                    (sym,) = syms
                    least = smallest_reaching(d, sym)
                    if least is not None and least > 1 and least > out.get(sym, (1,))[0]:
                        out[sym] = (least, node.span, node.target or node.kind)
    return out
