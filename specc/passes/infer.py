"""Shape/type re-inference: re-run every op's shape rule (callees first) and retype what is stale.

On IR fresh from the elaborator this changes nothing; it matters after hand-edited or parsed IR, and every other
pass calls the same `retype` on the graphs it rewrote, so types never go stale after a fusion."""
from __future__ import annotations

from ..ir import Module
from .pipeline import Pass, PassResult, PipelineOptions
from .rewrite import Log, retype


def run(m: Module, opts: PipelineOptions) -> PassResult:
    log = Log()
    out = retype(m, log)
    return PassResult(out, log.changed, log.skipped)


PASS = Pass("infer", run, level=0, doc=__doc__.splitlines()[0])
