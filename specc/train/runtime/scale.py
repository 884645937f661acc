"""Scale: DDP or FSDP2 (`fully_shard` per block), activation checkpointing per block, torch.compile, and the
per-rank memory estimate printed before training (refused with the numbers above --memory-budget-gb)."""
from __future__ import annotations

import contextlib

import torch
import torch.utils.checkpoint
from torch import nn

from .setup import UserError

GIB = 2 ** 30
OPTIMIZER_STATES = {"sgd": 1, "adam": 2, "adamw": 2}  # fp32 tensors per parameter (momentum; moments)


def blocks_of(model: nn.Module) -> list[nn.Module]:
    """The model's outermost blocks: the layers of each `repeat` (which the emitter writes as an nn.ModuleList)
    that lie in no other such layer (a MoE layer's experts belong to their layer's shard)."""
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList):
            continue
        for index, child in enumerate(module):
            path = f"{name}.{index}" if name else str(index)
            inside = any(path.startswith(outer + ".") for outer, _ in found)
            if not inside and any(True for _ in child.parameters()):
                found.append((path, child))
    return [module for _, module in found]


def checkpoint_activations(blocks: list[nn.Module]) -> None:
    """Recompute each block's activations in the backward pass instead of keeping them (forward hooks and the
    state_dict are untouched: only the instance's forward is wrapped)."""
    for block in blocks:
        forward = block.forward

        def recomputed(*args, _forward=forward, **kwargs):
            return torch.utils.checkpoint.checkpoint(_forward, *args, use_reentrant=False, **kwargs)

        block.forward = recomputed


def shard(model: nn.Module, blocks: list[nn.Module], device: torch.device) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    for block in blocks:
        fully_shard(block)
    fully_shard(model)
    return model


def wrap_ddp(model: nn.Module, device: torch.device, find_unused: bool) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=find_unused)


@contextlib.contextmanager
def _counting_saved(total: list):
    def pack(t: torch.Tensor):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield


def activation_bytes(model: nn.Module, inputs: list, autocast) -> int:
    """Bytes saved for backward by one forward of `inputs` (random streams untouched)."""
    total = [0]
    with torch.random.fork_rng(devices=[]), _counting_saved(total), autocast():
        out = model(*inputs)
    del out
    return total[0]


def memory_estimate(model: nn.Module, cfg, world: int, strategy: str, act_per_sample: int) -> dict:
    """Bytes per rank: parameters, gradients, optimizer state (sharded by FSDP) and activations at batch_size."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    numel = sum(p.numel() for p in model.parameters() if p.requires_grad)
    share = world if strategy == "fsdp" else 1
    blocks = blocks_of(model)
    largest = max((sum(p.numel() * p.element_size() for p in b.parameters()) for b in blocks), default=0)
    gathered = largest if strategy == "fsdp" else 0  # one block unsharded at a time (two with prefetch)
    states = OPTIMIZER_STATES[cfg.optimizer] if (cfg.optimizer != "sgd" or cfg.momentum) else 0
    estimate = {
        "parameters": params / share + 2 * gathered,
        "gradients": params / share,
        "optimizer": numel * 4 * states / share,
        "activations": act_per_sample * cfg.batch_size,
    }
    estimate["total"] = sum(estimate.values())
    return estimate


def describe(estimate: dict) -> str:
    unit, size = ("GiB", GIB) if estimate["total"] >= GIB else ("MiB", 2 ** 20)
    return ", ".join(f"{k} {v / size:.2f} {unit}" for k, v in estimate.items())


def check_budget(estimate: dict, budget_gb: float, strategy: str, world: int) -> None:
    if budget_gb and estimate["total"] > budget_gb * GIB:
        hints = []
        if strategy != "fsdp":
            hints.append("--strategy fsdp under torchrun shards parameters, gradients and optimizer state")
        hints.append("--activation-checkpointing true and a smaller --batch-size (with --grad-accum) cut "
                     "activations")
        raise UserError(f"the run needs about {estimate['total'] / GIB:.3f} GiB per process ({describe(estimate)}) "
                        f"on {world} process{'es' if world > 1 else ''}, over --memory-budget-gb {budget_gb}: "
                        + "; ".join(hints))


def require_blocks(blocks: list, what: str) -> None:
    if not blocks:
        raise UserError(f"{what} works per block, and this model has none (no `repeat` of layers with weights)")
