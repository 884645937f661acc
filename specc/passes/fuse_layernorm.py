"""A layernorm written out by hand recognised as one `layernorm` node (without weight and bias: it has none).

    mu = mean(x, -1, keepdim)   d = x - mu
    v  = var(x, -1, keepdim) | var(d, ...) | mean(d ** 2, ...) | mean(d * d, ...)
    y  = d / sqrt(v + eps)  |  d * rsqrt(v + eps)                 =>  layernorm(x) {eps, affine: False}

Run after cse, so that `x - mean(x)` written twice is one node. Every intermediate value must be read only inside
the pattern; reductions must be over the last dim with keepdim (what layernorm normalises)."""
from __future__ import annotations

from ..ir import Module, Node
from ..ops import registry
from .pipeline import Pass, PassResult, PipelineOptions
from .rewrite import Editor, Log, make_op, map_graphs, rewrite_matches


def _over_last(n: Node, rank: int) -> bool:
    dim = n.attrs.dim
    dims = dim if isinstance(dim, tuple) else (dim,)
    return n.attrs.keepdim and len(dims) == 1 and dims[0] % rank == rank - 1


def _scalar(n: Node | None, target: str) -> float | None:
    if n is None or n.target != target or len(n.inputs) != 1 or n.attrs.scalar is None:
        return None
    return float(n.attrs.scalar)


def match(ed: Editor, root: Node) -> tuple[str, float, list[str]] | str | None:
    """(x, eps, interior) for the pattern ending at `root`, a near-miss reason, or None."""
    if root.target == "div" and len(root.inputs) == 2:
        d, s = root.inputs
        inv = ed.op(s, "sqrt")
    elif root.target == "mul" and len(root.inputs) == 2:
        a, b = root.inputs
        d, s = (a, b) if ed.op(b, "rsqrt") else (b, a)
        inv = ed.op(s, "rsqrt")
    else:
        return None
    sub = ed.op(d, "sub")
    if inv is None or sub is None or len(sub.inputs) != 2:
        return None
    x, mu = sub.inputs
    rank = ed[x].type.rank
    mean = ed.op(mu, "mean")
    if mean is None or mean.inputs[0] != x:
        return None
    if not _over_last(mean, rank):
        return f"%{mean.name} is not a keepdim mean over the last dim"
    add = ed.op(inv.inputs[0], "add")
    eps = _scalar(add, "add")
    if eps is None:
        return f"%{inv.name} does not read variance + eps"
    var = ed[add.inputs[0]]
    interior = [sub.name, mean.name, inv.name, add.name, var.name]
    if var.kind == "op" and var.target == "var" and var.inputs[0] in (x, d) and not var.attrs.unbiased:
        pass
    elif var.kind == "op" and var.target == "mean" and (sq := _square_of(ed, var.inputs[0], d)):
        interior.append(sq)
    else:
        return f"%{add.name} adds eps to %{var.name}, which is not the biased variance of %{x}"
    if not _over_last(var, rank):
        return f"%{var.name} is not a keepdim reduction over the last dim"
    return x, eps, interior


def _square_of(ed: Editor, name: str, d: str) -> str | None:
    n = ed.op(name, "pow", "mul")
    if n is None:
        return None
    if n.target == "pow" and n.inputs == (d,) and n.attrs.scalar == 2 and not n.attrs.reverse:
        return name
    if n.target == "mul" and n.inputs == (d, d):
        return name
    return None


def _fuse(ed: Editor, log: Log) -> None:
    rewrite_matches(ed, log, ("div", "mul"), match, lambda m: m[2], _rewrite, "layernorm at %{root} not recognised")


def _rewrite(ed: Editor, root: Node, m: tuple, log: Log) -> None:
    x, eps, interior = m
    attrs = registry.get("layernorm").attrs(eps=eps, affine=False)
    node = make_op(ed, ed.fresh("layernorm"), "layernorm", (x,), attrs, [ed[i] for i in interior] + [root],
                   span=root.span)
    ed.replace(root.name, node, interior)
    log.did(ed, f"{len(interior) + 1} nodes (mean/sub/var/eps/sqrt) at %{root.name} -> layernorm %{node.name}"
                f"(%{x}) eps={eps}")


def run(m: Module, opts: PipelineOptions) -> PassResult:
    out, log = map_graphs(m, _fuse)
    return PassResult(out, log.changed, log.skipped)


PASS = Pass("fuse_layernorm", run, level=1, doc=__doc__.splitlines()[0])
