"""The cache of kernels tuned by `specc tune` (tune.py) and its use by every CPU compile (codegen.py).

Tuned kernels are kept as TVMScript text under <cache>/<target key>/<structural hash>.py, with the identity of the
target they were tuned for (LLVM cpu, SIMD features, the vector width the schedules use, thread count) in their
header; ``apply_tuned`` runs specc's CPU pipeline with a cached kernel in place of specc's schedule wherever the
cache has one tuned for this very target (an entry tuned for another is refused, wherever it lies). The cache is
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
