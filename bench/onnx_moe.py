"""The emitted MoE layer in a form the ONNX exporter takes, for the onnxruntime peer of the benchmarks.

The emitted `MixtureOfExperts` sizes each expert's run on the host (`counts.tolist()`) and sorts with
`argsort(stable=True)`: the TorchScript exporter has no Sort for that, and tracing would bake one input's run
lengths into the graph. `exportable(model)` returns a copy whose MoE layers route the same way with the same
weights, written with ops that export to dynamic-shape ONNX: per expert, NonZero picks its tokens, Gather feeds
them to the expert, ScatterND (reduction add) combines. Each expert still runs only on its routed tokens, so
onnxruntime does the same work as the emitted layer and as specc's TVM lowering. Capacity limits are not
supported (the benchmarks' MoE layers have none): such a layer is left as it is, and its export fails loudly.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class ExportableMoE(nn.Module):
    """Top-k routing as specc/ops/moe.py (softmax before/after top-k, optional renormalisation, shared experts)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.router, self.experts, self.shared = layer.router, layer.experts, layer.shared
        self.top_k, self.softmax_after, self.renormalize = layer.top_k, layer.softmax_after, layer.renormalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.reshape(-1, x.size(-1))  # [N, d]
        logits = self.router(tokens)
        if self.softmax_after:
            top, chosen = logits.topk(self.top_k, dim=-1)
            weights = top.softmax(-1)
        else:
            weights, chosen = logits.softmax(-1).topk(self.top_k, dim=-1)
            if self.renormalize:
                weights = weights / weights.sum(-1, keepdim=True)
        out = torch.zeros_like(tokens)
        for e, expert in enumerate(self.experts):
            hit = chosen == e  # [N, k]; top-k picks an expert at most once per token
            token = hit.any(-1).nonzero().squeeze(-1)  # [n_e]
            w = (weights * hit).sum(-1)[token].unsqueeze(-1)
            out = out.index_put((token,), expert(tokens[token]) * w, accumulate=True)
        for expert in self.shared:
            out = out + expert(tokens)
        return out.reshape(x.shape)


def exportable(model: nn.Module) -> nn.Module:
    """A copy of `model` (sharing its weights) with every capacity-free MixtureOfExperts made exportable."""
    if _is_moe(model) and model.capacity_factor is None:
        return ExportableMoE(model)
    out = copy.copy(model)
    out._modules = dict(model._modules)
    for name, child in model.named_children():
        if any(_is_moe(m) for m in child.modules()):
            out._modules[name] = exportable(child)
    return out


def _is_moe(m: nn.Module) -> bool:
    return type(m).__name__ == "MixtureOfExperts"  # the emitted class, defined in each generated file
