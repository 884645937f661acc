"""TVM lowering rules, one module per op family (mirroring specc/ops/). Each rule is registered onto the op
registry entry's ``tvm`` field:

    @lowering("relu")
    def _relu(ctx, x):                 # ctx: lower.LowerCtx; x: the input's Relax value
        return relax.op.nn.relu(x)

A rule returns a Relax expression (the walker binds it) or, for ops with tuple results, a Relax tuple value.
``check=fn(node, in_types, target) -> reason | None`` says when a target cannot lower a node; the walker reports
every such node at once (E0501) before it lowers anything.

Only the TVM backend imports this package (it imports TVM).
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable

import tvm
from tvm import relax

from ....ops import registry

RULES: dict[str, Callable] = {}
_loaded = False


def lowering(*names: str, check: Callable | None = None):
    """Register the decorated function as the TVM lowering of ops `names`."""
    def deco(fn: Callable) -> Callable:
        fn.check = check
        for name in names:
            if name in RULES:
                raise RuntimeError(f"TVM rule for {name!r} registered twice")
            RULES[name] = fn
        return fn
    return deco


def load_rules() -> None:
    """Import every rule module (sorted, so registration is deterministic) and attach the rules to the registry."""
    global _loaded
    if not _loaded:
        _loaded = True
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
            importlib.import_module(f"{__name__}.{info.name}")
    for name, fn in RULES.items():
        op = registry.get(name)
        if op is not None:
            op.tvm = fn


# ---- helpers shared by rules -----------------------------------------------------------------------------------

def axis(d: int, rank: int) -> int:
    return d % rank if rank else 0


_PERMUTE = tvm.ir.Op.get("relax.permute_dims")


def permute(ctx, x: relax.Expr, axes: list[int]) -> relax.Expr:
    """permute_dims that folds into a permute producing `x` (so permute-sdpa-permute chains cancel out)."""
    axes = [int(a) for a in axes]
    if axes == list(range(len(axes))):
        return x
    bound = ctx.binding(x)
    if isinstance(bound, relax.Call) and bound.op.same_as(_PERMUTE) and bound.attrs.axes is not None:
        inner = [int(a) for a in bound.attrs.axes]
        composed = [inner[a] for a in axes]
        src = bound.args[0]
        return src if composed == list(range(len(composed))) else ctx.emit(relax.op.permute_dims(src, composed))
    return ctx.emit(relax.op.permute_dims(x, axes))


def with_batch(ctx, x: relax.Expr, rank: int, nd: int, fn: Callable[[relax.Expr], relax.Expr]) -> relax.Expr:
    """Run a [N, C, *spatial] op on an unbatched [C, *spatial] input too (PyTorch accepts both)."""
    if rank == nd + 2:
        return fn(x)
    y = fn(ctx.emit(relax.op.expand_dims(x, 0)))
    return relax.op.squeeze(ctx.emit(y), [0])
