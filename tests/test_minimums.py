"""Windows over symbolic dims (conv, pool) need a smallest size: known at check time, refused by the emitted forward
with the spec's words, and an error when the spec's own bound rules every size out (fuzz emit case 27689)."""
from __future__ import annotations

import pytest

from specc.api import CheckError, loads

POOLS = """model M() {{
  input x: f32[B, T]{where}
  output out = x -> maxpool1d(kernel_size=(8,)) -> avgpool1d(2, (3,))
}}
"""


def test_smallest_size_of_a_pooled_dim_is_found():
    spec = loads(POOLS.format(where=""), name="m.nn")
    least, span, op = spec.module.minimums["T"]
    # T = 16: maxpool leaves 2 positions, the avgpool window (2, stride 3) one; T = 15 leaves it none
    assert (least, op, span.line) == (16, "avgpool1d", 3)


def test_bound_below_the_smallest_size_is_a_located_error():
    with pytest.raises(CheckError) as err:
        loads(POOLS.format(where=" where T <= 15"), name="m.nn")
    text = err.value.render()
    assert "E0305" in text and "needs T >= 16" in text and "m.nn:3:" in text and "T <= 15 is declared here" in text
    loads(POOLS.format(where=" where T <= 16"), name="m.nn")  # 16 itself is fine


def test_emitted_forward_refuses_a_too_short_input_and_runs_at_the_smallest_size():
    torch = pytest.importorskip("torch")
    model = loads(POOLS.format(where=""), name="m.nn").to_torch().eval()
    assert model(torch.randn(2, 16)).shape == (2, 1)
    with pytest.raises(ValueError, match=r"x has T = 15, M needs T >= 16 \(for its avgpool1d\)"):
        model(torch.randn(2, 15))


def test_dims_that_never_shrink_need_nothing():
    spec = loads("model M() {\n  input x: f32[B, T, 4]\n  output y = x -> linear(8) -> reshape(-1, 8)\n}\n",
                       name="m.nn")
    assert spec.module.minimums == {}


@pytest.mark.parametrize("subscript, least", [("[8]", 9), ("[-3]", 3), ("[2:5]", 5), ("[:, 1:-2]", None)])
def test_indices_and_slices_into_symbolic_dims_need_that_many_positions(subscript, least):
    """x[8] on [B, ...] needs B >= 9; x[2:5] needs 5 positions, or Python's slice clips silently to fewer than the
    3 the checker predicted (fuzz emit case 15152, seed 2)."""
    spec = loads(f"model M() {{\n  input x: f32[B, T]\n  output y = x{subscript}\n}}\n", name="m.nn")
    if least is None:
        assert spec.module.minimums.get("B") is None
        assert spec.module.minimums["T"][0] == 4  # [1:-2] keeps at least one of T
    else:
        assert spec.module.minimums["B"][:1] == (least,) and spec.module.minimums["B"][2] == "slice"
