"""The CUDA pipeline: TVM's own (relax/backend/cuda/pipeline.py) with dlight's Matmul rule, which schedules every
matmul and every convolution (as an implicit GEMM), given 2x2 virtual threads: each thread computes four 4x4 tiles
of the output 32 apart instead of one, a block a 64x128 tile instead of 32x64.

Measured on an H200 in fp32 (bench/cuda.py; the schedules README has the table of ten configs): dlight's CUDA
default ran GPT-2 at 8x1024 in 132.9 ms and ResNet-50 at batch 32 in 18.6 ms; MATMUL runs them in 93.8 ms and
18.3 ms. SPECC_CUDA_MATMUL="bx,by,vx,vy,mx,my,mk,vec" sets another config (A/B timing on a GPU machine).
"""
from __future__ import annotations

import os

import tvm

# threads (x, y), virtual threads (x, y), per-thread tile (x, y), k step, vector width
MATMUL = (8, 16, 2, 2, 4, 4, 16, 2)
DLIGHT = (8, 16, 1, 1, 4, 4, 16, 2)  # dlight's own CUDA config, for comparison


def matmul_config():
    from tvm.s_tir import dlight as dl

    text = os.environ.get("SPECC_CUDA_MATMUL")
    bx, by, vx, vy, mx, my, mk, vec = (int(v) for v in text.split(",")) if text else MATMUL
    return dl.gpu.Matmul.Config(block_size_x=bx, block_size_y=by, vthread_x=vx, vthread_y=vy, micro_size_x=mx,
                                micro_size_y=my, micro_size_k=mk, vector_size=vec, unroll=256, use_shared=True,
                                storage_align=True, inner_x=False)


def cuda_pipeline(target: tvm.target.Target) -> tvm.transform.Pass:
    """relax.backend.cuda.get_default_pipeline with the Matmul rule configured by matmul_config()."""
    from tvm.relax.backend.cuda import pipeline as cuda
    from tvm.s_tir import dlight as dl

    config = matmul_config()

    class Matmul(dl.gpu.Matmul):
        def get_configs(self, target):
            return config if target.kind.name == "cuda" else super().get_configs(target)

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


__all__ = ["DLIGHT", "MATMUL", "cuda_pipeline", "matmul_config"]
