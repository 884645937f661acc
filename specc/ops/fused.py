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

from pydantic import PositiveInt

from ..diagnostics import ShapeError
from ..types import FLOAT_DTYPES, TensorType, TupleType
from .registry import LAYER, Attrs, OpDef, get, register
from .torch_rule import TorchRule, pyval

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
    return get(a.base).attrs(**dict(a.base_attrs))


def bn_attrs(a: FusedAttrs):
    return get("batchnorm").attrs(**dict(a.bn_attrs))


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


_DERIVED = '''
def derived(owner: nn.Module, tag: str, make, *sources):
    """Weights computed from parameters (a folded batchnorm, concatenated projections). While autograd records they
    are recomputed every call (gradients flow to the real parameters); otherwise cached on `owner` until a source
    tensor changes: new storage, or an in-place update (load_state_dict, optimizer steps, `with torch.no_grad():
    p.copy_(...)`). Writes through `p.data` are not versioned by PyTorch: call clear_derived(model) after those."""
    if torch.is_grad_enabled() or torch.compiler.is_compiling():  # a compiled graph computes them itself
        return make()
    key = tuple((t.data_ptr(), t._version, t.dtype) for t in sources if t is not None)
    cache = owner.__dict__.setdefault("_specc_derived", {})
    if tag not in cache or cache[tag][0] != key:
        cache[tag] = (key, make())
    return cache[tag][1]


def clear_derived(model: nn.Module) -> None:
    """Forget every cached derived weight in `model` (needed only after writes through `.data`)."""
    for m in model.modules():
        m.__dict__.pop("_specc_derived", None)
'''

_FUSED = '''
def fold_batchnorm(layer: nn.Module, bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """Conv/linear weights with an eval-mode batchnorm folded in: w * s and (b - mean) * s + beta per output
    channel, s = gamma / sqrt(var + eps)."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    weight = layer.weight * scale.reshape(-1, *([1] * (layer.weight.dim() - 1)))
    bias = -bn.running_mean * scale if layer.bias is None else (layer.bias - bn.running_mean) * scale
    return weight, bias if bn.bias is None else bias + bn.bias


# in place where PyTorch has an in-place form (the epilogue runs on the layer's fresh output, see fused_layer)
ACTIVATIONS = {
    "relu": lambda y: F.relu(y, inplace=True),
    "silu": lambda y: F.silu(y, inplace=True),
    "tanh": lambda y: y.tanh_(),
    "sigmoid": lambda y: y.sigmoid_(),
    "gelu": lambda y: F.gelu(y),
    "gelu_tanh": lambda y: F.gelu(y, approximate="tanh"),
}


def fused_layer(x, layer: nn.Module, bn: nn.Module | None, epilogue: tuple[str, ...], *residuals):
    """layer(x), then bn (folded into the layer's weights unless training), then the epilogue steps: "add" adds
    the next residual, other steps are activations, all in place on the layer's fresh output."""
    if bn is None:
        y = layer(x)
    elif bn.training:
        y = bn(layer(x))
    else:
        sources = (layer.weight, layer.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var)
        weight, bias = derived(bn, "folded", lambda: fold_batchnorm(layer, bn), *sources)
        y = F.linear(x, weight, bias) if isinstance(layer, nn.Linear) else layer._conv_forward(x, weight, bias)
    # y is always a fresh tensor that no autograd node saved (conv/linear save their input, batchnorm its input),
    # so the residual add and the activation can overwrite it, as torchvision's blocks do
    rest = iter(residuals)
    for step in epilogue:
        y = y.add_(next(rest)) if step == "add" else ACTIVATIONS[step](y)
    return y
'''

register(OpDef(
    name="fused", attrs=FusedAttrs, arity=(1, None), infer=_fused_infer, params=_fused_params,
    buffers=_fused_buffers, macs=lambda ins, out, a: get(a.base).cost(ins[:1], out, base_attrs(a)),
    categories=frozenset({LAYER}),
    torch=TorchRule(module=_fused_modules, call=_fused_call, support=(_DERIVED, _FUSED)),
    doc="conv/linear (+ batchnorm) + epilogue (residual adds, activations) as one node; made by the fusion passes",
))


class MergedLinearAttrs(Attrs):
    layers: tuple[str, ...]  # the linears merged, in output order; each keeps its own weight/bias
    out_features: tuple[PositiveInt, ...]
    bias: bool = True


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


_MERGED = '''
def merged_linear(x: torch.Tensor, *layers: nn.Linear) -> tuple[torch.Tensor, ...]:
    """Several nn.Linear of the same input as one matmul on their concatenated weights, split back per layer."""
    def cat():
        bias = None if layers[0].bias is None else torch.cat([m.bias for m in layers])
        return torch.cat([m.weight for m in layers]), bias

    sources = [t for m in layers for t in (m.weight, m.bias)]
    weight, bias = derived(layers[0], "merged", cat, *sources)
    return F.linear(x, weight, bias).split([m.out_features for m in layers], dim=-1)
'''

register(OpDef(
    name="merged_linear", attrs=MergedLinearAttrs, infer=_merged_infer, params=_merged_params, macs=_merged_macs,
    categories=frozenset({LAYER}),
    torch=TorchRule(
        module=lambda ins, a: {n: f"nn.Linear({ins[0].shape[-1]}, {o}{'' if a.bias else ', bias=False'})"
                               for n, o in zip(a.layers, a.out_features)},
        call=lambda args, a, ins: f"merged_linear({', '.join(args)})", support=(_DERIVED, _MERGED)),
    doc="sibling linears of one input (q/k/v) as one matmul + split; made by merge_projections",
))
