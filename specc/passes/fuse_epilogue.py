"""Conv/linear (+ folded batchnorm) + residual add + activation as one `fused` node with an epilogue.

    conv2d(x) -> [batchnorm] -> add(_, r) -> relu        =>  fused(x, r) {'epilogue': ('add', 'relu')}
    linear(h) -> gelu                                     =>  fused(h) {'epilogue': ('gelu',)}

The layer's output must have no other reader (else the un-activated value is still needed), a residual must have
exactly the layer's output type (no broadcasting), and only activations with a fused form are absorbed. When both
operands of an add are fusable layers, the right one absorbs it (`shortcut + branch`, the residual convention); the
fused node sits where the add was, so every operand is computed before it either way."""
from __future__ import annotations

from ..ir import Module, Node
from ..ops.fused import ACTIVATIONS, BASES, FusedAttrs
from ..printer import attrs_dict
from .pipeline import Pass, PassResult, PipelineOptions
from .rewrite import Editor, Log, make_op, map_graphs


def _step(u: Node) -> str | None:
    """The epilogue step name of activation node `u`, if it has a fused form."""
    if u.target == "gelu":
        return "gelu" if u.attrs.approximate == "none" else "gelu_tanh"
    return ACTIVATIONS.get(u.target)


def _fusable(ed: Editor, n: Node | None) -> bool:
    if n is None or n.kind != "op":
        return False
    if n.target == "fused":
        return True
    return n.target in BASES and n.layer is None and not getattr(n.attrs, "tie", None)


def _as_fused(n: Node) -> FusedAttrs:
    if n.target == "fused":
        return n.attrs
    return FusedAttrs(base=n.target, layer=n.name, base_attrs=tuple(attrs_dict(n).items()))


def _try(ed: Editor, n: Node, log: Log) -> bool:
    users = ed.users(n.name)
    if len(users) != 1:
        if users and any(u.kind == "op" and (_step(u) or u.target == "add") for u in users):
            log.skip(ed, f"%{n.name} not fused with its epilogue: its output has {len(users)} readers")
        return False
    (u,) = users
    if u.kind != "op":
        return False
    residual: tuple[str, ...] = ()
    if u.target == "add":
        if len(u.inputs) != 2 or u.inputs[0] == u.inputs[1]:
            log.skip(ed, f"%{n.name} + %{u.name} not fused: the add is not layer + residual tensor")
            return False
        (r,) = [i for i in u.inputs if i != n.name]
        if u.inputs[0] == n.name and _fusable(ed, ed.op(r)) and ed.sole_user(r) is not None:
            return False  # `x + layer(...)`: the right operand absorbs the add, the left is the residual
        if ed[r].type != n.type or u.type != n.type:
            log.skip(ed, f"%{n.name} + %{u.name} not fused: the residual %{r} is {ed[r].type}, the layer gives "
                         f"{n.type} (broadcasting add)")
            return False
        step, residual = "add", (r,)
    else:
        step = _step(u)
        if step is None:
            if u.target in ("leaky_relu", "dropout", "softmax", "log_softmax"):
                log.skip(ed, f"%{n.name} -> %{u.name} ({u.target}) not fused: no fused form for {u.target}")
            return False
    a = _as_fused(n)
    attrs = a.model_copy(update={"epilogue": (*a.epilogue, step)})
    node = make_op(ed, n.name, "fused", (*n.inputs, *residual), attrs, [n, u])
    ed.replace(u.name, node, [n.name])
    log.did(ed, f"%{n.name} ({n.target}) + %{u.name} ({u.target}) -> fused %{n.name} {attrs.epilogue}")
    return True


def _fuse(m: Module):
    def fuse(ed: Editor, log: Log) -> None:
        progress = True
        while progress:
            progress = False
            for name in list(ed.order):
                n = ed.op(name)
                if _fusable(ed, n) and _try(ed, n, log):
                    progress = True
        _across_blocks(m, ed, log)
    return fuse


def _across_blocks(m: Module, ed: Editor, log: Log) -> None:
    """Report residual adds of a block's result whose last node is a layer: fusion stays inside one graph."""
    for u in ed.nodes():
        if u.kind != "op" or u.target != "add" or len(u.inputs) != 2:
            continue
        for i in u.inputs:
            c = ed[i]
            if c.kind != "call":
                continue
            callee = m.graphs[c.target]
            last = callee[callee[callee.outputs[0]].inputs[0]]
            if len(callee.outputs) == 1 and _fusable(ed, last):
                log.skip(ed, f"%{u.name} adds the result of block %{c.name} ({callee.block}), whose last node "
                             f"%{last.name} is a layer: fusion does not cross block boundaries")


def run(m: Module, opts: PipelineOptions) -> PassResult:
    out, log = map_graphs(m, _fuse(m))
    return PassResult(out, log.changed, log.skipped)


PASS = Pass("fuse_epilogue", run, level=1, doc=__doc__.splitlines()[0], keeps_modules=False)
