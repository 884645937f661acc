"""A shrunk mixture-of-experts language model whose aux_loss() is nonzero (load balancing + router z-loss)."""

import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclasses.dataclass
class TinyMoEConfig:
    vocab_size: int = 64
    block_size: int = 32
    d_model: int = 32
    d_hidden: int = 64
    num_experts: int = 4
    top_k: int = 2
    balance_coef: float = 0.01
    z_coef: float = 0.001


class MoE(nn.Module):
    def __init__(self, config: TinyMoEConfig):
        super().__init__()
        self.config = config
        self.router = nn.Linear(config.d_model, config.num_experts, bias=False)
        self.w_in = nn.Parameter(torch.randn(config.num_experts, config.d_model, config.d_hidden) * 0.02)
        self.w_out = nn.Parameter(torch.randn(config.num_experts, config.d_hidden, config.d_model) * 0.02)
        self.last_aux = torch.zeros(())

    def forward(self, x):
        cfg = self.config
        tokens = x.reshape(-1, x.shape[-1])  # [N, D]
        logits = self.router(tokens)  # [N, E]
        probs = logits.softmax(-1)
        weights, chosen = probs.topk(cfg.top_k, dim=-1)  # [N, k]
        weights = weights / weights.sum(-1, keepdim=True)
        gate = torch.zeros_like(probs).scatter(1, chosen, weights)  # [N, E], dense dispatch
        hidden = F.gelu(torch.einsum("nd,edh->neh", tokens, self.w_in))
        out = torch.einsum("neh,ehd,ne->nd", hidden, self.w_out, gate)
        load = torch.zeros_like(probs).scatter(1, chosen, 1.0).mean(0) / cfg.top_k  # f_i
        balance = cfg.num_experts * (load * probs.mean(0)).sum()
        z_loss = (torch.logsumexp(logits, -1) ** 2).mean()
        self.last_aux = cfg.balance_coef * balance + cfg.z_coef * z_loss
        return out.reshape(x.shape)


class TinyMoE(nn.Module):
    def __init__(self, config: TinyMoEConfig = TinyMoEConfig()):
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.d_model)
        self.wpe = nn.Embedding(config.block_size, config.d_model)
        self.norm = nn.LayerNorm(config.d_model)
        self.moe = MoE(config)
        self.head = nn.Linear(config.d_model, config.vocab_size)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))  # [B, T, D]
        x = x + self.moe(self.norm(x))
        return self.head(x)  # [B, T, V]

    def aux_loss(self) -> torch.Tensor:
        return self.moe.last_aux
