"""Human-readable op signatures for `specc ops`: every argument with its type and default, tensor inputs first,
and one op in full with an example a user can paste into a spec."""
from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic_core import PydanticUndefined

from .registry import OpDef
from .torch_rule import pyval


def type_text(tp: Any) -> str:
    """A pydantic field annotation as a user would read it: `int | (int, ...)`, `"nearest" | "bilinear"`."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return type_text(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(a) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return " | ".join(spec_value(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"({type_text(args[0])}, ...)"
        return "(" + ", ".join(type_text(a) for a in args) + ")"
    if tp is type(None):
        return "none"
    name = getattr(tp, "__name__", str(tp))
    return {"PositiveInt": "int", "PositiveFloat": "float"}.get(name, name)


def spec_value(v: Any) -> str:
    """A Python value in spec syntax."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (tuple, list)):
        return "(" + ", ".join(spec_value(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    return pyval(v)


def tensor_inputs(op: OpDef) -> list[str]:
    lo, hi = op.arity
    names = ["x", "y", "z"]
    if hi is None:
        return [f"{names[0]}..."]
    out = [names[i] if i < len(names) else f"x{i}" for i in range(hi)]
    return [n if i < lo else f"{n}?" for i, n in enumerate(out)]


def arguments(op: OpDef) -> list[str]:
    """`name: type` (required) or `name: type = default`, positional ones first in their order."""
    fields = op.attrs.model_fields
    order = [*op.positional, *(k for k in fields if k not in op.positional)]
    out = []
    for key in order:
        f = fields[key]
        text = f"{key}: {type_text(f.annotation)}"
        if f.default is not PydanticUndefined:
            text += f" = {spec_value(f.default)}"
        out.append(text)
    return out


def signature(op: OpDef) -> str:
    return f"{op.name}({', '.join([*tensor_inputs(op), *arguments(op)])})"


def example_text(op: OpDef) -> str | None:
    """The first registry example as a spec line."""
    if not op.examples:
        return None
    ex = op.examples[0]
    names = [chr(ord("a") + i) for i in range(len(ex.inputs))]
    decls = [f"input {n}: {t}" for n, t in zip(names, ex.inputs)]
    args = ", ".join(f"{k}={spec_value(v)}" for k, v in ex.attrs.items())
    src = names[0] if len(names) == 1 else f"({', '.join(names)})"
    return "\n".join([*decls, f"y = {src} -> {op.name}({args})"])


def describe(op: OpDef) -> str:
    lines = [signature(op), "", op.doc or "(no description)"]
    if op.positional:
        lines += ["", f"positional order: {', '.join(op.positional)}; the rest by keyword"]
    ex = example_text(op)
    if ex:
        lines += ["", "example:", *("  " + line for line in ex.splitlines())]
    return "\n".join(lines)


def closest(name: str, names: list[str]) -> str | None:
    found = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return found[0] if found else None
