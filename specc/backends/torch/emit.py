"""IR -> PyTorch source that reads like nanoGPT: a config dataclass, one nn.Module per block, ModuleList loops for
`repeat`, short forwards with shape comments, the spec's names. This file assembles the file; the forward code of
each graph is forward.py, the classes are planned in classes.py, the input checks are checks.py.
"""
from __future__ import annotations

import re

from pydantic import BaseModel

from ...diagnostics import Diagnostic, SpecError
from ...hyper import Unrenderable, rendering
from ...ir import Module, RolledTrace
from ...naming import class_name
from ...ops.torch_rule import pyval
from ...version import __version__
from .checks import input_checks
from .classes import config_fields, config_names, pin_lines, plan_classes
from .kvcache import cache_plan, generate_method
from .plan import plain as _plain

__all__ = ["check_emittable", "class_name", "emit_module_source"]


# ---- values Python cannot write down --------------------------------------------------------------------------

_MAX_INT_BITS = 14_000  # about 4200 decimal digits: Python refuses str() of ints over 4300 digits


def check_emittable(m: Module) -> None:
    """Every number the file would contain can be printed as Python source; else a located error per value."""
    diags = []
    where = m.graph.span
    for k, v in m.hparams.items():
        if not _plain_data(v):
            diags.append(Diagnostic("E0107", f"hyper-parameter {k!r} is a {type(v).__name__}: only numbers, strings, "
                                    "booleans, none and lists of them can be compiled into a model", where))
        elif _too_big(v):
            diags.append(Diagnostic("E0107", f"hyper-parameter {k!r} is too large to emit as Python source", where))
    for g in m.graphs.values():
        for n in g.nodes():
            values = n.attrs.model_dump().values() if isinstance(n.attrs, BaseModel) else ()
            if any(_too_big(v) for v in values):
                diags.append(Diagnostic("E0107", f"{n.target or n.kind} {n.name!r}: an argument is too large to emit"
                                        " as Python source", n.span or g.span))
    if diags:
        raise SpecError(*diags)


def _plain_data(v) -> bool:
    if v is None or isinstance(v, (bool, int, float, str)):
        return True
    return isinstance(v, (tuple, list)) and all(_plain_data(x) for x in v)


def _too_big(v) -> bool:
    if isinstance(v, int):
        return v.bit_length() > _MAX_INT_BITS
    if isinstance(v, (tuple, list)):
        return any(_too_big(x) for x in v)
    if isinstance(v, dict):
        return any(_too_big(x) for x in v.values())
    return False


# ---- the file -------------------------------------------------------------------------------------------------

def emit_module_source(m: Module, source_name: str | None = None, rolled: RolledTrace | None = None) -> str:
    """The emitted file's text (`rolled`: the trace of m's `for ... as` loops, m being their rolled elaboration,
    rolled.py). Long because it writes the file top to bottom (helpers, config, classes, imports), so its layout
    can be read off the code."""
    check_emittable(m)
    if rolled is None and any(n.site for n in m.graph.nodes()):
        raise ValueError(f"{m.name}'s `for ... as` loops are written from its spec's trace: emit it through "
                         "Spec.torch_source (backends/torch/rolled.py)")
    plans, imports, support = plan_classes(m, rolled)
    model_cls = class_name(m.name)
    src = source_name or m.path
    out: list[str] = []
    out += [
        "",
        "",
        "@dataclass(frozen=True)",
        f"class {model_cls}Config:",
        f'    """The hyper-parameters {model_cls} was compiled with (change them with `specc compile -D name=value`)."""',
    ]
    if m.hparams:
        out.append("")
        fields = config_fields(m)
        for k, v in m.hparams.items():
            out.append(f"    {fields[k]}: {_annot(v)} = {pyval(_plain(v))}")
    for p in plans:
        out += ["", ""]
        is_main = p.name == model_cls
        out.append(f"class {p.name}(nn.Module):")
        out.append(f'    """{_safe_doc(p.doc)}"""')
        out.append("")
        if is_main:
            out.append(f"    def __init__(self, config: {model_cls}Config = {model_cls}Config()) -> None:")
            out.append("        super().__init__()")
            if not all(q.generic for q in plans):
                out.append(f"        if config != {model_cls}Config():  # the layers below are specialised to these "
                           "values")
                out.append(f"            raise ValueError(f\"compiled for {{{model_cls}Config()}}: recompile with -D to "
                           "change it\")")
            out.append("        self.config = config")
        else:
            sig = "".join(f", {a}: {t}" for a, t in zip(p.params, p.annots or ["int"] * len(p.params)))
            out.append(f"    def __init__(self{sig}) -> None:")
            out.append("        super().__init__()")
        for ln in [*p.prologue, *pin_lines(p.pins), *p.init]:
            out.extend("        " + part for part in ln.split("\n"))
        if p.weights:
            out += ["        self._init_weights()", "", *_init_weights(p.weights, src)]
        out.append("")
        fargs = "".join(f", {a}" for a in p.fwd_args)
        out.append(f"    def forward(self{fargs}):")
        if is_main:
            out.extend("        " + ln for ln in _config_driven(m, p.generic, input_checks, m, p.fwd_args, model_cls))
        for ln, c in zip(p.forward, p.comments):
            out.append("        " + ln + (f"  # {c}" if c else ""))
        if is_main and _has_aux_loss(m):
            out.append("")
            out.append("    def aux_loss(self) -> torch.Tensor:")
            out.append('        """Auxiliary losses of the last forward (mixture-of-experts balancing)."""')
            out.append("        losses = [m.last_aux_loss for m in self.modules() if getattr(m, \"last_aux_loss\", None) "
                       "is not None]")
            out.append("        return sum(losses) if losses else torch.zeros(())")
        if is_main:
            cache = cache_plan(m)
            if cache is not None:  # a causal LM
                out.append("")
                out.extend("    " + ln for ln in _config_driven(m, p.generic, generate_method, cache, model_cls))
    if support:  # the model reads first; what its layers use comes after it (looked up when they run)
        out += ["", "", "# ---- helpers the layers above use " + "-" * 82]
        for snippet in support:
            out += ["", ""] + snippet.strip("\n").splitlines()
    body = "\n".join(out) + "\n"
    imports = ["from dataclasses import dataclass", "import torch", "from torch import nn", *imports]
    if re.search(r"\bF\.", body):
        imports.append("import torch.nn.functional as F")
    if re.search(r"(?<![\w.])math\.", body) and "import math" not in imports:  # math.sqrt in a config-driven init
        imports.append("import math")
    stdlib = [i for i in imports if i.split()[1].split(".")[0] in _STDLIB]
    third = [i for i in imports if i not in stdlib]
    head = [
        f"# generated by specc {__version__} from {_safe_comment(src)}: do not edit, recompile the spec instead",
        f'"""{model_cls}: PyTorch module compiled by specc."""',
        *_isort(stdlib),
        "",
        *_isort(third),
    ]
    return "\n".join(head) + "\n" + body


def _config_driven(m: Module, generic: bool, write, *args):
    """write(*args)'s lines with the bounds a hyper-parameter gives read from the config (`self.config.ctx`) when the
    model follows its config; with this compile's numbers otherwise, or where one is no hyper-parameter."""
    if generic:
        with rendering(config_names(m)):
            try:
                return write(*args)
            except Unrenderable:
                pass
    return write(*args)


def _init_weights(lines: list[str], src: str) -> list[str]:
    """The method that starts this class's own layers as the spec declares (each block class starts its own)."""
    return ["    def _init_weights(self) -> None:",
            f'        """Initialisation declared in {_safe_doc(src)}; parameters it does not name keep PyTorch\'s '
            'defaults."""',
            *("        " + ln for ln in lines)]


def _isort(lines: list[str]) -> list[str]:
    """One import section the way ruff's isort orders it: `import a` lines, then `from a import b` lines."""
    return sorted(set(lines), key=lambda ln: (ln.startswith("from "), ln.split()[1].lower(), ln))


_STDLIB = {"math", "dataclasses", "typing", "itertools", "functools"}


def _annot(v) -> str:
    if v is None:
        return "None"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "str"
    return "tuple"


def _safe_comment(s: str) -> str:
    return re.sub(r"[^\w./\- ]", "_", s)


def _safe_doc(s: str) -> str:
    return re.sub(r"[^\w./\-:,() ]", "_", s)


def _has_aux_loss(m: Module) -> bool:
    """Whether a layer of m sets `last_aux_loss` (TorchRule.aux_loss): only then has the model `aux_loss()`."""
    from ...ops import registry

    return any(n.kind == "op" and (op := registry.get(n.target)) is not None and op.torch is not None
               and op.torch.aux_loss for g in m.graphs.values() for n in g.nodes())
