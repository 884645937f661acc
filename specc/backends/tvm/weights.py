"""The weights a TVM build binds, by PyTorch state_dict name (specc/naming.py gives both backends the same names):
from a state_dict, an nn.Module, a .npz or .pt file, or the emitted PyTorch module's own seeded initialisation."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np


def load_weights(weights, wanted: Mapping[str, tuple[tuple[int, ...], str]], spec=None, opt_level=None,
                 disabled: tuple = (), seed: int = 0) -> dict[str, np.ndarray]:
    """Weights by state_dict name, checked against what the lowered model needs (name, shape)."""
    if weights is None:
        source = _torch_init(spec, opt_level, disabled, seed)
    elif isinstance(weights, (str, Path)):
        source = _read_weights(Path(weights))
    elif hasattr(weights, "state_dict"):
        source = weights.state_dict()
    else:
        source = weights
    out, problems = {}, []
    for name, (shape, dtype) in wanted.items():
        if name not in source:
            problems.append(f"missing {name} {list(shape)}")
            continue
        value = _numpy(source[name]).astype(dtype, copy=False)
        if tuple(value.shape) != tuple(shape):
            problems.append(f"{name}: shape {list(value.shape)}, the model needs {list(shape)}")
        out[name] = value
    if problems:
        raise ValueError("weights do not fit the model: " + "; ".join(problems))
    return out


def _numpy(v) -> np.ndarray:
    if hasattr(v, "detach"):
        return v.detach().cpu().numpy()
    return np.asarray(v)


def _read_weights(path: Path) -> dict:
    if path.suffix == ".npz":
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.state_dict() if hasattr(state, "state_dict") else state


def _torch_init(spec, opt_level, disabled, seed) -> dict:
    """The emitted PyTorch module's default initialisation, seeded: both backends then hold the same weights."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = spec.to_torch(opt_level=opt_level, disabled=disabled)
    return model.state_dict()
