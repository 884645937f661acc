"""Backends: thin walkers over the IR. `compile_to` dispatches on the target's backend."""
from __future__ import annotations

from pathlib import Path


def compile_to(spec, target, outdir: Path, force: bool = False, opt_level: int | None = None,
               disabled: tuple = (), dims: dict[str, int] | None = None) -> list[Path]:
    from ..fsutil import commit_files

    if target.backend == "torch":
        from ..naming import module_file_name
        from .torch import emit_source

        level = target.opt_level if opt_level is None else opt_level
        source = emit_source(spec, target, level, disabled)
        files = {outdir / module_file_name(spec.module.name): source}
        return commit_files(files, force=force)
    from .tvm import compile_files

    return compile_files(spec, target, outdir, force=force, opt_level=opt_level, disabled=disabled, dims=dims)
