"""Helpers every s_tir schedule here uses: block and loop queries, inlining, vectorising and parallelising."""
from __future__ import annotations

import tvm
from tvm import tirx

from .kernels import KIND

SCHEDULED_ATTR = "tirx.is_scheduled"
# below this many output elements a parallel loop costs more than it gains
_MIN_PARALLEL_WORK = 4096


# ----------------------------------------------------------------------------- helpers
def _root(sch):
    return sch.get_sblock("root")


def _blocks(sch):
    return list(sch.get_child_blocks(_root(sch)))


def _kind(sch, blk):
    ann = sch.get(blk).annotations
    val = ann.get(KIND) if ann is not None else None
    return str(val) if val is not None else None


def _ann_int(sch, blk, key):
    return int(sch.get(blk).annotations[key])


def _static(ext):
    return int(ext) if isinstance(ext, (int, tirx.IntImm)) else None


def _extent(sch, loop):
    return _static(sch.get(loop).extent)


def _is_spatial_block(sch, blk) -> bool:
    return all(iv.iter_type == tirx.IterVar.DataPar for iv in sch.get(blk).iter_vars)


def _output_blocks(sch):
    try:
        return list(sch.get_output_blocks(_root(sch)))
    except Exception:  # pylint: disable=broad-except
        return []


def _same(sch, a, b):
    return sch.get_sref(a).same_as(sch.get_sref(b))


def _in(sch, blk, lst):
    return any(_same(sch, blk, x) for x in lst)


def _inline_intermediates(sch, skip):
    """compute_inline every injective, non-output block (except `skip`)."""
    changed = True
    while changed:
        changed = False
        outs = _output_blocks(sch)
        for blk in _blocks(sch):
            if _in(sch, blk, skip) or _in(sch, blk, outs):
                continue
            if _kind(sch, blk) is not None:
                continue
            if not _is_spatial_block(sch, blk):
                continue
            try:
                sch.compute_inline(blk)
                changed = True
                break
            except Exception:  # pylint: disable=broad-except
                continue


def _vectorize_inner(sch, loops, lanes, max_factor=None, symbolic=False):
    """Vectorise the innermost loop when its extent is a static multiple of `lanes`; with `symbolic`, also a
    symbolic extent that is provably a multiple (attention's keys padded to whole tiles, ceil(T / nr) * nr): split by
    the largest such width."""
    if not loops:
        return loops
    inner = loops[-1]
    ext = _extent(sch, inner)
    if ext is None:
        vec = _symbolic_width(sch.get(inner).extent, lanes, max_factor) if symbolic else None
        if vec is None:
            return loops
        o, i = sch.split(inner, [None, vec])
        sch.vectorize(i)
        return loops[:-1] + [o, i]
    if ext < lanes:
        return loops
    if ext % lanes != 0:
        return loops
    vec = lanes
    # use up to 4 registers for long contiguous rows
    for f in (4 * lanes, 2 * lanes):
        if ext % f == 0 and (max_factor is None or f <= max_factor):
            vec = f
            break
    if ext == vec:
        sch.vectorize(inner)
        return loops
    o, i = sch.split(inner, [None, vec])
    sch.vectorize(i)
    return loops[:-1] + [o, i]


def _symbolic_width(ext, lanes, max_factor=None) -> int | None:
    """The largest of 4, 2 and 1 vectors (at most max_factor) that provably divides the symbolic extent `ext`."""
    analyzer = tvm.sym.Analyzer()
    for f in (4 * lanes, 2 * lanes, lanes):
        if (max_factor is None or f <= max_factor) and analyzer.can_prove(tirx.floormod(ext, f) == 0):
            return f
    return None


def _parallel_prefix(sch, loops, min_work=_MIN_PARALLEL_WORK, work=None):
    if not loops:
        return None
    if work is not None and work < min_work:
        return None
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    sch.parallel(fused)
    return fused


def _static_work(sch, blk):
    total = 1
    for iv in sch.get(blk).iter_vars:
        if iv.iter_type != tirx.IterVar.DataPar:
            continue
        ext = _static(iv.dom.extent)
        if ext is None:
            return None
        total *= ext
    return total


# ----------------------------------------------------------------------------- kernels
