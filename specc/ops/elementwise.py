"""Binary arithmetic with NumPy broadcasting (+ - * / **, with a tensor or a scalar) and matmul (@)."""
from __future__ import annotations

from ..diagnostics import ShapeError
from ..hyper import prefer_computed
from ..symbolic import Dim
from ..types import FLOAT_DTYPES, TensorType
from .registry import ELEMENTWISE, NO_MACS, Attrs, Example, OpDef, expect_rank, numel, register
from .torch_rule import TorchRule, pyval


class BinaryAttrs(Attrs):
    scalar: float | int | None = None  # `x * 0.5`: the other operand is a compile-time number
    reverse: bool = False  # `1 - x`: the scalar is on the left


def broadcast(a: TensorType, b: TensorType) -> tuple[Dim, ...]:
    out: list[Dim] = []
    for i in range(1, max(a.rank, b.rank) + 1):
        da = a.shape[-i] if i <= a.rank else 1
        db = b.shape[-i] if i <= b.rank else 1
        if da == db:
            out.append(prefer_computed(da, db))
        elif db == 1:
            out.append(da)
        elif da == 1:
            out.append(db)
        else:
            raise ShapeError(f"shapes {a} and {b} do not broadcast: dim -{i} is {da} vs {db}")
    return tuple(reversed(out))


def _result_dtype(a: TensorType, b: TensorType) -> str:
    if a.dtype == b.dtype:
        return a.dtype
    if a.dtype in FLOAT_DTYPES and b.dtype not in FLOAT_DTYPES:
        return a.dtype
    if b.dtype in FLOAT_DTYPES and a.dtype not in FLOAT_DTYPES:
        return b.dtype
    raise ShapeError(f"dtypes differ: {a.dtype} vs {b.dtype}", "E0302", 1)


def _binary_infer(name: str):
    def infer(ins: list[TensorType], a: BinaryAttrs) -> TensorType:
        if len(ins) == 1:
            if a.scalar is None:
                raise ShapeError("binary op needs two tensors or a tensor and a scalar", "E0104")
            return TensorType(_promote(name, ins[0].dtype, a.scalar), ins[0].shape)
        x, y = ins
        return TensorType(_promote(name, _result_dtype(x, y), None), broadcast(x, y))
    return infer


def _promote(name: str, dtype: str, scalar) -> str:
    """PyTorch's type promotion for an integer or bool tensor: a float scalar or true division gives the default
    float dtype (f32); a bool tensor with an int scalar gives i64."""
    if dtype in FLOAT_DTYPES:
        return dtype
    if name == "div" or isinstance(scalar, float):
        return "f32"
    if dtype == "bool" and isinstance(scalar, int) and not isinstance(scalar, bool):
        return "i64"
    return dtype


def _binary_call(sym: str):
    def call(args, a: BinaryAttrs, ins) -> str:
        if len(args) == 1:
            s = pyval(a.scalar)
            return f"{s} {sym} {args[0]}" if a.reverse else f"{args[0]} {sym} {s}"
        return f"{args[0]} {sym} {args[1]}"
    return call


def _np_binary(fn: str):
    def ref(xs, a: BinaryAttrs, params):
        import numpy as np

        f = getattr(np, fn)
        x = xs[0].astype(np.float64)
        y = xs[1].astype(np.float64) if len(xs) == 2 else a.scalar
        with np.errstate(invalid="ignore", divide="ignore"):
            return f(y, x) if a.reverse else f(x, y)
    return ref


BINARY_EXAMPLES = (
    Example(("f32[2, 3, 4]", "f32[3, 1]")),  # broadcasting
    Example(("f32[2, 3]",), {"scalar": 2.5}),
    Example(("f32[2, 3]",), {"scalar": 2, "reverse": True}),
)

# fresh: backward reads the operands, not the result (pow's exponent gradient reads the result)
for _name, _sym, _fresh, _np in (("add", "+", True, "add"), ("sub", "-", True, "subtract"),
                                 ("mul", "*", True, "multiply"), ("div", "/", True, "true_divide"),
                                 ("pow", "**", False, "power")):
    register(OpDef(
        name=_name, attrs=BinaryAttrs, arity=(1, 2), infer=_binary_infer(_name),
        categories=frozenset({ELEMENTWISE}), torch=TorchRule(call=_binary_call(_sym), fresh=_fresh),
        doc=f"elementwise `{_sym}` with broadcasting",
        numpy=_np_binary(_np), examples=BINARY_EXAMPLES, waive={"macs": NO_MACS},
    ))


class NoAttrs(Attrs):
    pass


register(OpDef(
    name="neg", attrs=NoAttrs, infer=lambda ins, a: ins[0], categories=frozenset({ELEMENTWISE}),
    torch=TorchRule(call=lambda args, a, ins: f"-{args[0]}"), doc="-x",
    numpy=lambda xs, a, params: -xs[0], examples=(Example(("f32[2, 3]",)),), waive={"macs": NO_MACS},
))


def _matmul_infer(ins: list[TensorType], a) -> TensorType:
    x, y = ins
    expect_rank(x, tuple(range(1, 9)), "matmul")
    if x.dtype != y.dtype:
        raise ShapeError(f"matmul operands differ in dtype: {x.dtype} vs {y.dtype}", "E0302", 1)
    xs = x.shape if x.rank > 1 else (1, *x.shape)
    ys = y.shape if y.rank > 1 else (*y.shape, 1)
    if xs[-1] != ys[-2]:
        raise ShapeError(f"matmul inner dims differ: {x} @ {y} ({xs[-1]} vs {ys[-2]})", "E0301", 1)
    batch = broadcast(TensorType(x.dtype, xs[:-2]), TensorType(y.dtype, ys[:-2]))
    shape = (*batch, *([xs[-2]] if x.rank > 1 else []), *([ys[-1]] if y.rank > 1 else []))
    return TensorType(x.dtype, shape)


def _matmul_macs(ins, out, a) -> Dim:
    x = ins[0]
    return numel(out.shape) * x.shape[-1]


register(OpDef(
    name="matmul", attrs=NoAttrs, arity=(2, 2), infer=_matmul_infer, macs=_matmul_macs,
    torch=TorchRule(call=lambda args, a, ins: f"{args[0]} @ {args[1]}"), doc="matrix product `@` with batching",
    numpy=lambda xs, a, params: xs[0].astype("float64") @ xs[1].astype("float64"),
    examples=(Example(("f32[3, 4]", "f32[4, 5]")), Example(("f32[2, 3, 4]", "f32[4, 2]")),
              Example(("f32[2, 1, 3, 4]", "f32[3, 4, 2]")), Example(("f32[4]", "f32[2, 4, 3]"))),
))
