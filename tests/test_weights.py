"""Pretrained weights in and out (specc/weights): every shipped map against its real library at tiny size, the
readers, the one-report errors, atomic outputs, and the CLI / API entry points."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from weights_util import torchvision_models, transformers  # noqa: E402

import specc  # noqa: E402
from specc.api import import_weights  # noqa: E402
from specc.cli import main  # noqa: E402
from specc.weights import (  # noqa: E402
    WeightsError,
    export_weights,
    init_from,
    load_map,
    model_layout,
    open_checkpoint,
)
from specc.weights.plan import TensorInfo, plan_import  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SPECS = REPO / "specs"
MAPS = SPECS / "maps"
ATOL = 1e-5

LLAMA_SPEC = """import "std/moe.nn"
model Llama(vocab: int = 32000, ctx: int = 4096, layers: int = 32, d: int = 4096, heads: int = 32,
            kv_heads: int = 32, hidden: int = 11008, rope_base: float = 10000.0, eps: float = 1e-5) {
  input tokens: i64[B, T] where T <= ctx
  x = tokens -> embedding(vocab, d) as embed_tokens
  repeat layers {
    x = x -> RotaryDecoderLayer(heads, SwiGLU(hidden), kv_heads, rope_base, eps)
  }
  output logits = x -> rmsnorm(eps) as norm -> linear(vocab, bias=false) as lm_head
}
"""


# ---- the Hugging Face zoo: import (no -D: config.json sets the sizes) and export -> from_pretrained --------------

def _gpt2(tf):
    cfg = tf.GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=4)
    ids = torch.randint(0, 97, (2, 9))
    return tf.GPT2LMHeadModel(cfg), "gpt2.nn", None, (ids,), lambda m, x: m(x[0]).logits, lambda m, x: m(*x)


def _bert(tf):
    cfg = tf.BertConfig(vocab_size=61, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=24)
    ids, types = torch.randint(0, 61, (2, 9)), torch.randint(0, 2, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    return (tf.BertModel(cfg), "bert_base.nn", None, (ids, types, mask),
            lambda m, x: torch.cat([m(input_ids=x[0], token_type_ids=x[1], attention_mask=x[2].long())
                                    .last_hidden_state.flatten(), m(input_ids=x[0], token_type_ids=x[1],
                                                                    attention_mask=x[2].long()).pooler_output.flatten()]),
            lambda m, x: torch.cat([t.flatten() for t in m(*x)]))


def _vit(tf):
    cfg = tf.ViTConfig(image_size=32, patch_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=48, num_labels=5)
    return (tf.ViTForImageClassification(cfg), "vit_b16.nn", None, (torch.randn(2, 3, 32, 32),),
            lambda m, x: m(pixel_values=x[0]).logits, lambda m, x: m(*x))


def _mixtral(tf):
    cfg = tf.MixtralConfig(vocab_size=53, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
                           max_position_embeddings=64)
    ids = torch.randint(0, 53, (2, 9))
    return tf.MixtralForCausalLM(cfg), "mixtral_8x7b.nn", None, (ids,), lambda m, x: m(x[0]).logits, \
        lambda m, x: m(*x)


def _llama(tf):
    cfg = tf.LlamaConfig(vocab_size=53, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    ids = torch.randint(0, 53, (2, 9))
    return tf.LlamaForCausalLM(cfg), None, "llama-hf", (ids,), lambda m, x: m(x[0]).logits, lambda m, x: m(*x)


def _switch(tf):
    cfg = tf.SwitchTransformersConfig(vocab_size=50, d_model=32, d_kv=8, d_ff=40, num_layers=2, num_decoder_layers=2,
                                      num_heads=4, num_experts=3, encoder_sparse_step=2, decoder_sparse_step=2,
                                      expert_capacity=64)
    src, tgt = torch.randint(2, 50, (2, 7)), torch.randint(2, 50, (2, 5))
    return (tf.SwitchTransformersForConditionalGeneration(cfg), "switch_base_8.nn", None, (src, tgt),
            lambda m, x: m(input_ids=x[0], decoder_input_ids=x[1]).logits, lambda m, x: m(*x))


HF_CASES = {"gpt2": _gpt2, "bert": _bert, "vit": _vit, "mixtral": _mixtral, "llama": _llama, "switch": _switch}
# specc caps an expert at capacity_factor x tokens / experts, transformers at expert_capacity tokens: neither drops
EXTRA_D = {"switch": ["-D", "capacity_factor=100.0"]}


@pytest.mark.parametrize("sharded", [False, True], ids=["single", "sharded"])
@pytest.mark.parametrize("case", sorted(HF_CASES))
def test_huggingface_round_trip(case, sharded, tmp_path, capsys):
    tf = transformers()
    torch.manual_seed(0)
    hf, spec_name, map_name, inputs, hf_fwd, specc_fwd = HF_CASES[case](tf)
    hf.eval()
    spec = SPECS / spec_name if spec_name else tmp_path / "llama.nn"
    if spec_name is None:
        spec.write_text(LLAMA_SPEC)
    ckpt = tmp_path / "hf"
    hf.save_pretrained(ckpt, max_shard_size="20KB" if sharded else "5GB")
    assert (ckpt / "model.safetensors.index.json").is_file() == sharded
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in ckpt.iterdir()}

    out = tmp_path / "w.safetensors"
    argv = ["weights", "import", str(spec), str(ckpt), "-o", str(out)] + (["--map", map_name] if map_name else []) \
        + EXTRA_D.get(case, [])
    assert main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "config.json set -D" in printed and f"wrote {out}" in printed
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in ckpt.iterdir()} == before  # read-only

    overrides = json.loads(open_checkpoint(out).metadata["specc_hparams"])
    model = specc.load(spec, **overrides).to_torch(weights=out).eval()
    with torch.no_grad():
        want, got = hf_fwd(hf, inputs), specc_fwd(model, inputs)
        fresh = specc_fwd(specc.load(spec, **overrides).to_torch().eval(), inputs)
    assert (want - got).abs().max().item() <= ATOL
    assert (want - fresh).abs().max().item() > 1e-3  # the check can fail: a fresh model disagrees

    folder = tmp_path / "export"
    map_arg = map_name or open_checkpoint(out).metadata["specc_map"]
    assert main(["weights", "export", str(spec), str(out), "--map", map_arg, "-o", str(folder)]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    again = type(hf).from_pretrained(folder).eval()
    with torch.no_grad():
        assert (hf_fwd(again, inputs) - want).abs().max().item() <= ATOL


def test_to_torch_converts_a_checkpoint_folder_directly(tmp_path):
    tf = transformers()
    torch.manual_seed(0)
    hf = tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=4)).eval()
    hf.save_pretrained(tmp_path / "hf")
    model = specc.load(SPECS / "gpt2.nn", vocab=97, ctx=32, layers=2, heads=4, d=32).to_torch(
        weights=tmp_path / "hf").eval()  # the spec's map is found by the checkpoint's names
    ids = torch.randint(0, 97, (1, 8))
    with torch.no_grad():
        assert (model(ids) - hf(ids).logits).abs().max().item() <= ATOL
    with pytest.raises(WeightsError, match="shape mismatch"):  # strict: nothing loaded into the wrong size
        specc.load(SPECS / "gpt2.nn", vocab=97, ctx=32, layers=2, heads=4, d=64).to_torch(weights=tmp_path / "hf")


# ---- torchvision ------------------------------------------------------------------------------------------------

def _torchvision_model(name, classes=10):
    models = torchvision_models()
    m = getattr(models, name)(num_classes=classes).eval()
    torch.manual_seed(1)
    for mod in m.modules():  # statistics that are not the identity, so the running stats are really mapped
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
    return m


def _tiny_vit(models, classes=10):
    """torchvision's VisionTransformer at tiny size (vit_b_16's class): image 32, patch 8, 2 layers, 2 heads, d 16,
    d_ff 32. Every parameter drawn at random: torchvision zero-initialises the class token and the head."""
    from torchvision.models.vision_transformer import VisionTransformer

    m = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                          num_classes=classes).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.2)
    return m


# name -> (spec, the torchvision model with 10 classes (seeded), -D overrides that match it, input size)
TV_CASES = {
    "resnet18": ("resnet18.nn", lambda: _torchvision_model("resnet18"), {"classes": 10}, 224),
    "alexnet": ("alexnet.nn", lambda: _torchvision_model("alexnet"), {"classes": 10}, 224),
    "vit": ("vit_b16.nn", lambda: (torch.manual_seed(1), _tiny_vit(torchvision_models()))[1],
            {"classes": 10, "image_size": 32, "patch": 8, "layers": 2, "heads": 2, "d": 16, "d_ff": 32}, 32),
}


@pytest.mark.parametrize("name", sorted(TV_CASES))
def test_torchvision_round_trip(name, tmp_path):
    from safetensors.torch import load_file

    spec, build, overrides, size = TV_CASES[name]
    tv = build()
    pth = tmp_path / f"{name}.pth"
    torch.save(tv.state_dict(), pth)
    out = tmp_path / "w.safetensors"
    result = import_weights(SPECS / spec, pth, out, overrides=overrides)  # map found by its names
    assert result.map.name == f"{name}-torchvision"
    model = result.spec.to_torch(weights=out).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert (tv(x) - model(x)).abs().max().item() <= ATOL
    export_weights(result.spec, out, result.map.name, tmp_path / "exp")
    back = build()
    with torch.no_grad():
        for t in back.state_dict().values():  # not tv's values: the load below must overwrite every one
            t.zero_()
    back.load_state_dict(load_file(tmp_path / "exp" / "model.safetensors"))  # strict: every name, every shape
    with torch.no_grad():
        assert torch.equal(back(x), tv(x))


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "vgg16", "alexnet", "vit_b_16"])
def test_torchvision_maps_cover_every_tensor(name):
    """Names and shapes only, on the meta device (full size, no memory): every tensor mapped both ways."""
    models = torchvision_models()
    with torch.device("meta"):
        tv = getattr(models, name)()
    ckpt = {k: TensorInfo(tuple(v.shape), "float32") for k, v in tv.state_dict().items()}
    ckpt = {k: TensorInfo(v.shape, "int64" if k.endswith("num_batches_tracked") else "float32")
            for k, v in ckpt.items()}
    spec, wmap = {"vit_b_16": ("vit_b16", "vit")}.get(name, (name, name))
    layout = model_layout(specc.load(SPECS / f"{spec}.nn"))
    plan = plan_import(load_map(MAPS / f"{wmap}-torchvision.toml"), ckpt, layout.tensors, layout.aliases)
    assert plan.report.ok, plan.report.problems()
    assert plan.out.keys() == layout.tensors.keys()  # every model tensor written, every checkpoint one read once
    assert sorted(n for step in plan.steps for n in step.src) == sorted(ckpt)  # (vit: q/k/v fused, 3 -> 1)


# ---- errors: one report, closest names, nothing written, nothing modified ---------------------------------------

@pytest.fixture
def gpt2_ckpt(tmp_path):
    tf = transformers()
    torch.manual_seed(0)
    hf = tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=4))
    hf.save_pretrained(tmp_path / "gpt2")
    return tmp_path / "gpt2"


def _edit_checkpoint(folder: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    f = folder / "model.safetensors"
    state = load_file(f)
    edit(state)
    save_file(state, f, metadata={"format": "pt"})


def test_report_lists_every_problem_with_the_closest_name(gpt2_ckpt, tmp_path, capsys):
    def edit(state):
        del state["transformer.h.1.mlp.c_fc.bias"]
        state["transformer.h.0.attn.c_proj.weight"] = torch.zeros(32, 33)
        state["transformer.h.1.mlp.c_fc.biass"] = torch.zeros(128)

    _edit_checkpoint(gpt2_ckpt, edit)
    out = tmp_path / "out.safetensors"
    assert main(["weights", "import", str(SPECS / "gpt2.nn"), str(gpt2_ckpt), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "transformer.h.1.mlp.c_fc.biass (no rule of the map matches it)" in err
    # the model's own names come from the naming layer; only their tails are pinned here
    assert re.search(r"\S+\.1\.mlp\.c_fc\.bias; closest unused \S+ tensor: transformer\.h\.1\.mlp\.c_fc\.biass", err)
    assert re.search(r"transformer\.h\.0\.attn\.c_proj\.weight \[32, 33\] \(gives \[33, 32\]\) -> "
                     r"\S+\.0\.attn\.c_proj\.weight needs \[32, 32\]", err)
    assert not out.exists() and not list(tmp_path.glob(".out.safetensors*"))  # a failed import writes nothing


def test_failed_import_keeps_an_existing_output(gpt2_ckpt, tmp_path):
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"previous")
    with pytest.raises(WeightsError, match="shape mismatch"):
        import_weights(SPECS / "gpt2.nn", gpt2_ckpt, out, overrides={"d": 48})
    assert out.read_bytes() == b"previous"


def test_overrides_that_contradict_config_json_are_named(gpt2_ckpt, tmp_path):
    with pytest.raises(WeightsError, match=r"-D overrides config.json: d=48 \(config.json: 32\)"):
        import_weights(SPECS / "gpt2.nn", gpt2_ckpt, tmp_path / "o.safetensors", overrides={"d": 48})


def test_truncated_files_are_clear_errors(gpt2_ckpt, tmp_path, capsys):
    f = gpt2_ckpt / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    assert main(["weights", "import", str(SPECS / "gpt2.nn"), str(gpt2_ckpt), "-o", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "not a readable safetensors file" in err and "truncated" in err and "Traceback" not in err
    pt = tmp_path / "w.pt"
    torch.save({"w": torch.zeros(1000)}, pt)
    pt.write_bytes(pt.read_bytes()[:500])
    with pytest.raises(WeightsError, match="not a readable PyTorch file"):
        open_checkpoint(pt)


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran code",))

    p = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "x": Evil()}, p)
    with pytest.raises(WeightsError, match="refused"):
        open_checkpoint(p)


def test_a_tied_copy_that_differs_is_an_error(gpt2_ckpt, tmp_path):
    def edit(state):
        state["lm_head.weight"] = state["transformer.wte.weight"] + 1

    _edit_checkpoint(gpt2_ckpt, edit)
    with pytest.raises(WeightsError, match="tied"):
        import_weights(SPECS / "gpt2.nn", gpt2_ckpt, tmp_path / "o.safetensors")


def test_bin_files_and_training_checkpoints(gpt2_ckpt, tmp_path):
    from safetensors.torch import load_file

    state = load_file(gpt2_ckpt / "model.safetensors")
    torch.save({"model": state, "step": 3}, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_bytes((gpt2_ckpt / "config.json").read_bytes())
    a = import_weights(SPECS / "gpt2.nn", tmp_path / "pytorch_model.bin", tmp_path / "a.safetensors")
    import_weights(SPECS / "gpt2.nn", gpt2_ckpt, tmp_path / "b.safetensors")
    assert a.report.ok and load_file(tmp_path / "a.safetensors").keys() == load_file(tmp_path / "b.safetensors").keys()
    for k, v in load_file(tmp_path / "a.safetensors").items():
        assert torch.equal(v, load_file(tmp_path / "b.safetensors")[k]), k


def test_bad_maps_are_located(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[tensors]\n"h.{i}.w" = { to = "x.{j}.w" }\n')
    with pytest.raises(WeightsError, match=r"bad.toml: \[tensors\] 'h.\{i\}.w': the indices differ"):
        load_map(bad)
    bad.write_text('[tensors]\n"a" = { to = "b", rotate = 1 }\n')
    with pytest.raises(WeightsError, match="unknown transform"):
        load_map(bad)
    bad.write_text("[tensors\n")
    with pytest.raises(WeightsError, match="not a valid TOML map"):
        load_map(bad)


def test_unknown_map_lists_the_known_ones(gpt2_ckpt, tmp_path):
    with pytest.raises(WeightsError, match="known: .*gpt2-hf"):
        import_weights(SPECS / "gpt2.nn", gpt2_ckpt, tmp_path / "o", "gpt3-hf")


# ---- transforms that the zoo maps do not use -----------------------------------------------------------------

def test_split_concat_stack_unstack_round_trip(tmp_path):
    """A fused q/k/v checkpoint tensor split into the spec's three projections, per-expert tensors stacked, and
    the way back, on a small attention + MoE spec."""
    from safetensors.torch import load_file, save_file

    spec = specc.load(SPECS / "mixtral_8x7b.nn", vocab=11, layers=1, d=8, heads=2, kv_heads=2, hidden=12, experts=3)
    layout = model_layout(spec)
    torch.manual_seed(0)
    mine = {n: torch.randn(i.shape) for n, i in layout.tensors.items()}
    fused = {"qkv": torch.cat([mine[f"layers.0.self_attn.{p}_proj.weight"] for p in "qkv"]),
             "w1": torch.stack([mine[f"layers.0.mlp.moe.experts.{e}.w1.weight"] for e in range(3)])}
    ckpt = {**{n: t for n, t in mine.items() if "q_proj" not in n and "k_proj" not in n and "v_proj" not in n
               and ".w1." not in n}, **fused}
    ckpt = {("x." + n if n not in fused else n): t for n, t in ckpt.items()}
    for e in range(3):  # the stacked one the other way round: per-expert in the checkpoint
        ckpt.pop(f"x.layers.0.mlp.moe.experts.{e}.w3.weight")
        ckpt[f"w3.{e}"] = mine[f"layers.0.mlp.moe.experts.{e}.w3.weight"].t().contiguous()
    save_file(ckpt, tmp_path / "c.safetensors")
    m = tmp_path / "m.toml"
    m.write_text("""[tensors]
"qkv" = { to = ["layers.{i}.self_attn.q_proj.weight", "layers.{i}.self_attn.k_proj.weight",
                "layers.{i}.self_attn.v_proj.weight"], split = 0 }
"w1" = { to = "layers.0.mlp.moe.experts.{e}.w1.weight", unstack = "e" }
"w3.{e}" = { to = "layers.0.mlp.moe.experts.{e}.w3.weight", transpose = true }
"x.{*}" = "{*}"
""".replace("layers.{i}", "layers.0"))
    from specc.weights import import_weights as import_into_spec  # a loaded Spec, no config.json

    result = import_into_spec(spec, tmp_path / "c.safetensors", tmp_path / "w.safetensors", str(m))
    assert result.report.ok
    got = load_file(tmp_path / "w.safetensors")
    assert got.keys() == mine.keys() and all(torch.equal(got[k], mine[k]) for k in mine)
    export_weights(spec, tmp_path / "w.safetensors", str(m), tmp_path / "exp")
    back = load_file(tmp_path / "exp" / "model.safetensors")
    assert back.keys() == ckpt.keys() and all(torch.equal(back[k], ckpt[k]) for k in ckpt)


# ---- fine-tuning entry: init_from --------------------------------------------------------------------------------

def test_init_from_reinitialises_what_changed_shape_and_lists_it(tmp_path):
    from safetensors.torch import save_file

    src = specc.load(SPECS / "vit_b16.nn", image_size=32, layers=1, d=16, heads=2, d_ff=24, classes=1000).to_torch()
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, tmp_path / "w.safetensors")
    torch.manual_seed(5)
    dst = specc.load(SPECS / "vit_b16.nn", image_size=32, layers=1, d=16, heads=2, d_ff=24, classes=2).to_torch()
    head_before = dst.state_dict()["head.weight"].clone()
    report = init_from(dst, tmp_path / "w.safetensors")
    assert [r[0] for r in report.reinitialised] == ["head.weight", "head.bias"]
    assert report.reinitialised[0][1:] == ((1000, 16), (2, 16))
    assert not report.missing and not report.unused
    assert len(report.loaded) == len(src.state_dict()) - 2
    sd = dst.state_dict()
    assert torch.equal(sd["head.weight"], head_before)
    assert torch.equal(sd["layers.0.ffn.w_1.weight"], src.state_dict()["layers.0.ffn.w_1.weight"])
    assert "newly initialised head.weight: checkpoint [1000, 16], model [2, 16]" in str(report)


# ---- the writer against the safetensors library --------------------------------------------------------------

def test_streaming_writer_reads_back_with_safetensors(tmp_path):
    from safetensors import safe_open

    from specc.weights.writer import write_safetensors

    tensors = {"a": torch.randn(3, 5), "b": torch.arange(7, dtype=torch.int64), "c": torch.randn(2, 2).bfloat16(),
               "d": torch.tensor([True, False, True]), "e": torch.zeros(0, 4)}
    infos = {k: TensorInfo(tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in tensors.items()}
    write_safetensors(tmp_path / "x.safetensors", infos, iter(tensors.items()), metadata={"k": "v"})
    with safe_open(tmp_path / "x.safetensors", "pt") as f:
        assert f.metadata() == {"k": "v"}
        for k, v in tensors.items():
            assert torch.equal(f.get_tensor(k), v), k


@pytest.mark.tvm
@pytest.mark.slow
def test_tvm_compile_with_weights(gpt2_ckpt, tmp_path):
    pytest.importorskip("tvm")
    import numpy as np

    out = tmp_path / "w.safetensors"
    import_weights(SPECS / "gpt2.nn", gpt2_ckpt, out)
    assert main(["compile", str(SPECS / "gpt2.nn"), "--target", "tvm-cpu", "--weights", str(out),
                 "-o", str(tmp_path / "tvm")]) == 0
    npz = np.load(next((tmp_path / "tvm").glob("*.npz")))
    from safetensors.torch import load_file

    ours = load_file(out)
    name = next(n for n in ours if n.endswith("0.attn.c_attn.weight"))
    assert np.array_equal(npz[name], ours[name].numpy())
