"""The loops of an NCHWc conv's tiled schedule (schedule._schedule_tiled) and the target-derived decisions that shape
them: which loops make the parallel tasks (output channel groups walked row by row, `_oc_group`), how the reduction
is walked (`_input_channel_halves`), whether the zero border is read in place (`_reads_border_in_place`) and
whether the next weight panel is prefetched (`_prefetches_next_panel`). Each decision has its A/B switch and its
measurements in the schedules README."""
from __future__ import annotations

import math
import os

import tvm
from tvm import tirx

from ._target import CPUInfo
from .sched_util import _extent


def _conv_tile_loops(sch, main, spatial, red, mr: int, ocb: int, nchwc: bool, info: CPUInfo):
    """The conv's loops as (image, output channel block [/ ocb], output row) fused into the parallel task loop (or
    (image, block group, row, block in the group): `_oc_group`), the row's tiles of mr pixels, the reduction, then
    the register tile: ocb channel blocks (unrolled) x mr pixels (unrolled) x the block's channels (vectorised).
    Returns (task loop, tile loop, pixel loop, channel loop, the reduction loops in their order)."""
    n, oco, oh, ow, oci = spatial
    wo, wi = sch.split(ow, [None, mr])
    inner = []
    if ocb > 1:
        oco, ocs = sch.split(oco, [None, ocb])
        inner = [ocs]
    group = _oc_group(sch, main, _extent(sch, oco) or 1, ocb, info) if nchwc else 1
    if group > 1:
        oco, ocg = sch.split(oco, [None, group])
        sch.reorder(n, oco, oh, ocg, wo, *red, *inner, wi, oci)
        task = sch.fuse(n, oco, oh, ocg)
    else:
        sch.reorder(n, oco, oh, wo, *red, *inner, wi, oci)
        task = sch.fuse(n, oco, oh)
    for loop in inner:
        sch.unroll(loop)
    if nchwc:
        red = _input_channel_halves(sch, main, red, info, ocb)
    return task, wo, wi, oci, red


def _oc_group(sch, main, n_blocks: int, ocb: int, info: CPUInfo) -> int:
    """Output channel blocks (of ocb x nr channels) a task computes for one output row, the parallel tasks being
    (block group, row, block in the group): > 1 when an image's input does not fit half the L2 while that many
    blocks' weight panels do. The input row a task reads then serves the whole group from the L1 / L2 instead of
    being read again from L3 for every block (a 512->128 1x1 conv at 28x28 read its 1.6 MB input four times), and
    at 2 threads each core reads half the input once rather than all of it. Not with the next-panel prefetch (its
    walk is block after block). Measured on Zen 4, ResNet-50: its kernels 1.001x at 1 thread, 0.994x at 2 threads
    in a quiet run and 0.964x in one where another tenant loaded the machine (the 512->128 conv 0.70-0.76x there):
    it saves L3 bandwidth, which only counts when that is contended. `SPECC_CONV_OC_GROUPS=0` keeps one block per
    task (A/B)."""
    if os.environ.get("SPECC_CONV_OC_GROUPS", "1") == "0":
        return 1
    weight = _conv_weight_param(sch, main)
    image = next((r.source for r in sch.get(main).reads if len(r.source.shape) == 5), None)
    if weight is None or image is None or _prefetches_next_panel(weight, info, ocb) \
            or not all(isinstance(d, tirx.IntImm) for d in image.shape[1:]):
        return 1
    image_bytes = math.prod(int(d) for d in image.shape[1:]) * tvm.DataType(image.dtype).bits // 8
    if image_bytes <= info.l2 // 2:
        return 1
    panel = _nbytes(weight) // int(weight.shape[0]) * ocb
    fit = max(1, (info.l2 // 2) // panel)
    return max(g for g in range(1, min(fit, n_blocks) + 1) if n_blocks % g == 0)


def _reads_border_in_place(info: CPUInfo) -> bool:
    """Whether an NCHWc conv reads its zero border in place (the padding's if_then_else inlined into the
    reduction) instead of from a padded copy of its input (`specc_pad`, a second parallel loop writing
    [N, C/cb, H+2, W+2, cb] before the conv reads it). In place, LLVM keeps the broadcasts and branches on the
    border tests outside the channel loop (a 3x3 64-channel kernel at 14x14 on znver4: 278 FMA instructions instead
    of 196, the same 74 broadcasts). Measured in ResNet-50 on Zen 4: with AVX-512 code its 3x3 convs are 1-3% faster
    (the copy's pass saved) and 7-10% on layer 4's 7x7 planes; the stem (7x7/2 on the NCHW image) 7% slower, so
    an NCHW input keeps its copy; with AVX2 code (haswell, same CPU) the
    14x14 ones are 1.4-1.5x slower and the rest unchanged, so AVX2 targets keep the copy. Intel AVX-512 is
    unmeasured. `SPECC_PAD_INLINE=0` keeps the copy (A/B). Figures: the schedules README, "Closing ResNet-50 and GPT-2
    on Zen 4"."""
    return "avx512f" in info.features and os.environ.get("SPECC_PAD_INLINE", "1") != "0"


def _nbytes(buf) -> int:
    total = tvm.DataType(buf.dtype).bits // 8
    for d in buf.shape:
        total *= int(d)
    return total


def _prefetches_next_panel(weight, info: CPUInfo, ocb: int = 1) -> bool:
    """Whether an NCHWc conv with packed weight `weight` (None: not a constant) prefetches its next weight panel:
    weights that do not fit the L2 (streamed from L3 / memory) whose current and next panel fit half of it (with the
    3x3 512-channel convs' 590 KB panels in, those ran 3-9% slower: the L2 holds too little else). Not with two
    channel blocks per tile (layer 4's 1x1 convs 1.13-1.15x), nor on 16-register targets: AVX2 code measured
    unchanged with it on an Intel Xeon (3x3 256 @14, 512 @7) and 1.10-1.24x slower on Zen 4 (ResNet-50's layer 3/4
    1x1 convs; its kernels' sum 1.016x), the prefetch round's spilled accumulators being a larger share of 10-12
    than of 16 (schedules README, "Closing ResNet-50 and GPT-2 on Zen 4"). `SPECC_CONV_PREFETCH=0` switches it off
    (A/B)."""
    if weight is None or os.environ.get("SPECC_CONV_PREFETCH", "1") == "0" or info.num_regs < 32:
        return False
    wbytes, n_oco = _nbytes(weight), int(weight.shape[0])
    return ocb == 1 and wbytes > info.l2 and 2 * wbytes // n_oco <= info.l2 // 2 and n_oco > 1


def _input_channel_halves(sch, main, red, info: CPUInfo, ocb: int = 1):
    """The reduction of an NCHWc conv (input channel block ico, tap row, channel, tap column) walked with its input
    channel blocks in two halves side by side: (ico_i, kh, ici, ico_o, kw), ico = ico_o * n/2 + ico_i, ico_o
    unrolled, so a step reads the input and the weight panel at two places half of them apart and does twice the
    FMAs (2 x KW x MR x 2 vectors). Same register tile, same sums in another order. Taken for convs that do not
    prefetch their next weight panel and have a spatial kernel (3x3) or weights beyond the L2 (3x3 512->512 @7,
    whose 590 KB panels are too big to prefetch, 5-10% faster); not for 1x1 convs whose weights fit the L2
    (0.98-1.09x), nor with the prefetch (1x1 beyond the L2: 1.04-1.07x). Returns the reduction loops in their new
    order (the outermost first); `SPECC_CONV_HALVES=0` keeps the plain order (A/B). Measured: the schedules README,
    "Input channel blocks in two halves". Not on 16-register targets: AVX2 code measured 0.99x on one 3x3 conv on
    the Intel Xeon and 1.006x (ResNet-50) / 1.014x (ResNet-18, its 14x14 and stride-2 3x3 convs 1.02-1.05x) on Zen 4
    ("Closing ResNet-50 and GPT-2 on Zen 4")."""
    if os.environ.get("SPECC_CONV_HALVES", "1") == "0" or len(red) != 4 or info.num_regs < 32:
        return red
    weight = _conv_weight_param(sch, main)
    n_ico = _extent(sch, red[0]) or 0
    if weight is None or n_ico < 2 or n_ico % 2 or _prefetches_next_panel(weight, info, ocb):
        return red
    taps = int(weight.shape[2]) * int(weight.shape[4])  # wp[OC/nr, C/cb, KH, cb, KW, nr]
    if taps == 1 and _nbytes(weight) <= info.l2:
        return red
    ico_o, ico_i = sch.split(red[0], [2, None])
    sch.reorder(ico_i, red[1], red[2], ico_o, red[3])
    sch.unroll(ico_o)
    return [ico_i, red[1], red[2], ico_o, red[3]]


def _conv_weight_param(sch, main):
    """The packed NCHWc conv weight wp[OC/nr, C/cb, KH, cb, KW, nr] the block reads, when a function parameter."""
    func = sch.mod["main"]
    for region in sch.get(main).reads:
        buf = region.source
        if len(buf.shape) == 6 and all(isinstance(d, tirx.IntImm) for d in buf.shape) \
                and any(buf.same_as(p) for p in func.params):
            return buf
    return None


def _exact_pixel_tail() -> bool:
    """Whether an NCHWc conv whose row is no multiple of its tile's mr pixels computes only the row's pixels in the
    last tile (few_rows._exact_row_tail on the pixel tile loop: one more copy of the reduction nest, for the one
    tail width) instead of a whole padded tile. `SPECC_CONV_EXACT_TAIL=0` keeps the padded tile (A/B)."""
    return os.environ.get("SPECC_CONV_EXACT_TAIL", "1") != "0"
