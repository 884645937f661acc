"""Issue 12, item 2: the emitted module's sizes come from its config. For every zoo spec, the module emitted with
the default hyper-parameters and built from another valid config has exactly the parameters (names, shapes, count)
of the module compiled for that config with -D, and the count `specc inspect -D ...` prints; a config the code was
not written for (another branch of an `if`, a failed `assert`) is refused with the spec's words."""
from __future__ import annotations

from pathlib import Path

import pytest
from torch_util import SHRINK, dim_env, module_from_source, random_inputs

import specc
from specc.api import loads
from specc.errors import CheckError

ROOT = Path(__file__).resolve().parent.parent

torch = pytest.importorskip("torch")
F = torch.nn.functional

CONFIGS = {
    "alexnet": {"classes": 10, "dropout": 0.25},
    "bert_base": {"vocab": 1000, "max_pos": 64, "layers": 2, "heads": 4, "d": 128, "d_ff": 256},
    "bert_classifier": {"classes": 3, "vocab": 1000, "max_pos": 64, "layers": 2, "heads": 4, "d": 128, "d_ff": 256},
    "cifar_cnn": {"classes": 5, "hidden": 64},
    "clip_vit_b32": {"embed": 64, "vocab": 1000, "ctx": 16, "vision_layers": 1, "text_layers": 2, "vision_d": 128,
                     "text_d": 64},
    "dcgan": {"nz": 16, "ngf": 8, "channels": 1},
    # a first multiplier other than 1: ResnetBlock's result is `out` channels, not its input's `ch` (it was)
    "ddpm_cifar10": {"ch": 64, "mult": [2, 1, 2, 2], "dropout": 0.0},
    "gpt2": {"vocab": 1000, "ctx": 64, "layers": 2, "heads": 4, "d": 128},
    "gru_lm": {"vocab": 500, "d": 64, "layers": 3},
    "lenet5": {"classes": 7},
    "lstm_lm": {"vocab": 500, "d": 64, "layers": 1},
    "resnet18": {"classes": 10},
    "resnet50": {"classes": 10, "depths": [1, 2, 1, 1]},
    "seq2seq_attention": {"src_vocab": 300, "tgt_vocab": 200, "emb": 32, "hidden": 48, "align": 40},
    "transformer_base": {"vocab": 1000, "d": 128, "heads": 4, "layers": 2, "d_ff": 256, "max_len": 100},
    "vgg16": {"classes": 10},
    "vit_b16": {"image_size": 64, "patch": 16, "classes": 10, "layers": 2, "heads": 4, "d": 128, "d_ff": 256},
    "whisper_tiny": {"vocab": 1000, "n_mels": 16, "frames": 200, "max_target": 32, "d": 64, "heads": 2, "layers": 2,
                     "d_ff": 128},
    "word2vec_sgns": {"vocab": 1000, "d": 32},
    "llama2_7b": {"vocab": 1000, "ctx": 128, "layers": 2, "d": 256, "heads": 4, "kv_heads": 2, "hidden": 512},
    "mixtral_8x7b": {"vocab": 1000, "ctx": 128, "layers": 2, "d": 256, "heads": 4, "kv_heads": 2, "hidden": 512,
                     "experts": 4, "top_k": 2},
    # its `repeat layers` folds into a dense run and an MoE run (`if i < dense_layers`): one list chosen per index
    "deepseek_moe_16b": {"vocab": 1000, "ctx": 128, "layers": 3, "dense_layers": 2, "d": 256, "heads": 4,
                         "dense_hidden": 512, "hidden": 128, "experts": 8, "top_k": 2, "shared": 1},
    "switch_base_8": {"vocab": 1000, "d": 128, "heads": 4, "layers": 4, "d_ff": 256, "experts": 4},
}
def _module(source: str, name: str):
    return module_from_source(source, name, _tmp)


_tmp = ""


@pytest.fixture(autouse=True)
def _tmpdir(tmp_path):
    global _tmp
    _tmp = str(tmp_path)


def _same_outputs(built, reference, spec) -> None:
    """`reference` given `built`'s weights computes exactly what `built` computes on random inputs (eval mode)."""
    built.eval()
    reference.eval().load_state_dict(built.state_dict())
    inputs = random_inputs(spec, dim_env(spec))
    with torch.no_grad():
        got, want = built(*inputs), reference(*inputs)
    for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        assert torch.equal(g, w), spec.module.name


def _shapes(model) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_default_module_builds_any_config(name):
    cfg = CONFIGS[name]
    default = specc.load(f"specs/{name}.nn")
    cls = default.module.name.replace("_", "")  # class_name
    generic = _module(default.torch_source(), f"generic_{name}")
    model_cls = next(v for k, v in vars(generic).items() if k.lower() == default.module.name.lower().replace("_", ""))
    config_cls = getattr(generic, model_cls.__name__ + "Config")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}
    torch.manual_seed(0)
    built = model_cls(config_cls(**values)).eval()
    other = specc.load(f"specs/{name}.nn", **cfg)
    fixed = _module(other.torch_source(), f"fixed_{name}")
    with torch.device("meta"):
        reference = getattr(fixed, model_cls.__name__)()
    assert _shapes(built) == _shapes(reference), cls
    assert sum(p.numel() for p in built.parameters()) == other.params
    # and it computes what the -D compile computes (Transformer's `x * d ** 0.5` was this compile's 22.63)
    _same_outputs(built, getattr(fixed, model_cls.__name__)(), other)


def test_gpt2_from_a_small_config_computes_what_the_d_compile_computes():
    """Not only the shapes: with the same weights, the default module built for a small config and the module
    compiled for it give the same logits, and the config drives the sizes the forward reads (heads, ctx)."""
    cfg = CONFIGS["gpt2"]
    generic = _module(specc.load("specs/gpt2.nn").torch_source(), "gpt2_generic_fw")
    fixed = _module(specc.load("specs/gpt2.nn", **cfg).torch_source(), "gpt2_fixed_fw")
    torch.manual_seed(0)
    a = generic.GPT2(generic.GPT2Config(**cfg)).eval()
    b = fixed.GPT2().eval()
    b.load_state_dict(a.state_dict())
    tokens = torch.randint(0, cfg["vocab"], (2, 16))
    torch.testing.assert_close(a(tokens), b(tokens), rtol=0, atol=0)
    with pytest.raises(ValueError, match="64"):
        a(torch.randint(0, cfg["vocab"], (1, 65)))


def test_an_invalid_config_raises_the_specs_own_assert_message():
    generic = _module(specc.load("specs/gpt2.nn").torch_source(), "gpt2_assert")
    with pytest.raises(ValueError, match="heads must divide the width"):
        generic.GPT2(generic.GPT2Config(d=100, heads=3))


def test_a_block_down_both_branches_of_an_if_is_one_class_with_that_if():
    """ResNet-50's Bottleneck has a projection shortcut where its input width or stride differs from its output
    (the spec's `if stride != 1 or channels(x) != out`): one class builds either, as the arguments decide."""
    src = specc.load("specs/resnet50.nn").torch_source()
    assert src.count("class Bottleneck") == 1
    mod = _module(src, "r50_branch")
    projected, plain = mod.Bottleneck(64, 64, 1, 4), mod.Bottleneck(64, 64, 1, 1)
    assert projected.has_down_conv and projected.down_conv.in_channels == 64
    assert not plain.has_down_conv and not hasattr(plain, "down_conv")
    x = torch.randn(1, 64, 8, 8)
    assert projected(x).shape == (1, 256, 8, 8) and plain(x).shape == (1, 64, 8, 8)


def test_a_repeat_folded_by_an_if_on_its_index_is_one_loop_chosen_per_index():
    """DeepSeek's `repeat layers as layers[i]` is dense layers while `i < dense_layers`, MoE layers after: the module
    builds one list choosing each layer's feed-forward by that same test, for any split, and one loop runs it."""
    src = specc.load("specs/deepseek_moe_16b.nn").torch_source()
    assert "if i < config.dense_layers else" in src and "for i in range(config.layers)" in src
    assert "for layer in self.layers:" in src and "recompile with -D" not in src.split("class DeepSeekMoE16B(")[1]
    mod = _module(src, "deepseek_split")
    small = dict(vocab=100, ctx=16, d=32, heads=4, dense_hidden=64, hidden=16, experts=4, top_k=2, shared=1)
    for layers, dense in ((4, 2), (3, 0), (2, 2)):
        model = mod.DeepSeekMoE16B(mod.DeepSeekMoE16BConfig(layers=layers, dense_layers=dense, **small))
        kinds = [type(layer.mlp).__name__ for layer in model.layers]
        assert kinds == ["SwiGLU"] * min(dense, layers) + ["SparseMoE"] * (layers - min(dense, layers))
    # the same split compiled with -D: the same parameters, and the same logits from the same weights
    torch.manual_seed(0)
    model = mod.DeepSeekMoE16B(mod.DeepSeekMoE16BConfig(layers=3, dense_layers=2, **small)).eval()
    overrides = {"layers": 3, "dense_layers": 2, **small}
    fixed = _module(specc.load("specs/deepseek_moe_16b.nn", overrides=overrides).torch_source(), "deepseek_fixed")
    ref = fixed.DeepSeekMoE16B().eval()
    assert _shapes(ref) == _shapes(model)
    ref.load_state_dict(model.state_dict())
    tokens = torch.randint(0, 100, (2, 8))
    torch.testing.assert_close(model(tokens), ref(tokens), rtol=0, atol=0)


def test_shared_experts_are_a_count_any_config_may_change():
    """std/moe.nn's SparseMoE is one `moe` for any number of shared experts, none included: the DeepSeek module
    compiled with its two builds a config with none or three, exactly the -D compile's (it refused `shared = 0`
    with "recompile with -D", and Mixtral's class refused any shared expert)."""
    base = {**SHRINK["deepseek_moe_16b"], "layers": 3, "dense_layers": 1}
    spec = specc.load("specs/deepseek_moe_16b.nn", overrides=base)
    mod = _module(spec.torch_source(), "deepseek_shared")
    for shared in (0, 3):
        other = specc.load("specs/deepseek_moe_16b.nn", overrides={**base, "shared": shared})
        torch.manual_seed(0)
        built = mod.DeepSeekMoE16B(mod.DeepSeekMoE16BConfig(**{**base, "shared": shared}))
        assert [len(layer.mlp.moe.shared) for layer in built.layers[1:]] == [shared, shared]
        assert sum(p.numel() for p in built.parameters()) == other.params
        fixed = _module(other.torch_source(), f"deepseek_shared_{shared}")
        _same_outputs(built, fixed.DeepSeekMoE16B(), other)


def test_routed_and_shared_experts_of_equal_width_keep_their_own_sizes(tmp_path):
    """SwiGLU(hidden) and SwiGLU(shared_hidden) are one graph when the two widths are equal, but each use is built
    from its own hyper-parameter: the class compiled with equal widths builds shared experts of another width (both
    were built from `hidden`), and shared_hidden = 0 means `hidden`."""
    src = tmp_path / "m.nn"
    src.write_text('''import "std/moe.nn"
model M(d: int = 16, hidden: int = 24, shared: int = 1, shared_hidden: int = 24) {
  input x: f32[B, T, d]
  output y = x -> SparseMoE(hidden, 4, 2, shared, shared_hidden)
}
''')
    mod = _module(specc.load(src).torch_source(), "moe_widths")
    for shared_hidden, width in ((40, 40), (0, 24)):
        cfg = {"shared": 2, "shared_hidden": shared_hidden}
        built = mod.M(mod.MConfig(**cfg))
        moe = next(m for m in built.modules() if type(m).__name__ == "MixtureOfExperts")
        assert [e.w1.out_features for e in moe.shared] == [width, width]
        assert all(e.w1.out_features == 24 for e in moe.experts)
        assert sum(p.numel() for p in built.parameters()) == specc.load(src, overrides=cfg).params


def test_a_body_reading_its_index_elsewhere_keeps_its_runs_pinned(tmp_path):
    """When the index also sets a size (`linear(d + i)`), no one class per branch can be written for any split:
    the runs stay as compiled and another split is refused with the spec's words."""
    spec = tmp_path / "stack.nn"
    body = ("model Stack(layers: int = 3, first: int = 1, d: int = 8) {\n  input x: f32[B, d]\n"
            "  repeat layers as h[i] {\n    if i < first {\n      x = x -> linear(d{extra}) as fc\n    } else {\n"
            "      x = x -> linear(d) as fc -> relu\n    }\n  }\n  output y = x\n}\n")
    spec.write_text(body.replace("{extra}", ""))
    mod = _module(specc.load(str(spec)).torch_source(), "stack_free")
    model = mod.Stack(mod.StackConfig(layers=5, first=2))
    assert len(model.h) == 5 and model(torch.randn(2, 8)).shape == (2, 8)
    spec.write_text(body.replace("{extra}", " + i + 1"))
    src = specc.load(str(spec)).torch_source()
    mod = _module(src, "stack_pinned")
    with pytest.raises(ValueError, match="`repeat layers` runs 3 times in the spec this class was compiled from"):
        mod.Stack(mod.StackConfig(layers=5))
    with pytest.raises(ValueError, match="`i < first` is false"):
        mod.Stack(mod.StackConfig(first=2))
    assert mod.Stack().h[0].fc.out_features == 9 and mod.Stack()(torch.randn(2, 8)).shape == (2, 8)


def test_a_stage_whose_first_layer_changes_the_width_is_one_class_for_any_depth():
    """VGG's `repeat convs as layers` widens on its first conv only: one VGGStage class builds the first layer from
    its input width and the rest from `width`, for any number of convs (no class per depth, no pinned count)."""
    src = specc.load("specs/vgg16.nn").torch_source()
    assert src.count("class VGGStage(") == 1 and "recompile with -D" not in src
    mod = _module(src, "vgg_stage")
    for convs in (1, 2, 4):
        stage = mod.VGGStage(3, 16, convs)
        assert [c.conv.in_channels for c in stage.layers] == [3] + [16] * (convs - 1)
        assert stage(torch.randn(1, 3, 8, 8)).shape == (1, 16, 4, 4)


def test_sizes_equal_only_by_value_are_not_folded_into_one_run(tmp_path):
    """A repeat whose input width equals `width` only at the default config (both 8) must not reuse the first
    iteration's layer for the rest: another config, where they differ, builds and runs."""
    spec = tmp_path / "fold.nn"
    spec.write_text("model Fold(n: int = 3, inp: int = 8, width: int = 8) {\n  input x: f32[B, inp]\n"
                    "  repeat n as layers {\n    x = x -> linear(width) as fc\n  }\n  output y = x\n}\n")
    mod = _module(specc.load(str(spec)).torch_source(), "fold")
    model = mod.Fold(mod.FoldConfig(inp=5, width=12, n=4))
    assert [layer.fc.in_features for layer in model.layers] == [5, 12, 12, 12]
    assert model(torch.randn(2, 5)).shape == (2, 12)


_PROJ = """
block Proj(x, out: int) {
  if channels(x) != out {
    x = x -> conv2d(out, 1) as proj
  }
  return x
}
block Res(x, out: int) {
  h = x -> conv2d(out, 3, padding=1) as conv
  if channels(x) != out {
    x = x -> conv2d(out, 1) as shortcut
  }
  return x + h
}
model M(a: int = 8, b: int = 8, c: int = 16) {
  input x: f32[B, 8, 4, 4]
  output y = x -> conv2d(a, 1) as c1 -> Proj(b) -> Proj(16) -> Res(c) -> Res(12) -> conv2d(3, 1) as head
}
"""


@pytest.mark.parametrize("cfg", [{"b": 16}, {"c": 4}, {"a": 5, "b": 6, "c": 7}])
def test_a_block_whose_if_skips_a_resize_returns_the_size_it_would_resize_to(tmp_path, cfg):
    """`Proj(b)` and `Res(c)` skip their `if` at the default config (their input already has that width), so what
    they return has their input's width there; the caller must size what follows by `out` (`b`, `c`), which both
    branches return, not by the input's width (`a`, 16): DDPM's ResnetBlock with mult[0] != 1 was built wrong this
    way. (`Proj(16)` and `Res(12)` take the `if`, so each class has both branches.)"""
    spec = tmp_path / "proj.nn"
    spec.write_text(_PROJ)
    mod = _module(specc.load(str(spec)).torch_source(), "proj")
    other = specc.load(str(spec), **cfg)
    torch.manual_seed(0)
    built = mod.M(mod.MConfig(**cfg))
    assert sum(p.numel() for p in built.parameters()) == other.params
    _same_outputs(built, _module(other.torch_source(), "proj_d").M(), other)


def test_a_block_taking_a_list_builds_from_the_config_list(tmp_path):
    """`block Stack(x, widths: list)` looping over its list: its class takes the list (`Stack(in_features, widths)`,
    `nn.Linear(widths[0], widths[1])`), the model passes `config.a`, and what follows reads `config.a[-1]`'s item;
    a list of another length is refused with the spec's reason. (It was one class per list value, and the model
    refused every config: "the layers below are specialised to these values".)"""
    spec = tmp_path / "stack.nn"
    spec.write_text("block Stack(x, widths: list) {\n  for w in widths {\n    x = x -> linear(w) -> relu\n  }\n"
                    "  return x\n}\nmodel M(a: list = [16, 32], b: list = [8, 8, 4]) {\n  input x: f32[B, 4]\n"
                    "  output y = x -> Stack(a) -> Stack(b)\n}\n")
    src = specc.load(str(spec)).torch_source()
    assert "Stack(4, config.a)" in src and "(config.a[1], config.b)" in src and "len(widths) != 2" in src
    mod = _module(src, "stack")
    cfg = {"a": [12, 20], "b": [6, 7, 3]}
    other = specc.load(str(spec), **cfg)
    torch.manual_seed(0)
    built = mod.M(mod.MConfig(a=(12, 20), b=(6, 7, 3)))
    assert sum(p.numel() for p in built.parameters()) == other.params
    _same_outputs(built, _module(other.torch_source(), "stack_d").M(), other)
    with pytest.raises(ValueError, match="`widths` has 2 items.*recompile with -D"):
        mod.M(mod.MConfig(a=(12, 20, 30)))


def test_self_attention_is_cross_attention_with_kv_defaulting_to_x():
    """The spec's `if kv == none { kv = x }`: the self-attention and cross-attention of a Transformer decoder are one
    MultiHeadAttention class whose forward takes kv as optional; a repeat body's first-iteration layer and the rest
    are one class too (VGG). Self-attention through it equals passing kv=x."""
    for spec, cls in (("transformer_base", "MultiHeadAttention"), ("whisper_tiny", "WhisperAttention"),
                      ("vgg16", "VGGStageLayer")):
        src = specc.load(f"specs/{spec}.nn").torch_source()
        assert src.count(f"class {cls}") == 1, spec
    mod = _module(specc.load("specs/transformer_base.nn").torch_source(), "tb_attn")
    attn = mod.MultiHeadAttention(32, 32, 4, 0, True, 0.0).eval()
    x, memory = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    torch.testing.assert_close(attn(x), attn(x, x), rtol=0, atol=0)
    cross = mod.MultiHeadAttention(32, 32, 4, 0, False, 0.0).eval()
    assert cross(x, memory).shape == (2, 5, 32)
    model = mod.TransformerBase(mod.TransformerBaseConfig(vocab=50, d=32, heads=4, layers=1, d_ff=64, max_len=16))
    layer = model.decoder_layers[0]
    assert type(layer.self_attn) is type(layer.cross_attn) is mod.MultiHeadAttention
    assert layer.self_attn.causal and not layer.cross_attn.causal


_TWO_OPTIONAL = """
block Attn(x, kv: tensor = none, bias: tensor = none, heads: int = 2) {
  d = features(x)
  if kv == none {
    kv = x
  }
  q = x -> linear(d, bias=false) as q -> reshape(dim(x, 0), dim(x, 1), heads, d // heads) -> transpose(1, 2)
  k = kv -> linear(d, bias=false) as k -> reshape(dim(kv, 0), dim(kv, 1), heads, d // heads) -> transpose(1, 2)
  v = kv -> linear(d, bias=false) as v -> reshape(dim(kv, 0), dim(kv, 1), heads, d // heads) -> transpose(1, 2)
  if bias == none {
    y = sdpa(q, k, v){extra}
  } else {
    y = sdpa(q, k, v, bias)
  }
  return y -> transpose(1, 2) -> reshape(dim(x, 0), dim(x, 1), d)
}

model Two(d: int = 8) {
  input x: f32[B, T, d]
  input memory: f32[B, S, 4]
  input bias: f32[1, 2, T, T]
  y = x -> Attn(bias=bias) as self_attn
  output out = y -> Attn(memory) as cross_attn
}
"""


def test_specialisations_given_different_optional_inputs_are_one_class(tmp_path):
    """T5's self-attention is given a position bias and no kv, its cross-attention kv and no bias: one T5Attention
    whose forward takes both as optional (`forward(self, x, kv=None, bias=None)`), passed by name. It computes what
    the -D compile (the two specialisations as written) computes. Where leaving the bias out is not the other
    specialisation's code (here it adds a relu), they stay two classes."""
    src = specc.load("specs/switch_base_8.nn").torch_source()
    assert src.count("class T5Attention") == 1 and "def forward(self, x, kv=None, bias=None):" in src
    assert "self.self_attn(y, bias=bias)" in src and "self.cross_attn(z, kv=memory)" in src
    spec = tmp_path / "two.nn"
    spec.write_text(_TWO_OPTIONAL.replace("{extra}", ""))
    src = specc.load(str(spec)).torch_source()
    assert src.count("class Attn") == 1, src
    model = _module(src, "two_joined").Two().eval()
    x, memory, bias = torch.randn(2, 3, 8), torch.randn(2, 5, 4), torch.randn(1, 2, 3, 3)

    def attention(layer, x, kv, bias):  # the spec's block by hand
        def heads(t):
            return t.reshape(t.size(0), t.size(1), 2, 4).transpose(1, 2)
        q, k, v = heads(layer.q(x)), heads(layer.k(kv)), heads(layer.v(kv))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias).transpose(1, 2).reshape(x.shape)
    with torch.no_grad():
        want = attention(model.cross_attn, attention(model.self_attn, x, x, bias), memory, None)
        torch.testing.assert_close(model(x, memory, bias), want)
    attn = model.self_attn
    torch.testing.assert_close(attn(x, bias=bias), attn(x, kv=x, bias=bias), rtol=0, atol=0)
    assert not torch.equal(attn(x, bias=bias), attn(x))  # the bias is not ignored
    spec.write_text(_TWO_OPTIONAL.replace("{extra}", " -> relu"))
    src = specc.load(str(spec)).torch_source()
    assert "class Attn(" in src and "class Attn1(" in src


def test_a_model_called_as_a_block_takes_its_input_sizes_by_their_declared_names():
    """Whisper's encoder is a model (`input features: f32[B, n_mels, frames]`) the decoder model calls: its class
    takes `n_mels` and `frames`, as declared, not names made from the input's rank (`features_dim1`)."""
    src = specc.load("specs/whisper_tiny.nn").torch_source()
    assert "def __init__(self, n_mels: int, frames: int, d: int," in src and "features_dim1" not in src
    assert "nn.Conv1d(n_mels, d, 3, padding=1)" in src and "# [B, d, (frames - 1) // 2 + 1]" in src
    mod = _module(src, "whisper_names")
    enc = mod.WhisperEncoder(20, 50, 32, 2, 1, 64)
    assert enc.conv1.in_channels == 20 and enc(torch.randn(1, 20, 50)).shape == (1, 25, 32)


def test_an_input_size_only_the_forward_reads_is_read_off_the_input():
    """DDPM's AttnBlock reshapes by its input's height and width (`dim(x, 2) * dim(x, 3)`): its forward reads them
    off x when it starts (`in_height, in_width = x.size(2), x.size(3)`), so the class takes only its channels and
    serves every resolution, as a person writes it. Sizes the constructor needs stay its parameters."""
    src = specc.load("specs/ddpm_cifar10.nn").torch_source()
    assert "def __init__(self, c: int) -> None:" in src and "in_height, in_width = x.size(2), x.size(3)" in src
    mod = _module(src, "ddpm_attn")
    attn = mod.AttnBlock(64).eval()
    for h, w in ((8, 8), (4, 6)):
        assert attn(torch.randn(2, 64, h, w)).shape == (2, 64, h, w)


def test_only_a_model_with_auxiliary_losses_has_aux_loss():
    """`aux_loss()` sums what MoE layers set; a model without one has no such method to read past (the training loop
    treats its absence as zero)."""
    assert "def aux_loss(self)" not in specc.load("specs/resnet18.nn").torch_source()
    assert "def aux_loss(self)" in specc.load("specs/mixtral_8x7b.nn").torch_source()


def test_a_string_hyper_parameter_is_this_compiles_choice_and_another_is_refused(tmp_path):
    """A string picks structure when the spec is compiled (`FeedForward(32, act)`: the gelu branch); a config with
    another string raises instead of silently building the compiled choice."""
    spec = tmp_path / "act.nn"
    spec.write_text('import "std/transformer.nn"\nmodel ActM(d: int = 16, act: str = "gelu") {\n'
                    '  input x: f32[B, T, d]\n  output y = x -> FeedForward(32, act)\n}\n')
    spec.with_name("std").symlink_to((ROOT / "specs" / "std").resolve())
    mod = _module(specc.load(str(spec)).torch_source(), "act_choice")
    assert mod.ActM(mod.ActMConfig(d=8))(torch.randn(2, 3, 8)).shape == (2, 3, 8)
    with pytest.raises(ValueError, match="ActM: `act` is 'gelu' in the spec this class was compiled from"):
        mod.ActM(mod.ActMConfig(act="relu"))


def test_a_parameter_an_if_resolves_is_resolved_by_the_constructor():
    """`if kv_heads == 0 { kv_heads = heads }` is the constructor's `kv_heads = heads if kv_heads == 0 else
    kv_heads`, not a refusal: BERT's attention class builds grouped-query attention too, and LLaMA's config may ask
    for plain multi-head attention (kv_heads=0)."""
    src = specc.load("specs/bert_base.nn").torch_source()
    assert "kv_heads = heads if kv_heads == 0 else kv_heads" in src
    mod = _module(src, "bert_kv")
    x, mask = torch.randn(2, 5, 32), torch.ones(2, 5, dtype=torch.bool)
    for kv_heads, width in ((0, 32), (2, 16), (4, 32)):
        attn = mod.MultiHeadAttention(32, 4, kv_heads, 0.0).eval()
        assert attn.k_proj.out_features == width and attn(x, mask).shape == (2, 5, 32)
    with pytest.raises(ValueError, match="kv_heads must divide heads"):
        mod.MultiHeadAttention(32, 4, 3, 0.0)
    llama = _module(specc.load("specs/llama2_7b.nn").torch_source(), "llama_kv")
    cfg = llama.LLaMA27BConfig if hasattr(llama, "LLaMA27BConfig") else next(
        v for k, v in vars(llama).items() if k.endswith("Config"))
    model = next(v for k, v in vars(llama).items() if k == cfg.__name__.removesuffix("Config"))
    small = model(cfg(vocab=100, ctx=16, layers=1, d=32, heads=4, kv_heads=0, hidden=64))
    assert small.layers[0].self_attn.k_proj.out_features == 32
    assert small(torch.randint(0, 100, (1, 6))).shape == (1, 6, 100)


LONGER = {"resnet50": {"depths": [1, 2, 1, 1, 3]},  # the spec reads depths[0] ... depths[3]: a fifth is unread
          "ddpm_cifar10": {"ch": 32, "mult": [1, 2, 2, 2, 2]}}


@pytest.mark.parametrize("name", sorted(LONGER))
def test_a_list_of_another_length_is_built_exactly_or_refused(name):
    """A loop over a list hyper-parameter (`for level in range(len(mult))`) is either the constructor's loop, so
    the module built from a longer or shorter list is the -D compile's, or a refusal naming the loop: never the
    compiled length built silently (DDPM with five levels in `mult` built the four-level model)."""
    cfg = LONGER[name]
    default = specc.load(f"specs/{name}.nn")
    generic = _module(default.torch_source(), f"length_{name}")
    model_cls = next(v for k, v in vars(generic).items() if k.lower() == default.module.name.lower().replace("_", ""))
    config = getattr(generic, model_cls.__name__ + "Config")(**{k: tuple(v) if isinstance(v, list) else v
                                                                for k, v in cfg.items()})
    other = specc.load(f"specs/{name}.nn", **cfg)
    try:
        with torch.device("meta"):
            built = model_cls(config)
    except ValueError as e:
        assert "recompile with -D" in str(e) and "len(" in str(e)
        return
    assert sum(p.numel() for p in built.parameters()) == other.params


def test_a_check_other_checks_decide_is_not_written():
    """`range(blocks + 1)` beside `range(blocks)`, `level < len(mult) - 1` beside `len(mult) == 4`, `2 ==
    attn_level` beside `attn_level == 1`: decided by the equalities checked already, so the constructor does not
    check them again (DDPM had nine checks, six of them of this kind)."""
    from specc.hyper import implied
    assert implied("(len(mult)) - (1) > 0", ["len(mult) == 4"])
    assert implied("not (2 == attn_level)", ["1 == attn_level", "blocks == 2"])
    assert not implied("len(mult) > 1", ["mult[0] == 1"]) and not implied("blocks + 1 == 3", [])
    # DDPM's loops before they were named (`for ... as down_blocks` writes them as loops instead, below)
    src = loads(UNROLLED).torch_source()
    ctor = src.split("class Unrolled(")[1].split("def forward")[0]
    assert ctor.count("raise ValueError") == 3
    assert "`range(len(mult))` has 2" in ctor and "`range(blocks)` has 2" in ctor and "config.attn_level" in ctor


UNROLLED = """
model Unrolled(ch: int = 8, mult: list = [1, 2], blocks: int = 2, attn_level: int = 1) {
  input x: f32[B, 3, 8, 8]
  x = x -> conv2d(ch, 3, padding=1)
  for level in range(len(mult)) {
    for i in range(blocks) {
      x = x -> conv2d(ch * mult[level], 3, padding=1) -> relu
      if level == attn_level {
        x = x -> batchnorm
      }
    }
    if level < len(mult) - 1 {
      x = x -> maxpool2d(2)
    }
  }
  for up in range(len(mult)) {
    for i in range(blocks + 1) {
      x = x -> conv2d(ch, 3, padding=1)
    }
  }
  output y = x
}
"""


DDPM_LOOPS = [  # the counts of DDPM's `for ... as down_blocks / up_blocks` loops and the `if` inside them
    {"blocks": 1}, {"blocks": 3, "attn_level": 0}, {"mult": [1, 2], "attn_level": 0},
    {"mult": [1, 2, 2, 2, 4], "attn_level": 3}, {"attn_level": 9}, {"mult": [2], "blocks": 0},
]


@pytest.mark.parametrize("cfg", DDPM_LOOPS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_ddpm_loop_counts_come_from_the_config(cfg):
    """Item 2, `repeat`/`for` counts from the config: DDPM's module compiled with the defaults builds any number of
    levels (`len(mult)`), blocks per level and attention level, with exactly the parameters (names, shapes, count
    `specc inspect -D` prints) of the -D compile, computing what it computes."""
    cfg = {"ch": 32, "image_size": 16, "dropout": 0.0, **cfg}
    mod = _module(specc.load("specs/ddpm_cifar10.nn").torch_source(), "ddpm_loops")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}
    torch.manual_seed(0)
    built = mod.DDPMCifar10(mod.DDPMCifar10Config(**values)).eval()
    other = specc.load("specs/ddpm_cifar10.nn", **cfg)
    assert sum(p.numel() for p in built.parameters()) == other.params
    fixed = _module(other.torch_source(), "ddpm_fixed")
    reference = fixed.DDPMCifar10()
    assert _shapes(built) == _shapes(reference)
    _same_outputs(built, reference, other)


def test_ddpm_compiled_without_a_branch_refuses_configs_that_take_it():
    """A branch of a loop's `if` that no iteration of the compile took has no code to write (attention at a level
    the model does not have): the constructor raises where a config would take it, naming the branch, and builds
    every config that does not."""
    mod = _module(specc.load("specs/ddpm_cifar10.nn", attn_level=9, ch=32).torch_source(), "ddpm_no_attn")
    small = {"ch": 32, "attn_level": 5}
    assert sum(p.numel() for p in mod.DDPMCifar10(mod.DDPMCifar10Config(**small)).parameters()) == \
        specc.load("specs/ddpm_cifar10.nn", **small).params
    with pytest.raises(ValueError, match=r"takes `level == attn_level` \(ddpm_cifar10.nn:\d+\).*recompile with -D"):
        mod.DDPMCifar10(mod.DDPMCifar10Config(ch=32, attn_level=1))


def test_a_product_of_floor_divisions_keeps_its_parentheses():
    """CLIP's `n = (image_size // patch) * (image_size // patch) + 1` positions were emitted as `image_size // patch
    * image_size // patch + 1`, which Python reads as ((image_size // patch) * image_size) // patch: a 40-pixel image
    in 16-pixel patches got a 6-row table for 5 positions."""
    spec = specc.load("specs/clip_vit_b32.nn", model="CLIPVisionTower")
    mod = _module(spec.torch_source(), "clip_vision")
    sizes = {"image_size": 40, "patch": 16, "d": 64, "heads": 2, "layers": 1, "d_ff": 128}
    built = mod.CLIPVisionTower(mod.CLIPVisionTowerConfig(**sizes))
    assert built.position_embedding.weight.shape[0] == (40 // 16) ** 2 + 1
    other = specc.load("specs/clip_vit_b32.nn", model="CLIPVisionTower", **sizes)
    assert sum(p.numel() for p in built.parameters()) == other.params


@pytest.mark.parametrize("name", sorted(SHRINK))
def test_a_float_hyper_parameter_changed_in_the_config_computes_what_the_d_compile_computes(name):
    """Every float hyper-parameter (eps, rope and position bases, dropout, loss coefficients) reaches the code: the
    module emitted with the default and built from a config with another value computes exactly what the module
    compiled with -D computes (same weights, eval mode). LLaMA's and DeepSeek's `rope_base` was dropped where the
    compiled value equalled apply_rope's default, so a config asking for another base got 10000."""
    base = SHRINK[name]
    spec = specc.load(ROOT / "specs" / f"{name}.nn", overrides=base)
    generic = _module(spec.torch_source(), f"float_{name}")
    model_cls = next(v for k, v in vars(generic).items() if k.lower() == spec.module.name.lower().replace("_", ""))
    floats = [k for k, v in spec.module.hparams.items() if isinstance(v, float)]
    for hparam in floats:
        value = spec.module.hparams[hparam]
        cfg = {**base, hparam: 0.25 if value == 0 else value / 3 if 0 < value < 1 else value * 1.5 + 1}
        other = specc.load(ROOT / "specs" / f"{name}.nn", overrides=cfg)
        fixed = _module(other.torch_source(), f"float_{name}_{hparam}")
        torch.manual_seed(0)
        built = model_cls(getattr(generic, model_cls.__name__ + "Config")(**cfg)).eval()
        _same_outputs(built, getattr(fixed, model_cls.__name__)(), other)


@pytest.mark.parametrize("name", sorted(SHRINK))
def test_random_integer_configs_compute_what_the_d_compile_computes(name):
    """Seeded random configs (one to three integer hyper-parameters or items of list ones raised by 1-3 or doubled;
    the ones the spec rejects skipped): the default-compiled module either computes exactly what the -D compile computes or refuses
    with "recompile with -D" (DDPM's loops); never a third outcome."""
    import random
    rng = random.Random(f"{name}-12")
    base = SHRINK[name]
    spec = specc.load(ROOT / "specs" / f"{name}.nn", overrides=base)
    generic = _module(spec.torch_source(), f"ints_{name}")
    model_cls = next(v for k, v in vars(generic).items() if k.lower() == spec.module.name.lower().replace("_", ""))
    ints = sorted(k for k, v in spec.module.hparams.items() if isinstance(v, int) and not isinstance(v, bool))
    ints += sorted((k, i) for k, v in spec.module.hparams.items() if isinstance(v, (list, tuple))
                   for i, item in enumerate(v) if isinstance(item, int) and not isinstance(item, bool))
    tried = 0
    for _ in range(12):
        cfg = dict(base)
        for k in rng.sample(ints, min(len(ints), rng.randint(1, 3))):
            if isinstance(k, tuple):  # an item of a list hyper-parameter (DDPM's `mult`, ResNet's `depths`)
                k, i = k
                items = list(cfg.get(k, spec.module.hparams[k]))
                items[i] += rng.choice([1, 2, items[i]])
                cfg[k] = items
                continue
            v = cfg.get(k, spec.module.hparams[k])
            cfg[k] = v + rng.choice([1, 2, 3, v])
        try:
            other = specc.load(ROOT / "specs" / f"{name}.nn", overrides=cfg)
        except CheckError:
            continue  # the spec's own asserts and shape rules reject it: not a valid config
        if other.params > 200_000_000 or tried == 2:
            continue
        tried += 1
        config = getattr(generic, model_cls.__name__ + "Config")(**{k: tuple(v) if isinstance(v, list) else v
                                                                    for k, v in cfg.items()})
        try:
            torch.manual_seed(0)
            built = model_cls(config)
        except ValueError as e:
            assert "recompile with -D" in str(e), e
            continue
        fixed = _module(other.torch_source(), f"ints_fixed_{name}")
        _same_outputs(built, getattr(fixed, model_cls.__name__)(), other)
    assert tried, "no valid config drawn"
