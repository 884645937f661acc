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
    run: Callable[[Module], PassResult]
    level: int = 1  # minimum -O level that enables it
    doc: str = ""


@dataclass(frozen=True)
class PipelineOptions:
    level: int = 1
    disabled: tuple[str, ...] = ()
    print_after_all: bool = False
    print_after: tuple[str, ...] = ()
    report: bool = False
    verify: bool = False
    inference: bool = True  # folding batchnorm is only valid in eval mode


PASSES: list[Pass] = []  # filled below; the order here IS the pipeline


def _register_default_passes() -> None:
    if PASSES:
        return
    import importlib

    for name in PIPELINE:
        mod = importlib.import_module(f"{__package__}.{name}")
        PASSES.append(mod.PASS)


# The pipeline, in order. Each entry is a module in specc/passes/ that defines PASS.
PIPELINE: list[str] = []


def _count(m: Module) -> int:
    return sum(len(g) for g in m.graphs.values())


def run_pipeline(module: Module, opts: PipelineOptions = PipelineOptions()) -> tuple[Module, str]:
    from ..printer import print_module
    from ..verify import verify

    _register_default_passes()
    known = {p.name for p in PASSES}
    unknown = [d for d in (*opts.disabled, *opts.print_after) if d not in known]
    if unknown:
        from ..cli import UsageError

        raise UsageError(f"unknown pass {', '.join(unknown)} (passes: {', '.join(sorted(known)) or 'none'})")
    log: list[str] = []
    for p in PASSES:
        if p.level > opts.level or p.name in opts.disabled:
            continue
        before = _count(module)
        res = p.run(module)
        module = res.module
        if opts.verify:
            verify(module)
        if opts.report:
            log.append(f"pass {p.name}: {before} -> {_count(module)} nodes")
            log += [f"  rewrote: {c}" for c in res.changed]
            log += [f"  skipped: {s}" for s in res.skipped]
        if opts.print_after_all or p.name in opts.print_after:
            log.append(f"// ----- IR after {p.name} -----")
            log.append(print_module(module).rstrip())
    return module, "\n".join(log)
