"""Relax-level helpers shared by the rewrites (rewrite.py, nchwc.py): static shapes and dtypes of expressions, the
op patterns the generated PrimFuncs carry for FuseOps."""
from __future__ import annotations

from tvm import relax, tirx

K_OUT_EWISE_FUSABLE = 4
K_ELEMWISE = 0
K_INJECTIVE = 2
_FUSABLE = {"op_pattern": K_OUT_EWISE_FUSABLE}
_INJ = {"op_pattern": K_INJECTIVE}


def _static_shape(expr):
    """Tuple of python ints / tirx exprs, or None when the shape is unknown."""
    ty = expr.ty if hasattr(expr, "ty") else None
    if ty is None or not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    shape = ty.shape
    if not isinstance(shape, relax.ShapeExpr):
        return None
    out = []
    for s in shape.values:
        out.append(int(s) if isinstance(s, tirx.IntImm) else s)
    return tuple(out)


def _dtype(expr) -> str | None:
    ty = getattr(expr, "ty", None)
    return str(ty.dtype) if isinstance(ty, relax.TensorType) else None


def _same_dim(a, b) -> bool:
    try:
        import tvm_ffi  # pylint: disable=import-outside-toplevel

        return bool(tvm_ffi.structural_equal(a, b))
    except Exception:  # pylint: disable=broad-except
        return a.same_as(b)


def _all_int(xs) -> bool:
    return all(isinstance(x, int) for x in xs)
