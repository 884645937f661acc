"""Files: reading, parsing and importing spec files, registering their blocks."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from .. import ast as A
from ..diagnostics import Note, SpecError
from ..ops import registry
from ..source import STDLIB, Span


class LoaderMixin:
    """Files: reading, parsing and importing spec files, registering their blocks."""

    def load_file(self, path: Path, span: Span | None = None) -> A.Program | None:
        from ..parse import parse

        key = str(path.resolve())
        if key in self._loading:
            chain = " -> ".join(Path(p).name for p in [*self._loading[self._loading.index(key):], key])
            self.error("E0202", f"import cycle: {chain}", span, label="this import closes the cycle")
            return None
        if key in self._loaded:
            return None
        self._loading.append(key)
        try:
            try:
                text = self.sources.read(path)
            except (OSError, UnicodeDecodeError) as e:
                if span is None:
                    raise SpecError.at("E0201", f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
                self.error("E0201", f"cannot read imported file {path}: {getattr(e, 'strerror', None) or e}", span)
                return None
            try:
                prog = parse(text, str(path))
            except SpecError as e:
                self.diags.extend(e.diagnostics)
                return None
            self.add_program(prog, path)
            self._loaded.add(key)
            return prog
        finally:
            self._loading.pop()

    def add_program(self, prog: A.Program, path: Path) -> None:
        """Load a parsed file's imports (relative to `path`) and register its blocks."""
        for imp in prog.imports:
            target = self.resolve_import(path, imp)
            if target is not None:
                self.load_file(target, imp.span)
        for d in prog.defs:
            if d.kind == "block":
                self.add_def(d)

    def resolve_import(self, importer: Path, imp: A.Import) -> Path | None:
        rel = Path(imp.path)
        if rel.is_absolute() or ".." in rel.parts or not imp.path.endswith(".nn"):
            self.error("E0201", f"import path {imp.path!r} must be a relative path to a .nn file, without '..'",
                       imp.span)
            return None
        for base in (importer.parent, STDLIB):
            cand = base / rel
            if cand.is_file():
                return cand
        self.error("E0201", f"import file not found: {imp.path!r}", imp.span,
                   help=f"looked in {importer.parent} and the standard library {STDLIB}")
        return None

    def add_def(self, d: A.Def) -> None:
        prev = self.defs.get(d.name)
        if prev is not None and prev is not d:
            if prev.span == d.span:
                return
            self.error("E0106", f"block {d.name!r} is defined twice", d.name_span,
                       notes=[Note(prev.name_span, "first defined here")])
            return
        if registry.get(d.name) is not None:
            self.error("E0106", f"block {d.name!r} has the same name as a built-in op", d.name_span)
            return
        self.defs[d.name] = self.unique_params(d)

    def unique_params(self, d: A.Def) -> A.Def:
        """Report parameters declared twice, and keep the first of each name so the rest can be checked."""
        seen: dict[str, A.Param] = {}
        for p in d.params:
            if p.name in seen:
                self.error("E0106", f"{d.kind} {d.name}: parameter {p.name!r} is declared twice", p.span,
                           notes=[Note(seen[p.name].span, "first declared here")])
            else:
                seen[p.name] = p
        return d if len(seen) == len(d.params) else dataclasses.replace(d, params=tuple(seen.values()))
