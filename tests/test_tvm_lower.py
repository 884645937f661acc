"""The TVM lowering itself: every op has a rule, weights are named like the PyTorch state_dict, symbolic dims stay
symbolic, what a target cannot lower is reported for every node at once, and `specc check` never imports TVM."""
from __future__ import annotations

import subprocess
import sys

import pytest
from torch_util import REPO, load_small, spec_paths

from specc.diagnostics import SpecError

pytestmark = pytest.mark.tvm
tvm = pytest.importorskip("tvm")

from tvm import relax, tirx  # noqa: E402

from specc.backends.tvm import resolve_target  # noqa: E402
from specc.backends.tvm.lower import lower  # noqa: E402
from specc.backends.tvm.rules import RULES, load_rules  # noqa: E402
from specc.ops import all_ops  # noqa: E402


def test_every_op_has_a_tvm_rule():
    load_rules()
    missing = sorted(name for name, op in all_ops().items() if op.tvm is None)
    assert not missing, f"ops without a TVM lowering rule (add one in specc/backends/tvm/rules/): {missing}"


@pytest.mark.parametrize("path", spec_paths(), ids=lambda p: p.stem)
def test_weight_names_are_the_pytorch_state_dict(path):
    torch = pytest.importorskip("torch")
    spec = load_small(path)
    lowered = lower(spec.module)
    with torch.device("meta"):
        state = spec.to_torch().state_dict()
    assert set(lowered.weights) <= set(state), sorted(set(lowered.weights) - set(state))
    for name, (shape, _) in lowered.weights.items():
        assert tuple(state[name].shape) == shape, name
    # every trainable parameter is used (tied weights appear once, under the name the IR uses)
    with torch.device("meta"):
        model = spec.to_torch()
    used = {n for n, p in model.named_parameters()}
    assert used <= _tied(model, lowered.weights), sorted(used - set(lowered.weights))


def _tied(model, names) -> set:
    """Parameters reachable under a used name through weight tying."""
    by_id = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(p), set()).add(n)
    return {alias for group in by_id.values() if group & set(names) for alias in group}


def test_symbolic_dims_stay_symbolic_with_bounds():
    spec = load_small(REPO / "specs" / "gpt2.nn")
    main = lower(spec.module).mod["main"]
    shape = main.params[0].ty.shape.values
    assert all(isinstance(d, tirx.Var) for d in shape) and [d.name for d in shape] == ["B", "T"]
    assert dict(main.attrs["tir_var_upper_bound"]) == {"T": 16}
    static = lower(spec.module, dims={"B": 1, "T": 8}).mod["main"].params[0].ty.shape.values
    assert [int(d) for d in static] == [1, 8]


def test_permutes_around_attention_cancel():
    """[B, T, H, d] -> transpose -> sdpa -> transpose: attention reads the BSNH reshape directly."""
    spec = load_small(REPO / "specs" / "gpt2.nn")
    func = lower(spec.module).mod["main"]
    bindings = {b.var: b.value for block in func.body.blocks for b in block.bindings}
    calls = [v for v in bindings.values() if isinstance(v, relax.Call) and v.op.name == "relax.nn.attention"]
    assert calls
    for call in calls:
        for arg in call.args[:3]:
            assert bindings[arg].op.name == "relax.reshape"


def test_unsupported_nodes_are_all_reported_with_locations():
    """Recurrence over a symbolic length cannot run on CUDA: both GRUs of seq2seq are reported, each at its line."""
    spec = load_small(REPO / "specs" / "seq2seq_attention.nn")
    with pytest.raises(SpecError) as err:
        lower(spec.module, resolve_target("tvm-cuda"))
    diags = err.value.diagnostics
    assert len(diags) == 2 and all(d.code == "E0501" for d in diags)
    assert {d.message.split("'")[1] for d in diags} == {"encoder", "decoder"}
    assert all(d.span is not None and d.span.file.endswith("seq2seq_attention.nn") for d in diags)


def test_op_without_rule_is_a_located_error(monkeypatch):
    load_rules()
    monkeypatch.delitem(RULES, "gelu")
    monkeypatch.setattr(all_ops()["gelu"], "tvm", None)
    spec = load_small(REPO / "specs" / "bert_base.nn")
    with pytest.raises(SpecError) as err:
        lower(spec.module)
    (diag,) = err.value.diagnostics
    assert diag.code == "E0501" and "no lowering rule" in diag.message and diag.span.line > 0


def test_cli_reports_every_node_and_writes_nothing(tmp_path, capsys):
    from specc.cli import main

    out = tmp_path / "out"
    code = main(["compile", str(REPO / "specs" / "seq2seq_attention.nn"), "--target", "tvm-cuda", "-o", str(out),
                 "-D", "src_vocab=50", "-D", "tgt_vocab=50", "-D", "emb=8", "-D", "hidden=8", "-D", "align=8"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("error[E0501]") == 2 and "2 errors found" in err
    assert "seq2seq_attention.nn:" in err and "^" in err
    assert not out.exists()


def test_check_and_inspect_never_import_tvm_or_torch():
    code = ("import sys; from specc.cli import main; "
            "assert main(['check', '-q', *sys.argv[1:]]) == 0; "
            "assert main(['inspect', sys.argv[1]]) == 0; "
            "bad = [m for m in ('tvm', 'torch') if m in sys.modules]; assert not bad, bad")
    paths = [str(p) for p in spec_paths()]
    res = subprocess.run([sys.executable, "-c", code, *paths], capture_output=True, text=True, cwd=REPO,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
