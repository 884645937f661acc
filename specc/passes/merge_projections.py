"""Sibling projections merged: linears that read the same value (attention's q, k, v) become one `merged_linear`
(one matmul on the concatenated weights) and a getitem per original linear, under the linear's own name.

    q = linear(x) {64}; k = linear(x) {64}; v = linear(x) {64}
      =>  q_k_v = merged_linear(x) {layers: (q, k, v)}; q = getitem(q_k_v) {0}; k = ...; v = ...

Each layer keeps its own parameters (same state_dict). Shared or tied layers are left alone, and only linears
that agree on having a bias are merged together."""
from __future__ import annotations

from ..ir import Module, Node
from ..ops import registry
from .pipeline import Pass, PassResult, PipelineOptions
from .rewrite import Editor, Log, make_op, map_graphs


def _mergeable(n: Node) -> bool:
    return n.kind == "op" and n.target == "linear" and n.layer is None and not n.attrs.tie


def _merge(ed: Editor, log: Log) -> None:
    for x in list(ed.order):
        if x not in ed:
            continue
        linears = [u for u in ed.users(x) if u.kind == "op" and u.target == "linear"]
        if len(linears) < 2:
            continue
        for u in linears:
            if not _mergeable(u):
                log.skip(ed, f"%{u.name} (linear of %{x}) not merged: it is a shared or tied layer")
        ok = [u for u in linears if _mergeable(u)]
        groups = {b: [u for u in ok if u.attrs.bias == b] for b in (True, False)}
        for b, group in groups.items():
            others = groups[not b]
            if len(group) == 1 and others:
                log.skip(ed, f"%{group[0].name} (linear of %{x}) not merged: it has {'a' if b else 'no'} bias, "
                             f"{', '.join('%' + u.name for u in others)} {'do not' if b else 'do'}")
        for group in groups.values():
            if len(group) >= 2:
                _rewrite(ed, x, group, log)


def _rewrite(ed: Editor, x: str, group: list[Node], log: Log) -> None:
    names = tuple(u.name for u in group)
    attrs = registry.get("merged_linear").attrs(layers=names, out_features=tuple(u.attrs.out_features for u in group),
                                                bias=group[0].attrs.bias)
    merged = make_op(ed, ed.fresh("_".join(names)), "merged_linear", (x,), attrs, group)
    ed.insert_before(group[0].name, merged)
    getitem = registry.get("getitem")
    for i, u in enumerate(group):  # each linear becomes item i of the merged value, under the same name
        ed.set(Node(name=u.name, kind="op", target="getitem", inputs=(merged.name,), attrs=getitem.attrs(index=i),
                    type=u.type, span=u.span, var=u.var))
    log.did(ed, f"{len(group)} linears of %{x} ({', '.join('%' + n for n in names)}) -> merged_linear %{merged.name}")


def run(m: Module, opts: PipelineOptions) -> PassResult:
    out, log = map_graphs(m, _merge)
    return PassResult(out, log.changed, log.skipped)


PASS = Pass("merge_projections", run, level=1, doc=__doc__.splitlines()[0], keeps_modules=False)
