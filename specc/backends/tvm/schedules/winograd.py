"""Winograd F(m x m, 3x3), m = 2 or 4, for 3x3 stride-1 convs on NCHW{c}c activations: the kernels and their
schedules.

A 3x3 conv computes an m x m block of outputs from an alpha x alpha block of inputs (alpha = m + 2) with alpha^2
multiplies per (input, output) channel pair instead of 9 m^2: 16 instead of 36 for F(2x2), 36 instead of 144 for
F(4x4) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016):

    Y = A^T [ (G g G^T) . (B^T d B) ] A

with d an input tile, g the 3x3 filter and B, G, A the constant matrices below. Over all channels the elementwise
product becomes alpha^2 independent GEMMs, one per position e of the transformed tile:
M[e] (tiles x K) = V[e] (tiles x C) @ U[e] (C x K). Three Relax calls:

* `winograd_input`: V[e, n, t, c] = (B^T d B)[e] for tile t of image n, in two stages (B^T d, then . B) whose
  coefficients fold to constants once the schedule unrolls the tile positions; vectorised over the channel block.
* the alpha^2 GEMMs: kernels.gemm over leading dims (e, n), its weight (the transformed weights, packed at
  compile time as [alpha^2, K/nr, C, nr]) carrying the first, scheduled by schedule._schedule_tiled like every
  other GEMM (its register tile from CPUInfo.gemm_tile, the exact last row tile for a tile count that is no
  multiple of its height).
* `winograd_output`: Y = A^T M A in NCHW{nr}c, in two stages as the input's, the call FuseOps fuses the conv's
  epilogue (batch norm, residual add, relu) into; its schedule unrolls each m x m output block.

F(2x2)'s transforms have entries 0, +-1 and 1/2: the result differs from the direct conv by rounding. F(4x4)'s
reach 8 and 1/24: about 10x the rounding error of the direct conv (5e-6 to 1e-5 relative on one conv of 64-256
random channels; ResNet-50 1.1e-6 at the logits). `tile_size` decides which; see the schedules README, "Winograd".
"""
from __future__ import annotations

import os

import numpy as np
from tvm import te, tirx

from ._target import CPUInfo, pick_mr
from .kernels import KIND, _int, _pad_nchwc
from .sched_util import _blocks, _inline_intermediates, _kind, _output_blocks

# F(m x m, 3x3): Y = AT [(G g GT) * (BT d B)] A, for output tiles of m = 2 and m = 4 (Lavin & Gray's matrices;
# alpha = m + 2 inputs per tile side)
F2 = (((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)),
      ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0)),
      ((1, 1, 1, 0), (0, 1, -1, -1)))
F4 = (((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0), (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0),
       (0, 4, 0, -5, 0, 1)),
      ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6), (1 / 24, 1 / 12, 1 / 6),
       (1 / 24, -1 / 12, 1 / 6), (0, 0, 1)),
      ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1)))
MATRICES = {2: F2, 4: F4}

WINO_IN = "winograd_in"
WINO_OUT = "winograd_out"
WINO_STAGE = "winograd_stage"  # the first stage of either transform, computed per tile into a local buffer


def _tiles(hw, m: int) -> int:
    return -(-hw[0] // m) * -(-hw[1] // m)


def tile_size(kh: int, kw: int, strides, pad, dil, ic: int, oc: int, hw, info: CPUInfo) -> int:
    """The output tile m of the Winograd F(m x m, 3x3) a conv runs as, 0 for the direct kernel: 3x3, stride 1,
    dilation 1, padding 1 on every side, NCHW{nr}c input and output channels (multiples of nr), a static plane.
    F(2x2) (16 multiplies per 4 outputs) where the plane has at least two register tiles' worth (2 MR) of 2x2 tiles:
    each GEMM's weight panel then serves two row tiles or more; with fewer the GEMMs load the transformed weights
    (16/9 of the 3x3 weight) for a handful of rows. ResNet-50's 7x7 planes have 16: in the model (weights from
    memory) 1.61 ms against the direct kernel's 1.90 (Zen 4, 1 thread). F(4x4) (36 per 16) where the plane has 4 MR
    4x4 tiles: its weights are 36/16 of F(2x2)'s, so it needs about twice the rows per panel for the same weight
    traffic per multiply (ResNet's 14x14 planes, 16 tiles: F(4x4) 1.04 ms, F(2x2) 1.03; 28x28, 49 tiles: 0.70
    against 1.12). SPECC_CONV_WINOGRAD: 0 never, 2 F(2x2) only (A/B)."""
    mode = os.environ.get("SPECC_CONV_WINOGRAD", "1")
    if mode == "0" or (kh, kw) != (3, 3) or any(int(s) != 1 for s in strides) or any(int(d) != 1 for d in dil):
        return 0
    if [int(p) for p in pad] != [1, 1, 1, 1] or ic % info.nr or oc % info.nr:
        return 0
    if hw is None or not all(isinstance(v, int) for v in hw):
        return 0
    if mode != "2" and _tiles(hw, 4) >= 4 * info.default_mr:
        return 4
    return 2 if _tiles(hw, 2) >= 2 * info.default_mr else 0


def gemm_tile(oc: int, tiles: int, info: CPUInfo) -> tuple[int, int]:
    """(mr, nr) of the GEMMs' register tile: CPUInfo.gemm_tile's for K = oc columns, narrowed to the
    convolutions' 2-vector width when its panels do not divide oc."""
    rows, vectors = info.gemm_tile(oc)
    if oc % (vectors * info.lanes):
        rows, vectors = info.default_mr, 2
    return pick_mr(tiles, info, prefer=rows, vectors=max(vectors, 2)), vectors * info.lanes


def transform_weight_np(w: np.ndarray, nr: int, m: int = 2) -> np.ndarray:
    """OIHW 3x3 weights -> U = G g G^T packed as [alpha^2, O/nr, I, nr] (float32; computed in float64)."""
    o, i = w.shape[:2]
    alpha = m + 2
    g = np.asarray(MATRICES[m][1], np.float64)
    u = np.einsum("ak,oikl,bl->abio", g, w.astype(np.float64), g).reshape(alpha * alpha, i, o)
    return np.ascontiguousarray(u.reshape(alpha * alpha, i, o // nr, nr).transpose(0, 2, 1, 3).astype(np.float32))


def _combine(coeffs, terms):
    """sum(c * t) over the nonzero constant coefficients c: +-1 as adds and subtracts, others as multiplies."""
    out = None
    for c, t in zip(coeffs, terms):
        if c == 0:
            continue
        neg = c < 0
        mag = abs(c)
        t = t if mag == 1 else t * tirx.const(float(mag), "float32")
        if out is None:
            out = -t if neg else t
        else:
            out = out - t if neg else out + t
    return out


def _select(idx, options):
    """options[idx] for a loop var idx: a chain of selects that folds to one option once idx's loop is unrolled."""
    out = options[-1]
    for k in range(len(options) - 2, -1, -1):
        out = tirx.Select(idx == k, options[k], out)
    return out


def winograd_input(x: te.Tensor, m: int = 2) -> te.Tensor:
    """x [N, C/cb, H, W, cb] -> V [alpha^2, N, tiles, C]: tile t = (ty, tx) reads the alpha x alpha input block at
    (m ty - 1, m tx - 1) (zero outside the plane) and V[a * alpha + b] = (B^T d B)[a, b], in two stages:
    R[a, n, t, j, c] = (B^T d)[a, j], then V = sum_j BT[b][j] R[a, j]. Each stage selects its coefficients by
    one index (a, then b), so an unrolled copy of either is a few loads and adds once its selects fold; one
    select over all alpha^2 positions made F(4x4)'s kernel 10x slower to compile."""
    bt = MATRICES[m][0]
    alpha = m + 2
    nb = x.shape[0]
    cbk, h, w, cb = [_int(d) for d in x.shape[1:]]
    th, tw = -(-h // m), -(-w // m)
    hp, wp = m * th + 2, m * tw + 2

    xp = _pad_nchwc(x, 1, 1, hp, wp)

    def f_rows(a, n, t, j, c):
        ty, tx, co, ci = t // tw, t % tw, c // cb, c % cb
        d = [xp[n, co, m * ty + i, m * tx + j, ci] for i in range(alpha)]
        return _select(a, [_combine(bt[r], d) for r in range(alpha)])

    rows = te.compute((alpha, nb, th * tw, alpha, cbk * cb), f_rows, name="specc_winograd_rows",
                      attrs={KIND: WINO_STAGE})

    def f(e, n, t, c):
        a, b = e // alpha, e % alpha
        return _select(b, [_combine(bt[q], [rows[a, n, t, j, c] for j in range(alpha)]) for q in range(alpha)])

    return te.compute((alpha * alpha, nb, th * tw, cbk * cb), f, name="specc_winograd_in",
                      attrs={KIND: WINO_IN, "specc.tile": m})


def winograd_output(mt: te.Tensor, h: int, w: int, nr: int, m: int = 2) -> te.Tensor:
    """M [alpha^2, N, tiles, K] -> y [N, K/nr, H, W, nr] (NCHW{nr}c): output pixel (y, x) is entry (y % m, x % m) of
    A^T M A for tile (y // m, x // m), in two stages as the input transform: C[r, n, t, b, k] = (A^T M)[r, b], then
    y = sum_b AT[s][b] C[r, b]."""
    at = MATRICES[m][2]
    alpha = m + 2
    nb, kdim = mt.shape[1], _int(mt.shape[3])
    tw = -(-w // m)

    def f_cols(r, n, t, b, k):
        return _select(r, [_combine(at[q], [mt[a * alpha + b, n, t, k] for a in range(alpha)]) for q in range(m)])

    cols = te.compute((m, nb, mt.shape[2], alpha, kdim), f_cols, name="specc_winograd_cols",
                      attrs={KIND: WINO_STAGE})

    def f(n, ko, y, x, ki):
        t, r, s, k = (y // m) * tw + x // m, y % m, x % m, ko * nr + ki
        return _select(s, [_combine(at[q], [cols[r, n, t, b, k] for b in range(alpha)]) for q in range(m)])

    return te.compute((nb, kdim // nr, h, w, nr), f, name="specc_winograd_out", attrs={KIND: WINO_OUT, "specc.tile": m})


# ----------------------------------------------------------------------------- schedules
def _stage(sch, blk):
    """The first-stage block (WINO_STAGE) that blk reads."""
    return [p for p in sch.get_producers(blk) if _kind(sch, p) == WINO_STAGE][0]


def _stage_at(sch, stage, loop, lanes: int) -> None:
    """The first stage computed per task step at `loop` into a local buffer (at most alpha x alpha vectors: on the
    stack, see stack_tiles.py), its two small loops unrolled and its lanes vectorised."""
    sch.compute_at(stage, loop)
    sch.set_scope(stage, 0, "local")
    *_, l1, l2, lc = sch.get_loops(stage)
    lco, lci = sch.split(lc, [None, lanes])
    sch.unroll(l1)
    sch.unroll(l2)
    sch.unroll(lco)
    sch.vectorize(lci)


def schedule_input(sch, blk, info: CPUInfo) -> None:
    """One task per (image, tile): for each channel vector, the first stage's alpha x alpha values, then the
    alpha^2 positions unrolled (their selects fold) and the channel vector vectorised. The padded copy of the
    input stays a separate pass (the caller schedules it: schedule.schedule_primfunc)."""
    stage = _stage(sch, blk)
    e, n, t, c = sch.get_loops(blk)
    cio, cii = sch.split(c, [None, info.lanes])
    sch.reorder(n, t, cio, e, cii)
    sch.parallel(sch.fuse(n, t))
    sch.unroll(e)
    sch.vectorize(cii)
    _stage_at(sch, stage, cio, info.lanes)


def schedule_output(sch, blk, info: CPUInfo) -> None:
    """The output transform inlined into its fused epilogue (batch norm, residual, relu): one task per (image,
    channel block, row of tiles); per tile and channel vector the first stage's m x alpha values, then the m x m
    outputs unrolled (their selects fold) and the channel vector vectorised."""
    m = int(sch.get(blk).annotations["specc.tile"])
    stage = _stage(sch, blk)
    outs = _output_blocks(sch)
    if not any(sch.get(o).same_as(sch.get(blk)) for o in outs):
        sch.compute_inline(blk)
    _inline_intermediates(sch, skip=[])
    last = _blocks(sch)[-1]
    n, ko, y, x, ki = sch.get_loops(last)
    yo, yi = sch.split(y, [None, m])
    xo, xi = sch.split(x, [None, m])
    kio, kii = sch.split(ki, [None, info.lanes])
    sch.reorder(n, ko, yo, xo, kio, yi, xi, kii)
    sch.parallel(sch.fuse(n, ko, yo))
    sch.unroll(yi)
    sch.unroll(xi)
    sch.vectorize(kii)
    _stage_at(sch, stage, kio, info.lanes)
