"""Elementwise selection with broadcasting: maximum / minimum (of two tensors or a tensor and a number),
where(cond, x, y) and masked_fill(x, mask, value)."""
from __future__ import annotations

from ..diagnostics import ShapeError
from ..types import FLOAT_DTYPES, TensorType
from .elementwise import BinaryAttrs, _binary_infer, broadcast
from .registry import ELEMENTWISE, Attrs, Example, OpDef, register
from .torch_rule import TorchRule, pyval

_NO_MACS = {"macs": "comparisons only"}


def _minmax_call(fn: str):
    def call(args, a: BinaryAttrs, ins) -> str:
        if len(args) == 1:
            return f"{fn}({args[0]}, torch.tensor({pyval(a.scalar)}, dtype={args[0]}.dtype))"
        return f"{fn}({args[0]}, {args[1]})"
    return call


def _minmax_numpy(fn: str):
    def ref(xs, a: BinaryAttrs, params):
        import numpy as np

        other = xs[1] if len(xs) > 1 else np.asarray(a.scalar, dtype=xs[0].dtype)
        return getattr(np, fn)(xs[0], other)
    return ref


def _minmax_infer(name: str):
    tensors = _binary_infer(name)

    def infer(ins: list[TensorType], a: BinaryAttrs) -> TensorType:
        if len(ins) == 1 and isinstance(a.scalar, float) and ins[0].dtype not in FLOAT_DTYPES:
            # the number is taken in the tensor's dtype (torch.minimum takes two tensors): 1.5 would become 1
            raise ShapeError(f"{name} of a {ins[0].dtype} tensor and the float {a.scalar}: give an integer",
                             "E0302", 0)
        return tensors(ins, a) if len(ins) == 2 or a.scalar is None else TensorType(ins[0].dtype, ins[0].shape)
    return infer


for _name in ("maximum", "minimum"):
    register(OpDef(
        name=_name, attrs=BinaryAttrs, positional=("scalar",), arity=(1, 2), infer=_minmax_infer(_name),
        categories=frozenset({ELEMENTWISE}), torch=TorchRule(call=_minmax_call(f"torch.{_name}")),
        numpy=_minmax_numpy(_name),
        examples=(Example(("f32[2, 3, 4]", "f32[3, 1]")), Example(("f32[2, 5]",), {"scalar": 0.25})),
        waive=_NO_MACS,
        doc=f"elementwise {_name} of two tensors (broadcast) or of a tensor and a number",
    ))


class WhereAttrs(Attrs):
    other: float | None = None  # where(cond, x, other=0.0): the value where cond is false is a number


def _where_infer(ins: list[TensorType], a: WhereAttrs) -> TensorType:
    cond, x, *rest = ins
    if cond.dtype != "bool":
        raise ShapeError(f"where's condition must be bool, got {cond.dtype}", "E0302", 0)
    if rest and a.other is not None:
        raise ShapeError("where takes a third tensor or other=, not both", "E0104")
    if not rest and a.other is None:
        raise ShapeError("where needs the value where the condition is false: a third tensor or other=", "E0104")
    shape = broadcast(cond, x)
    if rest:
        if rest[0].dtype != x.dtype:
            raise ShapeError(f"where's branches differ in dtype: {x.dtype} vs {rest[0].dtype}", "E0302", 2)
        shape = broadcast(TensorType(x.dtype, shape), rest[0])
    return TensorType(x.dtype, shape)


def _where_call(args, a: WhereAttrs, ins) -> str:
    other = args[2] if len(args) > 2 else f"torch.tensor({pyval(a.other)}, dtype={args[1]}.dtype)"
    return f"torch.where({args[0]}, {args[1]}, {other})"


def _where_numpy(xs, a: WhereAttrs, params):
    import numpy as np

    other = xs[2] if len(xs) > 2 else np.asarray(a.other, dtype=xs[1].dtype)
    return np.where(xs[0], xs[1], other)


register(OpDef(
    name="where", attrs=WhereAttrs, positional=("other",), arity=(2, 3), infer=_where_infer,
    categories=frozenset({ELEMENTWISE}), torch=TorchRule(call=_where_call), numpy=_where_numpy,
    examples=(Example(("bool[2, 1, 4]", "f32[2, 3, 4]", "f32[4]")), Example(("bool[3, 4]", "f32[3, 4]"), {"other": -1.5})),
    waive=_NO_MACS, doc="x where cond else y (a tensor, or the number other=), with broadcasting.",
))


class MaskedFillAttrs(Attrs):
    value: float  # may be "-inf"


def _masked_fill_infer(ins: list[TensorType], a: MaskedFillAttrs) -> TensorType:
    x, mask = ins
    if mask.dtype != "bool":
        raise ShapeError(f"masked_fill's mask must be bool, got {mask.dtype}", "E0302", 1)
    if broadcast(x, mask) != x.shape:
        raise ShapeError(f"the mask {mask} must broadcast to the input {x}", "E0301", 1)
    return x


def _masked_fill_numpy(xs, a: MaskedFillAttrs, params):
    import numpy as np

    return np.where(xs[1], np.asarray(a.value, dtype=xs[0].dtype), xs[0])


register(OpDef(
    name="masked_fill", attrs=MaskedFillAttrs, positional=("value",), arity=(2, 2), infer=_masked_fill_infer,
    categories=frozenset({ELEMENTWISE}),
    torch=TorchRule(call=lambda args, a, ins: f"{args[0]}.masked_fill({args[1]}, {pyval(a.value)})"),
    numpy=_masked_fill_numpy,
    examples=(Example(("f32[2, 3, 4]", "bool[3, 4]"), {"value": -1e4}),), waive=_NO_MACS,
    doc="x with the positions where mask is true set to value (a number; \"-inf\" allowed).",
))
