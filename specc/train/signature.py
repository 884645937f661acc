"""A model's input/output signature, and the check that a training task can drive it.

The IR fills `ModelIO`; `resolve_task` decides (or checks) the task against it and fills in what follows from the
shapes: number of classes or vocabulary size from the logits, sequence lengths from fixed sequence dims.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from .config import TrainConfig, TrainConfigError, parse_settings

Dim = int | str  # a str is a symbolic dim such as 'B' or 'T'

# canonical dtype names (as the IR writes them) and the spellings also accepted
_DTYPE_ALIASES = {
    "float16": "f16", "half": "f16", "bfloat16": "bf16", "float32": "f32", "float": "f32", "float64": "f64",
    "int8": "i8", "int16": "i16", "int32": "i32", "int64": "i64", "long": "i64", "uint8": "u8", "bool": "bool",
}
FLOAT_DTYPES = frozenset({"f16", "bf16", "f32", "f64"})
INT_DTYPES = frozenset({"i8", "i16", "i32", "i64", "u8"})
DEFAULT_SEQ_LEN = 64


class Problem(NamedTuple):
    message: str
    key: str  # the train setting to point at


@dataclass(frozen=True)
class TensorSig:
    name: str
    dtype: str
    shape: tuple[Dim, ...]

    def __post_init__(self) -> None:
        dtype = _DTYPE_ALIASES.get(self.dtype, self.dtype)
        if dtype not in FLOAT_DTYPES | INT_DTYPES | {"bool"}:
            raise ValueError(f"tensor '{self.name}': unknown dtype '{self.dtype}'")
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "shape", tuple(self.shape))

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    @property
    def is_int(self) -> bool:
        return self.dtype in INT_DTYPES

    def __str__(self) -> str:
        return f"'{self.name}': {self.dtype}[{', '.join(map(str, self.shape))}]"


@dataclass(frozen=True)
class ModelIO:
    name: str
    inputs: tuple[TensorSig, ...]
    outputs: tuple[TensorSig, ...] = field(default=())
    bounds: Mapping[str, int] = field(default_factory=dict)  # symbolic dim -> largest size (`T <= ctx`)
    # symbolic dim -> (the spec's text of the bound, its location), e.g. ("T <= ctx", "gpt2.nn:29:33")
    bound_sources: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "bounds", dict(self.bounds))
        object.__setattr__(self, "bound_sources", dict(self.bound_sources))


def resolve_task(cfg: TrainConfig, io: ModelIO, spans: Mapping[str, object] | None = None) -> TrainConfig:
    """Check that `cfg.task` can train `io` and return `cfg` with the task, the logits output, class or vocabulary
    counts and sequence lengths filled in; raise TrainConfigError (all problems, each naming its key) if not."""
    spans = spans or {}
    problems: list[Problem] = []
    logits = _logits_output(cfg, io, problems)
    if logits is None:
        _raise(problems, spans)
    task = cfg.task or _infer_task(io, logits)
    if task is None:
        problems.append(Problem(f"cannot infer the training task from the model's signature ({_describe(io)}); "
                                "set task = classification | causal_lm | masked_lm | seq2seq | skipgram", "task"))
        _raise(problems, spans)
    updates = {"task": task, "output": logits.name, **_batch_size(cfg, io, problems)}
    updates |= _TASK_CHECKS[task](task, cfg, io, logits, problems)
    if problems:
        _raise(problems, spans)
    merged = cfg.model_dump(exclude_unset=True) | updates
    # re-validate: settings that were fine alone may clash with the inferred task (e.g. data = tokens)
    return parse_settings(merged, spans)


def _logits_output(cfg: TrainConfig, io: ModelIO, problems: list) -> TensorSig | None:
    """The output named by the `output` setting, else the first."""
    by_name = {out.name: out for out in io.outputs}
    if not by_name:
        problems.append(Problem(f"model {io.name} has no outputs to train", "task"))
        return None
    if cfg.output is not None and cfg.output not in by_name:
        problems.append(Problem(f"output = {cfg.output}: model {io.name} has outputs {', '.join(by_name)}", "output"))
        return None
    return by_name[cfg.output or io.outputs[0].name]


def _infer_task(io: ModelIO, logits: TensorSig) -> str | None:
    token_inputs = [x for x in io.inputs if x.is_int and len(x.shape) == 2]
    shapes = [len(x.shape) for x in io.inputs]
    if (shapes == [1, 2] and all(x.is_int for x in io.inputs) and len(logits.shape) == 2
            and logits.shape[1] == io.inputs[1].shape[1]):
        return "skipgram"  # center [B], candidates [B, K] -> one score per candidate [B, K]
    if len(logits.shape) == 2:
        return "classification"
    if len(logits.shape) == 3 and len(token_inputs) == len(io.inputs) == 1:
        return "causal_lm"
    if len(logits.shape) == 3 and len(token_inputs) == len(io.inputs) == 2:
        return "seq2seq"
    return None


def _batch_size(cfg: TrainConfig, io: ModelIO, problems: list) -> dict:
    """A model with a fixed batch dim fixes batch_size."""
    fixed = sorted({sig.shape[0] for sig in (*io.inputs, *io.outputs) if sig.shape and isinstance(sig.shape[0], int)})
    if not fixed:
        return {}
    if len(fixed) > 1 or ("batch_size" in cfg.model_fields_set and cfg.batch_size != fixed[0]):
        problems.append(Problem(f"batch_size = {cfg.batch_size}, but the model fixes its batch dim to "
                                f"{' / '.join(map(str, fixed))}", "batch_size"))
        return {}
    return {"batch_size": fixed[0]}


def _check_classification(task: str, cfg: TrainConfig, io: ModelIO, logits: TensorSig, problems: list) -> dict:
    if not (logits.is_float and len(logits.shape) == 2):
        problems.append(Problem(f"task = classification needs float [B, C] logits with labels of shape [B]; "
                                f"output {logits} does not fit", "task"))
        return {}
    updates = {"num_classes": _size(logits, 1, cfg.num_classes, "num_classes", "classes", problems)}
    if any(x.is_int for x in io.inputs) and cfg.data == "synthetic" and cfg.vocab_size is None:
        problems.append(Problem("synthetic data for integer (token) inputs needs vocab_size", "vocab_size"))
    symbolic = sorted({d for x in io.inputs for d in x.shape[1:] if isinstance(d, str)})
    if symbolic:  # the script sets every symbolic sample dim to seq_len
        bounds = [(io.bounds[d], d) for d in symbolic if d in io.bounds]
        bound, dim = min(bounds) if bounds else (None, None)
        updates["seq_len"] = _within_bound(cfg.seq_len, dim, bound, "seq_len", problems)
    return updates


def _check_lm(task: str, cfg: TrainConfig, io: ModelIO, logits: TensorSig, problems: list) -> dict:
    tokens = io.inputs[0] if len(io.inputs) == 1 else None
    if tokens is None or not (tokens.is_int and len(tokens.shape) == 2):
        problems.append(Problem(f"task = {task} needs one integer [B, T] token input; "
                                f"the model has {_describe_inputs(io)}", "task"))
        return {}
    if not _is_sequence_logits(logits, tokens, problems, task):
        return {}
    return {"vocab_size": _size(logits, 2, cfg.vocab_size, "vocab_size", "vocabulary entries", problems),
            "seq_len": _length(tokens, cfg.seq_len, "seq_len", io, problems)}


def _check_seq2seq(task: str, cfg: TrainConfig, io: ModelIO, logits: TensorSig, problems: list) -> dict:
    if len(io.inputs) != 2 or not all(x.is_int and len(x.shape) == 2 for x in io.inputs):
        problems.append(Problem("task = seq2seq needs two integer inputs, source [B, S] then target [B, T]; "
                                f"the model has {_describe_inputs(io)}", "task"))
        return {}
    source, target = io.inputs
    if not _is_sequence_logits(logits, target, problems, task):
        return {}
    updates = {"vocab_size": _size(logits, 2, cfg.vocab_size, "vocab_size", "vocabulary entries", problems),
               "seq_len": _length(source, cfg.seq_len, "seq_len", io, problems)}
    if isinstance(target.shape[1], int) or target.shape[1] in io.bounds or cfg.target_len:
        updates["target_len"] = _length(target, cfg.target_len, "target_len", io, problems, default=updates["seq_len"])
    # else target_len stays unset, and the script follows seq_len (also when --seq-len changes it)
    return updates


def _check_skipgram(task: str, cfg: TrainConfig, io: ModelIO, logits: TensorSig, problems: list) -> dict:
    """Skip-gram with negative sampling: center ids [B] and candidate ids [B, K] (column 0 the true context, the
    rest negatives) in, one score per candidate [B, K] out."""
    fits = (len(io.inputs) == 2 and io.inputs[0].is_int and len(io.inputs[0].shape) == 1
            and io.inputs[1].is_int and len(io.inputs[1].shape) == 2)
    if not fits:
        problems.append(Problem("task = skipgram needs two integer inputs, center [B] then context [B, K] (the true "
                                f"context word, then the negatives); the model has {_describe_inputs(io)}", "task"))
        return {}
    if not (logits.is_float and len(logits.shape) == 2):
        problems.append(Problem(f"task = skipgram needs float [B, K] scores, one per context candidate; output "
                                f"{logits} does not fit", "task"))
        return {}
    updates = {}
    width = io.inputs[1].shape[1]
    if isinstance(width, int):  # the model fixes K: K - 1 negatives per pair
        if "negatives" in cfg.model_fields_set and cfg.negatives != width - 1:
            problems.append(Problem(f"negatives = {cfg.negatives}, but input {io.inputs[1]} fixes the true context "
                                    f"plus {width - 1} negatives", "negatives"))
        elif width < 2:
            problems.append(Problem(f"task = skipgram needs at least one negative; input {io.inputs[1]} has room "
                                    "for the true context only", "task"))
        else:
            updates["negatives"] = width - 1
    if cfg.vocab_size is None:
        problems.append(Problem("task = skipgram samples negatives from the vocabulary: set vocab_size (e.g. "
                                "vocab_size = vocab)", "task"))
    return updates


_TASK_CHECKS = {
    "classification": _check_classification,
    "causal_lm": _check_lm,
    "masked_lm": _check_lm,
    "seq2seq": _check_seq2seq,
    "skipgram": _check_skipgram,
}


def _is_sequence_logits(logits: TensorSig, tokens: TensorSig, problems: list, task: str) -> bool:
    """Token-level tasks need float [B, T, V] logits aligned with the [B, T] token input."""
    if not (logits.is_float and len(logits.shape) == 3):
        problems.append(Problem(f"task = {task} needs float [B, T, V] logits with integer labels [B, T]; "
                                f"output {logits} does not fit", "task"))
        return False
    out_len, in_len = logits.shape[1], tokens.shape[1]
    if isinstance(out_len, int) and isinstance(in_len, int) and out_len != in_len:
        problems.append(Problem(f"task = {task}: logits {logits} have {out_len} positions but input {tokens} has {in_len}",
                                "task"))
        return False
    return True


def _size(sig: TensorSig, axis: int, given: int | None, key: str, what: str, problems: list) -> int | None:
    """A class/vocabulary count read off the logits, reconciled with the setting that may also give it."""
    dim = sig.shape[axis]
    if isinstance(dim, str):
        if given is None:
            problems.append(Problem(f"output {sig} has a symbolic number of {what} '{dim}': set {key}", key))
        return given
    if given is not None and given != dim:
        problems.append(Problem(f"{key} = {given}, but output {sig} has {dim} {what}", key))
    return dim


def _length(sig: TensorSig, given: int | None, key: str, io: ModelIO, problems: list,
            default: int | None = None) -> int:
    """A sequence length: fixed by the input's dim when it is a number, else the setting."""
    dim = sig.shape[1]
    if isinstance(dim, int):
        if given is not None and given != dim:
            problems.append(Problem(f"{key} = {given}, but input {sig} fixes the length to {dim}", key))
        return dim
    return _within_bound(given, dim, io.bounds.get(dim), key, problems, default)


def _within_bound(given: int | None, dim: str | None, bound: int | None, key: str, problems: list,
                  default: int | None = None) -> int:
    """The setting for a symbolic dim, checked against the model's bound on it; by default 64 (or the bound)."""
    if given is not None and bound is not None and given > bound:
        problems.append(Problem(f"{key} = {given}, but the model allows at most {dim} = {bound}", key))
    default = default or DEFAULT_SEQ_LEN
    return given or (min(default, bound) if bound is not None else default)


def _describe_inputs(io: ModelIO) -> str:
    return "inputs " + ", ".join(map(str, io.inputs)) if io.inputs else "no inputs"


def _describe(io: ModelIO) -> str:
    return f"{_describe_inputs(io)}; outputs " + ", ".join(map(str, io.outputs))


def _raise(problems: list[Problem], spans: Mapping[str, object]) -> None:
    errors = [TrainConfigError(message, key, spans.get(key)) for message, key in problems]
    first, *rest = errors
    raise TrainConfigError(first.message, first.key, first.span, related=tuple(rest))
