"""`specc tune`: MetaSchedule tuning of the CPU kernels, cached on disk and reused by later compiles."""
from __future__ import annotations


def apply_tuned(mod, ttarget, stats: dict):
    from .schedules import last_stats, optimize_for_cpu

    mod = optimize_for_cpu(mod, ttarget)
    stats.update(last_stats())
    return mod, stats
