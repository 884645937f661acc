"""How `specc check` time grows with model size.

    python bench/check_scaling.py            # every spec in specs/, then generated specs up to 1,000 blocks
    python bench/check_scaling.py --max 4000 # larger generated specs

Times parse + elaboration + shape checking in-process (specc.api.load / loads), the best of --runs runs. For each
generated family the `growth` column is the time ratio divided by the size ratio against the row above (about 1:
linear), and the summary fits time ~ size**k from size 100 up: k near 1 is linear, k well above 1 is not. Exit
status 1 when some family's k exceeds 1.2.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from specc.api import load, loads  # noqa: E402
from specc.parse import parse  # noqa: E402

# ---- generated specs --------------------------------------------------------------------------------------------

def distinct_blocks(n: int) -> str:
    """n different blocks (names and bodies), applied one after another, one statement each."""
    blocks = [f"block B{i}(x, width: int = {8 + i % 8}) {{\n"
              f"  y = x -> linear(width) as fc -> relu\n"
              f"  return y -> linear(8) as proj\n}}\n" for i in range(n)]
    body = "".join(f"  x = x -> B{i}\n" for i in range(n))
    return "".join(blocks) + f"model M() {{\n  input x: f32[B, 8]\n{body}  output y = x\n}}\n"


def one_chain(n: int) -> str:
    """The same n blocks applied in a single `x -> B0 -> B1 -> ...` expression."""
    text = distinct_blocks(n)
    head = text[:text.index("model M()")]
    chain = " ".join(f"-> B{i}" for i in range(n))
    return head + f"model M() {{\n  input x: f32[B, 8]\n  output y = x {chain}\n}}\n"


def flat_layers(n: int) -> str:
    """n op statements in the model body, no blocks."""
    body = "".join(f"  x = x -> linear({8 + i % 8}) as l{i} -> relu\n" for i in range(n))
    return f"model M() {{\n  input x: f32[B, 8]\n{body}  output y = x\n}}\n"


def repeat_folded(n: int) -> str:
    """repeat n of one block: folds to one body graph, whatever n is."""
    return ("block Layer(x) {\n  return x + (x -> linear(8) -> gelu -> linear(8))\n}\n"
            f"model M() {{\n  input x: f32[B, 8]\n  repeat {n} {{\n    x = x -> Layer\n  }}\n  output y = x\n}}\n")


def repeat_indexed(n: int) -> str:
    """repeat n as i with a body that reads i: elaborated once per iteration, folded where bodies are equal."""
    return ("block Layer(x, wide: bool = false) {\n"
            "  h = x -> linear(8)\n  if wide { h = h -> gelu }\n  return x + h\n}\n"
            f"model M() {{\n  input x: f32[B, 8]\n  repeat {n} as i {{\n    x = x -> Layer(wide=i % 2 == 0)\n  }}\n"
            "  output y = x\n}\n")


FAMILIES: dict[str, Callable[[int], str]] = {
    "distinct blocks": distinct_blocks,
    "one -> chain": one_chain,
    "flat layers": flat_layers,
    "repeat N": repeat_folded,
    "repeat N as i": repeat_indexed,
}


# ---- timing -----------------------------------------------------------------------------------------------------

def best_of(runs: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_zoo(runs: int) -> None:
    print(f"{'spec':<28} {'nodes':>6} {'params':>15} {'check ms':>9}")
    for path in sorted((REPO / "specs").glob("*.nn")):
        spec = load(path)
        nodes = sum(len(g) for g in spec.module.graphs.values())
        t = best_of(runs, lambda p=path: load(p))
        print(f"{path.name:<28} {nodes:>6} {spec.params:>15,} {t * 1e3:>9.1f}")


def bench_family(name: str, gen: Callable[[int], str], sizes: list[int], runs: int) -> list[tuple[int, float]]:
    times = []
    prev = None
    for n in sizes:
        text = gen(n)
        loads(text)  # warm up, and fail loudly if the generator is wrong
        t_parse = best_of(runs, lambda s=text: parse(s))
        t = best_of(runs, lambda s=text: loads(s))
        growth = ""
        if prev is not None:
            growth = f"{(t / prev[1]) / (n / prev[0]):.2f}"
        print(f"{name:<16} {n:>6} {len(text.splitlines()):>7} {t_parse * 1e3:>9.1f} {t * 1e3:>9.1f} "
              f"{t / n * 1e6:>9.1f} {growth:>7}")
        prev = (n, t)
        times.append((n, t))
    return times


def exponent(times: list[tuple[int, float]]) -> float | None:
    """k in time ~ size**k, from the first size >= 100 (below it fixed costs dominate) to the largest."""
    big = [(n, t) for n, t in times if n >= 100]
    if len(big) < 2:
        return None
    (n0, t0), (n1, t1) = big[0], big[-1]
    return math.log(t1 / t0) / math.log(n1 / n0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max", type=int, default=1000, help="largest generated size (default 1000)")
    ap.add_argument("--runs", type=int, default=3, help="time the best of this many runs (default 3)")
    ap.add_argument("--no-zoo", action="store_true", help="skip the specs in specs/")
    args = ap.parse_args(argv)
    sizes = [n for n in (10, 100, 300, 1000, 2000, 4000, 10000) if n <= args.max]

    if not args.no_zoo:
        bench_zoo(args.runs)
        print()
    print(f"{'family':<16} {'size':>6} {'lines':>7} {'parse ms':>9} {'check ms':>9} {'us/unit':>9} {'growth':>7}")
    fits = {}
    for name, gen in FAMILIES.items():
        fits[name] = exponent(bench_family(name, gen, sizes, args.runs))
    print("\ngrowth = time ratio / size ratio against the row above (1.0: linear; below 1: fixed costs, folding)")
    print("time ~ size**k from size 100 to " + f"{sizes[-1]}: "
          + ", ".join(f"{name} k={k:.2f}" for name, k in fits.items() if k is not None))
    bad = [name for name, k in fits.items() if k is not None and k > 1.2]
    if bad:
        print("worse than linear: " + ", ".join(bad))
        return 1
    print("check time grows at most linearly with model size")
    return 0

if __name__ == "__main__":
    sys.exit(main())
