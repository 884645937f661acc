"""Questions about the AST that the elaborator asks: which names a statement assigns or reads, and how an error
inside a block is shown from its caller."""
from __future__ import annotations

from .. import ast as A
from ..diagnostics import Diagnostic, Note
from ..source import Span


def _seen_from_caller(dg: Diagnostic, d: A.Def, present: list, tensors: list, call: Span | None) -> None:
    """An error inside a block also shows the call: notes about the block's tensor inputs point at where the
    caller's tensors come from, and a last note points at the call itself."""
    origin = {p.span: t for p, t in zip(present, tensors) if p.span is not None}
    dg.notes = [Note(origin[n.span].span, n.message) if n.span in origin else n for n in dg.notes]
    note = Note(call, f"in block {d.name}, called here")
    if note not in dg.notes:  # a block calling itself: one note per call site, not one per level
        dg.notes.append(note)


def _assigned_names(stmt) -> list[str]:
    if isinstance(stmt, A.Assign):
        return list(stmt.targets)
    if isinstance(stmt, A.OutputStmt):
        return [stmt.name]
    return []


_walk_stmts = A.statements


def _assigned_in(body) -> set[str]:
    out: set[str] = set()
    for s in _walk_stmts(body):
        if isinstance(s, A.Assign):
            out |= set(s.targets)
        elif isinstance(s, A.For):
            out |= set(s.targets)
    return out


def _names_read(node) -> set[str]:
    out: set[str] = set()
    todo = [node]  # an explicit stack, not recursion: a 1000-step `->` chain is 1000 nested Chain nodes
    while todo:
        x = todo.pop()
        if isinstance(x, A.Name):
            out.add(x.id)
        elif isinstance(x, A.Link):
            out.add(x.func)
            todo.extend(x.args or ())
        elif isinstance(x, (tuple, list)):
            todo.extend(x)
        elif isinstance(x, A.Node):
            todo.extend(getattr(x, f) for f in x.__dataclass_fields__ if f != "span")
    return out

