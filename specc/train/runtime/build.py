"""Building a run: data sources and loaders, the model (initial weights, DDP / FSDP, activation checkpointing,
torch.compile), optimizer and schedule, and restoring all of it from a checkpoint."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import random

import numpy as np
import torch
from torch import nn

from . import scale
from .augment import Preprocess, channel_stats, parse_floats
from .checkpoint import load_sharded, set_rng_state
from .cli import settings_of
from .data.arrays import load_array_samples, synthetic_samples
from .data.loader import Batches, TrainOrder, eval_keys, make_loader
from .env import Env
from .optim import lr_factor, make_optimizer
from .setup import DataError, ScriptSetup, UserError
from .tasks import check_logits, logits_of

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# settings that may change between a run and its resumption without changing the trajectory
RESUME_NEUTRAL = frozenset({
    "steps", "epochs", "eval_every", "eval_steps", "log_every", "log_format", "out_dir", "checkpoint_every",
    "val_path", "val_labels", "train_path", "train_labels", "workers", "keep_last", "best_metric", "early_stop",
    "wandb_project", "memory_budget_gb", "dist_timeout", "compile", "schedule_steps",
})


@dataclasses.dataclass
class Run:
    """Everything one training run holds. `model` is the module whose state is saved (FSDP-sharded in place
    under --strategy fsdp); `step_model` is what training steps call (DDP wrapper, compiled)."""

    setup: ScriptSetup
    cfg: argparse.Namespace
    env: Env
    model: nn.Module
    step_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    order: TrainOrder
    train_batches: Batches
    val_batches: Batches | None
    horizon: int
    notes: list
    best: float | None = None
    bad_evals: int = 0
    checked: bool = False
    train_iter: object = None

    def autocast(self):
        dtype = AUTOCAST_DTYPES.get(self.cfg.precision)
        return torch.autocast(self.env.device.type, dtype=dtype, enabled=dtype is not None)

    def sync(self, last: bool):
        """Gradients are reduced across ranks on the last micro-batch of a step only."""
        if self.cfg.strategy == "fsdp" and self.env.world > 1:
            self.model.set_requires_gradient_sync(last)
            return contextlib.nullcontext()
        no_sync = getattr(self.step_model, "no_sync", None)
        return contextlib.nullcontext() if last or no_sync is None else no_sync()

    def forward(self, model: nn.Module, inputs: list, labels: torch.Tensor) -> torch.Tensor:
        try:
            with self.autocast():
                logits = logits_of(self.setup, self.cfg, model(*inputs))
        except (RuntimeError, IndexError, ValueError) as exc:
            if self.checked:
                raise
            # a model that cannot take the configured shapes fails on the first batch: say which shapes
            shapes = ", ".join(f"{spec.name} {tuple(x.shape)}" for spec, x in zip(self.setup.inputs, inputs))
            raise UserError(f"the model failed on the first batch ({shapes}): {exc} "
                            "(do --seq-len and --batch-size fit the model?)") from None
        if not self.checked:
            check_logits(logits, labels, self.cfg)
            self.checked = True
        return logits

    def val_loader(self):
        keys = eval_keys(self.val_batches.source.count, self.cfg.eval_steps * self.cfg.batch_size * self.env.world,
                         self.cfg.batch_size, self.env.rank, self.env.world)
        return make_loader(self.val_batches, keys, self.cfg.workers, self.env.device.type == "cuda")

    def start_loader(self) -> None:
        """Read training batches from the order's current position on (after a restore: where it stopped)."""
        loader = make_loader(self.train_batches, self.order, self.cfg.workers, self.env.device.type == "cuda")
        self.train_iter = iter(loader)


def load_sources(setup: ScriptSetup, cfg, env: Env) -> tuple:
    """(train, val) sources; val is None when there is nothing to evaluate on."""
    if cfg.data == "synthetic":
        n_val = max(cfg.batch_size * env.world, cfg.synthetic_samples // 8)
        return synthetic_samples(setup, cfg, cfg.synthetic_samples, 0), synthetic_samples(setup, cfg, n_val, 1)
    if cfg.data == "cifar":
        from .data.images import cifar_samples

        # CIFAR's own test batches are the validation set unless --val-path names another folder
        return (cifar_samples(setup, cfg, cfg.train_path, "train"),
                cifar_samples(setup, cfg, cfg.val_path or cfg.train_path, "test"))
    if cfg.data == "images":
        from .data.images import image_folder

        def load(path, labels):
            return image_folder(setup, cfg, path)
    elif cfg.data == "text":
        from .data.text import text_samples

        def load(path, labels):
            return text_samples(cfg, path)
    else:
        def load(path, labels):
            return load_array_samples(setup, cfg, path, labels)
    train = load(cfg.train_path, cfg.train_labels)
    if cfg.val_path:
        val = load(cfg.val_path, cfg.val_labels)
        if getattr(train, "noise", None) is not None:  # skipgram: negatives follow the training corpus's counts
            val = dataclasses.replace(val, noise=train.noise)
        return train, val
    n_val = int(train.count * cfg.val_fraction)
    return (train, None) if n_val == 0 else train.split(n_val)


def make_preprocess(setup: ScriptSetup, cfg, train, notes: list) -> Preprocess | None:
    images = [s for s in setup.inputs if s.is_float and len(s.shape) == 4]
    if cfg.task != "classification" or not images:
        return None
    channels = images[0].shape[1]
    mean = std = None
    if cfg.normalize == "given":
        mean, std = parse_floats(cfg.mean, "mean", channels), parse_floats(cfg.std, "std", channels)
    preprocess = Preprocess(cfg, channels, images[0].shape[2:], None, None)
    if cfg.normalize == "auto":
        mean, std, count = channel_stats(train, images[0].name, preprocess)
        notes.append(f"normalising with mean {', '.join(f'{m:.4f}' for m in mean)} and std "
                     f"{', '.join(f'{s:.4f}' for s in std)} (computed over {count} training images)")
    return Preprocess(cfg, channels, images[0].shape[2:], mean, std)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_run(setup: ScriptSetup, cfg, env: Env, init_weights=None) -> Run:
    notes: list[str] = []
    train, val = load_sources(setup, cfg, env)
    preprocess = make_preprocess(setup, cfg, train, notes)
    order = TrainOrder(train.count, cfg.batch_size, cfg.grad_accum, env.rank, env.world, cfg.seed, train.source)
    if cfg.epochs:
        cfg.steps = cfg.epochs * order.steps_per_epoch
        notes.append(f"{cfg.epochs} epochs = {cfg.steps} steps of {order.global_batch} samples")
        if not cfg.eval_every:
            cfg.eval_every = order.steps_per_epoch  # evaluate at the end of every epoch
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = setup.model_class(setup.config_class()).to(env.device)
    if not any(p.requires_grad for p in model.parameters()):
        raise UserError(f"model {setup.model_name} has no trainable parameters: there is nothing to train")
    if init_weights is not None:
        init_weights(model, notes)
    seed_everything(cfg.seed + env.rank)  # different dropout per rank
    blocks = scale.blocks_of(model)
    if cfg.activation_checkpointing:
        scale.require_blocks(blocks, "--activation-checkpointing")
        scale.checkpoint_activations(blocks)
    estimate = _estimate(setup, cfg, env, model, train, preprocess)
    notes.append(f"memory per process ({cfg.strategy if env.world > 1 else 'one process'}): "
                 + scale.describe(estimate))
    scale.check_budget(estimate, cfg.memory_budget_gb, cfg.strategy, env.world)
    step_model = model
    if env.world > 1 and cfg.strategy == "fsdp":
        scale.require_blocks(blocks, "--strategy fsdp")
        step_model = model = scale.shard(model, blocks, env.device)
    elif env.world > 1:
        step_model = scale.wrap_ddp(model, env.device, cfg.find_unused_parameters)
    elif cfg.strategy == "fsdp":
        raise UserError("--strategy fsdp shards the model across processes: start it with torchrun "
                        "--nproc_per_node=N (N >= 2)")
    if cfg.compile:
        step_model = torch.compile(step_model)
    optimizer = make_optimizer(model, cfg)
    horizon = cfg.schedule_steps or cfg.steps
    run = Run(setup, cfg, env, model, step_model, optimizer, None, None, order,
              Batches(setup, cfg, train, preprocess, env.rank),
              None if val is None else Batches(setup, cfg, val, preprocess, env.rank), horizon, notes)
    run.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(cfg, run.horizon, step))
    run.scaler = torch.amp.GradScaler(env.device.type, enabled=cfg.precision == "fp16")
    return run


def _estimate(setup, cfg, env: Env, model: nn.Module, train, preprocess) -> dict:
    """The memory estimate, with activations measured on one sample (weights and buffers left as they were)."""
    from .tasks import make_batch

    buffers = {name: b.clone() for name, b in model.named_buffers()}
    inputs, _ = make_batch(setup, cfg, train, np.zeros(1, dtype=np.int64), 0, preprocess, cfg.seed)
    inputs = [x.to(env.device) for x in inputs]
    dtype = AUTOCAST_DTYPES.get(cfg.precision)
    try:
        per_sample = scale.activation_bytes(model, inputs, lambda: torch.autocast(
            env.device.type, dtype=dtype, enabled=dtype is not None))
    except (RuntimeError, IndexError, ValueError) as exc:
        shapes = ", ".join(f"{spec.name} {tuple(x.shape)}" for spec, x in zip(setup.inputs, inputs))
        raise UserError(f"the model failed on a sample ({shapes}): {exc} "
                        "(do --seq-len and the data fit the model?)") from None
    except DataError:
        raise
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
    return scale.memory_estimate(model, cfg, env.world, cfg.strategy if env.world > 1 else "ddp", per_sample)


def restore(run: Run, state: dict, console) -> int:
    cfg, env = run.cfg, run.env
    if state["model_name"] != run.setup.model_name:
        raise UserError(f"the checkpoint is of model {state['model_name']}, this script trains "
                        f"{run.setup.model_name}")
    then, now = state["order"]["global_batch"], run.order.global_batch
    if then != now:
        old = state["settings"]
        raise UserError(
            f"the checkpoint was trained with {then} samples per step ({state['world_size']} processes x "
            f"batch_size {old['batch_size']} x grad_accum {old['grad_accum']}); this run would take {now} "
            f"({env.world} x {cfg.batch_size} x {cfg.grad_accum}), changing the effective batch. Choose "
            f"--batch-size and --grad-accum so that processes x batch_size x grad_accum = {then}")
    if state["world_size"] != env.world:
        console.line(f"note: resuming on {env.world} processes (the checkpoint ran on {state['world_size']}): the "
                     f"same {then} samples per step, but sums in another order, so not bit-identical")
    changed = sorted(k for k, v in state["settings"].items()
                     if k not in RESUME_NEUTRAL and getattr(cfg, k, v) != v)
    if changed:
        console.line(f"warning: resuming with changed settings ({', '.join(changed)}); the run will not "
                     "repeat an uninterrupted one exactly")
    if "dcp_folder" in state:
        load_sharded(run.model, run.optimizer, state["dcp_folder"])
    else:
        run.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
    run.horizon = cfg.schedule_steps or state["horizon"]
    if run.horizon != cfg.steps and not cfg.schedule_steps and cfg.steps != state["settings"]["steps"]:
        console.line(f"note: the {cfg.schedule} schedule keeps its horizon of {run.horizon} steps from the "
                     "checkpoint (--schedule-steps sets another)")
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    run.order.load_state_dict(state["order"])
    run.best, run.bad_evals = state.get("best"), state.get("bad_evals", 0)
    rng = state["rng"]
    set_rng_state(rng[env.rank] if len(rng) == env.world else rng[env.rank % len(rng)])
    return int(state["step"])


def checkpoint_meta(run: Run, step: int, rng: list) -> dict:
    from .setup import CHECKPOINT_FORMAT

    return {
        "format": CHECKPOINT_FORMAT,
        "model_name": run.setup.model_name,
        "step": step,
        "model_config": dataclasses.asdict(run.setup.config_class()),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "order": run.order.state_dict(),
        "rng": rng,
        "world_size": run.env.world,
        "settings": settings_of(run.cfg, run.setup),
        "horizon": run.horizon,
        "best": run.best,
        "bad_evals": run.bad_evals,
    }
