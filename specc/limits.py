"""Compile-time budgets: how much work checking one spec may do before it is refused with a located error.

A spec is a program (loops, recursion into blocks, arithmetic on unbounded integers), so without bounds a few lines
can run for hours or exhaust memory. Each budget is large enough for every spec in the zoo by orders of magnitude,
names itself in the error, and is raised with the CLI flag (or `specc.load(..., limits=Limits(steps=...))`).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from .diagnostics import Diagnostic, SpecError
from .source import Span


@dataclass(frozen=True)
class Limits:
    steps: int = 300_000  # expressions evaluated and statements run (an op or block call counts 10)
    int_digits: int = 200  # decimal digits of any compile-time integer (and coefficient of a symbolic dim)
    collection: int = 1_000_000  # elements of one list, tuple, range or string built at compile time
    specializations: int = 2_000  # distinct graphs (block specialisations, repeat bodies)
    nodes: int = 200_000  # nodes of the model with every block call expanded (repeat bodies counted once)
    nesting: int = 200  # brackets, blocks and statements nested inside each other
    dim_terms: int = 256  # terms of one symbolic dim (B*T + 2*B + ...)
    name_length: int = 200  # characters of a model, block, layer or value name

    @classmethod
    def flag(cls, field: str) -> str:
        return "--max-" + field.replace("_", "-")


FIELDS = tuple(f.name for f in fields(Limits))
WHAT = {
    "steps": "evaluation steps",
    "int_digits": "digits in an integer",
    "collection": "elements in a list, tuple, range or string",
    "specializations": "block specialisations and repeat bodies",
    "nodes": "nodes in the model with its block calls expanded",
    "nesting": "levels of nesting",
    "dim_terms": "terms in a symbolic dimension",
    "name_length": "characters in a name",
}


class Abort(Exception):
    """Ends the whole check with one diagnostic: a budget exceeded, or an internal error located at a spec line.
    Not a SpecError, so no statement-level recovery swallows it and keeps spending the budget."""

    def __init__(self, diag: Diagnostic) -> None:
        super().__init__(diag.message)
        self.diagnostic = diag


def over_budget(limits: Limits, field: str, span: Span | None, detail: str = "") -> Abort:
    limit = getattr(limits, field)
    return Abort(Diagnostic(
        "E0112", f"compile-time budget exceeded: more than {limit:,} {WHAT[field]}" + (f" ({detail})" if detail else ""),
        span, label="here", help=f"raise the budget with {Limits.flag(field)} N if this is intended"))


def internal_error(exc: BaseException, span: Span | None, what: str = "this line") -> Abort:
    """An unexpected exception while checking `span`: still a bug in specc (exit 3), but the user sees where."""
    from .diagnostics import INTERNAL

    msg = str(exc)
    msg = msg if len(msg) <= 200 else msg[:200] + "..."
    return Abort(Diagnostic(INTERNAL, f"internal error while checking {what}: {type(exc).__name__}: {msg}", span,
                            label="triggered here", help="this is a bug in specc, not in your spec; please report "
                            "it with this spec (SPECC_DEBUG=1 shows the traceback)"))


def int_digits(n: int) -> int:
    """Decimal digits of |n| without converting it to a string (which Python refuses beyond 4,300 digits)."""
    n = abs(n)
    if n < 10:
        return 1
    d = int(n.bit_length() * 0.30102999566398120) + 1  # may be one too many
    return d - 1 if n < 10 ** (d - 1) else d


def short_int(n: int, keep: int = 12) -> str:
    """An integer for a message: in full up to 40 digits, else its first digits and its length."""
    digits = int_digits(n)
    if digits <= 40:
        return str(n)
    head = abs(n) // 10 ** (digits - keep)
    return f"{'-' if n < 0 else ''}{head}... ({digits:,} digits)"


def check_name(limits: Limits, name: str, span: Span | None, what: str = "name") -> None:
    if len(name) > limits.name_length:
        raise SpecError.at("E0112", f"{what} {name[:24]}... is {len(name):,} characters long; at most "
                           f"{limits.name_length} are allowed", span, label="here",
                           help=f"use a shorter name (or raise the limit with {Limits.flag('name_length')} N)")
