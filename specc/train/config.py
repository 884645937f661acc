"""The `train { ... }` section of a spec: one typed, validated record of training settings.

Every field here becomes a command-line option of the generated train.py (`--batch-size`, ...), with the field's
description as its help text and the spec's value (or the field default) as its default.
"""
from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Task = Literal["classification", "causal_lm", "masked_lm", "seq2seq"]
TASKS: tuple[str, ...] = Task.__args__


class TrainConfigError(ValueError):
    """A train setting that cannot work, located by the offending `key` (and its spec `span` when known).

    `related` holds further independent problems found in the same section, so a caller can report them all.
    """

    def __init__(self, message: str, key: str | None, span: object = None, related: tuple = ()) -> None:
        super().__init__(message)
        self.message = message
        self.key = key
        self.span = span
        self.related: tuple[TrainConfigError, ...] = tuple(related)

    @property
    def errors(self) -> list[TrainConfigError]:
        return [self, *self.related]

    def diagnostic(self):
        """This error as a specc Diagnostic (code E0403), for the CLI's usual rendering."""
        from specc.diagnostics import Diagnostic

        label = f"train setting '{self.key}'" if self.key else ""
        return Diagnostic("E0403", self.message, span=self.span, label=label)


class TrainConfig(BaseModel):
    """Training settings; every description below is the `--help` text of the generated script."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    # what to learn and from which data
    task: Task | None = Field(None, description="what the model learns; inferred from its inputs/outputs if unset")
    output: str | None = Field(None, description="name of the model output that holds the logits (default: first)")
    data: Literal["synthetic", "npy", "npz", "tokens"] = Field(
        "synthetic", description="synthetic (smoke runs), npy / npz arrays, or tokens (flat binary token file)"
    )
    train_path: str | None = Field(None, description="training data file (.npy, .npz or flat token file)")
    val_path: str | None = Field(None, description="validation data file; without it a tail of the training data")
    train_labels: str | None = Field(None, description="classification labels .npy for data=npy")
    val_labels: str | None = Field(None, description="validation labels .npy for data=npy")
    token_dtype: Literal["uint8", "uint16", "int32", "uint32", "int64"] = Field(
        "uint16", description="element type of a flat binary token file"
    )
    val_fraction: float = Field(0.1, ge=0, lt=1, description="share of the training data held out when no val_path")
    synthetic_samples: int = Field(2048, ge=1, description="number of synthetic training samples (sequences)")
    vocab_size: int | None = Field(None, ge=2, description="token vocabulary size (default: the logits' last dim)")
    num_classes: int | None = Field(None, ge=2, description="number of classes (default: the logits' last dim)")
    seq_len: int | None = Field(None, ge=1, description="sequence length for symbolic sequence dims (default 64)")
    target_len: int | None = Field(None, ge=1, description="seq2seq decoder length (default: seq_len)")
    mask_prob: float = Field(0.15, gt=0, lt=1, description="masked_lm: share of tokens to predict")
    mask_token: int | None = Field(None, ge=0, description="masked_lm: id of the [MASK] token (default vocab_size-1)")

    # optimisation
    steps: int = Field(100, ge=1, description="optimizer steps to train for")
    batch_size: int = Field(32, ge=1, description="samples per micro-batch and process")
    grad_accum: int = Field(1, ge=1, description="micro-batches accumulated per optimizer step")
    optimizer: Literal["sgd", "adam", "adamw"] = Field("adamw", description="optimizer")
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.01, ge=0, description="weight decay (never applied to norms and biases)")
    momentum: float = Field(0.9, ge=0, description="sgd momentum")
    beta1: float = Field(0.9, ge=0, lt=1, description="adam/adamw beta1")
    beta2: float = Field(0.999, ge=0, lt=1, description="adam/adamw beta2")
    schedule: Literal["constant", "step", "cosine"] = Field("constant", description="learning-rate schedule")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps before the schedule")
    step_size: int | None = Field(None, ge=1, description="step schedule: decay period in steps (default steps/3)")
    gamma: float = Field(0.1, gt=0, description="step schedule: decay factor per period")
    min_lr: float = Field(0.0, ge=0, description="cosine schedule: final learning rate")
    clip_grad: float = Field(0.0, ge=0, description="clip the gradient norm to this value (0: off)")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="autocast precision")
    find_unused_parameters: bool = Field(False, description="DDP: allow parameters without gradient in a step")
    seed: int = Field(0, ge=0, description="random seed (initialisation, data order, dropout)")

    # evaluation, logging, checkpoints
    eval_every: int = Field(50, ge=0, description="evaluate every N steps (0: only at the end)")
    eval_steps: int = Field(10, ge=1, description="validation batches per evaluation")
    log_every: int = Field(10, ge=1, description="log the training loss every N steps")
    log_format: Literal["csv", "jsonl"] = Field("csv", description="metrics log format")
    out_dir: str = Field("out", description="directory for the log and checkpoints")
    checkpoint_every: int = Field(0, ge=0, description="checkpoint every N steps (0: only at the end)")

    @model_validator(mode="after")
    def _data_files_given(self) -> TrainConfig:
        if self.data != "synthetic" and self.train_path is None:
            raise _Problem(f"data = {self.data} needs train_path (the training data file)", "data")
        if self.data == "npy" and self.task == "seq2seq":
            raise _Problem("seq2seq needs two arrays per sample: use data = npz with 'source' and 'target'", "data")
        if self.data == "tokens" and self.task in ("classification", "seq2seq"):
            raise _Problem(f"data = tokens (a flat token stream) cannot feed task {self.task}", "data")
        if self.mask_token is not None and self.vocab_size is not None and self.mask_token >= self.vocab_size:
            raise _Problem(f"mask_token {self.mask_token} is outside the vocabulary (size {self.vocab_size})",
                           "mask_token")
        return self


class _Problem(ValueError):
    """Raised inside validators to name the key at fault (pydantic would otherwise blame the whole model)."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.message, self.key = message, key


def parse_settings(settings: Mapping[str, Any], spans: Mapping[str, object] | None = None) -> TrainConfig:
    """Validate a spec's `train` section (a plain dict) into a TrainConfig, or raise TrainConfigError."""
    spans = spans or {}
    try:
        return TrainConfig(**dict(settings))
    except ValidationError as exc:
        problems = [_problem_from(err, settings) for err in exc.errors()]
    first, *rest = [TrainConfigError(message, key, spans.get(key)) for message, key in problems]
    raise TrainConfigError(first.message, first.key, first.span, related=tuple(rest))


def _problem_from(err: dict, settings: Mapping[str, Any]) -> tuple[str, str | None]:
    ctx_error = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_error, _Problem):
        return ctx_error.message, ctx_error.key
    key = str(err["loc"][0]) if err["loc"] else None
    if err["type"] == "extra_forbidden":
        close = difflib.get_close_matches(key, TrainConfig.model_fields, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown train setting '{key}'{hint}", key
    value = settings.get(key, None) if key else None
    return f"train setting '{key}' = {value!r}: {_plain(err['msg'])}", key


def _plain(msg: str) -> str:
    """Pydantic's message without its 'Value error, ' / 'Input should be' boilerplate casing."""
    return msg.removeprefix("Value error, ").replace("Input should be", "should be")
