"""rnn / lstm / gru (batch first, PyTorch's gate order and two biases per gate), multi-layer and bidirectional.

Per layer and direction, the input projections of all time steps are one matmul (x @ W_ih^T + b_ih, the fast GEMM
kernel); the recurrence itself is
  * unrolled into Relax ops for short static lengths (T <= UNROLL), or
  * a TIR PrimFunc with a serial time loop (called with relax.call_tir) for symbolic or long lengths, written
    scheduled (TVM does not schedule it): per step the unit-blocked kernel (`Blocking`: W_hh packed per block of
    hidden units, the block's gate pre-activations in vector registers, vectorised gate math, blocks split across
    threads when W_hh is big enough); SPECC_TVM_RNN=scalar builds the plain loop nest of before (A/B). A GPU
    would need it scheduled across threads, so CUDA targets unroll static lengths up to GPU_UNROLL and report
    symbolic ones as E0501.

Gates (PyTorch): rnn  h' = act(xp + W_hh h + b_hh)
                 lstm i, f, g, o = xp + W_hh h + b_hh;  c' = f*c + i*g;  h' = o * tanh(c')
                 gru  r, z = σ(xp_rz + W_hh_rz h + b_hh_rz);  n = tanh(xp_n + r * (W_hn h + b_hn));  h' = (1-z)*n + z*h
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from tvm import relax, tirx
from tvm.script import tirx as T

from . import lowering

GATES = {"rnn": 1, "gru": 3, "lstm": 4}
UNROLL = 16  # longest static sequence unrolled on CPU
GPU_UNROLL = 64


def _check(node, in_types, target):
    length = in_types[0].shape[1]
    if target is not None and target.device == "cuda" and not (isinstance(length, int) and length <= GPU_UNROLL):
        return (f"the recurrence over sequence length {length} needs a CPU target (a serial TIR time loop); "
                f"on CUDA only static lengths up to {GPU_UNROLL} are unrolled")
    return None


@lowering("rnn", "lstm", "gru", check=_check)
def _recurrent(ctx, x, *state):
    kind, a = ctx.node.target, ctx.attrs
    xt = ctx.in_types[0]
    batch, length = xt.shape[0], xt.shape[1]
    dirs = 2 if a.bidirectional else 1
    h = a.hidden_size
    zeros = None
    outs_h, outs_c = [], []
    inp = x
    for layer in range(a.num_layers):
        ys = []
        for d in range(dirs):
            sfx = f"l{layer}" + ("_reverse" if d else "")
            idx = layer * dirs + d
            if state:
                h0 = ctx.emit(relax.op.take(state[0], relax.const(idx, "int64"), axis=0))
                c0 = ctx.emit(relax.op.take(state[1], relax.const(idx, "int64"), axis=0)) if kind == "lstm" else None
            else:
                if zeros is None:
                    zeros = ctx.emit(relax.op.zeros([ctx.dim(batch), h], "float32"))
                h0, c0 = zeros, (zeros if kind == "lstm" else None)
            unroll = isinstance(length, int) and (length <= UNROLL or ctx.on_gpu)
            scalar = unroll or kind not in _BLOCKED or os.environ.get("SPECC_TVM_RNN") == "scalar"
            plan = None if scalar else plan_blocking(ctx, kind, h)
            wih, bih = ctx.param(f"weight_ih_{sfx}"), (ctx.param(f"bias_ih_{sfx}") if a.bias else None)
            if plan is not None:  # xp's columns in the kernel's (unit block, gate, unit) order
                wih = plan.pack_rows(ctx, wih, (int(xt.shape[2]) if layer == 0 else h * dirs,))
                bih = plan.pack_rows(ctx, bih) if a.bias else None
            xp = ctx.emit(relax.op.linear(inp, wih, bih))
            whh = ctx.param(f"weight_hh_{sfx}")
            bhh = ctx.param(f"bias_hh_{sfx}") if a.bias else ctx.const(_zeros(GATES[kind] * h), "float32")
            cell = Cell(ctx, kind, h, getattr(a, "nonlinearity", "tanh"))
            if unroll:
                y, hn, cn = cell.unrolled(xp, whh, bhh, h0, c0, length, reverse=bool(d))
            else:
                y, hn, cn = cell.loop(xp, whh, bhh, h0, c0, batch, length, reverse=bool(d), plan=plan)
            ys.append(y)
            outs_h.append(hn)
            outs_c.append(cn)
        inp = ys[0] if dirs == 1 else ctx.emit(relax.op.concat(ys, axis=2))
    h_n = ctx.emit(relax.op.stack(outs_h, axis=0))
    if kind == "lstm":
        return inp, h_n, ctx.emit(relax.op.stack(outs_c, axis=0))
    return inp, h_n


@dataclass(frozen=True)
class Blocking:
    """The unit-blocked recurrence: hidden units in blocks of `units` (a multiple of the vector width), the last
    one zero padded. Per time step and block the kernel keeps the block's gates x units pre-activations in vector
    registers, adds h[k] * W_hh^T[k, gate, block] for k = 0..H-1 (the packed W_hh is [blocks, H, gates, units]:
    one contiguous stream per block), applies the gate math on the registers and writes the block's new h and c.
    Blocks are independent within a step, so `parallel` splits them across threads (each unit's gates stay in
    one task)."""

    kind: str
    hidden: int
    units: int
    parallel: bool

    @property
    def gates(self) -> int:
        return GATES[self.kind]

    @property
    def blocks(self) -> int:
        return -(-self.hidden // self.units)

    def _pad_units(self, ctx, x, rest):
        """[G*H, *rest] -> [G, H_padded, *rest] (zero rows for the padded units)."""
        g, h, hp = self.gates, self.hidden, self.blocks * self.units
        x = ctx.emit(relax.op.reshape(x, [g, h, *rest]))
        if hp != h:
            # a constant, not relax.op.zeros: FoldConstant leaves a creation op (and so the whole packing) unfolded
            x = ctx.emit(relax.op.concat([x, ctx.const(_zeros((g, hp - h, *rest)), "float32")], axis=1))
        return x

    def pack_rows(self, ctx, x, rest: tuple[int, ...] = ()):
        """W_ih [G*H, *rest] (rest = (I,)) or a bias [G*H] -> rows in (block, gate, unit) order."""
        x = self._pad_units(ctx, x, rest)
        x = ctx.emit(relax.op.reshape(x, [self.gates, self.blocks, self.units, *rest]))
        x = ctx.emit(relax.op.permute_dims(x, [1, 0, 2, *range(3, 3 + len(rest))]))
        return ctx.emit(relax.op.reshape(x, [self.blocks * self.gates * self.units, *rest]))

    def pack_hh(self, ctx, whh):
        """W_hh [G*H, H] -> [blocks, H (k), G, units]: W_hh^T's columns of one block, k-major."""
        x = self._pad_units(ctx, whh, (self.hidden,))
        x = ctx.emit(relax.op.reshape(x, [self.gates, self.blocks, self.units, self.hidden]))
        return ctx.emit(relax.op.permute_dims(x, [1, 3, 0, 2]))


def plan_blocking(ctx, kind: str, hidden: int) -> Blocking:
    """Block width and threading from the CPU target (`CPUInfo`)."""
    from ..codegen import tvm_target
    from ..schedules._target import cpu_info

    info = cpu_info(tvm_target(ctx.target) if ctx.target is not None else _host_target())
    return choose_blocking(kind, hidden, info)


def _host_target():
    import tvm

    return tvm.target.Target.from_device(tvm.cpu())


def choose_blocking(kind: str, hidden: int, info) -> Blocking:
    """units = lanes * v: the gates * v accumulator registers should be about 8 independent FMA chains (an FMA's
    latency times the FMA ports of current x86 and Arm cores), leave registers for the weight loads and the h[k]
    broadcast, and pad the hidden size by at most an eighth (halving v until so).

    Threads split the blocks when there are at least two per thread and a step's W_hh (gates*H*H floats) is at
    least half of one core's L2: a step then streams its weights from L2 or beyond and takes longer than the
    fork/join of the parallel loop a few times over; smaller steps are faster on one thread (2-core Xeon, lstm per
    step: H=128 (256 KiB) 3.5 us serial vs 5.0 us split; H=256 (1 MiB) 13.4 vs 11.7; H=512 (4 MiB, each half
    fits a core's 2 MiB L2) 207 vs 69)."""
    gates, lanes = GATES[kind], info.lanes
    v = 1
    while gates * v * 2 <= 8 and gates * v * 2 + 2 <= info.num_regs:
        v *= 2
    while v > 1 and (-(-hidden // (lanes * v)) * lanes * v - hidden) * 8 > hidden:
        v //= 2
    blocks = -(-hidden // (lanes * v))
    weight_bytes = 4 * gates * hidden * hidden
    parallel = info.num_cores > 1 and blocks >= 2 * info.num_cores and 2 * weight_bytes >= info.l2
    return Blocking(kind, hidden, lanes * v, parallel)


def _zeros(shape):
    import numpy as np

    return np.zeros(shape, "float32")


class Cell:
    def __init__(self, ctx, kind: str, hidden: int, nonlinearity: str) -> None:
        self.ctx, self.kind, self.h, self.act = ctx, kind, hidden, nonlinearity

    # -- unrolled: Relax ops per time step ---------------------------------------------------------------------
    def unrolled(self, xp, whh, bhh, h0, c0, length: int, reverse: bool):
        ctx, op = self.ctx, relax.op
        h, c = h0, c0
        ys = [None] * length
        whh_t = ctx.emit(op.permute_dims(whh, [1, 0]))
        for step in range(length):
            s = length - 1 - step if reverse else step
            xs = ctx.emit(op.squeeze(op.strided_slice(xp, [1], [s], [s + 1]), [1]))  # [B, G*H]
            hp = ctx.emit(op.add(op.matmul(h, whh_t), bhh))
            h, c = self.step(xs, hp, h, c)
            ys[s] = h
        y = ctx.emit(op.stack(ys, axis=1))
        return y, h, c

    def step(self, xs, hp, h, c):
        ctx, op, n = self.ctx, relax.op, self.h

        def gate(t, i):
            return op.strided_slice(t, [1], [i * n], [(i + 1) * n])

        if self.kind == "rnn":
            pre = op.add(xs, hp)
            return ctx.emit(op.tanh(pre) if self.act == "tanh" else op.nn.relu(pre)), None
        if self.kind == "lstm":
            pre = ctx.emit(op.add(xs, hp))
            i, f, g, o = (ctx.emit(gate(pre, k)) for k in range(4))
            c = ctx.emit(op.add(op.multiply(op.sigmoid(f), c), op.multiply(op.sigmoid(i), op.tanh(g))))
            return ctx.emit(op.multiply(op.sigmoid(o), op.tanh(c))), c
        r = ctx.emit(op.sigmoid(op.add(gate(xs, 0), gate(hp, 0))))
        z = ctx.emit(op.sigmoid(op.add(gate(xs, 1), gate(hp, 1))))
        nn_ = ctx.emit(op.tanh(op.add(gate(xs, 2), op.multiply(r, gate(hp, 2)))))
        return ctx.emit(op.add(op.multiply(op.subtract(relax.const(1.0, "float32"), z), nn_),
                               op.multiply(z, h))), None

    # -- a TIR time loop -----------------------------------------------------------------------------------------
    def loop(self, xp, whh, bhh, h0, c0, batch, length, reverse: bool, plan: "Blocking | None" = None):
        """plan: the unit-blocked kernel (xp already in its packed layout, see `Blocking`); None: the scalar loop."""
        ctx = self.ctx
        if plan is None:
            whh = ctx.emit(relax.op.permute_dims(whh, [1, 0]))  # [H, G*H]: contiguous in the gate dim
            fn = _PRIMFUNCS[self.kind](self.h, int(reverse), self.act == "relu")
            name = f"specc_{self.kind}{'_reverse' if reverse else ''}_{self.h}"
        else:
            whh, bhh = plan.pack_hh(ctx, whh), plan.pack_rows(ctx, bhh)
            fn = _BLOCKED[self.kind](plan, int(reverse), self.act == "relu")
            name = f"specc_{self.kind}{'_reverse' if reverse else ''}_{self.h}_u{plan.units}"
        gv = ctx.bb.add_func(fn, name)
        b, s = ctx.dim(batch), ctx.dim(length)
        outs = [relax.TensorType([b, s, self.h], "float32"), relax.TensorType([b, self.h], "float32")]
        args = [xp, whh, bhh, h0]
        if self.kind == "lstm":
            outs.append(relax.TensorType([b, self.h], "float32"))
            args.append(c0)
        res = ctx.emit(relax.call_tir(gv, args, out_ty=outs))
        items = [ctx.emit(relax.TupleGetItem(res, i)) for i in range(len(outs))]
        return items[0], items[1], (items[2] if self.kind == "lstm" else None)


def _rnn_func(H: int, rev: int, relu: bool):
    GH = H
    use_relu = int(relu)

    @T.prim_func(private=True)
    def rnn(xp_h: T.handle, whh_t: T.Buffer((H, GH), "float32"), bhh: T.Buffer((GH,), "float32"), h0_h: T.handle,
            y_h: T.handle, hn_h: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        B = T.int64()
        S = T.int64()
        xp = T.match_buffer(xp_h, (B, S, GH), "float32")
        h0 = T.match_buffer(h0_h, (B, H), "float32")
        y = T.match_buffer(y_h, (B, S, H), "float32")
        hn = T.match_buffer(hn_h, (B, H), "float32")
        hp = T.alloc_buffer((B, GH), "float32")
        for b, u in T.grid(B, H):
            hn[b, u] = h0[b, u]
        for step in range(S):
            t = step + rev * (S - 1 - 2 * step)
            for b, j in T.grid(B, GH):
                hp[b, j] = bhh[j]
            for b, k, j in T.grid(B, H, GH):
                hp[b, j] = hp[b, j] + hn[b, k] * whh_t[k, j]
            for b, u in T.grid(B, H):
                pre: T.float32 = xp[b, t, u] + hp[b, u]
                hn[b, u] = T.if_then_else(use_relu == 1, T.max(pre, T.float32(0)), T.tanh(pre))
                y[b, t, u] = hn[b, u]
    return rnn


def _lstm_func(H: int, rev: int, relu: bool):
    GH = 4 * H

    @T.prim_func(private=True)
    def lstm(xp_h: T.handle, whh_t: T.Buffer((H, GH), "float32"), bhh: T.Buffer((GH,), "float32"),
             h0_h: T.handle, c0_h: T.handle, y_h: T.handle, hn_h: T.handle, cn_h: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        B = T.int64()
        S = T.int64()
        xp = T.match_buffer(xp_h, (B, S, GH), "float32")
        h0 = T.match_buffer(h0_h, (B, H), "float32")
        c0 = T.match_buffer(c0_h, (B, H), "float32")
        y = T.match_buffer(y_h, (B, S, H), "float32")
        hn = T.match_buffer(hn_h, (B, H), "float32")
        cn = T.match_buffer(cn_h, (B, H), "float32")
        hp = T.alloc_buffer((B, GH), "float32")
        for b, u in T.grid(B, H):
            hn[b, u] = h0[b, u]
            cn[b, u] = c0[b, u]
        for step in range(S):
            t = step + rev * (S - 1 - 2 * step)
            for b, j in T.grid(B, GH):
                hp[b, j] = bhh[j]
            for b, k, j in T.grid(B, H, GH):
                hp[b, j] = hp[b, j] + hn[b, k] * whh_t[k, j]
            for b, u in T.grid(B, H):
                ig: T.float32 = T.sigmoid(xp[b, t, u] + hp[b, u])
                fg: T.float32 = T.sigmoid(xp[b, t, H + u] + hp[b, H + u])
                gg: T.float32 = T.tanh(xp[b, t, 2 * H + u] + hp[b, 2 * H + u])
                og: T.float32 = T.sigmoid(xp[b, t, 3 * H + u] + hp[b, 3 * H + u])
                cn[b, u] = fg * cn[b, u] + ig * gg
                hn[b, u] = og * T.tanh(cn[b, u])
                y[b, t, u] = hn[b, u]
    return lstm


def _gru_func(H: int, rev: int, relu: bool):
    GH = 3 * H

    @T.prim_func(private=True)
    def gru(xp_h: T.handle, whh_t: T.Buffer((H, GH), "float32"), bhh: T.Buffer((GH,), "float32"), h0_h: T.handle,
            y_h: T.handle, hn_h: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        B = T.int64()
        S = T.int64()
        xp = T.match_buffer(xp_h, (B, S, GH), "float32")
        h0 = T.match_buffer(h0_h, (B, H), "float32")
        y = T.match_buffer(y_h, (B, S, H), "float32")
        hn = T.match_buffer(hn_h, (B, H), "float32")
        hp = T.alloc_buffer((B, GH), "float32")
        for b, u in T.grid(B, H):
            hn[b, u] = h0[b, u]
        for step in range(S):
            t = step + rev * (S - 1 - 2 * step)
            for b, j in T.grid(B, GH):
                hp[b, j] = bhh[j]
            for b, k, j in T.grid(B, H, GH):
                hp[b, j] = hp[b, j] + hn[b, k] * whh_t[k, j]
            for b, u in T.grid(B, H):
                r: T.float32 = T.sigmoid(xp[b, t, u] + hp[b, u])
                z: T.float32 = T.sigmoid(xp[b, t, H + u] + hp[b, H + u])
                n: T.float32 = T.tanh(xp[b, t, 2 * H + u] + r * hp[b, 2 * H + u])
                hn[b, u] = (T.float32(1) - z) * n + z * hn[b, u]
                y[b, t, u] = hn[b, u]
    return gru


_PRIMFUNCS = {"rnn": _rnn_func, "lstm": _lstm_func, "gru": _gru_func}


# -- vector exp for the gate math: LLVM turns exp on a vector into one libm call per lane (7 per unit and step for
# lstm's sigmoids and tanhs, more time than the GEMV when W_hh fits in L2). Cephes' expf: e^x = 2^n e^r with
# n = round(x / ln 2), |r| <= ln2 / 2, a degree-6 polynomial for e^r (relative error ~1e-7) and 2^n built in the
# exponent bits; x is clamped to [-87, 87] so 2^n stays a normal float (e^-87 ~ 1.6e-38: the gates saturate anyway).

def _exp(x):
    f32 = "float32"
    x = tirx.max(tirx.min(x, tirx.const(87.0, f32)), tirx.const(-87.0, f32))
    n = tirx.floor(x * tirx.const(1.44269504088896341, f32) + tirx.const(0.5, f32))
    r = x - n * tirx.const(0.693359375, f32) - n * tirx.const(-2.12194440e-4, f32)
    p = tirx.const(1.9875691500e-4, f32)
    for c in (1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1):
        p = p * r + tirx.const(c, f32)
    e = p * r * r + r + tirx.const(1.0, f32)
    bits = tirx.shift_left(tirx.Cast("int32", n) + tirx.const(127, "int32"), tirx.const(23, "int32"))
    return e * tirx.reinterpret(f32, bits)


def _sigmoid(x):
    return tirx.const(1.0, "float32") / (tirx.const(1.0, "float32") + _exp(-x))


def _tanh(x):
    return tirx.const(1.0, "float32") - tirx.const(2.0, "float32") / (tirx.const(1.0, "float32") + _exp(x + x))


# -- the unit-blocked kernels (see Blocking). Shared shape: hs holds h (padded units stay 0: their weights and
# biases are 0), a block's new h goes to hx so the other blocks of the step still read the old h; after the step's
# blocks hx is copied to hs and y. The accumulators are a local (G, units) buffer of constant indices: registers.

def _steps(plan: Blocking):
    """The kernels' shared steps, as TVMScript macros: h (or c) given -> its padded copy; a step's new h -> h and
    y[:, t]; the final h (or c) out."""
    H, Hp = plan.hidden, plan.blocks * plan.units

    @T.macro
    def pad_state(dst, src, B):
        for b, u in T.grid(B, Hp):
            dst[b, u] = T.if_then_else(u < H, src[b, T.min(u, H - 1)], T.float32(0))

    @T.macro
    def step_done(hs, hx, y, B, t):
        for b, u in T.grid(B, H):
            hs[b, u] = hx[b, u]
            y[b, t, u] = hx[b, u]

    @T.macro
    def state_out(dst, src, B):
        for b, u in T.grid(B, H):
            dst[b, u] = src[b, u]

    return pad_state, step_done, state_out


def _lstm_blocked(plan: Blocking, rev: int, relu: bool):
    H, U, NB = plan.hidden, plan.units, plan.blocks
    G, Hp = 4, plan.blocks * plan.units
    GU = G * U
    outer = T.parallel if plan.parallel else T.serial
    pad_state, step_done, state_out = _steps(plan)

    @T.prim_func(private=True)
    def lstm(xp_h: T.handle, wp: T.Buffer((NB, H, G, U), "float32"), bp: T.Buffer((NB * GU,), "float32"),
             h0_h: T.handle, c0_h: T.handle, y_h: T.handle, hn_h: T.handle, cn_h: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        B = T.int64()
        S = T.int64()
        xp = T.match_buffer(xp_h, (B, S, NB * GU), "float32")
        h0 = T.match_buffer(h0_h, (B, H), "float32")
        c0 = T.match_buffer(c0_h, (B, H), "float32")
        y = T.match_buffer(y_h, (B, S, H), "float32")
        hn = T.match_buffer(hn_h, (B, H), "float32")
        cn = T.match_buffer(cn_h, (B, H), "float32")
        hs = T.alloc_buffer((B, Hp), "float32")
        hx = T.alloc_buffer((B, Hp), "float32")
        cs = T.alloc_buffer((B, Hp), "float32")
        pad_state(hs, h0, B)
        pad_state(cs, c0, B)
        for step in range(S):
            t = step + rev * (S - 1 - 2 * step)
            for ub in outer(NB):
                for b in range(B):
                    acc = T.decl_buffer((G, U), "float32", scope="local")
                    for g in T.unroll(G):
                        for uu in T.vectorized(U):
                            acc[g, uu] = bp[ub * GU + g * U + uu] + xp[b, t, ub * GU + g * U + uu]
                    for k in range(H):
                        for g in T.unroll(G):
                            for uu in T.vectorized(U):
                                acc[g, uu] = acc[g, uu] + hs[b, k] * wp[ub, k, g, uu]
                    for uu in T.vectorized(U):
                        cs[b, ub * U + uu] = (_sigmoid(acc[1, uu]) * cs[b, ub * U + uu]
                                              + _sigmoid(acc[0, uu]) * _tanh(acc[2, uu]))
                        hx[b, ub * U + uu] = _sigmoid(acc[3, uu]) * _tanh(cs[b, ub * U + uu])
            step_done(hs, hx, y, B, t)
        state_out(hn, hs, B)
        state_out(cn, cs, B)
    return lstm


def _one_state_blocked(kind: str, plan: Blocking, rev: int, relu: bool):
    """gru (gates r, z, n) and rnn (one gate): the kernels of one state, h."""
    H, U, NB = plan.hidden, plan.units, plan.blocks
    G, Hp = GATES[kind], plan.blocks * plan.units
    GU = G * U
    use_relu = int(relu)
    outer = T.parallel if plan.parallel else T.serial
    pad_state, step_done, state_out = _steps(plan)

    @T.prim_func(private=True)
    def cell(xp_h: T.handle, wp: T.Buffer((NB, H, G, U), "float32"), bp: T.Buffer((NB * GU,), "float32"),
             h0_h: T.handle, y_h: T.handle, hn_h: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        B = T.int64()
        S = T.int64()
        xp = T.match_buffer(xp_h, (B, S, NB * GU), "float32")
        h0 = T.match_buffer(h0_h, (B, H), "float32")
        y = T.match_buffer(y_h, (B, S, H), "float32")
        hn = T.match_buffer(hn_h, (B, H), "float32")
        hs = T.alloc_buffer((B, Hp), "float32")
        hx = T.alloc_buffer((B, Hp), "float32")
        pad_state(hs, h0, B)
        for step in range(S):
            t = step + rev * (S - 1 - 2 * step)
            for ub in outer(NB):
                for b in range(B):
                    acc = T.decl_buffer((G, U), "float32", scope="local")
                    if kind == "gru":  # r, z: xp + b_hh + W_hh h;  n: b_hh + W_hn h (r scales it)
                        for g in T.unroll(G):
                            for uu in T.vectorized(U):
                                acc[g, uu] = bp[ub * GU + g * U + uu]
                        for g in T.unroll(2):
                            for uu in T.vectorized(U):
                                acc[g, uu] = acc[g, uu] + xp[b, t, ub * GU + g * U + uu]
                    else:
                        for uu in T.vectorized(U):
                            acc[0, uu] = bp[ub * U + uu] + xp[b, t, ub * U + uu]
                    for k in range(H):
                        for g in T.unroll(G):
                            for uu in T.vectorized(U):
                                acc[g, uu] = acc[g, uu] + hs[b, k] * wp[ub, k, g, uu]
                    if kind == "gru":
                        for uu in T.vectorized(U):  # n, then h' = n + z * (h - n)
                            acc[2, uu] = _tanh(xp[b, t, ub * GU + 2 * U + uu] + _sigmoid(acc[0, uu]) * acc[2, uu])
                            hx[b, ub * U + uu] = acc[2, uu] + _sigmoid(acc[1, uu]) * (hs[b, ub * U + uu]
                                                                                     - acc[2, uu])
                    else:
                        for uu in T.vectorized(U):
                            hx[b, ub * U + uu] = T.if_then_else(use_relu == 1, T.max(acc[0, uu], T.float32(0)),
                                                                _tanh(acc[0, uu]))
            step_done(hs, hx, y, B, t)
        state_out(hn, hs, B)
    return cell


_BLOCKED = {"rnn": functools.partial(_one_state_blocked, "rnn"), "lstm": _lstm_blocked,
            "gru": functools.partial(_one_state_blocked, "gru")}
