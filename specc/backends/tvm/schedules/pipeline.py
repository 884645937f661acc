"""optimize_for_cpu: Relax IRModule -> legalized, fused and scheduled IRModule."""

from __future__ import annotations

import tvm
from tvm import relax

from . import stack_tiles
from ._target import cpu_info
from .rewrite import rewrite_heavy_ops
from .schedule import schedule_module

_LAST_STATS: dict = {}

# The TIR pipeline to compile a module from optimize_for_cpu with: tvm.compile(mod, target, tir_pipeline=TIR_PIPELINE)
TIR_PIPELINE = "specc_cpu"


def _mark_single_buffer_noalias():
    """TVM's LLVM codegen drops the `noalias` compute scope of kernels in a module where one PrimFunc lacks the
    `tirx.noalias` attribute (0.27, observed: kernels whose names sort before that function lose it). A model with
    symbolic dims gets such a PrimFunc from the VM's shape lowering (`shape_func`, one argument: the shape heap),
    and then every kernel loses its alias information: LLVM keeps the register tile's accumulators in memory, a
    load and a store per FMA, and the micro-kernels run 1.8-2.8x slower than the same kernels in a static build.
    A function with at most one pointer argument cannot alias itself through its arguments, so marking it is
    exact."""

    @tvm.tirx.transform.prim_func_pass(opt_level=0, name="specc.MarkSingleBufferNoAlias")
    def mark(func, _mod, _ctx):
        if "tirx.noalias" in func.attrs or len(func.params) > 1:
            return func
        return func.with_attr("tirx.noalias", True)

    return mark


def _specc_cpu_pipeline(**kwargs):
    base, finalize_host, finalize_device = tvm.tirx.get_tir_pipeline("s_tir", **kwargs)
    if stack_tiles.enabled():
        host = finalize_host

        def finalize_host():  # a function returning the passes, as TVM's own
            return tvm.transform.Sequential([stack_tiles.register_tiles_on_stack(), host()])
    return tvm.transform.Sequential([_mark_single_buffer_noalias(), base]), finalize_host, finalize_device


tvm.tirx.register_tir_pipeline(TIR_PIPELINE, _specc_cpu_pipeline)


def last_stats() -> dict:
    """What the last optimize_for_cpu call did (replaced ops, schedule per PrimFunc)."""
    return dict(_LAST_STATS)


def _has_training_batch_norm(mod: tvm.IRModule) -> bool:
    found = []

    def visit(expr):
        if (isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op)
                and expr.op.name == "relax.nn.batch_norm" and bool(expr.attrs.training)):
            found.append(expr)

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return bool(found)


def optimize_for_cpu(mod: tvm.IRModule, target: tvm.target.Target, *, fast_math: bool = True) -> tvm.IRModule:
    """Lower a Relax IRModule for a CPU target with fast hand-written schedules.

    ``mod``: Relax IRModule built with relax.BlockBuilder (fp32; weights ideally bound as
    constants with ``relax.transform.BindParams`` so they get pre-packed at compile time).
    ``target``: an ``llvm`` Target; its ``mcpu`` decides the SIMD width (use
    ``Target.from_device(tvm.cpu())`` or ``{"kind": "llvm", "mcpu": "native-cpu-name"}``;
    plain ``"llvm"`` means baseline x86-64 SSE2 code).

    ``fast_math``: replace exp / tanh / erf / sigmoid / gelu / silu / softmax by vectorisable
    polynomial versions (max rel. error ~4e-7; gelu near its ~0 tail has abs. error ~1e-6).

    Returns a module whose PrimFuncs are scheduled (attr ``tirx.is_scheduled``), ready for
    ``tvm.compile(mod, target, tir_pipeline=TIR_PIPELINE)`` (the default TIR pipeline works too, but loses the
    kernels' alias information when a dim is symbolic: see _mark_single_buffer_noalias).
    """
    if isinstance(target, (str, dict)):
        target = tvm.target.Target(target)
    info = cpu_info(target)
    with target:
        if not _has_training_batch_norm(mod):
            # batch_norm(training=False) -> elementwise ops that fuse into the conv epilogue.
            # (DecomposeOpsForInference ignores the `training` flag, so it is only safe
            # when no batch_norm asks for batch statistics.)
            mod = relax.transform.DecomposeOpsForInference()(mod)
        mod = relax.transform.FoldConstant()(mod)
        mod, replaced = rewrite_heavy_ops(mod, info, fast_math)
        seq = tvm.transform.Sequential([
            relax.transform.DeadCodeElimination(),  # layout conversions the rewrite left unused
            relax.transform.LegalizeOps(),
            relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(),
            relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
            relax.transform.DeadCodeElimination(),
        ])
        mod = seq(mod)
        mod, sched = schedule_module(mod, target, info)
    _LAST_STATS.clear()
    _LAST_STATS.update({"replaced": replaced, "schedules": sched, "lanes": info.lanes})
    return mod
