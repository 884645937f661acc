"""NCHW{c}c activations: the TE kernels (conv2d_nchwc, max_pool2d_nchwc, the layout conversions, the weight
packing) and the rewrites that keep a CNN's activations in that layout from conv to conv (NCHWcRewrites, mixed into
rewrite.HeavyOpRewriter). See the schedules README, "NCHWc activations between convs" and "The stem, max pool and
global mean in NCHWc"."""
from __future__ import annotations

import os

import numpy as np
from tvm import relax, te, tirx

from . import winograd
from ._target import pick_mr
from .kernels import KIND, _conv_geometry, _int, _pad_nchw, _pad_nchwc, gemm
from .relax_util import _FUSABLE, _INJ, _all_int, _dtype, _static_shape

# elementwise ops that keep NCHW{c}c values NCHW{c}c (NCHWcRewrites._elemwise_nchwc)
NCHWC_ELEMWISE = ("relax.add", "relax.multiply", "relax.subtract", "relax.nn.relu")


def to_nchwc(x: te.Tensor, cb: int) -> te.Tensor:
    """NCHW -> NCHW{cb}c: [N, C/cb, H, W, cb] (C a multiple of cb)."""
    nb, c, h, w = [_int(s) for s in x.shape]
    return te.compute((nb, c // cb, h, w, cb), lambda n, co, y, xx, ci: x[n, co * cb + ci, y, xx],
                      name="specc_to_nchwc")


def from_nchwc(x: te.Tensor) -> te.Tensor:
    """NCHW{cb}c -> NCHW."""
    nb, cbk, h, w, cb = [_int(s) for s in x.shape]
    return te.compute((nb, cbk * cb, h, w), lambda n, c, y, xx: x[n, c // cb, y, xx, c % cb], name="specc_from_nchwc")


def max_pool2d_nchwc(x: te.Tensor, pool, strides, padding, out_hw) -> te.Tensor:
    """max pool of an NCHW{cb}c value [N, C/cb, H, W, cb] -> [N, C/cb, OH, OW, cb] (dilation 1), as one max over
    the window's taps per output pixel: cb contiguous lanes per tap, no running maximum in memory (TOPI's pool
    reduces into the output buffer, a load and a store per tap; 0.54 vs 0.30 ms for the NCHW pool of ResNet's stem
    here). A tap in the padding reads the nearest row / column instead, which lies inside the same window when the
    padding is smaller than the window: the maximum is unchanged. padding = (top, left, bottom, right)."""
    nb, cbk, h, w, cb = [_int(s) for s in x.shape]
    (kh, kw), (sh, sw), (pt, pl) = pool, strides, padding[:2]
    oh, ow = out_hw

    def rows(v, lim):
        return tirx.max(tirx.min(v, lim - 1), 0)

    def f(n, co, y, xx, ci):
        taps = [x[n, co, rows(y * sh + i - pt, h), rows(xx * sw + j - pl, w), ci] for i in range(kh) for j in range(kw)]
        out = taps[0]
        for t in taps[1:]:
            out = tirx.max(out, t)
        return out

    return te.compute((nb, cbk, oh, ow, cb), f, name="specc_max_pool_nchwc")


def pack_conv_weight_nchwc_np(w: np.ndarray, cb: int, nr: int) -> np.ndarray:
    """OIHW -> [O/nr, I/cb, KH, cb, KW, nr] (O a multiple of nr, I of cb), in the order conv2d_nchwc's reduction
    walks them (input channel block, tap row, channel, tap column): a step reads nr contiguous floats."""
    o, i, kh, kw = w.shape
    return np.ascontiguousarray(w.reshape(o // nr, nr, i // cb, cb, kh, kw).transpose(0, 2, 4, 3, 5, 1))


def conv2d_nchwc(x: te.Tensor, wp: te.Tensor, kh: int, kw: int, strides, padding, dilation, mr: int, nr: int,
                 out_dtype: str = "float32", oc_blocks: int = 1) -> te.Tensor:
    """conv2d on NCHW{cb}c activations: x [N, C/cb, H, W, cb], weights wp [OC/nr, C/cb, KH, cb, KW, nr]
    (pack_conv_weight_nchwc_np), output [N, OC/nr, OH, OW, nr], i.e. NCHW{nr}c: the layout onnxruntime runs a whole
    CNN in. The register tile (mr output pixels x nr channels) is stored as mr contiguous vectors: no transpose;
    a pixel's input channels are contiguous, so the reduction walks neither whole planes (the L1 set conflicts of
    NCHW 1x1 convs at 56x56) nor needs a row copy. The tap column is the innermost reduction axis (unrolled by the
    schedule), so the broadcast of an input pixel serves every tap of the row that reads it (input pixel x + kw
    feeds output pixels x..x+kw), as in the NCHW kernel: 3x3 convs ran 10-20% slower with the channel innermost.
    padding = (top, left, bottom, right).

    x may also be NCHW [N, C, H, W] when all its channels make one block (C = cb < nr, an image stem): the
    reduction's broadcasts are single floats either way, so the stem reads the image in place (its padded copy, if
    any, stays NCHW) and no NCHW{C}c copy of the image is made."""
    nchw = len(x.shape) == 4
    if nchw:
        nb, cb, h, w = [_int(s) for s in x.shape]
        cbk = 1
    else:
        nb, cbk, h, w, cb = [_int(s) for s in x.shape]
    sh, sw = strides
    dh, dw = dilation
    pt, pl, pb, pr = padding
    oh, ow, ow_p, hp, wpd = _conv_geometry(h, w, kh, kw, strides, dilation, padding, mr)
    if nchw:
        x4 = _pad_nchw(x, nb, cb, h, w, pt, pl, hp, wpd) if pt or pl or wpd != w or hp != h else x

        def xp_at(n, co, hh, ww, ci):
            return x4[n, co * cb + ci, hh, ww]
    else:
        x5 = _pad_nchwc(x, pt, pl, hp, wpd) if pt or pl or wpd != w or hp != h else x

        def xp_at(n, co, hh, ww, ci):
            return x5[n, co, hh, ww, ci]
    rco = te.reduce_axis((0, cbk), "ico")
    rkh = te.reduce_axis((0, kh), "kh")
    rkw = te.reduce_axis((0, kw), "kw")
    rci = te.reduce_axis((0, cb), "ici")
    acc = te.compute(
        (nb, _int(wp.shape[0]), oh, ow_p, nr),
        lambda n, oco, y, xx, oci: te.sum(
            xp_at(n, rco, y * sh + rkh * dh, xx * sw + rkw * dw, rci).astype(out_dtype)
            * wp[oco, rco, rkh, rci, rkw, oci].astype(out_dtype), axis=[rco, rkh, rci, rkw]),
        name="specc_conv", attrs={KIND: "conv2d", "specc.mr": mr, "specc.nr": nr, "specc.layout": "nchwc",
                                     "specc.oc_blocks": oc_blocks, "specc.ow": ow if isinstance(ow, int) else 0})
    return te.compute((nb, _int(wp.shape[0]), oh, ow, nr), lambda n, o, y, xx, i: acc[n, o, y, xx, i],
                      name="specc_conv_out")


def conv1x1_flat_nchwc(x: te.Tensor, wp: te.Tensor, mr: int, nr: int, out_dtype: str = "float32") -> te.Tensor:
    """A 1x1 stride-1 unpadded conv on NCHW{cb}c x [N, C/cb, H, W, cb] whose pixels are one run of H*W (the layout
    stores rows back to back): the register tiles of mr pixels walk that run, so rows that mr does not divide (AVX2's
    5- and 4-pixel tiles on 14- and 7-wide rows) cost no padded pixels per row and no padded copy of the input,
    only the last tile's (its reads clamped to the last pixel, its results dropped). The output is conv2d_nchwc's
    [N, OC/nr, H, W, nr]; the tiles go through a per-task plane buffer (schedule: `specc.flat`), which the
    epilogue reads; no next-panel prefetch. `_flat_tile` decides when. Measured on Zen 4, AVX2 code (`--mcpu
    haswell`), ResNet-50's 14- and 7-wide 1x1 convs: 0.84-0.92x of the row-tiled kernel, the model 0.966x."""
    nb = x.shape[0]
    cbk, h, w, cb = [_int(d) for d in x.shape[1:]]
    pixels = h * w
    padded = -(-pixels // mr) * mr
    rco = te.reduce_axis((0, cbk), "ico")
    rkh = te.reduce_axis((0, 1), "kh")
    rkw = te.reduce_axis((0, 1), "kw")
    rci = te.reduce_axis((0, cb), "ici")

    def at(n, co, p, ci):
        q = tirx.min(p, pixels - 1)
        return x[n, co, q // w, q % w, ci]

    acc = te.compute(
        (nb, _int(wp.shape[0]), 1, padded, nr),
        lambda n, oco, y, p, oci: te.sum(
            at(n, rco, p, rci).astype(out_dtype) * wp[oco, rco, rkh, rci, rkw, oci].astype(out_dtype),
            axis=[rco, rkh, rci, rkw]),
        name="specc_conv", attrs={KIND: "conv2d", "specc.mr": mr, "specc.nr": nr, "specc.layout": "nchwc",
                                     "specc.flat": 1})
    return te.compute((nb, _int(wp.shape[0]), h, w, nr), lambda n, o, y, xx, i: acc[n, o, 0, y * w + xx, i],
                      name="specc_conv_out")


def _flat_tile(h, w, mr: int, info) -> int:
    """The tile height (pixels) of a 1x1 stride-1 unpadded NCHWc conv run on its pixels as one run
    (conv1x1_flat_nchwc), or 0 to keep row tiles of `mr`: a run is taken when its tiles (pick_mr of H*W) compute
    fewer pixels than the row tiles do, i.e. where those do not cover a row exactly. `SPECC_CONV_FLAT=0`: never
    (A/B)."""
    if os.environ.get("SPECC_CONV_FLAT", "1") == "0" or not isinstance(h, int) or not isinstance(w, int):
        return 0
    flat_mr = pick_mr(h * w, info)
    return flat_mr if -(-h * w // flat_mr) * flat_mr < h * (-(-w // mr) * mr) else 0


def subsample_nchwc(x: te.Tensor, sh: int, sw: int) -> te.Tensor:
    """The pixels a 1x1 conv with strides (sh, sw) and no padding reads, x[:, :, ::sh, ::sw, :] of an NCHW{c}c x,
    copied out: the conv then runs with stride 1 on contiguous pixels (`_subsamples`)."""
    nb = x.shape[0]
    cbk, h, w, cb = [_int(d) for d in x.shape[1:]]
    return te.compute((nb, cbk, -(-h // sh), -(-w // sw), cb),
                      lambda n, co, y, xx, ci: x[n, co, y * sh, xx * sw, ci], name="specc_subsample")


class NCHWcRewrites:
    """The NCHW{c}c part of rewrite.HeavyOpRewriter (a mixin: it uses the mutator's builder_, lookup_binding,
    _call, _const_value, info, count, and the maps _nchwc / _to5 and switch stem_nchwc set up in its __init__)."""

    def _nchwc_rewrite(self, call, name: str):
        """An elementwise op, max pool or global pool on NCHW{c}c values, in NCHW{c}c; None when it does not apply."""
        if name in NCHWC_ELEMWISE:
            return self._elemwise_nchwc(call)
        if self.stem_nchwc and name == "relax.nn.max_pool2d":
            return self._pool_nchwc(call)
        if self.stem_nchwc and name in ("relax.mean", "relax.max"):
            return self._global_pool_nchwc(call)
        return None

    # -- NCHW{c}c activations ----------------------------------------------------------
    def _nchwc_of(self, expr):
        """The NCHW{nr}c value a (NCHW) expr was converted from, or None."""
        if not isinstance(expr, relax.Var):
            return None
        bound = self.lookup_binding(expr)
        return self._nchwc.get(bound) if isinstance(bound, relax.Call) else None

    def _converted(self, expr, cb: int):
        """expr (NCHW) as NCHW{cb}c: the NCHW{cb}c value it is a view of, else its one conversion."""
        x5 = self._nchwc_of(expr)
        if x5 is not None and _static_shape(x5)[-1] == cb:
            return x5
        cache = self._to5.setdefault(expr, {}) if isinstance(expr, relax.Var) and self.stem_nchwc else {}
        if cb not in cache:
            cache[cb] = self.builder_.emit(self._call(lambda t: to_nchwc(t, cb), [expr], "specc_to_nchwc",
                                                      _INJ))
        return cache[cb]

    def _pool_nchwc(self, call):
        """max_pool2d of an NCHW{c}c value (the stem's conv -> BN -> relu): pooled in NCHW{c}c, no conversion
        (max_pool2d_nchwc: windows with dilation 1, padding smaller than the window, no ceil mode, so every
        window holds an input pixel)."""
        a = call.attrs
        x5 = self._nchwc_of(call.args[0])
        out = _static_shape(call)
        pool = [int(v) for v in a.pool_size]
        pad = [int(v) for v in a.padding]
        pad = pad * 2 if len(pad) == 2 else pad
        if (x5 is None or a.layout != "NCHW" or (a.out_layout or "NCHW") != "NCHW" or out is None
                or not _all_int(out[2:]) or any(int(d) != 1 for d in a.dilation) or bool(a.ceil_mode)
                or not all(p < k for p, k in zip(pad, pool + pool))):
            return None
        strides = [int(v) for v in a.strides]
        y5 = self.builder_.emit(self._call(
            lambda t: max_pool2d_nchwc(t, pool, strides, pad, out[2:]), [x5], "specc_max_pool_nchwc", _INJ))
        return self._back_to_nchw(y5)

    def _global_pool_nchwc(self, call):
        """mean / max over H and W (keepdims: a global pool) of an NCHW{c}c value: reduced in NCHW{c}c, vectorised
        over the channel block, and only the [N, C/c, 1, 1, c] result converted (not the whole activation)."""
        x5 = self._nchwc_of(call.args[0])
        axes = call.attrs.axis
        if x5 is None or axes is None or not bool(call.attrs.keepdims):
            return None
        if sorted(int(a) % 4 for a in axes) != [2, 3]:
            return None
        op = relax.op.mean if call.op.name == "relax.mean" else relax.op.max
        return self._back_to_nchw(self.builder_.emit(op(x5, [2, 3], keepdims=True)))

    def _back_to_nchw(self, y5):
        """The NCHW view of a 5-D value, as a call whose PrimFunc is remembered: the next conv or elementwise op
        takes y5 instead, and the conversion is dead code when nothing else reads it."""
        out = self._call(from_nchwc, [y5], "specc_from_nchwc", _INJ)
        # keyed by the call itself (its PrimFunc is shared by every conversion of the same shape)
        self._nchwc[out] = y5
        return out

    def _elemwise_nchwc(self, call):
        """add / multiply / subtract / relu on NCHW{c}c values: an operand is a converted conv output or a constant
        per channel (folded batch norm) or a scalar. Keeps a chain conv -> BN -> (residual add) -> relu -> conv in
        NCHW{c}c, and the conv's fused epilogue on 5-D tensors (contiguous vectors)."""
        shape = _static_shape(call)
        if shape is None or len(shape) != 4 or _dtype(call) != "float32":
            return None
        args5, any5 = [], False
        for arg in call.args:
            a5 = self._nchwc_of(arg)
            if a5 is None and isinstance(arg, relax.Var):  # an NCHW value some conv converted already
                a5 = self._to5.get(arg, {}).get(self.info.nr)
            if a5 is not None:
                if _static_shape(arg) != shape:
                    return None
                args5.append(a5)
                any5 = True
                continue
            val = self._const_value(arg)
            if val is None:
                return None
            c = shape[1]
            if val.size == 1:
                args5.append(relax.const(val.astype("float32").reshape(())))
            elif val.size == c and val.ndim <= 4 and val.shape[-3:] in ((c, 1, 1),) and (val.ndim < 4 or val.shape[0] == 1):
                cb = self.info.nr
                args5.append(relax.const(np.ascontiguousarray(
                    val.astype("float32").reshape(1, c // cb, 1, 1, cb))))
            else:
                return None
        if not any5:
            return None
        y5 = self.builder_.emit(relax.Call(call.op, args5, call.attrs))
        return self._back_to_nchw(y5)

    def _conv2d_nchwc(self, call, x, wval, xs, strides, pad, dil, ow):
        """conv2d with NCHW{nr}c input and output (nchwc.conv2d_nchwc), for input and output channels that are
        multiples of nr; the input is converted unless it is the NCHW view of an NCHW{nr}c value.

        A conv with fewer input channels than nr (an image stem, 3 channels) reads its input as one block of all its
        channels (nchwc.conv2d_nchwc reads the NCHW image in place, as NCHW{ic}c), so its output, the BN / relu /
        max pool after it and the next convs stay NCHW{nr}c: no conversion of the 64-channel activations, and the
        stem's register tile is stored as contiguous vectors. A patchifying conv (stride = kernel size: ViT) keeps
        the NCHW kernel: its output goes to a reshape to tokens, which needs NCHW."""
        nr = self.info.nr
        oc, ic, kh, kw = wval.shape
        if oc % nr:
            return None
        cb = nr
        if ic % nr:
            if ic > nr or [kh, kw] == list(strides) or not self.stem_nchwc:
                return None
            cb = ic
        x5 = self._converted(x, cb) if cb == nr else x
        if kh == kw == 1 and cb == nr and _subsamples(strides, pad):
            sh, sw = strides
            x5 = self.builder_.emit(self._call(lambda t: subsample_nchwc(t, sh, sw), [x5], "specc_subsample", _INJ))
            strides = (1, 1)  # the conv below reads the copy
        hw = (_static_shape(x5) or [None] * 4)[2:4]
        tile = winograd.tile_size(kh, kw, strides, pad, dil, ic, oc, hw, self.info) if cb == nr else 0
        if tile:
            return self._conv2d_winograd(x5, wval, hw, tile)
        oc_blocks = self.info.conv1x1_oc_blocks(oc // nr, ow) if kh == kw == 1 else 1
        mr = pick_mr(ow, self.info, vectors=2 * oc_blocks)
        wp = relax.const(pack_conv_weight_nchwc_np(wval.astype("float32"), cb, nr))
        self.count["conv2d"] += 1
        if kh == kw == 1 and cb == nr and oc_blocks == 1 and not any(int(p) for p in pad) \
                and all(int(v) == 1 for v in strides):
            shape = _static_shape(x5)
            flat_mr = _flat_tile(shape[2] if shape else None, ow, mr, self.info)
            if flat_mr:
                y5 = self.builder_.emit(self._call(lambda t, wt: conv1x1_flat_nchwc(t, wt, flat_mr, nr), [x5, wp],
                                                   "specc_conv2d", _FUSABLE))
                return self._back_to_nchw(y5)
        y5 = self.builder_.emit(self._call(
            lambda t, wt: conv2d_nchwc(t, wt, kh, kw, strides, pad, dil, mr, nr, oc_blocks=oc_blocks), [x5, wp],
            "specc_conv2d", _FUSABLE))
        return self._back_to_nchw(y5)

    def _conv2d_winograd(self, x5, wval, hw, m: int):
        """A 3x3 stride-1 conv as Winograd F(m x m, 3x3) (winograd.py): the input transform, the (m + 2)^2 GEMMs
        with the weights transformed and packed here, and the output transform, which takes the conv's fused
        epilogue."""
        h, w = hw
        oc = wval.shape[0]
        mr, nr_g = winograd.gemm_tile(oc, -(-h // m) * -(-w // m), self.info)
        up = relax.const(winograd.transform_weight_np(wval.astype("float32"), nr_g, m))
        opaque = {"op_pattern": 8}
        v = self.builder_.emit(self._call(lambda t: winograd.winograd_input(t, m), [x5], "specc_winograd_in",
                                          opaque))
        mt = self.builder_.emit(self._call(lambda t, u: gemm(t, u, oc, mr, nr_g), [v, up], "specc_winograd_gemm",
                                           opaque))
        nr = self.info.nr
        self.count["conv2d"] += 1
        self.count["winograd"] += 1
        y5 = self.builder_.emit(self._call(lambda t: winograd.winograd_output(t, h, w, nr, m), [mt],
                                           "specc_conv2d", _FUSABLE))
        return self._back_to_nchw(y5)


def _subsamples(strides, pad) -> bool:
    """Whether a strided unpadded 1x1 NCHWc conv first copies out the pixels it reads (subsample_nchwc, a quarter of
    its input at stride 2) and runs with stride 1: its register tile then broadcasts from adjacent pixels instead of
    every other one. ResNet-50's three 1x1/2 downsamples in the model (Zen 4): AVX-512 code 0.89-0.97x with the copy
    included (0.02-0.07 ms), AVX2 code 0.76-0.94x, where they had been 1.5-1.65x onnxruntime's nodes.
    `SPECC_CONV_SUBSAMPLE=0` keeps the strided conv (A/B)."""
    return any(int(s) > 1 for s in strides) and not any(int(p) for p in pad) \
        and os.environ.get("SPECC_CONV_SUBSAMPLE", "1") != "0"
