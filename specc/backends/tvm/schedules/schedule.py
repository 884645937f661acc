"""s_tir schedules for the fused PrimFuncs produced by LegalizeOps + FuseOps + FuseTIR.

* PrimFuncs containing a specc kernel block (annotation ``specc.kernel``): register-tiled micro-kernel (MR rows x
  NR = 2 SIMD registers of columns / output channels), accumulator in a "local" buffer (promoted to registers by
  LLVM), reduction loop outside the unrolled/vectorised register tile, elementwise epilogue computed per tile, outer
  tile loops fused and parallelised.
* attention kernels: per (batch, head, query-tile) parallel task, QK^T and PV micro-kernels, softmax in between on
  a [MR, T] tile.
* everything else: dlight CPU rules (Reduction, GEMV) where they apply, else a generic schedule (inline injective
  intermediates, parallel outer loops, vectorised inner loop).
"""

from __future__ import annotations

import logging
import os

import tvm
from tvm import s_tir, tirx

from . import conv_loops, kernels, winograd
from ._target import CPUInfo
from .few_rows import _exact_row_tail, _exact_tail_rows, _prefetch_next_conv_panel, _schedule_few_rows_gemm
from .sched_util import (
    _MIN_PARALLEL_WORK,
    SCHEDULED_ATTR,
    _ann_int,
    _blocks,
    _extent,
    _inline_intermediates,
    _is_spatial_block,
    _kind,
    _parallel_prefix,
    _same,
    _static_work,
    _vectorize_inner,
)

log = logging.getLogger("specc.tvm.schedules")

_DEBUG = os.environ.get("SPECC_TVM_DEBUG", "") == "1"


def _schedule_tiled(sch, main, info: CPUInfo):
    """gemm / conv2d micro-kernel + fused epilogue. Returns (the scheduled function, its strategy's suffix) when the
    function is not sch.mod's (statements added after scheduling: the weight prefetch, the exact last row or pixel
    tile), else None."""
    kind = _kind(sch, main)
    mr = _ann_int(sch, main, "specc.mr")
    nr = _ann_int(sch, main, "specc.nr")
    nchwc = str(sch.get(main).annotations.get("specc.layout", "")) == "nchwc"
    # output channel blocks per register tile (nchwc.conv2d_nchwc: a 1x1 conv on 32 registers takes two)
    ocb = int(sch.get(main).annotations.get("specc.oc_blocks", 1)) if nchwc else 1
    if kind == "gemm" and "specc.prefetch_ki" in sch.get(main).annotations:
        return _schedule_few_rows_gemm(sch, main, info, mr, nr, _schedule_generic_block), ""

    # keep producers (pad, packing) at root; inline elementwise epilogue intermediates
    _inline_intermediates(sch, skip=[main])
    if nchwc and kind == "conv2d" and conv_loops._reads_border_in_place(info):
        for b in _blocks(sch):  # an NCHWc input's padded copy; the stem's NCHW image keeps its own
            if sch.get(b).name_hint == "specc_pad" and len(sch.get(b).writes[0].source.shape) == 5:
                sch.compute_inline(b)
    all_blocks = _blocks(sch)
    idx = [k for k, b in enumerate(all_blocks) if _same(sch, b, main)][0]
    producers = [sch.get(b).name_hint for b in all_blocks[:idx]]

    loops = sch.get_loops(main)
    iters = sch.get(main).iter_vars
    n_red = sum(1 for iv in iters if iv.iter_type != tirx.IterVar.DataPar)
    spatial, red = loops[: len(loops) - n_red], loops[len(loops) - n_red:]
    if kind == "gemm":
        if "specc.glu" in sch.get(main).annotations:  # gate, up [..., rows, panel, nr/2] (kernels._gemm_glu)
            *lead, rows, co, ci = spatial
        else:
            *lead, rows, cols = spatial
            co, ci = sch.split(cols, [None, nr])
        ro, ri = sch.split(rows, [None, mr])
        tiles = sch.get(ro).extent
        sch.reorder(*lead, co, ro, *red, ri, ci)
        par = sch.fuse(*lead, co, ro)
        tile_loop = par
    elif kind == "conv2d":
        par, tile_loop, ri, ci, red = conv_loops._conv_tile_loops(sch, main, spatial, red, mr, ocb, nchwc, info)
    else:
        raise ValueError(kind)
    sch.parallel(par)
    sch.unroll(ri)
    sch.vectorize(ci)
    if nchwc and (_extent(sch, red[-1]) or 0) > 1:
        # the tap column (nchwc.conv2d_nchwc): unrolled, the broadcasts of a row's pixels serve every tap
        sch.unroll(red[-1])

    consumers = list(sch.get_consumers(main))
    flat = "specc.flat" in sch.get(main).annotations
    if flat:  # nchwc.conv1x1_flat_nchwc: tiles -> the task's plane buffer, which the epilogue reads pixel by pixel
        sch.reverse_compute_at(tile := sch.cache_write(main, 0, "local"), tile_loop)
        sch.unroll(sch.get_loops(tile)[-2])
        sch.vectorize(sch.get_loops(tile)[-1])
        w = int(sch.get(consumers[0]).iter_vars[-2].dom.extent)  # the plane's width (specc_conv_out's x)
        for c in consumers:  # iterated over (y * W + x), as the buffer is indexed: reverse_compute_at mis-inverts y, x
            sch.transform_block_layout(c, lambda n, o, y, x, i: (n, o, y * w + x, i))
        tile_loop = par
    else:
        for buf in range(len(sch.get(main).writes)):  # two for a gated unit (gate, up)
            sch.set_scope(main, buf, "local")
    for c in consumers:
        sch.reverse_compute_at(c, tile_loop)
    init = sch.decompose_reduction(main, red[0])
    il = sch.get_loops(init)
    sch.unroll(il[-2])
    sch.vectorize(il[-1])
    if ocb > 1:
        sch.unroll(il[-3])
    # epilogue: vectorise the contiguous axis when it is the full register width
    for c in consumers:
        cl = sch.get_loops(c)
        if kind == "gemm":
            ext = _extent(sch, cl[-1])
            # nr columns, or nr / 2 (a gated unit's act(gate) * up: kernels.gemm(glu=...))
            if ext is not None and ext in (nr, nr // 2) and _is_spatial_block(sch, c):
                try:
                    sch.vectorize(cl[-1])
                except Exception:  # pylint: disable=broad-except
                    pass
        else:
            # (oc, oh, ow) tile: NCHW output, ow is contiguous
            # both loops unrolled: the (MR pixels x NR channels) tile stays in registers and LLVM writes it out
            # with shuffles; with only the pixel loop unrolled the tile went through the stack and the store of a
            # 1x1 conv's output cost as much as its 64-channel reduction (64->256 1x1 at 56x56: 1.06x -> 0.87x
            # onnxruntime; 256->256 3x3 at 14x14: 1.00x -> 0.78x)
            try:
                if nchwc:
                    # NCHW{nr}c output: the tile is stored as mr contiguous vectors
                    sch.vectorize(cl[-1])
                    if flat:
                        continue
                    if ocb > 1:
                        sch.unroll(cl[-3])
                else:
                    sch.unroll(cl[-1])
                sch.unroll(cl[-2])
            except Exception:  # pylint: disable=broad-except
                pass
    # producers left at root (padding, runtime weight packing)
    for name in producers:
        _schedule_generic_block(sch, sch.get_sblock(name), info)
    if kind == "gemm" and len(red) == 1:
        rows_n = _exact_tail_rows(sch, main)
        if rows_n is not None:
            return _exact_row_tail(sch.mod["main"], tirx.floormod(sch.get(par).loop_var.astype("int64"), tiles),
                                   sch.get(red[0]).loop_var, sch.get(ri).loop_var, rows_n, mr), ""
    if nchwc and kind == "conv2d" and not flat:
        weight = conv_loops._conv_weight_param(sch, main)
        loops = sch.get_loops(main)
        wo_ext = _extent(sch, loops[1])
        if conv_loops._prefetches_next_panel(weight, info, ocb) and wo_ext is not None:
            oh = int(sch.get(main).iter_vars[2].dom.extent)
            return _prefetch_next_conv_panel(sch.mod["main"], sch.get(loops[0]).loop_var,
                                             sch.get(loops[1]).loop_var, sch.get(red[0]).loop_var, weight, oh,
                                             wo_ext, int(weight.shape[0]), _extent(sch, red[0])), "-prefetch"
        ow = int(sch.get(main).annotations.get("specc.ow", 0))  # the row's pixels; 0: not known statically
        if ow and ow % mr and conv_loops._exact_pixel_tail():
            return _exact_row_tail(sch.mod["main"], sch.get(tile_loop).loop_var.astype("int64"),
                                   sch.get(red[0]).loop_var, sch.get(ri).loop_var, ow, mr), ""
    return None


def _schedule_conv1x1_pixels(sch, main, info: CPUInfo):
    """kernels.conv1x1_pixels: per (image, mr-channel block) task, the (mr channels x nr pixels) register tiles walk
    the pixel panels; each tile is written to a (mr x pixels) block buffer (L2-sized), and the fused epilogue then
    runs over that block's NCHW rows, vectorised along the pixels."""
    mr = _ann_int(sch, main, "specc.mr")
    nr = _ann_int(sch, main, "specc.nr")
    _inline_intermediates(sch, skip=[main])
    all_blocks = _blocks(sch)
    idx = [k for k, b in enumerate(all_blocks) if _same(sch, b, main)][0]
    producers = [sch.get(b).name_hint for b in all_blocks[:idx]]
    n, b, o, p, k = sch.get_loops(main)
    oco, oi = sch.split(o, [None, mr])
    pt, pi = sch.split(p, [None, nr])
    sch.reorder(n, b, oco, pt, k, oi, pi)
    # row blocks outside the channel blocks: a block's packed input (L2-sized) serves every channel block
    par = sch.fuse(n, b, oco)
    sch.parallel(par)
    consumers = list(sch.get_consumers(main))
    for c in consumers:
        sch.reverse_compute_at(c, par)
    tile = sch.cache_write(main, 0, "local")
    sch.reverse_compute_at(tile, pt)
    sch.unroll(oi)
    sch.vectorize(pi)
    init = sch.decompose_reduction(main, k)
    il = sch.get_loops(init)
    sch.unroll(il[-2])
    sch.vectorize(il[-1])
    tl = sch.get_loops(tile)
    sch.unroll(tl[-2])
    sch.vectorize(tl[-1])
    for c in consumers:
        cl = sch.get_loops(c)
        # (o, y, x) under the task loop: `rows` NCHW rows per channel, contiguous over y*x
        inner = sch.fuse(cl[-2], cl[-1])
        width = _vec_width(_extent(sch, inner), info.lanes)
        if width:
            _split_vectorize(sch, inner, width)
    for name in producers:
        _schedule_generic_block(sch, sch.get_sblock(name), info)


def _schedule_row_partials(sch, blocks, info: CPUInfo):
    """Partial row reductions (loops ..., lanes, outer-reduce): reduce outside, vectorise lanes."""
    for blk in blocks:
        loops = sch.get_loops(blk)
        lane, red = loops[-2], loops[-1]
        sch.reorder(red, lane)
        sch.vectorize(lane)
        init = sch.decompose_reduction(blk, red)
        sch.vectorize(sch.get_loops(init)[-1])


def _by_prefix(sch, blocks):
    out = {}
    for b in blocks:
        out[sch.get(b).name_hint] = b
    return out


def _schedule_attention(sch, qk, pv, info: CPUInfo):
    mr = _ann_int(sch, pv, "specc.mr")
    nr = _ann_int(sch, pv, "specc.nr")
    lanes = info.lanes
    blocks = _by_prefix(sch, _blocks(sch))

    def find(name):
        return blocks[name]

    kt = find("specc_attn_kt")
    mask = find("specc_attn_mask")
    norm = blocks.get("specc_attn_norm")  # exp * (1/sum) as its own pass (kernels._normalised_weights)
    stages = ([norm] if norm is not None else []) + [
        find(n) for n in ("specc_attn_rsum", "specc_attn_sum", "specc_attn_sum_part", "specc_attn_exp",
                          "specc_attn_max", "specc_attn_max_part", "specc_attn_mask")]
    out_blocks = list(sch.get_consumers(pv))

    # PV micro-kernel: loops b, h, i, e, j
    b, h, i, e, j = sch.get_loops(pv)
    io, ii = sch.split(i, [None, mr])
    e_ext = _extent(sch, e)
    enr = nr if (e_ext is not None and e_ext % nr == 0) else lanes
    eo, ei = sch.split(e, [None, enr])
    sch.reorder(b, h, io, eo, j, ii, ei)
    par = sch.fuse(b, h, io)
    sch.parallel(par)
    sch.unroll(ii)
    sch.vectorize(ei)
    sch.set_scope(pv, 0, "local")
    for c in out_blocks:
        sch.reverse_compute_at(c, eo)
        try:
            sch.vectorize(sch.get_loops(c)[-1])
        except Exception:  # pylint: disable=broad-except
            pass
    # softmax pieces and QK^T computed per (b, h, query tile)
    for blk in stages + [qk]:
        sch.compute_at(blk, par)

    # QK^T micro-kernel inside the task: loops (ii, j, d); scale / bias / mask fused into the write-back
    qk_local = sch.cache_write(qk, 0, "local")
    ql = sch.get_loops(qk)
    qi, qj, qd = ql[-3:]
    qjo, qji = sch.split(qj, [None, nr])
    sch.reorder(qjo, qd, qi, qji)
    sch.unroll(qi)
    sch.vectorize(qji)
    sch.reverse_compute_at(qk_local, qjo)
    sch.reverse_compute_inline(mask)
    wl = sch.get_loops(qk_local)
    sch.vectorize(wl[-1])
    qinit = sch.decompose_reduction(qk, qd)
    il = sch.get_loops(qinit)
    sch.vectorize(il[-1])

    _schedule_row_partials(sch, [find("specc_attn_max_part"), find("specc_attn_sum_part")], info)
    # exp: (ii, j) vectorised on j
    el = sch.get_loops(find("specc_attn_exp"))
    # a symbolic number of keys is padded to whole nr-wide tiles: vectorisable too (kernels._tails)
    symbolic = kernels._tails()
    _vectorize_inner(sch, el[-2:], lanes, symbolic=symbolic)
    if norm is not None:
        _vectorize_inner(sch, sch.get_loops(norm)[-2:], lanes, symbolic=symbolic)

    pinit = sch.decompose_reduction(pv, j)
    il = sch.get_loops(pinit)
    sch.unroll(il[-2])
    sch.vectorize(il[-1])
    # K^T packing at root
    _schedule_generic_block(sch, kt, info)


def _schedule_rowwise(sch, out, info: CPUInfo):
    """LayerNorm / softmax kernels: one parallel task per row, all stages computed per row."""
    others = [b for b in _blocks(sch) if not _same(sch, b, out)]
    loops = sch.get_loops(out)
    lead, inner = loops[:-1], loops[-1]
    row = sch.fuse(*lead) if len(lead) > 1 else (lead[0] if lead else None)
    if row is None:
        row, inner = sch.split(inner, [1, None])
    work = _static_work(sch, out)
    if work is None or work >= _MIN_PARALLEL_WORK:
        sch.parallel(row)
    ext = _extent(sch, inner)
    width = _vec_width(ext, info.lanes)
    for blk in reversed(others):
        sch.compute_at(blk, row)
    partials = []
    for blk in others:
        name = sch.get(blk).name_hint
        if name.endswith("_part"):
            partials.append(blk)
        elif _is_spatial_block(sch, blk):
            bl = sch.get_loops(blk)
            bw = _vec_width(_extent(sch, bl[-1]), info.lanes)
            if bw is not None and len(bl) > 1:
                _split_vectorize(sch, bl[-1], bw)
    _schedule_row_partials(sch, partials, info)
    if width is not None:
        _split_vectorize(sch, inner, width)


# ----------------------------------------------------------------------------- generic
def _vec_width(ext, lanes):
    """Largest SIMD-friendly width (lanes, lanes/2, lanes/4 >= 4) dividing ext."""
    if ext is None:
        return None
    w = lanes
    while w >= 4:
        if ext % w == 0:
            return w
        w //= 2
    return None


def _split_vectorize(sch, loop, width):
    ext = _extent(sch, loop)
    if ext == width:
        sch.vectorize(loop)
        return [loop]
    o, i = sch.split(loop, [None, width])
    sch.vectorize(i)
    return [o, i]


def _schedule_generic_block(sch, blk, info: CPUInfo):
    """Parallel outer loops + vectorised innermost spatial loop for one root-level block."""
    loops = sch.get_loops(blk)
    if not loops:
        return
    iters = sch.get(blk).iter_vars
    work = _static_work(sch, blk)
    do_par = work is None or work >= _MIN_PARALLEL_WORK
    n_spatial = sum(1 for iv in iters if iv.iter_type == tirx.IterVar.DataPar)
    if len(loops) != len(iters):
        n_spatial = min(n_spatial, len(loops))
    spatial, red = loops[:n_spatial], loops[n_spatial:]
    if not spatial:
        return
    inner = spatial[-1]
    width = _vec_width(_extent(sch, inner), info.lanes)
    red_ext = 1
    for lp in red:
        ext = _extent(sch, lp)
        red_ext = red_ext * ext if (ext is not None and red_ext is not None) else None
    if red:
        if width is not None and red_ext is not None and red_ext <= 512 and _extent(sch, inner) <= 4096:
            # small window reductions (pooling, ...): reduce over the window, vectorise spatially
            sch.reorder(*spatial[:-1], *red, inner)
            if do_par and len(spatial) > 1:
                _parallel_prefix(sch, spatial[:-1], min_work=0)
            init = sch.decompose_reduction(blk, red[0])
            _split_vectorize(sch, sch.get_loops(init)[-1], width)
            _split_vectorize(sch, inner, width)
        elif do_par:
            _parallel_prefix(sch, spatial, min_work=0)
        return
    if width is not None:
        parts = _split_vectorize(sch, inner, width)
        outer = spatial[:-1] + (parts[:-1] if len(spatial) == 1 else [])
    else:
        outer = spatial[:-1] if len(spatial) > 1 else []
        if not outer and do_par:
            ext = _extent(sch, inner)
            if ext is None or ext >= 2 * _MIN_PARALLEL_WORK:
                o, _ = sch.split(inner, [None, 1024])
                outer = [o]
    if outer and do_par:
        _parallel_prefix(sch, outer, min_work=0)


def _schedule_generic(sch, info: CPUInfo):
    _inline_intermediates(sch, skip=[])
    for blk in _blocks(sch):
        try:
            _schedule_generic_block(sch, blk, info)
        except Exception as err:  # pylint: disable=broad-except
            log.debug("generic schedule failed for %s: %s", sch.get(blk).name_hint, err)


def _try_dlight(func, target):
    from tvm.s_tir import dlight as dl  # pylint: disable=import-outside-toplevel

    for rule in (dl.cpu.Reduction(), dl.cpu.GEMV()):
        try:
            res = rule.apply(func, target, False)
        except Exception:  # pylint: disable=broad-except
            res = None
        if res is None:
            continue
        if isinstance(res, list):
            if not res:
                continue
            res = res[0]
        return res.mod["main"], type(rule).__name__
    return None, None


def _special_schedule(sch, kinds, info: CPUInfo):
    """(strategy name, a function scheduling sch) for a function holding one of the non-GEMM specc kernels (by
    their blocks' kinds), or None."""
    if "conv1x1p" in kinds:
        return "conv1x1-pixels", lambda: _schedule_conv1x1_pixels(sch, kinds["conv1x1p"], info)
    if winograd.WINO_IN in kinds:
        def wino_in():
            winograd.schedule_input(sch, kinds[winograd.WINO_IN], info)
            for blk in _blocks(sch):  # the zero-bordered copy of the input
                if _kind(sch, blk) == "pad":
                    _schedule_generic_block(sch, blk, info)
        return "winograd-input", wino_in
    if winograd.WINO_OUT in kinds:
        return "winograd-output", lambda: winograd.schedule_output(sch, kinds[winograd.WINO_OUT], info)
    if "rowwise" in kinds:
        return "rowwise", lambda: _schedule_rowwise(sch, kinds["rowwise"], info)
    if "attn_qk" in kinds and "attn_pv" in kinds:
        return "attention", lambda: _schedule_attention(sch, kinds["attn_qk"], kinds["attn_pv"], info)
    return None


def schedule_primfunc(func: tirx.PrimFunc, target, info: CPUInfo):
    """Returns (scheduled PrimFunc or None, strategy name)."""
    sch = s_tir.Schedule(func)
    kinds = {}
    for blk in _blocks(sch):
        k = _kind(sch, blk)
        if k is not None:
            kinds.setdefault(k, blk)
    if "gemm" in kinds or "conv2d" in kinds:
        main = kinds.get("gemm") or kinds.get("conv2d")
        few = "specc.few_rows" in sch.get(main).annotations
        prefetch = "specc.prefetch_ki" in sch.get(main).annotations
        kind = _kind(sch, main)
        try:
            done = _schedule_tiled(sch, main, info)
            if done is not None and kind == "conv2d":
                return done[0], "tiled-conv2d" + done[1]
            name = ("tiled-gemm-few-rows" if few else "tiled-gemm-prefetch") if prefetch else "tiled-" + kind
            return (sch.mod["main"] if done is None else done[0]), name
        except Exception as err:  # pylint: disable=broad-except
            log.warning("specc tiled schedule failed (%s); falling back to generic", err)
            if _DEBUG:
                raise
            sch = s_tir.Schedule(func)
    else:
        special = _special_schedule(sch, kinds, info)
        if special is not None:
            name, run = special
            try:
                run()
                return sch.mod["main"], name
            except Exception as err:  # pylint: disable=broad-except
                log.warning("specc %s schedule failed (%s); falling back to generic", name, err)
                if _DEBUG:
                    raise
                sch = s_tir.Schedule(func)
        else:
            res, name = _try_dlight(func, target)
            if res is not None:
                return res, "dlight-" + name
    _schedule_generic(sch, info)
    return sch.mod["main"], "generic"


def schedule_module(mod: tvm.IRModule, target, info: CPUInfo):
    stats = {}
    updates = {}
    for gv, func in mod.functions_items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        if SCHEDULED_ATTR in func.attrs and int(func.attrs[SCHEDULED_ATTR]) == 1:
            continue
        try:
            from tvm.relax.analysis import has_reshape_pattern  # pylint: disable=import-outside-toplevel

            if has_reshape_pattern(func):
                # left alone: RewriteDataflowReshape (in tvm.compile) turns it into a free view
                stats[gv.name_hint] = "reshape-view"
                continue
        except Exception:  # pylint: disable=broad-except
            pass
        new_func, how = schedule_primfunc(func, target, info)
        stats[gv.name_hint] = how
        if new_func is not None:
            # keep the original function attributes (global_symbol, op_pattern, ...)
            for key, val in func.attrs.items():
                if key not in new_func.attrs:
                    new_func = new_func.with_attr(key, val)
            # opaque for any later FuseOps: scheduled PrimFuncs must not be re-fused
            updates[gv] = new_func.with_attr(SCHEDULED_ATTR, True).with_attr("op_pattern", 8)
    for gv, func in updates.items():
        mod[gv] = func
    return mod, stats
