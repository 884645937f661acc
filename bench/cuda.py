"""specc's tvm-cuda build vs PyTorch on the same GPU: ResNet-50 (batch 32) and GPT-2 (batch 8 x 1024 tokens).

    python bench/cuda.py                       # both models, sm_ from the device, 20 timed runs each
    python bench/cuda.py --models resnet50 --runs 50

NOT YET RUN: written on a CPU-only machine (issue 16, item 6); no figures from it exist yet. It needs a CUDA GPU,
a CUDA build of torch and TVM's CUDA runtime (NVRTC via cuda-python, or nvcc with TVM_CUDA_COMPILE_MODE=nvcc).

For each model: the spec is built for PyTorch (eval mode, on the GPU) and for `tvm-cuda` with the same weights
(`specc compile --target tvm-cuda` does the same build), both run on the same random input, the outputs are compared
(max |diff| / max |ref|, must be <= 1e-4: TVM's CUDA kernels are fp32 like torch's with TF32 switched off here), and
both are timed with CUDA-synchronised wall clocks: median and minimum of --runs calls after warm-up.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import specc  # noqa: E402

MODELS = {
    "resnet50": ("resnet50.nn", {"B": 32}),
    "gpt2": ("gpt2.nn", {"B": 8, "T": 1024}),
}


def timed(fn, runs: int) -> tuple[float, float]:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def arch() -> str:
    major, minor = torch.cuda.get_device_capability(0)
    return f"sm_{major}{minor}"


def bench(name: str, runs: int) -> dict:
    from torch_util import random_inputs

    from specc.targets import load_target

    file, dims = MODELS[name]
    spec = specc.load(REPO / "specs" / file)
    torch.manual_seed(0)
    model = spec.to_torch().eval()
    target = load_target("tvm-cuda").model_copy(update={"arch": arch()})
    t0 = time.perf_counter()
    built = spec.to_tvm(target, weights=model, dims=dims)
    compile_s = time.perf_counter() - t0
    inputs = [x.cuda() for x in random_inputs(spec, dims, seed=0)]
    model = model.cuda()
    with torch.no_grad():
        want = model(*inputs)
        got = built(*inputs)
    want0 = want[0] if isinstance(want, (tuple, list)) else want
    got0 = got[0] if isinstance(got, (tuple, list)) else got
    got0 = torch.as_tensor(np.asarray(got0.cpu() if hasattr(got0, "cpu") else got0))
    rel = float((got0.float() - want0.float().cpu()).abs().max() / want0.float().abs().max().cpu())

    def run_torch():
        with torch.no_grad():
            model(*inputs)

    t_torch = timed(run_torch, runs)
    t_tvm = timed(lambda: built(*inputs), runs)
    print(f"{name} {dims}: compile {compile_s:.0f} s; max|diff|/max|ref| {rel:.1e} "
          f"({'OK' if rel <= 1e-4 else 'MISMATCH'}); torch {t_torch[0] * 1e3:.2f} ms (min {t_torch[1] * 1e3:.2f}), "
          f"tvm {t_tvm[0] * 1e3:.2f} ms (min {t_tvm[1] * 1e3:.2f}), tvm/torch {t_tvm[0] / t_torch[0]:.2f}x")
    return {"model": name, "rel": rel, "torch_ms": t_torch[0] * 1e3, "tvm_ms": t_tvm[0] * 1e3}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet50,gpt2")
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device (or a CPU-only torch): this benchmark needs a GPU", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 on both sides, so the outputs can be compared at 1e-4
    torch.backends.cudnn.allow_tf32 = False
    print(f"GPU: {torch.cuda.get_device_name(0)} ({arch()}), torch {torch.__version__}")
    rows = [bench(m, args.runs) for m in args.models.split(",")]
    return 0 if all(r["rel"] <= 1e-4 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
