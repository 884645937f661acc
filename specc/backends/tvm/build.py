"""The build driver: spec -> IR at the target's optimization level -> Relax -> compiled, loaded runner."""
from __future__ import annotations

import os

from .runtime import TVMModel
from .target import resolve_target
from .weights import load_weights


def ir_module(spec, opt_level: int | None = None, disabled: tuple = ()):
    """The IR the backend lowers: the same passes as the PyTorch emitter at the same level, so weight names agree."""
    if not opt_level:
        return spec.module
    from ...passes import PipelineOptions, run_pipeline

    module, _ = run_pipeline(spec.module, PipelineOptions(level=opt_level, disabled=disabled))
    return module


def lower_spec(spec, module, target, **options):
    """lower() with the spec's sources attached to its errors, so they render with the spec line and a caret."""
    from ...diagnostics import SpecError
    from .lower import lower

    try:
        return lower(module, target, **options)
    except SpecError as err:
        err.sources = spec.sources
        raise


def build(spec, target="tvm-cpu", *, weights=None, opt_level: int | None = None, disabled: tuple = (),
          seed: int = 0, dims: dict[str, int] | None = None) -> "TVMModel":
    """Lower, compile and load `spec` for a TVM target; returns a callable runner. `dims` fixes symbolic dims
    (e.g. {"B": 1}) for a static-shape build, which can use kernels tuned by `specc tune` for those sizes."""
    t = resolve_target(target)
    if t.device == "cpu":
        os.environ.setdefault("TVM_NUM_THREADS", str(t.num_threads or len(os.sched_getaffinity(0))))
    from .codegen import compile_module

    module = ir_module(spec, opt_level, disabled)
    lowered = lower_spec(spec, module, t, dims=dims)
    named = load_weights(weights, lowered.weights, spec, opt_level, disabled, seed)
    ex, stats = compile_module(lowered, named, t)
    return TVMModel(ex, lowered, t, named, stats, spec.name)
