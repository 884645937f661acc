"""The pass pipeline: one list literal, run in order. Each pass is a function Module -> PassResult that returns
a NEW module (it never edits the one it was given), so pass order is explicit and `--print-after` is honest.

The verifier runs after every pass in tests and with --debug."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..ir import Module


@dataclass
class PassResult:
    module: Module
    changed: list[str] = field(default_factory=list)  # what was rewritten, one line each
    skipped: list[str] = field(default_factory=list)  # near misses, with the reason


@dataclass(frozen=True)
class Pass:
    name: str
    run: Callable[[Module, "PipelineOptions"], PassResult]
    level: int = 1  # minimum -O level that enables it
    doc: str = ""
    requires: tuple[str, ...] = ("typed",)  # what the pass assumes of its input module
    ensures: tuple[str, ...] = ("typed",)  # what it keeps true of its output


@dataclass(frozen=True)
class PipelineOptions:
    level: int = 1
    disabled: tuple[str, ...] = ()
    print_after_all: bool = False
    print_after: tuple[str, ...] = ()
    report: bool = False
    verify: bool = False
    # Assume the emitted module only ever runs in eval mode: lets fold_constants drop dropout. Off by default, so
    # that -O1 output trains exactly like -O0 (every other rewrite is exact in both modes, see fuse_batchnorm).
    inference: bool = False


PASSES: list[Pass] = []  # filled below; the order here IS the pipeline


def _register_default_passes() -> None:
    if PASSES:
        return
    import importlib

    for name in PIPELINE:
        mod = importlib.import_module(f"{__package__}.{name}")
        PASSES.append(mod.PASS)


# The pipeline, in order. Each entry is a module in specc/passes/ that defines PASS.
PIPELINE: list[str] = [
    "infer",  # re-run every shape rule (a no-op on fresh IR; proves a parsed or hand-edited module is typed)
    "fold_constants",  # no-op reshapes/permutes, x*1, x+0, scalar chains, dropout when opts.inference
    "cse",  # one node per distinct pure computation
    "dce",  # drop pure nodes nothing reads
    "fuse_layernorm",  # mean/sub/var/add eps/rsqrt/mul -> layernorm
    "fuse_attention",  # matmul(q, k^T) * scale (+ mask) -> softmax -> matmul v -> sdpa
    "merge_projections",  # sibling linears of one input (q/k/v) -> one merged_linear + getitems
    "fuse_batchnorm",  # conv/linear -> batchnorm -> fused (folded in eval mode)
    "fuse_epilogue",  # conv/linear/fused -> [+ residual] -> activation -> fused with an epilogue
]


def _count(m: Module) -> tuple[int, int]:
    """(nodes stored in all graphs, op nodes one forward runs: repeat bodies counted N times)."""
    ops = sum(times for _, n, _, times in m.walk() if n.kind == "op" and n.target != "getitem")
    return sum(len(g) for g in m.graphs.values()), ops


def run_pipeline(module: Module, opts: PipelineOptions = PipelineOptions(),
                 passes: list[Pass] | None = None) -> tuple[Module, str]:
    """Run the pipeline (or `passes`) on `module`; return the new module and the report/printouts asked for."""
    from ..printer import print_module
    from ..verify import verify
    from .rewrite import shape_context

    _register_default_passes()
    passes = PASSES if passes is None else passes
    known = {p.name for p in passes}
    unknown = [d for d in (*opts.disabled, *opts.print_after) if d not in known]
    if unknown:
        from ..errors import UsageError

        raise UsageError(f"unknown pass {', '.join(unknown)} (passes: {', '.join(p.name for p in passes) or 'none'})")
    log: list[str] = []
    if opts.verify:
        with shape_context(module):
            verify(module)
    start = _count(module)
    for p in passes:
        if p.level > opts.level or p.name in opts.disabled:
            if opts.report:
                log.append(f"pass {p.name}: " + ("disabled" if p.name in opts.disabled else f"off at -O{opts.level}"))
            continue
        before = _count(module)
        res = p.run(module, opts)
        module = res.module
        if opts.verify:
            with shape_context(module):
                verify(module)
        if opts.report:
            after = _count(module)
            log.append(f"pass {p.name}: {before[0]} -> {after[0]} nodes ({before[1]} -> {after[1]} ops per forward)")
            log += [f"  rewrote: {c}" for c in res.changed]
            log += [f"  skipped: {s}" for s in res.skipped]
        if opts.print_after_all or p.name in opts.print_after:
            log.append(f"// ----- IR after {p.name} -----")
            log.append(print_module(module).rstrip())
    if opts.report:
        end = _count(module)
        log.append(f"total: {start[0]} -> {end[0]} nodes, {start[1]} -> {end[1]} ops per forward")
    return module, "\n".join(log)
