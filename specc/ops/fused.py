"""Fused ops, made by the fusion passes (specc/passes/fuse_*.py, merge_projections.py), never written in specs.

  fused          a conv1d/conv2d/linear layer, optionally a batchnorm after it, then an epilogue of steps
                 ("add" reads the next extra input, a residual; activations by name) as one node and one call.
  merged_linear  sibling linears of one input (q/k/v projections) as one matmul, returning a tuple.

Both keep every layer they absorbed under its own name: the emitted module has the same submodules and the same
state_dict keys as the unfused one, only `forward` differs. Weights that the fused call derives from the real ones
(the batchnorm folded into the conv in eval mode, the concatenated q/k/v matrix) are computed from those, and cached
while autograd is off, until a source tensor changes (its version counter or storage moves)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import PositiveInt, ValidationError, field_validator

from ..diagnostics import ShapeError
from ..types import FLOAT_DTYPES, TensorType, TupleType
from .registry import LAYER, Attrs, Example, OpDef, get, register
from .torch_rule import TorchRule, pyval, support_text

BASES = ("conv1d", "conv2d", "linear")
# epilogue activation steps: IR op (and its attrs) -> step name in the emitted call
ACTIVATIONS = {"relu": "relu", "silu": "silu", "tanh": "tanh", "sigmoid": "sigmoid", "gelu": "gelu",
               "gelu_tanh": "gelu_tanh"}
STEPS = ("add", *ACTIVATIONS.values())


class FusedAttrs(Attrs):
    base: Literal["conv1d", "conv2d", "linear"]
    layer: str  # the base layer's name: its parameters keep this prefix
    base_attrs: tuple[tuple[str, Any], ...]  # the base op's attributes (non-default ones), as the IR printed them
    bn: str | None = None  # a batchnorm after the layer (folded into its weights in eval mode)
    bn_attrs: tuple[tuple[str, Any], ...] = ()
    epilogue: tuple[Literal[STEPS], ...] = ()  # type: ignore[valid-type]


def base_attrs(a: FusedAttrs):
    return _sub_attrs(a.base, a.base_attrs)


def bn_attrs(a: FusedAttrs):
    return _sub_attrs("batchnorm", a.bn_attrs)


def _sub_attrs(op: str, items: tuple):
    """The attributes of an absorbed op; a spec that writes `fused(...)` itself may give any tuple here."""
    try:
        return get(op).attrs(**dict(items))
    except (ValidationError, ValueError, TypeError) as e:
        first = e.errors()[0]["msg"] if isinstance(e, ValidationError) else str(e)
        raise ShapeError(f"bad attributes for the absorbed {op}: {first}", "E0305") from None


def _fused_infer(ins: list[TensorType], a: FusedAttrs) -> TensorType:
    y = get(a.base).infer(ins[:1], base_attrs(a))
    if a.bn is not None:
        get("batchnorm").infer([y], bn_attrs(a))
    adds = a.epilogue.count("add")
    if len(ins) != 1 + adds:
        raise ShapeError(f"fused: the epilogue adds {adds} residual(s), got {len(ins) - 1} extra input(s)", "E0104")
    for i, r in enumerate(ins[1:], 1):
        if r != y:
            raise ShapeError(f"fused: residual {r} must have the layer's output type {y}", "E0301", i)
    if y.dtype not in FLOAT_DTYPES:
        raise ShapeError(f"fused expects floating-point values, got {y.dtype}", "E0302")
    return y


def _prefixed(layer: str, shapes: dict) -> dict:
    return {f"{layer}.{k}": v for k, v in shapes.items()}


def _fused_params(ins, a: FusedAttrs) -> dict:
    out = _prefixed(a.layer, get(a.base).param_shapes(ins[:1], base_attrs(a)))
    if a.bn is not None:
        y = get(a.base).infer(ins[:1], base_attrs(a))
        out.update(_prefixed(a.bn, get("batchnorm").param_shapes([y], bn_attrs(a))))
    return out


def _fused_buffers(ins, a: FusedAttrs) -> dict:
    if a.bn is None:
        return {}
    y = get(a.base).infer(ins[:1], base_attrs(a))
    return _prefixed(a.bn, get("batchnorm").buffer_shapes([y], bn_attrs(a)))


def _fused_modules(ins, a: FusedAttrs) -> dict[str, str]:
    base = get(a.base)
    out = {a.layer: base.torch.module(ins[:1], base_attrs(a))}
    if a.bn is not None:
        y = base.infer(ins[:1], base_attrs(a))
        out[a.bn] = get("batchnorm").torch.module([y], bn_attrs(a))
    return out


def _fused_call(args: list[str], a: FusedAttrs, ins) -> str:
    n = len(ins)
    x, residuals, layers = args[0], args[1:n], args[n:]
    bn = layers[1] if a.bn is not None else "None"
    tail = "".join(f", {r}" for r in residuals)
    return f"fused_layer({x}, {layers[0]}, {bn}, {pyval(a.epilogue)}{tail})"


_DERIVED = support_text("derived")

_FUSED = support_text("fused_layer")

def _sub(params: dict, layer: str) -> dict:
    return {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith(layer + ".")}


def _np_fused(xs, a: FusedAttrs, p):
    """The unfused ops' own references in a row: base layer, batchnorm (eval), then the epilogue steps."""
    y = get(a.base).numpy(xs[:1], base_attrs(a), _sub(p, a.layer))
    if a.bn is not None:
        y = get("batchnorm").numpy([y], bn_attrs(a), _sub(p, a.bn))
    rest = iter(xs[1:])
    for step in a.epilogue:
        if step == "add":
            y = y + next(rest)
        elif step == "gelu_tanh":
            y = get("gelu").numpy([y], get("gelu").attrs(approximate="tanh"), {})
        else:
            y = get(step).numpy([y], get(step).attrs(), {})
    return y


FUSED_EXAMPLES = (
    Example(("f32[2, 3, 6, 6]", "f32[2, 4, 6, 6]"),
            {"base": "conv2d", "layer": "conv_a", "base_attrs": (("out_channels", 4), ("kernel_size", 3),
                                                                 ("padding", 1), ("bias", False)),
             "bn": "bn_a", "epilogue": ("add", "relu")}),
    Example(("f32[2, 3, 5]",), {"base": "linear", "layer": "fc_b", "base_attrs": (("out_features", 6),),
                                "epilogue": ("gelu_tanh",)}),
    Example(("f32[1, 2, 7]",), {"base": "conv1d", "layer": "conv_c", "base_attrs": (("out_channels", 3),
                                                                                   ("kernel_size", 2)),
                                "bn": "bn_c", "bn_attrs": (("eps", 0.001),), "epilogue": ("silu",)}),
    Example(("f32[4, 5]",), {"base": "linear", "layer": "fc_d", "base_attrs": (("out_features", 3),),
                             "epilogue": ("sigmoid",)}),
)

register(OpDef(
    name="fused", attrs=FusedAttrs, arity=(1, None), infer=_fused_infer, params=_fused_params,
    buffers=_fused_buffers, macs=lambda ins, out, a: get(a.base).cost(ins[:1], out, base_attrs(a)),
    categories=frozenset({LAYER}),
    torch=TorchRule(module=_fused_modules, call=_fused_call, support=(_DERIVED, _FUSED)),
    doc="conv/linear (+ batchnorm) + epilogue (residual adds, activations) as one node; made by the fusion passes",
    numpy=_np_fused, examples=FUSED_EXAMPLES,
))


class MergedLinearAttrs(Attrs):
    layers: tuple[str, ...]  # the linears merged, in output order; each keeps its own weight/bias
    out_features: tuple[PositiveInt, ...]
    bias: bool = True

    @field_validator("layers")
    @classmethod
    def _names(cls, v):
        if len(set(v)) != len(v) or not all(n.isidentifier() for n in v):
            raise ValueError("the merged layers need distinct names (identifiers)")
        return v


def _merged_infer(ins: list[TensorType], a: MergedLinearAttrs) -> TupleType:
    if len(a.layers) != len(a.out_features) or len(a.layers) < 2:
        raise ShapeError("merged_linear needs one out_features per layer, and at least two layers", "E0305")
    parts = [get("linear").infer(ins, get("linear").attrs(out_features=o, bias=a.bias)) for o in a.out_features]
    return TupleType(tuple(parts))


def _merged_params(ins, a: MergedLinearAttrs) -> dict:
    fin = ins[0].shape[-1]
    out = {}
    for name, o in zip(a.layers, a.out_features):
        out[f"{name}.weight"] = (o, fin)
        if a.bias:
            out[f"{name}.bias"] = (o,)
    return out


def _merged_macs(ins, out, a: MergedLinearAttrs):
    return sum(o for o in a.out_features) * ins[0].shape[-1] * _rows(ins[0])


def _rows(t: TensorType):
    n = 1
    for d in t.shape[:-1]:
        n = n * d
    return n


_MERGED = support_text("merged_linear")

def _np_merged(xs, a: MergedLinearAttrs, p):
    x = xs[0].astype("float64")
    return tuple(x @ p[f"{n}.weight"].T + (p[f"{n}.bias"] if a.bias else 0) for n in a.layers)


register(OpDef(
    name="merged_linear", attrs=MergedLinearAttrs, infer=_merged_infer, params=_merged_params, macs=_merged_macs,
    categories=frozenset({LAYER}),
    torch=TorchRule(
        module=lambda ins, a: {n: f"nn.Linear({ins[0].shape[-1]}, {o}{'' if a.bias else ', bias=False'})"
                               for n, o in zip(a.layers, a.out_features)},
        call=lambda args, a, ins: f"merged_linear({', '.join(args)})", support=(_DERIVED, _MERGED)),
    doc="sibling linears of one input (q/k/v) as one matmul + split; made by merge_projections",
    numpy=_np_merged,
    examples=(Example(("f32[2, 3, 4]",), {"layers": ("q", "k", "v"), "out_features": (4, 4, 2)}),
              Example(("f32[5, 3]",), {"layers": ("gate", "up"), "out_features": (6, 6), "bias": False})),
))
