"""Checkpoint readers: names, shapes and dtypes first (from headers only), tensors on demand, memory-mapped.

    ckpt = open_checkpoint("gpt2/")          # a Hugging Face folder (sharded or not), a .safetensors, .bin, .pt, .pth
    ckpt.info["h.0.attn.c_attn.weight"]      # TensorInfo(shape, dtype), no data read
    ckpt.get("h.0.attn.c_attn.weight")       # a torch tensor backed by the mapped file
    ckpt.config                              # config.json beside it, or None

safetensors files are read with the `safetensors` library (safe_open: the header, then each tensor from the mapped
file); PyTorch files with torch.load(weights_only=True, mmap=True), which never unpickles code. Files are opened
read-only and never written.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .plan import TensorInfo
from .report import WeightsError

_ST_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
              "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
              "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
SAFETENSORS_CODES = {v: k for k, v in _ST_DTYPES.items()}

_TORCH_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


class Checkpoint:
    """Tensors by name from one or more files, read lazily."""

    def __init__(self, path: Path, config: dict | None = None) -> None:
        self.path = path
        self.config = config
        self.info: dict[str, TensorInfo] = {}
        self.metadata: dict[str, str] = {}  # a safetensors header's __metadata__ (specc writes its model name there)
        self._where: dict[str, Any] = {}  # name -> reader handle
        self._handles: list[Any] = []

    def get(self, name: str):
        handle = self._where[name]
        try:
            return handle.get_tensor(name) if hasattr(handle, "get_tensor") else handle[name]
        except Exception as e:  # noqa: BLE001 - a damaged file surfaces on read: say which file and tensor
            raise WeightsError(f"{self.path}: cannot read tensor {name}: {e}") from None

    def close(self) -> None:
        self._handles.clear()
        self._where.clear()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- formats
    def add_safetensors(self, file: Path, names: list[str] | None = None) -> None:
        from safetensors import safe_open

        try:
            handle = safe_open(str(file), framework="pt", device="cpu")
            keys = list(handle.keys())
            self.metadata.update(handle.metadata() or {})
            infos = {}
            for k in keys:
                sl = handle.get_slice(k)
                code = sl.get_dtype()
                infos[k] = TensorInfo(tuple(sl.get_shape()), _ST_DTYPES.get(code, code.lower()))
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for bad headers
            raise WeightsError(f"{file}: not a readable safetensors file ({_short(e)}); "
                               "it may be truncated or not a safetensors file") from None
        if names is not None:
            missing = sorted(set(names) - set(keys))
            if missing:
                raise WeightsError(f"{file}: the shard index lists {missing[0]} (and {len(missing) - 1} more) "
                                   "but the file does not hold it")
        self._handles.append(handle)
        for k in keys if names is None else names:
            self._add(k, infos[k], handle, file)

    def add_torch(self, file: Path) -> None:
        import pickle

        import torch

        try:
            try:
                state = torch.load(str(file), map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:
                if "mmap" not in str(e):
                    raise
                state = torch.load(str(file), map_location="cpu", weights_only=True)  # legacy (non-zip) format
        except pickle.UnpicklingError as e:
            raise WeightsError(f"{file}: refused: it holds Python objects besides tensors, and loading it would "
                               f"run code ({_short(e)}); save a state_dict (or use safetensors)") from None
        except Exception as e:  # noqa: BLE001 - torch raises RuntimeError/EOFError/zip errors for damaged files
            raise WeightsError(f"{file}: not a readable PyTorch file ({_short(e)}); it may be truncated") from None
        state = _state_dict_of(state, file)
        self._handles.append(state)
        for k, v in state.items():
            self._add(k, TensorInfo(tuple(v.shape), str(v.dtype).removeprefix("torch.")), state, file)

    def _add(self, name: str, info: TensorInfo, handle: Any, file: Path) -> None:
        if name in self.info:
            raise WeightsError(f"{file}: tensor {name} appears in two files of the checkpoint")
        self.info[name] = info
        self._where[name] = handle


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:200]


def _state_dict_of(obj: Any, file: Path) -> dict:
    """A state_dict, or the one inside a training checkpoint ({"state_dict": ...}, {"model": ...})."""
    import torch

    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model", "module", "weights"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner
    raise WeightsError(f"{file}: holds no state_dict (a dict of tensor names to tensors)")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightsError(f"{path}: not valid JSON ({_short(e)})") from None


def open_checkpoint(path: str | Path) -> Checkpoint:
    """A checkpoint file or a Hugging Face style folder (config.json beside it is read when present)."""
    path = Path(path)
    if path.is_dir():
        return _open_folder(path)
    if not path.is_file():
        raise WeightsError(f"no such checkpoint: {path}")
    config_file = path.parent / "config.json"
    ckpt = Checkpoint(path, _read_json(config_file) if config_file.is_file() else None)
    if path.suffix == ".safetensors":
        ckpt.add_safetensors(path)
    elif path.suffix in _TORCH_SUFFIXES:
        ckpt.add_torch(path)
    elif path.name.endswith(".index.json"):
        _add_index(ckpt, path)
    else:
        raise WeightsError(f"{path}: unknown checkpoint format (expected .safetensors, {', '.join(_TORCH_SUFFIXES)}, "
                           "a shard index .index.json or a folder)")
    return ckpt


def _open_folder(folder: Path) -> Checkpoint:
    config = _read_json(folder / "config.json") if (folder / "config.json").is_file() else None
    for name in ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json",
                 "pytorch_model.bin"):
        f = folder / name
        if f.is_file():
            ckpt = Checkpoint(f, config)
            if name.endswith(".index.json"):
                _add_index(ckpt, f)
            elif name.endswith(".safetensors"):
                ckpt.add_safetensors(f)
            else:
                ckpt.add_torch(f)
            return ckpt
    files = sorted(folder.glob("*.safetensors")) or sorted(p for s in _TORCH_SUFFIXES for p in folder.glob("*" + s))
    if len(files) == 1:
        ckpt = Checkpoint(files[0], config)
        (ckpt.add_safetensors if files[0].suffix == ".safetensors" else ckpt.add_torch)(files[0])
        return ckpt
    raise WeightsError(f"{folder}: no model.safetensors, shard index or pytorch_model.bin in this folder"
                       + (f" ({len(files)} candidate files: name one)" if files else ""))


def _add_index(ckpt: Checkpoint, index: Path) -> None:
    """A sharded checkpoint: {"weight_map": {tensor name: shard file}}."""
    data = _read_json(index)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise WeightsError(f"{index}: a shard index needs a non-empty \"weight_map\"")
    by_file: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or "/" in shard or "\\" in shard or shard in ("", ".", ".."):
            raise WeightsError(f"{index}: {name} points at {shard!r}, not a file name beside the index")
        by_file.setdefault(shard, []).append(name)
    for shard, names in by_file.items():
        f = index.parent / shard
        if not f.is_file():
            raise WeightsError(f"{index}: shard {shard} is missing (it holds {names[0]} and {len(names) - 1} more)")
        if f.suffix == ".safetensors":
            ckpt.add_safetensors(f, names)
        else:
            sub = Checkpoint(f)
            sub.add_torch(f)
            for n in names:
                if n not in sub.info:
                    raise WeightsError(f"{f}: the shard index lists {n} but the file does not hold it")
                ckpt._add(n, sub.info[n], sub._where[n], f)
            ckpt._handles.append(sub)
