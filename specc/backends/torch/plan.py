"""What the class planner (classes.py) and the loop writer (rolled.py) share: the plan of one emitted class, and
sizes written as markers (`__hp_d_hp__`) that each place then writes the way it reads them (`d`, `self.d`,
`config.d`)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from ...hyper import HFloat, HInt, Unrenderable, rendering
from ...ir import Module
from ...naming import Namer, py_name
from ...ops.torch_rule import pyval

_MARK = re.compile(r"__hp_(\w+?)_hp__")


def marker(name: str) -> str:
    return f"__hp_{name}_hp__"


@dataclass
class ClassPlan:
    name: str
    members: list[str]  # graph names
    params: list[str]  # constructor parameter names
    init: list[str]
    forward: list[str]
    comments: list[str]
    fwd_args: list[str]
    doc: str
    weights: list[str] = field(default_factory=list)  # the `_init_weights` lines
    sources: list[str] = field(default_factory=list)  # each parameter's name in the graph's sizes
    annots: list[str] = field(default_factory=list)  # each parameter's type
    pins: list[tuple[str, str]] = field(default_factory=list)  # (condition, message): the constructor raises
    # ValueError(message) unless the condition holds (what the code was written for)
    generic: bool = True  # sizes come from the constructor's arguments (else: numbers of one compile)
    inherits: list[str] = field(default_factory=list)  # parameters named in an enclosing scope (init values)
    prologue: list[str] = field(default_factory=list)  # the constructor's first lines: parameters an `if` resolves
    optional: list[str] = field(default_factory=list)  # forward inputs the spec declares optional (passed by name)


def config_fields(m: Module) -> dict[str, str]:
    """Each hyper-parameter's field name in the model's config dataclass."""
    field_name = Namer(py_name)
    return {k: field_name(k) for k in m.hparams}


def write(line: str, fn: Callable[[str], "str | None"]) -> str:
    def rep(mt: re.Match) -> str:
        text = fn(mt.group(1))
        if text is None:
            raise Unrenderable(mt.group(1))
        return text
    return _MARK.sub(rep, line)


def text_of(value: Any) -> str:
    """An argument as the caller's code writes it: its expression (as markers) or its plain value."""
    if isinstance(value, (HInt, HFloat)) and value.expr is not None:
        with rendering(marker):
            return repr(value)
    return pyval(int(value) if isinstance(value, HInt) else float(value) if isinstance(value, HFloat)
                 else plain(value))


def plain(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return tuple(plain(x) for x in v)
    return v
