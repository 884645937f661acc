"""Built-in compile-time functions of the spec language: channels(), features(), dim(), len(), range(), min(),
max(), int(), float(), sqrt(), and the initialisers (normal(0.02), kaiming_normal(mode="fan_out"), zeros, ...)."""
from __future__ import annotations

import math
import typing

from ..attrs import INITS, Init
from ..hyper import call_of, length
from ..limits import int_digits, over_budget, short_int
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
    return length(pos[0])


def _b_range(el, pos, kw, span, spans, b):
    if not 1 <= len(pos) <= 3 or not all(isinstance(p, int) and not isinstance(p, bool) for p in pos):
        raise el.fail("E0108", "range() takes one to three ints", span)
    if len(pos) == 3 and pos[2] == 0:
        raise el.fail("E0108", "range() step must not be zero", span)
    r = range(*pos)
    n = (r.stop - r.start + r.step + (-1 if r.step > 0 else 1)) // r.step  # len(r) fails beyond sys.maxsize
    if n > el.limits.collection:
        raise over_budget(el.limits, "collection", span, f"range() of {short_int(n)} elements")
    return list(r)


def _b_minmax(fn):
    def f(el, pos, kw, span, spans, b):
        vals = pos[0] if len(pos) == 1 and isinstance(pos[0], (list, tuple)) else pos
        if not vals or not all(isinstance(v, (int, float)) for v in vals):
            raise el.fail("E0108", f"{fn.__name__}() takes numbers", span)
        return call_of(fn.__name__, list(vals), fn(vals))
    return f


def _b_cast(fn):
    def f(el, pos, kw, span, spans, b):
        if len(pos) != 1 or not isinstance(pos[0], (int, float, bool)):
            raise el.fail("E0108", f"{fn.__name__}() takes one number", span)
        if isinstance(pos[0], float) and not math.isfinite(pos[0]):
            raise el.fail("E0108", f"{fn.__name__}() of {pos[0]}: not a finite number", span)
        if fn is float and isinstance(pos[0], int) and int_digits(pos[0]) > 308:
            raise el.fail("E0108", f"float() of {short_int(pos[0])}: too large for a float", span)
        return call_of(fn.__name__, [pos[0]], el.check_size(fn(pos[0]), span))
    return f


def _b_sqrt(el, pos, kw, span, spans, b):
    if len(pos) != 1 or kw or isinstance(pos[0], bool) or not isinstance(pos[0], (int, float)) or pos[0] < 0:
        raise el.fail("E0108", "sqrt() takes one number >= 0", span)
    if isinstance(pos[0], int) and int_digits(pos[0]) > 308:
        raise el.fail("E0108", f"sqrt() of {short_int(pos[0])}: too large for a float", span)
    return call_of("math.sqrt", [pos[0]], math.sqrt(pos[0]))


# ---- initialisers -------------------------------------------------------------------------------------------

_NONLINEARITIES = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                   "conv_transpose3d", "sigmoid", "tanh", "relu", "leaky_relu", "selu")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_init(kind: str, args: dict) -> str | None:
    """What is wrong with an initialiser's arguments, or None."""
    for k, v in args.items():
        if k in ("mode", "nonlinearity"):
            allowed = ("fan_in", "fan_out") if k == "mode" else _NONLINEARITIES
            if v not in allowed:
                return f"{k} must be one of {', '.join(map(repr, allowed))}, got {v!r}"
        elif not _number(v):
            return f"{k} must be a finite number, got {v!r}"
    if kind in ("normal", "trunc_normal") and args["std"] <= 0:
        return f"std must be > 0, got {args['std']!r}"
    if kind in ("xavier_normal", "xavier_uniform") and args.get("gain", 1.0) <= 0:
        return f"gain must be > 0, got {args['gain']!r}"
    if kind in ("trunc_normal", "uniform") and not args.get("a", -2.0) < args.get("b", 2.0):
        return f"needs a < b, got a={args.get('a', -2.0)!r}, b={args.get('b', 2.0)!r}"
    return None


def _b_init(kind: str):
    names, defaults = INITS[kind]

    def f(el, pos, kw, span, spans, b):
        if len(pos) > len(names):
            raise el.fail("E0104", f"{kind}() takes at most {len(names)} argument(s) ({', '.join(names) or 'none'}), "
                          f"got {len(pos)}", span)
        args = dict(zip(names, pos))
        for k, v in kw.items():
            if k not in names:
                raise el.fail("E0103", f"{kind}() has no argument {k!r}" + (f" (it takes {', '.join(names)})"
                                                                            if names else ""), spans.get(k, span))
            if k in args:
                raise el.fail("E0103", f"{kind}(): argument {k!r} given twice", spans.get(k, span))
            args[k] = v
        missing = [k for k in names if k not in args and k not in defaults]
        if missing:
            raise el.fail("E0105", f"{kind}(): missing argument {missing[0]!r}", span,
                          help=f"positional order: {', '.join(names)}")
        args = {k: float(v) if isinstance(v, int) and k not in ("mode", "nonlinearity") and not isinstance(v, bool)
                else v for k, v in args.items()}
        bad = _check_init(kind, args)
        if bad is not None:
            raise el.fail("E0107", f"{kind}(): {bad}", span)
        return Init(kind, tuple((k, args[k]) for k in names if k in args and args[k] != defaults.get(k, ...)))
    return f


# `zeros` and `ones` need no arguments, so a spec may name them without a call (`bias_init=zeros`)
INIT_CONSTANTS = {"zeros": Init("zeros"), "ones": Init("ones")}

BUILTINS = {
    "channels": _b_channels, "features": _b_features, "dim": _b_dim, "len": _b_len, "range": _b_range,
    "min": _b_minmax(min), "max": _b_minmax(max), "int": _b_cast(int), "float": _b_cast(float),
    "sqrt": _b_sqrt, **{kind: _b_init(kind) for kind in INITS},
}

