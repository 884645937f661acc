"""--init-from: start from saved weights (safetensors, a torch state_dict, or a train.py checkpoint)."""
from __future__ import annotations

import os

import torch
from torch import nn

from .checkpoint import READ_ERRORS
from .setup import UserError


def read_weights(path: str) -> dict:
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such weights file")
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise UserError(f"{path}: reading .safetensors needs the safetensors package") from None
        try:
            return load_file(path)
        except (OSError, ValueError, RuntimeError) as exc:
            raise UserError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except READ_ERRORS as exc:
        raise UserError(f"{path}: cannot load weights ({exc})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a train.py checkpoint
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: not a state_dict (a mapping of names to tensors)")
    return state


def init_from(model: nn.Module, path: str) -> tuple[list[str], list[str]]:
    """Load `path` into `model`. Tensors the file lacks, or holds with another shape, keep their fresh
    initialisation and are returned (missing, reshaped); a tensor the model has no place for is an error, since
    dropping it silently would hide a mismatched layout."""
    state = read_weights(path)
    own = model.state_dict()
    unknown = sorted(set(state) - set(own))
    if unknown:
        listing = ", ".join(unknown[:8]) + (f" and {len(unknown) - 8} more" if len(unknown) > 8 else "")
        raise UserError(f"{path}: {len(unknown)} tensors have no place in the model: {listing} (is this a "
                        "checkpoint of another model, or in another layout?)")
    reshaped = sorted(k for k in state if tuple(state[k].shape) != tuple(own[k].shape))
    # a tied tensor (GPT-2's lm_head.weight shares wte.weight) is filled by whichever of its names the file holds:
    # `specc weights import` writes the owner only, so the alias is not missing
    names_of: dict[int, list[str]] = {}
    for name, t in model.state_dict(keep_vars=True).items():
        names_of.setdefault(id(t), []).append(name)
    filled = {n for names in names_of.values() if any(k in state and k not in reshaped for k in names) for n in names}
    missing = sorted(set(own) - set(state) - filled)
    load = {k: v for k, v in state.items() if k not in reshaped}
    model.load_state_dict(load, strict=False)
    return missing, [f"{k} {tuple(state[k].shape)} -> {tuple(own[k].shape)}" for k in reshaped]
