"""Winograd F(2x2, 3x3) for 3x3 stride-1 convs on NCHW{c}c activations: the kernels and their schedules.

A 3x3 conv computes a 2x2 block of outputs from a 4x4 block of inputs with 16 multiplies per (input, output)
channel pair instead of 36 (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016):

    Y = A^T [ (G g G^T) . (B^T d B) ] A

with d a 4x4 input tile, g the 3x3 filter and B, G, A the constant matrices below. Over all channels the
elementwise product becomes 16 independent GEMMs, one per position e of the 4x4 transformed tile:
M[e] (tiles x K) = V[e] (tiles x C) @ U[e] (C x K). Three Relax calls:

* `winograd_input`: V[e, n, t, c] = (B^T d B)[e] for tile t of image n (adds and subtracts only: B's entries
  are 0 and +-1); its schedule vectorises over the NCHWc channel block and unrolls the 16 positions.
* `winograd_gemm`: the 16 GEMMs, a `gemm` kernel block (kernels.KIND) with the transformed weights packed at
  compile time as [16, K/nr, C, nr], scheduled by schedule._schedule_tiled like every other GEMM (its register
  tile from CPUInfo.gemm_tile, the exact last row tile for a tile count that is no multiple of its height).
* `winograd_output`: Y = A^T M A (adds only) in NCHW{nr}c, the call FuseOps fuses the conv's epilogue (batch
  norm, residual add, relu) into; its schedule unrolls each 2x2 output block.

F(2x2, 3x3)'s transforms have entries 0, +-1 and 1/2 (G): the result differs from the direct conv by rounding
only (measured 1e-6 relative on ResNet-50). `use_winograd` decides when; see the schedules README, "Winograd".
"""
from __future__ import annotations

import os

import numpy as np
from tvm import te, tirx

from ._target import CPUInfo, pick_mr
from .kernels import KIND, _int
from .sched_util import _blocks, _inline_intermediates, _output_blocks

# F(2x2, 3x3): Y = AT [(G g GT) * (BT d B)] A
BT = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))
AT = ((1, 1, 1, 0), (0, 1, -1, -1))
ALPHA = 4  # the transformed tile is ALPHA x ALPHA
TILE = 2   # the output tile is TILE x TILE

WINO_IN = "winograd_in"
WINO_OUT = "winograd_out"


def enabled() -> bool:
    """SPECC_CONV_WINOGRAD=0 keeps every 3x3 conv direct (A/B timing)."""
    return os.environ.get("SPECC_CONV_WINOGRAD", "1") != "0"


def applies(kh: int, kw: int, strides, pad, dil, ic: int, oc: int, hw, info: CPUInfo) -> bool:
    """Whether a conv runs as Winograd F(2x2, 3x3): 3x3, stride 1, dilation 1, padding 1 on every side, NCHW{nr}c
    input and output channels (multiples of nr), a static plane of at least two register tiles' worth of 2x2 tiles
    (each GEMM's weight panel then serves two row tiles or more; with fewer the GEMMs are bound by loading the
    transformed weights, 16/9 of the 3x3 weight, for a handful of rows). ResNet-50's 7x7 planes have 16 tiles: in
    the model (weights from memory) 1.61 ms against the direct kernel's 1.90 (Zen 4, 1 thread)."""
    if not enabled() or (kh, kw) != (3, 3) or any(int(s) != 1 for s in strides) or any(int(d) != 1 for d in dil):
        return False
    if [int(p) for p in pad] != [1, 1, 1, 1] or ic % info.nr or oc % info.nr:
        return False
    if hw is None or not all(isinstance(v, int) for v in hw):
        return False
    return -(-hw[0] // TILE) * -(-hw[1] // TILE) >= 2 * info.default_mr


def gemm_tile(oc: int, tiles: int, info: CPUInfo) -> tuple[int, int]:
    """(mr, nr) of the 16 GEMMs' register tile: CPUInfo.gemm_tile's for K = oc columns, narrowed to the
    convolutions' 2-vector width when its panels do not divide oc."""
    rows, vectors = info.gemm_tile(oc)
    if oc % (vectors * info.lanes):
        rows, vectors = info.default_mr, 2
    return pick_mr(tiles, info, prefer=rows, vectors=max(vectors, 2)), vectors * info.lanes


def transform_weight_np(w: np.ndarray, nr: int) -> np.ndarray:
    """OIHW 3x3 weights -> U = G g G^T packed as [16, O/nr, I, nr] (float32; computed in float64)."""
    o, i = w.shape[:2]
    g = np.asarray(G, np.float64)
    u = np.einsum("ak,oikl,bl->abio", g, w.astype(np.float64), g).reshape(ALPHA * ALPHA, i, o)
    return np.ascontiguousarray(u.reshape(ALPHA * ALPHA, i, o // nr, nr).transpose(0, 2, 1, 3).astype(np.float32))


def _combine(coeffs, terms):
    """sum(c * t) for the nonzero integer coefficients c (0, +-1): adds and subtracts, no multiplies."""
    out = None
    for c, t in zip(coeffs, terms):
        if c == 0:
            continue
        if out is None:
            out = t if c == 1 else -t
        else:
            out = out + t if c == 1 else out - t
    return out


def _select(idx, options):
    """options[idx] for a loop var idx: a chain of selects that folds to one option once idx's loop is unrolled."""
    out = options[-1]
    for k in range(len(options) - 2, -1, -1):
        out = tirx.Select(idx == k, options[k], out)
    return out


def winograd_input(x: te.Tensor) -> te.Tensor:
    """x [N, C/cb, H, W, cb] -> V [16, N, tiles, C]: tile t = (ty, tx) reads the 4x4 input block at
    (2 ty - 1, 2 tx - 1) (zero outside the plane) and V[a * 4 + b] = (B^T d B)[a, b]."""
    nb = x.shape[0]
    cbk, h, w, cb = [_int(d) for d in x.shape[1:]]
    th, tw = -(-h // TILE), -(-w // TILE)
    hp, wp = TILE * th + 2, TILE * tw + 2

    def f_pad(n, co, yy, xx, ci):
        inside = tirx.all(yy >= 1, yy < h + 1, xx >= 1, xx < w + 1)
        return tirx.if_then_else(inside, x[n, co, yy - 1, xx - 1, ci], tirx.const(0, x.dtype))

    xp = te.compute((nb, cbk, hp, wp, cb), f_pad, name="specc_pad", attrs={KIND: "pad"})

    def f(e, n, t, c):
        ty, tx, co, ci = t // tw, t % tw, c // cb, c % cb
        d = [[xp[n, co, TILE * ty + i, TILE * tx + j, ci] for j in range(ALPHA)] for i in range(ALPHA)]
        a, b = e // ALPHA, e % ALPHA
        # rows: (B^T d)[a, j] for each j, then columns: (. B)[a, b] = sum_j BT[b][j] (B^T d)[a, j]
        rows = [_select(a, [_combine(BT[r], [d[i][j] for i in range(ALPHA)]) for r in range(ALPHA)])
                for j in range(ALPHA)]
        return _select(b, [_combine(BT[s], rows) for s in range(ALPHA)])

    return te.compute((ALPHA * ALPHA, nb, th * tw, cbk * cb), f, name="specc_winograd_in", attrs={KIND: WINO_IN})


def winograd_gemm(v: te.Tensor, up: te.Tensor, mr: int, nr: int) -> te.Tensor:
    """M[e, n, t, k] = sum_c V[e, n, t, c] U[e, c, k], U packed as up [16, K/nr, C, nr]: a `gemm` kernel block
    over leading dims (e, n); the rows (tiles) are padded to whole register tiles and the reads of the padding
    clamped to the last tile."""
    e_n, nb = _int(v.shape[0]), v.shape[1]
    tiles, cdim = _int(v.shape[2]), _int(v.shape[3])
    kp = _int(up.shape[1]) * nr
    rows_p = -(-tiles // mr) * mr
    k = te.reduce_axis((0, cdim), "k")

    def f_acc(e, n, i, j):
        ii = tirx.min(i, tiles - 1) if rows_p != tiles else i
        return te.sum(v[e, n, ii, k] * up[e, j // nr, k, j % nr], axis=k)

    acc = te.compute((e_n, nb, rows_p, kp), f_acc, name="specc_gemm",
                     attrs={KIND: "gemm", "specc.mr": mr, "specc.nr": nr})
    return te.compute((e_n, nb, tiles, kp), lambda e, n, i, j: acc[e, n, i, j], name="specc_gemm_out")


def winograd_output(m: te.Tensor, h: int, w: int, nr: int) -> te.Tensor:
    """M [16, N, tiles, K] -> y [N, K/nr, H, W, nr] (NCHW{nr}c): output pixel (y, x) is entry (y % 2, x % 2) of
    A^T M A for tile (y // 2, x // 2)."""
    nb, kdim = m.shape[1], _int(m.shape[3])
    tw = -(-w // TILE)

    def f(n, ko, y, x, ki):
        t, r, s, k = (y // TILE) * tw + x // TILE, y % TILE, x % TILE, ko * nr + ki
        mm = [[m[a * ALPHA + b, n, t, k] for b in range(ALPHA)] for a in range(ALPHA)]
        cols = [_select(r, [_combine(AT[q], [mm[a][b] for a in range(ALPHA)]) for q in range(TILE)])
                for b in range(ALPHA)]
        return _select(s, [_combine(AT[q], cols) for q in range(TILE)])

    return te.compute((nb, kdim // nr, h, w, nr), f, name="specc_winograd_out", attrs={KIND: WINO_OUT})


# ----------------------------------------------------------------------------- schedules
def schedule_input(sch, blk, info: CPUInfo) -> None:
    """One task per (image, tile row): for each tile and channel block, the 16 positions unrolled (their selects
    fold, the 16 input vectors are loaded once) and the channel block vectorised. The padded copy of the input
    stays a separate pass (the caller schedules it: schedule.schedule_primfunc)."""
    cb = int(sch.get(blk).reads[0].source.shape[-1])
    e, n, t, c = sch.get_loops(blk)
    co, ci = sch.split(c, [None, cb])
    cio, cii = sch.split(ci, [None, info.lanes])
    sch.reorder(n, t, co, cio, e, cii)
    sch.parallel(sch.fuse(n, t))
    sch.unroll(e)
    sch.vectorize(cii)


def schedule_output(sch, blk, info: CPUInfo) -> None:
    """The output transform inlined into its fused epilogue (batch norm, residual, relu): one task per (image,
    channel block, pair of output rows), each 2x2 output block unrolled (its selects fold and the 9 loads of each
    output share the 16 of the tile) and the channel block vectorised."""
    outs = _output_blocks(sch)
    if not any(sch.get(o).same_as(sch.get(blk)) for o in outs):
        sch.compute_inline(blk)
    _inline_intermediates(sch, skip=[])
    last = _blocks(sch)[-1]
    n, ko, y, x, ki = sch.get_loops(last)
    yo, yi = sch.split(y, [None, TILE])
    xo, xi = sch.split(x, [None, TILE])
    kio, kii = sch.split(ki, [None, info.lanes])
    sch.reorder(n, ko, yo, xo, kio, yi, xi, kii)
    sch.parallel(sch.fuse(n, ko, yo))
    sch.unroll(yi)
    sch.unroll(xi)
    sch.vectorize(kii)
