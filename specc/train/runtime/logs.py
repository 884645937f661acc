"""The metrics log (CSV or JSON lines always; TensorBoard and Weights & Biases when installed) and the console."""
from __future__ import annotations

import contextlib
import csv
import json
import os
import sys

from .env import Env


class MetricsLog:
    """Rank 0's metrics: CSV or JSON lines (plus TensorBoard when installed). Resuming from step k first drops
    the rows a killed run wrote after k, so the log of a resumed run reads like an uninterrupted one."""

    COLUMNS = ("step", "split", "loss", "aux_loss", "accuracy", "perplexity", "lr", "samples")

    def __init__(self, out_dir: str, fmt: str, resume_step: int | None, wandb_project: str | None = None,
                 settings: dict | None = None) -> None:
        self.path, self.fmt = os.path.join(out_dir, f"metrics.{fmt}"), fmt
        kept = self._read_rows(resume_step) if resume_step is not None else []
        with open(self.path, "w", newline="") as f:
            if fmt == "csv":
                f.write(",".join(self.COLUMNS) + "\n")
            f.writelines(self._line(row) for row in kept)
        self.board = _tensorboard(out_dir, purge_step=None if resume_step is None else resume_step + 1)
        self.wandb = _wandb(out_dir, wandb_project, settings) if wandb_project else None

    def write(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            f.write(self._line(row))
        if self.board is not None:
            for key in self.COLUMNS[2:]:
                if row.get(key) is not None:
                    self.board.add_scalar(f"{row['split']}/{key}", row[key], row["step"])
        if self.wandb is not None:
            self.wandb.log({f"{row['split']}/{k}": row[k] for k in self.COLUMNS[2:] if row.get(k) is not None},
                           step=row["step"])

    def close(self) -> None:
        if self.board is not None:
            self.board.close()
        if self.wandb is not None:
            self.wandb.finish()

    def _line(self, row: dict) -> str:
        if self.fmt == "jsonl":
            return json.dumps({k: row.get(k) for k in self.COLUMNS}) + "\n"
        return ",".join("" if row.get(k) is None else str(row[k]) for k in self.COLUMNS) + "\n"

    def _read_rows(self, up_to: int) -> list:
        if not os.path.exists(self.path):
            return []
        with open(self.path, newline="") as f:
            rows = list(_parse_rows(f, self.fmt))
        return [row for row in rows if row["step"] <= up_to]


def _parse_rows(f, fmt: str):
    """Whole rows only: a run killed mid-write can leave a torn last line."""
    if fmt == "jsonl":
        for line in f:
            with contextlib.suppress(ValueError):
                row = json.loads(line)
                if set(row) == set(MetricsLog.COLUMNS):
                    yield row
        return
    for row in csv.DictReader(f):
        if None in row.values() or None in row:
            continue
        with contextlib.suppress(ValueError):
            yield {"step": int(row["step"]), "split": row["split"],
                   **{k: _number(k, row[k]) for k in MetricsLog.COLUMNS[2:]}}


def _number(key: str, text: str):
    if not text:
        return None
    return int(text) if key == "samples" else float(text)


def _tensorboard(out_dir: str, purge_step: int | None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(os.path.join(out_dir, "tensorboard"), purge_step=purge_step)


def _wandb(out_dir: str, project: str, settings: dict | None):
    try:
        import wandb
    except ImportError:
        print("note: --wandb-project is set but wandb is not installed; logging to files only", file=sys.stderr)
        return None
    # one W&B run per output folder, so a resumed run continues its curves
    run_id = "specc-" + "".join(c if c.isalnum() else "-" for c in os.path.abspath(out_dir))[-56:]
    return wandb.init(project=project, dir=out_dir, config=settings, id=run_id, resume="allow")


class Console:
    """A tqdm bar on an interactive terminal, plain lines otherwise; silent with --quiet and on ranks > 0."""

    def __init__(self, env: Env, quiet: bool, total: int, initial: int) -> None:
        self.enabled = env.is_main and not quiet
        self.bar = None
        if self.enabled and sys.stderr.isatty():
            with contextlib.suppress(ImportError):
                from tqdm import tqdm

                self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)

    def step(self, loss: float | None) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if loss is not None:
                self.bar.set_postfix(loss=f"{loss:.4f}")

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
