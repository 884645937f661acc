"""specc's tvm-cuda build vs PyTorch on the same GPU: ResNet-50 (batch 32) and GPT-2 (batch 8 x 1024 tokens).

    python bench/cuda.py                          # build and run here: needs a GPU and a full TVM
    python bench/cuda.py build DIR                # on any machine with TVM's compiler (no GPU needed) ...
    python bench/cuda.py run DIR [--runs 50]      # ... then on the GPU machine, which needs only torch and TVM's
                                                  # runtime (libtvm_runtime + libtvm_runtime_cuda) and nvcc or NVRTC

`build` writes, per model, the CUDA library without its weights (`build(..., bind_weights=False)`: GPT-2's 500 MB
of weights need not travel), the PyTorch module specc emits for the same spec, and a JSON file saying how they fit
together (input types, the weights' names and order). `run` builds the PyTorch module on the GPU with its own seeded
initialisation, hands the same weights to the TVM library (their weight-only arithmetic runs once, in
main_transform_params), runs both on the same random input, compares the outputs (max |diff| / max |ref|, must be
<= 1e-4: fp32 on both sides, TF32 off) and times both with CUDA-synchronised wall clocks, median and minimum of
--runs calls after warm-up; --profile adds each side's slowest kernels. The CUDA kernels are compiled for the GPU's
own sm_ when the library loads (NVRTC through cuda-bindings, else the nvcc on PATH).

A GPU machine without TVM can take the `apache-tvm` wheel's `tvm/` package without lib/libtvm_compiler.so (and
3rdparty/), 19 MB, plus the `apache-tvm-ffi` wheel for its Python, and run `run` with TVM_USE_RUNTIME_LIB=1 and that
folder on PYTHONPATH. Figures from an H200 are in specc/backends/tvm/schedules/README.md.
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Run as `python bench/cuda.py`, Python puts bench/ first on sys.path, and this file then shadows the `cuda` package
# (cuda-python) that TVM's NVRTC route imports: "No module named 'cuda.bindings'; 'cuda' is not a package", and
# every CUDA kernel went to nvcc on the H200 image. Nothing here imports a sibling script.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]

MODELS = {
    "resnet50": ("resnet50.nn", {"B": 32}),
    "gpt2": ("gpt2.nn", {"B": 8, "T": 1024}),
    "lenet5": ("lenet5.nn", {"B": 4}),  # a seconds-long check of the two steps (tests/test_bench_cuda.py, on CPU)
}


# ---- build: any machine with TVM's compiler ----

def build(folder: Path, models: list[str], arch: str, target: str = "tvm-cuda") -> None:
    sys.path.insert(0, str(REPO))
    import specc
    from specc.naming import class_name
    from specc.targets import load_target
    from specc.types import DTYPES

    folder.mkdir(parents=True, exist_ok=True)
    target = load_target(target)
    if target.device == "cuda":
        target = target.model_copy(update={"arch": arch})
    for name in models:
        file, dims = MODELS[name]
        spec = specc.load(REPO / "specs" / file)
        t0 = time.perf_counter()
        built = spec.to_tvm(target, dims=dims, bind_weights=False)
        built.export_library(folder / f"{name}.so")
        (folder / f"{name}_torch.py").write_text(spec.torch_source())
        inputs = [[n, DTYPES[t.dtype], [int(d.subs(dims)) if hasattr(d, "subs") else int(d) for d in t.shape]]
                  for n, t in zip(built.input_names, built.lowered.input_types)]
        meta = {"model": name, "dims": dims, "device": target.device, "class": class_name(spec.module.name),
                "library": f"{name}.so", "torch": f"{name}_torch.py", "inputs": inputs,
                "weights": [[n, list(shape), dtype] for n, (shape, dtype) in built.lowered.weights.items()]}
        (folder / f"{name}.json").write_text(json.dumps(meta, indent=1))
        built_for = arch if target.device == "cuda" else target.name
        print(f"{name} {dims}: built for {built_for} in {time.perf_counter() - t0:.0f} s, "
              f"{(folder / f'{name}.so').stat().st_size / 1e6:.1f} MB library", flush=True)


# ---- run: the GPU machine ----

@functools.cache
def runner_template():
    """specc's compiled-model runner (specc/backends/tvm/runner_template.py) as a module, read from its file: it
    needs only TVM's runtime and numpy, as this step does (no specc dependencies on the GPU machine). Its
    cuda_runtime() lets a runtime-only TVM load CUDA libraries; its upload_weights() hands a library its weights."""
    path = REPO / "specc" / "backends" / "tvm" / "runner_template.py"
    found = importlib.util.spec_from_file_location("specc_runner_template", path)
    runner = importlib.util.module_from_spec(found)
    found.loader.exec_module(runner)
    return runner


def timed(fn, runs: int, sync) -> tuple[float, float]:
    for _ in range(3):
        fn()
    sync()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def random_input(kind: str, shape: list[int], gen):
    import torch

    if kind.startswith("int"):  # token ids, drawn from [0, 2) as the tests' random inputs are
        return torch.randint(0, 2, shape, generator=gen, dtype=getattr(torch, kind))
    return torch.randn(shape, generator=gen, dtype=getattr(torch, kind))


def profile(fn, top: int = 12) -> None:
    """The GPU kernels that take the time in one call of `fn`, from torch's profiler (CUPTI sees TVM's kernels too:
    this TVM's VM has no profiler of its own)."""
    import torch
    from torch.profiler import ProfilerActivity

    with torch.profiler.profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    events.sort(key=lambda e: -e.self_device_time_total)
    total = sum(e.self_device_time_total for e in events) or 1.0
    for e in events[:top]:
        print(f"  {e.self_device_time_total / 1e3:8.2f} ms {100 * e.self_device_time_total / total:5.1f}%  "
              f"x{e.count:<3d} {e.key[:90]}")


def run_one(folder: Path, meta: dict, runs: int, arch: str | None, show_profile: bool = False) -> dict:
    """Build the PyTorch module, load the TVM library with the module's weights, compare and time both."""
    import torch
    import tvm
    from tvm.runtime.vm import VirtualMachine

    runner = runner_template()
    if arch is not None:
        runner.cuda_runtime(arch)

    where = "cuda" if arch else "cpu"
    sync = torch.cuda.synchronize if arch else (lambda: None)
    spec = importlib.util.spec_from_file_location(f"specc_bench_{meta['model']}", folder / meta["torch"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    model = getattr(module, meta["class"])().eval().to(where)
    state = model.state_dict()
    gen = torch.Generator().manual_seed(0)
    inputs = [random_input(dtype, shape, gen).to(where) for _, dtype, shape in meta["inputs"]]

    dev = tvm.cuda(0) if arch else tvm.cpu(0)
    t0 = time.perf_counter()
    vm = VirtualMachine(tvm.runtime.load_module(str(folder / meta["library"])), dev, memory_cfg="pooled")
    params = runner.upload_weights(vm, [state[n].detach().cpu().numpy().astype(dtype)
                                        for n, _, dtype in meta["weights"]], dev)
    args = [tvm.runtime.from_dlpack(x.contiguous()) for x in inputs] + params
    vm["main"](*args)
    sync()
    load_s = time.perf_counter() - t0

    with torch.no_grad():
        want = model(*inputs)
    got = vm["main"](*args)
    want0 = want[0] if isinstance(want, (tuple, list)) else want
    got0 = torch.from_dlpack(got if hasattr(got, "shape") else got[0])
    rel = float((got0.float() - want0.float()).abs().max() / want0.float().abs().max())

    def run_torch():
        with torch.no_grad():
            model(*inputs)

    t_torch = timed(run_torch, runs, sync)
    t_tvm = timed(lambda: vm["main"](*args), runs, sync)
    print(f"{meta['model']} {meta['dims']}: first load+run {load_s:.1f} s (CUDA kernels compile here); "
          f"max|diff|/max|ref| {rel:.1e} ({'OK' if rel <= 1e-4 else 'MISMATCH'}); torch {t_torch[0] * 1e3:.2f} ms "
          f"(min {t_torch[1] * 1e3:.2f}), tvm {t_tvm[0] * 1e3:.2f} ms (min {t_tvm[1] * 1e3:.2f}), "
          f"tvm/torch {t_tvm[0] / t_torch[0]:.2f}x", flush=True)
    if show_profile and arch:
        print("  torch:")
        profile(run_torch)
        print("  tvm:")
        profile(lambda: vm["main"](*args))
    return {"model": meta["model"], "rel": rel, "torch_ms": t_torch[0] * 1e3, "tvm_ms": t_tvm[0] * 1e3}


def run(folder: Path, models: list[str], runs: int, show_profile: bool = False) -> int:
    import torch

    metas = [json.loads((folder / f"{name}.json").read_text()) for name in models]
    arch = None
    if any(m["device"] == "cuda" for m in metas):
        if not torch.cuda.is_available():
            print("no CUDA device (or a CPU-only torch): these libraries need a GPU", file=sys.stderr)
            return 2
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 on both sides, so the outputs compare at 1e-4
        torch.backends.cudnn.allow_tf32 = False
        major, minor = torch.cuda.get_device_capability(0)
        arch = f"sm_{major}{minor}"
        print(f"GPU: {torch.cuda.get_device_name(0)} ({arch}), torch {torch.__version__}", flush=True)
    rows = []
    for meta in metas:
        try:
            rows.append(run_one(folder, meta, runs, arch if meta["device"] == "cuda" else None, show_profile))
        except Exception as e:  # one model failing must not hide the other's figures
            print(f"{meta['model']}: FAILED: {type(e).__name__}: {str(e)[-3000:]}", flush=True)
            rows.append({"model": meta["model"], "rel": float("inf")})
    return 0 if all(r["rel"] <= 1e-4 for r in rows) else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", nargs="?", choices=["build", "run"], help="build here, run elsewhere (default: both)")
    ap.add_argument("folder", nargs="?", type=Path, help="where `build` writes and `run` reads")
    ap.add_argument("--models", default="resnet50,gpt2")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--profile", action="store_true", help="after timing, each side's slowest GPU kernels")
    ap.add_argument("--arch", default="sm_90", help="the sm_ the library is built for (`build`; default sm_90)")
    ap.add_argument("--target", default="tvm-cuda", help="`build` for another TVM target (tvm-cpu: a check of the "
                    "two steps on a machine without a GPU)")
    args = ap.parse_args()
    models = args.models.split(",")
    if args.step and args.folder is None:
        ap.error(f"`{args.step}` needs a folder")
    if args.step == "build":
        build(args.folder, models, args.arch, args.target)
        return 0
    if args.step == "run":
        return run(args.folder, models, args.runs, args.profile)
    with tempfile.TemporaryDirectory() as tmp:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            args.arch = f"sm_{major}{minor}"
        build(Path(tmp), models, args.arch)
        return run(Path(tmp), models, args.runs, args.profile)


if __name__ == "__main__":
    sys.exit(main())
