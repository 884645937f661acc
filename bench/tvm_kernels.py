"""Benchmark: TVM CPU kernels (specc schedules) vs PyTorch eager.

Builds ResNet-18 (1x3x224x224, NCHW, batch norm folded into conv bias) and a GPT-2 block
(1x128x768, 12 heads, causal) with relax.BlockBuilder, binds random weights as constants
(relax.transform.BindParams), compiles

  * "untuned": relax `zero` pipeline (legalize + FuseOps + FuseTIR) + tvm.compile
  * "specc":   specc.backends.tvm.schedules.optimize_for_cpu + tvm.compile

checks both against an equivalent PyTorch module with the same weights (rtol 1e-4), and
prints median latencies, TVM / torch-eager ratios and achieved GFLOP/s next to a measured
matmul peak (torch and numpy, 1024^3 fp32).

    python bench/tvm_kernels.py [--threads 2] [--skip-untuned] [--models resnet18,gpt2] [--mcpu znver3]

The machine should be otherwise idle (the load average is printed); on a shared, loaded
box torch's OpenMP kernels degrade much more than TVM's, which flatters TVM.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _early_threads(argv):
    threads = "2"
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            threads = argv[i + 1]
        elif a.startswith("--threads="):
            threads = a.split("=", 1)[1]
    for var in ("TVM_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, threads)


_early_threads(sys.argv)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import tvm  # noqa: E402
from tvm import relax  # noqa: E402

from specc.backends.tvm.schedules import TIR_PIPELINE, last_stats, optimize_for_cpu  # noqa: E402

# ----------------------------------------------------------------------------- timing
_clock = time.perf_counter


def median_time(fn, min_runs=5, max_runs=50, budget_s=3.0, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() - start < budget_s):
        t0 = _clock()
        fn()
        times.append(_clock() - t0)
    return float(np.median(times))


def matmul_peak():
    n = 1024
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    t_torch = median_time(lambda: a @ b, min_runs=10, budget_s=1.0)
    an, bn = a.numpy(), b.numpy()
    t_np = median_time(lambda: an @ bn, min_runs=10, budget_s=1.0)
    flops = 2 * n ** 3
    return flops / t_torch / 1e9, flops / t_np / 1e9


# ----------------------------------------------------------------------------- ResNet-18
RESNET_STAGES = [(64, 1), (128, 2), (256, 2), (512, 2)]


def resnet18_params(rng, num_classes=1000):
    """Folded-BN ResNet-18 weights: name -> np.ndarray (He init keeps activations O(1))."""
    p = {}

    def conv(name, oc, ic, k):
        std = np.sqrt(2.0 / (ic * k * k))
        p[name + ".w"] = (rng.standard_normal((oc, ic, k, k)) * std).astype("float32")
        p[name + ".b"] = (rng.standard_normal(oc) * 0.1).astype("float32")

    conv("conv1", 64, 3, 7)
    ic = 64
    for si, (oc, stride) in enumerate(RESNET_STAGES):
        for bi in range(2):
            s = stride if bi == 0 else 1
            pre = f"layer{si + 1}.{bi}"
            conv(pre + ".conv1", oc, ic, 3)
            conv(pre + ".conv2", oc, oc, 3)
            if s != 1 or ic != oc:
                conv(pre + ".down", oc, ic, 1)
            ic = oc
    p["fc.w"] = (rng.standard_normal((num_classes, 512)) * np.sqrt(1.0 / 512)).astype("float32")
    p["fc.b"] = (rng.standard_normal(num_classes) * 0.1).astype("float32")
    return p


def resnet18_flops(h=224):
    fl = 0

    def conv(ic, oc, k, oh):
        return 2 * ic * oc * k * k * oh * oh

    oh = h // 2
    fl += conv(3, 64, 7, oh)
    oh //= 2
    ic = 64
    for oc, stride in RESNET_STAGES:
        for bi in range(2):
            s = stride if bi == 0 else 1
            oh2 = oh // s
            fl += conv(ic, oc, 3, oh2) + conv(oc, oc, 3, oh2)
            if s != 1 or ic != oc:
                fl += conv(ic, oc, 1, oh2)
            ic, oh = oc, oh2
    fl += 2 * 512 * 1000
    return fl


def resnet18_relax(params, batch=1, h=224):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((batch, 3, h, h), "float32"))
    pvars = {k: relax.Var(k, relax.TensorType(v.shape, "float32")) for k, v in params.items()}
    op = relax.op

    def conv(inp, name, stride, pad, relu=True):
        y = bb.emit(op.nn.conv2d(inp, pvars[name + ".w"], strides=stride, padding=pad))
        y = bb.emit(op.add(y, op.reshape(pvars[name + ".b"], (1, -1, 1, 1))))
        return bb.emit(op.nn.relu(y)) if relu else y

    with bb.function("main", [x] + list(pvars.values())):
        with bb.dataflow():
            y = conv(x, "conv1", 2, 3)
            y = bb.emit(op.nn.max_pool2d(y, pool_size=3, strides=2, padding=1))
            ic = 64
            for si, (oc, stride) in enumerate(RESNET_STAGES):
                for bi in range(2):
                    s = stride if bi == 0 else 1
                    pre = f"layer{si + 1}.{bi}"
                    t = conv(y, pre + ".conv1", s, 1)
                    t = conv(t, pre + ".conv2", 1, 1, relu=False)
                    sc = conv(y, pre + ".down", s, 0, relu=False) if (s != 1 or ic != oc) else y
                    y = bb.emit(op.nn.relu(op.add(t, sc)))
                    ic = oc
            y = bb.emit(op.mean(y, axis=[2, 3]))
            y = bb.emit(op.linear(y, pvars["fc.w"], pvars["fc.b"]))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    mod = bb.get()
    return relax.transform.BindParams("main", {k: tvm.runtime.tensor(v) for k, v in params.items()})(mod)


class TorchResNet18(torch.nn.Module):
    def __init__(self, params):
        super().__init__()
        self.p = {k: torch.from_numpy(v) for k, v in params.items()}

    def _conv(self, x, name, stride, pad, relu=True):
        y = F.conv2d(x, self.p[name + ".w"], self.p[name + ".b"], stride=stride, padding=pad)
        return F.relu(y) if relu else y

    def forward(self, x):
        y = self._conv(x, "conv1", 2, 3)
        y = F.max_pool2d(y, 3, 2, 1)
        ic = 64
        for si, (oc, stride) in enumerate(RESNET_STAGES):
            for bi in range(2):
                s = stride if bi == 0 else 1
                pre = f"layer{si + 1}.{bi}"
                t = self._conv(y, pre + ".conv1", s, 1)
                t = self._conv(t, pre + ".conv2", 1, 1, relu=False)
                sc = self._conv(y, pre + ".down", s, 0, relu=False) if (s != 1 or ic != oc) else y
                y = F.relu(t + sc)
                ic = oc
        y = y.mean(dim=(2, 3))
        return F.linear(y, self.p["fc.w"], self.p["fc.b"])


# ----------------------------------------------------------------------------- GPT-2 block
def gpt2_params(rng, d=768):
    def w(*shape, std=0.02):
        return (rng.standard_normal(shape) * std).astype("float32")

    return {
        "ln1.g": (1 + rng.standard_normal(d) * 0.1).astype("float32"), "ln1.b": w(d, std=0.1),
        "attn.w": w(3 * d, d), "attn.b": w(3 * d, std=0.1),
        "proj.w": w(d, d), "proj.b": w(d, std=0.1),
        "ln2.g": (1 + rng.standard_normal(d) * 0.1).astype("float32"), "ln2.b": w(d, std=0.1),
        "fc.w": w(4 * d, d), "fc.b": w(4 * d, std=0.1),
        "fc2.w": w(d, 4 * d), "fc2.b": w(d, std=0.1),
    }


def gpt2_flops(s=128, d=768):
    lin = 2 * s * d * (3 * d) + 2 * s * d * d + 2 * s * d * 4 * d * 2
    attn = 2 * 2 * s * s * d
    return lin + attn


def gpt2_block_relax(params, batch=1, seq=128, d=768, heads=12):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((batch, seq, d), "float32"))
    pv = {k: relax.Var(k.replace(".", "_"), relax.TensorType(v.shape, "float32")) for k, v in params.items()}
    op = relax.op
    hd = d // heads
    with bb.function("main", [x] + list(pv.values())):
        with bb.dataflow():
            h = bb.emit(op.nn.layer_norm(x, pv["ln1.g"], pv["ln1.b"], axes=[-1], epsilon=1e-5))
            qkv = bb.emit(op.linear(h, pv["attn.w"], pv["attn.b"]))
            qkv = bb.emit(op.reshape(qkv, (batch, seq, 3, heads, hd)))
            q, k, v = [bb.emit(op.squeeze(op.strided_slice(qkv, axes=[2], begin=[i], end=[i + 1]), axis=[2]))
                       for i in range(3)]
            a = bb.emit(op.nn.attention(q, k, v, causal_mask="TopLeft"))
            a = bb.emit(op.reshape(a, (batch, seq, d)))
            a = bb.emit(op.linear(a, pv["proj.w"], pv["proj.b"]))
            x1 = bb.emit(op.add(x, a))
            h2 = bb.emit(op.nn.layer_norm(x1, pv["ln2.g"], pv["ln2.b"], axes=[-1], epsilon=1e-5))
            m = bb.emit(op.nn.gelu_tanh(op.linear(h2, pv["fc.w"], pv["fc.b"])))
            m = bb.emit(op.linear(m, pv["fc2.w"], pv["fc2.b"]))
            out = bb.emit_output(bb.emit(op.add(x1, m)))
        bb.emit_func_output(out)
    mod = bb.get()
    binds = {k.replace(".", "_"): tvm.runtime.tensor(v) for k, v in params.items()}
    return relax.transform.BindParams("main", binds)(mod)


class TorchGPT2Block(torch.nn.Module):
    def __init__(self, params, heads=12):
        super().__init__()
        self.p = {k: torch.from_numpy(v) for k, v in params.items()}
        self.heads = heads

    def forward(self, x):
        p = self.p
        b, s, d = x.shape
        h = F.layer_norm(x, (d,), p["ln1.g"], p["ln1.b"], 1e-5)
        qkv = F.linear(h, p["attn.w"], p["attn.b"]).view(b, s, 3, self.heads, d // self.heads)
        q, k, v = [qkv[:, :, i].transpose(1, 2) for i in range(3)]
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        a = a.transpose(1, 2).reshape(b, s, d)
        x1 = x + F.linear(a, p["proj.w"], p["proj.b"])
        h2 = F.layer_norm(x1, (d,), p["ln2.g"], p["ln2.b"], 1e-5)
        m = F.linear(F.gelu(F.linear(h2, p["fc.w"], p["fc.b"]), approximate="tanh"), p["fc2.w"], p["fc2.b"])
        return x1 + m


# ----------------------------------------------------------------------------- driver
def compile_tvm(mod, target, optimized):
    t0 = time.perf_counter()
    if optimized:
        mod = optimize_for_cpu(mod, target)
    else:
        with target:
            mod = relax.get_pipeline("zero")(mod)
    ex = tvm.compile(mod, target, tir_pipeline=TIR_PIPELINE if optimized else "default")
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm, time.perf_counter() - t0


def interleaved_times(fns, rounds=8, per_block=8, budget_s=10.0, warmup=3):
    """Time several callables in alternating blocks of calls.

    Alternating blocks (rather than single calls) keeps one runtime's spinning worker
    threads (torch OpenMP, TVM thread pool) from stealing the other's cores, while still
    exposing both to the same machine load on a shared box. The first call of each block
    is discarded. Returns [(median, min)] per callable."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    start = time.perf_counter()
    for r in range(rounds):
        for i, fn in enumerate(fns):
            fn()
            for _ in range(per_block):
                t0 = _clock()
                fn()
                times[i].append(_clock() - t0)
        if r >= 2 and time.perf_counter() - start > budget_s:
            break
    return [(float(np.median(t)), float(np.min(t))) for t in times]


def bench_model(name, mod, torch_mod, inputs, flops, target, peak, skip_untuned):
    dev = tvm.cpu()
    tin = [torch.from_numpy(a) for a in inputs]
    with torch.no_grad():
        ref = torch_mod(*tin).numpy()
    vin = [tvm.runtime.tensor(a, dev) for a in inputs]
    scale = float(np.abs(ref).max())

    def check(vm):
        out = vm["main"](*vin).numpy()
        err = float(np.abs(out - ref).max())
        return bool(np.allclose(out, ref, rtol=1e-4, atol=1e-4 * scale)), err / scale

    rows = []
    compile_times = {}
    if not skip_untuned:
        vm0, compile_times["tvm untuned(zero)"] = compile_tvm(mod, target, False)
        ok0, rel0 = check(vm0)
        t0 = median_time(lambda: vm0["main"](*vin), min_runs=3, max_runs=5, budget_s=3.0, warmup=1)
        rows.append(("tvm untuned(zero)", (t0, t0), ok0, rel0))
    vm, compile_times["tvm specc"] = compile_tvm(mod, target, True)
    stats = last_stats()
    ok, rel = check(vm)

    def run_torch():
        with torch.no_grad():
            torch_mod(*tin)

    (t_torch, tmin_torch), (t_tvm, tmin_tvm) = interleaved_times([run_torch, lambda: vm["main"](*vin)])
    rows.insert(0, ("torch eager", (t_torch, tmin_torch), None, None))
    rows.append(("tvm specc", (t_tvm, tmin_tvm), ok, rel))
    print(f"\n== {name}: {flops / 1e9:.2f} GFLOP per run ==")
    print(f"{'impl':<20}{'median ms':>11}{'min ms':>9}{'vs torch':>10}{'GFLOP/s':>10}{'% peak':>8}  check")
    for label, (t, tmin), okk, rl in rows:
        gf = flops / t / 1e9
        chk = "" if okk is None else ("OK" if okk else "MISMATCH") + f" (max|err|/max|ref|={rl:.1e})"
        print(f"{label:<20}{t * 1e3:>11.3f}{tmin * 1e3:>9.3f}{t / t_torch:>10.2f}{gf:>10.1f}"
              f"{100 * gf / peak:>7.0f}%  {chk}")
    print(f"  (ratio of minima tvm specc / torch: {tmin_tvm / tmin_torch:.2f})")
    for label, tc in compile_times.items():
        print(f"  compile time {label}: {tc:.1f} s")
    return t_torch, {"tvm specc": (t_tvm, ok, compile_times["tvm specc"]), "stats": stats,
                     "min_ratio": tmin_tvm / tmin_torch}


# ----------------------------------------------------------------------------- per-op breakdown
def _resnet50_convs():
    """ResNet-50 v1.5 (stride on the 3x3) convs at 224x224: (ic, oc, k, stride, input hw, how many in the net)."""
    count: dict = {(3, 64, 7, 2, 224): 1}
    ic, hw = 64, 56
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for b in range(blocks):
            s = stride if b == 0 else 1
            for key in ((ic, width, 1, 1, hw), (width, width, 3, s, hw), (width, 4 * width, 1, 1, hw // s)):
                count[key] = count.get(key, 0) + 1
            if b == 0:
                key = (ic, 4 * width, 1, s, hw)
                count[key] = count.get(key, 0) + 1
            ic, hw = 4 * width, hw // s
    return [(*k, n) for k, n in count.items()]


RESNET50_CONVS = _resnet50_convs()



# (label, relax builder, torch function, flops): the hot ops of GPT-2 (1x128 tokens) and ResNet-18 (1x224x224)
def _op_cases(rng):
    op = relax.op
    cases = []

    def const(*shape, std=0.05):
        return (rng.standard_normal(shape) * std).astype("float32")

    def dense(label: str, rows: int, n_in: int, n_out: int) -> None:
        w, b = const(n_out, n_in), const(n_out)
        cases.append((f"{label} {rows}x{n_in}->{n_out}", [(1, rows, n_in)],
                      lambda x, w=w, b=b: op.linear(x, relax.const(w), relax.const(b)),
                      lambda x, w=torch.from_numpy(w), b=torch.from_numpy(b): F.linear(x, w, b),
                      2 * rows * n_in * n_out))

    for n_in, n_out, what in ((768, 2304, "qkv"), (768, 768, "attn proj"), (768, 3072, "mlp fc"),
                              (3072, 768, "mlp proj")):
        dense(f"dense {what}", 128, n_in, n_out)
    cases.append(("attention 1x128x12x64 causal", [(1, 128, 12, 64)] * 3,
                  lambda q, k, v: op.nn.attention(q, k, v, causal_mask="TopLeft"),
                  lambda q, k, v: F.scaled_dot_product_attention(
                      q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True).transpose(1, 2),
                  2 * 2 * 12 * 128 * 128 * 64))
    g, bt = const(768, std=1.0), const(768)
    cases.append(("layernorm 128x768", [(1, 128, 768)],
                  lambda x: op.nn.layer_norm(x, relax.const(g), relax.const(bt), axes=[-1], epsilon=1e-5),
                  lambda x, g=torch.from_numpy(g), b=torch.from_numpy(bt): F.layer_norm(x, (768,), g, b, 1e-5),
                  8 * 128 * 768))
    cases.append(("gelu(tanh) 128x3072", [(1, 128, 3072)], lambda x: op.nn.gelu_tanh(x),
                  lambda x: F.gelu(x, approximate="tanh"), 8 * 128 * 3072))
    # the transformer zoo's other shapes: GPT-2's lm_head, ViT-B/16's 197-token rows, its 16x16/16 patch conv
    w, b = const(50257, 768), const(50257)
    cases.append(("dense lm_head 128x768->50257", [(1, 128, 768)],
                  lambda x, w=w: op.matmul(x, relax.const(np.ascontiguousarray(w.T))),
                  lambda x, w=torch.from_numpy(w): F.linear(x, w), 2 * 128 * 768 * 50257))
    for n_in, n_out in ((768, 768), (768, 3072), (3072, 768)):
        dense("dense vit", 197, n_in, n_out)
    cases.append(("attention vit 1x197x12x64", [(1, 197, 12, 64)] * 3,
                  lambda q, k, v: op.nn.attention(q, k, v),
                  lambda q, k, v: F.scaled_dot_product_attention(
                      q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2),
                  2 * 2 * 12 * 197 * 197 * 64))
    cases.append(("layernorm vit 197x768", [(1, 197, 768)],
                  lambda x: op.nn.layer_norm(x, relax.const(g), relax.const(bt), axes=[-1], epsilon=1e-6),
                  lambda x, g=torch.from_numpy(g), b=torch.from_numpy(bt): F.layer_norm(x, (768,), g, b, 1e-6),
                  8 * 197 * 768))
    cases.append(("gelu(erf) vit 197x3072", [(1, 197, 3072)], lambda x: op.nn.gelu(x),
                  lambda x: F.gelu(x), 8 * 197 * 3072))
    # ResNet-18's convs, then ResNet-50's (x N: how many ResNet-50 has)
    r50 = {c[:5]: c[5] for c in RESNET50_CONVS}
    convs = [(*c, r50.get(c, 0)) for c in ((3, 768, 16, 16, 224), (3, 64, 7, 2, 224), (64, 64, 3, 1, 56), (64, 128, 3, 2, 56),
                                            (128, 128, 3, 1, 28), (256, 256, 3, 1, 14), (512, 512, 3, 1, 7),
                                            (256, 512, 1, 2, 14))]
    convs += [c for c in RESNET50_CONVS if c[:5] not in {x[:5] for x in convs}]
    for ic, oc, k, s, hw, count in convs:
        w, b = const(oc, ic, k, k), const(1, oc, 1, 1)
        pad = 0 if k == s else k // 2  # a patch embedding (k == stride) has no padding
        oh = (hw + 2 * pad - k) // s + 1
        times = f" (x{count} in R50)" if count else ""
        cases.append((f"conv {ic}->{oc} {k}x{k}/{s} @{hw}{times}", [(1, ic, hw, hw)],
                      lambda x, w=w, b=b, s=s, pad=pad: op.nn.relu(op.add(op.nn.conv2d(
                          x, relax.const(w), strides=s, padding=pad), relax.const(b))),
                      lambda x, w=torch.from_numpy(w), b=torch.from_numpy(b.reshape(-1)), s=s, pad=pad: F.relu(
                          F.conv2d(x, w, b, stride=s, padding=pad)),
                      2 * ic * oc * k * k * oh * oh))
    return cases


def _op_module(build, shapes):
    bb = relax.BlockBuilder()
    xs = [relax.Var(f"x{i}", relax.TensorType(s, "float32")) for i, s in enumerate(shapes)]
    with bb.function("main", xs):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(build(*xs)))
        bb.emit_func_output(out)
    return bb.get()


def _asm_profile(ex) -> str:
    """What the hot loop looks like: vector FMAs by register width, and stores/loads of full vectors."""
    from specc.backends.tvm.codegen import device_modules

    asm = "\n".join(m.inspect_source("asm") for m in device_modules(ex, "llvm"))
    counts = {"zmm": 0, "ymm": 0, "xmm": 0}
    scalar = 0
    for line in asm.splitlines():
        t = line.strip()
        if t.startswith("vfmadd") or t.startswith("vfnmadd"):
            if "ss" in t.split()[0][-2:] or "sd" in t.split()[0][-2:]:
                scalar += 1
            for reg in counts:
                if f"%{reg}" in t:
                    counts[reg] += 1
                    break
    width = "zmm(512)" if counts["zmm"] else "ymm(256)" if counts["ymm"] else "xmm(128)" if counts["xmm"] else "none"
    return f"{width}; FMAs zmm {counts['zmm']} ymm {counts['ymm']} xmm {counts['xmm']} scalar {scalar}"


def bench_ops(args, peak):
    """Each hot op alone: specc's TVM kernel (host mcpu and --op-mcpus code) vs torch vs onnxruntime, and the
    instructions the schedule produces for each --op-mcpus target."""
    import tempfile
    from pathlib import Path

    rng = np.random.default_rng(0)
    host = tvm.target.Target.from_device(tvm.cpu()).export()
    mcpus = [host.get("mcpu", "generic")] + [m for m in args.op_mcpus.split(",") if m]
    runnable = {m for m in mcpus if _runs_here(m)}
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    print(f"\n== per-op breakdown ({'thread CPU time' if _clock is time.thread_time else 'wall'}, "
          f"{args.threads} thread(s)); TVM code for: {', '.join(mcpus)} (timed: those this CPU can run) ==")
    rows = []
    for label, shapes, build, tfn, flops in _op_cases(rng):
        if args.ops and not any(o in label for o in args.ops.split(",")):
            continue
        mod = _op_module(build, shapes)
        xs = [rng.standard_normal(s).astype("float32") for s in shapes]
        txs = [torch.from_numpy(x) for x in xs]
        with torch.no_grad():
            ref = tfn(*txs).numpy()
        fns, asm = {}, {}
        for m in mcpus:
            target = tvm.target.Target({"kind": "llvm", "mcpu": m, "num-cores": args.threads})
            ex = tvm.compile(optimize_for_cpu(mod, target), target, tir_pipeline=TIR_PIPELINE)
            asm[m] = _asm_profile(ex)
            if m in runnable:
                vm = relax.VirtualMachine(ex, tvm.cpu())
                vin = [tvm.runtime.tensor(x) for x in xs]
                out = vm["main"](*vin).numpy()
                err = float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-30))
                assert err < 1e-4, (label, m, err)
                fns[f"tvm {m}"] = lambda vm=vm, vin=vin: vm["main"](*vin)

        def run_torch(txs=txs, tfn=tfn):
            with torch.no_grad():
                tfn(*txs)

        fns = {"torch": run_torch, **fns}
        if ort is not None:
            class Op(torch.nn.Module):
                fn = staticmethod(tfn)

                def forward(self, *a):
                    return self.fn(*a)

            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "op.onnx"
                torch.onnx.export(Op(), tuple(txs), str(path), opset_version=18, dynamo=False)
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = args.threads
                sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            feed = {i.name: x for i, x in zip(sess.get_inputs(), xs)}
            fns["onnxruntime"] = lambda sess=sess, feed=feed: sess.run(None, feed)
        names = list(fns)
        res = dict(zip(names, interleaved_times(list(fns.values()), rounds=4, per_block=6, budget_s=3.0)))
        base = res.get("onnxruntime", res["torch"])[0]
        cells = "  ".join(f"{k} {v[0] * 1e3:.3f} ms ({v[0] / base:.2f}x, {flops / v[0] / 1e9:.0f} GF/s)"
                          for k, v in res.items())
        print(f"{label:<34}{cells}")
        for m in mcpus:
            print(f"{'':<6}code for {m:<16}{asm[m]}")
        rows.append((label, res))
    # ResNet-50's convs weighted by how often the net has each: where the time goes, per peer
    tot: dict = {}
    for label, res in rows:
        if " in R50)" not in label:
            continue
        n = int(label.rsplit("(x", 1)[1].split()[0])
        for k, v in res.items():
            tot[k] = tot.get(k, 0.0) + n * v[0]
    if tot:
        base = tot.get("onnxruntime", tot.get("torch"))
        print("ResNet-50 convs (each time x its count), sum: " + "  ".join(
            f"{k} {v * 1e3:.1f} ms ({v / base:.2f}x)" for k, v in tot.items()))
    return rows


def _runs_here(mcpu: str) -> bool:
    """Whether this CPU has every SIMD feature the mcpu's code may use (then its code can be timed here)."""
    from specc.backends.tvm.schedules._target import cpu_info

    host = cpu_info(tvm.target.Target.from_device(tvm.cpu()))
    other = cpu_info(tvm.target.Target({"kind": "llvm", "mcpu": mcpu}))
    return set(other.features) <= set(host.features)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-untuned", action="store_true", help="skip the slow untuned (zero) build")
    ap.add_argument("--models", default="resnet18,gpt2")
    ap.add_argument("--show-schedules", action="store_true")
    ap.add_argument("--cpu-time", action="store_true",
                    help="with --threads 1: time with the calling thread's CPU time (robust on a loaded box)")
    ap.add_argument("--mcpu", default=None,
                    help="LLVM cpu for TVM codegen (default: host, e.g. znver5); znver3 = AVX2-only code")
    ap.add_argument("--per-op", action="store_true", help="the per-op breakdown (dense, attention, layernorm, "
                    "gelu, ResNet convs) instead of whole models")
    ap.add_argument("--ops", default="", help="with --per-op: only ops whose label contains one of these")
    ap.add_argument("--op-mcpus", default="haswell,znver3,skylake-avx512,icelake-server,znver4",
                    help="with --per-op: also generate (and, where this CPU can run it, time) code for these")
    args = ap.parse_args()
    if args.cpu_time:
        if args.threads != 1:
            raise SystemExit("--cpu-time needs --threads 1 (CPU time of the calling thread)")
        global _clock  # noqa: PLW0603
        _clock = time.thread_time
    torch.set_num_threads(args.threads)
    host = tvm.target.Target.from_device(tvm.cpu())
    tdict = {k: v for k, v in host.export().items() if k in ("kind", "mcpu", "mtriple")}
    if args.mcpu:
        tdict["mcpu"] = args.mcpu
    target = tvm.target.Target({**tdict, "num-cores": args.threads})
    print(f"load average at start: {os.getloadavg()}  clock: {'thread CPU time' if args.cpu_time else 'wall'}")
    print(f"target: {target}  TVM threads: {os.environ['TVM_NUM_THREADS']}  torch threads: "
          f"{torch.get_num_threads()}  torch {torch.__version__}  tvm {tvm.__version__}")
    pk_torch, pk_np = matmul_peak()
    peak = max(pk_torch, pk_np)
    print(f"measured fp32 matmul peak (1024^3): torch {pk_torch:.1f} GFLOP/s, numpy {pk_np:.1f} GFLOP/s")
    if args.per_op:
        bench_ops(args, peak)
        return
    rng = np.random.default_rng(0)
    summary = []
    for model in args.models.split(","):
        if model == "resnet18":
            params = resnet18_params(rng)
            mod = resnet18_relax(params)
            x = rng.standard_normal((1, 3, 224, 224)).astype("float32")
            t_torch, res = bench_model("ResNet-18 1x3x224x224", mod, TorchResNet18(params).eval(), [x],
                                       resnet18_flops(), target, peak, args.skip_untuned)
        elif model == "gpt2":
            params = gpt2_params(rng)
            mod = gpt2_block_relax(params)
            x = rng.standard_normal((1, 128, 768)).astype("float32")
            t_torch, res = bench_model("GPT-2 block 1x128x768", mod, TorchGPT2Block(params).eval(), [x],
                                       gpt2_flops(), target, peak, args.skip_untuned)
        else:
            raise SystemExit(f"unknown model {model}")
        if args.show_schedules:
            print(res.get("stats"))
        t, ok, _ = res["tvm specc"]
        summary.append((model, t / t_torch, res["min_ratio"], ok))
    print(f"load average at end: {os.getloadavg()}")
    print("\nsummary TVM specc / torch eager (median; min):", ", ".join(
        f"{m} {r:.2f}x; {rm:.2f}x{'' if ok else ' MISMATCH'}" for m, r, rm, ok in summary))


if __name__ == "__main__":
    main()
