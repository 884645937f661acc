"""Hostile specs from the campaign in issue 17: each ends in `specc check` within seconds, with exit 1 and a located
diagnostic of the expected code; compile-time budgets name themselves and the flag that raises them."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from specc.api import CheckError, loads
from specc.limits import Limits

BIG = "1" + "0" * 5000


def _model(body: str, params: str = "", pre: str = "") -> str:
    return f"{pre}model M({params}) {{\n{body}}}\n"


X = "  input x: f32[B, 4]\n"
SEQ = "  input x: f32[B, T, 4]\n"
IMG = "  input x: f32[B, 3, 8, 8]\n"
NEST = "  repeat 1 {\n" * 240 + "  x = x -> relu\n" + "  }\n" * 240
FANOUT = ("block F(x, d: int, k: int) {\n  if d == 0 {\n    return x\n  }\n"
          "  return (x -> F(d - 1, k * 2)) + (x -> F(d - 1, k * 2 + 1))\n}\n")
TWICE = ("block F(x, d: int) {\n  if d == 0 {\n    return x\n  }\n  a = x -> F(d - 1)\n  b = x -> F(d - 1)\n"
         "  return a + b\n}\n")

# name -> (spec, code, words the message must contain)
CASES = {
    "int_of_inf": (_model(X + "  output y = x -> linear(n)\n", "n: int = int(1e308 * 10.0)"), "E0108", "finite"),
    "int_of_nan": (_model(X + "  n = int((1e308 * 10.0) - (1e308 * 10.0))\n  output y = x -> linear(n)\n"),
                   "E0108", "finite"),
    "int_builtin_inf": (_model(X + "  output y = x -> linear(n)\n", "f: float = 1e308, n: int = int(f * f)"),
                        "E0108", "finite"),
    "huge_dim_literal": (_model(f"  input x: f32[B, {BIG}]\n  output y = x\n"), "E0001", "too long"),
    "huge_dim_arith": (_model(X + "  output y = x -> reshape(B * 10 ** 5000, -1)\n"), "E0112", "--max-int-digits"),
    "huge_repeat_count": (_model(X + f"  repeat {BIG[:4400]} {{\n    x = x -> relu\n  }}\n  output y = x\n"),
                          "E0001", "too long"),
    "huge_int_in_message": (_model(X + "  n = 7 ** 5000\n  output y = x -> linear(n)\n"), "E0112", "digits"),
    "huge_range": (_model(X + "  r = range(10 ** 30)\n  output y = x\n"), "E0112", "--max-collection"),
    "huge_list": (_model(X + "  r = [1, 2] * 10 ** 12\n  output y = x\n"), "E0112", "--max-collection"),
    "range_step_zero": (_model(X + "  r = range(1, 5, 0)\n  output y = x\n"), "E0108", "step"),
    "tuple_in_elementwise": (_model(SEQ + "  s = x -> split(2)\n  output y = s + x\n"), "E0108", "tuple"),
    "tuple_in_shape_rule": (_model(SEQ + "  s = x -> lstm(4)\n  output y = s -> relu\n"), "E0108", "tuple"),
    "empty_padding": (_model(IMG + "  output y = x -> conv2d(4, 3, padding=())\n"), "E0305", "per spatial"),
    "empty_pool_padding": (_model(IMG + "  output y = x -> maxpool2d(2, padding=())\n"), "E0305", "per spatial"),
    "slice_beyond_maxsize": (_model("  input x: f32[9223372036854775808, 4]\n  output y = x[:]\n"),
                             "E0107", "64 bits"),
    "nested_repeat_240": (_model(X + NEST + "  output y = x\n"), "E0001", "--max-nesting"),
    "lstm_num_layers": (_model(SEQ + "  o, h, c = x -> lstm(4, num_layers=2147483647)\n  output y = o\n"),
                        "E0107", "num_layers"),
    "gru_num_layers": (_model(SEQ + "  o, h = x -> gru(4, num_layers=2147483647)\n  output y = o\n"),
                       "E0107", "num_layers"),
    "glued_model": ("modelM() {\n  input x: f32[B, 4]\n  output y = x\n}\n", "E0001", "runs into"),
    "glued_in": (_model(X + "  for i inrange(2) {\n    x = x -> relu\n  }\n  output y = x\n"), "E0001", "runs into"),
    "long_model_name": ("model M" + "x" * 300 + "() {\n  input x: f32[B, 4]\n  output y = x\n}\n", "E0112", "name"),
    "huge_alias": (_model(X + "  output y = x -> relu as r" + "x" * 17000 + "\n"), "E0112", "name"),
    "repeated_squaring": (_model(X + "  n = 3\n  for i in range(100) {\n    n = n * n\n  }\n  output y = x\n"),
                          "E0112", "--max-int-digits"),
    "symbolic_squaring": (_model(X + "  n = B + 1\n  for i in range(40) {\n    n = n * n\n  }\n  output y = x\n"),
                          "E0112", "--max-dim-terms"),
    "nested_loops": (_model(X + "  s = 0\n  for i in range(100000) {\n    for j in range(100000) {\n"
                            "      s = s + 1\n    }\n  }\n  output y = x\n"), "E0112", "--max-steps"),
    "fan_out_specialisations": (_model(X + "  output y = x -> F(40, 1)\n", pre=FANOUT), "E0112",
                                "--max-specializations"),
    "expansion_of_memoised_calls": (_model(X + "  output y = x -> F(40)\n", pre=TWICE), "E0112", "--max-nodes"),
    "failed_recursion_fans_out": (_model(X + "  output y = x -> F(10000)\n", pre=TWICE), "E0111", "nest"),
    "repeat_without_fixpoint": (_model(X + "  repeat 1000000000 {\n    x = concat(x, x, dim=0)\n  }\n"
                                       "  output y = x\n"), "E0305", "64-bit"),
    "float_times_dim": (_model(X + "  output y = x -> reshape(B * 1.5, -1)\n"), "E0108", "whole number"),
    "pool_of_ints": (_model("  input x: i64[B, 3, 8, 8]\n  output y = x -> adaptive_avgpool2d(2)\n"),
                     "E0302", "floating-point"),
    "conv_stride_beyond_int64": (_model(IMG + "  output y = x -> conv2d(4, 3, stride=9223372036854775808)\n"),
                                 "E0107", "64 bits"),
    "conv_padding_beyond_int64": (_model(IMG + "  output y = x -> conv2d(4, 3, padding=9223372036854775808)\n"),
                                  "E0107", "64 bits"),
    "repeat_carries_nothing": (_model(X + "  repeat 2 {\n    y = x -> linear(4)\n  }\n  output y = x\n"),
                               "E0108", "no effect"),
    "empty_repeat": (_model(X + "  repeat 2 {\n  }\n  output y = x\n"), "E0108", "no effect"),
    "fused_by_hand": (_model("  input x: f32[B, 4]\n  output y = x -> fused(base=\"conv1d\", layer=\"x\", "
                             "base_attrs=())\n"), "E0305", "absorbed"),
    "slice_item_string": (_model(X + "  output y = x -> slice(items=(\"tanh\", \"x\"))\n"), "E0107", "subscript"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_spec_ends_in_a_located_error(name):
    text, code, words = CASES[name]
    t0 = time.monotonic()
    with pytest.raises(CheckError) as e:
        loads(text, name=f"{name}.nn")
    assert time.monotonic() - t0 < 20  # a few seconds alone; generous for a loaded CI machine
    diags = e.value.diagnostics
    assert [d.code for d in diags][:1] == [code], e.value.render()
    d = diags[0]
    assert d.span is not None and d.span.line >= 1 and d.span.col >= 1, d
    rendered = e.value.render()
    assert words in rendered, rendered
    assert len(rendered) < 20_000  # no flood of errors, no 5,000-digit numbers


def test_nested_too_deeply_points_at_the_construct():
    with pytest.raises(CheckError) as e:
        loads(CASES["nested_repeat_240"][0], name="n.nn")
    span = e.value.diagnostics[0].span
    assert span.line > 100  # not 1:1


def test_nesting_within_the_limit_still_checks():
    """200 nested repeats fit the default nesting budget once it is raised, without RecursionError."""
    text = _model(X + "  repeat 1 {\n" * 200 + "  x = x -> relu\n" + "  }\n" * 200 + "  output y = x\n")
    spec = loads(text, name="deep.nn", limits=Limits(nesting=1000))
    assert spec.summary().params == 0


@pytest.mark.parametrize("expr,value", [("B * 2.0", "2*B"), ("(2 * B) * 1.5", "3*B"), ("B + 1.0", "B + 1"),
                                        ("B * 3 // 2", "(3*B)//2")])
def test_float_with_dim_when_integral(expr, value):
    spec = loads(_model(X + f"  n = {expr}\n  assert n == {expr}\n  output y = x\n"), name="f.nn")
    assert spec.summary().params == 0
    from specc.symbolic import Sym

    assert str(eval(expr, {"B": Sym.var("B")})) == value


def test_budgets_are_raised_by_flags(tmp_path):
    spec = tmp_path / "loop.nn"
    spec.write_text(_model(X + "  s = 0\n  for i in range(200000) {\n    s = s + 1\n  }\n  output y = x\n"))
    run = [sys.executable, "-m", "specc", "check", str(spec)]
    r = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "--max-steps" in r.stderr, r.stderr
    r = subprocess.run(run + ["--max-steps", "5000000"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_undecodable_define_is_a_usage_error(tmp_path):
    spec = tmp_path / "m.nn"
    spec.write_text(_model(X + "  output y = x -> linear(n)\n", "n: int = 4"))
    r = subprocess.run([sys.executable.encode(), b"-m", b"specc", b"check", str(spec).encode(), b"-D", b"n=\xff\xfe"],
                       capture_output=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert b"Traceback" not in r.stderr and b"UTF-8" in r.stderr


def test_an_internal_error_is_located_and_exits_3(tmp_path, monkeypatch):
    """The last-resort guard: a shape rule that crashes becomes an E0900 at the spec line, exit status 3."""
    from specc.cli import main
    from specc.ops import registry

    def broken(ins, attrs):
        raise KeyError("a bug")

    monkeypatch.setattr(registry.get("relu"), "infer", broken)
    monkeypatch.delenv("SPECC_DEBUG", raising=False)
    spec = tmp_path / "m.nn"
    spec.write_text(_model(X + "  h = x -> linear(4)\n  output y = h -> relu\n"))
    with pytest.raises(CheckError) as e:
        loads(spec.read_text(), name="m.nn")
    d = e.value.diagnostics[0]
    assert d.code == "E0900" and d.span.line == 4 and "KeyError" in d.message
    assert main(["check", str(spec)]) == 3
