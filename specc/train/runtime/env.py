"""Processes and devices: one process, or one of torchrun's (gloo on CPU, nccl on GPU), with a collective timeout."""
from __future__ import annotations

import dataclasses
import datetime
import os

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class Env:
    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_env(device_arg: str, timeout_s: float) -> Env:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_arg == "auto":
        device_arg = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device_arg)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        # a rank that stalls or dies ends its peers' collectives after `timeout_s` instead of hanging them
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_s))
    return Env(rank, world, device)


def is_collective_timeout(exc: BaseException) -> bool:
    """gloo and nccl report a peer that never answered as a RuntimeError (DistBackendError) naming a timeout."""
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and dist.is_initialized() and (
        "timed out" in text or "timeout" in text or "connection closed by peer" in text
        or "connection reset" in text)


def all_mean(values: list[float], env: Env) -> list[float]:
    if env.world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=env.device)
    dist.all_reduce(t)
    return (t / env.world).tolist()


def all_sum(t: torch.Tensor, env: Env) -> torch.Tensor:
    if env.world > 1:
        dist.all_reduce(t)
    return t
