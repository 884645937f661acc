"""The `train { ... }` section of a spec: one typed, validated record of training settings.

Every field here becomes a command-line option of the generated train.py (`--batch-size`, ...), with the field's
description as its help text and the spec's value (or the field default) as its default.
"""
from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Task = Literal["classification", "causal_lm", "masked_lm", "seq2seq", "skipgram"]
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
    data: Literal["synthetic", "npy", "npz", "tokens", "cifar", "images", "text"] = Field(
        "synthetic", description="synthetic (smoke runs), npy / npz arrays, tokens (flat binary token file), cifar "
        "(a CIFAR-10/100 python folder), images (a folder per class) or text (json/csv/parquet + --tokenizer)"
    )
    train_path: str | None = Field(None, description="training data: a file, or the folder for cifar / images")
    val_path: str | None = Field(None, description="validation data (cifar: the folder's test batches by default; "
                                 "else a held-out tail of the training data)")
    train_labels: str | None = Field(None, description="classification labels .npy for data=npy")
    val_labels: str | None = Field(None, description="validation labels .npy for data=npy")
    token_dtype: Literal["uint8", "uint16", "int32", "uint32", "int64"] = Field(
        "uint16", description="element type of a flat binary token file"
    )
    tokenizer: str | None = Field(None, description="data=text: a tokenizers JSON file (tokenizer.json)")
    text_field: str = Field("text", description="data=text: the column holding the text")
    eos_token: str | None = Field(None, description="data=text: token appended after each document")
    workers: int = Field(0, ge=0, description="data loader worker processes (0: load in the training process)")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="share of the training data held out when no val_path")
    synthetic_samples: int = Field(2048, ge=1, description="number of synthetic training samples (sequences)")
    vocab_size: int | None = Field(None, ge=2, description="token vocabulary size (default: the logits' last dim)")
    num_classes: int | None = Field(None, ge=2, description="number of classes (default: the logits' last dim)")
    seq_len: int | None = Field(None, ge=1, description="sequence length for symbolic sequence dims (default 64)")
    target_len: int | None = Field(None, ge=1, description="seq2seq decoder length (default: seq_len)")
    mask_prob: float = Field(0.15, gt=0, lt=1, description="masked_lm: share of tokens to predict")
    mask_token: int | None = Field(None, ge=0, description="masked_lm: id of the [MASK] token (default vocab_size-1)")
    window: int = Field(5, ge=1, description="skipgram: farthest context word from the center (each pair draws "
                        "its window from 1..WINDOW, as word2vec)")
    negatives: int = Field(5, ge=1, description="skipgram: negatives per pair, drawn from the unigram "
                           "distribution raised to the 3/4 power")

    # preprocessing and augmentation of image inputs (torchvision.transforms.v2, seeded per batch)
    scale_uint8: bool = Field(True, description="scale uint8 images to [0, 1] floats")
    resize: int = Field(0, ge=0, description="resize images to RESIZE x RESIZE first (0: off)")
    random_crop: int = Field(0, ge=0, description="training: random crops of this size (evaluation: centre crop)")
    crop_padding: int = Field(0, ge=0, description="zero padding around an image before its random crop")
    hflip: bool = Field(False, description="training: random horizontal flips")
    vflip: bool = Field(False, description="training: random vertical flips")
    normalize: Literal["none", "given", "auto"] = Field(
        "none", description="normalise channels: with --mean/--std (given) or with the training set's (auto)")
    mean: str | None = Field(None, description="normalize=given: per-channel means, comma-separated")
    std: str | None = Field(None, description="normalize=given: per-channel standard deviations, comma-separated")

    # optimisation
    steps: int = Field(100, ge=1, description="optimizer steps to train for")
    epochs: int = Field(0, ge=0, description="train for this many epochs instead of --steps (0: use --steps)")
    batch_size: int = Field(32, ge=1, description="samples per micro-batch and process")
    grad_accum: int = Field(1, ge=1, description="micro-batches accumulated per optimizer step")
    optimizer: Literal["sgd", "adam", "adamw"] = Field("adamw", description="optimizer")
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.01, ge=0, description="weight decay (never applied to norms and biases)")
    momentum: float = Field(0.9, ge=0, description="sgd momentum")
    beta1: float = Field(0.9, ge=0, lt=1, description="adam/adamw beta1")
    beta2: float = Field(0.999, ge=0, lt=1, description="adam/adamw beta2")
    schedule: Literal["constant", "step", "linear", "cosine", "wsd"] = Field(
        "constant", description="learning-rate schedule (wsd: warm-up, stable, decay)")
    schedule_steps: int | None = Field(None, ge=1, description="step the schedule ends at (default: the first "
                                       "run's steps; kept on resume)")
    decay_fraction: float = Field(0.2, gt=0, le=1, description="wsd schedule: share of the steps spent decaying")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps before the schedule")
    step_size: int | None = Field(None, ge=1, description="step schedule: decay period in steps (default steps/3)")
    gamma: float = Field(0.1, gt=0, description="step schedule: decay factor per period")
    min_lr: float = Field(0.0, ge=0, description="linear / cosine / wsd schedules: final learning rate")
    clip_grad: float = Field(0.0, ge=0, description="clip the gradient norm to this value (0: off)")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="autocast precision")
    find_unused_parameters: bool = Field(False, description="DDP: allow parameters without gradient in a step")
    seed: int = Field(0, ge=0, description="random seed (initialisation, data order, augmentation, dropout)")

    # scale
    strategy: Literal["ddp", "fsdp"] = Field("ddp", description="under torchrun: replicate the model (ddp) or "
                                              "shard it per block (fsdp, FSDP2)")
    activation_checkpointing: bool = Field(False, description="recompute each block's activations in backward")
    memory_budget_gb: float = Field(0.0, ge=0, description="refuse to start above this many GiB per process "
                                    "(0: no limit)")
    compile: bool = Field(False, description="torch.compile the model")
    dist_timeout: float = Field(300.0, gt=0, description="seconds a collective waits for the other processes")

    # evaluation, logging, checkpoints
    eval_every: int = Field(50, ge=0, description="evaluate every N steps (0: after each epoch with --epochs, else at "
                            "the end)")
    eval_steps: int = Field(0, ge=0, description="validation batches per evaluation (0: the whole set)")
    log_every: int = Field(10, ge=1, description="log the training loss every N steps")
    log_format: Literal["csv", "jsonl"] = Field("csv", description="metrics log format")
    out_dir: str = Field("out", description="directory for the log and checkpoints")
    checkpoint_every: int = Field(0, ge=0, description="checkpoint every N steps (0: only at the end)")
    keep_last: int = Field(1, ge=1, description="checkpoints kept (besides best.pt)")
    best_metric: Literal["val_loss", "val_accuracy", "val_perplexity"] = Field(
        "val_loss", description="metric that picks best.pt and drives early stopping")
    early_stop: int = Field(0, ge=0, description="stop after this many evaluations without a better best_metric "
                            "(0: never)")
    wandb_project: str | None = Field(None, description="also log to this Weights & Biases project (if installed)")

    @model_validator(mode="after")
    def _data_files_given(self) -> TrainConfig:
        # data paths are command-line options of the script: a spec need not name them
        if self.data == "npy" and self.task == "seq2seq":
            raise _Problem("seq2seq needs two arrays per sample: use data = npz with 'source' and 'target'", "data")
        if self.data in ("tokens", "text") and self.task in ("classification", "seq2seq"):
            raise _Problem(f"data = {self.data} (a token stream) cannot feed task {self.task}", "data")
        if self.task == "skipgram" and self.data not in ("synthetic", "tokens", "text"):
            raise _Problem(f"task skipgram reads a token stream: data = tokens or text, not {self.data}", "data")
        if self.data in ("cifar", "images") and self.task not in (None, "classification"):
            raise _Problem(f"data = {self.data} (labelled images) feeds task classification", "data")
        if self.normalize == "given" and not (self.mean and self.std):
            raise _Problem("normalize = given needs mean and std (comma-separated, one per channel)", "normalize")
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
