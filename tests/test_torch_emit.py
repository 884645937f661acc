"""The PyTorch emitter on every spec in specs/: it builds, runs, and matches what the IR predicted.

Also: byte-identical output across runs and hash seeds, `ruff check` on the emitted files, folded repeats
(a deeper model emits the same number of lines), and torch.compile(fullgraph=True) without graph breaks.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from torch_util import (
    REPO,
    SHRINK,
    dim_env,
    expected_outputs,
    load_small,
    n_params,
    random_inputs,
    ruff_check,
    spec_paths,
)

import specc

torch = pytest.importorskip("torch")

SPECS = spec_paths()


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_spec_runs_forward_with_predicted_shapes(path):
    spec = load_small(path)
    torch.manual_seed(0)
    model = spec.to_torch().eval()
    assert n_params(model) == spec.summary().params
    env = dim_env(spec)
    with torch.no_grad():
        out = model(*random_inputs(spec, env))
    outs = list(out) if isinstance(out, tuple) else [out]
    got = [(str(t.dtype).removeprefix("torch."), tuple(t.shape)) for t in outs]
    assert got == expected_outputs(spec, env)
    assert all(torch.isfinite(t).all() for t in outs if t.is_floating_point())


def test_full_size_param_counts_match_summary():
    """Without the shrinking overrides: built on the meta device, so no memory and no init cost."""
    for path in SPECS:
        spec = specc.load(path)
        with torch.device("meta"):
            model = spec.to_torch()
        assert n_params(model) == spec.summary().params, path.stem


def test_emitted_source_is_deterministic_in_process():
    for path in SPECS:
        first = specc.load(path).torch_source()
        again = specc.load(path).torch_source()
        assert first == again, path.stem
        # how the path was spelled (relative, absolute) does not leak into the file
        assert specc.load(path.resolve()).torch_source() == first, path.stem
        assert str(REPO) not in first


_EMIT_ALL = """
import json, sys
from pathlib import Path
import specc
print(json.dumps({p + str(o): specc.load(p).torch_source(opt_level=o) for p in sys.argv[1:] for o in (0, 1, 2)}))
"""


def test_emitted_source_is_deterministic_across_processes():
    """Fresh interpreters with different hash seeds (set/dict order of strings changes) emit the same bytes."""
    paths = [str(p.relative_to(REPO)) for p in SPECS]
    runs = []
    for seed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        res = subprocess.run([sys.executable, "-c", _EMIT_ALL, *paths], capture_output=True, text=True, cwd=REPO,
                             env=env, check=True, timeout=120)
        runs.append(json.loads(res.stdout))
    assert runs[0] == runs[1]
    here = {str(p.relative_to(REPO)) + str(o): specc.load(p).torch_source(opt_level=o) for p in SPECS for o in (0, 1, 2)}
    assert runs[0] == here


def test_emitted_files_pass_ruff(tmp_path):
    files = []
    for path in SPECS:
        for level in (0, 1, 2):
            f = tmp_path / f"{path.stem}_O{level}.py"
            f.write_text(load_small(path).torch_source(opt_level=level))
            files.append(f)
    res = ruff_check(files)
    if res is None:
        pytest.skip("ruff not installed")
    assert res.returncode == 0, res.stdout + res.stderr


def test_repeat_stays_folded():
    """ResNet-50 and ResNet-152 differ only in repeat counts, so do a 12- and a 96-layer GPT: the emitted files
    have the same number of lines."""
    path = REPO / "specs" / "resnet50.nn"
    r50 = specc.load(path).torch_source()
    r152 = specc.load(path, depths=[3, 8, 36, 3]).torch_source()
    assert len(r50.splitlines()) == len(r152.splitlines())
    assert "range(config.depths[2] - 1)" in r152 and "depths: tuple = (3, 8, 36, 3)" in r152  # the count: config
    gpt = REPO / "specs" / "gpt2.nn"
    if gpt.is_file():
        small, deep = specc.load(gpt).torch_source(), specc.load(gpt, layers=96).torch_source()
        assert len(small.splitlines()) == len(deep.splitlines()) and "range(config.layers)" in deep
        assert "layers: int = 96" in deep


def test_attention_uses_sdpa():
    """Wherever a spec has attention, the emitted forward calls F.scaled_dot_product_attention."""
    for path in SPECS:
        spec = specc.load(path)
        if any(n.kind == "op" and n.target == "sdpa" for _, n, _, _ in spec.module.walk()):
            assert "F.scaled_dot_product_attention(" in spec.torch_source(), path.stem


def test_forward_has_shape_comments():
    src = specc.load(REPO / "specs" / "resnet18.nn").torch_source()
    assert "# [B, 64, 56, 56]" in src
    assert "# [B, classes]" in src  # sizes a hyper-parameter gives read as its name


@pytest.mark.parametrize("opt_level", [0, 1, 2])
def test_no_graph_breaks_resnet18(opt_level):
    """Dynamo traces the whole forward as one graph, with autograd on and off, also after an eager call has run
    (-O2 caches folded batch-norm weights in eager mode; a compiled graph must not trip over that cache)."""
    model = specc.load(REPO / "specs" / "resnet18.nn", **SHRINK["resnet18"]).to_torch(opt_level=opt_level).eval()
    x = torch.randn(1, 3, 224, 224)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(x)
    assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons
    with torch.no_grad():
        want = model(x)
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        torch.testing.assert_close(compiled(x), want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_torch_compile_fullgraph_resnet18():
    """What `specc compile` writes (-O1) compiles with the default backend (inductor) as one graph:
    fullgraph=True raises on any graph break. About 35 s cold on 2 cores."""
    model = specc.load(REPO / "specs" / "resnet18.nn", **SHRINK["resnet18"]).to_torch(opt_level=1).eval()
    x = torch.randn(1, 3, 224, 224)
    torch._dynamo.reset()
    with torch.no_grad():
        want = model(x)
        compiled = torch.compile(model, fullgraph=True)
        torch.testing.assert_close(compiled(x), want, rtol=1e-4, atol=1e-5)


# ---- spec names and the input contract -------------------------------------------------------------------------

def test_emitted_code_uses_the_spec_names():
    gpt = specc.load(REPO / "specs" / "gpt2.nn").torch_source()
    assert "q, k, v = x.chunk(3, dim=-1)" in gpt  # q, k, v = x -> linear(3 * d) as c_attn -> split(3)
    assert "y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, " \
        "is_causal=True)" in gpt
    assert "self.h = nn.ModuleList(" in gpt  # repeat layers as h
    r50 = specc.load(REPO / "specs" / "resnet50.nn")
    src = r50.torch_source()
    assert "self.layer1 = nn.Sequential(" in src and "x = self.layer1(x)" in src  # for ... as layer
    keys = set(r50.to_torch().state_dict())
    assert {"layer1.0.conv1.weight", "layer1.2.bn3.running_mean", "layer4.2.conv3.weight"} <= keys
    assert not any(k.startswith(("bottleneck", "layers")) for k in keys)


def test_forward_checks_inputs_against_the_spec():
    model = specc.load(REPO / "specs" / "gpt2.nn", **SHRINK["gpt2"]).to_torch()
    ctx = SHRINK["gpt2"].get("ctx", 1024)
    with pytest.raises(ValueError, match=rf"tokens has T = {ctx + 1}, GPT2 was built for T <= {ctx} \(ctx\)"):
        model(torch.zeros(1, ctx + 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"tokens must be an integer tensor \[B, T\], got torch.float32 \(2, 3\)"):
        model(torch.zeros(2, 3))
    assert model(torch.zeros(1, ctx, dtype=torch.long)).shape[1] == ctx
    bert = specc.load(REPO / "specs" / "bert_base.nn", **SHRINK["bert_base"]).to_torch()
    ids = torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match=r"mask has T = 4, ids has T = 5"):
        bert(ids, ids, torch.ones(2, 4, dtype=torch.bool))
    lenet = specc.load(REPO / "specs" / "lenet5.nn").to_torch()
    with pytest.raises(ValueError, match=r"image has 28 at dim 2, LeNet5 was built for 32"):
        lenet(torch.zeros(1, 1, 28, 32))


def test_named_stacks_hold_every_run_and_stage():
    """`repeat n as g[i]` whose iterations fold into two runs is still one stack g.0, g.1, ...; `for ... as stage`
    makes stage1, stage2 (an nn.Sequential each when its blocks form a chain); TVM's names are the same keys."""
    from specc.api import loads
    from specc.naming import attribute_names

    src = """
    block B(x, w: int) {
      return x -> linear(w) as fc -> relu
    }
    model M(n: int = 3) {
      input x: f32[N, 8]
      for w in [8, 8] as stage {
        x = x -> B(w) -> B(w)
      }
      repeat n as g[i] {
        if i == 0 {
          x = x -> linear(16) as wide
        } else {
          x = x -> linear(16) as fc
        }
      }
      output y = x
    }"""
    spec = loads(src, name="stacks.nn")
    model = spec.to_torch()
    keys = set(model.state_dict())
    assert {"stage1.0.fc.weight", "stage2.1.fc.bias", "g.0.wide.weight", "g.1.fc.weight", "g.2.fc.weight"} <= keys
    assert model(torch.randn(2, 8)).shape == (2, 16)
    assert attribute_names(spec.module.graph)["b"] == "stage1.0"  # the first B call, as every backend names it


def test_a_bound_expression_never_escapes_its_message():
    """A bound written with a string (quotes, braces) is left out of the f-string message, never pasted into it."""
    from specc.api import loads

    src = 'model M(n: int = 4) {\n  input x: i64[B, T] where T <= len("a{b}\\"") + n\n  output y = x -> embedding(10, 4)\n}\n'
    spec = loads(src, name="m.nn")
    model = spec.to_torch()
    with pytest.raises(ValueError, match=r"x has T = 10, M was built for T <= 9$"):
        model(torch.zeros(1, 10, dtype=torch.long))
    plain = loads(src.replace('len("a{b}\\"") + n', "n + 4"), name="m.nn").to_torch()
    with pytest.raises(ValueError, match=r"x has T = 9, M was built for T <= 8 \(n \+ 4\)"):
        plain(torch.zeros(1, 9, dtype=torch.long))


def test_blocks_the_spec_does_not_name_are_named_in_snake_case_with_short_acronyms_kept_whole(tmp_path):
    """A block call without `as` is named after the block: CamelCase words split (ConvBNReLU -> conv_bn_relu), a
    short mixed-case acronym kept whole (SparseMoE -> sparse_moe, not sparse_mo_e) and digits with their word
    (GPT2Head -> gpt2_head)."""
    src = tmp_path / "names.nn"
    src.write_text('''import "std/conv.nn"
block SparseMoE(x) {
  return x -> linear(8)
}
block GPT2Head(x) {
  return x -> linear(4)
}
model M() {
  input x: f32[B, 3, 8, 8]
  y = x -> ConvBNReLU(8) -> adaptive_avgpool2d(1) -> flatten
  output z = y -> SparseMoE -> GPT2Head
}
''')
    text = specc.load(src).torch_source()
    for attr in ("conv_bn_relu", "sparse_moe", "gpt2_head"):
        assert f"self.{attr} = " in text, attr
