"""`repeat N`: the body is elaborated once per distinct input types and folded into runs of one graph."""
from __future__ import annotations

import dataclasses

from .. import ast as A
from ..attrs import short as _short
from ..hyper import HInt, expr_name, render_expr
from ..hyper import names as names_of
from ..ir import Graph, IndexRuns, Node, RepeatAttrs
from ..limits import over_budget
from ..types import ErrorType, TupleType
from .syntax import _assigned_in, _names_read
from .values import (
    MAX_UNROLL,
    POISON,
    GraphBuilder,
    LayerInstance,
    Scope,
    Tensor,
    _freeze,
    _Halt,
    _literal,
)


class RepeatMixin:
    """`repeat N`: the body is elaborated once per distinct input types and folded into runs of one graph."""

    def exec_repeat(self, s: A.Repeat, scope: Scope, b: GraphBuilder) -> None:
        n = self.ev(s.count, scope, b)
        if n is POISON:
            return
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise self.fail("E0107", f"repeat count must be a non-negative int, got {_short(n)}", s.count.span)
        assigned = _assigned_in(s.body)
        read = _names_read(s.body)
        carried = [v for v in sorted(assigned) if isinstance(scope.get(v), Tensor)]
        captured = [v for v in sorted(read - assigned) if isinstance(scope.get(v), Tensor)]
        if any(scope.get(v) is POISON for v in read):
            return
        if not carried:
            raise self.fail("E0108", "this `repeat` changes no tensor defined before it, so it has no effect",
                            s.span, label="nothing carried",
                            help="assign to a tensor from before the loop, e.g. `x = x -> Block(...)`")
        shared = [v for v in sorted(read) if isinstance(scope.get(v), LayerInstance)]
        if shared:
            raise self.fail("E0108", f"layer {shared[0]!r} is declared outside this `repeat`: a repeat body cannot "
                            "share one layer across its iterations", s.span,
                            help=f"declare the layer inside the body, or unroll with `for i in range(...)` to share "
                            f"{shared[0]!r}")
        uses_var = s.var is not None and s.var in read
        if uses_var and n > MAX_UNROLL:
            raise self.fail("E0107", f"repeat {n} as {s.var}: a body that reads {s.var} is elaborated once per "
                            f"iteration, at most {MAX_UNROLL:,}", s.count.span)
        consts = tuple(sorted((k, _freeze(scope[k])) for k in read
                              if k in scope and not isinstance(scope[k], (Tensor, LayerInstance))))
        runs = self.fold_runs(s, n, scope, b, carried, captured, uses_var, consts)
        if runs is None:
            return
        for v in carried:  # re-read the values from before the loop: the types above were only for keys
            scope[v] = Tensor(scope[v].node, b.graph[scope[v].node].type, scope[v].span)
        # `repeat layers`: the count's expression, when one folded run covers every iteration
        exprs = (("count", A.unparse(s.count)),) if len(runs) == 1 and not _literal(s.count) else ()
        folded = self.runs_pins(s, n, runs, len(carried), uses_var, b)
        nodes = []
        for gname, count in runs:
            body = self.graphs[gname]
            attrs = RepeatAttrs(count=count, carried=len(carried))
            if len(runs) == 1 and isinstance(n, HInt):  # `repeat layers`: the count remembers `layers`
                attrs.__dict__["count"] = n
            outs = [body[o].type for o in body.outputs]
            ty = outs[0] if len(outs) == 1 else TupleType(tuple(outs))
            base = s.stack or "layers"
            ref = b.add(Node(name=base if s.stack and b.free(base) else b.fresh(base), kind="repeat", target=gname,
                             inputs=tuple(scope[v].node for v in carried + captured),
                             attrs=attrs, type=ty, span=s.span,
                             exprs=exprs, var=carried[0] if len(carried) == 1 else None,
                             # folded into several runs (`if i == 0`), the iterations stay one named stack h.0, h.1...
                             stack=s.stack if s.stack and len(runs) > 1 else None))
            nodes.append(ref.node)
            if len(carried) == 1:
                scope[carried[0]] = ref
            else:
                for k, v in enumerate(carried):
                    scope[v] = self.getitem(ref, k, b, s.span)
                    b.name_value(scope[v], v)
        if folded is not None:  # the emitted module builds the two runs as one list, chosen per index
            b.graph.index_runs[s.stack] = dataclasses.replace(folded, nodes=(nodes[0], nodes[1]))

    def runs_pins(self, s: A.Repeat, n: int, runs: list[list], carried: int, uses_var: bool,
                  b: GraphBuilder) -> IndexRuns | None:
        """What the folded runs took as given, added to the pins of the graph that holds the loop (the body's own, and
        its `if`s on the index as they held for each run's first iteration); the IndexRuns (nodes to fill in) when
        the emitted code can choose each index's block itself instead: two runs split by one `if` on the index, or a
        first iteration that changes the types followed by a fixpoint."""
        settled: list[tuple[str, str]] = []  # the pins a loop choosing per index makes unnecessary
        if len(runs) > 1 and isinstance(n, HInt) and n.expr is not None:  # folded by the body's `if`s
            settled.append((f"{n.expr} == {int(n)}", f"`repeat {A.unparse(s.count)}` runs {int(n)} times"))
            b.graph.pins.append(settled[-1])
        first = 0
        conds: list[list[str]] = []
        for gname, count in runs:  # what the body took as given holds for the code that holds the loop (same names)
            conds.append([])
            for text, what in self.graphs[gname].pins:
                if (text, what) not in b.graph.pins:
                    b.graph.pins.append((text, what))
            for text, what in self.index_pins.get(gname, ()):  # `i < dense_layers`: as it held for the run's first
                conds[-1].append(text)
                text = render_expr(text, (lambda k, i=first: str(i) if k == s.var else expr_name(k), set()))
                settled.append((text, what))
                if (text, what) not in b.graph.pins:
                    b.graph.pins.append((text, what))
            first += count
        if s.stack and len(runs) == 2 and carried == 1 and not any(g in self.reads_index for g, _ in runs) \
                and len(conds[0]) == 1 and conds[1] == [f"not ({conds[0][0]})"]:
            return IndexRuns(count=n, var=s.var, cond=conds[0][0], nodes=("", ""), pins=tuple(settled))
        if s.stack and len(runs) == 2 and runs[0][1] == 1 and carried == 1 and not uses_var \
                and not any(conds):  # the first iteration changes the types, the rest is a fixpoint (VGG's stage)
            return IndexRuns(count=n, var=s.var or "i", cond=f"{s.var or 'i'} == 0", nodes=("", ""),
                             pins=tuple(settled))
        return None

    def fold_runs(self, s: A.Repeat, n: int, scope: Scope, b: GraphBuilder, carried: list[str], captured: list[str],
                  uses_var: bool, consts: tuple) -> list[list] | None:
        """The body graphs of `repeat n` as runs [graph name, count]: one body per distinct input types (and index,
        when the body reads it), memoised; stops at a fixpoint (the next iteration would see the same types). None
        when the body failed (its errors are reported; the carried names are poisoned)."""
        runs: list[list] = []  # [graph name, count]
        for i in range(n):
            types = tuple(scope[v].type for v in carried + captured)
            if any(isinstance(t, ErrorType) for t in types):
                return None
            # the body is written in the enclosing graph's size names: sizes equal in value but named apart (a
            # stage's input width and its `width`) make different bodies, or code for one config would be reused
            # for another where they differ
            key = ("repeat", s.span, i if uses_var else None, types, _size_exprs(types), consts)
            gname = self.memo.get(key)
            if gname is None:
                gname = self.elaborate_repeat_body(s, scope, carried, captured, i, b.graph.block)
                if gname is None:
                    for v in carried:
                        scope[v] = POISON
                    return None
                self.memo[key] = gname
            if runs and runs[-1][0] == gname:
                runs[-1][1] += 1
            else:
                runs.append([gname, 1])
            body = self.graphs[gname]
            # advance carried types for the next iteration's key
            for v, o in zip(carried, body.outputs):
                scope[v] = Tensor(scope[v].node, body[o].type, scope[v].span)
            after = tuple(scope[v].type for v in carried + captured)
            if not uses_var and after == types and _size_exprs(after) == _size_exprs(types):
                runs[-1][1] += n - 1 - i  # a fixpoint: every later iteration is this same body graph
                break
        return runs

    def elaborate_repeat_body(self, s: A.Repeat, outer: Scope, carried: list[str], captured: list[str], i: int,
                              owner: str) -> str | None:
        base = f"{owner}_layer"
        name = self.unique_graph_name(base, s.span)
        # the body's hyper-parameters are the compile-time values it reads from outside (not its index: bodies
        # that differ only in `i` but are built alike must stay one folded run)
        read = _names_read(s.body) - ({s.var} if s.var else set())
        hp = {k: v for k, v in outer.items() if k in read and isinstance(v, (int, float, bool, str))}
        bb = GraphBuilder(name, base, dict(sorted(hp.items())), s.span)
        scope = Scope({k: v for k, v in outer.items() if not isinstance(v, (Tensor, LayerInstance))})
        for v in carried + captured:
            scope[v] = bb.add(Node(name=v, kind="input", type=outer[v].type, span=outer[v].span))
        if s.var is not None:
            scope[s.var] = i
            bb.index = s.var
        before = len(self.diags)
        try:
            self.exec_body(s.body, scope, bb)
        except _Halt:
            pass
        if len(self.diags) > before:
            return None
        for v in carried:
            val = scope[v]
            if not isinstance(val, Tensor):
                return None
            bb.add(Node(name=bb.fresh(f"{v}_out"), kind="output", inputs=(val.node,), type=val.type, span=s.span))
        # an `if` on the index is the loop's to decide (exec_repeat), not a check of the body's own class
        index_pins = [p for p in bb.graph.pins if s.var is not None and s.var in names_of(p[0])]
        bb.graph.pins = [p for p in bb.graph.pins if p not in index_pins]
        gname = self.finish_graph(bb.graph)
        self.index_pins.setdefault(gname, index_pins)
        if bb.index_read:
            self.reads_index.add(gname)
        return gname

    def unique_graph_name(self, base: str, span=None) -> str:
        self.elaborations += 1  # every block specialisation and repeat body comes through here
        self.tick(span, 10)
        if self.elaborations > self.limits.specializations:
            raise over_budget(self.limits, "specializations", span, f"elaborating {base}")
        n = self.block_counts.get(base, 0)
        self.block_counts[base] = n + 1
        return base if n == 0 else f"{base}_{n}"

    def finish_graph(self, g: Graph) -> str:
        """Register a finished graph, reusing an identical earlier one (so `if i == 0` bodies fold back)."""
        from ..printer import graph_signature

        # sizes named apart are different code even where their values agree (a repeat body reads its enclosing
        # graph's names: `x_channels` in, `width` out is not `width` in, `width` out)
        key = (g.block, graph_signature(g), _size_exprs(tuple(n.type for n in g.nodes())))
        other = self.by_signature.get(key)  # a dict, not a scan: check time stays linear in the number of blocks
        if other is not None:
            return other
        self.graphs[g.name] = g
        self.by_signature[key] = g.name
        return g.name


def _size_exprs(types: tuple) -> tuple:
    """The expressions the static sizes of `types` carry (HInt.expr), which type equality does not compare."""
    out = []
    for t in types:
        for item in t.items if isinstance(t, TupleType) else (t,):
            out.append(tuple(getattr(d, "expr", None) for d in getattr(item, "shape", ())))
    return tuple(out)
