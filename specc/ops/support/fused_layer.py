"""Helper code that specc writes into the model files that use it (read as text by specc/ops/fused.py;
the imports above the first definition are the emitted file's own)."""
import torch
import torch.nn.functional as F
from torch import nn

from .derived import derived


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
    the next residual, other steps are activations, all in place on the layer's fresh output.
    -O2 only: with a batchnorm in eval mode this calls the folded weights directly, so forward hooks and wrappers
    (LoRA, parametrizations, quantization observers) on `layer` and `bn` are bypassed. Compile at -O1 (the default)
    for a module whose every layer is called through itself."""
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
