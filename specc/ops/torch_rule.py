"""How an op appears in emitted PyTorch source. Pure string building: importing this never imports torch."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..hyper import Flag, driven, rendering_active
from ..types import TensorType


@dataclass(frozen=True)
class TorchRule:
    """``module(ins, attrs)`` gives the nn.Module constructor expression for ops that own parameters;
    ``call(args, attrs, ins)`` gives the forward expression. With only ``module``, the call is
    ``self.<layer>(<args>)``. A fused op whose ``module`` returns ``{layer name: constructor}`` keeps each layer it
    absorbed under that layer's own attribute name (so state_dicts of fused and unfused modules match); its ``call``
    then gets those attributes (``self.<name>``) after the tensor args. ``imports`` are extra import lines the emitted file needs (e.g. "import math");
    ``support`` are top-level Python definitions (helper nn.Module classes or functions, as source text) that the
    module/call expressions use (only where ``support_when`` says so, when given); each is emitted once, in first-use order, before the spec's classes."""

    module: Callable[[list[TensorType], Any], str] | None = None
    call: Callable[[list[str], Any, list[TensorType]], str] | None = None
    imports: tuple[str, ...] = ()
    support: tuple[str, ...] = ()
    # (ins, attrs) -> whether this use needs ``support`` (None: every use does), for a helper only some uses need
    # (layernorm over a dim other than the last)
    support_when: Callable[[list[TensorType], Any], bool] | None = None
    # The call returns a new tensor that nothing else aliases and that autograd's backward does not read, so the
    # op reading it next may overwrite it (torchvision's ReLU(inplace=True) after a conv, batchnorm or add).
    fresh: bool = False
    # This op written in place on its first argument; the emitter uses it when that argument is fresh (above) and
    # read by nothing else.
    inplace: Callable[[list[str], Any, list[TensorType]], str] | None = None
    # The op reads absolute positions (a position table, rope): in a model that generates with a key/value cache
    # (specc/backends/torch/kvcache.py), its module or call takes that cache as a last keyword argument, written by
    # the emitter into ``args`` after the tensors (`cache=cache`), and counts positions from ``cache.start``.
    positions: bool = False
    # (function, keyword) of the emitted call where an optional input goes and where None means "no such input"
    # (F.scaled_dot_product_attention's attn_mask): one class may take that input as optional and pass None on
    none_keywords: tuple[tuple[str, str], ...] = ()
    # Its module sets `last_aux_loss` in forward (MoE balancing): the model gets an `aux_loss()` that sums them.
    aux_loss: bool = False


def pyval(v: Any) -> str:
    """Render a validated attribute value as Python source. Only plain data ever reaches here."""
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, Flag):  # a bool hyper-parameter: its name while rendering
        return repr(v)
    if v is None:
        return "None"
    if isinstance(v, (int, float)):
        r = repr(v)
        if r in ("inf", "-inf", "nan"):
            return f"float({r!r})"
        return r
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, (tuple, list)):
        inner = ", ".join(pyval(x) for x in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    raise TypeError(f"cannot render {type(v).__name__} as Python source")


def written(v: Any, default: Any) -> bool:
    """Whether an argument is written out: it differs from PyTorch's default, or a hyper-parameter gives it and the
    code being written follows the config (`stride=stride` even where this compile's stride is 1)."""
    return v != default or (driven(v) and rendering_active())


def kwargs(a: Any, names: list[str], defaults: dict[str, Any]) -> str:
    """`, k=v` for each attr that differs from the PyTorch default (see `written`), in a fixed order."""
    out = []
    for n in names:
        v = getattr(a, n)
        if n in defaults and not written(v, defaults[n]):
            continue
        out.append(f"{n}={pyval(v)}")
    return "".join(f", {x}" for x in out)


def support_text(name: str) -> str:
    """The definitions in specc/ops/support/<name>.py, as emitted files carry them: the file's text after its
    docstring and imports (an emitted file has its own imports). The files are real Python, linted and importable
    in tests; they are read here as text, never imported, so `specc check` loads no torch."""
    import ast
    from pathlib import Path

    text = (Path(__file__).parent / "support" / f"{name}.py").read_text()
    body = ast.parse(text).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the module docstring
    first = next(n for n in body if not isinstance(n, (ast.Import, ast.ImportFrom)))
    start = min([first.lineno, *(d.lineno for d in getattr(first, "decorator_list", ()))]) - 1
    return "\n" + "\n".join(text.splitlines()[start:]) + "\n"
