"""A/B timing of specc's TVM build of bench models under switches read at build time, in one process.

    python bench/env_ab.py --models moe --variant exact= --variant padded=SPECC_EXACT_TAIL=0
    python bench/env_ab.py --models gpt2-block --variant on= --variant off=SPECC_GEMM_PREFETCH=0 --threads 2
    python bench/env_ab.py --models resnet18,resnet50 --switch SPECC_STEM_NCHWC --rounds 12 --mcpu haswell

Each `--variant NAME=VAR=VALUE[,VAR=VALUE...]` builds the model of bench/tvm_vs_torch.py (same spec, weights and
inputs; GPT-2 / BERT / ViT at the bench's 2 layers) with those environment variables set during the build only;
`--switch VAR` is the two variants VAR=0 and VAR=1. `dims=static` in a variant builds it with the bench's dims fixed
(`--static`: the variant static=dims=static); times are also given relative to the variant named `static`. The
builds and onnxruntime then run interleaved (tvm_vs_torch.interleaved: round-robin, a block's first call untimed),
so the machine's load falls on all of them alike. 1 thread: thread CPU time; more: wall time. Each build's output is
checked against PyTorch first; `--mcpu` builds for another LLVM cpu (haswell: AVX2 code; onnxruntime keeps the
host's)."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tvm_vs_torch as tvt  # noqa: E402  (sets the thread variables before torch / tvm load)

torch = tvt.torch


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, settings = text.partition("=")
    env = dict(item.split("=", 1) for item in settings.split(",") if item)
    return name, env


def build(spec, eager, env: dict[str, str], target="tvm-cpu", dims: dict[str, int] | None = None):
    """spec's TVM build with the environment variables `env` set while it compiles (switches read at build time)."""
    with mock.patch.dict(os.environ, env):  # set while it compiles, restored after
        return spec.to_tvm(target, weights=eager, dims=dims)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="moe", help=f"comma-separated, of: {', '.join(sorted(tvt.MODELS))}")
    p.add_argument("--variant", action="append", default=[], help="NAME=VAR=VALUE[,VAR=VALUE...]")
    p.add_argument("--switch", default=None, help="environment variable: the variants VAR=0 and VAR=1")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=14)
    p.add_argument("--budget", type=float, default=float("inf"), help="seconds of timing per model, at most")
    p.add_argument("--mcpu", default=None, help="LLVM cpu for TVM's code (haswell: AVX2)")
    p.add_argument("--static", action="store_true",
                   help="also the static build (dims fixed, defaults): what the symbolic variants cost over it")
    args = p.parse_args()
    variants = list(args.variant) + ([f"{args.switch}:{v}={args.switch}={v}" for v in ("0", "1")] if args.switch
                                     else []) + (["static=dims=static"] if args.static else [])
    if not variants:
        p.error("give --variant, --switch or --static")
    names = [parse_variant(v)[0] for v in variants]
    if len(set(names)) != len(names):  # the timings are keyed by name: a repeated one would hide a variant
        p.error(f"variant names repeat: {', '.join(names)}")
    unknown = [m for m in args.models.split(",") if m not in tvt.MODELS]
    if unknown:
        p.error(f"unknown model {unknown[0]!r}; choose from {', '.join(sorted(tvt.MODELS))}")
    print(f"CPU: {tvt.cpu_model()}; mcpu {args.mcpu or 'host'}")
    for name in args.models.split(","):
        run_model(name, variants, args)


def run_model(model_name: str, variants: list[str], args) -> None:
    import tvm
    from onnx_moe import exportable
    from torch_util import random_inputs

    from specc.backends.tvm.codegen import configure_threads
    from specc.targets import load_target

    target = load_target("tvm-cpu").model_copy(update={"mcpu": args.mcpu}) if args.mcpu else "tvm-cpu"
    loader, dims = tvt.MODELS[model_name]
    spec = loader(dict(tvt.SHRUNK.get(model_name, {})))
    inputs = random_inputs(spec, dims, seed=0)
    torch.manual_seed(0)
    eager = tvt.no_zero_params(spec.to_torch().eval())
    with torch.no_grad():
        want = eager(*inputs)
    vin = [tvm.runtime.tensor(x.numpy()) for x in inputs]
    peers = {}
    for name, env in map(parse_variant, variants):
        static = env.pop("dims", None) == "static"
        model = build(spec, eager, env, target, dims if static else None)
        if static:
            env = {**env, "dims": dims}
        print(f"{name}: {env or 'defaults'}, max|diff|/max|ref| {tvt.rel_diff(model(*inputs), want):.1e}")
        peers[name] = lambda f=model.vm["main"]: f(*vin)
    torch.set_num_threads(args.threads)
    configure_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        why = tvt.onnx_export(exportable(eager), inputs, path)
        if why:
            print(f"onnxruntime: {why}")
        else:
            _sess, peers["onnxruntime"] = tvt.onnxruntime_peer(path, inputs, args.threads)
        clock = time.thread_time if args.threads == 1 else time.perf_counter
        times = tvt.interleaved(peers, args.rounds, args.budget, clock)
    ort = times.get("onnxruntime")
    print(f"{model_name}, {args.threads} thread(s), {'thread CPU' if args.threads == 1 else 'wall'} time; "
          f"load average {os.getloadavg()[0]:.1f}")
    for name, (med, mn) in times.items():
        vs = f"  vs onnxruntime {med / ort[0]:.3f} (min {mn / ort[1]:.3f})" if ort else ""
        if "static" in times:
            vs += f"  vs static {med / times['static'][0]:.3f} (min {mn / times['static'][1]:.3f})"
        print(f"{name:<22} median {med * 1e3:8.2f} ms  min {mn * 1e3:8.2f} ms{vs}")


if __name__ == "__main__":
    main()
