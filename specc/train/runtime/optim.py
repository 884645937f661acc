"""Optimizer and learning-rate schedules.

A schedule's horizon (the step its shape ends at) is fixed when a run starts and kept in its checkpoints, so
resuming with a larger --steps continues the planned curve (then holds its final rate) instead of stretching it.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .setup import UserError


def make_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    """Weight decay on matrices and kernels only; norms' scales and biases (ndim < 2) are left alone."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise UserError("the model has no trainable parameters: there is nothing to train (a spec without "
                        "layers, or every weight frozen)")
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    optimizer = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return optimizer(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def lr_factor(cfg, horizon: int, step: int) -> float:
    """Multiplier of the peak lr for the optimizer step after `step` completed ones, on a schedule that ends at
    step `horizon`."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    floor = cfg.min_lr / cfg.lr
    done, span = step - cfg.warmup_steps, max(1, horizon - cfg.warmup_steps)
    progress = min(1.0, done / span)
    if cfg.schedule == "step":
        return cfg.gamma ** (done // (cfg.step_size or max(1, horizon // 3)))
    if cfg.schedule == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.schedule == "linear":
        return floor + (1 - floor) * (1 - progress)
    if cfg.schedule == "wsd":  # warm-up, stable, then a linear decay over the last decay_fraction of the horizon
        decay = max(1, round(span * cfg.decay_fraction))
        into = done - (span - decay)
        return 1.0 if into <= 0 else floor + (1 - floor) * max(0.0, 1 - into / decay)
    return 1.0
