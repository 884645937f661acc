"""Relax-level rewrite: replace heavy ops with call_tir to specc's own TE kernels.

Runs *before* LegalizeOps. Replaced ops:

* ``relax.nn.conv2d`` (NCHW / OIHW, groups == 1, fp32, static C/H/W/O/KH/KW; the batch dim
  may be symbolic) -> ``kernels.conv2d_nchw`` with the weight packed to
  (O/nr, I, KH, KW, nr); packed in numpy at compile time when the weight is a constant.
* ``relax.matmul`` with a 2-D right operand (static K, N; any leading dims on the left,
  symbolic allowed) -> ``kernels.gemm`` with the weight packed to (N/nr, K, nr); batched
  matmul with equal leading dims -> runtime-packed ``kernels.gemm``.
* ``relax.nn.attention`` / ``relax.nn.attention_bias`` (BSNH, no sliding window) ->
  ``kernels.attention_bsnh``.

The generated PrimFuncs carry ``op_pattern = kOutEWiseFusable`` so that FuseOps fuses
the following elementwise ops (bias, relu, gelu, residual add, folded batch norm) into
them; the scheduler then computes that epilogue per register tile.
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np
import tvm
from tvm import relax, tirx
from tvm.relax import PyExprMutator, expr_functor

from . import few_rows, kernels
from ._target import CPUInfo, pick_mr
from .nchwc import NCHWcRewrites
from .relax_util import _FUSABLE, _INJ, K_ELEMWISE, _all_int, _dtype, _same_dim, _static_shape

log = logging.getLogger("specc.tvm.schedules")
_DEBUG = os.environ.get("SPECC_TVM_DEBUG", "") == "1"

def _is_routed(rows) -> bool:
    """Whether a GEMM's row count is a routed expert's (rules/moe.py names it `routed*`): a few dozen rows."""
    return isinstance(rows, tirx.Var) and rows.name.startswith(kernels.FEW_ROWS_PREFIX)


# a constant weight of at least this many bytes (a vocabulary projection: GPT-2's lm_head holds 154 MB) gets an exact
# last row tile on a run-time row count too (few_rows._exact_tail_rows)
_EXACT_TAIL_WEIGHT = 32 << 20


def _exact_tail(rows, kdim: int, n: int, const_weight: bool) -> bool:
    """Whether a GEMM over a run-time row count (a sequence length) computes only its rows, through mr - 1 copies of
    its reduction nest (few_rows._exact_row_tail) instead of whole tiles: for the one GEMM whose time is most of a
    model's (a vocabulary projection), where the copies' compile time buys the padded rows' share of that time.
    `SPECC_EXACT_TAIL_BIG=0`: never (A/B)."""
    return const_weight and not isinstance(rows, int) and not _is_routed(rows) \
        and kdim * n * 4 >= _EXACT_TAIL_WEIGHT and os.environ.get("SPECC_EXACT_TAIL_BIG", "1") != "0"


def _prefetch_ki(rows, kdim: int, nr: int, const_weight: bool, l2: int, panels: int = 0, cores: int = 1) -> int:
    """The prefetch step (few_rows._prefetch_next_panel) of a GEMM with a constant weight, else 0: while a column
    panel (K x nr) is computed, the next one is prefetched into L2, `ki` reduction steps per prefetch round. The
    round's loop spills the accumulators (a call in the loop keeps LLVM from holding them in registers across it),
    so 32 steps make that 1/32 of the tile's loads; K must be a multiple.
    * A routed expert's rows: its weights come from memory on every call (each expert's are used by ~N*k/E rows
      and evicted by the other experts'); without the prefetch a panel's first row tile waits on memory.
    * Any other row count, when the current and the next panel fit in half the L2 (the other half holds the rows'
      input, read by every panel): a panel's first tile otherwise waits on L3 / memory (GPT-2's lm_head streams
      154 MB of weights). Panels over that size (K = 3072 with 64-column panels: 2 x 768 KiB of a 2 MiB L2) evict the
      input rows and ran slower. SPECC_GEMM_PREFETCH=0 keeps these GEMMs without it (A/B timing).
    K must have a divisor from 8 to 32 (SPECC_PREFETCH_ANY_K=0: only 32, 16 or 8, as before)."""
    if not const_weight:
        return 0
    if not _is_routed(rows):
        if os.environ.get("SPECC_GEMM_PREFETCH", "1") == "0" or 2 * kdim * nr * 4 > l2 // 2:
            return 0
    steps = (32, 16, 8)
    if os.environ.get("SPECC_PREFETCH_ANY_K", "1") != "0":
        # any K with a divisor from 8 to 32, largest first (the LSTM LM's decoder: K = 650, rounds of 26)
        steps = range(32, 7, -1)
    if few_rows.panel_tasks(panels, cores):
        # a task per column panel (few_rows.panel_tasks): rounds of up to 64 steps. The prefetch in each round
        # makes LLVM store the tile's accumulators after it (it cannot tell the prefetched weight from the
        # accumulator's workspace), so fewer rounds store less: against rounds of 32, GPT-2's lm_head 0.98x
        # (AVX-512 and AVX2 code), a GPT-2 block's GEMMs 0.98x (AVX2), 1.00x (AVX-512); rounds of 128 were slower
        # again (lm_head 1.03x)
        steps = range(64, 7, -1)
    return next((ki for ki in steps if kdim % ki == 0), 0)


def _conv_row_major(xs, ws, strides) -> bool:
    """Whether the conv kernel first copies its input to rows (xp[N, H, C, W], see kernels.conv2d_nchw): for a
    strided conv (the copy keeps only the pixels read: 1x1/2 downsamples ran 1.8x onnxruntime, 0.7-0.9x with it)
    and for 1x1 convs over planes of at least 32 cache lines, where each step of the channel reduction jumps a
    whole plane (1x1 convs at 56x56 and 28x28: 1.2-1.8x onnxruntime without, 0.9-1.3x with). Smaller planes, and
    3x3 stride-1 convs (their padded copy already exists), time the same or a little faster without the copy."""
    line = 64
    plane = xs[2] * xs[3] * 4
    return any(s > 1 for s in strides) or (ws[2] == 1 and ws[3] == 1 and plane >= 32 * line)


def _conv1x1_pixels_plan(xs, ws, strides, pad, info):
    """(mr, nr, rows) for kernels.conv1x1_pixels, or None to keep the direct conv. Stride-1 unpadded 1x1 convs
    only. mr: the default tile height (output channels, one broadcast each) dividing OC. Pixel blocks are `rows`
    whole rows (a divisor of H) whose input (rows x W x C fp32) fits half the L2, as it is reused by every channel
    block, and whose pixel count is a multiple of nr (2 vectors): no padded pixels. Most rows wins. ResNet-50 on
    AVX-512: 8 rows at 56x56; 28x28, 14x14 and 7x7 have no such block and keep the direct conv (a 1-vector tile,
    4 rows at 28x28, timed 1.0-1.2x the direct conv there).
    SPECC_CONV1X1_PIXELS=0 turns the kernel off (A/B timing)."""
    if os.environ.get("SPECC_CONV1X1_PIXELS", "1") == "0":
        return None
    if ws[2] != 1 or ws[3] != 1 or any(s != 1 for s in strides) or any(pad):
        return None
    top = 8 if info.num_regs >= 32 else 6
    mr = next((m for m in range(top, 3, -1) if ws[0] % m == 0), 0)
    if not mr:
        return None
    _, c, h, w = xs
    nr = info.nr
    fits = [r for r in range(1, h + 1)
            if h % r == 0 and (r * w) % nr == 0 and (r == 1 or r * w * c * 4 <= info.l2 // 2)]
    return (mr, nr, max(fits)) if fits else None




@expr_functor.mutator
class HeavyOpRewriter(PyExprMutator, NCHWcRewrites):
    """Replaces conv2d / matmul / attention calls with call_tir to specc kernels."""

    def __init__(self, mod: tvm.IRModule, info: CPUInfo, fast_math: bool = True):
        super().__init__(mod)
        self.info = info
        self.fast_math = fast_math
        self.count = {"conv2d": 0, "gemm": 0, "batched_gemm": 0, "attention": 0, "rowwise": 0, "fast_math": 0,
                      "gated_gemm": 0, "winograd": 0}
        # NCHW{nr}c activations between convs (_conv2d_nchwc): each from_nchwc call -> the 5-D value it converts
        self._nchwc: dict = {}
        # NCHW values converted to NCHW{cb}c for a conv: var -> {cb: 5-D value} (one conversion per value, also read
        # by the elementwise ops and pools that meet the NCHW value later, e.g. a residual add of the stem's output)
        self._to5: dict = {}
        self.use_nchwc = os.environ.get("SPECC_CONV_NCHWC", "1") != "0"
        # the stem, the max pool and the NCHW values read by several ops in NCHW{c}c; SPECC_STEM_NCHWC=0: each conv
        # converts its NCHW input itself, the stem and max pool stay NCHW (A/B timing)
        self.stem_nchwc = os.environ.get("SPECC_STEM_NCHWC", "1") != "0"
        # the function being rewritten, as written: var -> bound value, var -> uses (_gated_unit's pattern)
        self.bound: dict = {}
        self.uses: dict = {}

    def start_function(self, func) -> None:
        self.bound = dict(relax.analysis.get_var2val(func).items())
        # uses = the bindings (and the function's result) that read a var
        uses: dict = {}
        for val in [*self.bound.values(), func.body.body]:
            for v in relax.analysis.free_vars(val):
                uses[v] = uses.get(v, 0) + 1
        self.uses = uses

    # -- helpers ------------------------------------------------------------------
    def _const_value(self, expr, depth: int = 0):
        """numpy value of expr if it is a constant (looking through bindings and simple
        layout ops), else None."""
        if depth > 8:
            return None
        if isinstance(expr, tvm.ir.expr.Constant):
            return expr.value.numpy()
        if isinstance(expr, relax.Var):
            bound = self.lookup_binding(expr)
            if bound is None:
                return None
            return self._const_value(bound, depth + 1)
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            name = expr.op.name
            if name == "relax.permute_dims":
                val = self._const_value(expr.args[0], depth + 1)
                if val is None:
                    return None
                axes = expr.attrs.axes
                axes = None if axes is None else [int(a) for a in axes]
                return np.transpose(val, axes)
            if name == "relax.reshape":
                val = self._const_value(expr.args[0], depth + 1)
                shape = _static_shape(expr)
                if val is None or shape is None or not _all_int(shape):
                    return None
                return val.reshape(shape)
            if name == "relax.astype":
                val = self._const_value(expr.args[0], depth + 1)
                return None if val is None else val.astype(str(expr.attrs.dtype))
        return None

    def _call(self, fte, args, name, attrs):
        return self.builder_.call_te(fte, *args, primfunc_name_hint=name, primfunc_attrs=attrs)

    def _nr_for(self, n: int) -> int:
        # two vector registers wide unless the output is narrow
        return self.info.nr if n > self.info.lanes else self.info.lanes

    # -- dispatch -----------------------------------------------------------------
    def visit_call_(self, call):  # pylint: disable=arguments-renamed
        if (self.fast_math and isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.multiply"
                and os.environ.get("SPECC_GATED_GEMM", "1") != "0"):
            try:
                fused = self._gated_unit(call)
            except Exception as err:  # pylint: disable=broad-except
                if _DEBUG:
                    raise
                log.warning("specc: gated unit not fused (%s)", err)
                fused = None
            if fused is not None:
                return fused
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op):
            return call
        name = call.op.name
        try:
            new = self._nchwc_rewrite(call, name) if self.use_nchwc else None
            if new is not None:
                return new
            if name == "relax.nn.conv2d":
                new = self._conv2d(call)
                return call if new is None else new
            if name == "relax.matmul":
                new = self._matmul(call)
                return call if new is None else new
            if name in ("relax.nn.attention", "relax.nn.attention_bias"):
                new = self._attention(call)
                return call if new is None else new
            if self.fast_math and name in kernels.FAST_UNARY and _dtype(call.args[0]) == "float32":
                new = self._call(kernels.FAST_UNARY[name], [call.args[0]], "specc_" + name.split(".")[-1],
                                 {"op_pattern": K_ELEMWISE})
                self.count["fast_math"] += 1
                return new
            if name == "relax.nn.layer_norm":
                new = self._layer_norm(call)
                if new is not None:
                    return new
            if name == "relax.nn.softmax":
                new = self._softmax(call)
                if new is not None:
                    return new
            if self.fast_math and name == "relax.nn.softmax" and _dtype(call.args[0]) == "float32":
                axis = int(call.attrs.axis)
                self.count["fast_math"] += 1
                return self.builder_.call_te(lambda t: kernels.fast_softmax(t, axis), call.args[0],
                                             primfunc_name_hint="specc_softmax")
        except Exception as err:  # pylint: disable=broad-except
            # anything unexpected: keep the op, it will be legalized + generically scheduled
            if _DEBUG:
                raise
            log.warning("specc: keeping %s (rewrite failed: %s)", name, err)
            return call
        return call

    # -- conv2d -------------------------------------------------------------------
    def _conv2d(self, call):
        a = call.attrs
        x, w = call.args
        if (a.data_layout != "NCHW" or a.kernel_layout != "OIHW" or a.out_layout != "NCHW"
                or int(a.groups) != 1):
            return None
        if _dtype(x) != "float32" or _dtype(w) != "float32":
            return None
        if a.out_dtype not in (None, "", "float32") and str(a.out_dtype) not in ("", "float32"):
            return None
        xs, ws = _static_shape(x), _static_shape(w)
        if xs is None or ws is None or len(xs) != 4 or not _all_int(xs[1:]) or not _all_int(ws):
            return None
        oc, ic, kh, kw = ws
        if ic != xs[1]:
            return None
        strides = [int(s) for s in a.strides]
        dil = [int(d) for d in a.dilation]
        pad = [int(p) for p in a.padding]
        if len(pad) == 2:
            pad = [pad[0], pad[1], pad[0], pad[1]]
        ow = (xs[3] + pad[1] + pad[3] - dil[1] * (kw - 1) - 1) // strides[1] + 1
        nr = self._nr_for(oc)
        mr = pick_mr(ow, self.info)
        wval = self._const_value(w)
        if self.use_nchwc and wval is not None:
            new = self._conv2d_nchwc(call, x, wval, xs, strides, pad, dil, ow)
            if new is not None:
                return new
        plan = _conv1x1_pixels_plan(xs, ws, strides, pad, self.info) if wval is not None else None
        if plan is not None:
            self.count["conv2d"] += 1
            pmr, pnr, rows = plan
            wq = relax.const(kernels.pack_conv1x1_weight_np(wval.astype("float32"), pmr))
            # the [N, C, H*W] view of the input (a reshape: no copy once RewriteDataflowReshape has run)
            xr = self.builder_.emit(relax.op.reshape(x, [xs[0], ic, xs[2] * xs[3]]))
            return self._call(lambda t, wt: kernels.conv1x1_pixels(t, wt, oc, xs[2], xs[3], pmr, pnr, rows),
                              [xr, wq], "specc_conv2d", _FUSABLE)
        if wval is not None:
            wp = relax.const(kernels.pack_conv_weight_np(wval.astype("float32"), nr))
        else:
            wp = self.builder_.emit(self._call(lambda t: kernels.pack_conv_weight_te(t, nr), [w],
                                               "specc_pack_conv_weight", _INJ))
        self.count["conv2d"] += 1
        row_major = _conv_row_major(xs, ws, strides)
        return self._call(
            lambda t, wt: kernels.conv2d_nchw(t, wt, oc, kh, kw, strides, pad, dil, mr, nr, row_major=row_major),
            [x, wp], "specc_conv2d", _FUSABLE)

    # -- matmul -------------------------------------------------------------------
    def _matmul(self, call):
        a, b = call.args
        if _dtype(a) != "float32" or _dtype(b) != "float32":
            return None
        od = call.attrs.out_dtype
        if od is not None and str(od) not in ("", "float32", "void"):
            return None
        ash, bsh = _static_shape(a), _static_shape(b)
        if ash is None or bsh is None or len(ash) < 2 or len(bsh) < 2:
            return None
        kdim = ash[-1]
        if not isinstance(kdim, int) or not isinstance(bsh[-1], int):
            return None
        n = bsh[-1]
        if len(bsh) == 2:
            if bsh[0] != kdim:
                return None
            rows = ash[-2]
            bval = self._const_value(b)
            mr, nr, ki, exact = self._gemm_tile(rows, kdim, n, bval is not None)
            if bval is not None:
                wp = relax.const(kernels.pack_weight_np(bval.astype("float32"), nr))
            else:
                wp = self.builder_.emit(self._call(lambda t: kernels.pack_weight_te(t, nr), [b],
                                                   "specc_pack_weight", _INJ))
            self.count["gemm"] += 1
            return self._call(lambda t, wt: kernels.gemm(t, wt, n, mr, nr, prefetch_ki=ki, few_rows=_is_routed(rows),
                                                              exact_tail=exact), [a, wp], "specc_dense", _FUSABLE)
        # batched: require identical leading dims
        if len(ash) != len(bsh):
            return None
        for da, db in zip(ash[:-2], bsh[:-2]):
            if isinstance(da, int) and isinstance(db, int):
                if da != db:
                    return None
            elif not _same_dim(da, db):
                return None
        if bsh[-2] != kdim:
            return None
        rows = ash[-2]
        nr = self._nr_for(n)
        mr = pick_mr(rows, self.info)
        wp = self.builder_.emit(self._call(lambda t: kernels.pack_weight_te(t, nr), [b],
                                           "specc_pack_rhs", _INJ))
        self.count["batched_gemm"] += 1
        return self._call(lambda t, wt: kernels.gemm(t, wt, n, mr, nr), [a, wp],
                          "specc_batch_matmul", _FUSABLE)

    def _gemm_tile(self, rows, kdim: int, n: int, const_weight: bool) -> tuple[int, int, int, bool]:
        """(mr, nr, prefetch ki, exact last row tile on a run-time row count) of the GEMM kernel for `rows` x K @
        K x N."""
        # the GEMM's own register tile (CPUInfo.gemm_tile), wider than the convolutions' on AVX-512
        tile_rows, vectors = self.info.gemm_tile(n)
        exact = _exact_tail(rows, kdim, n, const_weight)
        # a sequence length, known at run time only: a power-of-two tile, unless the last tile is exact anyway
        if not isinstance(rows, int) and not _is_routed(rows) and not exact:
            tile_rows = self.info.run_time_rows_tile(tile_rows, vectors)
        nr = vectors * self.info.lanes
        # (a 1-vector tile keeps the row choices of the 2-vector one, as before)
        mr = pick_mr(rows, self.info, prefer=tile_rows, vectors=max(vectors, 2))
        if _is_routed(rows) and const_weight:
            mr, nr = self.info.few_rows_tile()
            nr = nr if n >= nr else self._nr_for(n)
        ki = _prefetch_ki(rows, kdim, nr, const_weight, self.info.l2, -(-n // nr), self.info.num_cores)
        return mr, nr, ki, exact

    # -- gated linear unit: act(x @ Wg) * (x @ Wu), merged as split(x @ [Wg | Wu]) ------------------------------
    def _bound_call(self, var, names):
        """The call `var` is bound to in the function as written, if its op is one of `names` and `var` has no other
        use (the fused kernel replaces it), else None."""
        val = self.bound.get(var)
        if isinstance(val, relax.TupleGetItem):
            return val if "tuple_get_item" in names and self.uses.get(var, 0) == 1 else None
        if not (isinstance(val, relax.Call) and isinstance(val.op, tvm.ir.Op) and val.op.name in names):
            return None
        return val if self.uses.get(var, 0) == 1 else None

    def _gated_unit(self, call):
        """multiply(act(split(x @ W)[0]), split(x @ W)[1]) with a constant W [K, 2H] (the merged gate and up
        projections of a SwiGLU / GeGLU block: passes/merge) -> one GEMM whose register tiles compute act(gate) * up
        (kernels.gemm(glu=...)): the [rows, 2H] product is never written out, and no split / activation / multiply
        kernel runs after it. None when the pattern does not match. SPECC_GATED_GEMM=0 turns it off (A/B timing)."""
        for gate_var, up_var in (call.args, call.args[::-1]):
            act = self._bound_call(gate_var, kernels.GLU_GATES)
            if act is None:
                continue
            gate = self._bound_call(act.args[0], ("tuple_get_item",))
            up = self._bound_call(up_var, ("tuple_get_item",))
            if gate is None or up is None or not gate.tuple_value.same_as(up.tuple_value):
                continue
            if (int(gate.index), int(up.index)) != (0, 1) or self.uses.get(gate.tuple_value, 0) != 2:
                continue
            split = self.bound.get(gate.tuple_value)
            if not (isinstance(split, relax.Call) and isinstance(split.op, tvm.ir.Op)
                    and split.op.name == "relax.split"):
                continue
            mm = self._bound_call(split.args[0], ("relax.matmul",))
            if mm is None:
                continue
            return self._glu_gemm(mm, split, act.op.name)
        return None

    def _glu_gemm(self, mm, split, act: str):
        x, w = mm.args
        xs, ws = _static_shape(x), _static_shape(w)
        if xs is None or ws is None or len(ws) != 2 or _dtype(x) != "float32" or _dtype(w) != "float32":
            return None
        kdim, n = ws
        if not (isinstance(kdim, int) and isinstance(n, int)) or xs[-1] != kdim or n % 2:
            return None
        h = n // 2
        parts = split.attrs.indices_or_sections
        axis = int(split.attrs.axis)
        halves = ([int(v) for v in parts] == [h]) if isinstance(parts, (list, tvm.ir.Array)) else \
            int(parts) == 2
        if not halves or axis % len(xs) != len(xs) - 1:
            return None
        wval = self._const_value(w) if not isinstance(w, relax.Var) else self._const_value(self.bound.get(w))
        if wval is None:
            return None
        rows = xs[-2]
        mr, nr, ki, exact = self._gemm_tile(rows, kdim, n, True)
        if nr % 2 or h % (nr // 2):
            return None
        wp = relax.const(kernels.pack_weight_np(kernels.interleave_glu_np(wval.astype("float32"), nr // 2), nr))
        gate = kernels.FAST_SCALAR[act]
        x_new = self.visit_expr(x)
        self.count["gated_gemm"] += 1
        self.count["gemm"] -= 1  # the unfused GEMM (rewritten before the multiply was seen) is dead now
        y = self.builder_.emit(self._call(
            lambda t, wt: kernels.gemm(t, wt, h, mr, nr, prefetch_ki=ki, few_rows=_is_routed(rows), glu=gate,
                                    exact_tail=exact), [x_new, wp], "specc_dense_glu",
            _FUSABLE))
        return relax.op.reshape(y, [*xs[:-1], h])

    # -- row-wise ops --------------------------------------------------------------
    def _row_dim(self, x, axis):
        shape = _static_shape(x)
        if shape is None or _dtype(x) != "float32" or not shape:
            return None
        if axis % len(shape) != len(shape) - 1 or not isinstance(shape[-1], int):
            return None
        return kernels.row_lanes(shape[-1], self.info.lanes)

    def _layer_norm(self, call):
        a = call.attrs
        axes = [int(v) for v in a.axes]
        x, gamma, beta = call.args
        if len(axes) != 1 or not a.center or not a.scale:
            return None
        lw = self._row_dim(x, axes[0])
        if lw is None or _dtype(gamma) != "float32" or _dtype(beta) != "float32":
            return None
        eps = float(a.epsilon)
        self.count["rowwise"] += 1
        return self._call(lambda t, g, b: kernels.layer_norm_rows(t, g, b, eps, lw), [x, gamma, beta],
                          "specc_layer_norm", {"op_pattern": 8})

    def _softmax(self, call):
        if not self.fast_math:
            return None
        x = call.args[0]
        lw = self._row_dim(x, int(call.attrs.axis))
        if lw is None:
            return None
        self.count["rowwise"] += 1
        return self._call(lambda t: kernels.softmax_rows(t, lw), [x], "specc_softmax", {"op_pattern": 8})

    # -- attention ----------------------------------------------------------------
    def _attention(self, call):
        a = call.attrs
        if getattr(a, "window_size", None) is not None:
            return None
        q, k, v = call.args[:3]
        bias = call.args[3] if len(call.args) > 3 else None
        if any(_dtype(t) != "float32" for t in (q, k, v)):
            return None
        qs, ks, vs = _static_shape(q), _static_shape(k), _static_shape(v)
        if qs is None or ks is None or vs is None or len(qs) != 4:
            return None
        d, dv = qs[3], vs[3]
        if not isinstance(d, int) or not isinstance(dv, int) or not isinstance(qs[2], int):
            return None
        if bias is not None and (_static_shape(bias) is None or len(_static_shape(bias)) > 4):
            return None
        if bias is not None:
            bias = self._unbroadcast(bias)
        scale = float(a.scale.value) if a.scale is not None else 1.0 / math.sqrt(d)
        causal = None if a.causal_mask is None else str(a.causal_mask)
        if causal not in (None, "TopLeft", "BottomRight"):
            return None
        nr = self.info.nr
        mr = pick_mr(qs[1], self.info)
        self.count["attention"] += 1
        args = [q, k, v] + ([bias] if bias is not None else [])

        def fte(tq, tk, tv, *tb):
            return kernels.attention_bsnh(tq, tk, tv, tb[0] if tb else None, scale, causal, mr, nr,
                                          self.info.lanes)

        # attention is not fused with neighbours: it is opaque for FuseOps
        return self._call(fte, args, "specc_attention", {"op_pattern": 8})


    def _unbroadcast(self, bias):
        """The tensor a `broadcast_to` bias was broadcast from, when the kernel can read it as it is (rank <= 4, each
        dim 1 or the full one; kernels.attention_bsnh reads a dim of 1 at 0): a padding mask [B, 1, 1, T] (BERT,
        rules/attention.py) then is not written out as [B, H, T, T] on every call, nor read back per query row.
        SPECC_ATTN_BIAS_VIEW=0: the broadcast bias (A/B timing)."""
        if os.environ.get("SPECC_ATTN_BIAS_VIEW", "1") == "0" or not isinstance(bias, relax.Var):
            return bias
        bound = self.lookup_binding(bias)
        if not (isinstance(bound, relax.Call) and isinstance(bound.op, tvm.ir.Op)
                and bound.op.name == "relax.broadcast_to"):
            return bias
        src, full = _static_shape(bound.args[0]), _static_shape(bias)
        if src is None or len(src) > 4 or _dtype(bound.args[0]) != _dtype(bias):
            return bias
        tail = full[len(full) - len(src):]
        if all(a == 1 or a == b if isinstance(a, int) else not isinstance(b, int) and _same_dim(a, b)
               for a, b in zip(src, tail)):
            return bound.args[0]
        return bias


def rewrite_heavy_ops(mod: tvm.IRModule, info: CPUInfo, fast_math: bool = True) -> tuple[tvm.IRModule, dict]:
    rw = HeavyOpRewriter(mod, info, fast_math)
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            rw.start_function(func)
            new_func = rw.visit_expr(func)
            rw.builder_.update_func(gv, new_func)
    return rw.builder_.get(), dict(rw.count)
