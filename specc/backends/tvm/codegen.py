"""Relax module + weights + specc target -> a TVM executable.

  cpu  (schedules = "specc"): specc's hand-written CPU schedules (``schedules.optimize_for_cpu``), with kernels
       tuned by `specc tune` (cached on disk) taking the place of the default schedule where they exist;
  cpu  (schedules = "none"):  the untuned ``zero`` pipeline (legalize + fuse), scalar loop nests;
  cuda (schedules = "dlight"): TVM's CUDA pipeline, whose dlight rules give every kernel a GPU schedule.
"""
from __future__ import annotations

import logging
import os
import time

import numpy as np
import tvm
from tvm import relax

from .lower import Lowered


def configure_threads(num_threads: int | None) -> int:
    """TVM's CPU thread pool: the target's thread count, else every core this process may use. (TVM's own
    default here is one thread pinned to core 0.)"""
    n = num_threads or int(os.environ.get("TVM_NUM_THREADS", 0)) or len(os.sched_getaffinity(0))
    os.environ["TVM_NUM_THREADS"] = str(n)
    tvm.get_global_func("runtime.config_threadpool")(0, n)
    return n


def tvm_target(target) -> tvm.target.Target:
    """specc target (targets/*.toml) -> tvm.target.Target."""
    if target.device == "cuda":
        return tvm.target.Target({"kind": "cuda", "arch": target.arch or "sm_80"}, host=_host(None, None))
    return _host(target.mcpu, target.num_threads)


def _host(mcpu: str | None, threads: int | None) -> tvm.target.Target:
    spec: dict = {"kind": "llvm"}
    if mcpu in (None, "host"):
        found = tvm.target.Target.from_device(tvm.cpu()).export()
        spec.update({k: found[k] for k in ("mtriple", "mcpu") if found.get(k)})
    else:
        spec["mcpu"] = mcpu
    # the thread count the kernels are scheduled (and tuned) for
    spec["num-cores"] = threads or int(os.environ.get("TVM_NUM_THREADS", 0)) or len(os.sched_getaffinity(0))
    return tvm.target.Target(spec)


def bind_weights(lowered: Lowered, weights: dict[str, np.ndarray]) -> tvm.IRModule:
    """Weights become constants (BindParams), so layout changes and batchnorm arithmetic fold at compile time."""
    func = lowered.mod["main"]
    params = func.params[len(lowered.inputs):]
    # reshape: np.ascontiguousarray turns a 0-d weight (CLIP's logit_scale) into shape (1,)
    binds = {p: tvm.runtime.tensor(np.ascontiguousarray(weights[name]).reshape(np.shape(weights[name])))
             for p, name in zip(params, lowered.weights)}
    return relax.transform.BindParams("main", binds)(lowered.mod)


def lift_weights(lowered: Lowered) -> tvm.IRModule:
    """Weights stay parameters (a library without them: GPT-2's 500 MB need not travel with its kernels); what the
    graph computes from weights alone moves into ``main_transform_params``, which the runner calls once per model."""
    mod = tvm.IRModule(dict(lowered.mod.functions.items()))
    mod["main"] = lowered.mod["main"].with_attr("num_input", len(lowered.inputs))
    return relax.transform.LiftTransformParams()(mod)


def optimize(mod: tvm.IRModule, target, ttarget: tvm.target.Target) -> tuple[tvm.IRModule, dict]:
    """The Relax pipeline for the target; returns the module ready for tvm.compile and what was done."""
    stats: dict = {"schedules": target.schedules}
    if target.device == "cuda":
        return mod, stats  # tvm.compile's CUDA pipeline legalizes, fuses and applies dlight
    if target.schedules == "none":
        with ttarget:
            return relax.get_pipeline("zero")(mod), stats
    from .tuned import apply_tuned

    quiet_schedules()
    return apply_tuned(mod, ttarget, stats)


def quiet_schedules() -> None:
    """A kernel the fast schedules do not fit falls back to a generic one: worth a debug line (SPECC_TVM_DEBUG=1),
    not a page of IR on every compile."""
    if not os.environ.get("SPECC_TVM_DEBUG"):
        logging.getLogger("specc.tvm.schedules").setLevel(logging.ERROR)


def compile_module(lowered: Lowered, weights: dict[str, np.ndarray] | None, target) -> tuple[object, dict]:
    """-> (relax executable, stats). `weights` None: weights stay parameters (lift_weights) instead of constants."""
    t0 = time.perf_counter()
    ttarget = tvm_target(target)
    mod = bind_weights(lowered, weights) if weights is not None else lift_weights(lowered)
    mod, stats = optimize(mod, target, ttarget)
    if target.device == "cpu" and target.schedules != "none":
        from .schedules import TIR_PIPELINE

        # keeps the kernels' alias information when the module has symbolic dims (see schedules/pipeline.py)
        ex = tvm.compile(mod, ttarget, tir_pipeline=TIR_PIPELINE)
    elif target.device == "cuda":
        from .schedules.cuda import cuda_pipeline

        ex = tvm.compile(mod, ttarget, relax_pipeline=cuda_pipeline(ttarget))
        assert_has_cuda_kernels(ex)
    else:
        ex = tvm.compile(mod, ttarget)
    stats["compile_s"] = time.perf_counter() - t0
    stats["target"] = str(ttarget)
    return ex, stats


def device_modules(ex, kind: str) -> list:
    """The imported runtime modules of `kind` ("cuda", "llvm", ...) inside an executable."""
    found, stack = [], [ex.mod if hasattr(ex, "mod") else ex]
    while stack:
        m = stack.pop()
        if m.kind == kind:
            found.append(m)
        stack.extend(m.imports)
    return found


def assert_has_cuda_kernels(ex) -> int:
    """A CUDA build must hold CUDA kernels: a pipeline without GPU schedules silently yields host-only code."""
    kernels = sum(m.inspect_source().count("__global__") for m in device_modules(ex, "cuda"))
    if not kernels:
        raise RuntimeError("the CUDA build holds no CUDA kernels (was the dlight pipeline skipped?)")
    return kernels
