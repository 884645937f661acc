"""Hand-written, deliberately simple reference for a top-k Mixture-of-Experts layer.

Written independently of the ``specc`` compiler and optimised for clarity, not
speed: the routing is applied with plain Python loops over experts and tokens.

Layout / maths (Shazeer et al. 2017 "Outrageously Large Neural Networks";
Fedus et al. 2021 "Switch Transformers"; Zoph et al. 2022 "ST-MoE" for the
router z-loss; SwiGLU experts as in Shazeer 2020 "GLU Variants Improve
Transformer" / Mixtral; always-on shared experts as in DeepSeekMoE):

* router:   ``logits = x @ W_r^T`` (``router``: Linear d -> E, no bias)
* probs:    ``p = softmax(logits)`` over the E experts (full softmax, *before*
  top-k selection)
* top-k:    ``w, idx = topk(p, k)``; if ``renormalize`` the k selected weights
  are divided by their sum
* expert e: ``w2(silu(w1 x) * w3 x)`` with w1, w3: d -> h and w2: h -> d, no
  biases
* output:   ``y_t = sum_j w[t, j] * expert_{idx[t, j]}(x_t) + sum_s shared_s(x_t)``
  (shared experts are unweighted and see every token)
* load-balancing loss (Switch): ``E * sum_i f_i * P_i`` where
  ``P_i = mean_t p[t, i]`` and ``f_i`` is the fraction of the T*k
  (token, slot) assignments that went to expert i (so ``sum_i f_i == 1`` and a
  perfectly balanced router gives 1.0; for k == 1 this is exactly Switch's
  definition; Hugging Face's Mixtral loss equals k times this value)
* router z-loss (ST-MoE): ``mean_t logsumexp(logits[t])**2``
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MoELayer", "SwiGLUExpert", "load_balancing_loss", "router_z_loss"]


class SwiGLUExpert(nn.Module):
    """SwiGLU feed-forward: ``w2(silu(w1(x)) * w3(x))``, no biases."""

    def __init__(self, d_model: int, d_hidden: int):
        super().__init__()
        self.w1 = nn.Linear(d_model, d_hidden, bias=False)
        self.w3 = nn.Linear(d_model, d_hidden, bias=False)
        self.w2 = nn.Linear(d_hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def load_balancing_loss(probs: torch.Tensor, topk_idx: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Switch-style auxiliary loss ``E * sum_i f_i * P_i``.

    probs:    (T, E) full softmax router probabilities.
    topk_idx: (T, k) indices of the selected experts.
    """
    T, k = topk_idx.shape
    counts = [0] * num_experts
    for t in range(T):
        for j in range(k):
            counts[int(topk_idx[t, j])] += 1
    f = torch.tensor(counts, dtype=probs.dtype, device=probs.device) / (T * k)
    P = probs.mean(dim=0)
    return num_experts * (f * P).sum()


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """ST-MoE router z-loss: mean over tokens of ``logsumexp(logits)^2``.  logits: (T, E)."""
    return (torch.logsumexp(logits, dim=-1) ** 2).mean()


class MoELayer(nn.Module):
    """Top-k routed SwiGLU mixture of experts with optional shared experts.

    ``forward(x) -> (y, aux)`` where ``x`` and ``y`` have shape (..., d_model)
    and ``aux`` is a dict with scalar tensors ``"load_balancing_loss"`` and
    ``"router_z_loss"`` (plus the raw ``"router_logits"`` (T, E),
    ``"router_probs"`` (T, E), ``"topk_weights"`` (T, k), ``"topk_indices"``
    (T, k) for inspection; T = number of tokens after flattening).
    """

    def __init__(self, d_model: int, d_hidden: int, num_experts: int, top_k: int = 2,
                 renormalize: bool = True, num_shared_experts: int = 0,
                 shared_hidden: int | None = None):
        super().__init__()
        assert 1 <= top_k <= num_experts
        self.d_model = d_model
        self.num_experts = num_experts
        self.top_k = top_k
        self.renormalize = renormalize
        self.router = nn.Linear(d_model, num_experts, bias=False)
        self.experts = nn.ModuleList([SwiGLUExpert(d_model, d_hidden) for _ in range(num_experts)])
        sh = d_hidden if shared_hidden is None else shared_hidden
        self.shared_experts = nn.ModuleList([SwiGLUExpert(d_model, sh) for _ in range(num_shared_experts)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        orig_shape = x.shape
        tokens = x.reshape(-1, self.d_model)  # (T, d)
        T = tokens.shape[0]

        logits = self.router(tokens)  # (T, E)
        probs = logits.softmax(dim=-1)  # (T, E)
        topk_w, topk_idx = probs.topk(self.top_k, dim=-1)  # (T, k)
        if self.renormalize:
            topk_w = topk_w / topk_w.sum(dim=-1, keepdim=True)

        out = torch.zeros_like(tokens)
        # Loop over experts, and for each expert over the tokens routed to it.
        for e, expert in enumerate(self.experts):
            for t in range(T):
                for j in range(self.top_k):
                    if int(topk_idx[t, j]) == e:
                        out[t] = out[t] + topk_w[t, j] * expert(tokens[t])

        for shared in self.shared_experts:
            out = out + shared(tokens)

        aux = {
            "load_balancing_loss": load_balancing_loss(probs, topk_idx, self.num_experts),
            "router_z_loss": router_z_loss(logits),
            "router_logits": logits,
            "router_probs": probs,
            "topk_weights": topk_w,
            "topk_indices": topk_idx,
        }
        return out.reshape(orig_shape), aux
