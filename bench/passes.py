"""Inference latency of emitted PyTorch modules with the whole pass pipeline (-O2: eager fusion, eval mode) vs
without (-O0), and vs torch.compile of the unoptimised module, all in the same run, interleaved so that machine load hits every variant
alike. Prints median milliseconds per forward and the ratios.

    python bench/passes.py                          # ResNet-18, ResNet-50, GPT-2, hand-written GPT (GPT-2 sized)
    python bench/passes.py --models resnet18 --iters 50 --batch 8
    python bench/passes.py --no-compile             # skip torch.compile (it needs a C++ compiler, and minutes)

Models: specs/resnet18.nn and specs/resnet50.nn at 224x224; specs/gpt2.nn (GPT-2 small: its spec already writes
attention as sdpa and one fused c_attn, so the passes have little left to do); and the GPT-2-sized hand-written
spec tests/golden/passes/hand_attention.nn, whose attention, layernorm and q/k/v projections the passes fuse.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

import specc  # noqa: E402
from specc.backends.torch import load_source  # noqa: E402
from specc.backends.torch.emit import class_name, emit_module_source  # noqa: E402
from specc.passes import PipelineOptions, run_pipeline  # noqa: E402

GPT2_SIZE = {"vocab": 50257, "d": 768, "heads": 12, "layers": 12}


@dataclass
class Model:
    name: str
    path: Path
    overrides: dict = field(default_factory=dict)
    kind: str = "image"  # image | tokens | tokens+mask


MODELS = {
    "resnet18": Model("ResNet-18", REPO / "specs" / "resnet18.nn"),
    "resnet50": Model("ResNet-50", REPO / "specs" / "resnet50.nn"),
    "gpt2": Model("GPT-2", REPO / "specs" / "gpt2.nn", kind="tokens"),
    "handgpt": Model("hand-written GPT (GPT-2 size)", REPO / "tests" / "golden" / "passes" / "hand_attention.nn",
                     GPT2_SIZE, kind="tokens+mask"),
}


def build(module, name: str) -> torch.nn.Module:
    cls = class_name(name)
    return getattr(load_source(emit_module_source(module), cls), cls)()


def inputs(model: Model, batch: int, seq: int) -> tuple:
    gen = torch.Generator().manual_seed(0)
    if model.kind == "image":
        return (torch.randn(batch, 3, 224, 224, generator=gen),)
    tokens = torch.randint(0, 50257, (batch, seq), generator=gen)
    if model.kind == "tokens":
        return (tokens,)
    causal = torch.full((seq, seq), float("-inf")).triu(1)
    return tokens, causal


CLOCK = time.perf_counter


def time_one(fn, args) -> float:
    t0 = CLOCK()
    fn(*args)
    return CLOCK() - t0


def bench(key: str, args) -> list[str]:
    model = MODELS[key]
    spec = specc.load(model.path, overrides=model.overrides)
    m0 = spec.module
    m1, report = run_pipeline(m0, PipelineOptions(level=2, inference=True, report=True))
    total = report.splitlines()[-1]
    ref = build(m0, spec.name).eval()
    opt = build(m1, spec.name).eval()
    opt.load_state_dict(ref.state_dict())
    x = inputs(model, args.batch, args.seq)
    variants = {"eager -O0": ref, "eager -O2": opt}
    compile_s = None
    with torch.inference_mode():
        want = ref(*x)
        err = (opt(*x) - want).abs().max().item()
        if not args.no_compile:
            compiled = torch.compile(ref)
            t0 = time.perf_counter()
            got = compiled(*x)  # compiles
            compile_s = time.perf_counter() - t0
            cerr = (got - want).abs().max().item()
            variants["torch.compile -O0"] = compiled
        for fn in variants.values():  # warm up
            for _ in range(args.warmup):
                fn(*x)
        times: dict[str, list[float]] = {k: [] for k in variants}
        names = list(variants)
        for i in range(args.iters):  # interleaved, rotating who goes first
            for k in names[i % len(names):] + names[:i % len(names)]:
                times[k].append(time_one(variants[k], x))
    # the minimum is the least disturbed by other load on the machine; the median is shown next to it
    ms = {k: 1e3 * min(v) for k, v in times.items()}
    lines = [f"{model.name}: batch {args.batch}" + (f", {args.seq} tokens" if model.kind != "image" else ", 224x224")
             + f"; passes: {total}; max |-O2 - -O0| = {err:.1e}"
             + (f", max |compile - -O0| = {cerr:.1e}, compile took {compile_s:.0f} s" if compile_s else "")]
    for k, v in ms.items():
        lines.append(f"  {k:<20} {v:9.2f} ms best   (median {1e3 * statistics.median(times[k]):.2f})")
    lines.append(f"  ratio -O0 / -O2: {ms['eager -O0'] / ms['eager -O2']:.2f}x faster with passes")
    if "torch.compile -O0" in ms:
        lines.append(f"  ratio compile / -O2: {ms['torch.compile -O0'] / ms['eager -O2']:.2f} "
                     f"(>1: eager -O2 is faster than torch.compile of -O0); "
                     f"-O0 / compile: {ms['eager -O0'] / ms['torch.compile -O0']:.2f}x")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128, help="tokens per sequence for the GPTs")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice; "
                    "1 with --clock cpu)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: elapsed time; cpu: CPU time of the (single) compute thread, which time spent waiting "
                         "for a core on a loaded machine does not inflate")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    args = ap.parse_args()
    global CLOCK
    if args.clock == "cpu":
        CLOCK = time.thread_time
        args.threads = args.threads or 1
        if args.threads != 1:
            ap.error("--clock cpu measures one thread: use --threads 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load}; {args.iters} interleaved "
          f"iterations; best (and median) {args.clock} time per forward, inference_mode, eval; ratios use the best")
    for key in args.models.split(","):
        print("\n".join(bench(key.strip(), args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
