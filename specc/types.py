"""Value types of the IR: tensors with symbolic shapes, and tuples of them."""
from __future__ import annotations

from dataclasses import dataclass

from .symbolic import Dim, Sym, dim_str

DTYPES = {
    "f16": "float16", "bf16": "bfloat16", "f32": "float32", "f64": "float64",
    "i8": "int8", "i16": "int16", "i32": "int32", "i64": "int64", "u8": "uint8", "bool": "bool",
}
FLOAT_DTYPES = {"f16", "bf16", "f32", "f64"}
INT_DTYPES = {"i8", "i16", "i32", "i64", "u8"}


@dataclass(frozen=True)
class TensorType:
    dtype: str
    shape: tuple[Dim, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)

    def __str__(self) -> str:
        return f"{self.dtype}[{', '.join(dim_str(d) for d in self.shape)}]"

    def with_shape(self, shape) -> "TensorType":
        return TensorType(self.dtype, tuple(shape))

    def symbols(self) -> set[str]:
        out: set[str] = set()
        for d in self.shape:
            if isinstance(d, Sym):
                out |= d.symbols()
        return out


@dataclass(frozen=True)
class TupleType:
    items: tuple["Type", ...]

    def __str__(self) -> str:
        return "(" + ", ".join(str(t) for t in self.items) + ")"


@dataclass(frozen=True)
class ErrorType:
    """The type of a value whose definition failed; uses of it are not reported again."""

    def __str__(self) -> str:
        return "<error>"


Type = TensorType | TupleType | ErrorType
