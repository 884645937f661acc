"""Target inspection helpers: vector width and micro-kernel tile sizes."""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm.target import codegen


@dataclass(frozen=True)
class CPUInfo:
    """What the schedules need to know about the CPU target."""

    lanes: int  # fp32 lanes of one SIMD register (16 AVX-512, 8 AVX2, 4 SSE/NEON)
    num_regs: int  # architectural vector registers (32 AVX-512, 16 AVX2)
    fma: bool
    num_cores: int

    @property
    def nr(self) -> int:
        """Columns of the register tile (two vector registers)."""
        return 2 * self.lanes

    def mr_candidates(self) -> list[int]:
        """Rows of the register tile that keep accumulators + operands in registers."""
        # accumulators = 2 * mr, plus 2 weight vectors and 1 broadcast register
        max_mr = (self.num_regs - 3) // 2
        return [m for m in range(4, max_mr + 1)]


def cpu_info(target: tvm.target.Target) -> CPUInfo:
    def has(feat: str) -> bool:
        try:
            return bool(codegen.llvm_cpu_has_features(feat, target))
        except Exception:  # pylint: disable=broad-except
            return False

    cores = 0
    try:
        cores = int(target.attrs.get("num-cores", 0) or 0)
    except Exception:  # pylint: disable=broad-except
        cores = 0
    if has("avx512f"):
        return CPUInfo(lanes=16, num_regs=32, fma=True, num_cores=cores)
    if has("avx2"):
        return CPUInfo(lanes=8, num_regs=16, fma=has("fma"), num_cores=cores)
    if has("neon") or "aarch64" in str(target.attrs.get("mtriple", "")):
        return CPUInfo(lanes=4, num_regs=32, fma=True, num_cores=cores)
    return CPUInfo(lanes=4, num_regs=16, fma=False, num_cores=cores)


def pick_mr(rows, info: CPUInfo, prefer: int | None = None) -> int:
    """Pick the register-tile height for a row extent (int or symbolic)."""
    cands = info.mr_candidates()
    default = prefer if prefer is not None else (8 if info.num_regs >= 32 else 6)
    default = min(default, cands[-1])
    if not isinstance(rows, int):
        return default
    if rows <= cands[-1]:
        return max(rows, 1)
    best, best_cost = default, None
    for m in cands:
        padded = -(-rows // m) * m
        waste = (padded - rows) / padded
        # small penalty for short tiles (less register reuse)
        cost = waste + 0.02 * abs(m - default)
        if best_cost is None or cost < best_cost - 1e-9:
            best, best_cost = m, cost
    return best
