"""`specc diff`: PyTorch (the emitted module, node by node) against TVM; the first divergent node is named with its
spec line."""
from __future__ import annotations

import pytest
from torch_util import REPO

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
