"""Helper code that specc writes into the model files that use it (read as text by specc/ops/fused.py;
the imports above the first definition are the emitted file's own)."""
import torch
from torch import nn


def derived(owner: nn.Module, tag: str, make, *sources):
    """Weights computed from parameters (a folded batchnorm, concatenated projections). While autograd records they
    are recomputed every call (gradients flow to the real parameters); otherwise cached on `owner` until a source
    tensor changes: new storage, or an in-place update (load_state_dict, optimizer steps, `with torch.no_grad():
    p.copy_(...)`). Writes through `p.data` are not versioned by PyTorch: call clear_derived(model) after those."""
    if torch.is_grad_enabled() or torch.compiler.is_compiling():  # a compiled graph computes them itself
        return make()
    key = tuple((t.data_ptr(), t._version, t.dtype) for t in sources if t is not None)
    cache = owner.__dict__.setdefault("_specc_derived", {})
    if tag not in cache or cache[tag][0] != key:
        cache[tag] = (key, make())
    return cache[tag][1]


def clear_derived(model: nn.Module) -> None:
    """Forget every cached derived weight in `model` (needed only after writes through `.data`)."""
    for m in model.modules():
        m.__dict__.pop("_specc_derived", None)
