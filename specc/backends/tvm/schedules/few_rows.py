"""The prefetching GEMM (a routed expert's rows, and GEMMs whose two weight panels fit half the L2): the tiled-gemm
loop nest with the next weight panel prefetched."""
from __future__ import annotations

import os

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
    serial = n_panels is not None and panel_tasks(n_panels, info.num_cores)
    par = sch.fuse(*lead, co) if serial else sch.fuse(*lead, co, ro)
    sch.parallel(par)
    sch.unroll(ri)
    sch.vectorize(ci)
    consumers = list(sch.get_consumers(main))
    for buf in range(len(sch.get(main).writes)):  # two for a gated unit (gate, up)
        sch.set_scope(main, buf, "local")
    for c in consumers:
        sch.reverse_compute_at(c, ro if serial else par)
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
    func = sch.mod["main"]
    par_var, ko_var, ri_var = sch.get(par).loop_var, sch.get(ko).loop_var, sch.get(ri).loop_var
    ro_var = sch.get(ro).loop_var if serial else None
    if weight is not None:
        func = _prefetch_next_panel(func, par_var, ko_var, weight, tiles, n_panels, kdim, ki, nr, ro_var)
    rows_n = _exact_tail_rows(sch, main)
    if rows_n is not None:
        tile = ro_var.astype("int64") if serial else tirx.floormod(par_var.astype("int64"), tiles)
        func = _exact_row_tail(func, tile, ko_var, ri_var, rows_n, mr)
    return func


# column panels per core from which a prefetching GEMM's task is a whole panel (panel_tasks)
_PANELS_PER_CORE = 8


def panel_tasks(n_panels: int, cores: int) -> bool:
    """Whether a prefetching GEMM makes each column panel a task, its row tiles a serial loop inside it, instead of
    one (panel, row tile) pair per task: when it has at least _PANELS_PER_CORE panels per core the target declares,
    so that static chunks of panels keep the threads within 1/8 of each other. The order of the work is the same;
    what goes is the (panel, tile) decomposition of each task's index and the per-tile prefetch share's arithmetic.
    1 thread, Zen 4: GPT-2's lm_head (128 x 768 -> 50257) 0.90x with AVX2 code (run-time T; 0.91x static), 1.00x
    with AVX-512 code; a GPT-2 block's GEMMs 0.92-0.95x with AVX2 code, 0.99x with AVX-512 code (0.97-0.99x at 2
    threads). rewrite._prefetch_ki gives these GEMMs rounds of 64. SPECC_GEMM_TILES_IN_TASK=0: never (A/B)."""
    if os.environ.get("SPECC_GEMM_TILES_IN_TASK", "1") == "0":
        return False
    return n_panels >= _PANELS_PER_CORE * max(cores, 1)


def _task_constants() -> bool:
    """SPECC_PREFETCH_TASK_VARS=0: the prefetch of a GEMM with a symbolic tile count divides by it in every round,
    as before (A/B timing)."""
    return os.environ.get("SPECC_PREFETCH_TASK_VARS", "1") != "0"


def _exact_tail_rows(sch, main):
    """The row count to give the GEMM an exact last row tile (_exact_row_tail) for, or None: a static count (one copy
    of the reduction nest) or a routed expert's (mr - 1 copies: a few dozen rows, of which the padding was up to 15%).
    Other symbolic counts (a sequence length) keep the padded tile: mr - 1 copies of every GEMM tripled GPT-2's
    compile time for 3% at 128 rows, and the padding's share shrinks as the count grows; only a vocabulary-sized
    GEMM, most of a language model's time, gets them (`specc.exact_tail`, rewrite._exact_tail: GPT-2's lm_head
    0.987x with AVX-512 code, 0.986x with AVX2 code, 1 x 128 tokens on Zen 4). SPECC_EXACT_TAIL=0: never (A/B
    timing)."""
    if os.environ.get("SPECC_EXACT_TAIL", "1") == "0":
        return None
    rows = _row_count(sch, main)
    ann = sch.get(main).annotations
    if isinstance(rows, tirx.IntImm) or "specc.few_rows" in ann or "specc.exact_tail" in ann:
        return rows
    return None


def _row_count(sch, main):
    """The GEMM's true row count: the second-last dim of its input x[*L, R, K] (the row tiles cover R padded to
    mr). x is the read whose last index is the reduction var (the packed weight reads it second-last; both can be
    3-D parameters with the same last dim). None when no such read exists."""
    block = sch.get(main)
    red = [iv.var for iv in block.iter_vars if iv.iter_type != tirx.IterVar.DataPar]
    for region in block.reads:
        last = region.region[-1].min
        if len(red) == 1 and len(region.source.shape) >= 2 and last.same_as(red[0]):
            return region.source.shape[-2]
    return None


def _exact_row_tail(func, tile, ko, ri, rows, mr: int):
    """The last row tile of each column panel computes only the rows that exist (`tile`: the task's row tile index;
    an NCHWc conv's pixel tile loop uses the same rewrite on a row's pixels: conv_loops._exact_pixel_tail).

    The tiles cover the rows padded to a multiple of mr, and a padded row costs a full row of FMAs: at a routed
    expert's ~32 rows with 6-row tiles that is 276 rows computed for 256 (8%), and the few-rows GEMM is FMA-bound
    once its weight panel is in L2 (time goes with the computed rows: 30 vs 36 rows, 0.89x). Here the reduction
    nest (the `ko` loop: prefetch, K steps, the unrolled mr rows) gets one copy per tail height r = 1 .. mr-1, with
    the unrolled row loop cut to r rows, chosen per task by `rows % mr` when the task is the panel's last tile; the
    rows the tail skips are padding, never stored (the epilogue writes row < rows only). A branch per task, none in
    the FMA loop (a row predicate there made LLVM branch per row: 1.8x slower)."""
    from tvm.tirx import stmt as ts

    if isinstance(rows, (int, tirx.IntImm)) and int(rows) % mr == 0:
        return func
    full = tirx.floordiv(rows, mr)
    tail = tirx.floormod(rows, mr)

    def cut(loop, r):
        short = _rewrite_loop(loop, ri, lambda rl: ts.For(rl.loop_var, rl.min, tirx.const(r, "int64"),
                                                            rl.kind, rl.body, rl.thread_binding, rl.annotations))
        return _fresh_vars(short, f"_t{r}")

    def switch(loop):
        if isinstance(rows, (int, tirx.IntImm)):  # a static row count has one tail height
            return ts.IfThenElse(tile < full, loop, cut(loop, int(rows) % mr))
        branch = cut(loop, mr - 1)
        for r in range(mr - 2, 0, -1):
            branch = ts.IfThenElse(tail == r, cut(loop, r), branch)
        return ts.IfThenElse(tile < full, loop, branch)

    return func.with_body(_rewrite_loop(func.body, ko, switch))


def _fresh_vars(stmt, suffix: str):
    """`stmt` with every loop var and block iter var it defines replaced by a new one (a copy of a loop nest next
    to the original: TIR defines each var once)."""
    from tvm.s_tir import stmt as ss
    from tvm.tirx import stmt as ts

    defs: list = []

    def collect(node):
        if isinstance(node, ts.For):
            defs.append(node.loop_var)
            collect(node.body)
        elif isinstance(node, ts.SeqStmt):
            for x in node.seq:
                collect(x)
        elif isinstance(node, ss.SBlockRealize):
            collect(node.block)
        elif isinstance(node, ss.SBlock):
            defs.extend(iv.var for iv in node.iter_vars)
            collect(node.body)

    collect(stmt)
    new = {v: tirx.Var(v.name + suffix, v.ty) for v in defs}
    # substitute the uses (PrimFunc.specialize replaces a parameter var wherever it is read) ...
    used = tirx.PrimFunc(defs, stmt).specialize(new).body

    # ... and the definitions
    def redefine(node):
        if isinstance(node, ts.For):
            return ts.For(new.get(node.loop_var, node.loop_var), node.min, node.extent, node.kind,
                          redefine(node.body), node.thread_binding, node.annotations)
        if isinstance(node, ts.SeqStmt):
            return ts.SeqStmt([redefine(x) for x in node.seq])
        if isinstance(node, ss.SBlockRealize):
            return ss.SBlockRealize(node.iter_values, node.predicate, redefine(node.block))
        if isinstance(node, ss.SBlock):
            ivs = [tirx.IterVar(iv.dom, new.get(iv.var, iv.var), iv.iter_type, iv.thread_tag)
                   for iv in node.iter_vars]
            return ss.SBlock(ivs, node.reads, node.writes, node.name_hint, redefine(node.body), node.init,
                             node.alloc_buffers, node.match_buffers, node.annotations)
        return node

    return redefine(used)


def _packed_weight(sch, main, nr: int):
    """The packed weight wp[N/nr, K, nr] the GEMM block reads (a function parameter), or None."""
    func = sch.mod["main"]
    block = sch.get(main)
    red = [iv.var for iv in block.iter_vars if iv.iter_type != tirx.IterVar.DataPar]
    for region in block.reads:
        buf = region.source
        if (len(buf.shape) == 3 and _static(buf.shape[-1]) == nr and len(red) == 1
                and region.region[-2].min.same_as(red[0]) and any(buf.same_as(p) for p in func.params)):
            return buf
    return None


def _prefetch_next_panel(func, par, ko, weight, tiles, n_panels: int, kdim: int, ki: int, nr: int, ro=None):
    """Before each round of `ki` reduction steps, prefetch this round's share of the next column panel into L2.

    The few-rows GEMM streams each weight panel (K x nr floats) from memory once and reuses it from L2 for the
    panel's other row tiles; without help, a panel's first tile waits on memory and the others leave it idle. Here
    the next panel is fetched while the current one is computed, spread evenly over the current panel's
    `tiles` x K/ki rounds: memory traffic and compute overlap. (Thread CPU time, 8 experts' SwiGLU at ~32 rows,
    Intel AVX-512: 6 x 64 tile without / with the prefetch: see the schedules README.) `ro`: the row tile loop when
    a task is a whole panel (panel_tasks), else None (a task is a (panel, tile) pair of the fused loop `par`)."""
    line = 64 // 4  # floats per 64-byte cache line (x86, and the common ARM cores)
    lines_per_round = ki * nr // line
    rounds = kdim // ki
    f = par.astype("int64")
    if ro is not None:
        panel = tirx.min(tirx.floormod(f, n_panels) + 1, n_panels - 1)
    else:
        panel = tirx.min(tirx.floormod(tirx.floordiv(f, tiles), n_panels) + 1, n_panels - 1)
    if ro is None and (_static(tiles) is not None or not _task_constants()):
        step = tirx.floormod(f, tiles) * rounds + ko.astype("int64")
        start = tirx.floordiv(step * lines_per_round, tiles)
        end = tirx.floordiv((step + 1) * lines_per_round, tiles)
        bind = []
    else:
        # a symbolic tile count (rows = a sequence length, a routed expert's), or a task that walks the panel's
        # tiles itself: the divisions by the tile count once per task, in variables bound before the reduction loop
        # (before the tile loop in a panel's task), not in every round (an integer division per round and line cost
        # the symbolic build's prefetching GEMMs 5%); each tile prefetches a `share` of the panel's lines, in rounds
        total = lines_per_round * rounds
        pf_panel, share = tirx.Var("pf_panel", "int64"), tirx.Var("pf_share", "int64")
        bind = [(pf_panel, panel), (share, tirx.floordiv(total + tiles - 1, tiles))]
        if ro is not None:
            tile = ro.astype("int64")
        else:
            tile = tirx.Var("pf_tile", "int64")
            bind.insert(0, (tile, tirx.floormod(f, tiles)))
        per_round = tirx.floordiv(share + (rounds - 1), rounds)
        start = tile * share + ko.astype("int64") * per_round
        end = tirx.min(tirx.min(start + per_round, (tile + 1) * share), total)
        panel = pf_panel

    def at(j):
        pos = (start + j) * line  # float offset inside the panel
        return [panel, tirx.floordiv(pos, nr), tirx.floormod(pos, nr)]
    return _prefetch_before(func, ko, weight, at, end - start, bind, bind_before=ro)


def _prefetch_before(func, loop_var, weight, at, count, bind=(), bind_before=None):
    """`func` with `for j < count: prefetch weight[at(j)] into L2` at the start of each iteration of `loop_var`'s
    loop; `bind`: (var, value) pairs bound before that loop (once per task), or before `bind_before`'s loop when
    given (an outer loop of the task)."""
    from tvm.tirx import stmt as ts

    j = tirx.Var("pf_line", "int64")
    addr = tirx.address_of(tirx.BufferLoad(weight, at(j)))
    i32 = lambda v: tirx.const(v, "int32")  # noqa: E731
    # llvm.prefetch(address, read, locality, data cache)
    fetch = tirx.Evaluate(tirx.call_llvm_intrin("void", "llvm.prefetch.p0", addr, i32(0), i32(_PREFETCH_LOCALITY),
                                                i32(1)))
    prefetch = ts.For(j, tirx.const(0, "int64"), count, ts.ForKind.SERIAL, fetch)

    def at_round(loop):
        loop = ts.For(loop.loop_var, loop.min, loop.extent, loop.kind, ts.SeqStmt([prefetch, loop.body]),
                      loop.thread_binding, loop.annotations)
        return ts.SeqStmt([*(ts.Bind(v, e) for v, e in bind), loop]) if bind and bind_before is None else loop

    func = func.with_body(_rewrite_loop(func.body, loop_var, at_round))
    if bind and bind_before is not None:
        func = func.with_body(_rewrite_loop(func.body, bind_before, lambda loop: ts.SeqStmt(
            [*(ts.Bind(v, e) for v, e in bind), loop])))
    return func


def _prefetch_next_conv_panel(func, par, wo, rco, weight, oh: int, n_wo: int, n_oco: int, n_rco: int):
    """NCHWc conv (nchwc.conv2d_nchwc, loops (n, oco, oh) fused -> wo tile -> rco -> ...): before each iteration
    of the outermost reduction loop `rco` (n_rco of them: the input channel blocks, or half of them when they are
    walked in two halves) of a tile, prefetch into L2 this step's share of the next output-channel block's weight
    panel wp[oco + 1] (all of it spread evenly over the current panel's oh x n_wo x n_rco steps). For convs whose
    weights do not fit the L2: a panel's first row would otherwise wait on L3 / memory."""
    shape = [int(d) for d in weight.shape]
    panel_floats = 1
    for d in shape[1:]:
        panel_floats *= d
    line = 64 // 4
    lines = panel_floats // line
    steps = oh * n_wo * n_rco
    f = par.astype("int64")
    panel = tirx.min(tirx.floormod(tirx.floordiv(f, oh), n_oco) + 1, n_oco - 1)
    step = (tirx.floormod(f, oh) * n_wo + wo.astype("int64")) * n_rco + rco.astype("int64")
    start = tirx.floordiv(step * lines, steps)
    end = tirx.floordiv((step + 1) * lines, steps)
    def at(j):
        pos, idx = (start + j) * line, []
        for d in reversed(shape[1:]):
            idx.append(tirx.floormod(pos, d))
            pos = tirx.floordiv(pos, d)
        return [panel, *reversed(idx)]
    return _prefetch_before(func, rco, weight, at, end - start)


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
