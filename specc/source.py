"""Source files and spans: every AST and IR node points back at the spec text it came from."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# the standard library of specs that `import "x.nn"` also searches
STDLIB = Path(__file__).resolve().parent.parent / "specs"


@dataclass(frozen=True, order=True)
class Span:
    """A half-open region of one source file, 1-based lines and columns (end column exclusive)."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"

    @classmethod
    def of(cls, file: str, meta) -> "Span | None":
        """Build a span from a lark tree's meta or a token."""
        line = getattr(meta, "line", None)
        if line is None:
            return None
        return cls(file, line, meta.column, meta.end_line, meta.end_column)

    def merge(self, other: "Span | None") -> "Span":
        if other is None or other.file != self.file:
            return self
        a, b = min(self, other), max(self, other, key=lambda s: (s.end_line, s.end_col))
        return Span(self.file, a.line, a.col, b.end_line, b.end_col)


class SourceMap:
    """Keeps the text of every file read so diagnostics can quote lines."""

    def __init__(self) -> None:
        self.texts: dict[str, str] = {}

    def add(self, name: str, text: str) -> None:
        self.texts[name] = text

    def read(self, path: Path) -> str:
        text = path.read_text(encoding="utf-8")
        self.add(str(path), text)
        return text

    def line(self, name: str, lineno: int) -> str | None:
        text = self.texts.get(name)
        if text is None:
            return None
        lines = text.splitlines()
        return lines[lineno - 1] if 0 < lineno <= len(lines) else None
