"""Emitted PyTorch vs the hand-written reference (tests/references/conv.py) for ResNet-18 and ResNet-50.

Both are plain eager nn.Modules holding the same weights (loaded through the name map the tests use), timed in
the same process, alternating which goes first in every round so drift (thermal, allocator, other load) falls on
both. Reported: median seconds per call and the ratio emitted/reference (target <= 1.00).

    python bench/torch_vs_reference.py                      # ResNet-18 and -50, forward b1/b32, train step b8
    python bench/torch_vs_reference.py --models resnet18 --iters 9 --train-batch 32
    python bench/torch_vs_reference.py --cpu-time            # on a loaded machine
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import specc  # noqa: E402
from tests.references import conv  # noqa: E402
from tests.test_torch_reference import NAME_MAPS, translate  # noqa: E402

REFERENCES = {"resnet18": conv.ResNet18, "resnet50": conv.ResNet50}


def build(stem: str, opt_level: int):
    emitted = specc.load(REPO / "specs" / f"{stem}.nn").to_torch(opt_level=opt_level)
    reference = REFERENCES[stem]()
    state = {translate(k, NAME_MAPS[stem]): v for k, v in emitted.state_dict().items()}
    reference.load_state_dict(state, strict=True)
    return emitted, reference


def forward_fn(model, x):
    def run():
        with torch.no_grad():
            model(x)
    return run


def train_fn(model, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def run():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return run


CLOCK = time.perf_counter


def timed_pair(a, b, iters: int, warmup: int) -> tuple[float, float]:
    """Median seconds of a() and b(), alternating which runs first in each round."""
    for _ in range(warmup):
        a()
        b()
    ta, tb = [], []
    for i in range(iters):
        order = [(a, ta), (b, tb)] if i % 2 == 0 else [(b, tb), (a, ta)]
        for fn, out in order:
            t0 = CLOCK()
            fn()
            out.append(CLOCK() - t0)
    return statistics.median(ta), statistics.median(tb)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(REFERENCES), choices=list(REFERENCES))
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 32], help="forward batch sizes")
    ap.add_argument("--train-batch", type=int, default=8, help="batch size of the SGD training step")
    ap.add_argument("--iters", type=int, default=5, help="timed rounds per case (median)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("-O", dest="opt_level", type=int, choices=(0, 1, 2), default=None,
                    help="optimization level of the emitted model (default: what `specc compile` writes, -O1; "
                         "-O2 adds eager fusion)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cpu-time", action="store_true",
                    help="one thread, timed by this process's CPU time: steadier on a machine others are loading")
    args = ap.parse_args()
    global CLOCK
    if args.cpu_time:
        args.threads = 1
        CLOCK = time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    clock = "process CPU time" if args.cpu_time else "wall clock"
    print(f"emitted at -O{1 if args.opt_level is None else args.opt_level}; torch {torch.__version__}, {torch.get_num_threads()} threads, {clock}, "
          f"median of {args.iters} alternating rounds")
    rows = []
    for stem in args.models:
        emitted, reference = build(stem, args.opt_level)
        emitted.eval()
        reference.eval()
        x1 = torch.randn(1, 3, 224, 224)
        with torch.no_grad():
            diff = (emitted(x1) - reference(x1)).abs().max().item()
        print(f"{stem}: same weights, max abs output diff at batch 1: {diff:.3g}")
        for b in args.batches:
            x = torch.randn(b, 3, 224, 224)
            te, tr = timed_pair(forward_fn(emitted, x), forward_fn(reference, x), args.iters, args.warmup)
            rows.append((stem, f"forward b{b}", te, tr))
            print(f"  {rows[-1][1]}: {te:.4f}s vs {tr:.4f}s", flush=True)
        emitted.train()
        reference.train()
        x = torch.randn(args.train_batch, 3, 224, 224)
        y = torch.randint(0, 1000, (args.train_batch,))
        te, tr = timed_pair(train_fn(emitted, x, y), train_fn(reference, x, y), args.iters, args.warmup)
        rows.append((stem, f"SGD step b{args.train_batch}", te, tr))
        print(f"  {rows[-1][1]}: {te:.4f}s vs {tr:.4f}s", flush=True)
    print()
    print(f"| {'model':<9} | {'case':<13} | {'emitted s':>10} | {'reference s':>11} | {'emitted/ref':>11} |")
    print(f"|{'-' * 11}|{'-' * 15}|{'-' * 12}|{'-' * 13}|{'-' * 13}|")
    for stem, case, te, tr in rows:
        print(f"| {stem:<9} | {case:<13} | {te:>10.4f} | {tr:>11.4f} | {te / tr:>11.3f} |")


if __name__ == "__main__":
    main()
