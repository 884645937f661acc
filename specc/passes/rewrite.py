"""Shared machinery of the passes (not a pass itself): a working copy of one graph that a pass edits, and the
helpers every pass uses to return a new, re-typed module.

A pass never touches the Module it was given: it opens an `Editor` per graph (a copy of the node records and their
order), rewrites there, and `build()`s a fresh Graph. Node order is kept: a node that replaces a pattern takes the
place of the pattern's last node (its root), which is always after every input of the pattern.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Collection, Iterable

from ..ir import Graph, Module, Node
from ..ops import context, registry
from ..source import Span
from ..types import TupleType


class Editor:
    """A mutable copy of one graph: node records by name, their order, and use lists."""

    def __init__(self, g: Graph) -> None:
        self.src = g
        self.order: list[str] = [n.name for n in g.nodes()]
        self.rec: dict[str, Node] = {}
        self.uses: dict[str, set[str]] = {}  # value -> nodes reading it: users() without a scan of the graph
        for n in g.nodes():
            self._put(n)
        self.changed = False

    def _put(self, node: Node) -> None:
        old = self.rec.get(node.name)
        if old is not None:
            for i in old.inputs:
                self.uses.get(i, set()).discard(node.name)
        self.rec[node.name] = node
        for i in node.inputs:
            self.uses.setdefault(i, set()).add(node.name)

    def _drop(self, name: str) -> None:
        for i in self.rec.pop(name).inputs:
            self.uses.get(i, set()).discard(name)

    # -- reading ---------------------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Node:
        return self.rec[name]

    def __contains__(self, name: str) -> bool:
        return name in self.rec

    def nodes(self) -> list[Node]:
        return [self.rec[n] for n in self.order]

    def users(self, name: str) -> list[Node]:
        """Nodes reading `name`, in graph order (a node reading it twice is listed once)."""
        names = self.uses.get(name, ())
        if len(names) > 1:
            names = sorted(names, key=self.order.index)
        return [self.rec[n] for n in names]

    def sole_user(self, name: str) -> Node | None:
        us = self.users(name)
        return us[0] if len(us) == 1 and us[0].inputs.count(name) == 1 else None

    def is_output(self, name: str) -> bool:
        return any(u.kind == "output" for u in self.users(name))

    def op(self, name: str, *targets: str) -> Node | None:
        """The node `name` if it is an op with one of `targets` (any op if none given)."""
        n = self.rec.get(name)
        if n is None or n.kind != "op" or (targets and n.target not in targets):
            return None
        return n

    def pos(self, name: str) -> int:
        return self.order.index(name)

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.rec:
            name = f"{base}_{k}"
            k += 1
        return name

    # -- editing ---------------------------------------------------------------------------------------------
    def insert_before(self, anchor: str, node: Node) -> Node:
        assert node.name not in self.rec, node.name
        self._put(node)
        self.order.insert(self.pos(anchor), node.name)
        self.changed = True
        return node

    def set(self, node: Node) -> None:
        """Replace the record of an existing node (same name; inputs may change)."""
        assert node.name in self.rec, node.name
        self._put(node)
        self.changed = True

    def replace_uses(self, old: str, new: str) -> None:
        for u in self.users(old):
            self._put(u.model_copy(update={"inputs": tuple(new if i == old else i for i in u.inputs)}))
        self.changed = True

    def remove(self, name: str) -> None:
        assert not self.users(name), f"%{name} still has users"
        self._drop(name)
        self.order.remove(name)
        self.changed = True

    def replace(self, root: str, node: Node, interior: Iterable[str] = ()) -> Node:
        """Put `node` where the pattern's `root` was: root's users read node instead, and root and the pattern's
        `interior` nodes go away. Interior values must be read only inside the pattern (see `closed`)."""
        pattern = {root, *interior}
        outside = [f"%{p} is read by %{u.name}" for p in interior for u in self.users(p) if u.name not in pattern]
        assert not outside, f"pattern at %{root} is not closed: {', '.join(outside)}"
        users = [u.name for u in self.users(root)]
        at = self.pos(root) - sum(1 for p in interior if self.pos(p) < self.pos(root))
        for p in pattern:
            self._drop(p)
            self.order.remove(p)
        self._put(node)
        self.order.insert(at, node.name)
        for u in users:
            r = self.rec[u]
            self._put(r.model_copy(update={"inputs": tuple(node.name if i == root else i for i in r.inputs)}))
        self.changed = True
        return node

    def closed(self, root: str, interior: Iterable[str]) -> str | None:
        """None if only the pattern reads its interior values; else why not (for a near-miss report)."""
        pattern = {root, *interior}
        for p in interior:
            for u in self.users(p):
                if u.name not in pattern:
                    return f"%{p} is also read by %{u.name}" if u.kind != "output" else f"%{p} is a graph output"
        return None

    def drop_dead(self, names: Iterable[str]) -> list[str]:
        """Remove each pure op among `names` that nobody reads any more, and then its operands if that frees them;
        return what was removed."""
        pending = [n for n in names if n in self.rec]
        removed = []
        while pending:
            n = pending.pop()
            r = self.rec.get(n)
            if r is not None and is_pure(r) and not self.users(n):
                self.remove(n)
                removed.append(n)
                pending.extend(r.inputs)
        return removed

    def build(self) -> Graph:
        g = Graph(name=self.src.name, block=self.src.block, hparams=dict(self.src.hparams), span=self.src.span,
                  lets=dict(self.src.lets))
        for name in self.order:
            g.add(self.rec[name])
        return g


# ---- building nodes -------------------------------------------------------------------------------------------

def make_op(ed: Editor, name: str, target: str, inputs: tuple[str, ...], attrs, replaced: Iterable[Node],
            span: Span | None = None) -> Node:
    """A new op node, typed by its shape rule, remembering the spans of the nodes it replaces (Node.origin)."""
    op = registry.get(target)
    ty = op.infer([ed[i].type for i in inputs], attrs)
    replaced = list(replaced)
    return Node(name=name, kind="op", target=target, inputs=inputs, attrs=attrs, type=ty,
                span=span or (replaced[0].span if replaced else None), origin=origins(replaced),
                var=next((n.var for n in reversed(replaced) if n.var), None),  # the value the spec named
                init=_carried_init(op.param_shapes([ed[i].type for i in inputs], attrs), replaced))


def _carried_init(params: dict, replaced: list[Node]) -> tuple:
    """The declared initialisation of the layers a fused op absorbs, under the fused op's parameter names
    (`conv1.weight`), so -O2 starts like -O0."""
    found = {}
    for n in replaced:
        for p, init in n.init:
            found[p if p in params else f"{n.layer or n.name}.{p}"] = init
    return tuple((p, found[p]) for p in params if p in found)


def origins(nodes: Iterable[Node]) -> tuple[Span, ...]:
    """Every source span of `nodes` (and of what they themselves replaced), deduplicated, in source order."""
    seen: list[Span] = []
    for n in nodes:
        for s in (*n.origin, n.span):
            if s is not None and s not in seen:
                seen.append(s)
    return tuple(sorted(seen))


# ---- module-level helpers -------------------------------------------------------------------------------------

@dataclass
class Log:
    """What a pass did (`changed`) and which candidates it looked at and left alone, with why (`skipped`)."""

    changed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def did(self, g: Graph | Editor, msg: str) -> None:
        self.changed.append(f"{_gname(g)}: {msg}")

    def skip(self, g: Graph | Editor, msg: str) -> None:
        line = f"{_gname(g)}: {msg}"
        if line not in self.skipped:
            self.skipped.append(line)


def _gname(g) -> str:
    return g.src.name if isinstance(g, Editor) else g.name


def shape_context(m: Module) -> contextlib.AbstractContextManager:
    """Shape rules may read the model's dim bounds (`T <= ctx`), as during elaboration."""
    return context.shape_context(bounds=m.constraints)


def map_graphs(m: Module, fn: Callable[[Editor, Log], None], log: Log | None = None) -> tuple[Module, Log]:
    """Run `fn` on an editor of every graph; return a new, re-typed module (unchanged graphs are shared: they
    are never mutated, by this or any pass)."""
    log = log or Log()
    graphs: dict[str, Graph] = {}
    any_change = False
    with shape_context(m):
        for name, g in m.graphs.items():
            ed = Editor(g)
            fn(ed, log)
            graphs[name] = ed.build() if ed.changed else g
            any_change |= ed.changed
    if not any_change:
        return m, log
    return retype(with_graphs(m, graphs)), log


def with_graphs(m: Module, graphs: dict[str, Graph]) -> Module:
    return Module(name=m.name, graphs=graphs, main=m.main, hparams=m.hparams, constraints=m.constraints,
                  train=m.train, path=m.path)


# ---- type re-inference ----------------------------------------------------------------------------------------

def node_type(m: Module, g: Graph | Editor, n: Node, graphs: dict[str, Graph]):
    """The type `n` has given its operands' current types (inputs keep theirs: they are the specialisation key)."""
    if n.kind == "input":
        return n.type
    if n.kind == "output":
        return g[n.inputs[0]].type
    if n.kind == "op":
        return registry.get(n.target).infer([g[i].type for i in n.inputs], n.attrs)
    callee = graphs[n.target]
    outs = callee.output_types()
    return outs[0] if len(outs) == 1 else TupleType(tuple(outs))


def retype(m: Module, log: Log | None = None) -> Module:
    """Re-run every shape rule, callees first; return a new module if some type changed (`log` says which)."""
    graphs: dict[str, Graph] = {}
    any_change = False
    with shape_context(m):
        for name, g in m.graphs.items():
            ed = Editor(g)
            for n in ed.nodes():
                t = node_type(m, ed, n, graphs)
                if t != n.type:
                    if log is not None:
                        log.did(g, f"%{n.name}: type {n.type} -> {t}")
                    ed.set(n.model_copy(update={"type": t}))
            graphs[name] = ed.build() if ed.changed else g
            any_change |= ed.changed
    return with_graphs(m, graphs) if any_change else m


def rewrite_matches(ed: Editor, log: Log, targets: Collection[str], match: Callable, interior: Callable,
                    rewrite: Callable, near_miss: str) -> None:
    """The driver shared by the pattern passes. For each op whose target is in `targets`, `match(ed, root)` gives
    None (not a candidate), a reason (a near miss, logged as `near_miss.format(root=...)` + reason) or a match;
    a match whose `interior(match)` nodes are read from outside is a near miss too; otherwise
    `rewrite(ed, root, match, log)` replaces it."""
    for root in ed.nodes():
        if root.name not in ed or root.kind != "op" or root.target not in targets:
            continue
        m = match(ed, root)
        if m is None:
            continue
        why = m if isinstance(m, str) else ed.closed(root.name, interior(m))
        if why:
            log.skip(ed, f"{near_miss.format(root=root.name)}: {why}")
            continue
        rewrite(ed, root, m, log)


def is_pure(n: Node) -> bool:
    """An op without parameters or randomness: removing or merging it cannot change the state_dict or a draw."""
    if n.kind != "op":
        return False
    op = registry.get(n.target)
    random = n.target in IMPURE or (getattr(n.attrs, "dropout", 0) or 0) > 0  # e.g. sdpa with dropout
    return registry.LAYER not in op.categories and not random


IMPURE = {"dropout"}  # random draws in training mode
