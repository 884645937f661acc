"""The emitter's value -> variable-name map, indexed the other way too, so that naming stays linear in the
length of a graph (asking "does another live value hold this name?" scanned every value before)."""
from __future__ import annotations


class VarMap(dict):
    """value -> variable name, with the values given each variable name (for emit._Vars._shared)."""

    def __init__(self) -> None:
        super().__init__()
        self.holders: dict[str, list[str]] = {}

    def __setitem__(self, name: str, var: str) -> None:
        super().__setitem__(name, var)
        self.holders.setdefault(var, []).append(name)
