"""The CUDA pipeline: TVM's own (relax/backend/cuda/pipeline.py) with dlight's Matmul rule configured per kind of
kernel: matmuls get a 128x128 block tile in 2x2 virtual threads (MATMUL), convolutions keep dlight's CUDA default
(CONV), which dlight schedules as implicit GEMMs through the same rule.

Measured on an H200 in fp32 (bench/cuda.py, one run, each config on every kernel; the schedules README has the
table): dlight's default (each thread a 4x4 tile, a block 32x64) ran GPT-2 at 8x1024 in 132.9 ms and ResNet-50 at
batch 32 in 18.6 ms; MATMUL ran GPT-2 in 123.1 ms (-7%) but ResNet-50 in 22.0 ms (+18%); larger per-thread tiles
(8x8, with 128 or 256 threads) were 1.5-2x slower on both. SPECC_CUDA_MATMUL="bx,by,vx,vy,mx,my,mk,vec" sets one
config for every kernel (A/B timing on a GPU machine).
"""
from __future__ import annotations

import os

import tvm

# threads (x, y), virtual threads (x, y), per-thread tile (x, y), k step, vector width
MATMUL = (16, 16, 2, 2, 4, 4, 16, 4)
CONV = (8, 16, 1, 1, 4, 4, 16, 2)  # dlight's own CUDA config


def matmul_config(conv: bool):
    from tvm.s_tir import dlight as dl

    text = os.environ.get("SPECC_CUDA_MATMUL")
    bx, by, vx, vy, mx, my, mk, vec = (int(v) for v in text.split(",")) if text else CONV if conv else MATMUL
    return dl.gpu.Matmul.Config(block_size_x=bx, block_size_y=by, vthread_x=vx, vthread_y=vy, micro_size_x=mx,
                                micro_size_y=my, micro_size_k=mk, vector_size=vec, unroll=256, use_shared=True,
                                storage_align=True, inner_x=False)


def cuda_pipeline(target: tvm.target.Target) -> tvm.transform.Pass:
    """relax.backend.cuda.get_default_pipeline with the Matmul rule configured by matmul_config()."""
    from tvm.relax.backend.cuda import pipeline as cuda
    from tvm.s_tir import dlight as dl

    configs = {conv: matmul_config(conv) for conv in (False, True)}

    class Matmul(dl.gpu.Matmul):
        conv = False

        def apply(self, func, target, tunable):
            # TOPI names a convolution's compute block conv2d_nchw, conv1d_ncw, ...
            self.conv = isinstance(func, tvm.tirx.PrimFunc) and _has_conv_block(func)
            return super().apply(func, target, tunable)

        def get_configs(self, target):
            return configs[self.conv] if target.kind.name == "cuda" else super().get_configs(target)

    legalize = [tvm.relax.transform.LegalizeOps(), tvm.relax.transform.AnnotateTIROpPattern(),
                tvm.relax.transform.FoldConstant(), tvm.relax.transform.FuseOps(), tvm.relax.transform.FuseTIR(),
                dl.ApplyDefaultSchedule(Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(),
                                        dl.gpu.Fallback())]

    @tvm.transform.module_pass(opt_level=0)
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        with target:
            return tvm.transform.Sequential(cuda.library_dispatch_passes(target) + legalize
                                            + cuda.dataflow_lower_passes(target) + cuda.finalize_passes(target))(mod)

    return _pipeline


def _has_conv_block(func) -> bool:
    from tvm.s_tir.dlight.analysis import get_root_block

    sch = tvm.s_tir.Schedule(func)
    return any(sch.get(b).name_hint.startswith("conv") for b in sch.get_child_blocks(get_root_block(sch)))


__all__ = ["CONV", "MATMUL", "cuda_pipeline", "matmul_config"]
