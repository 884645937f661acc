"""The Python API: specc.load(path, **overrides) -> Spec."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .diagnostics import Diagnostic, SpecError
from .elaborate import Elaborator
from .errors import CheckError
from .ir import Module
from .source import SourceMap

__all__ = ["CheckError", "Spec", "check", "load", "loads"]


class Spec:
    """A checked spec: its IR module, the sources it was read from, and entry points to the backends."""

    def __init__(self, module: Module, sources: SourceMap, overrides: dict[str, Any]) -> None:
        self.module = module
        self.sources = sources
        self.overrides = overrides

    @property
    def name(self) -> str:
        return self.module.name

    @property
    def graph(self):
        return self.module.graph

    def summary(self, flat: bool = False):
        from .summary import summarize

        return summarize(self.module, flat)

    @property
    def params(self) -> int:
        return self.summary().params

    def text(self) -> str:
        from .printer import print_module

        return print_module(self.module)

    def to_torch(self, **options):
        from .backends.torch import build_module

        return build_module(self, **options)

    def torch_source(self, **options) -> str:
        from .backends.torch import emit_source

        return emit_source(self, **options)

    def to_tvm(self, target: str = "tvm-cpu", **options):
        from .backends.tvm import build

        return build(self, target, **options)


def load(path: str | Path, model: str | None = None, *, overrides: dict[str, Any] | None = None,
         **kw: Any) -> Spec:
    """Parse, elaborate and shape-check a spec. Keyword arguments override model hyper-parameters
    (the same as `-D name=value` on the command line). Raises CheckError with every diagnostic."""
    ov = dict(overrides or {})
    ov.update(kw)
    sources = SourceMap()
    path = Path(path)

    def build(el: Elaborator) -> Module | None:
        prog = el.load_file(path)
        return el.elaborate_model(prog, model, ov) if prog is not None else None

    return _elaborate(sources, build, str(path), ov)


def loads(text: str, name: str = "<string>", model: str | None = None, **kw: Any) -> Spec:
    """Like load(), from a string (imports resolve against the standard library)."""
    from .parse import parse

    sources = SourceMap()
    sources.add(name, text)

    def build(el: Elaborator) -> Module | None:
        prog = parse(text, name)
        el.add_program(prog, Path(name))
        return el.elaborate_model(prog, model, kw)

    return _elaborate(sources, build, name, kw)


def _elaborate(sources: SourceMap, build, name: str, overrides: dict[str, Any]) -> Spec:
    """Run `build` with a fresh elaborator; every diagnostic it produced becomes one CheckError."""
    el = Elaborator(sources)
    try:
        module = build(el)
    except SpecError as e:
        el.diags.extend(e.diagnostics)
        module = None
    if el.diags or module is None:
        raise CheckError(el.diags or [Diagnostic("E0401", f"{name}: nothing to compile")], sources)
    return Spec(module, sources, overrides)


def check(path: str | Path, **kw: Any) -> Spec:
    return load(path, **kw)
