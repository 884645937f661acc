"""A/B of one specc TVM switch in one process: the model built with an environment switch off and on (symbolic
dims, the default build), timed interleaved with onnxruntime, so a shared machine's load hits all three alike.

    OMP_NUM_THREADS=1 python bench/tvm_ab.py --models resnet18,resnet50 --switch SPECC_STEM_NCHWC --rounds 12

Prints, per model, each build's median and minimum (1 thread: the calling thread's CPU time) and its ratio to
onnxruntime, and each build's max |diff| / max |ref| against PyTorch eager.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

for _var in ("TVM_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))


def main() -> None:
    import tvm
    from onnx_moe import exportable
    from torch_util import random_inputs
    from tvm_vs_torch import MODELS, SHRUNK, cpu_model, interleaved, onnx_export, onnxruntime_peer, rel_diff

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18")
    ap.add_argument("--switch", required=True, help="environment variable: the A build sets it to 0, B to 1")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--budget", type=float, default=60.0, help="seconds of timing per model, at most")
    ap.add_argument("--mcpu", default=None, help="LLVM cpu for TVM's code (haswell: AVX2)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"CPU: {cpu_model()}; load average {os.getloadavg()[0]:.1f}; switch {args.switch}; mcpu "
          f"{args.mcpu or 'host'}")
    target = "tvm-cpu"
    if args.mcpu:
        from specc.targets import load_target

        target = load_target("tvm-cpu").model_copy(update={"mcpu": args.mcpu})
    for name in args.models.split(","):
        loader, dims = MODELS[name]
        spec = loader(SHRUNK.get(name, {}))
        inputs = random_inputs(spec, dims, seed=0)
        torch.manual_seed(0)
        eager = spec.to_torch().eval()
        with torch.no_grad():
            want = eager(*inputs)
        vin = [tvm.runtime.tensor(x.numpy()) for x in inputs]
        peers, checks = {}, {}
        old = os.environ.get(args.switch)
        for val in ("0", "1"):
            os.environ[args.switch] = val
            model = spec.to_tvm(target, weights=eager)
            key = f"{args.switch}={val}"
            checks[key] = rel_diff(model(*inputs), want)
            peers[key] = lambda f=model.vm["main"], a=vin: f(*a)
        if old is None:
            del os.environ[args.switch]
        else:
            os.environ[args.switch] = old
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            why = onnx_export(exportable(eager), inputs, path)
            if why:
                raise SystemExit(f"onnxruntime: {why}")
            sess, peers["onnxruntime"] = onnxruntime_peer(path, inputs, 1)
            times = interleaved(peers, args.rounds, args.budget, time.thread_time)
            del sess
        ort_med, ort_min = times["onnxruntime"]
        print(f"== {name} (load {os.getloadavg()[0]:.1f})")
        print(f"{'build':<24}{'median ms':>10}{'min ms':>9}{'vs ort':>8}{'min/min':>8}  max|diff|/max|ref|")
        for key, (med, mn) in times.items():
            check = f"{checks[key]:.1e}" if key in checks else ""
            print(f"{key:<24}{med * 1e3:>10.2f}{mn * 1e3:>9.2f}{med / ort_med:>8.3f}{mn / ort_min:>8.3f}  {check}")


if __name__ == "__main__":
    main()
