"""Benchmark: generate() with its key/value cache vs recomputing the whole prefix for every new token.

The -D-shrunk GPT-2 of specs/gpt2.nn (default: 2 layers, d 256, 4 heads, vocab 2048, ctx 512), a batch of one
16-token prompt, 256 new tokens, greedy. `cached` is the emitted model's generate(), which runs the prompt once and
then one position per token; `recompute` runs the model on the whole sequence so far for every token (what a model
without a cache must do) and takes the last position's logits. Both must produce the same tokens (checked). Runs
alternate (cached, recompute, cached, ...) so that load on a shared machine hits both alike; the table gives
medians and minimums, and the ratio recompute / cached of the medians (issue 12 asks for at least 5x).

    python bench/generate.py [--threads 1] [--runs 3] [--new 256] [--prompt 16] [-D layers=4 -D d=256 ...]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import specc  # noqa: E402
from specc.options import parse_define  # noqa: E402

SHRUNK = {"layers": 2, "d": 256, "heads": 4, "vocab": 2048, "ctx": 512}


def recompute(model, tokens: torch.Tensor, new: int) -> torch.Tensor:
    """Greedy decoding without a cache: the whole sequence so far through the model for every token."""
    with torch.no_grad():
        for _ in range(new):
            token = model(tokens)[:, -1].argmax(-1, keepdim=True)
            tokens = torch.cat([tokens, token], dim=1)
    return tokens


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return "unknown (no lscpu)"
    return next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "unknown")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--new", type=int, default=256, help="new tokens per run")
    ap.add_argument("--prompt", type=int, default=16, help="prompt length")
    ap.add_argument("-D", "--dim", action="append", default=[], help="GPT-2 hyper-parameter override name=value")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dims = {**SHRUNK, **dict(parse_define(d) for d in args.dim)}
    spec = specc.load(ROOT / "specs" / "gpt2.nn", overrides=dims)
    torch.manual_seed(0)
    model = spec.to_torch().eval()
    prompt = torch.randint(0, dims["vocab"], (1, args.prompt), generator=torch.Generator().manual_seed(0))
    runs = {
        "cached": lambda: model.generate(prompt, args.new, temperature=0),
        "recompute": lambda: recompute(model, prompt, args.new),
    }
    outs = {name: fn() for name, fn in runs.items()}  # warm-up, and the check that both decode alike
    if not torch.equal(outs["cached"], outs["recompute"]):
        sys.exit("cached and recomputed greedy decoding differ")
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.runs):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    print(f"GPT-2 {' '.join(f'{k}={v}' for k, v in dims.items())}: {args.prompt}-token prompt, {args.new} new tokens, "
          f"greedy, {args.threads} threads, {args.runs} interleaved runs; CPU: {cpu_model()}")
    for name, ts in times.items():
        print(f"  {name:<10} median {statistics.median(ts):7.3f} s   min {min(ts):7.3f} s   "
              f"({args.new / statistics.median(ts):7.1f} tokens/s)")
    ratio = statistics.median(times["recompute"]) / statistics.median(times["cached"])
    print(f"  speed-up of the cache (recompute / cached, medians): {ratio:.1f}x")


if __name__ == "__main__":
    main()
