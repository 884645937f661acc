"""Benchmark: specc's TVM CPU backend vs onnxruntime, PyTorch eager and torch.compile, on the same specs, weights
and inputs, at 1 and 2 threads, in one interleaved run.

    python bench/tvm_vs_torch.py                  # every model below at 1 and 2 threads; 12-layer ones at 2 layers
    python bench/tvm_vs_torch.py --quick          # the same, fewer timing rounds and no torch.compile
    python bench/tvm_vs_torch.py --full           # the specs' own sizes (12 layers: minutes of TVM compile each)
    python bench/tvm_vs_torch.py --models resnet18 --mcpu haswell  # TVM code for an AVX2-only CPU (same machine)

Models (built from the specs, the way users get them; -D model.param=value shrinks one, and the header says so):
  resnet18    specs/resnet18.nn, 1x3x224x224          resnet50   specs/resnet50.nn, 1x3x224x224
  gpt2-block  one GPT-2 small block (d 768, 12 heads, causal), 1x128x768
  gpt2        specs/gpt2.nn (12 layers), tokens 1x128   bert      specs/bert_base.nn, 1x128 (ids, types, mask)
  vit         specs/vit_b16.nn, 1x3x224x224            moe       one top-2 MoE layer (8 SwiGLU experts), 1x128x768
  lstm        specs/lstm_lm.nn (2 LSTM layers of 650, vocabulary 10,000), tokens 1x35: a word-level LM step

Unless --full, GPT-2, BERT and ViT-B/16 run 2 of their 12 layers (SHRUNK; the header of each model says so): the
machine this runs on is usually shared and small, and TVM compile time grows with depth. -D adds to that.

Peers, timed round-robin in blocks of calls (load drifting on a shared machine hits all alike):
  torch eager    the emitted PyTorch module, torch.no_grad()
  torch.compile  the same module through torch.compile (inductor; skip with --no-compile)
  onnxruntime    the module exported to ONNX (opset 18, TorchScript exporter), CPUExecutionProvider, all graph
                 optimisations; intra-op threads = the thread count. MoE layers are exported in an equivalent
                 routed form (bench/onnx_moe.py: NonZero + Gather + ScatterND-add per expert, same weights): the
                 emitted layer's host-side run lengths and stable Sort do not export
  tvm            specc.load(...).to_tvm("tvm-cpu"): specc's CPU schedules, symbolic batch/sequence dims (a MoE
                 layer runs each expert on its routed tokens only; `python bench/moe.py --tvm` compares the dense
                 lowering)
  tvm static     the same with the dims fixed (dims={"B": 1, ...})

Timing: at 1 thread the calling thread's CPU time (time.thread_time: every peer computes on the calling thread
when given one thread, and CPU time does not count the time other processes hold the core), at 2 threads wall
time. Medians and minima in ms, the ratio to onnxruntime and to torch eager, achieved GFLOP/s (2 x the spec's
multiply-adds) and that as a share of the fp32 matmul peak measured here at the same thread count. The FLOPs are
the spec's, i.e. the direct algorithm's: TVM runs a CNN's 3x3 stride-1 convs as Winograd F(2x2, 3x3), 16
multiplies per 2x2 outputs instead of 36, so its ResNet rows can read above 100% of the matmul peak.

With --mcpu for a narrower ISA than the host's (haswell: AVX2), TVM runs that code and the peers the host's (their
libraries pick kernels from CPUID; onnxruntime cannot be held to AVX2). The TVM rows' % peak is then of torch's MKL
held to that ISA (MKL_ENABLE_INSTRUCTIONS, in a subprocess), and the summary adds the ratio to onnxruntime scaled to
equal matmul peaks: what the ISA allows a model whose time is GEMMs and convolutions; a memory-bound model (the
LSTM LM's recurrence) is not slowed by the narrower vectors, so its scaled figure flatters it.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import sys
import time
import warnings
from pathlib import Path


def _max_threads_from_argv(argv: list[str]) -> str:
    for i, a in enumerate(argv):
        val = argv[i + 1] if a == "--threads" and i + 1 < len(argv) else (a.split("=", 1)[1] if a.startswith(
            "--threads=") else None)
        if val:
            return str(max(int(t) for t in val.split(",")))
    return "2"


# thread pools read these when they start: before torch or tvm is imported
_MAX_THREADS = _max_threads_from_argv(sys.argv)
for _var in ("TVM_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, _MAX_THREADS)

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

import specc  # noqa: E402
from specc.api import loads  # noqa: E402

GPT2_BLOCK = """
import "gpt2.nn"
model GPT2Block(d: int = 768, heads: int = 12) {
  input x: f32[B, T, d]
  output y = x -> Block(heads)
}
"""

MOE = """
import "std/transformer.nn"
model MoE(d: int = 768, hidden: int = 2048, experts: int = 8, top_k: int = 2) {
  input x: f32[B, T, d]
  output y = x -> moe(SwiGLU(hidden), experts, top_k, renormalize=true)
}
"""

# what a default run shrinks (--full: nothing)
SHRUNK = {"gpt2": {"layers": 2}, "bert": {"layers": 2}, "vit": {"layers": 2}}

# name -> (how to load it, its input sizes)
MODELS = {
    "resnet18": (lambda ov: specc.load(REPO / "specs" / "resnet18.nn", overrides=ov), {"B": 1}),
    "resnet50": (lambda ov: specc.load(REPO / "specs" / "resnet50.nn", overrides=ov), {"B": 1}),
    "gpt2-block": (lambda ov: loads(GPT2_BLOCK, "gpt2_block.nn", **ov), {"B": 1, "T": 128}),
    "gpt2": (lambda ov: specc.load(REPO / "specs" / "gpt2.nn", overrides=ov), {"B": 1, "T": 128}),
    "bert": (lambda ov: specc.load(REPO / "specs" / "bert_base.nn", overrides=ov), {"B": 1, "T": 128}),
    "vit": (lambda ov: specc.load(REPO / "specs" / "vit_b16.nn", overrides=ov), {"B": 1}),
    "moe": (lambda ov: loads(MOE, "moe.nn", **ov), {"B": 1, "T": 128}),
    "lstm": (lambda ov: specc.load(REPO / "specs" / "lstm_lm.nn", overrides=ov), {"B": 1, "T": 35}),
}


# ---- what the machine is ---------------------------------------------------------------------------------------

def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def describe_target(mcpu: str | None) -> str:
    """The TVM target the models are built for, its SIMD features and the cache sizes the schedules read."""
    import tvm

    from specc.backends.tvm.schedules._target import cpu_info

    host = tvm.target.Target.from_device(tvm.cpu()).export()
    spec = {"kind": "llvm", "mcpu": mcpu or host.get("mcpu", "generic")}
    feats = target_features(mcpu)
    info = cpu_info(tvm.target.Target(spec))
    return (f"TVM target mcpu={spec['mcpu']} (host {host.get('mcpu')}): features {' '.join(feats) or 'baseline'}; "
            f"schedules use {info.lanes} fp32 lanes x {info.num_regs} vector registers, caches "
            f"L1d {info.l1d // 1024} KiB / L2 {info.l2 // 1024} KiB")


def matmul_peak(threads: int, cpu_time: bool) -> float:
    """The best fp32 matmul rate torch or numpy reach here (fastest of many runs: robust to other load)."""
    torch.set_num_threads(threads)
    clock = time.thread_time if cpu_time else time.perf_counter
    best = 0.0
    for n in (1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        fns = [lambda a=a, b=b: a @ b]
        if not cpu_time:  # numpy's BLAS has its own thread pool: wall time only
            an, bn = a.numpy(), b.numpy()
            fns.append(lambda a=an, b=bn: a @ b)
        for fn in fns:
            for _ in range(2):
                fn()
            t = min(_timed(fn, clock) for _ in range(8 if n == 1024 else 3))
            best = max(best, 2 * n ** 3 / t / 1e9)
    return best


# (MKL_ENABLE_INSTRUCTIONS, OPENBLAS_CORETYPE) that hold torch's MKL and numpy's OpenBLAS to a target's widest SIMD
_BLAS_ISA = (("avx512f", None), ("avx2", ("AVX2", "Haswell")), ("avx", ("AVX", "SandyBridge")))


def target_features(mcpu: str | None) -> list[str]:
    """The SIMD features LLVM gives the TVM target (`mcpu` or the host)."""
    import tvm
    from tvm.target import codegen

    host = tvm.target.Target.from_device(tvm.cpu()).export()
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu or host.get("mcpu", "generic")})
    feats = []
    for f in ("sse4.2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512vnni", "avx512bf16",
              "amx-tile", "evex512"):
        with contextlib.suppress(Exception):
            if codegen.llvm_cpu_has_features(f, target):
                feats.append(f)
    return feats


def isa_peak(feats: list[str], threads: int, cpu_time: bool) -> tuple[str, float] | None:
    """(ISA name, fp32 matmul peak) of torch's MKL held to the target's SIMD (MKL_ENABLE_INSTRUCTIONS, read when MKL
    loads: so in a subprocess), when the target has less than the host's AVX-512; None otherwise. onnxruntime's
    MLAS cannot be held to AVX2 on an AVX-512 CPU (schedules/README.md), so this is the yardstick for TVM's code
    for an AVX2 `--mcpu`: the rate a vendor BLAS reaches with the same instructions on this CPU."""
    isa = next((name for feat, name in _BLAS_ISA if feat in feats), ("SSE4_2", "Nehalem"))
    if isa is None:
        return None
    import subprocess

    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import tvm_vs_torch as b; "
            f"print(b.matmul_peak({threads}, {cpu_time}))")
    env = {**os.environ, "MKL_ENABLE_INSTRUCTIONS": isa[0], "OPENBLAS_CORETYPE": isa[1],
           "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return isa[0], float(out.stdout.split()[-1])


def _timed(fn, clock) -> float:
    t0 = clock()
    fn()
    return clock() - t0


def interleaved(fns: dict, rounds: int, budget_s: float, clock, block: int = 4) -> dict[str, tuple[float, float]]:
    """name -> (median, min) seconds. Round-robin over the peers, `block` calls each. A block's first call and a
    short pause are not timed: TVM's, PyTorch's and onnxruntime's thread pools spin-wait after a call, and pools
    spinning on the same cores slow each other down many times over."""
    for fn in fns.values():
        for _ in range(2):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    start = time.perf_counter()
    for r in range(rounds):
        for k, fn in fns.items():
            time.sleep(0.02)
            fn()
            times[k] += [_timed(fn, clock) for _ in range(block - 1)]
        if r >= 2 and time.perf_counter() - start > budget_s:
            break
    return {k: (float(np.median(v)), float(np.min(v))) for k, v in times.items()}


# ---- peers -----------------------------------------------------------------------------------------------------

def onnx_export(model, inputs, path: Path) -> str | None:
    """Export with opset 18 (onnxruntime >= 1.16 rejects the opset-17 Split the old default produced for GPT-2).
    The TorchScript exporter: the dynamo one needs onnxscript and re-traces with torch.export. None when it worked,
    else why not."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        return f"not installed ({err.name}; pip install 'specc[bench]')"
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()), \
                contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(model, tuple(inputs), str(path), opset_version=18, dynamo=False)
    except Exception as err:  # noqa: BLE001 - reported in the table, the other peers still run
        return f"export failed: {type(err).__name__}: {str(err).splitlines()[0][:120]}"
    return None


def onnxruntime_peer(path: Path, inputs, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    feed = {n: x.numpy() for n, x in zip(names, inputs)}
    return sess, (lambda: sess.run(None, feed))


def first(out):
    while isinstance(out, (tuple, list)):
        out = out[0]
    if isinstance(out, dict):
        out = next(iter(out.values()))
    return out.numpy() if hasattr(out, "numpy") else np.asarray(out)


def no_zero_params(module):
    """`module` with every all-zero parameter given random values: a zero-initialised tensor (ViT's head, biases)
    would make the output checks against PyTorch vacuous (0 == 0)."""
    with torch.no_grad():
        for p in module.parameters():
            if not p.any():
                p.normal_(0.0, 0.02)
    return module


def rel_diff(got, want) -> float:
    got, want = first(got), first(want)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


def bench(name: str, overrides: dict, threads: list[int], peaks: dict[int, tuple[float, float]], args) -> list[dict]:
    """Times one model at each thread count; peaks: threads -> (host matmul peak, the TVM target ISA's)."""
    import tempfile

    import tvm
    from onnx_moe import exportable
    from torch_util import random_inputs

    from specc.backends.tvm.codegen import configure_threads

    loader, dims = MODELS[name]
    spec = loader(overrides)
    inputs = random_inputs(spec, dims, seed=0)
    torch.manual_seed(0)
    eager = no_zero_params(spec.to_torch().eval())
    target = "tvm-cpu"
    if args.mcpu:
        from specc.targets import load_target

        target = load_target("tvm-cpu").model_copy(update={"mcpu": args.mcpu})
    t0 = time.perf_counter()
    tvm_model = spec.to_tvm(target, weights=eager)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tvm_static = spec.to_tvm(target, weights=eager, dims=dims)
    compile_static_s = time.perf_counter() - t0
    with torch.no_grad():
        want = eager(*inputs)
    checks = {"tvm": rel_diff(tvm_model(*inputs), want), "tvm static": rel_diff(tvm_static(*inputs), want)}
    macs = spec.summary().macs
    flops = 2 * int(macs.subs(dims) if hasattr(macs, "subs") else macs)
    shrunk = f" (shrunk: {', '.join(f'{k}={v}' for k, v in overrides.items())})" if overrides else ""
    print(f"\n== {name}{shrunk}, {' x '.join(str(v) for v in dims.values())}: {flops / 1e9:.2f} GFLOP per run; "
          f"TVM compile {compile_s:.0f} s (static {compile_static_s:.0f} s) ==")

    def no_grad(m):
        def run():
            with torch.no_grad():
                m(*inputs)
        return run

    compiled = None
    if not args.no_compile:
        try:
            compiled = torch.compile(eager)
            with torch.no_grad():
                checks["torch.compile"] = rel_diff(compiled(*inputs), want)
        except Exception as err:  # noqa: BLE001
            print(f"torch.compile: failed ({type(err).__name__}: {str(err).splitlines()[0][:100]})")
            compiled = None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        ort_why = onnx_export(exportable(eager), inputs, onnx_path)
        if ort_why:
            print(f"onnxruntime: {ort_why}")
        vin = [tvm.runtime.tensor(x.numpy()) for x in inputs]
        for n in threads:
            torch.set_num_threads(n)
            configure_threads(n)
            peers = {"torch eager": no_grad(eager)}
            if compiled is not None:
                peers["torch.compile"] = no_grad(compiled)
            sess = None
            if not ort_why:
                sess, peers["onnxruntime"] = onnxruntime_peer(onnx_path, inputs, n)
                if n == threads[0]:
                    checks["onnxruntime"] = rel_diff(peers["onnxruntime"](), want)
            # the raw VM calls on TVM tensors: no conversion of inputs and outputs
            fn_sym, fn_static = tvm_model.vm["main"], tvm_static.vm["main"]
            peers["tvm"] = lambda f=fn_sym: f(*vin)
            peers["tvm static"] = lambda f=fn_static: f(*vin)
            cpu_time = n == 1 and not args.wall
            times = interleaved(peers, args.rounds, args.budget, time.thread_time if cpu_time else time.perf_counter)
            del sess
            rows.append(report(name, n, times, checks, flops, peaks[n], cpu_time, args.mcpu))
    return rows


def report(name, threads, times, checks, flops, peaks, cpu_time, mcpu=None) -> dict:
    """Prints one model's table at one thread count; the TVM rows' % peak is of their own ISA's peak (`--mcpu`)."""
    ort = times.get("onnxruntime", (None,))[0]
    base = times["torch eager"][0]
    peak, tvm_peak = peaks
    isa = "" if mcpu is None else (f"; TVM code for mcpu={mcpu}, its % peak of that ISA's matmul peak "
                                   f"{tvm_peak:.0f} GFLOP/s; the others run the host's code")
    print(f"-- {threads} thread{'s' if threads > 1 else ''} ({'thread CPU time' if cpu_time else 'wall time'}; "
          f"matmul peak {peak:.0f} GFLOP/s{isa})")
    print(f"{'impl':<15}{'median ms':>10}{'min ms':>9}{'vs ort':>8}{'vs eager':>9}{'GFLOP/s':>9}{'% peak':>7}  "
          f"max|diff|/max|ref|")
    for label, (med, mn) in times.items():
        gf = flops / med / 1e9
        vs_ort = f"{med / ort:.2f}" if ort else "-"
        check = f"{checks[label]:.1e}" if label in checks else ""
        print(f"{label:<15}{med * 1e3:>10.2f}{mn * 1e3:>9.2f}{vs_ort:>8}{med / base:>9.2f}{gf:>9.1f}"
              f"{100 * gf / (tvm_peak if label.startswith('tvm') else peak):>6.0f}%  {check}")
    tvm_ms, static_ms = times["tvm"][0], times["tvm static"][0]
    return {"model": name, "threads": threads, "tvm/ort": tvm_ms / ort if ort else None, "peak ratio": tvm_peak / peak,
            "tvm/eager": tvm_ms / base, "sym/static": tvm_ms / static_ms,
            "ok": all(v <= 1e-4 for k, v in checks.items() if k.startswith("tvm"))}


def parse_defines(items: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for item in items or []:
        key, _, value = item.partition("=")
        model, _, param = key.partition(".")
        if not param or not value or model not in MODELS:
            raise SystemExit(f"-D {item!r}: expected MODEL.PARAM=VALUE with MODEL one of {', '.join(MODELS)}")
        out.setdefault(model, {})[param] = int(value) if value.lstrip("-").isdigit() else value
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default=None, help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--models", default="all", help=f"comma-separated, or all: {', '.join(MODELS)}")
    ap.add_argument("-D", dest="defines", action="append", help="MODEL.PARAM=VALUE: shrink a model (e.g. gpt2.layers=2)")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--budget", type=float, default=30.0, help="seconds of timing per model and thread count, at most")
    ap.add_argument("--mcpu", default=None, help="LLVM cpu for TVM's code (e.g. haswell: AVX2 only); default the host")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (its compile takes minutes here)")
    ap.add_argument("--wall", action="store_true", help="wall time at 1 thread too")
    ap.add_argument("--full", action="store_true", help="the specs' sizes (default: 12-layer models at 2 layers)")
    ap.add_argument("--quick", action="store_true", help="3 rounds, 5 s of timing per model, no torch.compile")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.budget, args.no_compile = min(args.rounds, 3), min(args.budget, 5.0), True
    threads = [int(t) for t in (args.threads or "1,2").split(",")]
    models = list(MODELS) if args.models == "all" else args.models.split(",")
    for m in models:
        if m not in MODELS:
            raise SystemExit(f"unknown model {m!r} ({', '.join(MODELS)})")
    defines = parse_defines(args.defines)
    if not args.full:
        defines = {m: {**SHRUNK.get(m, {}), **defines.get(m, {})} for m in MODELS}
    import tvm

    load = os.getloadavg()[0]
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs; load average {load:.1f}")
    print(describe_target(args.mcpu))
    if not args.full:
        print("sizes: " + "; ".join(f"{m} {', '.join(f'{k}={v}' for k, v in ov.items())}" for m, ov in SHRUNK.items())
              + " (shrunk for this machine; --full for the specs' sizes)")
    print(f"torch {torch.__version__}, tvm {tvm.__version__}", end="")
    with contextlib.suppress(ImportError):
        import onnxruntime

        print(f", onnxruntime {onnxruntime.__version__}", end="")
    print()
    if load > 0.5 * (os.cpu_count() or 1):
        print("note: other processes are busy on this machine: 1-thread figures are CPU time (robust), 2-thread "
              "figures are wall time and suffer from the load")
    peaks = {n: (matmul_peak(n, n == 1 and not args.wall),) * 2 for n in threads}
    print("measured fp32 matmul peak (torch/numpy 1024^3, 2048^3): "
          + ", ".join(f"{peaks[n][0]:.0f} GFLOP/s at {n} thread{'s' if n > 1 else ''}" for n in threads))
    feats = target_features(args.mcpu)
    for n in threads:
        held = isa_peak(feats, n, n == 1 and not args.wall)
        if held:
            peaks[n] = (peaks[n][0], held[1])
            print(f"  the TVM target's ISA: {held[1]:.0f} GFLOP/s at {n} thread{'s' if n > 1 else ''} with torch's MKL "
                  f"held to it (MKL_ENABLE_INSTRUCTIONS={held[0]}) = {held[1] / peaks[n][0]:.2f}x the host's; "
                  f"onnxruntime cannot be held to it (its MLAS picks kernels from CPUID)")
    rows = []
    for m in models:
        rows += bench(m, defines.get(m, {}), threads, peaks, args)
    code = f"mcpu={args.mcpu} code" if args.mcpu else "host code"
    print(f"\nsummary (median ratios; < 1 means TVM is faster; TVM runs {code}, the others the host's):")
    for r in rows:
        ort = f"{r['tvm/ort']:.2f}x onnxruntime" if r["tvm/ort"] else "onnxruntime n/a"
        if r["tvm/ort"] and r["peak ratio"] < 0.99:
            ort += f" ({r['tvm/ort'] * r['peak ratio']:.2f}x scaled to equal matmul peaks)"
        print(f"  {r['model']:<11} {r['threads']} thr: TVM (symbolic) {ort}, {r['tvm/eager']:.2f}x torch eager; "
              f"symbolic/static {r['sym/static']:.2f}x" + ("" if r["ok"] else "  OUTPUTS DIFFER > 1e-4"))


if __name__ == "__main__":
    main()
