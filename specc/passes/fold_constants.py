"""Constant folding of hyper-parameter arithmetic and static shapes.

Local rewrites in one table (op -> rule), run to a fixpoint. A rule returns the name of a value the node equals
(its users then read that value) or a simpler node that replaces it:

    reshape/flatten/slice to the shape it already has, identity permute/transpose, concat of one tensor,
    keepdim reductions over size-1 dims, identity, x + 0, x - 0, x * 1, x / 1, x ** 1, -(-x)    -> x
    (x * a) * b -> x * (a*b), (x / a) / b -> x / (a*b), (x + a) + b -> x + (a+b), (x - a) - b -> x - (a+b)
    reshape(reshape(x)) -> reshape(x), transpose(transpose(x, i, j), i, j) -> x
    dropout(p=0) -> x; any dropout -> x when the pipeline may assume eval mode (PipelineOptions.inference)
"""
from __future__ import annotations

from typing import Callable

from ..hyper import driven
from ..ir import Module, Node
from ..ops import registry
from .pipeline import Pass, PassResult, PipelineOptions
from .rewrite import Editor, Log, map_graphs, origins

Rule = Callable[[Editor, Node, PipelineOptions], "str | Node | None"]


def _same_type(ed: Editor, n: Node, opts) -> str | None:
    x = n.inputs[0]
    return x if len(n.inputs) == 1 and ed[x].type == n.type else None


def _only_user(ed: Editor, value: str, n: Node) -> bool:
    u = ed.sole_user(value)
    return u is not None and u.name == n.name


def _scalar(n: Node):
    a = n.attrs
    return a.scalar if len(n.inputs) == 1 and not a.reverse else None


def _binary(unit: float):
    def rule(ed: Editor, n: Node, opts) -> str | Node | None:
        s = _scalar(n)
        if s is None:
            return None
        x = n.inputs[0]
        if s == unit and ed[x].type == n.type:
            return x
        inner = ed.op(x, n.target)
        if inner is not None and _scalar(inner) is not None and _only_user(ed, x, n):
            combine = (lambda a, b: a * b) if n.target in ("mul", "div") else (lambda a, b: a + b)
            return n.model_copy(update={"inputs": inner.inputs,
                                        "attrs": n.attrs.model_copy(update={"scalar": combine(inner.attrs.scalar, s)}),
                                        "origin": origins([inner, n])})
        return None
    return rule


def _pow(ed: Editor, n: Node, opts) -> str | None:
    return n.inputs[0] if _scalar(n) == 1 and ed[n.inputs[0]].type == n.type else None


def _neg(ed: Editor, n: Node, opts) -> str | None:
    inner = ed.op(n.inputs[0], "neg")
    return inner.inputs[0] if inner is not None else None


def _reshape(ed: Editor, n: Node, opts) -> str | Node | None:
    same = _same_type(ed, n, opts)
    if same:
        return same
    inner = ed.op(n.inputs[0], "reshape", "flatten")
    if inner is not None and _only_user(ed, inner.name, n):
        return n.model_copy(update={"inputs": inner.inputs, "origin": origins([inner, n])})
    return None


def _permute(ed: Editor, n: Node, opts) -> str | None:
    rank = len(n.attrs.dims)
    return n.inputs[0] if [d % rank for d in n.attrs.dims] == list(range(rank)) else None


def _transpose(ed: Editor, n: Node, opts) -> str | None:
    rank = ed[n.inputs[0]].type.rank
    pair = {n.attrs.dim0 % rank, n.attrs.dim1 % rank}
    if len(pair) == 1:
        return n.inputs[0]
    inner = ed.op(n.inputs[0], "transpose")
    if inner is not None and {inner.attrs.dim0 % rank, inner.attrs.dim1 % rank} == pair:
        return inner.inputs[0]
    return None


def _reduce(ed: Editor, n: Node, opts) -> str | None:
    return _same_type(ed, n, opts) if n.attrs.keepdim else None


def _dropout(ed: Editor, n: Node, opts: PipelineOptions) -> str | None:
    # a dropout whose p is a hyper-parameter stays: the emitted module takes p from its config
    return n.inputs[0] if (n.attrs.p == 0 and not driven(n.attrs.p)) or opts.inference else None


RULES: dict[str, Rule] = {
    "identity": lambda ed, n, opts: n.inputs[0],
    "dropout": _dropout,
    "reshape": _reshape,
    "flatten": _same_type,
    "slice": _same_type,
    "concat": _same_type,
    "permute": _permute,
    "transpose": _transpose,
    "mean": _reduce,
    "sum": _reduce,
    "amax": _reduce,
    "add": _binary(0),
    "sub": _binary(0),
    "mul": _binary(1),
    "div": _binary(1),
    "pow": _pow,
    "neg": _neg,
}

def _why(n: Node) -> str:
    if n.target == "dropout":
        return "dropout with p=0" if n.attrs.p == 0 else "dropout is the identity in eval mode"
    return "no-op"


def _fold(opts: PipelineOptions):
    def fold(ed: Editor, log: Log) -> None:
        progress = True
        while progress:
            progress = False
            for name in list(ed.order):
                n = ed.rec.get(name)
                if n is None or n.kind != "op" or n.target not in RULES:
                    continue
                res = RULES[n.target](ed, n, opts)
                if res is None:
                    continue
                if isinstance(res, str):
                    ed.replace_uses(name, res)
                    ed.remove(name)
                    log.did(ed, f"%{name} ({n.target}) is %{res}: {_why(n)}")
                else:
                    ed.set(res)
                    log.did(ed, f"%{name} ({n.target}) folded with its operand: {_describe(res)}")
                for dead in ed.drop_dead(n.inputs):  # what only the folded node read
                    log.did(ed, f"removed %{dead}: nothing reads it any more")
                progress = True
        if not opts.inference:
            for n in ed.nodes():
                if n.kind == "op" and n.target == "dropout" and n.attrs.p > 0:
                    log.skip(ed, f"kept %{n.name} (dropout p={n.attrs.p}): the module may be trained "
                                 "(PipelineOptions(inference=True) / --inference drops it)")
    return fold


def _describe(n: Node) -> str:
    from ..printer import attrs_dict

    a = attrs_dict(n)
    return f"{n.target}(" + ", ".join(f"%{i}" for i in n.inputs) + ")" + (f" {a}" if a else "")


def run(m: Module, opts: PipelineOptions) -> PassResult:
    registry.all_ops()
    out, log = map_graphs(m, _fold(opts))
    return PassResult(out, log.changed, log.skipped)


PASS = Pass("fold_constants", run, level=1, doc=__doc__.splitlines()[0])
