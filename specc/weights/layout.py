"""The state_dict a spec's PyTorch module has: names, shapes, dtypes and tied aliases, without any weights.

`model_layout(spec)` is the one place weight maps take the model side's names from. Today it builds the emitted
module on PyTorch's meta device (no memory, no initialisation), so the names are exactly what `to_torch()` gives;
when the naming layer can list them from the IR alone, only this function changes and every map keeps working.
"""
from __future__ import annotations

from dataclasses import dataclass

from .plan import TensorInfo


@dataclass
class Layout:
    tensors: dict[str, TensorInfo]  # every state_dict entry that owns its storage, in state_dict order
    aliases: dict[str, str]         # tied entries (lm_head.weight) -> the entry they share storage with (wte.weight)

    @property
    def names(self) -> list[str]:
        return list(self.tensors)

    def under(self, prefix: str) -> Layout:
        """Only the tensors of the submodule `prefix` ("bert."), names kept whole."""
        return Layout({n: t for n, t in self.tensors.items() if n.startswith(prefix)},
                      {a: o for a, o in self.aliases.items() if a.startswith(prefix)})

    def submodules(self) -> list[str]:
        return sorted({n.split(".")[0] for n in self.tensors if "." in n})


def module_layout(module) -> Layout:
    """The layout of a built nn.Module (any device, meta included)."""
    tensors: dict[str, TensorInfo] = {}
    aliases: dict[str, str] = {}
    owner: dict[int, str] = {}
    for name, t in module.state_dict(keep_vars=True).items():
        key = id(t)
        if key in owner:
            aliases[name] = owner[key]
            continue
        owner[key] = name
        tensors[name] = TensorInfo(tuple(t.shape), str(t.dtype).removeprefix("torch."))
    return Layout(tensors, aliases)


def model_layout(spec) -> Layout:
    """The state_dict layout of `spec.to_torch()`, computed without allocating or initialising weights."""
    import torch

    with torch.device("meta"):
        module = spec.to_torch()
    return module_layout(module)
