"""Located, rustc-style diagnostics. Every user error is a Diagnostic; nothing user-facing is a traceback."""
from __future__ import annotations

from dataclasses import dataclass, field

from .source import SourceMap, Span

# Error codes, grouped by phase. Each code names one kind of mistake so users (and tests) can search for it.
CODES = {
    "E0001": "syntax error",
    "E0002": "invalid literal",
    "E0101": "unknown name",
    "E0102": "unknown op or block",
    "E0103": "unknown argument",
    "E0104": "wrong number of arguments",
    "E0105": "missing argument",
    "E0106": "duplicate definition",
    "E0107": "bad hyper-parameter value",
    "E0108": "type error in compile-time expression",
    "E0109": "assertion failed",
    "E0110": "unknown or bad -D override",
    "E0111": "blocks nested too deeply (unbounded recursion)",
    "E0112": "compile-time budget exceeded",
    "E0201": "import file not found",
    "E0202": "import cycle",
    "E0301": "shape mismatch",
    "E0302": "dtype mismatch",
    "E0303": "rank mismatch",
    "E0304": "dimension constraint violated",
    "E0305": "invalid attribute for this input",
    "E0401": "missing model",
    "E0402": "missing input or output",
    "E0403": "train section error",
    "E0404": "init declaration error",
    "E0501": "cannot lower",
    "E0900": "internal error (a bug in specc, located at the spec line that triggered it)",
}
INTERNAL = "E0900"


@dataclass
class Note:
    span: Span | None
    message: str


@dataclass
class Diagnostic:
    code: str
    message: str
    span: Span | None = None
    label: str = ""
    notes: list[Note] = field(default_factory=list)
    help: str | None = None

    def render(self, sources: SourceMap | None = None) -> str:
        out = [f"error[{self.code}]: {self.message}"]
        out += _snippet(self.span, self.label, sources)
        for note in self.notes:
            out.append(f"note: {note.message}")
            out += _snippet(note.span, "", sources)
        if self.help:
            out.append(f"help: {self.help}")
        return "\n".join(out)


MAX_LINE = 160  # characters of a source line shown under a diagnostic


def _snippet(span: Span | None, label: str, sources: SourceMap | None) -> list[str]:
    if span is None:
        return []
    lines = [f"  --> {span}"]
    text = sources.line(span.file, span.line) if sources else None
    if text is None:
        return lines
    num = str(span.line)
    pad = " " * len(num)
    end = span.end_col if span.end_line == span.line else len(text) + 1
    col = span.col
    if len(text) > MAX_LINE:  # show a window around the caret, not a 17,000-character line
        start = max(0, min(col - 1 - 20, len(text) - MAX_LINE))
        text = ("..." if start else "") + text[start:start + MAX_LINE] + ("..." if start + MAX_LINE < len(text) else "")
        shift = start - (3 if start else 0)
        col, end = col - shift, min(end - shift, len(text) + 1)
    width = max(1, end - col)
    caret = " " * (col - 1) + "^" * width
    lines += [f"{pad} |", f"{num} | {text}", f"{pad} | {caret}" + (f" {label}" if label else "")]
    return lines


class SpecError(Exception):
    """Raised to abort one unit of work with one or more diagnostics."""

    def __init__(self, *diags: Diagnostic) -> None:
        super().__init__("; ".join(d.message for d in diags))
        self.diagnostics = list(diags)

    @classmethod
    def at(cls, code: str, message: str, span: Span | None = None, *, label: str = "",
           notes: list[Note] | None = None, help: str | None = None) -> "SpecError":
        return cls(Diagnostic(code, message, span, label, notes or [], help))


class ShapeError(Exception):
    """Raised by op shape rules; the elaborator adds the location and op name."""

    def __init__(self, message: str, code: str = "E0301", operand: int | None = None,
                 notes: list[Note] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.operand = operand  # which input the problem is about, so the note can point at its producer
        self.notes = notes or []  # other lines involved, e.g. the `where T <= n` bound a rule checked against


def render_all(diags: list[Diagnostic], sources: SourceMap | None) -> str:
    body = "\n\n".join(d.render(sources) for d in diags)
    n = len(diags)
    return f"{body}\n\n{'error' if n == 1 else f'{n} errors'} found" if n else ""
