"""Write a safetensors file one tensor at a time, all or nothing.

safetensors' own save_file takes every tensor at once (a dict), so converting a checkpoint through it would hold
a second copy of all the weights. The format is a little-endian u64 header size, a JSON header (dtype, shape and
byte range of each tensor) and the raw bytes; since a plan knows every name, shape and dtype before any data is
read, the header is written first and each tensor is appended as it is produced, then dropped. Files are read back
with the `safetensors` library (tests check this writer against it). Writing goes to a temporary file beside the
target, renamed over it only when everything was written: a failed conversion leaves nothing behind.
"""
from __future__ import annotations

import json
import math
import os
import struct
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from .plan import TensorInfo
from .readers import SAFETENSORS_CODES
from .report import WeightsError

_ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "int16": 2, "int8": 1,
             "uint8": 1, "bool": 1, "float8_e4m3fn": 1, "float8_e5m2": 1}


def header_bytes(tensors: dict[str, TensorInfo], metadata: dict[str, str] | None = None) -> bytes:
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, info in tensors.items():
        size = math.prod(info.shape) * _ITEMSIZE[info.dtype]
        header[name] = {"dtype": SAFETENSORS_CODES[info.dtype], "shape": list(info.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    return struct.pack("<Q", len(text)) + text


def write_safetensors(path: Path, tensors: dict[str, TensorInfo], produce: Iterable[tuple[str, object]],
                      metadata: dict[str, str] | None = None, check: Callable[[], None] | None = None) -> None:
    """`produce` yields (name, tensor) in the order of `tensors`; `check` runs before the file is committed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header_bytes(tensors, metadata))
            order = iter(tensors.items())
            for name, t in produce:
                want_name, info = next(order, (None, None))
                if name != want_name or tuple(t.shape) != tuple(info.shape) or \
                        str(t.dtype).removeprefix("torch.") != info.dtype:
                    raise WeightsError(f"internal: produced {name} {tuple(t.shape)} {t.dtype}, planned {want_name} "
                                       f"{info and info.shape} {info and info.dtype}")
                _write_tensor(f, t)
                del t
            left = next(order, None)
            if left is not None:
                raise WeightsError(f"internal: {left[0]} was planned but not produced")
        if check is not None:
            check()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_tensor(f, t) -> None:
    import torch

    t = t.detach().contiguous()
    if t.numel() == 0:
        return
    if t.device.type != "cpu":
        t = t.cpu()
    raw = t.reshape(-1).view(torch.uint8) if t.dtype != torch.bool else t.reshape(-1).to(torch.uint8)
    f.write(memoryview(raw.numpy()))
