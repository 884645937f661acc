"""Text for language models: local json / csv / parquet / arrow files read with Hugging Face `datasets`,
tokenized with a `tokenizers` JSON file into one token stream (documents joined by the end-of-text token)."""
from __future__ import annotations

import os

import numpy as np

from ..setup import DataError
from .arrays import Samples, token_samples

FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".arrow": "arrow"}


def text_samples(cfg, path: str) -> Samples:
    kind = FORMATS.get(os.path.splitext(path)[1].lower())
    if kind is None:
        raise DataError(f"{path}: --data text reads {', '.join(FORMATS)} files")
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    try:
        import datasets
        from tokenizers import Tokenizer
    except ImportError:
        raise DataError(f"{path}: --data text needs the datasets and tokenizers packages "
                        "(pip install datasets tokenizers)") from None
    try:
        tokenizer = Tokenizer.from_file(cfg.tokenizer)
    except Exception as exc:  # tokenizers raises its own Exception subclass for unreadable files
        raise DataError(f"{cfg.tokenizer}: not a readable tokenizers file ({exc})") from None
    try:
        table = datasets.load_dataset(kind, data_files=path, split="train")
    except Exception as exc:  # pyarrow and datasets raise many types for one unreadable file
        raise DataError(f"{path}: cannot read it as {kind} ({type(exc).__name__}: {exc})") from None
    if cfg.text_field not in table.column_names:
        raise DataError(f"{path}: no column '{cfg.text_field}' (it has {', '.join(table.column_names)}); "
                        "set --text-field")
    eos = tokenizer.token_to_id(cfg.eos_token) if cfg.eos_token else None
    if cfg.eos_token and eos is None:
        raise DataError(f"{cfg.tokenizer}: no token '{cfg.eos_token}' (--eos-token)")
    pieces = []
    for encoding in tokenizer.encode_batch([str(t) for t in table[cfg.text_field]]):
        pieces.append(np.asarray(encoding.ids, dtype=np.int64))
        if eos is not None:
            pieces.append(np.asarray([eos], dtype=np.int64))
    tokens = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    if tokens.size and tokens.max() >= cfg.vocab_size:
        raise DataError(f"{cfg.tokenizer}: the tokenizer gives id {tokens.max()}, outside the model's vocabulary "
                        f"of {cfg.vocab_size}")
    return token_samples(tokens, path, cfg)
