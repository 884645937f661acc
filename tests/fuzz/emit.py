"""Accepted specs must compile: `python -m tests.fuzz.emit --cases 500 [--seed 0] [-O 1]`.

For each generated spec (tests/fuzz/gen.py) that `specc check` accepts and that is small enough to build (at most
MAX_PARAMS parameters), the PyTorch module is emitted and must parse, build, run forward on random inputs of the
declared shapes and dtypes (symbolic dims bound to small values) and give outputs of exactly the predicted dtypes
and shapes; every emitted file together must pass `ruff check`. Outcomes per case: rejected, skipped (too big),
ok, cpu-gap (a half-precision op PyTorch implements on CUDA only), or a failure kind (emit, syntax, build,
forward, shape, ruff).
"""
from __future__ import annotations

import argparse
import ast
import json
import random
import re
import signal
import sys
import tempfile
import traceback
from collections import Counter
from pathlib import Path

from . import gen

MAX_PARAMS = 2_000_000
MAX_ELEMENTS = 4_000_000  # of all inputs together, with the symbolic dims bound as in DIMS
MAX_RUN_NODES = 20_000  # nodes a forward runs (repeats unrolled): `repeat 100000 { ... }` is valid but slow here
DIMS = {"B": 8, "T": 9, "S": 10, "N": 8}  # large enough for the indices and windows the generator writes
SMALL_ZOO = ["lenet5.nn", "cifar_cnn.nn", "gru_lm.nn", "lstm_lm.nn"]
FAILURES = ("emit", "syntax", "build", "forward", "shape", "ruff", "timeout")


class _Alarm(BaseException):
    pass


def _on_alarm(signum, frame):
    raise _Alarm()


def emit_case(seed: int, i: int) -> tuple[str, str]:
    """A spec for the emission property: registry chains and templates, and mutants of the small zoo specs."""
    rng = random.Random(f"emit:{seed}:{i}")
    kind = i % 4
    if kind in (0, 1):
        return gen.chain(rng, tame=True)
    if kind == 2:
        return gen.template(rng)
    name = rng.choice(SMALL_ZOO)
    text = gen.SOURCES[name]
    for _ in range(rng.randint(1, 2)):
        text = gen.mutate(rng, text)
    return name, text


def env_for(spec) -> dict[str, int]:
    from specc.types import TensorType

    env = {}
    for i in spec.module.graph.inputs:
        t = spec.module.graph[i].type
        if isinstance(t, TensorType):
            for sym in sorted(t.symbols()):
                bound = spec.module.constraints.get(sym)
                v = max(DIMS.get(sym, 8), spec.module.minimums.get(sym, (1,))[0])  # the sizes the spec needs
                env[sym] = min(v, bound[0]) if bound and isinstance(bound[0], int) else v
    return env


def _input_elements(spec) -> int:
    from specc.symbolic import prod, subs

    env = env_for(spec)
    g = spec.module.graph
    return sum(subs(prod(g[n].type.shape), env) for n in g.inputs)


def run_forward(spec, source: str) -> str | None:
    """None when the emitted module builds and its forward gives the predicted outputs, else a failure text."""
    import torch

    from specc.backends.torch import load_source
    from specc.backends.torch.emit import class_name
    from specc.symbolic import subs
    from specc.types import DTYPES, INT_DTYPES

    env = env_for(spec)
    g = spec.module.graph
    floats = {g[n].type.dtype for n in g.inputs} - set(INT_DTYPES) - {"bool"}
    if len(floats) > 1:  # parameters have one dtype: a model mixing bf16 and f32 inputs is cast by its user
        return None
    try:
        mod = load_source(source, class_name(spec.module.name))
        model = getattr(mod, class_name(spec.module.name))().eval()
        if len(floats) == 1:  # parameters in the inputs' precision, as a user casts a bf16 model
            model = model.to(getattr(torch, DTYPES[floats.pop()]))
    except Exception as e:  # noqa: BLE001
        return f"build: {type(e).__name__}: {e}"
    gen_ = torch.Generator().manual_seed(0)
    inputs = []
    for n in g.inputs:
        t = g[n].type
        shape = tuple(subs(d, env) for d in t.shape)
        dt = getattr(torch, DTYPES[t.dtype])
        if t.dtype in INT_DTYPES:
            inputs.append(torch.zeros(shape, dtype=dt))  # index 0 is in range of every table
        elif t.dtype == "bool":
            inputs.append(torch.ones(shape, dtype=dt))
        else:
            inputs.append(torch.randn(shape, generator=gen_).to(dt))
    try:
        with torch.no_grad():
            out = model(*inputs)
    except Exception as e:  # noqa: BLE001
        if isinstance(e, NotImplementedError) and re.search(r"not implemented for '(BFloat16|Half)'", str(e)):
            # PyTorch's CPU kernels lack some half-precision ops (avg_pool3d) that its CUDA ones have: the spec is
            # fine and runs on a GPU; counted apart, not as a failure
            return f"cpu-gap: {str(e)[:160]}"
        return f"forward: {type(e).__name__}: {str(e)[:160]}"
    outs = out if isinstance(out, tuple) else (out,)
    want = [g[o].type for o in g.outputs]
    if len(want) == 1 and hasattr(want[0], "items") and len(outs) == len(want[0].items):
        outs = (outs,)  # one output that is a tuple value (split, lstm): returned as that tuple
    if len(outs) != len(want):
        return f"shape: {len(outs)} outputs, predicted {len(want)}"
    for o, t in zip(outs, want):
        items = t.items if hasattr(t, "items") else (t,)
        got = o if isinstance(o, tuple) else (o,)
        for oi, ti in zip(got, items):
            shape = tuple(subs(d, env) for d in ti.shape)
            if tuple(oi.shape) != shape or oi.dtype != getattr(torch, DTYPES[ti.dtype]):
                return f"shape: got {oi.dtype} {tuple(oi.shape)}, predicted {ti} = {shape}"
    return None


def check_one(name: str, text: str, opt_level: int, folder: Path, key: str, timeout: float = 20) -> tuple[str, str]:
    import torch  # noqa: F401 - imported before the alarm is set: an import cut short by it cannot be redone

    from specc.api import CheckError, loads

    signal.signal(signal.SIGPROF, _on_alarm)
    signal.setitimer(signal.ITIMER_PROF, timeout)
    try:
        try:
            spec = loads(text, name=name)
        except CheckError:
            return "rejected", ""
        if spec.summary().params > MAX_PARAMS or _input_elements(spec) > MAX_ELEMENTS or \
                sum(times for *_, times in spec.module.walk()) > MAX_RUN_NODES:
            return "skipped", ""
        try:
            source = spec.torch_source(opt_level=opt_level)
        except Exception as e:  # noqa: BLE001
            tb = traceback.extract_tb(e.__traceback__)[-1]
            return "emit", f"{type(e).__name__}@{Path(tb.filename).name}:{tb.lineno}: {str(e)[:120]}"
        try:
            ast.parse(source)
        except SyntaxError as e:
            return "syntax", f"{e.msg} line {e.lineno}: {(e.text or '').strip()[:80]}"
        (folder / f"{key}.py").write_text(source)
        problem = run_forward(spec, source)
        if problem:
            return problem.split(":")[0], problem
        return "ok", ""
    except _Alarm:
        return "timeout", ""
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)


def ruff_failures(folder: Path) -> dict[str, str]:
    import shutil
    import subprocess

    files = sorted(folder.glob("*.py"))
    if not files or shutil.which("ruff") is None:
        return {}
    r = subprocess.run(["ruff", "check", "--isolated", "--no-cache", "--line-length", "120", "--output-format",
                        "concise", *map(str, files)], capture_output=True, text=True)
    bad: dict[str, str] = {}
    for line in r.stdout.splitlines():
        path = line.split(":")[0]
        if path.endswith(".py"):
            bad.setdefault(Path(path).stem, line.split(": ", 1)[-1])
    return bad


def run(cases: int, seed: int = 0, opt_level: int = 0, budget: float | None = None, start: int = 0) -> dict:
    import time

    t0 = time.monotonic()
    counts: Counter = Counter()
    first: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="specc-emit-") as tmp:
        folder = Path(tmp)
        for i in range(start, start + cases):
            if budget is not None and time.monotonic() - t0 > budget:
                break
            name, text = emit_case(seed, i)
            outcome, detail = check_one(name, text, opt_level, folder, f"case{i}")
            counts[outcome] += 1
            if outcome in FAILURES:
                first.setdefault(f"{outcome}: {detail[:60]}", {"case": i, "detail": detail})
        for key, msg in ruff_failures(folder).items():
            counts["ruff"] += 1
            counts["ok"] -= 1
            first.setdefault(f"ruff: {msg.split(' ')[0]}", {"case": int(key[4:]), "detail": msg})
    return {"seed": seed, "opt_level": opt_level, "cases": sum(v for k, v in counts.items() if k != "ruff"),
            "seconds": round(time.monotonic() - t0, 1), "outcomes": dict(counts), "first": first}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.fuzz.emit", description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-O", dest="opt", type=int, default=0, choices=(0, 1))
    ap.add_argument("--budget", type=float)
    ap.add_argument("--start", type=int, default=0, help="first case number")
    ap.add_argument("--only", type=int, help="print case N and its outcome")
    a = ap.parse_args(argv)
    if a.only is not None:
        name, text = emit_case(a.seed, a.only)
        print(text)
        with tempfile.TemporaryDirectory() as tmp:
            print(check_one(name, text, a.opt, Path(tmp), "case"))
        return 0
    res = run(a.cases, a.seed, a.opt, a.budget, a.start)
    print(json.dumps(res, indent=1))
    return 1 if any(k in FAILURES for k in res["outcomes"]) else 0


if __name__ == "__main__":
    sys.exit(main())
