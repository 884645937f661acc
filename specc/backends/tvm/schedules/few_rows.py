"""The prefetching GEMM (a routed expert's rows, and GEMMs whose two weight panels fit half the L2): the tiled-gemm
loop nest with the next weight panel prefetched."""
from __future__ import annotations

from tvm import tirx

from ._target import CPUInfo
from .sched_util import (
    _ann_int,
    _blocks,
    _extent,
    _inline_intermediates,
    _is_spatial_block,
    _same,
    _static,
)

# llvm.prefetch locality of the few-rows GEMM's weight prefetch: 2 = L2 and outer levels (x86 prefetcht1): the next
# panel is needed after the current one, and in L1 it would evict the current panel's lines
_PREFETCH_LOCALITY = 2


def _schedule_few_rows_gemm(sch, main, info: CPUInfo, mr: int, nr: int, _schedule_generic_block):
    """A GEMM with a constant weight chosen by rewrite._prefetch_ki (a routed expert's few rows, or panels that fit
    L2 twice over): the tiled-gemm loop nest ((leading dims,) column panel, row tile, reduction) with the reduction
    split in rounds of `ki` steps, each round prefetching this tile's share of the next column panel of the packed
    weight (_prefetch_next_panel)."""
    ki = _ann_int(sch, main, "specc.prefetch_ki")
    _inline_intermediates(sch, skip=[main])
    all_blocks = _blocks(sch)
    idx = [k for k, b in enumerate(all_blocks) if _same(sch, b, main)][0]
    producers = [sch.get(b).name_hint for b in all_blocks[:idx]]
    weight = _packed_weight(sch, main, nr)
    if "specc.glu" in sch.get(main).annotations:  # gate, up [..., rows, panel, nr/2] (kernels._gemm_glu)
        *lead, rows, co, ci, red = sch.get_loops(main)
    else:
        *lead, rows, cols, red = sch.get_loops(main)
        co, ci = sch.split(cols, [None, nr])
    ro, ri = sch.split(rows, [None, mr])
    tiles = sch.get(ro).extent  # row tiles per panel (the rows are padded to a multiple of mr)
    kdim = _extent(sch, red)
    ko, kin = sch.split(red, [None, ki])
    sch.reorder(*lead, co, ro, ko, kin, ri, ci)
    n_panels = _extent(sch, co)
    par = sch.fuse(*lead, co, ro)
    sch.parallel(par)
    sch.unroll(ri)
    sch.vectorize(ci)
    consumers = list(sch.get_consumers(main))
    for buf in range(len(sch.get(main).writes)):  # two for a gated unit (gate, up)
        sch.set_scope(main, buf, "local")
    for c in consumers:
        sch.reverse_compute_at(c, par)
    init = sch.decompose_reduction(main, ko)
    il = sch.get_loops(init)
    sch.unroll(il[-2])
    sch.vectorize(il[-1])
    for c in consumers:
        cl = sch.get_loops(c)
        if _extent(sch, cl[-1]) in (nr, nr // 2) and _is_spatial_block(sch, c):
            try:
                sch.vectorize(cl[-1])
            except Exception:  # pylint: disable=broad-except
                pass
    for name in producers:
        _schedule_generic_block(sch, sch.get_sblock(name), info)
    if weight is None:
        return sch.mod["main"]
    return _prefetch_next_panel(sch.mod["main"], sch.get(par).loop_var, sch.get(ko).loop_var, weight,
                                tiles, n_panels, kdim, ki, nr)


def _packed_weight(sch, main, nr: int):
    """The packed weight wp[N/nr, K, nr] the GEMM block reads (a function parameter), or None."""
    func = sch.mod["main"]
    for region in sch.get(main).reads:
        buf = region.source
        if len(buf.shape) == 3 and _static(buf.shape[-1]) == nr and any(buf.same_as(p) for p in func.params):
            return buf
    return None


def _prefetch_next_panel(func, par, ko, weight, tiles, n_panels: int, kdim: int, ki: int, nr: int):
    """Before each round of `ki` reduction steps, prefetch this round's share of the next column panel into L2.

    The few-rows GEMM streams each weight panel (K x nr floats) from memory once and reuses it from L2 for the
    panel's other row tiles; without help, a panel's first tile waits on memory and the others leave it idle. Here
    the next panel is fetched while the current one is computed, spread evenly over the current panel's
    `tiles` x K/ki rounds: memory traffic and compute overlap. (Thread CPU time, 8 experts' SwiGLU at ~32 rows,
    Intel AVX-512: 6 x 64 tile without / with the prefetch: see the schedules README.)"""
    from tvm.tirx import stmt as ts

    line = 64 // 4  # floats per 64-byte cache line (x86, and the common ARM cores)
    lines_per_round = ki * nr // line
    rounds = kdim // ki
    f = par.astype("int64")
    panel = tirx.min(tirx.floormod(tirx.floordiv(f, tiles), n_panels) + 1, n_panels - 1)
    step = tirx.floormod(f, tiles) * rounds + ko.astype("int64")
    start = tirx.floordiv(step * lines_per_round, tiles)
    end = tirx.floordiv((step + 1) * lines_per_round, tiles)
    j = tirx.Var("pf_line", "int64")
    pos = (start + j) * line  # float offset inside the panel
    addr = tirx.address_of(tirx.BufferLoad(weight, [panel, tirx.floordiv(pos, nr), tirx.floormod(pos, nr)]))
    i32 = lambda v: tirx.const(v, "int32")  # noqa: E731
    # llvm.prefetch(address, read, locality, data cache)
    fetch = tirx.Evaluate(tirx.call_llvm_intrin("void", "llvm.prefetch.p0", addr, i32(0), i32(_PREFETCH_LOCALITY),
                                                i32(1)))
    prefetch = ts.For(j, tirx.const(0, "int64"), end - start, ts.ForKind.SERIAL, fetch)

    def at_round(loop):
        return ts.For(loop.loop_var, loop.min, loop.extent, loop.kind, ts.SeqStmt([prefetch, loop.body]),
                      loop.thread_binding, loop.annotations)

    return func.with_body(_rewrite_loop(func.body, ko, at_round))


def _prefetch_next_conv_panel(func, par, wo, rco, weight, oh: int, n_wo: int, n_oco: int):
    """NCHWc conv (nchwc.conv2d_nchwc, loops (n, oco, oh) fused -> wo tile -> rco -> ...): before each input
    channel block of a tile, prefetch into L2 this step's share of the next output-channel block's weight panel
    wp[oco + 1] (all of it spread evenly over the current panel's oh x n_wo x rco steps). For convs whose weights do
    not fit the L2: a panel's first row would otherwise wait on L3 / memory."""
    from tvm.tirx import stmt as ts

    shape = [int(d) for d in weight.shape]
    panel_floats = 1
    for d in shape[1:]:
        panel_floats *= d
    line = 64 // 4
    n_rco = shape[1]
    lines = panel_floats // line
    steps = oh * n_wo * n_rco
    f = par.astype("int64")
    panel = tirx.min(tirx.floormod(tirx.floordiv(f, oh), n_oco) + 1, n_oco - 1)
    step = (tirx.floormod(f, oh) * n_wo + wo.astype("int64")) * n_rco + rco.astype("int64")
    start = tirx.floordiv(step * lines, steps)
    end = tirx.floordiv((step + 1) * lines, steps)
    j = tirx.Var("pf_line", "int64")
    pos = (start + j) * line
    idx = []
    for d in reversed(shape[1:]):
        idx.append(tirx.floormod(pos, d))
        pos = tirx.floordiv(pos, d)
    addr = tirx.address_of(tirx.BufferLoad(weight, [panel, *reversed(idx)]))
    i32 = lambda v: tirx.const(v, "int32")  # noqa: E731
    fetch = tirx.Evaluate(tirx.call_llvm_intrin("void", "llvm.prefetch.p0", addr, i32(0), i32(_PREFETCH_LOCALITY),
                                                i32(1)))
    prefetch = ts.For(j, tirx.const(0, "int64"), end - start, ts.ForKind.SERIAL, fetch)

    def at_round(loop):
        return ts.For(loop.loop_var, loop.min, loop.extent, loop.kind, ts.SeqStmt([prefetch, loop.body]),
                      loop.thread_binding, loop.annotations)

    return func.with_body(_rewrite_loop(func.body, rco, at_round))


def _rewrite_loop(node, var, fn):
    """`node` with the For loop over `var` replaced by fn(loop) (walks loops, sequences and blocks)."""
    from tvm.s_tir import stmt as ss
    from tvm.tirx import stmt as ts

    if isinstance(node, ts.For):
        if node.loop_var.same_as(var):
            return fn(node)
        return ts.For(node.loop_var, node.min, node.extent, node.kind, _rewrite_loop(node.body, var, fn),
                      node.thread_binding, node.annotations)
    if isinstance(node, ts.SeqStmt):
        return ts.SeqStmt([_rewrite_loop(x, var, fn) for x in node.seq])
    if isinstance(node, ss.SBlockRealize):
        return ss.SBlockRealize(node.iter_values, node.predicate, _rewrite_loop(node.block, var, fn))
    if isinstance(node, ss.SBlock):
        return ss.SBlock(node.iter_vars, node.reads, node.writes, node.name_hint, _rewrite_loop(node.body, var, fn),
                         node.init, node.alloc_buffers, node.match_buffers, node.annotations)
    return node
