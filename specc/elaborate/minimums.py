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
    for d, least, span, op in [*needs, *_inferred_dims(graphs)]:
        syms = base_symbols(d)
        if len(syms) == 1 and is_monotone(d):
            (sym,) = syms
            v = smallest_reaching(d, sym, least)
            if v is not None and v > 1 and v > out.get(sym, (1,))[0]:
                out[sym] = (v, span, op)
    return out


def _inferred_dims(graphs: dict[str, Graph]):
    """(dim, 1, span, op) for each distinct symbolic dim of the nodes' types: every dim must be at least 1."""
    seen: set[Sym] = set()
    for g in graphs.values():
        for node in g.nodes():
            for item in getattr(node.type, "items", None) or (node.type,):
                if not isinstance(item, TensorType):
                    continue
                for d in item.shape:
                    if isinstance(d, Sym) and d not in seen:
                        seen.add(d)
                        yield d, 1, node.span, node.target or node.kind
