"""AST -> IR. Evaluates compile-time code (hyper-parameters, if/for, arithmetic), specialises blocks, infers every
shape through the op registry, and collects located diagnostics for all independent errors.

Values in scope are either compile-time data (int, float, bool, str, None, tuple, list, symbolic dims) or
``Tensor`` references to IR nodes. A value that failed to elaborate is ``POISON``; using it reports nothing more,
so one mistake yields one error, not a cascade.

The package, by seam:
  values.py      the values the interpreter handles (Tensor, BlockValue, LayerInstance, POISON), GraphBuilder, helpers
  syntax.py      questions about the AST (names assigned / read by a statement)
  builtins.py    compile-time functions (channels(), range(), ...)
  loader.py      reading files, imports, registering blocks
  core.py        the Elaborator: state, errors, the model entry point
  statements.py  statements;  expressions.py  expressions;  calls.py  op/layer calls;  blocks.py  block calls
  repeat.py      `repeat N` folding
"""
from ..attrs import BlockValue
from ..attrs import to_attr as _to_attr
from .builtins import BUILTINS
from .core import Elaborator
from .loader import STDLIB
from .values import (
    MAX_BLOCK_DEPTH,
    MAX_UNROLL,
    POISON,
    GraphBuilder,
    LayerInstance,
    Scope,
    Tensor,
)

__all__ = ["BUILTINS", "MAX_BLOCK_DEPTH", "MAX_UNROLL", "POISON", "STDLIB", "BlockValue", "Elaborator",
           "GraphBuilder", "LayerInstance", "Scope", "Tensor", "_to_attr"]
