"""TE compute definitions for the heavy operators (unscheduled).

Every compute here is written so that a register-tiled micro-kernel schedule is legal
and cheap:

* the reduction block writes a *padded*, "packed" intermediate whose innermost axis is
  the vectorised one (``NR`` output channels / columns) and whose tiled row axis is
  padded to a multiple of ``MR``; reads past the true row extent are clamped, so the
  micro-kernel never needs a bounds check;
* a separate block copies the valid part into the real (NCHW / row-major) output; the
  scheduler fuses elementwise epilogues (bias, relu, gelu, residual add, ...) into that
  copy and computes it per tile, so the padded intermediate lives in registers.

The reduction blocks carry the annotation ``specc.kernel`` (``"gemm"``, ``"conv2d"``,
``"attn_qk"``, ``"attn_pv"``) plus the tile sizes, which the scheduler
(``schedule.py``) keys on. Block annotations survive FuseOps/FuseTIR.
"""

from __future__ import annotations

import os

import numpy as np
from tvm import te, tirx

KIND = "specc.kernel"
# Name prefix of a symbolic row count that is a share of the tokens known only at run time (a routed expert's rows,
# rules/moe.py): its GEMMs get the few-rows tile and weight prefetching (rewrite.py, schedule.py).
FEW_ROWS_PREFIX = "routed"


def _pad_nchw(x, nb: int, c: int, h: int, w: int, pt: int, pl: int, hp: int, wpd: int):
    """x [nb, c, h, w] zero-padded to [nb, c, hp, wpd], pt rows above and pl columns left."""
    def f_pad(n, ci, hh, ww):
        cond = tirx.all(hh >= pt, hh < h + pt, ww >= pl, ww < w + pl)
        return tirx.if_then_else(cond, x[n, ci, hh - pt, ww - pl], tirx.const(0, x.dtype))
    return te.compute((nb, c, hp, wpd), f_pad, name="specc_pad", attrs={KIND: "pad"})


def _pad_nchwc(x, pt: int, pl: int, hp: int, wpd: int):
    """x [nb, c/cb, h, w, cb] (NCHW{cb}c) zero-padded to [nb, c/cb, hp, wpd, cb], pt rows above and pl columns
    left."""
    nb = x.shape[0]
    cbk, h, w, cb = [_int(d) for d in x.shape[1:]]

    def f_pad(n, co, hh, ww, ci):
        cond = tirx.all(hh >= pt, hh < h + pt, ww >= pl, ww < w + pl)
        return tirx.if_then_else(cond, x[n, co, hh - pt, ww - pl, ci], tirx.const(0, x.dtype))
    return te.compute((nb, cbk, hp, wpd, cb), f_pad, name="specc_pad", attrs={KIND: "pad"})


def _conv_geometry(h: int, w: int, kh: int, kw: int, strides, dilation, padding, mr: int) -> tuple:
    """(out height, out width, out width rounded up to the register tile's mr pixels, padded input height, padded
    input width that every tile's taps stay inside) of a conv; padding = (top, left, bottom, right)."""
    (sh, sw), (dh, dw), (pt, pl, pb, pr) = strides, dilation, padding
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    ow_p = _ceil_to(ow, mr)
    return oh, ow, ow_p, h + pt + pb, max(w + pl + pr, (ow_p - 1) * sw + dw * (kw - 1) + 1)


def _ceil_to(x, m):
    if isinstance(x, int):
        return -(-x // m) * m
    return tirx.floordiv(x + (m - 1), m) * m


def _is_static(x) -> bool:
    return isinstance(x, int) or isinstance(x, tirx.IntImm)


def _int(x):
    return int(x) if _is_static(x) else x


# ----------------------------------------------------------------------------- packing
def pack_weight_np(w: np.ndarray, nr: int) -> np.ndarray:
    """(K, N) -> (ceil(N/nr), K, nr), zero padded."""
    k, n = w.shape
    np_ = -(-n // nr) * nr
    if np_ != n:
        w = np.concatenate([w, np.zeros((k, np_ - n), w.dtype)], axis=1)
    return np.ascontiguousarray(w.reshape(k, np_ // nr, nr).transpose(1, 0, 2))


def pack_weight_te(w: te.Tensor, nr: int, transpose_b: bool = False) -> te.Tensor:
    """Runtime packing of a (.., K, N) (or (.., N, K) with transpose_b) tensor."""
    shape = [_int(s) for s in w.shape]
    *lead, a, b = shape
    k, n = (b, a) if transpose_b else (a, b)
    np_ = _ceil_to(n, nr)

    def f(*idx):
        *li, jo, kk, ji = idx
        j = jo * nr + ji
        val = w[(*li, j, kk)] if transpose_b else w[(*li, kk, j)]
        if isinstance(n, int) and n == np_:
            return val
        jc = tirx.min(j, n - 1)
        val = w[(*li, jc, kk)] if transpose_b else w[(*li, kk, jc)]
        return tirx.if_then_else(j < n, val, tirx.const(0, w.dtype))

    return te.compute((*lead, tirx.floordiv(np_, nr) if not isinstance(np_, int) else np_ // nr, k, nr), f,
                      name="specc_pack")


def pack_conv_weight_np(w: np.ndarray, nr: int) -> np.ndarray:
    """OIHW -> (ceil(O/nr), I, H, W, nr), zero padded."""
    o, i, kh, kw = w.shape
    op = -(-o // nr) * nr
    if op != o:
        w = np.concatenate([w, np.zeros((op - o, i, kh, kw), w.dtype)], axis=0)
    return np.ascontiguousarray(w.reshape(op // nr, nr, i, kh, kw).transpose(0, 2, 3, 4, 1))


def pack_conv_weight_te(w: te.Tensor, nr: int) -> te.Tensor:
    o, i, kh, kw = [_int(s) for s in w.shape]
    op = _ceil_to(o, nr)

    def f(oo, ii, hh, ww, oi):
        oc = oo * nr + oi
        if op == o:
            return w[oc, ii, hh, ww]
        return tirx.if_then_else(oc < o, w[tirx.min(oc, o - 1), ii, hh, ww], tirx.const(0, w.dtype))

    return te.compute((op // nr, i, kh, kw, nr), f, name="specc_pack")


# ----------------------------------------------------------------------------- GEMM
def gemm(x: te.Tensor, wp: te.Tensor, n_out: int, mr: int, nr: int,
         out_dtype: str = "float32", prefetch_ki: int = 0, few_rows: bool = False, glu=None,
         exact_tail: bool = False) -> te.Tensor:
    """y[*L, R, N] = x[*L, R, K] @ W[K, N] with W packed as wp[*L', N/nr, K, nr], where L' is the first len(L')
    of x's leading dims *L (none: one weight for every row; all: a batched matmul; the first: the (m + 2)^2
    Winograd GEMMs, one weight per tile position and every image).
    ``prefetch_ki``: > 0 asks the scheduler for the prefetching form (few_rows._prefetch_next_panel): every `ki`
    steps of the reduction, a tile prefetches its share of the next weight panel. ``few_rows``: the rows are a
    routed expert's (only names the schedule in last_stats()). ``exact_tail``: the last row tile computes only the
    rows that exist, for a run-time row count too (rewrite._exact_tail).
    ``glu``: a gated unit's activation (PrimExpr -> PrimExpr): W holds the gate and the up projection interleaved
    in halves of a panel (interleave_glu_np), and the result is act(gate) * up, [*L, R, N/nr, nr/2] (n_out = N/2
    columns viewed as panels): each register tile computes its own output block, the [R, N] product is never
    stored."""
    *lead, rows, kdim = [_int(s) for s in x.shape]
    n_pad = _int(wp.shape[-3]) * nr
    rows_p = _ceil_to(rows, mr)
    w_lead = len(wp.shape) - 3  # the leading dims of x the packed weight carries
    clamp = not (isinstance(rows, int) and rows % mr == 0)
    k = te.reduce_axis((0, kdim), "k")

    def f_acc(*idx):
        *li, i, j = idx
        ii = tirx.min(i, rows - 1) if clamp else i
        widx = (*li[:w_lead], j // nr, k, j % nr)
        return te.sum(x[(*li, ii, k)].astype(out_dtype) * wp[widx].astype(out_dtype), axis=k)

    attrs = {KIND: "gemm", "specc.mr": mr, "specc.nr": nr}
    if prefetch_ki:
        attrs["specc.prefetch_ki"] = prefetch_ki
    if few_rows:
        attrs["specc.few_rows"] = 1
    if exact_tail:
        attrs["specc.exact_tail"] = 1
    if glu is not None:
        return _gemm_glu(x, wp, rows, rows_p, clamp, mr, nr, glu, attrs, out_dtype)
    acc = te.compute((*lead, rows_p, n_pad), f_acc, name="specc_gemm", attrs=attrs)
    return te.compute((*lead, rows, n_out), lambda *idx: acc[idx], name="specc_gemm_out")


def _gemm_glu(x, wp, rows, rows_p, clamp, mr, nr, glu, attrs, out_dtype):
    """gemm(glu=...): one reduction block with two results per panel, the gate half and the up half of each
    register tile ([*L, R, N/nr, nr/2] each), so that the epilogue reads each at the same (row, panel, column) (the
    schedule places it per tile, and TVM needs every read index there to be a plain loop var)."""
    *lead, _, kdim = [_int(s) for s in x.shape]
    panels = _int(wp.shape[-3])
    half = nr // 2
    k = te.reduce_axis((0, kdim), "k")
    pair_sum = te.comm_reducer(lambda a, b: (a[0] + b[0], a[1] + b[1]),
                               lambda t0, t1: (tirx.const(0, t0), tirx.const(0, t1)), name="pair_sum")

    def f_acc(*idx):
        *li, i, p, c = idx
        ii = tirx.min(i, rows - 1) if clamp else i
        xv = x[(*li, ii, k)].astype(out_dtype)
        return pair_sum((xv * wp[p, k, c].astype(out_dtype), xv * wp[p, k, c + half].astype(out_dtype)), axis=k)

    gate, up = te.compute((*lead, rows_p, panels, half), f_acc, name="specc_gemm", attrs={**attrs, "specc.glu": 1})
    return te.compute((*lead, rows, panels, half), lambda *idx: glu(gate[idx]) * up[idx], name="specc_gemm_out")


def interleave_glu_np(w: np.ndarray, half: int) -> np.ndarray:
    """(K, 2H) = [gate | up] -> (K, 2H) whose every `2 * half` columns are `half` gate then `half` up columns, so
    that a panel of nr = 2 * half columns holds matching gate and up blocks (gemm(glu=...)). H % half == 0."""
    k, n2 = w.shape
    h = n2 // 2
    gate = w[:, :h].reshape(k, h // half, 1, half)
    up = w[:, h:].reshape(k, h // half, 1, half)
    return np.ascontiguousarray(np.concatenate([gate, up], axis=2).reshape(k, n2))


# ----------------------------------------------------------------------------- conv2d
def conv2d_nchw(x: te.Tensor, wp: te.Tensor, oc: int, kh: int, kw: int, strides, padding, dilation,
                mr: int, nr: int, out_dtype: str = "float32", row_major: bool = False) -> te.Tensor:
    """NCHW conv2d with OIHW weights packed as wp[OC/nr, IC, KH, KW, nr].

    padding = (top, left, bottom, right).

    ``row_major``: the input is first copied (padded) to xp[N, H, C, W], so that the reduction over input channels
    walks rows of W floats instead of whole H*W planes. Planes of 56x56 fp32 are 12544 bytes apart: 196 cache
    lines, a multiple of 4, so an L1 of 64 sets holds the same column of only 64/4 planes per way and a 1x1 conv
    over 256 channels at 56x56 thrashes it (18 GFLOP/s whatever the channel counts). A 1x1 conv with a stride
    reads only the pixels it needs (the copy subsamples)."""
    nb, c, h, w = [_int(s) for s in x.shape]
    sh, sw = strides
    dh, dw = dilation
    pt, pl, pb, pr = padding
    oh, ow, ow_p, hp, wpd = _conv_geometry(h, w, kh, kw, strides, dilation, padding, mr)
    need_pad = pt or pl or wpd != w or hp != h
    ric = te.reduce_axis((0, c), "ic")
    rkh = te.reduce_axis((0, kh), "kh")
    rkw = te.reduce_axis((0, kw), "kw")
    if row_major and kh == 1 and kw == 1 and not (pt or pl or pb or pr):
        # pointwise: copy only the pixels read, xp[n, y, ci, xx] = x[n, ci, y*sh, xx*sw]
        def f_rows(n, yy, ci, xx):
            src = tirx.min(xx, ow - 1) * sw if ow_p != ow else xx * sw
            return x[n, ci, yy * sh, src]
        xp = te.compute((nb, oh, c, ow_p), f_rows, name="specc_pad", attrs={KIND: "pad"})

        def read(n, y, xx):
            return xp[n, y, ric, xx]
    elif row_major:
        def f_pad_rows(n, hh, ci, ww):
            cond = tirx.all(hh >= pt, hh < h + pt, ww >= pl, ww < w + pl)
            return tirx.if_then_else(cond, x[n, ci, hh - pt, ww - pl], tirx.const(0, x.dtype))
        xp = te.compute((nb, hp, c, wpd), f_pad_rows, name="specc_pad", attrs={KIND: "pad"})

        def read(n, y, xx):
            return xp[n, y * sh + rkh * dh, ric, xx * sw + rkw * dw]
    else:
        xp = _pad_nchw(x, nb, c, h, w, pt, pl, hp, wpd) if need_pad else x

        def read(n, y, xx):
            return xp[n, ric, y * sh + rkh * dh, xx * sw + rkw * dw]
    acc = te.compute(
        (nb, _int(wp.shape[0]), oh, ow_p, nr),
        lambda n, oco, y, xx, oci: te.sum(
            read(n, y, xx).astype(out_dtype) * wp[oco, ric, rkh, rkw, oci].astype(out_dtype),
            axis=[ric, rkh, rkw]),
        name="specc_conv", attrs={KIND: "conv2d", "specc.mr": mr, "specc.nr": nr})
    return te.compute((nb, oc, oh, ow), lambda n, o, y, xx: acc[n, o // nr, y, xx, o % nr],
                      name="specc_conv_out")


def pack_conv1x1_weight_np(w: np.ndarray, mr: int) -> np.ndarray:
    """OIHW 1x1 weights [OC, IC, 1, 1] -> [OC/mr, IC, mr] (the mr output channels of a tile side by side per input
    channel: one broadcast each). OC must be a multiple of mr."""
    oc, ic = w.shape[:2]
    return np.ascontiguousarray(w.reshape(oc // mr, mr, ic).transpose(0, 2, 1))


def conv1x1_pixels(x: te.Tensor, wq: te.Tensor, oc: int, h: int, w: int, mr: int, nr: int, rows: int,
                   out_dtype: str = "float32") -> te.Tensor:
    """Stride-1 unpadded 1x1 NCHW conv as a GEMM per image, out[o, p] = W[o, :] @ X[:, p] over the H*W pixels p,
    with the pixel dim as the vector dim: the register tile is mr output channels (weights broadcast) x nr pixels.
    x is the input viewed as [N, C, H*W]. The image is cut in blocks of ``rows`` whole rows (H a multiple, rows*W a
    multiple of nr), each packed to panels xpk[N, H/rows, rows*W/nr, C, nr] (the panel a tile walks is contiguous:
    no L1 set conflicts between channel planes); a block's result is NCHW rows, without a transpose.
    wq: pack_conv1x1_weight_np, [OC/mr, C, mr]."""
    nb, c, _ = [_int(s) for s in x.shape]
    blk = rows * w
    assert h % rows == 0 and blk % nr == 0, (h, w, rows, nr)
    xpk = te.compute((nb, h // rows, blk // nr, c, nr),
                     lambda n, b, qt, ci, qi: x[n, ci, b * blk + qt * nr + qi], name="specc_pad", attrs={KIND: "pad"})
    k = te.reduce_axis((0, c), "ic")
    acc = te.compute(
        (nb, h // rows, oc, blk),
        lambda n, b, o, q: te.sum(wq[o // mr, k, o % mr].astype(out_dtype)
                                  * xpk[n, b, q // nr, k, q % nr].astype(out_dtype), axis=k),
        name="specc_conv", attrs={KIND: "conv1x1p", "specc.mr": mr, "specc.nr": nr})
    return te.compute((nb, oc, h, w), lambda n, o, y, xx: acc[n, y // rows, o, (y % rows) * w + xx],
                      name="specc_conv_out")


# ----------------------------------------------------------------------------- attention
def attention_bsnh(q: te.Tensor, k: te.Tensor, v: te.Tensor, bias, scale: float, causal: str | None,
                   mr: int, nr: int, lanes: int) -> te.Tensor:
    """softmax(q k^T * scale + bias [+ causal]) v, all in BSNH layout.

    q (B, S, H, D), k (B, T, H, D), v (B, T, H, Dv), bias broadcastable to (B, H, S, T).
    causal: None, "TopLeft" (j <= i) or "BottomRight" (j <= i + T - S)."""
    b, s, h, d = [_int(x) for x in q.shape]
    t = _int(k.shape[1])
    dv = _int(v.shape[3])
    t_p = _ceil_to(t, nr)
    s_p = _ceil_to(s, mr)
    clamp_s = not (isinstance(s, int) and s % mr == 0)
    pad_t = not (isinstance(t, int) and t % nr == 0)
    f32 = "float32"

    kt = te.compute((b, h, d, t_p), lambda bb, hh, dd, j: k[bb, tirx.min(j, t - 1) if pad_t else j, hh, dd],
                    name="specc_attn_kt")
    rd = te.reduce_axis((0, d), "d")
    qk = te.compute(
        (b, h, s_p, t_p),
        lambda bb, hh, i, j: te.sum(q[bb, tirx.min(i, s - 1) if clamp_s else i, hh, rd] * kt[bb, hh, rd, j], axis=rd),
        name="specc_attn_qk", attrs={KIND: "attn_qk", "specc.mr": mr, "specc.nr": nr})

    neg = tirx.min_value(f32)
    tails = _tails()
    # the keys past t (t rounded up to whole nr-wide tiles) are masked out. With a symbolic t, `likely(j < t)` lets
    # TVM's LoopPartition cut the loop over key tiles at t // nr: the tiles below read the bias as whole vectors and
    # test nothing, only the last one clamps (a static t keeps the clamp: a vector gather)
    split = tails and pad_t and not isinstance(t, int)

    def f_mask(bb, hh, i, j):
        val = qk[bb, hh, i, j] * tirx.const(scale, f32)
        in_keys = tirx.likely(j < t) if split else j < t
        if bias is not None:
            bshape = [_int(x) for x in bias.shape]
            nd = len(bshape)
            jb = j
            if pad_t:
                jb = tirx.if_then_else(in_keys, j, t - 1) if split else tirx.min(j, t - 1)
            full = [bb, hh, tirx.min(i, s - 1) if clamp_s else i, jb][4 - nd:]
            bidx = [0 if (isinstance(bs, int) and bs == 1) else ix for bs, ix in zip(bshape, full)]
            val = val + bias[tuple(bidx)].astype(f32)
        conds = []
        if pad_t:
            conds.append(in_keys)
        if causal == "TopLeft":
            conds.append(j <= i)
        elif causal == "BottomRight":
            conds.append(j <= i + (t - s))
        if conds:
            cond = tirx.all(*conds) if len(conds) > 1 else conds[0]
            # a Select vectorises (a blend; val reads in bounds either way), an if_then_else is scalarised per lane
            val = tirx.Select(cond, val, neg) if tails else tirx.if_then_else(cond, val, neg)
        return val

    sm = te.compute((b, h, s_p, t_p), f_mask, name="specc_attn_mask")
    lw = row_lanes(t_p, lanes) if isinstance(t_p, int) else lanes
    mx = _row_sum(lambda i, j: sm[(*i, j)], (b, h, s_p), t_p, lw, "specc_attn_max", combine="max")
    ex = te.compute((b, h, s_p, t_p), lambda bb, hh, i, j: fast_exp(sm[bb, hh, i, j] - mx[bb, hh, i]),
                    name="specc_attn_exp")
    sm_sum = _row_sum(lambda i, j: ex[(*i, j)], (b, h, s_p), t_p, lw, "specc_attn_sum")
    rsum = te.compute((b, h, s_p), lambda bb, hh, i: tirx.const(1.0, f32) / sm_sum[bb, hh, i],
                      name="specc_attn_rsum")
    rj3 = te.reduce_axis((0, t_p), "j3")
    # P.V runs over the padded keys too (their weights are 0): over t keys only, the normalisation pass, which is
    # placed for P.V's region, would cover t keys, no whole number of vectors. With a symbolic t, LoopPartition cuts
    # this loop at t too: below it V is read unclamped
    vj = rj3
    if pad_t:
        vj = tirx.if_then_else(tirx.likely(rj3 < t), rj3, t - 1) if split else tirx.min(rj3, t - 1)
    dv_p = _ceil_to(dv, nr)
    pad_dv = dv_p != dv
    def scaled(bb, hh, i, j):
        return ex[bb, hh, i, j] * rsum[bb, hh, i]

    weight = scaled
    if _normalised_weights():
        # exp * (1/sum) as its own vectorised pass over the query tile's rows: the P.V reduction then reads weights
        exn = te.compute((b, h, s_p, t_p), scaled, name="specc_attn_norm")
        weight = exn
    pv = te.compute(
        (b, h, s_p, dv_p),
        lambda bb, hh, i, e: te.sum(
            weight(bb, hh, i, rj3)
            * v[bb, vj, hh, tirx.min(e, dv - 1) if pad_dv else e],
            axis=rj3),
        name="specc_attn_pv", attrs={KIND: "attn_pv", "specc.mr": mr, "specc.nr": nr})
    return te.compute((b, s, h, dv), lambda bb, i, hh, e: pv[bb, hh, i, e], name="specc_attn_out")


def _tails() -> bool:
    """Whether attention keeps its padded keys (t rounded up to whole nr-wide tiles) out of the vector loops: only
    the last key tile tests and clamps (with a symbolic t, through LoopPartition on `likely`), the mask is a vector
    select, P.V reads V unclamped below t, and the softmax passes over a symbolic number of keys are vectorised. With a
    symbolic sequence length each of these was a scalar loop or a per-lane clamp, and BERT's masked attention ran
    at 1.4-1.7x its static build. SPECC_ATTN_TAILS=0: as before (A/B timing)."""
    return os.environ.get("SPECC_ATTN_TAILS", "1") != "0"


def _normalised_weights() -> bool:
    """Whether attention scales exp(score) by 1/sum in a pass of its own before P.V. Inside the P.V reduction each
    (row, key) weight cost a scalar multiply before its broadcast, redone for every column block, and the MR row
    scales held across the key loop took registers from the MR x 2-vector accumulators (6 + 12 + 2 of AVX2's 16).
    SPECC_ATTN_NORM_PASS=0: inside the reduction, as before (A/B timing)."""
    return os.environ.get("SPECC_ATTN_NORM_PASS", "1") != "0"


def _let(x, body_fn, name="v"):
    """Evaluate body_fn(v) with x bound once (avoids duplicating x in big expressions)."""
    if isinstance(x, (tirx.Var, tirx.FloatImm, tirx.IntImm)) or type(x).__name__ in ("BufferLoad", "ProducerLoad"):
        return body_fn(x)
    v = tirx.Var(name, x.ty)
    return tirx.Let(v, x, body_fn(v))


def fast_exp(x):
    """exp(x) for fp32 via 2^n * p(r) (Cephes polynomial): vectorisable, ~2 ulp."""
    return _let(x, _fast_exp, "exp_x")


def _fast_exp(x):
    f32 = "float32"
    c = lambda v: tirx.const(v, f32)  # noqa: E731
    xc = tirx.max(tirx.min(x, c(88.3762626647950)), c(-87.3))
    # x = n*ln2 + r
    val = _let(xc, lambda x: _let(tirx.floor(x * c(1.44269504088896341) + c(0.5)),
                                  lambda fx: _exp_poly(x, fx), "exp_n"), "exp_c")
    # exp(x) below -87.3 is exactly 0 (as with flush-to-zero), not the clamp's 1.2e-38: masked attention scores
    # (-inf, causal) would otherwise feed near-denormal weights into the PV product, whose results are denormal, and
    # x86 FMAs on denormals take microcode assists (~100x slower): GPT-2's causal attention ran 15x slower than
    # onnxruntime's for that alone
    return tirx.Select(x < c(-87.3), c(0.0), val)


def _exp_poly(x, fx):
    f32 = "float32"
    c = lambda v: tirx.const(v, f32)  # noqa: E731
    return _let(x - fx * c(0.693359375) + fx * c(2.12194440e-4), lambda r: _exp_poly2(r, fx), "exp_r")


def _exp_poly2(r, fx):
    f32 = "float32"
    c = lambda v: tirx.const(v, f32)  # noqa: E731
    r2 = r * r
    y = c(1.9875691500e-4)
    y = y * r + c(1.3981999507e-3)
    y = y * r + c(8.3334519073e-3)
    y = y * r + c(4.1665795894e-2)
    y = y * r + c(1.6666665459e-1)
    y = y * r + c(5.0000001201e-1)
    y = y * r2 + r + c(1.0)
    n = fx.astype("int32")
    pow2n = tirx.reinterpret(f32, (n + 127) << 23)
    return y * pow2n


# ----------------------------------------------------------------------------- fast math
def _poly(x, coeffs):
    """Horner: coeffs from highest to lowest degree."""
    acc = tirx.const(coeffs[0], "float32")
    for c in coeffs[1:]:
        acc = acc * x + tirx.const(c, "float32")
    return acc


def fast_tanh(x):
    """tanh for fp32: Eigen's 13/6 rational approximation on [-9, 9], vectorisable."""
    return _let(x, _fast_tanh, "tanh_x")


def _fast_tanh(x):
    f32 = "float32"
    xc = tirx.max(tirx.min(x, tirx.const(9.0, f32)), tirx.const(-9.0, f32))
    x2 = xc * xc
    p = _poly(x2, [-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11,
                   5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04,
                   4.89352455891786e-03]) * xc
    q = _poly(x2, [1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03,
                   4.89352518554385e-03])
    return tirx.if_then_else(tirx.abs(x) < tirx.const(0.0004, f32), x, p / q)


def fast_erf(x):
    """erf for fp32: Eigen's rational approximation on [-4, 4], vectorisable."""
    return _let(x, _fast_erf, "erf_x")


def _fast_erf(x):
    f32 = "float32"
    xc = tirx.max(tirx.min(x, tirx.const(4.0, f32)), tirx.const(-4.0, f32))
    x2 = xc * xc
    p = _poly(x2, [-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
                   -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
                   -1.60960333262415e-02]) * xc
    q = _poly(x2, [-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
                   -7.37332916720468e-03, -1.42647390514189e-02])
    return p / q


def fast_sigmoid(x):
    one = tirx.const(1.0, "float32")
    return one / (one + fast_exp(-x))


def _ew(fn):
    def build(t):
        # t(*i), not t[i]: a TensorSlice is no PrimExpr (no dtype for _let's variable)
        return te.compute(t.shape, lambda *i: fn(t(*i)), name="specc_fast_math")
    return build


# the activations as PrimExpr -> PrimExpr (also a gated unit's gate, gemm(glu=...))
FAST_SCALAR = {
    "relax.tanh": fast_tanh,
    "relax.erf": fast_erf,
    "relax.exp": fast_exp,
    "relax.sigmoid": fast_sigmoid,
    "relax.nn.silu": lambda v: v * fast_sigmoid(v),
    "relax.nn.gelu": lambda v: tirx.const(0.5, "float32") * v * (
        tirx.const(1.0, "float32") + fast_erf(v * tirx.const(0.7071067811865476, "float32"))),
    "relax.nn.gelu_tanh": lambda v: tirx.const(0.5, "float32") * v * (
        tirx.const(1.0, "float32") + fast_tanh(tirx.const(0.7978845608028654, "float32") * (
            v + tirx.const(0.044715, "float32") * v * v * v))),
}
FAST_UNARY = {name: _ew(fn) for name, fn in FAST_SCALAR.items()}
# gates of the gated linear units fused into their GEMM (SwiGLU, GeGLU)
GLU_GATES = ("relax.nn.silu", "relax.nn.gelu", "relax.nn.gelu_tanh")


def fast_softmax(x: te.Tensor, axis: int) -> te.Tensor:
    """softmax along `axis` with fast_exp; max / exp / sum / normalise stages."""
    nd = len(x.shape)
    axis = axis % nd
    ext = x.shape[axis]
    r1 = te.reduce_axis((0, ext), "k1")
    red_shape = [s for i, s in enumerate(x.shape) if i != axis]

    def full(idx, k):
        idx = list(idx)
        return tuple(idx[:axis] + [k] + idx[axis:])

    mx = te.compute(red_shape, lambda *i: te.max(x[full(i, r1)], axis=r1), name="specc_softmax_max")

    def drop(i):
        return tuple(v for d, v in enumerate(i) if d != axis)

    ex = te.compute(x.shape, lambda *i: fast_exp(x[i] - mx[drop(i)]), name="specc_softmax_exp")
    r2 = te.reduce_axis((0, ext), "k2")
    sm = te.compute(red_shape, lambda *i: te.sum(ex[full(i, r2)], axis=r2), name="specc_softmax_sum")
    return te.compute(x.shape, lambda *i: ex[i] / sm[drop(i)], name="specc_softmax_norm")


# ----------------------------------------------------------------------------- row-wise ops
def row_lanes(d: int, lanes: int) -> int | None:
    w = lanes
    while w >= 4:
        if d % w == 0 and d >= w:
            return w
        w //= 2
    return None


def _row_sum(x_at, lead_shape, d, lw, name, combine="sum"):
    """Two-stage row reduction: vector partials over `lw` lanes, then a short scalar reduce.

    x_at(lead_idx_tuple, j) -> value.  Returns a te.Tensor of shape lead_shape."""
    ro = te.reduce_axis((0, d // lw), name + "_o")
    red = te.sum if combine == "sum" else te.max
    part = te.compute((*lead_shape, lw), lambda *i: red(x_at(i[:-1], ro * lw + i[-1]), axis=ro),
                      name=name + "_part", attrs={KIND: "row_partial"})
    rl = te.reduce_axis((0, lw), name + "_l")
    return te.compute(lead_shape, lambda *i: red(part[(*i, rl)], axis=rl), name=name)


def layer_norm_rows(x: te.Tensor, gamma, beta, eps: float, lw: int) -> te.Tensor:
    """LayerNorm over the last axis (two-pass mean / variance, vectorised partial sums)."""
    *lead, d = [_int(s) for s in x.shape]
    lead = tuple(lead)
    f32 = "float32"
    inv_d = tirx.const(1.0 / d, f32)
    s1 = _row_sum(lambda i, j: x[(*i, j)], lead, d, lw, "specc_ln_sum")
    mean = te.compute(lead, lambda *i: s1[i] * inv_d, name="specc_ln_mean")
    s2 = _row_sum(lambda i, j: (x[(*i, j)] - mean[i]) * (x[(*i, j)] - mean[i]), lead, d, lw, "specc_ln_sq")
    rstd = te.compute(lead, lambda *i: tirx.rsqrt(s2[i] * inv_d + tirx.const(eps, f32)), name="specc_ln_rstd")

    def f_out(*i):
        val = (x[i] - mean[i[:-1]]) * rstd[i[:-1]]
        if gamma is not None:
            val = val * gamma[i[-1]]
        if beta is not None:
            val = val + beta[i[-1]]
        return val

    return te.compute(x.shape, f_out, name="specc_ln_out", attrs={KIND: "rowwise"})


def softmax_rows(x: te.Tensor, lw: int) -> te.Tensor:
    """softmax over the last axis with fast_exp and vectorised partial max / sum."""
    *lead, d = [_int(s) for s in x.shape]
    lead = tuple(lead)
    mx = _row_sum(lambda i, j: x[(*i, j)], lead, d, lw, "specc_sm_max", combine="max")
    ex = te.compute(x.shape, lambda *i: fast_exp(x[i] - mx[i[:-1]]), name="specc_sm_exp")
    s = _row_sum(lambda i, j: ex[(*i, j)], lead, d, lw, "specc_sm_sum")
    rs = te.compute(lead, lambda *i: tirx.const(1.0, "float32") / s[i], name="specc_sm_rsum")
    return te.compute(x.shape, lambda *i: ex[i] * rs[i[:-1]], name="specc_sm_out", attrs={KIND: "rowwise"})
