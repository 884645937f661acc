"""Option values written as text (`-D name=value`, `--dim B=1,T=128`) parsed into plain data. The CLI reads its
flags with these; libraries take the parsed values (dicts), never argparse namespaces."""
from __future__ import annotations

import ast as pyast
from typing import Any

from .errors import UsageError


def parse_define(text: str) -> tuple[str, Any]:
    """`-D name=value`: value is a spec literal (int, float, true/false, a string, a list/tuple of those)."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise UsageError(f"-D expects NAME=VALUE, got {text!r}")
    raw = raw.strip()
    lowered = {"true": "True", "false": "False", "none": "None"}.get(raw, raw)
    try:
        value = pyast.literal_eval(lowered)
    except (ValueError, SyntaxError):
        value = raw  # a bare word is a string
    if isinstance(value, list):
        value = [tuple(v) if isinstance(v, list) else v for v in value]
    return name, value


def parse_dims(items: list[str] | None) -> dict[str, int]:
    """`--dim B=1 --dim T=128,C=3` -> {"B": 1, "T": 128, "C": 3}."""
    env = {}
    for item in items or []:
        for part in item.split(","):
            k, sep, v = part.partition("=")
            if not sep or not k.strip().isidentifier() or not v.strip().isdigit():
                raise UsageError(f"--dim expects NAME=INT, got {part!r}")
            env[k.strip()] = int(v)
    return env
