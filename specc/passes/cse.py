"""Common-subexpression elimination: one node per distinct pure computation.

Two pure op nodes (no parameters, no randomness) with the same op, operands and attributes compute the same value;
the later one is dropped and its users read the earlier one. `a + b` and `b + a` count as the same (float addition
and multiplication are commutative). Layers are never merged: two `linear`s of one input are two weight matrices."""
from __future__ import annotations

from ..ir import Module, Node
from ..printer import attrs_dict
from .pipeline import Pass, PassResult, PipelineOptions
from .rewrite import Editor, Log, is_pure, map_graphs

COMMUTATIVE = {"add", "mul"}


def key(n: Node) -> tuple:
    ins = tuple(sorted(n.inputs)) if n.target in COMMUTATIVE and len(n.inputs) == 2 else n.inputs
    return (n.target, ins, repr(attrs_dict(n)))


def _cse(ed: Editor, log: Log) -> None:
    seen: dict[tuple, str] = {}
    for name in list(ed.order):
        n = ed[name]
        if not is_pure(n):
            continue
        k = key(n)
        first = seen.setdefault(k, name)
        if first != name:
            ed.replace_uses(name, first)
            ed.remove(name)
            log.did(ed, f"%{name} is %{first} ({n.target}): reuse it")


def run(m: Module, opts: PipelineOptions) -> PassResult:
    out, log = map_graphs(m, _cse)
    return PassResult(out, log.changed, log.skipped)


PASS = Pass("cse", run, level=1, doc=__doc__.splitlines()[0])
