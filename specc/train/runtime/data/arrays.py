"""Sources held as arrays: .npy / .npz files, flat binary token files (nanoGPT's train.bin), synthetic data."""
from __future__ import annotations

import dataclasses
import os
import pickle
import zipfile

import numpy as np

from ..cli import target_len
from ..setup import DataError, ScriptSetup, TensorSpec

# what numpy raises on a damaged file
READ_ERRORS = (ValueError, OSError, EOFError, RuntimeError, zipfile.BadZipFile, pickle.UnpicklingError)


@dataclasses.dataclass(frozen=True)
class Samples:
    """`count` samples from `offset` on: rows of named arrays, or windows over the 1-D stream arrays['tokens'].

    `files` maps each array name to the file it came from, so every data error can name the file.
    """

    arrays: dict
    files: dict
    count: int
    offset: int = 0
    window: int = 0  # > 0: sample i is tokens[i*stride : i*stride + window]
    stride: int = 0
    noise: np.ndarray | None = None  # skipgram: cumulative unigram^0.75 distribution the negatives come from

    def take(self, indices: np.ndarray) -> dict:
        rows = self.offset + np.asarray(indices, dtype=np.int64)
        if self.window:
            tokens = self.arrays["tokens"]
            return {"tokens": np.stack([np.asarray(tokens[s:s + self.window]) for s in rows * self.stride])}
        return {name: np.asarray(array[rows]) for name, array in self.arrays.items()}

    def split(self, n_tail: int) -> tuple:
        head = dataclasses.replace(self, count=self.count - n_tail)
        tail = dataclasses.replace(self, offset=self.offset + self.count - n_tail, count=n_tail)
        return head, tail

    @property
    def source(self) -> str:
        return next(iter(self.files.values()))


def require_file(path: str) -> None:
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")


def open_npy(path: str) -> np.ndarray:
    require_file(path)
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except READ_ERRORS as exc:
        raise DataError(f"{path}: not a readable .npy file ({exc})") from None


def open_npz(path: str, names: list[str]) -> dict:
    require_file(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [n for n in names if n not in archive.files]
            if missing:
                raise DataError(f"{path}: no array named {', '.join(map(repr, missing))} "
                                f"(it holds {', '.join(map(repr, archive.files)) or 'nothing'})")
            return {n: archive[n] for n in names}
    except READ_ERRORS as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None


def open_tokens(path: str, dtype: str) -> np.ndarray:
    """A flat binary file of token ids, memory-mapped (the nanoGPT train.bin format)."""
    require_file(path)
    size, itemsize = os.path.getsize(path), np.dtype(dtype).itemsize
    if size == 0:
        raise DataError(f"{path}: the token file is empty")
    if size % itemsize:
        raise DataError(f"{path}: {size} bytes is not a whole number of {dtype} tokens ({itemsize} bytes each); "
                        "the file is truncated or --token-dtype is wrong")
    return np.memmap(path, dtype=dtype, mode="r")


def load_array_samples(setup: ScriptSetup, cfg, path: str, labels_path: str | None) -> Samples:
    """One split from npy / npz / token files, checked against the model's inputs."""
    task = cfg.task
    if cfg.data == "tokens":
        return token_samples(open_tokens(path, cfg.token_dtype), path, cfg)
    if task == "classification":
        if cfg.data == "npy":
            if not labels_path:
                raise DataError(f"{path}: data=npy classification needs the labels file too (--train-labels)")
            files = {setup.inputs[0].name: path, "labels": labels_path}
            arrays = {name: open_npy(file) for name, file in files.items()}
        else:
            names = [x.name for x in setup.inputs] + ["labels"]
            arrays, files = open_npz(path, names), dict.fromkeys(names, path)
        return classification_samples(setup, cfg, arrays, files)
    if task == "seq2seq":
        arrays = open_npz(path, ["source", "target"])
        return _seq2seq_samples(cfg, arrays, dict.fromkeys(arrays, path))
    tokens = open_npy(path) if cfg.data == "npy" else open_npz(path, ["tokens"])["tokens"]
    if tokens.ndim == 1:
        return token_samples(tokens, path, cfg)
    _check_rows(path, "tokens", tokens, window_length(cfg))
    return Samples({"tokens": tokens}, {"tokens": path}, count=len(tokens))


def window_length(cfg) -> int:
    """Tokens per language-model sample: causal_lm needs one more than it feeds, for the shifted labels; a
    skip-gram sample is a center word with `window` words on either side."""
    if cfg.task == "skipgram":
        return 2 * cfg.window + 1
    return cfg.seq_len + 1 if cfg.task == "causal_lm" else cfg.seq_len


def token_samples(tokens: np.ndarray, path: str, cfg) -> Samples:
    if not _is_token_array(tokens):
        raise DataError(f"{path}: token ids must be integers, not {tokens.dtype}")
    window = window_length(cfg)
    needs = f"window {cfg.window}" if cfg.task == "skipgram" else f"seq_len {cfg.seq_len}"
    if len(tokens) < window:
        raise DataError(f"{path}: {len(tokens)} tokens, fewer than the {window} one sample needs ({needs})")
    if cfg.task == "skipgram":  # every position with a full window around it is a center word
        return Samples({"tokens": tokens}, {"tokens": path}, count=len(tokens) - window + 1, window=window,
                       stride=1, noise=noise_distribution(tokens, path, cfg.vocab_size))
    count = (len(tokens) - window) // cfg.seq_len + 1
    return Samples({"tokens": tokens}, {"tokens": path}, count=count, window=window, stride=cfg.seq_len)


def noise_distribution(tokens: np.ndarray, path: str, vocab_size: int) -> np.ndarray:
    """The cumulative unigram distribution raised to the 3/4 power (Mikolov et al. 2013), over the whole stream,
    counted in chunks so a memory-mapped file is read once and never held in memory."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for start in range(0, len(tokens), 1 << 24):
        chunk = np.asarray(tokens[start:start + (1 << 24)])
        if np.issubdtype(chunk.dtype, np.floating) and not (np.floor(chunk) == chunk).all():
            raise DataError(f"{path}: token ids must be whole numbers")
        chunk = chunk.astype(np.int64)
        if chunk.size and (chunk.min() < 0 or chunk.max() >= vocab_size):
            bad = chunk.min() if chunk.min() < 0 else chunk.max()
            raise DataError(f"{path}: token id {int(bad)} is outside the vocabulary 0..{vocab_size - 1} "
                            "(corrupt file, wrong --token-dtype or wrong --vocab-size?)")
        counts += np.bincount(chunk, minlength=vocab_size)
    weights = counts.astype(np.float64) ** 0.75
    cdf = np.cumsum(weights)
    return cdf / cdf[-1]


def _is_token_array(array: np.ndarray) -> bool:
    """Integers; floats pass here and each batch is checked for fractions (see tasks.checked_tokens)."""
    return np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)


def _check_rows(path: str, name: str, array: np.ndarray, width: int) -> None:
    if array.ndim != 2 or array.shape[1] != width or not _is_token_array(array):
        raise DataError(f"{path}: '{name}' should be integer rows of {width} tokens, got {array.dtype} array of "
                        f"shape {tuple(array.shape)}")


def _check_count(files: dict, arrays: dict) -> int:
    counts = {name: len(array) if array.ndim else 0 for name, array in arrays.items()}
    if len(set(counts.values())) > 1:
        listing = ", ".join(f"{files[n]}:{n} has {c}" for n, c in counts.items())
        raise DataError(f"{files[next(iter(files))]}: arrays disagree on the number of samples ({listing})")
    count = next(iter(counts.values()))
    if count == 0:
        raise DataError(f"{files[next(iter(files))]}: no samples")
    return count


def classification_samples(setup: ScriptSetup, cfg, arrays: dict, files: dict) -> Samples:
    count = _check_count(files, arrays)
    for spec in setup.inputs:
        array, path = arrays[spec.name], files[spec.name]
        expected = spec.shape[1:]
        fits = array.ndim == len(spec.shape) and all(
            isinstance(want, str) or want == got for want, got in zip(expected, array.shape[1:]))
        if not fits and not _resizable(spec, array, cfg):
            raise DataError(f"{path}: input '{spec.name}' should have samples of shape "
                            f"[{', '.join(map(str, expected))}], got array of shape {tuple(array.shape)}")
        if spec.dtype == "bool" and not (array.dtype == np.bool_ or np.issubdtype(array.dtype, np.integer)):
            raise DataError(f"{path}: input '{spec.name}' is bool, so its array must hold booleans (or 0/1 "
                            f"integers), not {array.dtype}")
        if not spec.is_float and spec.dtype != "bool" and not _is_token_array(array):
            raise DataError(f"{path}: input '{spec.name}' is {spec.dtype}, so its array must hold integers, "
                            f"not {array.dtype}")
    labels, path = np.asarray(arrays["labels"]), files["labels"]
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: labels should be a 1-D integer array, got {labels.dtype} of shape {labels.shape}")
    if labels.min() < 0 or labels.max() >= cfg.num_classes:
        raise DataError(f"{path}: labels span {labels.min()}..{labels.max()}, outside 0..{cfg.num_classes - 1} "
                        f"(num_classes {cfg.num_classes})")
    return Samples(arrays, files, count=count)


def _resizable(spec: TensorSpec, array: np.ndarray, cfg) -> bool:
    """Images of another size are fine when a resize or crop brings them to the model's size."""
    return (spec.is_float and len(spec.shape) == 4 and array.ndim == 4 and array.shape[1] == spec.shape[1]
            and bool(cfg.resize or cfg.random_crop))


def _seq2seq_samples(cfg, arrays: dict, files: dict) -> Samples:
    _check_rows(files["source"], "source", arrays["source"], cfg.seq_len)
    _check_rows(files["target"], "target", arrays["target"], target_len(cfg) + 1)  # +1: shifted labels
    return Samples(arrays, files, count=_check_count(files, arrays))


def synthetic_samples(setup: ScriptSetup, cfg, count: int, salt: int) -> Samples:
    """Learnable random data: `salt` picks the split; the structure to learn is shared by all splits."""
    structure = np.random.default_rng([cfg.seed, 7919])
    rng = np.random.default_rng([cfg.seed, salt])
    files = {"tokens": "<synthetic data>"}
    if cfg.task in ("causal_lm", "masked_lm", "skipgram"):
        # a permuted counter advancing by 1 or 2: each token leaves two equally likely successors
        perm = structure.permutation(cfg.vocab_size)
        length = count + 2 * cfg.window if cfg.task == "skipgram" else count * cfg.seq_len + 1
        steps = rng.integers(1, 3, size=length)
        tokens = perm[np.cumsum(steps) % cfg.vocab_size].astype(np.int64)
        return token_samples(tokens, files["tokens"], cfg)
    if cfg.task == "seq2seq":
        # translate each source token through a fixed permutation, position by position
        perm = structure.permutation(cfg.vocab_size)
        source = rng.integers(1, cfg.vocab_size, size=(count, cfg.seq_len))
        target = np.zeros((count, target_len(cfg) + 1), dtype=np.int64)
        target[:, 1:] = perm[source[:, np.arange(target_len(cfg)) % cfg.seq_len]]
        arrays = {"source": source, "target": target}
        return Samples(arrays, dict.fromkeys(arrays, files["tokens"]), count=count)
    labels = rng.integers(cfg.num_classes, size=count)
    arrays = {"labels": labels}
    token_inputs = [spec.name for spec in setup.inputs if not spec.is_float and spec.dtype != "bool"]
    for spec in setup.inputs:
        shape = concrete_shape(spec, cfg)
        if spec.is_float:
            # a noisy copy of its class's random prototype
            prototypes = structure.standard_normal((cfg.num_classes, *shape)).astype(np.float32)
            arrays[spec.name] = prototypes[labels] + rng.standard_normal((count, *shape)).astype(np.float32)
        elif spec.dtype == "bool":
            arrays[spec.name] = np.ones((count, *shape), dtype=np.bool_)  # e.g. an attention mask: attend to all
        elif spec.name == token_inputs[0]:
            # random tokens, the first of which names the class
            ids = rng.integers(cfg.vocab_size, size=(count, *shape))
            ids.reshape(count, -1)[:, 0] = labels % cfg.vocab_size
            arrays[spec.name] = ids
        else:
            # further integer inputs (token types, positions) have ranges of their own: 0 is valid in all
            arrays[spec.name] = np.zeros((count, *shape), dtype=np.int64)
    return Samples(arrays, dict.fromkeys(arrays, files["tokens"]), count=count)


def concrete_shape(spec: TensorSpec, cfg) -> tuple:
    """A sample's shape, symbolic sequence dims set to seq_len."""
    return tuple(cfg.seq_len if isinstance(d, str) else d for d in spec.shape[1:])
