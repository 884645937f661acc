"""`specc tune model.nn`: MetaSchedule tuning of the CPU kernels, cached on disk and reused by later compiles.

    specc tune specs/resnet18.nn --dim B=1 --trials 64       # every symbolic dim needs a size (B defaults to 1)
    specc.load("specs/resnet18.nn").to_tvm("tvm-cpu", dims={"B": 1})   # uses the tuned kernels

The model is lowered for those sizes and taken through the same Relax pipeline as a compile (specc's rewrites,
legalization, fusion) up to scheduling. Each distinct fused kernel (PrimFunc) is then timed with specc's own
schedule and with `--trials` MetaSchedule candidates; a tuned kernel that beats specc's is checked against it on
random inputs and cached as TVMScript text under <cache>/<target>/<structural hash>.py. Compiles for the same
target substitute cached kernels by structural hash (so kernels shared between models are tuned once) and
schedule the rest as usual. The cache is $SPECC_CACHE_DIR/tvm-tuned, default ~/.cache/specc/tvm-tuned.

What runs in this TVM build (see notes/tvm-0.27.md): JSON databases, LocalBuilder/LocalRunner and the xgb cost
model crash (IR serialisation segfaults), and the default llvm rules for AVX-512 targets crash while they are
created. So the search is driven here, in process: the generic llvm schedule rules (no tensor intrinsics) as a
post-order-apply space, `replay-func` sampling, and each candidate built with tvm.compile and timed with
time_evaluator.
"""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import tirx

from .tuned import _before_scheduling, _scheduled, cache_root, kernel_key, store_kernel

MIN_MS = 0.002  # kernels faster than this (ms) are not worth a search


# ---- tuning ----------------------------------------------------------------------------------------------------

@dataclass
class TaskResult:
    name: str
    key: str
    specc_ms: float
    tuned_ms: float | None
    stored: bool
    note: str = ""


def run_tune(spec, *, target: str = "tvm-cpu", dims: dict[str, int] | None = None, trials: int = 64) -> int:
    """`specc tune`: tune the model's kernels for `target` at the sizes `dims` (B defaults to 1) and print a summary."""
    from ...errors import UsageError
    from .target import resolve_target

    t = resolve_target(target)
    if t.device != "cpu":
        raise UsageError(f"specc tune tunes CPU kernels; {t.name} is a {t.device} target")
    dims = dict(dims or {})
    syms = sorted({s for i in spec.module.graph.inputs for s in spec.module.graph[i].type.symbols()})
    dims = {**({"B": 1} if "B" in syms else {}), **dims}
    missing = [s for s in syms if s not in dims]
    if missing:
        raise UsageError(f"tuning needs a size for every symbolic dim: add --dim {missing[0]}=N"
                         + (f" (and {', '.join(missing[1:])})" if missing[1:] else ""))
    results = tune(spec, t, dims, trials=trials)
    print(summary(results, t, dims))
    return 0


def extract_kernels(spec, target, dims: dict[str, int]) -> tuple[list[tuple[str, tirx.PrimFunc]], object]:
    """The distinct unscheduled kernels of the model as a compile for `target` would produce them."""
    from .build import ir_module, lower_spec
    from .codegen import bind_weights, quiet_schedules, tvm_target
    from .schedules import optimize_for_cpu

    ttarget = tvm_target(target)
    lowered = lower_spec(spec, ir_module(spec, target.opt_level), target, dims=dims)
    # kernels do not depend on weight values (constants are kernel arguments): zeros will do
    weights = {name: np.zeros(shape, dtype) for name, (shape, dtype) in lowered.weights.items()}
    found: dict[str, tuple[str, tirx.PrimFunc]] = {}

    def capture(m):
        for gv, func in m.functions_items():
            if isinstance(func, tirx.PrimFunc) and not _scheduled(func) and _static(func):
                found.setdefault(kernel_key(func), (gv.name_hint, func))
        return m

    quiet_schedules()
    with _before_scheduling(capture):
        optimize_for_cpu(bind_weights(lowered, weights), ttarget)
    return list(found.values()), ttarget


def _static(func) -> bool:
    return all(isinstance(d, (int, tirx.IntImm)) for p in func.params for d in p.shape)


def tune(spec, target, dims: dict[str, int], trials: int = 64, progress: bool = True) -> list[TaskResult]:
    from .codegen import configure_threads
    from .schedules._target import cpu_info
    from .schedules.schedule import schedule_primfunc

    configure_threads(target.num_threads)
    kernels, ttarget = extract_kernels(spec, target, dims)
    info = cpu_info(ttarget)
    results = []
    bar = _progress(len(kernels) * (trials + 1), progress)
    for name, func in kernels:
        key = kernel_key(func)
        baseline, _ = schedule_primfunc(func, ttarget, info)
        base_lib = _build(baseline, ttarget)
        args = _random_args(func)
        specc_ms = _time(base_lib, args)
        if specc_ms < MIN_MS:
            results.append(TaskResult(name, key, specc_ms, None, False, "too small to tune"))
            bar.update(trials + 1)
            continue
        bar.set_description(f"{name[:40]}")
        best = _search(func, ttarget, args, trials, bar)
        bar.update(1)
        if best is None:
            results.append(TaskResult(name, key, specc_ms, None, False, "no valid candidate"))
            continue
        tuned_ms, tuned = best
        stored = False
        note = ""
        if worth_caching(specc_ms, tuned_ms):
            if _agrees(tuned, base_lib, ttarget, args):
                store_kernel(ttarget, key, tuned, {"kernel": name, "specc_ms": specc_ms, "tuned_ms": tuned_ms,
                                                   "trials": trials, "model": spec.name})
                stored = True
            else:
                note = "tuned kernel disagrees with specc's: not cached"
        results.append(TaskResult(name, key, specc_ms, tuned_ms, stored, note))
    bar.close()
    return results


def worth_caching(specc_ms: float, tuned_ms: float) -> bool:
    """A tuned kernel replaces specc's schedule when it is clearly (5%, and measurably) faster."""
    return tuned_ms < 0.95 * specc_ms and specc_ms - tuned_ms > MIN_MS / 2


def _search(func, ttarget, args, trials: int, bar):
    """replay-func sampling of the generic llvm space; returns (ms, scheduled PrimFunc) of the fastest candidate."""
    from tvm.s_tir import meta_schedule as ms

    space = ms.space_generator.PostOrderApply(sch_rules=ms.ScheduleRule.create("llvm"),
                                              postprocs=ms.postproc.Postproc.create("llvm"), mutator_probs={})
    with _quiet(), _no_tensor_intrinsics():
        ctx = ms.TuneContext(mod=_without_custom_rules(func), target=ttarget, space_generator=space,
                             search_strategy="replay-func", task_name="main", rand_state=0,
                             num_threads=max(1, os.cpu_count() or 1))
        spaces = ctx.generate_design_space()
    strategy = ctx.search_strategy
    strategy.pre_tuning(max_trials=trials, num_trials_per_iter=min(trials, 16), design_spaces=spaces,
                        database=None, cost_model=None)
    best = None
    while True:
        cands = strategy.generate_measure_candidates()
        if not cands:
            break
        results = []
        for cand in cands:
            try:
                mod = cand.sch.mod
                t = _time(_build(mod["main"], ttarget), args)
                results.append(ms.runner.RunnerResult(run_secs=[t / 1e3], error_msg=None))
                if best is None or t < best[0]:
                    best = (t, mod["main"])
            except Exception as err:  # noqa: BLE001 - a candidate that does not build is skipped
                results.append(ms.runner.RunnerResult(run_secs=None, error_msg=str(err)[:200]))
            bar.update(1)
        strategy.notify_runner_results(cands, results)
    strategy.post_tuning()
    return best


def _without_custom_rules(func) -> tvm.IRModule:
    """TOPI tags blocks with `schedule_rule` names that no rule is registered for here; MetaSchedule would print a
    line per candidate looking them up."""
    from tvm import s_tir

    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    for blk in sch.get_child_blocks(sch.get_sblock("root")):
        if "schedule_rule" in sch.get(blk).annotations:
            sch.unannotate(blk, "schedule_rule")
    return sch.mod


def _build(func, ttarget):
    ex = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), ttarget)
    return ex.jit() if hasattr(ex, "jit") else ex


def _random_args(func) -> list:
    rng = np.random.default_rng(0)
    out = []
    for param in func.params:  # buffer-typed parameters
        shape = [int(d) for d in param.shape]
        dtype = str(param.dtype)
        # integer inputs are indices (take, gather): zeros stay in bounds
        arr = rng.standard_normal(shape).astype(dtype) if "float" in dtype else np.zeros(shape, dtype)
        out.append(tvm.runtime.tensor(arr, tvm.cpu()))
    return out


def _time(lib, args) -> float:
    """Median milliseconds of one call."""
    f = lib.time_evaluator(lib.entry_name, tvm.cpu(), number=1, repeat=5, min_repeat_ms=5)
    return float(f(*args).median) * 1e3


def _agrees(tuned, base_lib, ttarget, args) -> bool:
    def run(lib):
        fresh = [tvm.runtime.tensor(a.numpy(), tvm.cpu()) for a in args]
        lib[lib.entry_name](*fresh)
        return [a.numpy() for a in fresh]

    for got, want in zip(run(_build(tuned, ttarget)), run(base_lib)):
        if not np.allclose(got, want, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(want).max(initial=0)))):
            return False
    return True


@contextlib.contextmanager
def _no_tensor_intrinsics():
    """TuneContext imports tvm.s_tir.tensor_intrin, which registers every hardware tensor intrinsic (35-60 s here).
    The generic llvm rules used by this search use none, so an empty stand-in module is put in place for the
    construction and removed again (a real import later still gets the real module)."""
    import types

    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        yield
        return
    sys.modules[name] = types.ModuleType(name)
    try:
        yield
    finally:
        sys.modules.pop(name, None)


@contextlib.contextmanager
def _quiet():
    """MetaSchedule logs every step at INFO; keep the terminal to the progress bar."""
    import logging

    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_description(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional: tune silently
        return _NoBar()
    return tqdm(total=total, unit="trial", file=sys.stderr, dynamic_ncols=True)


def summary(results: list[TaskResult], target, dims: dict[str, int]) -> str:
    lines = [f"tuned {len(results)} kernels for {target.name} at {', '.join(f'{k}={v}' for k, v in dims.items())}",
             f"{'kernel':<48}{'specc ms':>10}{'tuned ms':>10}  cached"]
    total_specc = total_best = 0.0
    for r in sorted(results, key=lambda r: -r.specc_ms):
        tuned = "-" if r.tuned_ms is None else f"{r.tuned_ms:.3f}"
        lines.append(f"{r.name[:47]:<48}{r.specc_ms:>10.3f}{tuned:>10}  {'yes' if r.stored else 'no'}"
                     + (f"  ({r.note})" if r.note else ""))
        total_specc += r.specc_ms
        total_best += r.tuned_ms if r.stored else r.specc_ms
    lines.append(f"kernel time: specc {total_specc:.3f} ms -> with tuned kernels {total_best:.3f} ms; "
                 f"cache {cache_root()}")
    return "\n".join(lines)
