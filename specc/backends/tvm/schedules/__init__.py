"""Fast CPU schedules for specc's TVM backend.

Usage (the only entry point)::

    target = tvm.target.Target.from_device(tvm.cpu())      # or a dict target with mcpu set
    mod = optimize_for_cpu(mod, target)                     # Relax IRModule, params bound
    ex = tvm.compile(mod, target, tir_pipeline=TIR_PIPELINE)   # default (non-fusing) relax pipeline

``optimize_for_cpu`` runs the whole Relax lowering itself (rewrite of heavy ops,
LegalizeOps, FuseOps, FuseTIR, scheduling); do not run the ``zero`` pipeline before or
after it.
"""

from __future__ import annotations

from .pipeline import TIR_PIPELINE, last_stats, optimize_for_cpu  # noqa: F401

__all__ = ["optimize_for_cpu", "last_stats", "TIR_PIPELINE"]
