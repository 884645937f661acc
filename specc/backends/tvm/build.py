"""The build driver: spec -> IR at the target's optimization level -> Relax -> compiled, loaded runner."""
from __future__ import annotations

import os

from .runtime import TVMModel
from .target import resolve_target
from .weights import load_weights


def ir_module(spec, opt_level: int | None = None, disabled: tuple = ()):
    """The IR the backend lowers, at -O`opt_level` (None: the default level). TVM has no layer modules to keep, so
    the fusion passes that eager PyTorch gets only at -O2 run here from -O1 (the state_dict is the same anyway)."""
    from ...passes import optimize

    return optimize(spec.module, opt_level, disabled, keep_modules=False)


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
          seed: int = 0, dims: dict[str, int] | None = None, bind_weights: bool = True) -> "TVMModel":
    """Lower, compile and load `spec` for a TVM target; returns a callable runner. `dims` fixes symbolic dims
    (e.g. {"B": 1}) for a static-shape build, which can use kernels tuned by `specc tune` for those sizes.
    `bind_weights=False` keeps the weights out of the executable: they are uploaded when the runner first runs
    (bench/cuda.py builds libraries this way on a CPU machine, to run on a GPU machine with the weights made there).
    On CPU an unbound build keeps the tiled kernels (their weight packing runs once, in main_transform_params) but
    not the GEMMs' weight prefetch, which needs the weights as constants; `specc compile` binds them for CPU."""
    t = resolve_target(target)
    if t.device == "cpu":
        os.environ.setdefault("TVM_NUM_THREADS", str(t.num_threads or len(os.sched_getaffinity(0))))
    from .codegen import compile_module

    opt_level = t.opt_level if opt_level is None else opt_level
    module = ir_module(spec, opt_level, disabled)
    lowered = lower_spec(spec, module, t, dims=dims)
    named = load_weights(weights, lowered.weights, spec, opt_level, disabled, seed)
    ex, stats = compile_module(lowered, named if bind_weights else None, t)
    return TVMModel(ex, lowered, t, named, stats, spec.name, bound=bind_weights)
