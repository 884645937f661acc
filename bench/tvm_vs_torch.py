"""Benchmark: specc's TVM CPU backend vs PyTorch eager on the same specs, weights and inputs, in one run.

    python bench/tvm_vs_torch.py [--threads 2] [--models resnet18,gpt2-block] [--rounds 30]

Models (built from the specs, the way users get them):
  * resnet18    specs/resnet18.nn, 1x3x224x224 (1000 classes)
  * gpt2-block  one GPT-2 small block (the `Block` of specs/gpt2.nn: d 768, 12 heads, causal), 1x128x768

Peers, timed interleaved (round-robin, so load drifting on a shared machine hits all alike):
  * torch eager      the emitted PyTorch module (-O0), torch.no_grad()
  * torch eager -O2  the emitted module after specc's eager fusion (batchnorm folded into convs, fused epilogues)
  * onnxruntime      the -O0 module exported to ONNX, when onnxruntime is installed (skipped otherwise)
  * tvm              specc.load(...).to_tvm("tvm-cpu"): specc's CPU schedules (symbolic batch/sequence dims)
  * tvm static       the same with the dims fixed (dims={"B": 1, ...}): uses kernels from `specc tune` if cached

Timing: blocks of calls per peer, round-robin (see interleaved()). Prints median and min milliseconds, the ratio to torch eager, achieved GFLOP/s (2 x the spec's multiply-adds) and
that as a share of the machine's fp32 matmul peak, measured here (torch and numpy 1024^3; the larger counts).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def _threads_from_argv(argv: list[str]) -> str:
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return "2"


# thread pools read these when they start: before torch or tvm is imported
_THREADS = _threads_from_argv(sys.argv)
for _var in ("TVM_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, _THREADS)

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import specc  # noqa: E402
from specc.api import loads  # noqa: E402

GPT2_BLOCK = """
import "gpt2.nn"
model GPT2Block(d: int = 768, heads: int = 12) {
  input x: f32[B, T, d]
  output y = x -> Block(heads)
}
"""


def model_spec(name: str):
    """(spec, inputs, dims) for a benchmark model."""
    if name == "resnet18":
        return specc.load(REPO / "specs" / "resnet18.nn"), [torch.randn(1, 3, 224, 224)], {"B": 1}
    if name == "gpt2-block":
        return loads(GPT2_BLOCK, "gpt2_block.nn"), [torch.randn(1, 128, 768)], {"B": 1, "T": 128}
    raise SystemExit(f"unknown model {name!r} (resnet18, gpt2-block)")


def matmul_peak() -> float:
    """The best fp32 matmul rate torch or numpy reach here (fastest of many runs: robust to other load)."""
    best = 0.0
    for n in (1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        an, bn = a.numpy(), b.numpy()
        for fn in (lambda a=a, b=b: a @ b, lambda a=an, b=bn: a @ b):
            for _ in range(3):
                fn()
            t = min(_timed(fn) for _ in range(15 if n == 1024 else 5))
            best = max(best, 2 * n ** 3 / t / 1e9)
    return best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(fns: dict, rounds: int, budget_s: float, block: int = 4) -> dict[str, tuple[float, float]]:
    """name -> (median, min) seconds. Round-robin over the peers, `block` calls each, so load drifting on a shared
    machine hits all alike. A block's first call and a short pause are not timed: TVM's and PyTorch's thread pools
    both spin-wait after a call, and two pools spinning on the same cores slow each other down many times over."""
    for fn in fns.values():
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    start = time.perf_counter()
    for r in range(rounds):
        for k, fn in fns.items():
            time.sleep(0.05)
            fn()
            times[k] += [_timed(fn) for _ in range(block - 1)]
        if r >= 3 and time.perf_counter() - start > budget_s:
            break
    return {k: (float(np.median(v)), float(np.min(v))) for k, v in times.items()}


def onnxruntime_peer(model, inputs, tmp: Path):
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    path = tmp / "model.onnx"
    torch.onnx.export(model, tuple(inputs), str(path), opset_version=17)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(_THREADS)
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {i.name: x.numpy() for i, x in zip(sess.get_inputs(), inputs)}
    return lambda: sess.run(None, feed)


def rel_diff(got, want) -> float:
    got, want = np.asarray(got), want.numpy()
    return float(np.abs(got - want).max() / np.abs(want).max())


def bench(name: str, peak: float, rounds: int, budget_s: float) -> dict:
    import tempfile

    spec, inputs, dims = model_spec(name)
    torch.manual_seed(0)
    eager = spec.to_torch(opt_level=0).eval()
    eager_o1 = spec.to_torch(opt_level=2).eval()
    eager_o1.load_state_dict(eager.state_dict())
    t0 = time.perf_counter()
    tvm_model = spec.to_tvm("tvm-cpu", weights=eager)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tvm_static = spec.to_tvm("tvm-cpu", weights=eager, dims=dims)
    compile_static_s = time.perf_counter() - t0
    arrays = [x.numpy() for x in inputs]
    with torch.no_grad():
        want = eager(*inputs)
    checks = {"tvm": rel_diff(tvm_model(*arrays), want), "tvm static": rel_diff(tvm_static(*arrays), want)}

    def no_grad(m):
        def run():
            with torch.no_grad():
                m(*inputs)
        return run

    peers = {"torch eager": no_grad(eager), "torch eager -O2": no_grad(eager_o1)}
    with tempfile.TemporaryDirectory() as tmp:
        ort = onnxruntime_peer(eager, inputs, Path(tmp))
        if ort is not None:
            peers["onnxruntime"] = ort
        # the raw VM call on TVM tensors: no conversion of inputs and outputs
        import tvm

        vin = [tvm.runtime.tensor(a) for a in arrays]
        peers["tvm"] = lambda: tvm_model.vm["main"](*vin)
        peers["tvm static"] = lambda: tvm_static.vm["main"](*vin)
        times = interleaved(peers, rounds, budget_s)
    env = dict(dims)
    macs = spec.summary().macs
    flops = 2 * int(macs.subs(env) if hasattr(macs, "subs") else macs)
    base = times["torch eager"][0]
    print(f"\n== {name}: {flops / 1e9:.2f} GFLOP per run; TVM compile {compile_s:.1f} s (static {compile_static_s:.1f} s)"
          f"; tuned kernels used: {len(tvm_static.stats.get('tuned', []))} ==")
    print(f"{'impl':<18}{'median ms':>11}{'min ms':>9}{'vs torch':>10}{'GFLOP/s':>10}{'% peak':>8}  check")
    for label, (med, mn) in times.items():
        gf = flops / med / 1e9
        check = f"max|diff|/max|ref| = {checks[label]:.1e}" if label in checks else ""
        print(f"{label:<18}{med * 1e3:>11.2f}{mn * 1e3:>9.2f}{med / base:>10.2f}{gf:>10.1f}{100 * gf / peak:>7.0f}%  "
              f"{check}")
    if "onnxruntime" not in times:
        print("onnxruntime: not installed, skipped")
    return {"median": times["tvm"][0] / base, "min": times["tvm"][1] / times["torch eager"][1],
            "vs_o1": times["tvm"][0] / times["torch eager -O2"][0], "ok": max(checks.values()) <= 1e-4}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=int(_THREADS))
    ap.add_argument("--models", default="resnet18,gpt2-block")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--budget", type=float, default=30.0, help="seconds of timing per model, at most")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import tvm

    load = os.getloadavg()[0]
    print(f"threads: torch {torch.get_num_threads()}, TVM {os.environ['TVM_NUM_THREADS']}; torch {torch.__version__}, "
          f"tvm {tvm.__version__}; load average {load:.1f} on {os.cpu_count()} CPUs")
    if load > 0.5 * (os.cpu_count() or 1):
        print("warning: other processes are busy on this machine; spin-waiting thread pools (PyTorch's OpenMP "
              "most of all) slow down many times over when their cores are taken, so ratios are unreliable")
    peak = matmul_peak()
    print(f"measured fp32 matmul peak (1024^3 and 2048^3, best of torch/numpy): {peak:.1f} GFLOP/s")
    summary = {m: bench(m, peak, args.rounds, args.budget) for m in args.models.split(",")}
    print("\nTVM / torch eager:", "; ".join(
        f"{m} {r['median']:.2f}x median, {r['min']:.2f}x min, {r['vs_o1']:.2f}x vs -O2"
        + ("" if r["ok"] else " (OUTPUTS DIFFER)") for m, r in summary.items()))


if __name__ == "__main__":
    main()
