"""Tasks: raw samples -> (model inputs, labels), the checks every batch passes, and the losses."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .cli import mask_token
from .setup import IGNORE_INDEX, DataError, ScriptSetup, UserError

TORCH_DTYPES = {
    "f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32, "f64": torch.float64,
    "i8": torch.int8, "i16": torch.int16, "i32": torch.int32, "i64": torch.int64, "u8": torch.uint8,
    "bool": torch.bool,
}


def _classification(setup, cfg, source, raw, indices, salt):
    return [raw[spec.name] for spec in setup.inputs], raw["labels"]


def _causal_lm(setup, cfg, source, raw, indices, salt):
    tokens = checked_tokens(raw["tokens"], source.files["tokens"], cfg)
    return [tokens[:, :-1]], tokens[:, 1:]


def _masked_lm(setup, cfg, source, raw, indices, salt):
    """BERT masking: mask_prob of the positions are predicted; of those 80% [MASK], 10% random, 10% kept.
    Each sample's mask is seeded by (seed, split, sample index), so reruns and resumes repeat it exactly."""
    tokens = checked_tokens(raw["tokens"], source.files["tokens"], cfg)
    inputs, labels = tokens.copy(), np.full_like(tokens, IGNORE_INDEX)
    for row, index in enumerate(source.offset + np.asarray(indices)):
        rng = np.random.default_rng([cfg.seed, salt, int(index)])
        chosen = rng.random(tokens.shape[1]) < cfg.mask_prob
        chosen[rng.integers(tokens.shape[1])] = True  # at least one target per sample
        action = rng.random(tokens.shape[1])
        labels[row, chosen] = tokens[row, chosen]
        inputs[row, chosen & (action < 0.8)] = mask_token(cfg)
        randomized = chosen & (action >= 0.8) & (action < 0.9)
        inputs[row, randomized] = rng.integers(cfg.vocab_size, size=int(randomized.sum()))
    return [inputs], labels


def _seq2seq(setup, cfg, source, raw, indices, salt):
    src = checked_tokens(raw["source"], source.files["source"], cfg)
    tgt = checked_tokens(raw["target"], source.files["target"], cfg)
    return [src, tgt[:, :-1]], tgt[:, 1:]  # teacher forcing


def _skipgram(setup, cfg, source, raw, indices, salt):
    """Skip-gram with negative sampling (Mikolov et al. 2013): sample i is the center word at the middle of its
    window; its context word is drawn at distance k with word2vec's odds (its shrunk windows pair words k apart
    in proportion to window - k + 1), on either side, and `negatives` noise words come from the unigram^0.75
    distribution. Each sample's draws are seeded by (seed, split, sample index), so reruns and resumes repeat
    them exactly.
    Inputs: center [B] and candidates [B, 1 + negatives] (column 0 the true context); label: 0, its column."""
    tokens = checked_tokens(raw["tokens"], source.files["tokens"], cfg)
    half = (tokens.shape[1] - 1) // 2
    candidates = np.empty((len(tokens), 1 + cfg.negatives), dtype=np.int64)
    distance_cdf = np.cumsum(np.arange(half, 0, -1)) / (half * (half + 1) / 2)  # k = 1..half: half - k + 1
    for row, index in enumerate(source.offset + np.asarray(indices)):
        rng = np.random.default_rng([cfg.seed, salt, int(index)])
        distance = 1 + min(int(np.searchsorted(distance_cdf, rng.random(), side="right")), half - 1)
        side = 1 if rng.random() < 0.5 else -1
        candidates[row, 0] = tokens[row, half + side * distance]
        candidates[row, 1:] = np.searchsorted(source.noise, rng.random(cfg.negatives), side="right")
    np.minimum(candidates, cfg.vocab_size - 1, out=candidates)  # a draw of exactly 1.0 stays in the vocabulary
    return [tokens[:, half], candidates], np.zeros(len(tokens), dtype=np.int64)


TASK_BATCHES = {"classification": _classification, "causal_lm": _causal_lm, "masked_lm": _masked_lm,
                "seq2seq": _seq2seq, "skipgram": _skipgram}


def checked_tokens(tokens: np.ndarray, path: str, cfg) -> np.ndarray:
    """Integer ids inside the vocabulary, as int64; float arrays are accepted only when every id is whole."""
    if np.issubdtype(tokens.dtype, np.floating):
        whole = np.isfinite(tokens) & (np.floor(tokens) == tokens)
        if not whole.all():
            raise DataError(f"{path}: token id {float(tokens[~whole].flat[0])!r} is not a whole number "
                            "(token ids must be integers)")
    low, high = tokens.min(), tokens.max()
    if low < 0 or high >= cfg.vocab_size:
        bad = low if low < 0 else high
        raise DataError(f"{path}: token id {int(bad)} is outside the vocabulary 0..{cfg.vocab_size - 1} "
                        "(corrupt file, wrong --token-dtype or wrong --vocab-size?)")
    return tokens.astype(np.int64)


def _check_input(array: np.ndarray, spec, path: str, indices) -> None:
    if np.issubdtype(array.dtype, np.floating) and spec.is_float:
        finite = np.isfinite(array.reshape(len(array), -1)).all(1)
        if not finite.all():
            raise DataError(f"{path}: input '{spec.name}' of sample {int(indices[np.argmin(finite)])} holds "
                            "NaN or infinity")
    elif spec.dtype == "bool":
        if array.dtype != np.bool_ and not np.isin(array, (0, 1)).all():
            raise DataError(f"{path}: input '{spec.name}' is bool, but the array holds values other than 0 and 1")
    elif not spec.is_float and np.issubdtype(array.dtype, np.floating):
        whole = np.isfinite(array) & (np.floor(array) == array)
        if not whole.all():
            raise DataError(f"{path}: input '{spec.name}' is {spec.dtype}, but the array holds "
                            f"{float(array[~whole].flat[0])!r}, not a whole number")


def make_batch(setup: ScriptSetup, cfg, source, indices: np.ndarray, salt: int, preprocess=None,
               seed: int = 0) -> tuple:
    """(inputs, labels) as CPU tensors for the samples `indices` of `source`; salt 0 trains, 1 evaluates."""
    raw = source.take(indices)
    inputs, labels = TASK_BATCHES[cfg.task](setup, cfg, source, raw, indices, salt)
    tensors = []
    for x, spec in zip(inputs, setup.inputs):
        _check_input(x, spec, source.files.get(spec.name, source.source), source.offset + np.asarray(indices))
        t = torch.from_numpy(np.ascontiguousarray(x))
        if preprocess is not None and spec.is_float and t.ndim == 4:
            t = preprocess(t, salt == 0, seed)
        elif spec.is_float and t.dtype == torch.uint8 and cfg.scale_uint8:
            t = t.float().div_(255)  # raw bytes (pixels) fed to a float input: scaled unless told otherwise
        tensors.append(t.to(TORCH_DTYPES[spec.dtype]))
    return tensors, torch.from_numpy(np.ascontiguousarray(labels)).to(torch.int64)


def logits_of(setup: ScriptSetup, cfg, output) -> torch.Tensor:
    return output[setup.outputs.index(cfg.output)] if isinstance(output, (tuple, list)) else output


def check_logits(logits: torch.Tensor, labels: torch.Tensor, cfg) -> None:
    """Once, on the first batch: the model's logits must line up with the task's labels."""
    if cfg.task == "skipgram":
        if tuple(logits.shape) != (len(labels), 1 + cfg.negatives):
            raise UserError(f"the model returned scores of shape {tuple(logits.shape)}, but task skipgram needs "
                            f"{(len(labels), 1 + cfg.negatives)}: the true context and {cfg.negatives} negatives")
        return
    classes = cfg.num_classes if cfg.task == "classification" else cfg.vocab_size
    if tuple(logits.shape) != (*labels.shape, classes):
        raise UserError(f"the model returned logits of shape {tuple(logits.shape)}, but task {cfg.task} needs "
                        f"{(*labels.shape, classes)} for labels of shape {tuple(labels.shape)}")


def task_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean",
              task: str | None = None) -> torch.Tensor:
    """Cross-entropy for every task: [B, C] vs [B] and [B, T, V] vs [B, T] alike; skipgram's negative-sampling
    loss on its [B, 1 + K] scores."""
    if task == "skipgram":
        return skipgram_loss(logits, reduction)
    return F.cross_entropy(logits.float().flatten(0, -2), labels.flatten(), ignore_index=IGNORE_INDEX,
                           reduction=reduction)


def skipgram_loss(scores: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """-log sigmoid(u_o . v_c) - sum_k log sigmoid(-u_k . v_c) per pair: column 0 of `scores` is the true
    context's score, the rest the negatives'."""
    scores = scores.float()
    per_pair = -F.logsigmoid(scores[:, 0]) - F.logsigmoid(-scores[:, 1:]).sum(-1)
    return per_pair.sum() if reduction == "sum" else per_pair.mean()


def aux_loss(model: nn.Module, device) -> torch.Tensor:
    """Auxiliary losses (MoE load balancing, z-loss) the model accumulated in its last forward."""
    method = getattr(model, "aux_loss", None)
    return method().float() if method is not None else torch.zeros((), device=device)
