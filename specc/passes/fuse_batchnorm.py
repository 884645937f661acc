"""Batchnorm folded into the conv/linear before it: conv -> batchnorm becomes one `fused` node.

The fused node keeps both layers (same names, same state_dict). Its emitted call, `fused_layer(x, conv, bn, ...)`,
runs conv then bn while training (batch statistics, running-stat updates: exactly as before) and, in eval mode,
one conv with the folded weights w * s, (b - mean) * s + beta, s = gamma / sqrt(running_var + eps): the same
function up to float rounding (~1e-7 relative), with one pass over the activations fewer."""
from __future__ import annotations

from ..ir import Module, Node
from ..ops.fused import BASES, FusedAttrs
from ..printer import attrs_dict
from .pipeline import Pass, PassResult, PipelineOptions
from .rewrite import Editor, Log, make_op, map_graphs


def why_not(ed: Editor, layer: Node, bn: Node) -> str | None:
    """None if `bn` can fold into `layer`; else the reason it cannot."""
    if layer.layer is not None or getattr(layer.attrs, "tie", None):
        return f"%{layer.name} is a shared or tied layer: folding would change its other uses"
    if bn.layer is not None:
        return f"%{bn.name} is a shared layer"
    users = ed.users(layer.name)
    if len(users) != 1:
        others = ", ".join(f"%{u.name}" for u in users if u.name != bn.name)
        return f"%{layer.name}'s output is also read by {others}: it must stay un-normalised"
    if layer.target == "linear" and ed[bn.name].type.rank != 2:
        return f"%{layer.name} is a linear on {ed[layer.inputs[0]].type}: batchnorm normalises dim 1, not its features"
    return None


def _fold(ed: Editor, log: Log) -> None:
    for bn in ed.nodes():
        if bn.kind != "op" or bn.target != "batchnorm" or bn.name not in ed:
            continue
        layer = ed.op(bn.inputs[0])
        if layer is None or layer.target not in BASES:
            what = ed[bn.inputs[0]]
            log.skip(ed, f"%{bn.name} (batchnorm) follows %{what.name} ({what.target or what.kind}), not a conv/linear")
            continue
        reason = why_not(ed, layer, bn)
        if reason:
            log.skip(ed, f"%{layer.name} + %{bn.name} not folded: {reason}")
            continue
        attrs = FusedAttrs(base=layer.target, layer=layer.name, base_attrs=tuple(attrs_dict(layer).items()),
                           bn=bn.name, bn_attrs=tuple(attrs_dict(bn).items()))
        node = make_op(ed, layer.name, "fused", layer.inputs, attrs, [layer, bn])
        ed.replace(bn.name, node, [layer.name])
        log.did(ed, f"%{layer.name} ({layer.target}) + %{bn.name} (batchnorm) -> fused %{node.name}")


def run(m: Module, opts: PipelineOptions) -> PassResult:
    out, log = map_graphs(m, _fold)
    return PassResult(out, log.changed, log.skipped)


PASS = Pass("fuse_batchnorm", run, level=1, doc=__doc__.splitlines()[0], keeps_modules=False)
