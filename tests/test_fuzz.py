"""Property: mutating a zoo spec (tokens deleted, duplicated, swapped; numbers changed; stray characters) gives
either a checked spec or located spec errors, never another exception."""
from __future__ import annotations

import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specc.api import CheckError, loads
from specc.diagnostics import CODES
from specc.printer import parse_module, print_module

SPECS = Path(__file__).resolve().parent.parent / "specs"
SOURCES = {p.relative_to(SPECS).as_posix(): p.read_text() for p in sorted(SPECS.rglob("*.nn"))}

# roughly the spec language's tokens: strings, comments, numbers, names, multi-character operators, anything else
TOKEN = re.compile(r'"[^"\n]*"|#[^\n]*|\d+\.\d+|\d+|[A-Za-z_]\w*|->|//|\*\*|[<>=!]=|\S')
NUMBER = re.compile(r"\d+")
NAME = re.compile(r"[A-Za-z_]\w*")
NUMBERS = ["0", "1", "2", "3", "-1", "7", "64", "1000000", "2.5", "1e999", "99999999999999999999"]
CHARS = list('(){}[],:=+-*/%@<>.#"\\ \n\t0123456789abxyz_') + ["é", "\x00", "->", "...", "as", "repeat"]


def _splice(text: str, span: tuple[int, int], new: str) -> str:
    return text[:span[0]] + new + text[span[1]:]


@st.composite
def mutation(draw, text: str) -> str:
    tokens = [m.span() for m in TOKEN.finditer(text)]
    kind = draw(st.sampled_from(["delete", "duplicate", "swap", "number", "insert", "rename"]))
    if kind == "insert" or not tokens:
        at = draw(st.integers(0, len(text)))
        return _splice(text, (at, at), draw(st.sampled_from(CHARS)))
    a = tokens[draw(st.integers(0, len(tokens) - 1))]
    if kind == "delete":
        return _splice(text, a, "")
    if kind == "duplicate":
        return _splice(text, a, text[a[0]:a[1]] + " " + text[a[0]:a[1]])
    if kind == "swap":
        b = tokens[draw(st.integers(0, len(tokens) - 1))]
        (a, b) = sorted((a, b))
        if a[1] > b[0]:
            return text
        return text[:a[0]] + text[b[0]:b[1]] + text[a[1]:b[0]] + text[a[0]:a[1]] + text[b[1]:]
    if kind == "number":
        spans = [m.span() for m in NUMBER.finditer(text)]
        if not spans:
            return text
        return _splice(text, spans[draw(st.integers(0, len(spans) - 1))], draw(st.sampled_from(NUMBERS)))
    names = [m.span() for m in NAME.finditer(text)]
    src, dst = (names[draw(st.integers(0, len(names) - 1))] for _ in range(2))
    return _splice(text, dst, text[src[0]:src[1]])


@st.composite
def mutated_spec(draw) -> tuple[str, str]:
    name = draw(st.sampled_from(sorted(SOURCES)))
    text = SOURCES[name]
    for _ in range(draw(st.integers(1, 3))):
        text = draw(mutation(text))
    return name, text


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_spec())
def test_mutated_specs_fail_only_with_located_spec_errors(case):
    name, text = case
    try:
        spec = loads(text, name=name)
    except CheckError as err:
        assert err.diagnostics
        for d in err.diagnostics:
            assert d.code in CODES, d
            assert d.message
            if d.code == "E0001":
                assert d.span is not None and d.span.line >= 1 and d.span.col >= 1, d
        assert "error" in err.render()
        return
    # a mutation that still checks must still be a consistent module
    s = spec.summary()
    assert s.params >= 0
    text_ir = print_module(spec.module)
    assert print_module(parse_module(text_ir)) == text_ir


def test_the_unmutated_zoo_checks():
    for name, text in SOURCES.items():
        if not name.startswith("std/"):
            loads(text, name=name)
