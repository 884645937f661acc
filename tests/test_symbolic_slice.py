"""Slices whose bounds are symbolic sizes (`table[:T]`, `x[:, :T - 1]`): accepted when the where-bounds prove them
in range, read from the sizes of the tensors that carry the symbol at run time (PyTorch and TVM)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from specc.api import CheckError, loads
from specc.printer import parse_module, print_module

POSITIONS = """
model M(ctx: int = 16) {
  input x: f32[B, T, 8] where T <= ctx
  param table: f32[ctx, 8]
  output y = x + table[:STOP]
}
"""

WINDOWS = """
model W(ctx: int = 6) {
  input x: f32[B, T, 4] where T <= ctx
  param table: f32[ctx, 4]
  output head = table[:T]
  output tail = table[T:]
  output shifted = x[:, 1:T]
  output last = x[:, :T - 1]
}
"""


def _load(text: str, stop: str = "dim(x, 1)"):
    return loads(text.replace("STOP", stop), "m.nn")


def _error(text: str):
    with pytest.raises(CheckError) as e:
        loads(text, "m.nn")
    (d,) = e.value.diagnostics
    return d


@pytest.mark.parametrize("stop", ["dim(x, 1)", "T", "2 * T - T"])
def test_a_bounded_symbolic_stop_is_accepted_with_a_symbolic_shape(stop):
    g = _load(POSITIONS, stop).module.graph
    (s,) = [n for n in g.nodes() if n.target == "slice"]
    assert str(s.type) == "f32[T, 8]"
    assert s.inputs == ("table", "x")  # x carries T at run time
    assert str(g["y"].type) == "f32[B, T, 8]"


def test_the_shape_of_each_window():
    g = loads(WINDOWS, "w.nn").module.graph
    assert {o: str(g[o].type) for o in g.outputs} == {
        "head": "f32[T, 4]", "tail": "f32[-T + 6, 4]", "shifted": "f32[B, T - 1, 4]", "last": "f32[B, T - 1, 4]"}
    # a slice of x by its own size needs no other input
    assert [n.inputs for n in g.nodes() if n.var in ("shifted", "last")] == [("x",), ("x",)]


def test_a_missing_bound_is_a_located_error_with_the_where_hint():
    d = _error(POSITIONS.replace(" where T <= ctx", "").replace("STOP", "T"))
    assert d.code == "E0304" and "slice: cannot check the bound T against dim 0 (size 16)" in d.message
    assert "`where T <= 16`" in d.message
    assert (d.span.line, d.span.col) == (5, 18)  # table[:T]


@pytest.mark.parametrize("text,code,words", [
    (POSITIONS.replace("STOP", "2 * T"), "E0304", "slice: the bound 2*T can be up to 32, past the end of dim 0 (size 16)"),
    (POSITIONS.replace("T <= ctx", "T <= 20").replace("STOP", "T"), "E0304", "T can be up to 20"),
    (POSITIONS.replace("table[:STOP]", "x[:, :T + 1]"), "E0305", "the bound T + 1 is past the end of dim 1 (T)"),
    (POSITIONS.replace("table[:STOP]", "x[:, T - 2:]"), "E0305", "the bound T - 2 can be negative"),
    (POSITIONS.replace("table[:STOP]", "x[:, :2 * T]"), "E0304", "cannot prove the bound 2*T is within dim 1 (T)"),
    (POSITIONS.replace("table[:STOP]", "table[:T:T]"), "E0108", "slice step must be a compile-time int"),
])
def test_a_bound_out_of_range_is_an_error(text, code, words):
    d = _error(text)
    assert d.code == code and words in d.message, d.message
    assert d.span.line == 5


def test_the_bound_that_reaches_past_the_table_points_at_the_where_clause():
    d = _error(POSITIONS.replace("STOP", "T + 1"))
    assert any("T is bounded here: T <= 16" in n.message and n.span.line == 3 for n in d.notes)


def test_an_unbounded_symbol_names_the_bound_to_add():
    d = _error("model M() {\n input x: f32[B, 8]\n param t: f32[4, 8]\n output y = t[:dim(x, 0)]\n}")
    assert d.code == "E0304" and "the bound B" in d.message and "`where B <= 4`" in d.message


BLOCKS = """
block Whole(y) {
  t = parameter(64, 8)
  return t[:dim(y, 1)]
}
block Part(y) {
  t = parameter(64, 8)
  return t[:dim(y, 1) // 8]
}
model M() {
  input x: f32[N, 8] where N <= 2
  y = x -> reshape(1, -1)
  output w = y -> BLOCK
}
"""


def test_a_bound_that_is_a_dim_of_a_block_input_is_read_from_it():
    spec = loads(BLOCKS.replace("BLOCK", "Whole"), "b.nn")
    assert "t = t[: y.size(1)]  # [8*N, 8]" in spec.torch_source()


def test_a_symbol_no_tensor_carries_is_a_located_error():
    with pytest.raises(CheckError) as e:
        loads(BLOCKS.replace("BLOCK", "Part"), "b.nn")
    (d,) = e.value.diagnostics
    assert d.code == "E0305" and "slice bound N: no tensor here has a dim N" in d.message
    assert (d.span.line, d.span.col) == (8, 13)  # in Part, only y: [1, 8*N] is at hand


def test_emitted_pytorch_reads_the_bound_from_the_input_and_matches_numpy():
    import torch

    spec = _load(POSITIONS)
    assert "table[: x.size(1)]" in spec.torch_source()
    model = spec.to_torch().eval()
    table = model.state_dict()["table.weight"].numpy()
    for t in (3, 11):
        x = torch.randn(2, t, 8)
        with torch.no_grad():
            y = model(x)
        np.testing.assert_allclose(y.numpy(), x.numpy() + table[:t], rtol=1e-6)


def test_emitted_windows_read_naturally_and_match_numpy():
    import torch

    spec = loads(WINDOWS, "w.nn")
    src = spec.torch_source()
    for line in ("table[: x.size(1)]", "table[x.size(1) :]", "x[:, 1 : x.size(1)]", "x[:, : x.size(1) - 1]"):
        assert line in src, line
    model = spec.to_torch().eval()
    table = model.state_dict()["table.weight"].numpy()
    for t in (2, 5):
        x = torch.randn(3, t, 4)
        with torch.no_grad():
            got = [v.numpy() for v in model(x)]
        want = [table[:t], table[t:], x.numpy()[:, 1:t], x.numpy()[:, :t - 1]]
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


def test_the_optimised_module_computes_the_same_windows():
    import torch

    spec = loads(WINDOWS, "w.nn")
    plain = spec.to_torch(opt_level=0).eval()
    fast = spec.to_torch(opt_level=2).eval()
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(2, 4, 4)
    with torch.no_grad():
        for g, w in zip(fast(x), plain(x)):
            assert torch.equal(g, w)


@pytest.mark.parametrize("text", [POSITIONS.replace("STOP", "T"), WINDOWS])
def test_ir_text_round_trips(text):
    m = loads(text, "m.nn").module
    back = parse_module(print_module(m))
    assert print_module(back) == print_module(m)
    assert back.graph.nodes() == m.graph.nodes()


def test_check_imports_neither_torch_nor_tvm(tmp_path):
    path = tmp_path / "m.nn"
    path.write_text(WINDOWS)
    code = ("import sys, specc; specc.load(sys.argv[1]); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tvm')))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.tvm
def test_tvm_agrees_with_pytorch_at_two_lengths_from_one_build():
    pytest.importorskip("tvm")
    import torch
    from tvm_util import max_rel_diff, reference_model

    spec = loads(WINDOWS, "w.nn")
    model = reference_model(spec)
    compiled = spec.to_tvm("tvm-cpu", weights=model)
    for t in (2, 6):
        x = torch.randn(1, t, 4)
        with torch.no_grad():
            want = model(x)
        assert max_rel_diff(compiled(x), want) == 0.0, t
