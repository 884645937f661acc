"""The training loop: steps, evaluation over the whole validation set, checkpoints (latest, last N, best), early
stopping, --eval-only, and `main`, which turns every expected failure into one line and exit code 1."""
from __future__ import annotations

import gc
import json
import math
import os
import signal
import sys
import time

import torch
import torch.distributed as dist
from torch import nn

from .build import Run, build_run, checkpoint_meta, restore
from .checkpoint import (
    LATEST_DCP,
    all_rng_states,
    load_checkpoint,
    remove_leftovers,
    save_atomically,
    save_sharded,
)
from .cli import parse_args
from .env import Env, all_mean, all_sum, init_env, is_collective_timeout
from .logs import Console, MetricsLog
from .setup import API, LM_TASKS, DataError, ScriptSetup, UserError
from .tasks import aux_loss, task_loss
from .weights import init_from

# --best-metric: which way is better
HIGHER_IS_BETTER = {"val_accuracy": True, "val_loss": False, "val_perplexity": False}


def next_batch(run: Run) -> tuple:
    inputs, labels, where = next(run.train_iter)
    if isinstance(inputs, str):  # a worker's DataError, passed on as text (see Batches.__getitem__)
        raise DataError(inputs)
    device = run.env.device
    return [x.to(device, non_blocking=True) for x in inputs], labels.to(device, non_blocking=True), where


def train_step(run: Run, step: int) -> tuple:
    """One optimizer step over grad_accum micro-batches; returns (task loss, aux loss) as tensors."""
    cfg, losses, auxes, places = run.cfg, [], [], []
    for micro in range(cfg.grad_accum):
        inputs, labels, where = next_batch(run)
        with run.sync(micro == cfg.grad_accum - 1):
            logits = run.forward(run.step_model, inputs, labels)
            loss, aux = task_loss(logits, labels, task=cfg.task), aux_loss(run.model, run.env.device)
            run.scaler.scale((loss + aux) / cfg.grad_accum).backward()
        losses.append(loss.detach())
        auxes.append(aux.detach())
        places.append(where)
    loss, aux = torch.stack(losses), torch.stack(auxes)
    _refuse_non_finite(run, step, loss + aux, places)
    if cfg.clip_grad > 0:
        run.scaler.unscale_(run.optimizer)
        nn.utils.clip_grad_norm_(run.model.parameters(), cfg.clip_grad)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()
    run.order.advance()
    return loss.mean(), aux.mean()


def _refuse_non_finite(run: Run, step: int, totals: torch.Tensor, places: list) -> None:
    """Before the weights take the step: every rank learns whether any rank's loss is NaN or infinite."""
    bad = ~torch.isfinite(totals)
    if all_sum(bad.any().double().reshape(1), run.env)[0] == 0:
        return
    if not bad.any():
        raise UserError(f"step {step}: another process's loss is not finite; stopping before the weights change")
    micro = int(bad.double().argmax())
    epoch, in_epoch, _, _, indices = places[micro]
    shown = ", ".join(str(int(i)) for i in indices[:8]) + (" ..." if len(indices) > 8 else "")
    raise UserError(f"step {step}: the loss is {totals[micro].item()} on micro-batch {micro} (epoch {epoch}, "
                    f"batch {in_epoch}, samples {shown}); stopping before the weights change (check the data, "
                    "or lower --lr)")


@torch.no_grad()
def evaluate(run: Run) -> dict:
    """Loss, accuracy and (language tasks) perplexity over the whole validation split (or --eval-steps batches)."""
    cfg, env = run.cfg, run.env
    totals = torch.zeros(4, dtype=torch.float64, device=env.device)  # loss sum, correct, counted, samples
    run.model.eval()
    # evaluation draws no randomness from the training streams, whatever the model does in eval mode
    with torch.random.fork_rng(devices=[env.device.index or 0] if env.device.type == "cuda" else []):
        for inputs, labels, where in run.val_loader():
            if isinstance(inputs, str):
                raise DataError(inputs)
            valid = where[3]
            inputs = [x.to(env.device) for x in inputs]
            labels = labels.to(env.device)
            logits = run.forward(run.model, inputs, labels)[:valid]
            labels = labels[:valid]
            counted = labels != -100
            totals += torch.stack([task_loss(logits, labels, reduction="sum", task=cfg.task).double(),
                                   ((logits.argmax(-1) == labels) & counted).sum().double(),
                                   counted.sum().double(), torch.tensor(float(valid), device=env.device)])
    run.model.train()
    loss_sum, correct, counted, samples = all_sum(totals, env).tolist()
    loss = loss_sum / max(counted, 1)
    metrics = {"loss": loss, "accuracy": correct / max(counted, 1)}
    if cfg.task in LM_TASKS:
        metrics["perplexity"] = math.exp(min(loss, 700.0))
    metrics["samples"] = int(samples)
    return metrics


def save(run: Run, step: int, out_dir: str) -> None:
    rng = all_rng_states(run.env.world)  # a collective: every rank takes part
    meta = checkpoint_meta(run, step, rng)
    if run.cfg.strategy == "fsdp" and run.env.world > 1:
        save_sharded(run.model, run.optimizer, meta, out_dir, step, run.env.is_main, run.cfg.keep_last)
        return
    if not run.env.is_main:
        return
    state = {**meta, "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict()}
    save_atomically(state, os.path.join(out_dir, "checkpoint.pt"))
    if run.cfg.keep_last > 1:
        save_atomically(state, os.path.join(out_dir, f"step-{step:08d}.pt"))
        kept = sorted(f for f in os.listdir(out_dir) if f.startswith("step-") and f.endswith(".pt"))
        for old in kept[:-run.cfg.keep_last]:
            os.remove(os.path.join(out_dir, old))


def save_best(run: Run, step: int, metrics: dict, out_dir: str) -> bool:
    """best.pt (weights only, for --init-from / --eval-only) when the chosen metric improves; returns whether."""
    key = run.cfg.best_metric
    value = metrics.get(key.removeprefix("val_"))
    if value is None:
        return False
    better = run.best is None or (value > run.best if HIGHER_IS_BETTER[key] else value < run.best)
    if not better:
        run.bad_evals += 1
        return False
    run.best, run.bad_evals = value, 0
    state = full_weights(run)
    if run.env.is_main:
        save_atomically({"model": state, "step": step, key: value}, os.path.join(out_dir, "best.pt"))
    return True


def full_weights(run: Run) -> dict:
    if run.cfg.strategy == "fsdp" and run.env.world > 1:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(run.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return run.model.state_dict()


def resume_path(arg: str | None, out_dir: str) -> str | None:
    if arg is None:
        return None
    if arg == "auto":
        for name in ("checkpoint.pt", LATEST_DCP):
            if os.path.exists(os.path.join(out_dir, name)):
                return os.path.join(out_dir, name)
        return None
    if not os.path.exists(arg):
        raise UserError(f"{arg}: no such checkpoint")
    return arg


def _weights_loader(path: str | None, console: Console):
    if path is None:
        return None

    def load(model, notes):
        missing, reshaped = init_from(model, path)
        notes.append(f"initialised from {path}")
        if missing:  # worded as specc.weights.InitReport words it (a 2-class head on a pretrained backbone)
            notes.append(f"  {len(missing)} tensors not in the file are newly initialised: {', '.join(missing)}")
        if reshaped:
            notes.append(f"  {len(reshaped)} tensors of another shape are newly initialised: {', '.join(reshaped)}")

    return load


def fit(setup: ScriptSetup, cfg, env: Env) -> dict:
    console = Console(env, cfg.quiet, total=cfg.steps, initial=0)
    if env.is_main:
        os.makedirs(cfg.out_dir, exist_ok=True)
        for path in remove_leftovers(cfg.out_dir):
            console.line(f"removed {path}, left by a save that was interrupted")
    run = build_run(setup, cfg, env, _weights_loader(cfg.init_from, console))
    for note in run.notes:
        console.line(note)
    start, path = 0, resume_path(cfg.resume, cfg.out_dir)
    if path is not None:
        start = restore(run, load_checkpoint(path, env.device), console)
        console.line(f"resumed from {path} at step {start}")
        if start > cfg.steps:
            raise UserError(f"{path}: the checkpoint is at step {start}, past --steps {cfg.steps}")
    if cfg.eval_only:
        if cfg.resume and path is None:
            raise UserError(f"--eval-only --resume: no checkpoint in {cfg.out_dir} to evaluate")
        return _eval_only(run, start)
    run.start_loader()
    if console.bar is not None:
        console.bar.total = cfg.steps
        console.bar.update(start)
    log = MetricsLog(cfg.out_dir, cfg.log_format, start if path is not None else None, cfg.wandb_project,
                     vars(cfg)) if env.is_main else None
    final = {"step": start}
    train_seconds = 0.0  # in train_step only (data, forward, backward, update): what bench/ compares
    for step in range(start + 1, cfg.steps + 1):
        lr = run.optimizer.param_groups[0]["lr"]  # the rate this step uses
        began = time.perf_counter()
        loss, aux = train_step(run, step)
        train_seconds += time.perf_counter() - began
        final["step"] = step
        last = step == cfg.steps
        shown = None
        if step % cfg.log_every == 0 or last:
            shown, aux_value = all_mean([loss.item(), aux.item()], env)
            final.update(step=step, train_loss=shown, aux_loss=aux_value)
            if log is not None:
                log.write({"step": step, "split": "train", "loss": shown, "aux_loss": aux_value, "lr": lr})
            if console.bar is None:
                console.line(f"step {step}/{cfg.steps}  loss {shown:.4f}  aux {aux_value:.4g}  lr {lr:.3g}")
        console.step(shown)
        stop = False
        if run.val_batches is not None and ((cfg.eval_every and step % cfg.eval_every == 0) or last):
            stop = _eval_and_keep_best(run, cfg, step, final, log, console)
        if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or last or stop:
            save(run, step, cfg.out_dir)
        if cfg.kill_after_step == step:
            os.kill(os.getpid(), signal.SIGKILL)
        if cfg.stall_after_step == step:
            signal.pause()  # testing --dist-timeout: this process stops answering its peers
        if stop:
            break
    console.close()
    if log is not None:
        log.close()
    return _finish(run, cfg, env, final, start, train_seconds)


def _finish(run, cfg, env: Env, final: dict, start: int, train_seconds: float) -> dict:
    """The run's summary: throughput over the steps this process ran, and where the last checkpoint is."""
    if env.device.type == "cuda":
        torch.cuda.synchronize(env.device)
    final["train_seconds"] = train_seconds
    final["samples_per_second"] = (final["step"] - start) * run.order.global_batch / max(train_seconds, 1e-9)
    sharded = cfg.strategy == "fsdp" and env.world > 1
    final["checkpoint"] = os.path.join(cfg.out_dir, LATEST_DCP if sharded else "checkpoint.pt")
    return final


def _eval_and_keep_best(run, cfg, step: int, final: dict, log, console) -> bool:
    """Evaluate on the whole validation set, log it, keep the best checkpoint; True when early stopping ends the run."""
    metrics = evaluate(run)
    final.update({f"val_{k}": v for k, v in metrics.items()})
    if log is not None:
        log.write({"step": step, "split": "val", **metrics})
    console.line(_eval_line(f"eval at step {step}", metrics))
    save_best(run, step, metrics, cfg.out_dir)
    if cfg.early_stop and run.bad_evals >= cfg.early_stop:
        console.line(f"early stop at step {step}: {cfg.best_metric} has not improved on {run.best:.4g} "
                     f"in {run.bad_evals} evaluations")
        final["early_stopped"] = True
        return True
    return False


def _eval_line(what: str, metrics: dict) -> str:
    shown = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "samples")
    return f"{what} on {metrics['samples']} samples: {shown}"


def _eval_only(run: Run, step: int) -> dict:
    if run.val_batches is None:
        raise UserError("--eval-only: there is no validation data (set --val-path or --val-fraction)")
    metrics = evaluate(run)
    if run.env.is_main:
        print(_eval_line("evaluation", metrics), flush=True)
    return {"step": step, "eval_only": True, **{f"val_{k}": v for k, v in metrics.items()}}


def main(setup: ScriptSetup, argv=None) -> int:
    if setup.api != API:
        print(f"error: this script was generated for specc training runtime API {setup.api}; the installed specc "
              f"provides API {API}: regenerate it with `specc train-script`", file=sys.stderr)
        return 1
    cfg = parse_args(setup, argv)
    env = init_env(cfg.device, cfg.dist_timeout)
    prefix = f"[rank {env.rank}] " if env.world > 1 else ""
    try:
        final = fit(setup, cfg, env)
        if dist.is_initialized():
            # the run (its DDP reducer holds the process group and the work it still has in flight) is freed here,
            # while the interpreter is whole: left to its reference cycles, it would be freed at exit, after the
            # group is torn down, where freeing a tensor gloo's threads hold can abort the process: the likely
            # cause of a rank-1 SIGABRT ("terminate called without an active exception") seen twice in CI under
            # load and never in 24 runs alone, 12 of them with both CPUs busy
            gc.collect()
            # rank 0 still writes logs and checkpoints after the last collective: tearing gloo down while a peer
            # is connected can abort the other process, so everyone leaves together
            dist.barrier()
    except UserError as exc:
        print(f"{prefix}error: {exc}", file=sys.stderr, flush=True)
        _leave(env)
        return 1
    except RuntimeError as exc:
        if not is_collective_timeout(exc):
            raise
        print(f"{prefix}error: no answer from the other processes within {cfg.dist_timeout:g} s (--dist-timeout): "
              "a process stalled or died; stopping", file=sys.stderr, flush=True)
        os._exit(1)  # the process group is broken: tearing it down could wait on the dead peer
    _leave(env)
    if env.is_main:
        with open(os.path.join(cfg.out_dir, "final.json"), "w") as f:
            json.dump(final, f, indent=1)
        if not cfg.quiet and not final.get("eval_only"):
            print("done: " + "  ".join(f"{k} {v}" for k, v in final.items()), flush=True)
    return 0


def _leave(env: Env) -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
