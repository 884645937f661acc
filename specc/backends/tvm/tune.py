"""`specc tune model.nn`: MetaSchedule tuning of the CPU kernels, cached on disk and reused by later compiles.

    specc tune specs/resnet18.nn --dim B=1 --trials 64       # every symbolic dim needs a size (B defaults to 1)
    specc.load("specs/resnet18.nn").to_tvm("tvm-cpu", dims={"B": 1})   # uses the tuned kernels

The model is lowered for those sizes and taken through the same Relax pipeline as a compile (specc's rewrites,
legalization, fusion) up to scheduling. Each distinct fused kernel (PrimFunc) is then timed with specc's own
schedule and with `--trials` MetaSchedule candidates; a tuned kernel that beats specc's is checked against it on
random inputs and cached as TVMScript text under <cache>/<target key>/<structural hash>.py, with the target's
identity (LLVM cpu, SIMD features, the vector width the schedules use, thread count) in its header. Compiles for the
same target substitute cached kernels by structural hash, after checking that identity (an entry tuned for another
target is refused, wherever it lies) (so kernels shared between models are tuned once) and
schedule the rest as usual. The cache is $SPECC_CACHE_DIR/tvm-tuned, default ~/.cache/specc/tvm-tuned.

What runs in this TVM build (see notes/tvm-0.27.md): JSON databases, LocalBuilder/LocalRunner and the xgb cost
model crash (IR serialisation segfaults), and the default llvm rules for AVX-512 targets crash while they are
created. So the search is driven here, in process: the generic llvm schedule rules (no tensor intrinsics) as a
post-order-apply space, `replay-func` sampling, and each candidate built with tvm.compile and timed with
time_evaluator.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tvm
from tvm import tirx

SCHEDULED = "tirx.is_scheduled"
MIN_MS = 0.002  # kernels faster than this (ms) are not worth a search


# ---- the cache -------------------------------------------------------------------------------------------------

def cache_root() -> Path:
    base = os.environ.get("SPECC_CACHE_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "specc") / "tvm-tuned"


def target_identity(ttarget) -> dict:
    """What a tuned kernel is valid for: the LLVM cpu, the SIMD features its code may use, the vector width specc's
    schedules derive from them and the thread count (schedules/_target.CPUInfo.identity)."""
    from .schedules._target import cpu_info

    ident = cpu_info(ttarget).identity()
    ident["kind"] = str(ttarget.kind.name)
    return ident


def target_key(ttarget) -> str:
    """A folder name per CPU target: kind, mcpu and thread count, and a hash of the whole identity (so two targets
    that share an mcpu name but not its features, e.g. `-mattr=-avx512f`, get different folders)."""
    import hashlib

    ident = target_identity(ttarget)
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]
    parts = [ident["kind"], ident["mcpu"], f"{ident['num_cores']}c", digest]
    return "-".join(p.replace("/", "_") for p in parts)


def kernel_key(func: tirx.PrimFunc) -> str:
    """Structural hash of an unscheduled kernel (names and symbols attributes aside)."""
    import tvm_ffi

    func = func.without_attr("global_symbol") if "global_symbol" in func.attrs else func
    return f"{tvm_ffi.structural_hash(func) & 0xFFFFFFFFFFFFFFFF:016x}"


def cached_kernels(ttarget) -> dict[str, Path]:
    folder = cache_root() / target_key(ttarget)
    return {p.stem: p for p in sorted(folder.glob("*.py"))} if folder.is_dir() else {}


HEADER = "# specc tuned kernel: "


def kernel_meta(path: Path) -> dict:
    """The JSON header a tuned kernel was stored with ({} when it has none or it does not parse)."""
    with path.open(encoding="utf-8") as f:
        first = f.readline()
    if not first.startswith(HEADER):
        return {}
    try:
        meta = json.loads(first[len(HEADER):])
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


def tuned_for(path: Path, ttarget) -> bool:
    """Whether the kernel at `path` was tuned for exactly this target's identity. The folder name is only a hint
    (a copied or hand-edited database, an mcpu that resolves differently): each entry carries its identity."""
    return kernel_meta(path).get("target") == target_identity(ttarget)


def load_kernel(path: Path, ttarget=None) -> tirx.PrimFunc:
    """The tuned PrimFunc stored at `path`; with `ttarget`, only if it was tuned for that target (else ValueError)."""
    if ttarget is not None and not tuned_for(path, ttarget):
        raise ValueError(f"{path}: tuned for {kernel_meta(path).get('target')}, not for {target_identity(ttarget)}")
    parsed = tvm.script.from_source(path.read_text(encoding="utf-8"))
    if isinstance(parsed, tvm.IRModule):
        parsed = parsed["main"]
    return parsed


def store_kernel(ttarget, key: str, func: tirx.PrimFunc, meta: dict) -> Path:
    from ...fsutil import atomic_write

    path = cache_root() / target_key(ttarget) / f"{key}.py"
    header = HEADER + json.dumps({**meta, "target": target_identity(ttarget)}, sort_keys=True) + "\n"
    atomic_write(path, header + func.script())
    return path


# ---- hooking the CPU pipeline at its scheduling step -----------------------------------------------------------

@contextlib.contextmanager
def _before_scheduling(hook):
    """Run `hook(mod)` on the legalized, fused module right before optimize_for_cpu schedules it.

    optimize_for_cpu has no such parameter (yet): its module-level schedule_module is wrapped for the call."""
    from .schedules import pipeline

    original = pipeline.schedule_module

    def wrapped(mod, target, info):
        return original(hook(mod), target, info)

    pipeline.schedule_module = wrapped
    try:
        yield
    finally:
        pipeline.schedule_module = original


def apply_tuned(mod, ttarget, stats: dict):
    """optimize_for_cpu, with cached tuned kernels in place of specc's schedule where the cache has them."""
    from .schedules import last_stats, optimize_for_cpu

    cache = cached_kernels(ttarget)
    # entries tuned for another target (a different CPU, feature set, vector width or thread count) are refused
    foreign = sorted(k for k, p in cache.items() if not tuned_for(p, ttarget))
    cache = {k: p for k, p in cache.items() if k not in foreign}
    used: list[str] = []

    def substitute(m):
        for gv, func in m.functions_items():
            if not isinstance(func, tirx.PrimFunc) or _scheduled(func):
                continue
            key = kernel_key(func)
            if key in cache:
                tuned = load_kernel(cache[key], ttarget)
                for k, v in func.attrs.items():
                    tuned = tuned.with_attr(k, v)
                m[gv] = tuned.with_attr(SCHEDULED, True)
                used.append(gv.name_hint)
        return m

    if cache:
        with _before_scheduling(substitute):
            mod = optimize_for_cpu(mod, ttarget)
    else:
        mod = optimize_for_cpu(mod, ttarget)
    stats.update(last_stats())
    stats["tuned"] = used
    stats["tuned_refused"] = foreign
    return mod, stats


def _scheduled(func) -> bool:
    return SCHEDULED in func.attrs and bool(int(func.attrs[SCHEDULED]))


# ---- tuning ----------------------------------------------------------------------------------------------------

@dataclass
class TaskResult:
    name: str
    key: str
    specc_ms: float
    tuned_ms: float | None
    stored: bool
    note: str = ""


def run_tune(spec, args) -> int:
    from ...cli import UsageError, parse_dims
    from . import resolve_target

    t = resolve_target(args.target)
    if t.device != "cpu":
        raise UsageError(f"specc tune tunes CPU kernels; {t.name} is a {t.device} target")
    dims = parse_dims(getattr(args, "dim", None))
    syms = sorted({s for i in spec.module.graph.inputs for s in spec.module.graph[i].type.symbols()})
    dims = {**({"B": 1} if "B" in syms else {}), **dims}
    missing = [s for s in syms if s not in dims]
    if missing:
        raise UsageError(f"tuning needs a size for every symbolic dim: add --dim {missing[0]}=N"
                         + (f" (and {', '.join(missing[1:])})" if missing[1:] else ""))
    results = tune(spec, t, dims, trials=args.trials)
    print(summary(results, t, dims))
    return 0


def extract_kernels(spec, target, dims: dict[str, int]) -> tuple[list[tuple[str, tirx.PrimFunc]], object]:
    """The distinct unscheduled kernels of the model as a compile for `target` would produce them."""
    from . import ir_module, lower_spec
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
