"""Top-k mixture of experts. Routing as in specc/ops/moe.py: softmax before (optionally renormalised) or after top-k;
with a capacity factor each expert keeps its first ceil(c * N * k / E) (token, slot) pairs, slot-major (all first
choices first, then token order).

Routed form (the default): each expert runs only on the tokens routed to it, so the experts do N*k rows of work
in all, as in the emitted PyTorch layer (whose per-expert runs are the same rows in the same order):

    pairs p = j*N + t (slot-major)   picks[p, e] = 1 if pair p goes to expert e      [k*N, E]
    rank = cumsum(picks, axis 0)     1-based rank of a pair within its expert's pairs; with a capacity, picks of
                                     rank > capacity are cleared (the same pairs PyTorch drops)
    lists[e, r-1] = p % N            for each kept pair p of rank r: one pass over the pairs (a TIR kernel)
    run_e = lists[e, :kept_e]        [n_e] its pairs' tokens in pair order: a view of its row whose length n_e is
                                     read at run time (match_cast to a fresh var); nothing padded, nothing dropped
    y_e = expert_e(tokens[run_e])                        [n_e, d]: the block lowered with n_e rows
    Y = concat(y_0 .. y_{E-1})                           [sum n_e, d]
    out[t] = sum_j w[t, j] * Y[pos[j*N + t]]             pos = rows before its expert's + rank - 1: a gather, no
                                                         scatter (parallel, deterministic); dropped pairs weigh 0

Each size comes with a tensor on purpose: `run_e` is matched as a tensor, so everything that uses n_e depends on
it. A size taken from `tensor_to_shape` + match_cast on a shape value is no data dependency for FuseOps, which then
moved the size's definition after its uses (a static-dims build failed with "routed0 has not been computed"), and
`relax.reshape` to such a shape legalizes to a copy kernel with the same problem; the view is built by the VM's own
packed functions (`vm.builtin.tensor_to_shape`, `vm.builtin.reshape`). Those read the count on the host (a CPU
tensor), so CUDA builds keep the dense form. `SPECC_MOE_ONE_PASS=0` builds the previous form (A/B timing): one host
`nonzero` per expert over its column of the picks (`relax.run.nonzero`: NumPy, ~90 us a call).

Dense form (CUDA; and the fallback when an expert's types do not keep the token count in their first dim alone,
e.g. a static token count equal to the width): every expert on every token, combined by a [N, E] gate matrix; exact but
E/k times the expert work."""
from __future__ import annotations

import os

from tvm import relax, tirx
from tvm.script import tirx as T

from ....ir import Module
from ....ops import registry
from ....ops.registry import numel
from ....symbolic import Dim, base_symbols
from ....types import TensorType, TupleType
from ..schedules.kernels import FEW_ROWS_PREFIX
from . import lowering


@lowering("moe")
def _moe(ctx, x):
    a, op = ctx.attrs, relax.op
    xt = ctx.in_types[0]
    n_dim = numel(xt.shape[:-1])
    tokens = ctx.emit(op.reshape(x, [ctx.dim(n_dim), xt.shape[-1]]))  # [N, d]
    weights, chosen = _route(ctx, tokens)  # [N, k] each
    if not ctx.on_gpu and rowwise(ctx.walker.m, a.expert, n_dim):
        out = _routed(ctx, tokens, weights, chosen, n_dim)
    else:
        out = _dense(ctx, tokens, weights, chosen)
    if a.shared is not None:
        for i in range(a.shared_experts):
            (y,) = ctx.lower_graph(a.shared, f"shared.{i}.", [tokens])
            out = ctx.emit(op.add(out, y))
    return op.reshape(out, ctx.shape())


def _route(ctx, tokens):
    """(weights, chosen experts), both [N, k]."""
    a, op = ctx.attrs, relax.op
    logits = ctx.emit(op.linear(tokens, ctx.param("router.weight")))  # [N, E]
    if a.softmax == "after":
        top = ctx.emit(op.topk(logits, a.top_k, axis=-1, ret_type="both", dtype="int64"))
        weights = ctx.emit(op.nn.softmax(ctx.emit(relax.TupleGetItem(top, 0)), axis=-1))
    else:
        probs = ctx.emit(op.nn.softmax(logits, axis=-1))
        top = ctx.emit(op.topk(probs, a.top_k, axis=-1, ret_type="both", dtype="int64"))
        weights = ctx.emit(relax.TupleGetItem(top, 0))
        if a.renormalize:
            weights = ctx.emit(op.divide(weights, ctx.emit(op.sum(weights, axis=[-1], keepdims=True))))
    return weights, ctx.emit(relax.TupleGetItem(top, 1))


# ---- routed ----------------------------------------------------------------------------------------------------

def rowwise(m: Module, graph: str, tokens: Dim) -> bool:
    """Every tensor in `graph` (and the graphs it calls) that has the token count has it as its first dim only,
    and no other dim shares a symbol with it: then lowering the graph on fewer rows is renaming that one dim."""
    syms = base_symbols(tokens)
    for g in _graphs_under(m, graph):
        for n in g.nodes():
            items = n.type.items if isinstance(n.type, TupleType) else (n.type,)
            for t in items:
                dims = t.shape if isinstance(t, TensorType) else ()
                for i, d in enumerate(dims):
                    if d == tokens and i == 0:
                        continue
                    if d == tokens or base_symbols(d) & syms:
                        return False
    return True


def _graphs_under(m: Module, name: str) -> list:
    """`name`'s graph and every graph it runs (calls, repeat bodies, an op's blocks), each once."""
    seen: dict[str, object] = {}
    todo = [name]
    while todo:
        gname = todo.pop()
        if gname in seen:
            continue
        g = seen[gname] = m.graphs[gname]
        todo += [n.target for n in g.nodes() if n.kind in ("call", "repeat")]
        todo += [use.graph for n in g.nodes() if n.kind == "op" for use in _uses(n)]
    return list(seen.values())


def _uses(n) -> tuple:
    op = registry.get(n.target)
    return op.subgraphs(n.attrs) if op is not None and op.subgraphs is not None else ()


def _routed(ctx, tokens, weights, chosen, n_dim: Dim):
    """[N, d]: each expert on its routed rows only (the module docstring's routed form)."""
    a, op = ctx.attrs, relax.op
    e, k = a.experts, a.top_k
    n = ctx.dim(n_dim)
    expert_of = _slot_major(ctx, chosen)  # [k*N]
    one, zero = relax.prim_value(tirx.IntImm("int64", 1)), relax.prim_value(tirx.IntImm("int64", 0))
    picks = ctx.emit(op.one_hot(expert_of, one, zero, e, axis=-1))  # [k*N, E] 0/1
    rank = ctx.emit(op.cumsum(picks, axis=0))  # [k*N, E]: 1-based rank of a pair within its expert's pairs
    if a.capacity_factor is not None:  # keep each expert's first `capacity` pairs
        keep = ctx.emit(op.less_equal(rank, _capacity(ctx, n)))
        picks = ctx.emit(op.multiply(picks, ctx.emit(op.astype(keep, "int64"))))
    kept = ctx.emit(op.sum(picks, axis=[0]))  # [E] rows each expert runs
    mine = ctx.emit(op.sum(ctx.emit(op.multiply(rank, picks)), axis=[1]))  # [k*N] rank, 0 when dropped
    lists = _expert_lists(ctx, expert_of, mine, e, k, n) if _one_pass() else None
    ys = []
    for i in range(e):
        # the rows expert i gets, known at run time (the prefix gets its GEMMs the CPU schedules' few-rows form)
        size = tirx.Var(f"{FEW_ROWS_PREFIX}{i}", "int64")
        if lists is None:  # a host `nonzero` over its column of the picks
            mine_i = ctx.emit(op.strided_slice(picks, [1], [i], [i + 1]))  # [k*N, 1]
            found = ctx.emit(op.nonzero(ctx.emit(op.reshape(mine_i, [k * n]))))  # [1, n_i] its pairs, in pair order
            run = ctx.emit(op.reshape(ctx.bb.match_cast(found, relax.TensorType([1, size], "int64")), [size]))
            run = ctx.emit(op.floor_mod(run, relax.prim_value(n)))  # pair -> token
        else:  # the first kept[i] entries of its row of the lists: a view whose length is read at run time
            row = ctx.emit(op.reshape(ctx.emit(op.strided_slice(lists, [0], [i], [i + 1])), [k * n]))
            count = ctx.emit(op.strided_slice(kept, [0], [i], [i + 1]))  # [1]
            # a view of its first `count` entries, built by the VM (relax.reshape / tensor_to_shape would legalize
            # to a copy kernel whose size var is defined by a match_cast FuseOps does not order). The memory planner
            # frees `row` at the view; the view is read by the next kernel only, whose output has a run-time size
            # and so gets a fresh block, never row's
            count = ctx.emit(relax.call_pure_packed("vm.builtin.tensor_to_shape", count,
                                                    ty_args=relax.ShapeType(ndim=1)))
            view = ctx.emit(relax.call_pure_packed("vm.builtin.reshape", row, count,
                                                   ty_args=relax.TensorType(ndim=1, dtype="int64")))
            run = ctx.bb.match_cast(view, relax.TensorType([size], "int64"))
        rows = ctx.emit(op.take(tokens, run, axis=0, mode="clip"))
        (y,) = ctx.lower_graph(a.expert, f"experts.{i}.", [rows], rows=(n_dim, size))  # [n_i, d]
        ys.append(y)
    routed = ctx.emit(op.concat(ys, axis=0))  # [sum n_i, d]
    # where each pair's row landed: its expert's first row + its rank - 1; a dropped pair weighs 0
    first = ctx.emit(op.take(_exclusive_cumsum(ctx, kept), expert_of, axis=0))  # [k*N]
    pos = ctx.emit(op.add(first, ctx.emit(op.subtract(mine, ctx.const(1, "int64")))))
    w = _slot_major(ctx, weights)  # [k*N]
    if a.capacity_factor is not None:
        kept_pair = ctx.emit(op.greater(mine, ctx.const(0, "int64")))
        pos = ctx.emit(op.where(kept_pair, pos, ctx.const(0, "int64")))
        w = ctx.emit(op.where(kept_pair, w, ctx.const(0.0, "float32")))
    # out = sum_j w_j * Y[pos_j]: one gather-multiply-add chain (FuseOps makes it one kernel, one pass over [N, d]),
    # in the order a sum over the slots adds
    pos, w = ctx.emit(op.reshape(pos, [k, n])), ctx.emit(op.reshape(w, [k, n]))
    out = None
    for j in range(k):
        pj = ctx.emit(op.reshape(ctx.emit(op.strided_slice(pos, [0], [j], [j + 1])), [n]))
        wj = ctx.emit(op.reshape(ctx.emit(op.strided_slice(w, [0], [j], [j + 1])), [n, 1]))
        term = ctx.emit(op.multiply(ctx.emit(op.take(routed, pj, axis=0, mode="clip")), wj))  # [N, d]
        out = term if out is None else ctx.emit(op.add(out, term))
    return out


def _one_pass() -> bool:
    """SPECC_MOE_ONE_PASS=0: the per-expert `nonzero` host calls instead of the one-pass lists (A/B timing)."""
    return os.environ.get("SPECC_MOE_ONE_PASS", "1") != "0"


def _expert_lists(ctx, expert_of, rank, experts: int, k: int, n):
    """[E, k*N] int64: row e lists the tokens of expert e's kept pairs, in pair order (its first kept[e] entries;
    the rest is not written). One pass over the pairs (a counting sort: `rank` is each pair's 1-based place in its
    expert's list, 0 when dropped), where the per-expert `nonzero` made E host calls."""
    fn = ctx.bb.add_func(_scatter_pairs(k), "specc_moe_expert_lists")
    return ctx.emit(relax.call_tir(fn, [expert_of, rank], out_ty=relax.TensorType([experts, k * n], "int64")))


def _scatter_pairs(k: int):
    @T.prim_func(private=True, s_tir=True)
    def scatter_pairs(expert_h: T.handle, rank_h: T.handle, lists_h: T.handle):
        # opaque (op_pattern 8): a scatter FuseOps must not fuse
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True, "op_pattern": 8})
        pairs, experts = T.int64(), T.int64()
        expert = T.match_buffer(expert_h, (pairs,), "int64")
        rank = T.match_buffer(rank_h, (pairs,), "int64")
        lists = T.match_buffer(lists_h, (experts, pairs), "int64")
        with T.sblock("root"):  # RewriteDataflowReshape expects a root block
            for p in range(pairs):
                if rank[p] > 0:
                    lists[expert[p], rank[p] - 1] = T.floormod(p, pairs // k)  # pair p = j*N + t -> token t

    return scatter_pairs


def _slot_major(ctx, t):
    """[N, k] -> [k*N]: all first choices, then all second choices (the pair order capacity ranks by)."""
    return ctx.emit(relax.op.reshape(ctx.emit(relax.op.permute_dims(t, [1, 0])), [-1]))


def _exclusive_cumsum(ctx, t):
    return ctx.emit(relax.op.subtract(ctx.emit(relax.op.cumsum(t, axis=0)), t))


def _capacity(ctx, n):
    """ceil(c * N * k / E) as an int64 [1] tensor, in float64 in PyTorch's order ((c * N) * k / E), so the bound
    rounds exactly as the emitted layer's math.ceil does."""
    a, op = ctx.attrs, relax.op
    tokens = ctx.emit(op.astype(ctx.emit(op.shape_to_tensor(relax.ShapeExpr([n]))), "float64"))
    c = ctx.emit(op.multiply(ctx.emit(op.multiply(tokens, ctx.const(a.capacity_factor, "float64"))),
                             ctx.const(float(a.top_k), "float64")))
    return ctx.emit(op.astype(ctx.emit(op.ceil(ctx.emit(op.divide(c, ctx.const(float(a.experts), "float64"))))),
                              "int64"))


# ---- dense -----------------------------------------------------------------------------------------------------

def _dense(ctx, tokens, weights, chosen):
    a, op = ctx.attrs, relax.op
    one, zero = relax.prim_value(1.0, "float32"), relax.prim_value(0.0, "float32")
    picks = ctx.emit(op.one_hot(chosen, one, zero, a.experts, axis=-1))  # [N, k, E]
    if a.capacity_factor is not None:
        picks = ctx.emit(op.multiply(picks, _within_capacity(ctx, picks, a)))
    gates = ctx.emit(op.sum(ctx.emit(op.multiply(picks, ctx.emit(op.expand_dims(weights, -1)))), axis=[1]))  # [N, E]
    out = None
    for i in range(a.experts):
        (y,) = ctx.lower_graph(a.expert, f"experts.{i}.", [tokens])
        g = ctx.emit(op.strided_slice(gates, [1], [i], [i + 1]))
        term = ctx.emit(op.multiply(y, g))
        out = term if out is None else ctx.emit(op.add(out, term))
    return out


def _within_capacity(ctx, picks, a):
    """[N, k, 1] mask of the (token, slot) pairs each expert keeps: its first `capacity` pairs, slot-major."""
    op = relax.op
    slot_major = ctx.emit(op.permute_dims(picks, [1, 0, 2]))  # [k, N, E]
    n = ctx.dim(numel(ctx.in_types[0].shape[:-1]))
    flat = ctx.emit(op.reshape(slot_major, [-1, a.experts]))  # [k*N, E]
    seen = ctx.emit(op.cumsum(flat, axis=0))  # pairs routed to each expert so far, this one included
    rank = ctx.emit(op.sum(ctx.emit(op.multiply(seen, flat)), axis=[1], keepdims=True))  # 1-based rank in its expert
    capacity = ctx.emit(op.astype(_capacity(ctx, n), "float32"))
    keep = ctx.emit(op.astype(ctx.emit(op.less_equal(rank, capacity)), "float32"))  # [k*N, 1]
    keep = ctx.emit(op.reshape(keep, [a.top_k, n, 1]))
    return ctx.emit(op.permute_dims(keep, [1, 0, 2]))  # [N, k, 1]
