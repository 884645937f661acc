"""Models as blocks: a model defined in one file, imported and called in another (`x -> BertBase(layers=2)`). Its
`input` statements become the block's tensor parameters (in order), its `output`s its results (in order), and its
`train` section is the caller's business, so it is dropped. When called, each `input` checks the tensor it is
given against its declaration and binds the declaration's symbolic dims to the caller's sizes."""
from __future__ import annotations

import dataclasses

from .. import ast as A
from ..attrs import short
from ..diagnostics import Note
from ..hyper import HInt, expr_name
from ..symbolic import Sym
from ..types import TensorType
from .values import Scope, Tensor


def model_as_block(d: A.Def) -> A.Def:
    """The block a model is when another spec calls it (kind stays "model": its inputs bind, not declare)."""
    inputs = [s for s in d.body if isinstance(s, A.InputStmt)]
    outputs = [s for s in d.body if isinstance(s, A.OutputStmt)]
    params = (*d.params, *(A.Param(s.span, s.name, "tensor", None) for s in inputs))
    body = tuple(s for s in d.body if not isinstance(s, A.Train))
    ret = A.Return(d.span, tuple(A.Name(s.span, s.name) for s in outputs))
    return dataclasses.replace(d, params=params, body=(*body, ret))


class ModelCallMixin:
    """`input` and `output` of a model elaborated as a block."""

    def bind_model_input(self, s: A.InputStmt, scope: Scope, b) -> None:
        given = scope.get(s.name)
        if not isinstance(given, Tensor) or not isinstance(given.type, TensorType):
            raise self.fail("E0104", f"model input {s.name!r} needs a tensor", s.span)
        t = given.type
        note = [Note(given.span, f"{s.name} ({t}) comes from here")]
        if t.dtype != s.dtype or t.rank != len(s.dims):
            want = f"{s.dtype}[{', '.join(str(d.value) for d in s.dims)}]"
            raise self.fail("E0302" if t.dtype != s.dtype else "E0303",
                            f"model input {s.name!r} is declared {want}, got {t}", s.span, notes=note)
        for d, actual in zip(s.dims, t.shape):
            want = d.value if isinstance(d.value, int) else scope.get(d.value)
            if isinstance(want, (int, Sym)) and not isinstance(want, bool):
                if want != actual:
                    raise self.fail("E0301", f"model input {s.name!r}: dim {d.value} is {short(want)}, "
                                    f"got {actual}", d.span, notes=note)
            else:
                scope[d.value] = actual  # the model's symbolic dim is the caller's size
        scope[s.name] = self.name_input_sizes(s, given, b)
        for c in s.constraints:
            bound = self.ev(c.bound, scope, b)
            if not isinstance(bound, int) or isinstance(bound, bool):
                continue  # reported when the model itself is checked
            bound -= 1 if c.op == "<" else 0
            dim = scope.get(c.sym)
            if isinstance(dim, int):
                if dim > bound:
                    raise self.fail("E0304", f"model input {s.name!r}: {c.sym} = {dim} exceeds its bound {bound}",
                                    c.span, notes=note)
            elif isinstance(dim, Sym) and str(dim) in dim.symbols():
                # the caller's symbol inherits the bound (the tighter one wins)
                name = str(dim)
                if name not in self.constraints or self.constraints[name][0] > bound:
                    self.constraints[name] = (bound, c.span)

    def name_input_sizes(self, s: A.InputStmt, given: Tensor, b) -> Tensor:
        """The block input's static sizes named as the declaration names them (`f32[B, n_mels, frames]`: its class
        takes `n_mels`, not `features_dim1`), where a dim is one of the model's hyper-parameters."""
        g = b.graph
        if given.node not in g or g[given.node].kind != "input" or g[given.node].type != given.type:
            return given
        shape = [HInt(int(a), expr_name(d.value)) if isinstance(d.value, str) and d.value in g.hparams
                 and isinstance(a, HInt) else a for d, a in zip(s.dims, given.type.shape)]
        if all(getattr(x, "expr", None) == getattr(y, "expr", None) for x, y in zip(shape, given.type.shape)):
            return given  # (the values are the same: only the names can differ)
        t = given.type.with_shape(shape)
        g.replace(g[given.node].model_copy(update={"type": t}))
        return dataclasses.replace(given, type=t)
