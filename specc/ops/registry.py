"""The op registry: one entry per op, holding everything every part of specc needs to know about it.

An entry is data (JAX-style rule tables): the attribute schema (pydantic), the shape/dtype rule, the
parameter and cost rules, and the per-backend rules (PyTorch emitter, TVM lowering, NumPy reference) that
later parts register on the same entry. Adding an op touches one file in ``specc/ops/``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict

from ..diagnostics import ShapeError
from ..symbolic import Dim
from ..types import TensorType, Type


class Attrs(BaseModel):
    """Base of every op's attribute schema: frozen, typo-proof (unknown keys are errors)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


class NoAttrs(Attrs):
    pass


# Categories as sets, not `op == ...` chains (tinygrad style).
ELEMENTWISE = "elementwise"
ACTIVATION = "activation"
REDUCTION = "reduction"
SHAPE = "shape"
LAYER = "layer"  # owns parameters


@dataclass
class OpDef:
    name: str
    attrs: type[Attrs]
    infer: Callable[[list[TensorType], Any], Type]
    positional: tuple[str, ...] = ()
    arity: tuple[int, int | None] = (1, 1)  # (min, max) tensor inputs; max None = variadic
    params: Callable[[list[TensorType], Any], dict[str, tuple[Dim, ...]]] | None = None
    buffers: Callable[[list[TensorType], Any], dict[str, tuple[Dim, ...]]] | None = None
    macs: Callable[[list[TensorType], Type, Any], Dim] | None = None
    categories: frozenset[str] = frozenset()
    doc: str = ""
    # Backend rules, registered next to the op by the backend modules (see specc/ops/*.py):
    torch: Any = None  # TorchRule: how the emitted PyTorch module builds and calls this op
    tvm: Callable | None = None  # (ctx, node, args) -> relax expr
    numpy: Callable | None = None  # reference implementation for differential tests
    extra: dict[str, Any] = field(default_factory=dict)
    # An op may take blocks as arguments (moe's experts): ``block_inputs(in_types)`` gives the input types a block
    # argument is specialised for; the elaborator stores the specialised graph's name in the attribute, and
    # ``subgraphs(attrs)`` says which graphs the attributes name and how often each is instantiated and run.
    block_inputs: Callable[[list[TensorType]], list[TensorType]] | None = None
    subgraphs: Callable[[Any], tuple["GraphUse", ...]] | None = None

    def param_shapes(self, ins: list[TensorType], a: Any) -> dict[str, tuple[Dim, ...]]:
        return self.params(ins, a) if self.params else {}

    def buffer_shapes(self, ins: list[TensorType], a: Any) -> dict[str, tuple[Dim, ...]]:
        return self.buffers(ins, a) if self.buffers else {}

    def cost(self, ins: list[TensorType], out: Type, a: Any) -> Dim:
        return self.macs(ins, out, a) if self.macs else 0

    def graph_uses(self, a: Any) -> tuple["GraphUse", ...]:
        return self.subgraphs(a) if self.subgraphs else ()


@dataclass(frozen=True)
class GraphUse:
    """A graph named by an op's attributes: ``count`` instances own parameters, ``active`` of them process any one
    token (a top-2 router over 8 experts: count 8, active 2). Summary costs and active parameters scale by
    ``active``, total parameters by ``count``."""

    role: str
    graph: str
    count: int
    active: int


REGISTRY: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    if op.name in REGISTRY:
        raise RuntimeError(f"op {op.name!r} registered twice")
    REGISTRY[op.name] = op
    return op


def get(name: str) -> OpDef | None:
    _load()
    return REGISTRY.get(name)


def all_ops() -> dict[str, OpDef]:
    _load()
    return REGISTRY


_loaded = False


def _load() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        import importlib
        import pkgutil
        from pathlib import Path

        # every module in specc/ops is an op family; sorted so registration order is deterministic
        for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name):
            if info.name not in ("registry", "context", "torch_rule"):
                importlib.import_module(f"{__package__}.{info.name}")


# ---- helpers shared by shape rules --------------------------------------------------------------------------

def expect_rank(t: TensorType, ranks: tuple[int, ...], what: str, operand: int = 0) -> None:
    if t.rank not in ranks:
        want = " or ".join(str(r) for r in ranks)
        raise ShapeError(f"{what} expects a rank-{want} input, got {t}", "E0303", operand)


def expect_float(t: TensorType, what: str, operand: int = 0) -> None:
    from ..types import FLOAT_DTYPES

    if t.dtype not in FLOAT_DTYPES:
        raise ShapeError(f"{what} expects a floating-point input, got {t.dtype}", "E0302", operand)


def pair(v: int | tuple[int, ...], n: int = 2) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def numel(shape) -> Dim:
    out: Dim = 1
    for d in shape:
        out = out * d
    return out
