"""Helper code that specc writes into the model files that use it (read as text by specc/ops/moe.py;
the imports above the first definition are the emitted file's own)."""
import math

import torch
from torch import nn


class MixtureOfExperts(nn.Module):
    """Top-k routed experts (specc `moe`): each expert runs once, on the contiguous run of the (token, slot) pairs
    routed to it; index_add combines the weighted results. Sets `last_aux_loss` (and its parts `last_balance_loss`,
    `last_z_loss`) every forward. See specc/ops/moe.py for the exact routing, capacity and loss definitions."""

    def __init__(self, dim: int, experts: list, top_k: int = 1, shared: list = (), softmax: str = "before",
                 renormalize: bool = False, capacity_factor: float | None = None, jitter: float = 0.0,
                 balance_coef: float = 0.01, z_coef: float = 0.0) -> None:
        super().__init__()
        self.router = nn.Linear(dim, len(experts), bias=False)
        self.experts = nn.ModuleList(experts)
        self.shared = nn.ModuleList(shared)
        self.top_k, self.softmax_after, self.renormalize = top_k, softmax == "after", renormalize
        self.capacity_factor, self.jitter = capacity_factor, jitter
        self.balance_coef, self.z_coef = balance_coef, z_coef
        self.last_aux_loss = self.last_balance_loss = self.last_z_loss = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.reshape(-1, x.size(-1))  # [N, d]
        n, k = tokens.size(0), self.top_k
        route_in = tokens
        if self.training and self.jitter > 0:
            route_in = tokens * torch.empty_like(tokens).uniform_(1 - self.jitter, 1 + self.jitter)
        logits = self.router(route_in)  # [N, E]
        probs = logits.softmax(-1)
        if self.softmax_after:
            top, chosen = logits.topk(k, dim=-1)  # [N, k]
            weights = top.softmax(-1)
        else:
            weights, chosen = probs.topk(k, dim=-1)  # [N, k]
            if self.renormalize:
                weights = weights / weights.sum(-1, keepdim=True)
        # (token, slot) pairs slot-major (first choices first), stably sorted into one run per expert
        expert_of = chosen.t().reshape(-1)  # [k*N]
        order = expert_of.argsort(stable=True)
        counts = torch.zeros(len(self.experts), dtype=torch.long, device=x.device)
        counts = counts.scatter_add(0, expert_of, torch.ones_like(expert_of))  # [E] pairs per expert
        self.last_aux_loss = self.aux_loss(logits, probs, counts / (n * k))
        if self.capacity_factor is not None:
            order, counts = self.drop_overflow(order, expert_of, counts, n)
        sizes = counts.tolist()  # the one host sync (and torch.compile graph break): the run lengths
        order = order[: sum(sizes)]  # [M] the kept pairs, grouped by expert
        token = order % n
        runs = tokens[token].split(sizes)
        ys = torch.cat([expert(run) for expert, run in zip(self.experts, runs)])  # [M, d]
        w = weights.t().reshape(-1)[order].unsqueeze(-1).to(ys.dtype)
        out = torch.zeros_like(tokens).index_add(0, token, ys * w)
        for expert in self.shared:
            out = out + expert(tokens)
        return out.reshape(x.shape)

    def drop_overflow(self, order, expert_of, counts, n: int):
        """Keep the first `capacity` pairs of each expert's run (first choices, then token order): the others move
        behind every run, where forward's slice leaves them out (no data-dependent shapes here)."""
        capacity = math.ceil(self.capacity_factor * n * self.top_k / len(self.experts))
        start = counts.cumsum(0) - counts  # where each expert's run begins
        expert = expert_of[order]
        rank = torch.arange(order.numel(), device=order.device) - start[expert]
        order = order[torch.where(rank < capacity, expert, len(self.experts)).argsort(stable=True)]
        return order, counts.clamp(max=capacity)

    def aux_loss(self, logits, probs, load):
        """balance_coef * E * sum_i f_i * P_i + z_coef * mean(logsumexp(logits)^2); load = f (sums to 1)."""
        self.last_balance_loss = len(self.experts) * (load.to(probs.dtype) * probs.mean(0)).sum()
        self.last_z_loss = torch.logsumexp(logits, -1).square().mean()
        return self.balance_coef * self.last_balance_loss + self.z_coef * self.last_z_loss
