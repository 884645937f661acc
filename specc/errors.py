"""The error types specc raises to its callers, at the bottom of the layers so that any room may raise them.

* ``SpecError`` (specc/diagnostics.py): located diagnostics about a spec; ``ShapeError``: a shape rule's complaint.
* ``CheckError``: every diagnostic of a failed load or check, with the sources needed to render them (the API raises
  it; the CLI prints it and exits 1).
* ``UsageError``: a bad request rather than a bad spec (an unknown pass name, a malformed ``--dim``, a target the
  machine cannot run); the CLI prints it and exits 2.
"""
from __future__ import annotations

from .diagnostics import Diagnostic, ShapeError, SpecError, render_all
from .source import SourceMap

__all__ = ["CheckError", "ShapeError", "SpecError", "UsageError"]


class CheckError(SpecError):
    """All diagnostics of a failed load, with the sources needed to render them."""

    def __init__(self, diags: list[Diagnostic], sources: SourceMap) -> None:
        super().__init__(*diags)
        self.sources = sources

    def render(self) -> str:
        return render_all(self.diagnostics, self.sources)

    def __str__(self) -> str:
        return self.render()


class UsageError(Exception):
    """A bad option or request (not a bad spec): reported as `specc: error: ...`, exit status 2."""
