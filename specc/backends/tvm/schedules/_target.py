"""Target inspection: what the schedules need to know about the CPU they generate code for.

Everything comes from the target (its ``mcpu`` / ``mattr`` through LLVM's feature tables, its ``num-cores``) or,
for what a target does not say (cache sizes), from the machine the compile runs on; nothing is a constant tuned to
one CPU. ``identity()`` is the key a tuning database files results under (see ``tune.py``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import tvm
from tvm.target import codegen

# Features that change which code is fastest: SIMD width and register count (avx2 / avx512f), FMA, the AVX-512
# subsets LLVM uses for fp32 code. Tuned kernels carry the set they were tuned with; a target with a different set
# gets specc's own schedules.
IDENTITY_FEATURES = ("sse4.2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512vnni", "neon", "sve")

_DEFAULT_L1D = 32 * 1024   # used only when neither the target nor /sys says (every x86 core since 2008 has >= 32 KiB)
_DEFAULT_L2 = 256 * 1024


@dataclass(frozen=True)
class CPUInfo:
    """What the schedules need to know about the CPU target."""

    lanes: int  # fp32 lanes of one SIMD register (16 AVX-512, 8 AVX2, 4 SSE/NEON)
    num_regs: int  # architectural vector registers (32 AVX-512, 16 AVX2)
    fma: bool
    num_cores: int
    l1d: int = _DEFAULT_L1D  # bytes, per core
    l2: int = _DEFAULT_L2  # bytes, per core
    features: tuple[str, ...] = ()
    mcpu: str = "generic"

    @property
    def nr(self) -> int:
        """Columns of the register tile (two vector registers)."""
        return 2 * self.lanes

    def mr_candidates(self, vectors: int = 2) -> list[int]:
        """Rows of the register tile that keep accumulators + operands in registers."""
        # accumulators = vectors * mr, plus `vectors` weight registers and 1 broadcast register
        max_mr = (self.num_regs - vectors - 1) // vectors
        return [m for m in range(min(4, max_mr), max_mr + 1)]

    @property
    def default_mr(self) -> int:
        """Rows of the 2-vector register tile when the row count does not ask for another."""
        return 8 if self.num_regs >= 32 else 6

    def gemm_tile(self, n: int) -> tuple[int, int]:
        """(rows, vector registers of columns) of the register tile for a GEMM with a packed weight of n columns.

        Per step of K the micro-kernel loads `vectors` weight vectors and broadcasts `rows` inputs for
        rows * vectors FMAs. Starting from the convolutions' tile (default_mr x 2 vectors, 1 for an output at most
        one vector wide), a wider tile is taken when it fits the register file (accumulators + weight vectors + 1
        broadcast), gives more FMAs per load and pads the weight by at most an eighth; widths are powers of two
        (the packed layout's index arithmetic). 32 registers (AVX-512): 6 x 4 vectors (10 loads per 24 FMAs
        instead of 10 per 16: 8-15% faster on GPT-2 / BERT / ViT's dense shapes here); 16 registers (AVX2): 2 x 4
        would need 6 loads per 8 FMAs, so 6 x 2 stays."""
        vectors = 2 if n > self.lanes else 1
        rows = self.default_mr
        best = (rows * vectors / (rows + vectors), rows, vectors)
        wide = 4
        while wide * self.lanes <= 2 * n and wide * 2 + 2 <= self.num_regs:
            padded = -(-n // (wide * self.lanes)) * wide * self.lanes
            wide_rows = min(self.default_mr, (self.num_regs - wide - 1) // wide)
            score = wide_rows * wide / (wide_rows + wide)
            if (padded - n) * 8 <= padded and wide_rows >= 2 and score > best[0] + 1e-9:
                best = (score, wide_rows, wide)
            wide *= 2
        return best[1], best[2]

    def run_time_rows_tile(self, rows: int, vectors: int) -> int:
        """The height of a GEMM tile (`rows` x `vectors` registers, gemm_tile's) for a row count known only at run
        time (a sequence length T): the largest power of two <= rows when that keeps >= 16 accumulators, else rows.
        Such a GEMM computes its rows in whole tiles (an exact last tile would need MR-1 copies of the nest: the
        schedules README, "Exact last row tile"), and the lengths people run are multiples of 4 or 8 (powers of two,
        tokenizers' pad_to_multiple_of): 6-row tiles compute 132 rows for T = 128 and 1026 for 1024, 4-row tiles
        exactly T. AVX-512's 6 x 4-vector tile becomes 4 x 4; AVX2's 6 x 2 stays (4 x 2 would be 8 accumulators).
        Measured on Zen 4, GPT-2 (2 layers + lm_head, T = 128): 0.95x with the symbolic T, and 0.99x with T static
        (where the last tile is exact either way, so the 4-row tile is not slower per FMA there).
        `SPECC_GEMM_POW2_ROWS=0` keeps `rows` (A/B)."""
        if os.environ.get("SPECC_GEMM_POW2_ROWS", "1") == "0":
            return rows
        p = 1 << (rows.bit_length() - 1)
        return p if p * vectors >= 16 else rows

    def conv1x1_oc_blocks(self, n_blocks: int, width) -> int:
        """Output channel blocks (of nr = 2 vectors) one register tile of a 1x1 NCHWc conv computes over rows of
        `width` pixels: 2 (a tile of 4 vectors x MR pixels: 8 loads per 16 FMAs at MR = 4 instead of 10 per 16 for
        8 x 2) when the registers hold at least 4 pixels of that (4 * MR accumulators + 4 weight vectors + 1
        broadcast), the blocks pair up and such tiles cover the row exactly (ResNet-50's 56- and 28-wide rows: 8-20%
        faster; on 14- and 7-wide rows the padded pixels cost more than the tile gains), else 1. 3x3 convs keep one
        block (their tap columns reuse each broadcast along the row; two blocks measured no faster). No next-panel
        prefetch with two blocks (measured 1.13-1.15x on layer 4's). `SPECC_CONV_OC2=0` keeps one block (A/B).
        Measured: the schedules README, "Closing ResNet-50 and GPT-2 on Zen 4"."""
        if os.environ.get("SPECC_CONV_OC2", "1") == "0" or n_blocks % 2 or not isinstance(width, int):
            return 1
        if (self.num_regs - 4 - 1) // 4 < 4:
            return 1
        return 2 if width % pick_mr(width, self, vectors=4) == 0 else 1

    def few_rows_tile(self) -> tuple[int, int]:
        """(MR, NR) of the register tile for a GEMM on few rows (a routed expert's ~N*k/E tokens): 4 vectors wide
        when the registers hold at least 4 rows of that (4*MR accumulators + 4 weight vectors + 1 broadcast), else
        the usual 2 vectors. Same FMAs per broadcast as the tall tile with fewer rows, so fewer padded rows: the row
        count is a run-time value, and the last tile of every expert is padded to MR (AVX-512: 6 x 64 instead of
        8 x 32, 276 instead of 288 computed rows for the 256 routed rows of bench/tvm_vs_torch.py's MoE)."""
        wide = 4
        mr = (self.num_regs - wide - 1) // wide
        if mr >= 4:
            return mr, wide * self.lanes
        return (self.num_regs - 3) // 2, 2 * self.lanes

    def identity(self) -> dict:
        """What a tuned kernel is only valid for: the CPU model LLVM generates code for, its SIMD features, the
        vector width the schedules derive from them, and the thread count."""
        return {"mcpu": self.mcpu, "features": sorted(self.features), "lanes": self.lanes,
                "num_cores": self.num_cores}


def _target_has(target, feat: str) -> bool:
    try:
        return bool(codegen.llvm_cpu_has_features(feat, target))
    except Exception:  # pylint: disable=broad-except
        return False


def _sys_cache_sizes() -> tuple[int | None, int | None]:
    """(L1d, L2) bytes of cpu0 from /sys (Linux); None where unknown."""
    l1d = l2 = None
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    try:
        for idx in sorted(base.glob("index*")):
            level = (idx / "level").read_text().strip()
            kind = (idx / "type").read_text().strip()
            size = (idx / "size").read_text().strip().upper()
            mult = 1024 * 1024 if size.endswith("M") else 1024 if size.endswith("K") else 1
            val = int(size.rstrip("KM")) * mult
            if level == "1" and kind in ("Data", "Unified"):
                l1d = val
            elif level == "2":
                l2 = val
    except (OSError, ValueError):
        pass
    return l1d, l2


def cpu_info(target: tvm.target.Target) -> CPUInfo:
    cores = 0
    try:
        cores = int(target.attrs.get("num-cores", 0) or 0)
    except Exception:  # pylint: disable=broad-except
        cores = 0
    if not cores:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    feats = tuple(f for f in IDENTITY_FEATURES if _target_has(target, f))
    try:
        mcpu = str(target.attrs.get("mcpu", "") or "generic")
    except Exception:  # pylint: disable=broad-except
        mcpu = "generic"
    l1d, l2 = _sys_cache_sizes()
    common = {"num_cores": cores, "l1d": l1d or _DEFAULT_L1D, "l2": l2 or _DEFAULT_L2, "features": feats,
              "mcpu": mcpu}
    if "avx512f" in feats:
        return CPUInfo(lanes=16, num_regs=32, fma=True, **common)
    if "avx2" in feats:
        return CPUInfo(lanes=8, num_regs=16, fma="fma" in feats, **common)
    if "neon" in feats or "aarch64" in str(target.attrs.get("mtriple", "")):
        return CPUInfo(lanes=4, num_regs=32, fma=True, **common)
    return CPUInfo(lanes=4, num_regs=16, fma=False, **common)


def pick_mr(rows, info: CPUInfo, prefer: int | None = None, vectors: int = 2) -> int:
    """Pick the register-tile height for a row extent (int or symbolic); the tile is `vectors` registers wide."""
    cands = info.mr_candidates(vectors)
    default = prefer if prefer is not None else info.default_mr
    default = min(default, cands[-1])
    if not isinstance(rows, int):
        return default
    if rows <= default:
        return max(rows, 1)
    # rows up to the register limit are not taken whole: a 14 x 2-vector tile on AVX-512 needs 28 accumulators +
    # 3 operand registers of 32, LLVM spills, and ResNet's 256->256 3x3 conv at 14x14 ran 2.3x onnxruntime (7.2 ms)
    # vs 5.3 ms with the AVX2 build's shorter tiles; 2 x 7 rows wastes nothing and keeps registers free
    best, best_cost = default, None
    for m in cands:
        padded = -(-rows // m) * m
        waste = (padded - rows) / padded
        # small penalty for short tiles (less register reuse)
        cost = waste + 0.02 * abs(m - default)
        if best_cost is None or cost < best_cost - 1e-9:
            best, best_cost = m, cost
    return best
