"""Checkpoints: every random stream and position a run needs to continue bit for bit, written atomically.

One process or DDP: one `torch.save` file (`checkpoint.pt`, plus `step-N.pt` for --keep-last and `best.pt`).
FSDP: a `torch.distributed.checkpoint` folder per save (`step-N.dcp/`, each rank writes its shards) written under
a temporary name and renamed into place, then `latest.dcp` (a one-line file naming the folder) replaced
atomically; a folder is only ever read through that pointer. Leftovers of a killed save end in `.tmp` and are
removed when the next run starts.
"""
from __future__ import annotations

import glob
import os
import pickle
import random
import shutil
import zipfile

import numpy as np
import torch
import torch.distributed as dist

from .setup import CHECKPOINT_FORMAT, UserError

READ_ERRORS = (ValueError, OSError, EOFError, RuntimeError, zipfile.BadZipFile, pickle.UnpicklingError)
LATEST_DCP = "latest.dcp"


def rng_state() -> dict:
    """Every random stream the run draws from, in a form torch.load(weights_only=True) accepts."""
    np_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {**np_state, "state": {**np_state["state"], "key": np_state["state"]["key"].tolist()}},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np_state = state["numpy"]
    np.random.set_state({**np_state, "state": {**np_state["state"],
                                               "key": np.asarray(np_state["state"]["key"], dtype=np.uint32)}})
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def all_rng_states(world: int) -> list:
    states = [rng_state()]
    if world > 1:  # each rank's dropout stream, so a resumed run continues each one
        states = [None] * world
        dist.all_gather_object(states, rng_state())
    return states


def save_atomically(state: dict, path: str) -> None:
    """Write to a temporary file and rename it over the old one: a crash never leaves a torn checkpoint."""
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_text_atomically(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def remove_leftovers(out_dir: str) -> list[str]:
    """Temporaries of a save that was killed half-way (files and DCP folders ending in .tmp)."""
    found = sorted(glob.glob(os.path.join(glob.escape(out_dir), "*.tmp")))
    for path in found:
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)
    return found


def load_checkpoint(path: str, device) -> dict:
    if os.path.isdir(path) or path.endswith(".dcp"):
        return load_meta(path)
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except READ_ERRORS as exc:
        raise UserError(f"{path}: cannot load checkpoint ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path}: not a checkpoint written by this version of specc's train.py")
    return state


# ---------------------------------------------------------------------------------------------------------------
# sharded (FSDP) checkpoints


def resolve_dcp(path: str) -> str:
    """A DCP folder, or the folder `latest.dcp` names."""
    if os.path.isfile(path):
        with open(path) as f:
            path = os.path.join(os.path.dirname(path), f.read().strip())
    if not os.path.isdir(path):
        raise UserError(f"{path}: no such sharded checkpoint folder")
    return path


def load_meta(path: str) -> dict:
    folder = resolve_dcp(path)
    try:
        state = torch.load(os.path.join(folder, "meta.pt"), map_location="cpu", weights_only=True)
    except READ_ERRORS as exc:
        raise UserError(f"{folder}: cannot load checkpoint ({exc})") from None
    if state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{folder}: not a checkpoint written by this version of specc's train.py")
    state["dcp_folder"] = folder
    return state


def save_sharded(model, optimizer, meta: dict, out_dir: str, step: int, is_main: bool, keep: int) -> str:
    """Every rank writes its shards into step-N.dcp.tmp; rank 0 adds meta.pt, renames, repoints latest.dcp."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    name = f"step-{step:08d}.dcp"
    final, tmp = os.path.join(out_dir, name), os.path.join(out_dir, name + ".tmp")
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
    dist.barrier()
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=tmp)
    if is_main:
        save_atomically(meta, os.path.join(tmp, "meta.pt"))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        write_text_atomically(os.path.join(out_dir, LATEST_DCP), name + "\n")
        folders = sorted(glob.glob(os.path.join(glob.escape(out_dir), "step-*.dcp")))
        for old in folders[:-max(1, keep)]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def load_sharded(model, optimizer, folder: str) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optim_state}
    dcp.load(state, checkpoint_id=folder)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
