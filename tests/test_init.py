"""Initialisation declared in the spec (`init=` / `bias_init=` on a layer, `init { }` sections): the emitted module's
weights have the declared statistics, the rules resolve inner block first, bad declarations are located errors, and
no emitted file initialises through a private constructor argument."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

import specc
from specc.api import loads
from specc.errors import CheckError
from specc.passes.pipeline import optimize

torch = pytest.importorskip("torch")

SPECS = Path(__file__).resolve().parent.parent / "specs"


def _build(text: str, seed: int = 0, opt_level: int | None = None):
    torch.manual_seed(seed)
    return loads(text, "t.nn").to_torch(opt_level=opt_level)


def _one_layer(init: str, layer: str = "linear(256)", width: int = 512) -> str:
    return f"model M() {{\n  input x: f32[B, {width}]\n  output y = x -> {layer[:-1]}, init={init}) as fc\n}}\n"


def _close(got: float, want: float, rel: float = 0.05) -> bool:
    return abs(got - want) <= rel * want


# ---- each initialiser ----------------------------------------------------------------------------------------

# (initialiser, the std its values must have) on a linear 512 -> 256: fan_in 512, fan_out 256
STDS = [
    ("normal(0.02)", 0.02),
    ("normal(0.5, mean=1.0)", 0.5),
    ("kaiming_normal(mode=\"fan_out\", nonlinearity=\"relu\")", math.sqrt(2 / 256)),
    ("kaiming_normal()", math.sqrt(2 / 512)),  # leaky_relu with slope 0: gain sqrt(2), fan_in
    ("kaiming_uniform(nonlinearity=\"relu\")", math.sqrt(2 / 512)),
    ("xavier_normal(gain=2.0)", 2.0 * math.sqrt(2 / (512 + 256))),
    ("xavier_uniform()", math.sqrt(2 / (512 + 256))),
    ("uniform(-0.3, 0.3)", 0.6 / math.sqrt(12)),
]


@pytest.mark.parametrize("init,std", STDS, ids=[s for s, _ in STDS])
def test_declared_weights_have_the_declared_std(init, std):
    w = _build(_one_layer(init)).fc.weight.detach()
    assert w.numel() == 512 * 256
    assert _close(w.std().item(), std), (init, w.std().item(), std)


def test_mean_of_a_shifted_normal():
    w = _build(_one_layer("normal(0.5, mean=1.0)")).fc.weight.detach()
    assert abs(w.mean().item() - 1.0) < 0.01


def test_truncated_normal_stays_within_its_bounds():
    w = _build(_one_layer("trunc_normal(0.02, a=-0.03, b=0.03)")).fc.weight.detach()
    assert w.min().item() >= -0.03 and w.max().item() <= 0.03
    assert w.std().item() < 0.02  # cut tails: narrower than the untruncated normal
    w = _build(_one_layer("trunc_normal(0.02)")).fc.weight.detach()  # torch's default cut at +-2: none here
    assert _close(w.std().item(), 0.02)


@pytest.mark.parametrize("init,value", [("zeros", 0.0), ("ones", 1.0), ("constant(0.25)", 0.25), ("zeros()", 0.0)])
def test_constant_initialisers_are_exact(init, value):
    m = _build(f"model M() {{\n  input x: f32[B, 8]\n  output y = x -> linear(4, init={init}, bias_init={init})\n}}\n")
    (lin,) = [mod for mod in m.modules() if isinstance(mod, torch.nn.Linear)]
    assert torch.equal(lin.weight, torch.full_like(lin.weight, value))
    assert torch.equal(lin.bias, torch.full_like(lin.bias, value))


def test_initialisation_is_deterministic_under_manual_seed():
    text = _one_layer("normal(0.02)")
    a, b = _build(text, seed=3).state_dict(), _build(text, seed=3).state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["fc.weight"], _build(text, seed=4).state_dict()["fc.weight"])


# ---- GPT-2's scaled residual initialisation --------------------------------------------------------------------

def test_gpt2_scales_its_residual_projections():
    spec = specc.load(SPECS / "gpt2.nn", overrides={"layers": 4, "d": 64, "heads": 4, "vocab": 4096, "ctx": 64})
    torch.manual_seed(0)
    m = spec.to_torch()
    scaled = 0.02 / math.sqrt(2 * 4)
    projs = [t for k, t in m.state_dict().items() if k.endswith("c_proj.weight")]
    assert len(projs) == 8  # attention and MLP projection of 4 layers
    assert _close(torch.cat([p.flatten() for p in projs]).std().item(), scaled)
    fcs = torch.cat([t.flatten() for k, t in m.state_dict().items() if k.endswith(("c_fc.weight", "c_attn.weight"))])
    assert _close(fcs.std().item(), 0.02)
    assert all(not t.any() for k, t in m.state_dict().items() if k.endswith("c_proj.bias") or k.endswith("c_fc.bias"))
    assert _close(m.wte.weight.std().item(), 0.02)
    assert m.lm_head.weight is m.wte.weight  # tied: the embedding's initialisation
    # LayerNorm keeps PyTorch's default (GPT-2 declares nothing for it)
    assert torch.equal(m.ln_f.weight, torch.ones_like(m.ln_f.weight))


def test_declaring_initialisation_keeps_the_state_dict():
    """The same names, in the same order, with and without the init section (weights maps and checkpoints rely
    on it)."""
    text = (SPECS / "gpt2.nn").read_text()
    start = text.index("  init {")
    bare = text[:start] + text[text.index("  }\n", start) + 4:]
    assert "init {" not in bare
    small = {"layers": 2, "d": 32, "heads": 2, "vocab": 64, "ctx": 16}
    with torch.device("meta"):
        declared = specc.load(SPECS / "gpt2.nn", overrides=small).to_torch().state_dict()
        plain = loads(bare, "gpt2.nn", **small).to_torch().state_dict()
    assert [(k, v.shape) for k, v in declared.items()] == [(k, v.shape) for k, v in plain.items()]


def test_resnet_follows_torchvision():
    spec = specc.load(SPECS / "resnet18.nn", overrides={"classes": 10})
    torch.manual_seed(0)
    m = spec.to_torch()
    conv = m.layer4[0].conv2.weight  # 512 x 512 x 3 x 3: fan_out = 512 * 9
    assert _close(conv.std().item(), math.sqrt(2 / (512 * 9)))
    bns = [mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    assert bns and all(torch.equal(b.weight, torch.ones_like(b.weight)) and not b.bias.any() for b in bns)


def test_vit_head_starts_at_zero():
    spec = specc.load(SPECS / "vit_b16.nn", overrides={"layers": 1, "d": 64, "heads": 4, "d_ff": 128,
                                                       "image_size": 32, "patch": 16, "classes": 10})
    torch.manual_seed(0)
    m = spec.to_torch()
    assert not m.head.weight.any() and not m.head.bias.any()
    assert m.pos_embedding.weight.abs().max().item() <= 2.0  # truncated at +-2 (timm's trunc_normal_)


def test_fusion_keeps_the_declared_initialisation():
    """-O2 fuses conv + batchnorm (+ relu); the fused layers start as the spec declares."""
    spec = specc.load(SPECS / "resnet18.nn", overrides={"classes": 10})
    fused = optimize(spec.module, level=2)
    fused = getattr(fused, "module", fused)
    assert "fused" in {n.target for _, n, _, _ in fused.walk()}
    src = spec.torch_source(opt_level=2)
    assert "nn.init.kaiming_normal_(self.down_conv.weight, mode='fan_out', nonlinearity='relu')" in src
    torch.manual_seed(0)
    m = spec.to_torch(opt_level=2)
    assert _close(m.layer4[0].conv2.weight.std().item(), math.sqrt(2 / (512 * 9)))
    assert torch.equal(m.layer4[0].bn2.weight, torch.ones(512)) and not m.layer4[0].bn2.bias.any()


# ---- which declaration wins -------------------------------------------------------------------------------------

SCOPES = """
block Inner(x) {
  init { linear: constant(3.0) }
  return x -> linear(8) as a -> linear(8) as b
}
block Outer(x) {
  return x -> linear(8) as a -> Inner -> linear(8, init=constant(7.0)) as c
}
model M() {
  init {
    linear: constant(1.0)
    a: constant(2.0)
    linear.bias: zeros
  }
  input x: f32[B, 8]
  y = x -> linear(8) as top -> Outer
  output y = y -> linear(8, bias=false) as last
}
"""


def test_inner_sections_and_own_arguments_win():
    m = _build(SCOPES)
    first = {name: mod.weight.flatten()[0].item() for name, mod in m.named_modules() if isinstance(mod, torch.nn.Linear)}
    assert first == {
        "top": 1.0,  # the model's kind rule
        "outer.a": 2.0,  # a name rule beats a kind rule of the same section
        "outer.inner.a": 3.0,  # the inner block's section beats the model's, even its name rule
        "outer.inner.b": 3.0,
        "outer.c": 7.0,  # the layer's own init=
        "last": 1.0,
    }
    assert all(not mod.bias.any() for mod in m.modules() if isinstance(mod, torch.nn.Linear) and mod.bias is not None)


def test_same_block_under_other_rules_is_its_own_class():
    text = """
block F(x) { return x -> linear(8) as fc }
block G(x) {
  init { fc: constant(2.0) }
  return x -> F
}
model M() {
  input x: f32[B, 8]
  output y = x -> F -> G
}
"""
    m = _build(text)
    assert m.f.fc.weight[0, 0].item() != 2.0  # PyTorch's default
    assert torch.equal(m.g.f.fc.weight, torch.full((8, 8), 2.0))


def test_specs_without_init_keep_pytorch_defaults():
    m = _build("model M() {\n  input x: f32[B, 512]\n  output y = x -> linear(256) as fc\n}\n")
    bound = 1 / math.sqrt(512)  # nn.Linear's kaiming_uniform(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert m.fc.weight.abs().max().item() <= bound and _close(m.fc.weight.std().item(), bound / math.sqrt(3))
    assert "_init_weights" not in loads("model M() {\n  input x: f32[B, 4]\n  output y = x -> linear(2)\n}\n",
                                        "t.nn").torch_source()


# ---- emitted code ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted(SPECS.glob("*.nn")), ids=lambda p: p.stem)
def test_no_private_constructor_arguments(path):
    src = specc.load(path).torch_source()
    assert "_weight=" not in src
    if "\n  init {" in path.read_text():
        assert "self._init_weights()" in src


def test_emitted_initialisation_reads_like_the_spec():
    src = specc.load(SPECS / "gpt2.nn").torch_source()
    assert "nn.init.normal_(self.c_fc.weight, std=0.02)" in src
    assert "nn.init.zeros_(self.c_fc.bias)" in src
    assert "  # normal(0.02 / sqrt(2 * layers))" in src
    assert "self.lm_head.weight, " not in src  # a tied weight is its owner's


# ---- errors ------------------------------------------------------------------------------------------------------

def _error(text: str) -> str:
    with pytest.raises(CheckError) as err:
        loads(text, "t.nn")
    return err.value.render()


ERRORS = [
    # (model body, code, what the message says, the line:col it points at)
    ("  init { c_prj: normal(0.02) }\n  input x: f32[B, 8]\n  output y = x -> linear(8) as c_proj\n",
     "E0103", "initialises nothing: no layer named 'c_prj'", "t.nn:3:10"),
    ("  input x: f32[B, 8]\n  output y = x -> linear(8, init=0.02)\n", "E0108", "init= takes an initialiser",
     "t.nn:4:29"),
    ("  input x: f32[B, 8]\n  output y = x -> linear(8, bias_init=xavier_uniform())\n", "E0305",
     "xavier_uniform needs a parameter of rank >= 2", "t.nn:4:29"),
    ("  input x: f32[B, 8]\n  output y = x -> linear(8, init=normal(-1.0))\n", "E0107", "std must be > 0",
     "t.nn:4:34"),
    ("  input x: f32[B, 8]\n  output y = x -> linear(8, init=kaiming_normal(mode=\"fan\"))\n", "E0107",
     "mode must be one of", "t.nn:4:34"),
    ("  input x: f32[B, 8]\n  output y = x -> linear(8, bias=false, bias_init=zeros)\n", "E0103",
     "bias_init= names no parameter", "t.nn:4:41"),
    ("  input x: f32[B, 8]\n  repeat 2 {\n    init { linear: zeros }\n    x = x -> linear(8)\n  }\n  output y = x\n",
     "E0404", "belongs at the top level", "t.nn:5:5"),
    ("  init { relu: zeros }\n  input x: f32[B, 8]\n  output y = x -> relu\n", "E0103",
     "op relu has no parameters", "t.nn:3:10"),
    ("  init { fc.gamma: zeros }\n  input x: f32[B, 8]\n  output y = x -> linear(8) as fc\n", "E0103",
     "has no parameter 'gamma'", "t.nn:3:10"),
    ("  init { linear: trunc_normal(0.02, a=1.0, b=-1.0) }\n  input x: f32[B, 8]\n  output y = x -> linear(8)\n",
     "E0107", "needs a < b", "t.nn:3:18"),
    ("  init { linear: normal(0.02, spread=2) }\n  input x: f32[B, 8]\n  output y = x -> linear(8)\n",
     "E0103", "normal() has no argument 'spread'", "t.nn:3:31"),
]


@pytest.mark.parametrize("body,code,message,where", ERRORS, ids=[e[1] + "-" + e[2][:24] for e in ERRORS])
def test_bad_declarations_are_located_errors(body, code, message, where):
    text = _error("\nmodel M() {\n" + body + "}\n")
    assert f"error[{code}]" in text and message in text, text
    assert where in text and "^" in text, text
