"""`specc diff`: PyTorch (the emitted module, node by node) against TVM; the first divergent node is named with its
spec line."""
from __future__ import annotations

import pytest
from torch_util import REPO, dim_env, load_small, spec_paths

import specc
from specc.cli import main

pytestmark = pytest.mark.tvm
tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

from tvm import relax  # noqa: E402

from specc.backends.tvm.diff import diff_nodes, report  # noqa: E402
from specc.backends.tvm.rules import RULES, load_rules  # noqa: E402

GPT2 = str(REPO / "specs" / "gpt2.nn")
TINY = ["-D", "layers=2", "-D", "d=32", "-D", "heads=4", "-D", "vocab=50", "-D", "ctx=16"]


def test_diff_agrees_on_every_node(capsys):
    assert main(["diff", GPT2, *TINY, "--dim", "T=6"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("all ") and "nodes agree" in out


def test_diff_names_the_first_divergent_node_and_its_line(monkeypatch):
    load_rules()
    gelu = RULES["gelu"]
    monkeypatch.setitem(RULES, "gelu", lambda ctx, x: relax.op.multiply(ctx.emit(gelu(ctx, x)),
                                                                         relax.const(1.01, "float32")))
    spec = specc.load(GPT2, layers=2, d=32, heads=4, vocab=50, ctx=16)
    diffs = diff_nodes(spec)
    bad = diffs[-1]
    assert not bad.ok and all(d.ok for d in diffs[:-1])
    assert bad.name == "h.0.mlp.gelu" and bad.node.target == "gelu"
    text = report(diffs, spec)
    assert "diverge first at node 'h.0.mlp.gelu' (gelu)" in text
    line = bad.node.span.line
    assert f"specs/gpt2.nn:{line}:" in text.replace("\\", "/") and 'gelu("tanh")' in text and "^" in text


def test_diff_cnn_with_batchnorm(capsys):
    assert main(["diff", str(REPO / "specs" / "cifar_cnn.nn"), "--dim", "B=1"]) == 0


def test_compare_counts_agreeing_infinities_as_equal_and_a_one_sided_one_as_divergence():
    import numpy as np

    from specc.backends.tvm.diff import compare

    ref = np.array([[0.5, -np.inf], [2.0, -np.inf]], np.float32)
    assert compare(ref.copy(), ref) == (0.0, 2.0)
    assert compare(ref + np.float32(0.25), ref) == (0.25, 2.0)
    err, _ = compare(np.array([[0.5, 0.0], [2.0, -np.inf]], np.float32), ref)
    assert err == float("inf")
    err, _ = compare(np.array([[np.nan, -np.inf], [2.0, -np.inf]], np.float32), ref)
    assert err == float("inf")


# MoE specs (a tap inside the experts has no PyTorch counterpart) and T5-style causal relative-position biases
# (-inf above the diagonal on both sides) used to crash or report a false nan divergence.
ZOO_DIFF = {
    "switch_base_8": ["-D", "vocab=50", "-D", "d=32", "-D", "heads=4", "-D", "layers=2", "-D", "d_ff=64",
                      "-D", "experts=4", "--dim", "S=6", "--dim", "T=5"],
    "mixtral_8x7b": ["-D", "vocab=50", "-D", "d=32", "-D", "hidden=64", "-D", "layers=1", "-D", "heads=4",
                     "-D", "kv_heads=2", "-D", "experts=4", "-D", "ctx=16", "--dim", "B=1", "--dim", "T=6"],
}


@pytest.mark.parametrize("name", sorted(ZOO_DIFF))
def test_diff_agrees_on_moe_and_causal_relative_bias_specs(name, capsys):
    assert main(["diff", str(REPO / "specs" / f"{name}.nn"), *ZOO_DIFF[name]]) == 0
    out = capsys.readouterr().out
    assert out.startswith("all ") and "nodes agree" in out and "nan" not in out


@pytest.mark.slow
@pytest.mark.parametrize("path", spec_paths(), ids=lambda p: p.stem)
def test_diff_agrees_on_every_zoo_spec(path):
    spec = load_small(path)
    diffs = diff_nodes(spec, dims=dim_env(spec))
    assert diffs and all(d.ok for d in diffs), report(diffs, spec)


def test_diff_agrees_on_a_scalar_parameter():
    # a 0-d weight (CLIP's logit_scale) used to come back from TVM as shape (1,)
    from specc.api import loads

    spec = loads("model M() {\n  input x: f32[2, 3]\n  param s: f32[] = constant(2.5)\n  output y = x * exp(s)\n}\n",
                 "t.nn")
    diffs = diff_nodes(spec)
    assert len(diffs) == 3 and all(d.ok for d in diffs), report(diffs, spec)
