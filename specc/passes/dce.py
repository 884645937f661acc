"""Dead-code elimination: drop pure nodes whose value nothing reads.

Nodes that own parameters (a layer computed but unused) are kept and reported: removing them would drop keys from
the emitted state_dict, so a checkpoint of the unoptimised module would no longer load."""
from __future__ import annotations

from ..ir import Module
from .pipeline import Pass, PassResult, PipelineOptions
from .rewrite import Editor, Log, is_pure, map_graphs


def _sweep(ed: Editor, log: Log) -> None:
    before = None
    while before != len(ed.order):
        before = len(ed.order)
        for n in reversed(ed.nodes()):
            if n.kind == "op" and not ed.users(n.name):
                if is_pure(n):
                    ed.remove(n.name)
                    log.did(ed, f"removed %{n.name} ({n.target}): its value is never used")
                else:
                    log.skip(ed, f"kept unused %{n.name} ({n.target}): it owns parameters or draws random "
                                 "numbers (removing it would change the state_dict)")


def run(m: Module, opts: PipelineOptions) -> PassResult:
    out, log = map_graphs(m, _sweep)
    return PassResult(out, log.changed, log.skipped)


PASS = Pass("dce", run, level=1, doc=__doc__.splitlines()[0])
