"""Which TVM target a build is for: a specc Target (targets/*.toml) checked for what this backend can build."""
from __future__ import annotations


def resolve_target(target):
    """A specc Target, a target name (tvm-cpu, tvm-cuda) or a path to a .toml file."""
    from ...diagnostics import SpecError
    from ...targets import Target, load_target

    t = target if isinstance(target, Target) else load_target(target)
    if t.backend != "tvm":
        raise SpecError.at("E0107", f"target {t.name!r} is a {t.backend} target, not a TVM one")
    if t.dtype != "float32":
        raise SpecError.at("E0107", f"target {t.name!r}: the TVM backend builds float32 models, not {t.dtype}")
    allowed = {"cpu": ("specc", "tuned", "none"), "cuda": ("dlight",)}[t.device]
    if t.schedules not in allowed:
        raise SpecError.at("E0107", f"target {t.name!r}: schedules = {t.schedules!r} is not available on "
                           f"{t.device} (use {' or '.join(repr(a) for a in allowed)})")
    return t
