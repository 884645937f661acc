"""The attention kernel alone, static against symbolic dims and under build-time switches, interleaved in one process.

    python bench/attention_ab.py                                   # BERT's: 1 x 128 x 12 x 64, padding-mask bias
    python bench/attention_ab.py --causal --no-bias                # GPT-2's
    python bench/attention_ab.py --seq 197 --no-bias --mcpu haswell  # ViT's keys, AVX2 code
    python bench/attention_ab.py --variant old=SPECC_ATTN_TAILS=0,SPECC_ATTN_BIAS_VIEW=0

Builds `relax.op.nn.attention` (BSNH, fp32) through optimize_for_cpu with the sequence length static (`static`) and
symbolic (`symbolic`), plus each `--variant NAME=VAR=VALUE[,...]` both ways (the variables set during its build only),
checks every build against the first, then times them round-robin (`--rounds` rounds of 10 calls; thread CPU time at
1 thread) and prints medians and minima, and each one's ratio to `static`. The bias is a [B, H, T, T] tensor with
whole key columns at -inf (a padding mask), read as it is (not broadcast from [B, 1, 1, T]).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from unittest import mock

os.environ.setdefault("TVM_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def build(seq: int | None, heads: int, dim: int, bias: bool, causal: bool, target, env: dict[str, str]):
    """A VM running the attention kernel; seq None: symbolic batch and sequence length."""
    import tvm
    from tvm import relax, tirx

    from specc.backends.tvm.schedules import TIR_PIPELINE, optimize_for_cpu

    with mock.patch.dict(os.environ, env):  # set while it compiles, restored after
        b, t = (1, seq) if seq else (tirx.Var("B", "int64"), tirx.Var("T", "int64"))
        q, k, v = (relax.Var(n, relax.TensorType((b, t, heads, dim), "float32")) for n in "qkv")
        m = relax.Var("m", relax.TensorType((b, heads, t, t), "float32"))
        bb = relax.BlockBuilder()
        with bb.function("main", [q, k, v] + ([m] if bias else [])):
            with bb.dataflow():
                out = bb.emit_output(bb.emit(relax.op.nn.attention(
                    q, k, v, m if bias else None, causal_mask="TopLeft" if causal else None)))
            bb.emit_func_output(out)
        ex = tvm.compile(optimize_for_cpu(bb.get(), target), target, tir_pipeline=TIR_PIPELINE)
        return relax.VirtualMachine(ex, tvm.cpu())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--no-bias", action="store_true")
    ap.add_argument("--mcpu", default=None, help="LLVM cpu (haswell: AVX2); default the host")
    ap.add_argument("--variant", action="append", default=[], help="NAME=VAR=VALUE[,VAR=VALUE...]")
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import tvm

    from specc.backends.tvm.codegen import tvm_target
    from specc.targets import load_target

    spec = load_target("tvm-cpu")
    target = tvm_target(spec.model_copy(update={"mcpu": args.mcpu}) if args.mcpu else spec)
    variants = [("", {})]
    for text in args.variant:
        name, _, settings = text.partition("=")
        variants.append((name + " ", dict(item.split("=", 1) for item in settings.split(",") if item)))
    vms = {f"{name}{dims}": build(args.seq if dims == "static" else None, args.heads, args.dim, not args.no_bias,
                                  args.causal, target, env)
           for name, env in variants for dims in ("static", "symbolic")}
    rng = np.random.default_rng(0)
    shape = (1, args.seq, args.heads, args.dim)
    arrays = [rng.standard_normal(shape).astype("float32") for _ in range(3)]
    if not args.no_bias:
        keep = rng.random((1, 1, 1, args.seq)) < 0.9
        keep[..., 0] = True
        arrays.append(np.broadcast_to(np.where(keep, 0.0, -np.inf).astype("float32"),
                                      (1, args.heads, args.seq, args.seq)).copy())
    vin = [tvm.runtime.tensor(a) for a in arrays]
    outs = {name: vm["main"](*vin).numpy() for name, vm in vms.items()}
    first = next(iter(outs.values()))
    for name, out in outs.items():
        print(f"{name}: max|diff| to {next(iter(outs))} {float(np.abs(out - first).max()):.1e}")
    times: dict[str, list[float]] = {name: [] for name in vms}
    for _ in range(args.rounds):
        for name, vm in vms.items():
            f = vm["main"]
            f(*vin)
            t0 = time.thread_time()
            for _ in range(10):
                f(*vin)
            times[name].append((time.thread_time() - t0) / 10 * 1e3)
    print(f"attention 1 x {args.seq} x {args.heads} x {args.dim}{' causal' if args.causal else ''}"
          f"{'' if args.no_bias else ', bias'}; mcpu {args.mcpu or 'host'}; {args.rounds} rounds, thread CPU time; "
          f"load average {os.getloadavg()[0]:.1f}")
    ref = np.median(times["static"]), np.min(times["static"])
    for name, ts in times.items():
        med, mn = np.median(ts), np.min(ts)
        print(f"{name:<24} median {med:7.3f} ms  min {mn:7.3f} ms  vs static {med / ref[0]:.3f} (min {mn / ref[1]:.3f})")


if __name__ == "__main__":
    main()
