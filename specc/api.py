"""The Python API: specc.load(path, **overrides) -> Spec."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .diagnostics import Diagnostic, SpecError
from .elaborate import Elaborator
from .errors import CheckError
from .ir import Module, RolledTrace
from .limits import Abort, Limits
from .source import SourceMap

__all__ = ["CheckError", "Spec", "check", "compile_to", "import_weights", "load", "loads"]


class Spec:
    """A checked spec: its IR module, the sources it was read from, and entry points to the backends."""

    def __init__(self, module: Module, sources: SourceMap, overrides: dict[str, Any], build,
                 limits: Limits | None) -> None:
        self.module = module
        self.sources = sources
        self.overrides = overrides
        self._build, self._limits = build, limits

    def rolled(self) -> tuple[Module, RolledTrace]:
        """The model elaborated again from the same text with Elaborator.rolling, for the PyTorch emitter's
        `for v in range(n) as name` loops (backends/torch/rolled.py): its module and the trace of its body."""
        from .parse import deep_recursion

        el = Elaborator(_Read(self.sources), self._limits)
        el.rolling = True
        with deep_recursion():
            module = self._build(el)
        if el.diags or module is None or el.trace is None:
            raise CheckError(el.diags or [Diagnostic("E0401", f"{self.name}: nothing to compile")], self.sources)
        return module, el.trace

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

    # Every backend entry point takes `opt_level` (None: specc.passes.DEFAULT_LEVEL, the same as `specc compile`)
    # and `disabled` (pass names to skip); see specc/passes/pipeline.py for what each level does.

    def to_torch(self, target=None, opt_level: int | None = None, disabled: tuple = (), *, weights=None,
                 weights_map: str | None = None):
        """The emitted PyTorch module, built in-process (`target`: a Target for device/dtype/torch.compile).
        `weights`: a file or folder to fill it from (specc's layout as `specc weights import` writes it, or a
        checkpoint converted on the fly through `weights_map` or the spec's matching map)."""
        from .backends.torch import build_module

        module = build_module(self, target, opt_level, disabled)
        if weights is not None:
            from .weights import load_weights

            load_weights(module, weights, weights_map, self.module.path or None)
        return module

    def torch_source(self, target=None, opt_level: int | None = None, disabled: tuple = ()) -> str:
        """The module file `specc compile` writes for this spec and level."""
        from .backends.torch import emit_source

        return emit_source(self, target, opt_level, disabled)

    def to_tvm(self, target: str = "tvm-cpu", **options):
        from .backends.tvm import build

        return build(self, target, **options)


def load(path: str | Path, model: str | None = None, *, overrides: dict[str, Any] | None = None,
         limits: Limits | None = None, **kw: Any) -> Spec:
    """Parse, elaborate and shape-check a spec. Keyword arguments override model hyper-parameters
    (the same as `-D name=value` on the command line); `limits` are the compile-time budgets (specc.limits).
    Raises CheckError with every diagnostic."""
    ov = dict(overrides or {})
    ov.update(kw)
    sources = SourceMap()
    path = Path(path)

    def build(el: Elaborator) -> Module | None:
        prog = el.load_file(path)
        return el.elaborate_model(prog, model, ov) if prog is not None else None

    return _elaborate(sources, build, str(path), ov, limits)


def loads(text: str, name: str = "<string>", model: str | None = None, *, limits: Limits | None = None,
          **kw: Any) -> Spec:
    """Like load(), from a string (imports resolve against the standard library)."""
    from .parse import parse

    sources = SourceMap()
    sources.add(name, text)

    def build(el: Elaborator) -> Module | None:
        prog = parse(text, name, el.limits)
        el.add_program(prog, Path(name))
        return el.elaborate_model(prog, model, kw)

    return _elaborate(sources, build, name, kw, limits)


def _elaborate(sources: SourceMap, build, name: str, overrides: dict[str, Any], limits: Limits | None) -> Spec:
    """Run `build` with a fresh elaborator; every diagnostic it produced becomes one CheckError."""
    from .parse import deep_recursion

    el = Elaborator(sources, limits)
    try:
        with deep_recursion():
            module = build(el)
    except SpecError as e:
        el.diags.extend(e.diagnostics)
        module = None
    except Abort as e:  # a budget exceeded or an internal error: nothing after it is worth checking
        el.diags.append(e.diagnostic)
        module = None
    if el.diags or module is None:
        raise CheckError(el.diags or [Diagnostic("E0401", f"{name}: nothing to compile")], sources)
    if module.train:  # the `train { ... }` section: settings the training script will use, checked now
        from .train.from_spec import train_section_diagnostics

        diags = train_section_diagnostics(module, sources)
        if diags:
            raise CheckError(diags, sources)
    return Spec(module, sources, overrides, build, limits)


class _Read(SourceMap):
    """The sources a spec was read from, read again as they were then (not from the disk, which may have moved on)."""

    def __init__(self, sources: SourceMap) -> None:
        super().__init__()
        self.texts = dict(sources.texts)

    def read(self, path: Path) -> str:
        return self.texts[str(path)] if str(path) in self.texts else super().read(path)


def check(path: str | Path, **kw: Any) -> Spec:
    return load(path, **kw)


def compile_to(spec: Spec, target, outdir: Path, *, force: bool = False, opt_level: int | None = None,
               disabled: tuple = (), dims: dict[str, int] | None = None, weights=None) -> list[Path]:
    """`specc compile`: write the target's files for `spec` into `outdir` (all or none) and return their paths.

    The one compile driver: PyTorch output is exactly `spec.torch_source(target, opt_level, disabled)`; a TVM target
    builds through `spec.to_tvm`'s path, baking in
    `weights` (a module or state_dict; the PyTorch target emits code only). `opt_level` None means the target's level, else the default level."""
    from .fsutil import commit_files

    level = target.opt_level if opt_level is None else opt_level
    if target.backend == "torch":
        from .naming import module_file_name

        files = {Path(outdir) / module_file_name(spec.module.name): spec.torch_source(target, level, disabled)}
        return commit_files(files, force=force)
    from .backends.tvm import compile_files

    return compile_files(spec, target, Path(outdir), force=force, opt_level=level, disabled=disabled, dims=dims,
                         weights=weights)


def import_weights(path: str | Path, checkpoint: str | Path, output: str | Path | None, map: str | None = None, *,
                   overrides: dict[str, Any] | None = None, model: str | None = None, into: str | None = None):
    """`specc weights import`: convert a checkpoint (file or Hugging Face folder) to the layout of the spec at
    `path`, whose hyper-parameters the checkpoint's config.json sets through the map (`overrides` win). Writes
    `output` (.safetensors) all or nothing (`into`: fill only that submodule, a backbone called as a block); returns specc.weights.ImportResult (what was mapped, the spec)."""
    from .weights import import_weights as convert

    return convert(lambda ov: load(path, model, overrides=ov), checkpoint, output, map, overrides=overrides,
                   spec_path=path, into=into)

