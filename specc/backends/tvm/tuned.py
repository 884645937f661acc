"""The cache of kernels tuned by `specc tune` (tune.py) and its use by every CPU compile (codegen.py).

Tuned kernels are kept as TVMScript text under <cache>/<target>/<structural hash>.py; ``apply_tuned`` runs specc's
CPU pipeline with a cached kernel in place of specc's schedule wherever the cache has one. The cache is
$SPECC_CACHE_DIR/tvm-tuned, default ~/.cache/specc/tvm-tuned.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import tvm
from tvm import tirx

SCHEDULED = "tirx.is_scheduled"


# ---- the cache -------------------------------------------------------------------------------------------------

def cache_root() -> Path:
    base = os.environ.get("SPECC_CACHE_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "specc") / "tvm-tuned"


def target_key(ttarget) -> str:
    """A folder name per CPU target: kind, mcpu and thread count decide which schedule is fastest."""
    attrs = ttarget.export()
    parts = [str(attrs.get("kind", "llvm")), str(attrs.get("mcpu", "generic")), f"{attrs.get('num-cores', 0)}c"]
    return "-".join(p.replace("/", "_") for p in parts)


def kernel_key(func: tirx.PrimFunc) -> str:
    """Structural hash of an unscheduled kernel (names and symbols attributes aside)."""
    import tvm_ffi

    func = func.without_attr("global_symbol") if "global_symbol" in func.attrs else func
    return f"{tvm_ffi.structural_hash(func) & 0xFFFFFFFFFFFFFFFF:016x}"


def cached_kernels(ttarget) -> dict[str, Path]:
    folder = cache_root() / target_key(ttarget)
    return {p.stem: p for p in sorted(folder.glob("*.py"))} if folder.is_dir() else {}


def load_kernel(path: Path) -> tirx.PrimFunc:
    parsed = tvm.script.from_source(path.read_text(encoding="utf-8"))
    if isinstance(parsed, tvm.IRModule):
        parsed = parsed["main"]
    return parsed


def store_kernel(ttarget, key: str, func: tirx.PrimFunc, meta: dict) -> Path:
    from ...fsutil import atomic_write

    path = cache_root() / target_key(ttarget) / f"{key}.py"
    header = f"# specc tuned kernel: {json.dumps(meta, sort_keys=True)}\n"
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
    used: list[str] = []

    def substitute(m):
        for gv, func in m.functions_items():
            if not isinstance(func, tirx.PrimFunc) or _scheduled(func):
                continue
            key = kernel_key(func)
            if key in cache:
                tuned = load_kernel(cache[key])
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
    return mod, stats


def _scheduled(func) -> bool:
    return SCHEDULED in func.attrs and bool(int(func.attrs[SCHEDULED]))
