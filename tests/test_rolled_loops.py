"""Issue 12: a model's `for v in range(n) as name` loops are loops in the emitted module (backends/torch/rolled.py):
one nn.ModuleList per named loop, filled by the constructor's own loop, so the module compiled with the defaults
builds any loop count its config gives, exactly as the -D compile does (DDPM's are in test_config_driven.py)."""
from __future__ import annotations

import pytest
from torch_util import module_from_source

from specc.api import loads
from specc.cli import main

torch = pytest.importorskip("torch")

NET = """
block Res(x, out: int) {
  h = x -> conv2d(out, 3, padding=1) as conv -> relu
  if channels(x) != out {
    x = x -> conv2d(out, 1) as skip
  }
  return x + h
}

model Net(widths: list = [8, 16], depth: int = 2, pool_from: int = 1) {
  input image: f32[B, 3, 16, 16]
  x = image -> conv2d(widths[0], 3, padding=1) as stem
  feats = []
  for s in range(len(widths)) as stages {
    for j in range(depth) {
      x = x -> Res(widths[s]) as blocks
    }
    if s >= pool_from {
      x = x -> maxpool2d(2)
    }
    feats = feats + [x]
  }
  y = concat(feats[0] -> global_avgpool, x -> global_avgpool, dim=1)    # the first stage's and the last one's
  output logits = y -> flatten -> linear(10) as head
}
"""


def _module(source: str, name: str, tmp_path):
    return module_from_source(source, name, tmp_path)


@pytest.mark.parametrize("cfg", [{}, {"widths": [8, 16, 32], "depth": 1}, {"depth": 3, "pool_from": 0},
                                 {"widths": [4], "pool_from": 5}], ids=str)
def test_a_named_range_loop_builds_any_count_as_its_d_compile(cfg, tmp_path):
    mod = _module(loads(NET, "net.nn").torch_source(), "rolled_net", tmp_path)
    torch.manual_seed(0)
    built = mod.Net(mod.NetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})).eval()
    other = loads(NET, "net.nn", **cfg)
    reference = _module(other.torch_source(), "rolled_net_d", tmp_path).Net().eval()
    assert {k: v.shape for k, v in built.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    assert sum(p.numel() for p in built.parameters()) == other.params
    reference.load_state_dict(built.state_dict())
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(built(x), reference(x))


def test_a_named_range_loop_is_a_module_list_of_its_iterations(tmp_path):
    """`stages.1.blocks.0.conv`: the named loop's iterations, the inner loop's layers a list in each (diffusers'
    `down_blocks.1.resnets.0`); the forward is the spec's loops, reading the list `feats` as the spec does."""
    src = loads(NET, "net.nn").torch_source()
    assert "for s in range(len(self.config.widths)):" in src and "for j in range(self.config.depth):" in src
    assert "x = self.stages[s].blocks[j](x)" in src and "feats = feats + [x]" in src
    assert "feats = []" in src and "feats_channels = []" in src and "if s >= config.pool_from" not in src
    assert "feats[0]" in src and "self.head = nn.Linear(feats_channels[0] + x_channels, 10)" in src
    keys = _module(src, "rolled_keys", tmp_path).Net().state_dict()
    assert "stages.1.blocks.0.skip.weight" in keys and "stages.0.blocks.1.conv.bias" in keys


BAD = """
model Bad(n: int = 2) {
  input image: f32[B, 3, 8, 8]
  x = image
  for i in range(n) as blocks {
    x = x -> conv2d([4, 8][i], 3, padding=1) as conv
  }
  output y = x
}
"""


def test_iterations_that_write_different_code_are_an_error_at_the_statement(tmp_path, capsys):
    """`[4, 8][i]` is 4, then 8: no one line writes both. The error names the statement, and its help the way out."""
    path = tmp_path / "bad.nn"
    path.write_text(BAD)
    assert main(["compile", str(path), "-o", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err
    assert "error[E0501]" in err and "bad.nn:6:" in err and "drop `as`" in err and "Traceback" not in err
    assert "6 |     x = x -> conv2d([4, 8][i], 3, padding=1) as conv" in err and "^^^" in err  # the line, a caret
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # nothing half-written
    assert main(["check", str(path)]) == 1  # `specc check` says so too: what it accepts compiles
    assert "error[E0501]" in capsys.readouterr().err


def test_without_as_a_range_loop_is_unrolled_and_pinned():
    """A `range` loop without `as` stays as before: unrolled into the model, its length checked by the constructor."""
    src = loads(BAD.replace(" as blocks", "").replace("[4, 8][i]", "8"), "plain.nn").torch_source()
    assert "for i in range" not in src and "`range(n)` has 2 iterations" in src


def test_a_range_loop_with_as_in_a_block_names_numbered_stacks():
    """In a block, `as` on a loop keeps its torchvision meaning (blocks of item k in `stage{k+1}`)."""
    spec = loads("""
block Stem(x, n: int) {
  for i in range(n) as stage {
    x = x -> conv2d(4, 3, padding=1) -> relu
  }
  return x
}
model M() {
  input image: f32[B, 3, 8, 8]
  output y = image -> Stem(2)
}
""", "stem.nn")
    model = spec.to_torch().eval()
    assert model(torch.randn(1, 3, 8, 8)).shape == (1, 4, 8, 8)


INPUT_LIST = """
model H(n: int = 3) {
  input x: f32[B, 8]
  skips = [x]
  for i in range(n) as blocks {
    x = x -> linear(8) as fc
    skips = skips + [x]
  }
  output y = concat(skips[0], skips[-1], dim=1)
}
"""


def test_a_list_that_starts_with_an_input_and_grows_for_every_iteration(tmp_path):
    """`skips = [x]` with x the model's input: its sizes are the input's as declared. Entries are read as the spec
    reads them (`skips[0]` after the loop is the input whatever the loop's length, not `skips[-37]`), and the trace
    keeps only a list's last entries (ir.ListValue), so a list appended to in every iteration costs linear memory."""
    from specc.ir import LIST_TAIL

    text = INPUT_LIST.replace("n: int = 3", f"n: int = {LIST_TAIL + 4}")
    src = loads(text, "h.nn").torch_source()
    assert "torch.cat([skips[0], skips[-1]], dim=1)" in src
    mod = _module(src, "rolled_input_list", tmp_path)
    for n in (2, 5):
        built = mod.H(mod.HConfig(n=n)).eval()
        other = loads(text, "h.nn", n=n)
        assert sum(p.numel() for p in built.parameters()) == other.params
        reference = _module(other.torch_source(), f"rolled_input_list_{n}", tmp_path).H().eval()
        reference.load_state_dict(built.state_dict())
        x = torch.randn(2, 8)
        with torch.no_grad():
            assert torch.equal(built(x), reference(x))


def test_inspect_names_a_loops_layers_by_their_state_dict_keys():
    """`specc inspect` lists a `for ... as` loop's layers under the keys the module's state_dict has."""
    rows = [r.name for r in loads(NET, "net.nn").summary().rows]
    assert "stages.1.blocks.0" in rows and "stages.0.blocks.1.conv" in rows and "blocks" not in rows


TIED = """
model T(n: int = 2, d: int = 8) {
  input tokens: i64[B, S]
  layer emb = embedding(50, d)
  x = tokens -> emb
  for i in range(n) as blocks {
    x = x -> linear(d) as fc -> relu
  }
  output logits = x -> linear(50, bias=false, tie=emb) as head
}
"""


def test_a_shared_layer_and_its_tied_weight_beside_a_loop(tmp_path):
    """A `layer` declared in the model is built where it is first used, and a weight tied to it stays tied, in a
    model whose `for ... as` loop is written as a loop (the tie was dropped, and the message blamed an init)."""
    mod = _module(loads(TIED, "t.nn").torch_source(), "rolled_tied", tmp_path)
    built = mod.T(mod.TConfig(n=3)).eval()
    assert built.head.weight is built.emb.weight
    other = loads(TIED, "t.nn", n=3)
    assert sum(p.numel() for p in built.parameters()) == other.params
    reference = _module(other.torch_source(), "rolled_tied_d", tmp_path).T().eval()
    reference.load_state_dict(built.state_dict())
    tokens = torch.randint(0, 50, (2, 5))
    with torch.no_grad():
        assert torch.equal(built(tokens), reference(tokens))
