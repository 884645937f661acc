"""Built-in compile-time functions of the spec language: channels(), features(), dim(), len(), range(), min(),
max(), int(), float()."""
from __future__ import annotations

import typing

from ..source import Span
from ..types import TensorType
from .values import Tensor

if typing.TYPE_CHECKING:
    from .core import Elaborator


def _tensor_arg(el: Elaborator, pos: list, i: int, fname: str, span: Span | None) -> TensorType:
    if len(pos) <= i or not isinstance(pos[i], Tensor) or not isinstance(pos[i].type, TensorType):
        raise el.fail("E0108", f"{fname}() needs a tensor argument", span)
    return pos[i].type


def _b_channels(el, pos, kw, span, spans, b):
    t = _tensor_arg(el, pos, 0, "channels", span)
    if t.rank < 2:
        raise el.fail("E0303", f"channels() needs a rank >= 2 tensor, got {t}", span)
    return t.shape[1]


def _b_features(el, pos, kw, span, spans, b):
    return _tensor_arg(el, pos, 0, "features", span).shape[-1]


def _b_dim(el, pos, kw, span, spans, b):
    t = _tensor_arg(el, pos, 0, "dim", span)
    if len(pos) != 2 or not isinstance(pos[1], int):
        raise el.fail("E0104", "dim(x, i) takes a tensor and an int", span)
    if not -t.rank <= pos[1] < t.rank:
        raise el.fail("E0305", f"dim {pos[1]} is out of range for {t}", span)
    return t.shape[pos[1]]


def _b_len(el, pos, kw, span, spans, b):
    if len(pos) != 1 or not isinstance(pos[0], (list, tuple, str)):
        raise el.fail("E0108", "len() takes one list, tuple or string", span)
    return len(pos[0])


def _b_range(el, pos, kw, span, spans, b):
    if not 1 <= len(pos) <= 3 or not all(isinstance(p, int) and not isinstance(p, bool) for p in pos):
        raise el.fail("E0108", "range() takes one to three ints", span)
    if len(range(*pos)) > 100_000:
        raise el.fail("E0107", "range() longer than 100000", span)
    return list(range(*pos))


def _b_minmax(fn):
    def f(el, pos, kw, span, spans, b):
        vals = pos[0] if len(pos) == 1 and isinstance(pos[0], (list, tuple)) else pos
        if not vals or not all(isinstance(v, (int, float)) for v in vals):
            raise el.fail("E0108", f"{fn.__name__}() takes numbers", span)
        return fn(vals)
    return f


def _b_cast(fn):
    def f(el, pos, kw, span, spans, b):
        if len(pos) != 1 or not isinstance(pos[0], (int, float, bool)):
            raise el.fail("E0108", f"{fn.__name__}() takes one number", span)
        return fn(pos[0])
    return f


BUILTINS = {
    "channels": _b_channels, "features": _b_features, "dim": _b_dim, "len": _b_len, "range": _b_range,
    "min": _b_minmax(min), "max": _b_minmax(max), "int": _b_cast(int), "float": _b_cast(float),
}

