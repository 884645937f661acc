"""The pass pipeline: one list literal, run in order. Each pass is a function Module -> PassResult that returns
a NEW module (it never edits the one it was given), so pass order is explicit and `--print-after` is honest.

The verifier runs after every pass in tests and with --debug.

Levels (one default, DEFAULT_LEVEL, for every entry point: the API, `specc compile`, training scripts, TVM):
  -O0  no rewrites (only `infer`, which re-checks every shape);
  -O1  (default) exact rewrites that keep every layer called through its own module: constant folding, cse, dce,
       hand-written layernorm/attention recognised. Emitted PyTorch stays a plain module tree: forward hooks,
       torchinfo, PEFT/LoRA, torch.ao quantization and pruning see every layer.
  -O2  adds eager-mode fusion that calls layers' weights directly (merged q/k/v matmul, batchnorm folded into the
       conv, conv/linear + residual + activation in one call). Same state_dict and numerics, a few percent faster
       in eager PyTorch, but forward hooks and parameter wrappers (LoRA, parametrizations) on the fused layers are
       BYPASSED. Passes that do this say `keeps_modules=False`.
A backend without modules to keep (TVM) passes `keep_modules=False`: it gets those fusions at -O1 too."""
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
    # False: the rewrite calls a layer's weights directly instead of its module (hooks on it no longer fire), so for
    # a backend that keeps modules it runs only at -O2.
    keeps_modules: bool = True


DEFAULT_LEVEL = 1
MAX_LEVEL = 2
MODULE_LEVEL = 2  # the level from which passes that bypass layer modules run for a backend that keeps modules


@dataclass(frozen=True)
class PipelineOptions:
    level: int = DEFAULT_LEVEL
    disabled: tuple[str, ...] = ()
    print_after_all: bool = False
    print_after: tuple[str, ...] = ()
    report: bool = False
    verify: bool = False
    # Assume the emitted module only ever runs in eval mode: lets fold_constants drop dropout. Off by default, so
    # that -O1 output trains exactly like -O0 (every other rewrite is exact in both modes, see fuse_batchnorm).
    inference: bool = False
    # The output must call every layer through its module (emitted PyTorch); False for backends without modules.
    keep_modules: bool = True

    def enables(self, p: "Pass") -> bool:
        if p.name in self.disabled or p.level > self.level:
            return False
        return p.keeps_modules or not self.keep_modules or self.level >= MODULE_LEVEL


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
        if not opts.enables(p):
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


def optimize(module: Module, level: int | None = None, disabled: tuple[str, ...] = (), *,
             keep_modules: bool = True, inference: bool = False) -> Module:
    """The module a backend compiles at -O`level` (None: DEFAULT_LEVEL). Every backend entry point goes through
    here, so the API, `specc compile`, training scripts and TVM agree on what a level means."""
    opts = PipelineOptions(level=DEFAULT_LEVEL if level is None else level, disabled=tuple(disabled),
                           keep_modules=keep_modules, inference=inference)
    return run_pipeline(module, opts)[0]
