"""The spec's input contract as the first lines of the emitted model's forward: rank and dtype kind of each input,
its fixed sizes, its dimension bounds (`T <= ctx`), and symbolic dims shared between inputs (BERT's ids and mask
are both [B, T]). A wrong input then fails with the spec's words, not with a broadcast error deep inside:

    ValueError: tokens has T = 129, GPT2 was built for T <= 1024 (ctx)

The checks are a few integer comparisons (bench: well under 1% of a forward); under torch.compile they are skipped,
since the compiled graph guards on the shapes it was traced for.
"""
from __future__ import annotations

import re

from ...hyper import HInt
from ...ir import Module
from ...symbolic import Sym
from ...types import FLOAT_DTYPES, TensorType

_SAFE = re.compile(r"[\w .+\-*/%()]+")  # a bound's spec expression shown in a message: no quotes, no braces
_KIND = {"float": ("not {x}.is_floating_point()", "a floating-point"),
         "bool": ("{x}.dtype != torch.bool", "a bool"),
         "int": ("{x}.is_floating_point() or {x}.dtype == torch.bool", "an integer")}


def input_checks(m: Module, args: list[str], model: str) -> list[str]:
    """Forward lines (unindented) that raise ValueError for inputs the spec does not accept; [] if none apply."""
    g = m.graph
    body: list[str] = []
    seen: dict[str, tuple[str, int]] = {}  # symbolic dim -> (input variable, axis) where it was first read
    for name, x in zip(g.inputs, args):
        t = g[name].type
        if not isinstance(t, TensorType):
            continue
        kind = "float" if t.dtype in FLOAT_DTYPES else "bool" if t.dtype == "bool" else "int"
        test, words = _KIND[kind]
        shape = "[" + ", ".join(_spec_text(d) for d in t.shape) + "]"
        body += [f"if {x}.dim() != {t.rank} or {test.format(x=x)}:",
                 f'    raise ValueError(f"{x} must be {words} tensor {shape}, got {{{x}.dtype}} '
                 f'{{tuple({x}.shape)}}")']
        bounds = dict(g[name].exprs)
        for axis, d in enumerate(t.shape):
            if isinstance(d, int):
                body += [f"if {x}.size({axis}) != {d}:",
                         f'    raise ValueError(f"{x} has {{{x}.size({axis})}} at dim {axis}, {model} was built for '
                         f'{in_fstring(d)} ({shape})")']
                continue
            sym = _variable(d)
            if sym is None:
                continue
            if sym in seen:
                other, oaxis = seen[sym]
                body += [f"if {x}.size({axis}) != {other}.size({oaxis}):",
                         f'    raise ValueError(f"{x} has {sym} = {{{x}.size({axis})}}, {other} has {sym} = '
                         f'{{{other}.size({oaxis})}}")']
                continue  # equal to the first, whose bound is checked there
            seen[sym] = (x, axis)
            if sym in m.minimums:
                least, _, op = m.minimums[sym]
                body += [f"if {x}.size({axis}) < {least}:",
                         f'    raise ValueError(f"{x} has {sym} = {{{x}.size({axis})}}, {model} needs {sym} >= {least} '
                         f'(for its {op})")']
            if sym in m.constraints:
                bound = m.constraints[sym][0]
                why = f" ({bounds[sym]})" if _SAFE.fullmatch(bounds.get(sym, "")) else ""  # goes in an f-string
                body += [f"if {x}.size({axis}) > {bound}:",
                         f'    raise ValueError(f"{x} has {sym} = {{{x}.size({axis})}}, {model} was built for '
                         f'{sym} <= {in_fstring(bound)}{why}")']
    if not body:
        return []
    head = "if not torch.compiler.is_compiling()"
    why = "  # the spec's input contract (torch.compile guards shapes)"
    if len(body) == 2:  # one check: one `if` (ruff SIM102)
        return [f"{head} and ({body[0].removeprefix('if ').removesuffix(':')}):{why}", body[1]]
    return [f"{head}:{why}", *("    " + ln for ln in body)]


def _spec_text(d) -> str:
    """A dim as the spec writes it (`image_size`, `T`, `3`), for a message inside an f-string."""
    if isinstance(d, HInt) and d.expr is not None and _SAFE.fullmatch(d.expr):
        return d.expr
    return str(int(d)) if isinstance(d, int) else str(d) if _SAFE.fullmatch(str(d)) else "?"


def _variable(d) -> str | None:
    """The name of a dim that is one plain symbol (`T`), else None (`2*T`, `(H - 1)//2`)."""
    if not isinstance(d, Sym) or len(d.terms) != 1:
        return None
    (mono, coef), = d.terms.items()
    return mono[0] if coef == 1 and len(mono) == 1 and mono[0].isidentifier() else None


def in_fstring(v) -> str:
    """A bound as the text of an f-string message shows it: the number, or `{self.config.ctx}` where it is read from
    the config."""
    return str(v) if str(v).isdigit() else f"{{{v}}}"
