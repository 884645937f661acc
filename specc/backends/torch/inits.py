"""The initialisation a spec declares (``Node.init``, see specc/elaborate/inits.py) as ``torch.nn.init`` calls."""
from __future__ import annotations

import re

from ...attrs import INITS, Init
from ...ops.torch_rule import pyval


def init_call(target: str, init: Init) -> str:
    """`nn.init.normal_(self.c_proj.weight, std=0.02)`, with the spec expression as a comment when the numbers were
    computed (`# normal(0.02 / sqrt(2 * layers))`)."""
    names, _ = INITS[init.kind]
    args = dict(init.args)
    if init.kind == "constant":
        rest = [pyval(args["val"])]
    elif init.kind == "uniform":
        rest = [pyval(args["a"]), pyval(args["b"])]
    else:
        rest = [f"{k}={pyval(args[k])}" for k in names if k in args]
    line = f"nn.init.{init.kind}_({', '.join([target, *rest])})"
    return line + (f"  # {_safe_comment(init.text)}" if init.text else "")


def _safe_comment(s: str) -> str:
    return re.sub(r"[^\w./\-+*()=, ]", "_", s)
