"""PyTorch backend: emit a standalone module file, or build the module in-process.

Only this package (and only when called) imports torch."""
from __future__ import annotations

import sys
import types
from pathlib import Path


def emit_source(spec, target=None, opt_level: int | None = None, disabled: tuple = ()) -> str:
    """The module file for `spec` at -O`opt_level` (None: the pipeline's default level, plain modules)."""
    from ...passes import optimize
    from .emit import emit_module_source
    from .rolled import has_rolled_loops

    if has_rolled_loops(spec.module):  # `for v in range(n) as name`: written as a loop (rolled.py)
        return _rolled_source(spec, opt_level, disabled)
    module = optimize(spec.module, opt_level, disabled)
    return emit_module_source(module, source_name=Path(spec.module.path).name)


def _rolled_source(spec, opt_level: int | None, disabled: tuple) -> str:
    """The module file of a model with `for ... as` loops. A loop calls one class at each place; where -O2's fusions
    (which bypass modules) make its iterations' blocks different classes, the file is -O1's, and says so."""
    from ...diagnostics import SpecError
    from ...errors import CheckError
    from ...passes import optimize
    from ...passes.pipeline import DEFAULT_LEVEL, MODULE_LEVEL
    from .emit import emit_module_source
    from .rolled import rolled_body

    rolled, trace = spec.rolled()
    name = Path(spec.module.path).name
    level = DEFAULT_LEVEL if opt_level is None else opt_level
    try:
        try:
            return emit_module_source(rolled_body(optimize(rolled, opt_level, disabled), rolled), name, trace)
        except SpecError as e:
            if level < MODULE_LEVEL or e.diagnostics[0].code != "E0501":
                raise
        source = emit_module_source(rolled_body(optimize(rolled, MODULE_LEVEL - 1, disabled), rolled), name, trace)
    except SpecError as e:  # located in the spec: shown with its line and a caret
        raise CheckError(e.diagnostics, spec.sources) from None
    head, _, rest = source.partition("\n")
    return (f"{head}\n# -O{level}: its fusions would make one place in a `for ... as` loop build blocks of different "
            f"classes, so this is -O{MODULE_LEVEL - 1}'s code\n{rest}")


_counter = [0]


def load_source(source: str, name: str):
    """Execute emitted source as a fresh Python module (registered so pickling / torch.compile can find it)."""
    import linecache

    _counter[0] += 1
    modname = f"specc_generated_{name}_{_counter[0]}"
    filename = f"<specc:{modname}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    mod = types.ModuleType(modname)
    mod.__file__ = filename
    sys.modules[modname] = mod
    exec(compile(source, filename, "exec"), mod.__dict__)  # noqa: S102 - source is specc's own emitted code
    return mod


def build_module(spec, target=None, opt_level: int | None = None, disabled: tuple = ()):
    from ...naming import class_name

    source = emit_source(spec, target, opt_level, disabled)
    mod = load_source(source, class_name(spec.module.name))
    cls = getattr(mod, class_name(spec.module.name))
    model = cls()
    if target is not None:
        import torch

        model = model.to(device=target.device, dtype=getattr(torch, target.dtype))
        if target.compile:
            model = torch.compile(model)
    return model
