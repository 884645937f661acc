"""`where` bounds carried through the dim arithmetic of conv, pool and reshape, and E0304's suggested fix: the
`where` clause it prints is valid spec text that makes the spec pass, and it is tight (one more fails)."""
from __future__ import annotations

import re

import pytest

from specc.api import CheckError, loads
from specc.symbolic import Sym, is_monotone, largest_within, parse_dim

CASES = {  # the layers between an input of length T (dim 2 of [B, 8, T]) and a 100-position table
    "stride-2 conv1d": "conv1d(16, 3, stride=2, padding=1) as conv -> transpose(1, 2)",
    "two convs": "conv1d(16, 3, padding=1) as c1 -> conv1d(16, 3, stride=2, padding=1) as c2 -> transpose(1, 2)",
    "valid conv": "conv1d(16, 5) as conv -> transpose(1, 2)",
    "max pool": "maxpool1d(3, stride=2) -> transpose(1, 2)",
    "reshape to pairs": "transpose(1, 2) -> reshape(dim(x, 0), -1, 4)",
}


def spec(layers: str, where: str = "") -> str:
    return (f"model M() {{\n  input x: f32[B, 8, T]{where}\n"
            f"  output y = x -> {layers} -> learned_pos(100) as pos\n}}\n")


@pytest.mark.parametrize("layers", CASES.values(), ids=CASES.keys())
def test_the_suggested_where_clause_passes_and_is_tight(layers):
    with pytest.raises(CheckError) as err:
        loads(spec(layers), "t.nn")
    text = err.value.render()
    assert "E0304" in text
    hint = re.search(r"`(where T <= (\d+))`", text)
    assert hint, text
    loads(spec(layers, " " + hint.group(1)), "t.nn")  # the fix as printed, pasted into the input line
    with pytest.raises(CheckError) as over:
        loads(spec(layers, f" where T <= {int(hint.group(2)) + 1}"), "t.nn")
    assert re.search(r"can be up to 10[12]\b", over.value.render())  # the tight bound plus one step of T


def test_a_bound_through_a_stride_2_conv_is_checked_exactly():
    layers = CASES["stride-2 conv1d"]
    loads(spec(layers, " where T <= 200"), "t.nn")  # (200 - 1)//2 + 1 = 100 positions
    with pytest.raises(CheckError) as err:
        loads(spec(layers, " where T <= 202"), "t.nn")
    assert "sequence length (T - 1)//2 + 1 can be up to 101" in err.value.render()


def test_monotone_dims_and_the_largest_value_within_a_limit():
    assert is_monotone(parse_dim("(T - 1)//2 + 1")) and is_monotone(Sym.var("T") * 3 + 2)
    assert not is_monotone(parse_dim("(8 - T)//2")) and not is_monotone(10 - Sym.var("T"))
    assert largest_within(parse_dim("(T - 1)//2 + 1"), "T", {}, 1500) == 3000
    assert largest_within(parse_dim("(T - 1)//2 + 1"), "T", {}, 0) is None
