"""Hand-written attention recognised as one `sdpa` node (emitted as F.scaled_dot_product_attention).

    s = matmul(q, transpose(k, -2, -1))        or permute(k, ...) swapping the last two dims; q may be pre-scaled
    s = s * c  |  s / c                        optional; scale = c or 1/c (default 1/sqrt(d) is left implicit)
    s = s + mask                               optional additive mask, broadcast to the scores
    p = softmax(s, -1) [-> dropout(p)]         over the key axis
    out = matmul(p, v)                         => sdpa(q, k, v[, mask]) {scale, dropout}

Every intermediate value must be read only inside the pattern (else it is still needed) and the result must type
as the matmul did; a candidate that fails says why in the pass report."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..diagnostics import ShapeError
from ..ir import Module, Node
from ..ops import registry
from ..types import FLOAT_DTYPES
from .pipeline import Pass, PassResult, PipelineOptions
from .rewrite import Editor, Log, make_op, map_graphs, rewrite_matches


@dataclass
class Match:
    q: str
    k: str | None  # None: k is made by a new transpose/permute (`k_node`)
    v: str
    mask: str | None = None
    scale: float = 1.0
    dropout: float = 0.0
    interior: list[str] = field(default_factory=list)
    k_node: Node | None = None


def _scalar(n: Node | None) -> float | None:
    if n is None or n.target not in ("mul", "div") or len(n.inputs) != 1 or n.attrs.scalar is None:
        return None
    if n.target == "mul":
        return float(n.attrs.scalar)
    if n.target == "div" and not n.attrs.reverse:
        return 1.0 / float(n.attrs.scalar)
    return None


def _last_axis(dim: int, rank: int) -> bool:
    return dim % rank == rank - 1


def match(ed: Editor, root: Node) -> Match | str | None:
    """The attention pattern ending at matmul `root`: a Match, a reason it is a near miss (str), or None."""
    p_name, v = root.inputs
    p = ed.op(p_name, "softmax", "dropout")
    if p is None:
        return None
    interior = [p.name]
    dropout = 0.0
    if p.target == "dropout":
        dropout = p.attrs.p
        p = ed.op(p.inputs[0], "softmax")
        if p is None:
            return None
        interior.append(p.name)
    rank = p.type.rank
    if not _last_axis(p.attrs.dim, rank):
        return f"softmax %{p.name} is over dim {p.attrs.dim}, not the key axis (-1)"
    s = ed[p.inputs[0]]
    mask = None
    if s.kind == "op" and s.target == "add" and len(s.inputs) == 2:
        interior.append(s.name)
        a, b = (ed[i] for i in s.inputs)
        scores, mask = (a, b.name) if _is_scores(ed, a) else (b, a.name)
        if ed[mask].type.dtype not in FLOAT_DTYPES:  # sdpa reads a bool mask as "may attend", not as a number
            return f"the scores add %{mask}, a {ed[mask].type.dtype} tensor, not an additive float mask"
        s = scores
    scale = 1.0
    c = _scalar(s if s.kind == "op" else None)
    if c is not None:
        interior.append(s.name)
        scale = c
        s = ed[s.inputs[0]]
    if s.kind != "op" or s.target != "matmul":
        return f"softmax %{p.name} does not read q @ k^T (it reads %{s.name}, {s.target or s.kind})" \
            if s.kind == "op" and s.target in ("add", "mul", "div", "matmul") else None
    interior.append(s.name)
    q, kt = s.inputs
    pre = ed.op(q, "mul", "div")
    c = _scalar(pre)
    if c is not None and ed.sole_user(q) is not None:
        interior.append(pre.name)
        scale *= c
        q = pre.inputs[0]
    m = Match(q=q, k=None, v=v, mask=mask, scale=scale, dropout=dropout, interior=interior)
    return _key(ed, m, kt)


def _is_scores(ed: Editor, n: Node) -> bool:
    """Does `n` look like scaled q @ k^T (so the other add operand is the mask)?"""
    c = _scalar(n) if n.kind == "op" and n.target in ("mul", "div") else None
    return (c is not None and ed.op(n.inputs[0], "matmul") is not None) or (n.kind == "op" and n.target == "matmul")


def _key(ed: Editor, m: Match, kt: str) -> Match | str:
    """Find k from k^T: the input of a transpose of the last two dims, else a new transpose/permute node."""
    t = ed[kt]
    rank = t.type.rank
    if rank < 2:
        return f"%{kt} is not a matrix"
    last_two = {rank - 2, rank - 1}
    private = ed.sole_user(kt) is not None
    if t.kind == "op" and t.target == "transpose" and {t.attrs.dim0 % rank, t.attrs.dim1 % rank} == last_two:
        m.k = t.inputs[0]
        if private:
            m.interior.append(kt)
        return m
    if t.kind == "op" and t.target == "permute" and private:
        dims = [d % rank for d in t.attrs.dims]
        dims[-2], dims[-1] = dims[-1], dims[-2]
        m.interior.append(kt)
        if dims == list(range(rank)):
            m.k = t.inputs[0]
        else:
            m.k_node = t.model_copy(update={"attrs": t.attrs.model_copy(update={"dims": tuple(dims)})})
        return m
    return f"the keys operand %{kt} is not a transpose of the last two dims"


def _fuse(ed: Editor, log: Log) -> None:
    rewrite_matches(ed, log, ("matmul",), match, lambda m: m.interior, _rewrite, "attention at %{root} not fused")


def _rewrite(ed: Editor, root: Node, m: Match, log: Log) -> None:
    replaced = [ed[i] for i in m.interior] + [root]
    k = m.k
    if m.k_node is not None:  # k = the permute that makes k^T with its last two dims swapped back
        kt = m.k_node.name
        k = ed.fresh(f"{kt}_k")
    d = ed[m.q].type.shape[-1]
    scale = None if isinstance(d, int) and math.isclose(m.scale, 1 / math.sqrt(d), rel_tol=1e-12) else m.scale
    attrs = registry.get("sdpa").attrs(causal=False, scale=scale, dropout=m.dropout)
    inputs = (m.q, k, m.v) + ((m.mask,) if m.mask else ())
    try:
        if m.k_node is not None:
            kn = m.k_node
            ed.insert_before(root.name, make_op(ed, k, kn.target, kn.inputs, kn.attrs, [], span=kn.span))
        node = make_op(ed, root.name, "sdpa", inputs, attrs, replaced, span=root.span)
    except ShapeError as e:
        if m.k_node is not None:
            ed.remove(k)
        log.skip(ed, f"attention at %{root.name} not fused: {e}")
        return
    if node.type != root.type:
        if m.k_node is not None:
            ed.remove(k)
        log.skip(ed, f"attention at %{root.name} not fused: sdpa would give {node.type}, the pattern {root.type}")
        return
    ed.replace(root.name, node, m.interior)
    what = f"scale={scale}" if scale is not None else "default scale"
    what += f", mask %{m.mask}" if m.mask else ""
    what += f", dropout {m.dropout}" if m.dropout else ""
    log.did(ed, f"{len(replaced)} nodes (matmul/softmax/...) at %{root.name} -> sdpa(%{m.q}, %{k}, %{m.v}) ({what})")


def run(m: Module, opts: PipelineOptions) -> PassResult:
    out, log = map_graphs(m, _fuse)
    return PassResult(out, log.changed, log.skipped)


PASS = Pass("fuse_attention", run, level=1, doc=__doc__.splitlines()[0])
