"""The zoo specs added for issue 14: `specc inspect` prints each published parameter count exactly, and where the
peer implementation is installed here (transformers), a tiny configuration matches it after weight transfer."""
from __future__ import annotations

import re

import pytest
from torch_util import SHRINK, SPECS

import specc
from specc.cli import main

COUNTS = [  # (spec, --model or None, published count)
    ("llama2_7b", None, 6_738_415_616),            # transformers LlamaForCausalLM, Llama-2-7b config
    ("dcgan", "Generator", 3_576_704),             # PyTorch DCGAN example, nz 100, ngf 64
    ("dcgan", "Discriminator", 2_765_568),         # ndf 64
    ("clip_vit_b32", None, 151_277_313),           # transformers CLIPModel, openai/clip-vit-base-patch32
    ("whisper_tiny", None, 37_760_640),            # transformers WhisperForConditionalGeneration, whisper-tiny
    ("whisper_tiny", "WhisperEncoder", 8_208_384),
    ("ddpm_cifar10", None, 35_746_307),            # diffusers UNet2DModel, google/ddpm-cifar10-32 config
    ("word2vec_sgns", None, 60_000_000),           # 2 x vocab 100,000 x d 300
]


@pytest.mark.parametrize("name,model,count", COUNTS, ids=lambda v: str(v))
def test_inspect_prints_the_published_count(name, model, count, capsys):
    args = ["inspect", str(SPECS / f"{name}.nn")] + (["--model", model] if model else [])
    assert main(args) == 0
    printed = re.search(r"total params: ([\d,]+)", capsys.readouterr().out).group(1)
    assert int(printed.replace(",", "")) == count


torch = pytest.importorskip("torch")


def _transformers():
    """transformers, importable next to a torchvision installed without its compiled ops (see COMMON notes)."""
    import importlib.util

    if importlib.util.find_spec("transformers") is None:
        pytest.skip("transformers is not installed")
    if importlib.util.find_spec("torchvision") is not None:
        try:
            getattr(torch.ops.torchvision, "nms")  # noqa: B009 - an attribute lookup that may fail
        except (AttributeError, RuntimeError):  # declare the two schemas torchvision's Python code registers on
            lib = torch.library.Library("torchvision", "FRAGMENT")
            lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            _LIBS.append(lib)
    import transformers

    return transformers


_LIBS: list = []  # keeps the schema fragments alive


def _load_renamed(model, state: dict, rename) -> None:
    mapped = {}
    for k, v in state.items():
        k = rename(k)
        if k is not None:
            mapped[k] = v.reshape(model.state_dict()[k].shape)
    model.load_state_dict(mapped, strict=True)


def _tiny(name: str):
    spec = specc.load(SPECS / f"{name}.nn", overrides=SHRINK[name])
    torch.manual_seed(0)
    return spec, spec.to_torch().eval()


def test_llama2_matches_transformers():
    tf = _transformers()
    cfg = tf.LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=16, rms_norm_eps=1e-5, rope_theta=10000.0)
    ref = tf.LlamaForCausalLM(cfg).eval()
    spec, model = _tiny("llama2_7b")
    assert spec.params == sum(p.numel() for p in ref.parameters())
    subs = [("model.", ""), ("o_proj", "out_proj"), ("mlp.gate_proj", "mlp.w1"), ("mlp.up_proj", "mlp.w3"),
            ("mlp.down_proj", "mlp.w2")]

    def rename(k):
        for a, b in subs:
            k = k.replace(a, b)
        return k
    _load_renamed(model, ref.state_dict(), rename)
    x = torch.randint(0, 100, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x).logits, atol=1e-5, rtol=1e-4)


def test_whisper_matches_transformers():
    tf = _transformers()
    cfg = tf.WhisperConfig(vocab_size=100, num_mel_bins=8, encoder_layers=2, decoder_layers=2,
                           encoder_attention_heads=4, decoder_attention_heads=4, d_model=64, encoder_ffn_dim=128,
                           decoder_ffn_dim=128, max_source_positions=10, max_target_positions=16, pad_token_id=0,
                           bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    ref = tf.WhisperForConditionalGeneration(cfg).eval()
    spec, model = _tiny("whisper_tiny")
    assert spec.params == sum(p.numel() for p in ref.parameters())
    assert not model.encoder.embed_positions.weight.requires_grad  # frozen, and counted, as in transformers
    _load_renamed(model, ref.state_dict(),
                  lambda k: k.replace("model.encoder.", "encoder.").replace("model.decoder.", ""))
    feats, tokens = torch.randn(2, 8, 20), torch.randint(0, 100, (2, 7))
    with torch.no_grad():
        want = ref(input_features=feats, decoder_input_ids=tokens).logits
        torch.testing.assert_close(model(feats, tokens), want, atol=1e-5, rtol=1e-4)


def test_clip_matches_transformers():
    tf = _transformers()
    cfg = tf.CLIPConfig(
        text_config=dict(vocab_size=100, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=1, max_position_embeddings=16, eos_token_id=99, bos_token_id=98,
                         pad_token_id=0),
        vision_config=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=32),
        projection_dim=32)
    ref = tf.CLIPModel(cfg).eval()
    spec, model = _tiny("clip_vit_b32")
    assert spec.params == sum(p.numel() for p in ref.parameters())
    cls = next(k for k in model.state_dict() if "class_embedding" in k)

    def rename(k):
        if k.endswith("position_ids"):
            return None
        k = k.replace(".embeddings.", ".").replace(".encoder.layers.", ".layers.").replace(".mlp.", ".")
        return {"logit_scale": "logit_scale.weight", "vision_model.class_embedding": cls}.get(k, k)
    _load_renamed(model, ref.state_dict(), rename)
    image, ids = torch.randn(2, 3, 64, 64), torch.randint(3, 98, (3, 7))
    ids[:, -1] = 99
    ids[1, 4], ids[1, 5:] = 99, 0
    eot = torch.zeros(3, 7, dtype=torch.bool)
    eot[torch.arange(3), (ids == 99).int().argmax(-1)] = True
    with torch.no_grad():
        want = ref(input_ids=ids, pixel_values=image).logits_per_image
        torch.testing.assert_close(model(image, ids, eot), want, atol=1e-5, rtol=1e-4)


def test_dcgan_generator_and_discriminator_shapes_chain():
    gen = specc.load(SPECS / "dcgan.nn", model="Generator")
    disc = specc.load(SPECS / "dcgan.nn", model="Discriminator")
    torch.manual_seed(0)
    g, d = gen.to_torch().eval(), disc.to_torch().eval()
    with torch.no_grad():
        image = g(torch.randn(2, 100, 1, 1))
        assert image.shape == (2, 3, 64, 64) and image.abs().max() <= 1
        prob = d(image)
    assert prob.shape == (2, 1, 1, 1) and ((prob > 0) & (prob < 1)).all()


def test_ddpm_count_matches_diffusers():
    import importlib.util

    if importlib.util.find_spec("diffusers") is None:
        pytest.skip("diffusers is not installed")
    _transformers()  # diffusers imports torchvision too
    from diffusers import UNet2DModel

    # google/ddpm-cifar10-32's config
    cfg = dict(act_fn="silu", attention_head_dim=None, block_out_channels=[128, 256, 256, 256],
               down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
               up_block_types=["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"], downsample_padding=0,
               flip_sin_to_cos=False, freq_shift=1, in_channels=3, out_channels=3, layers_per_block=2,
               norm_eps=1e-6, norm_num_groups=32, sample_size=32, time_embedding_type="positional")
    with torch.device("meta"):
        ref = UNet2DModel(**cfg)
    assert specc.load(SPECS / "ddpm_cifar10.nn").params == sum(p.numel() for p in ref.parameters()) == 35_746_307


# diffusers UNet2DModel's modules that the spec names otherwise; down_blocks.{i}.resnets.{j}, .attentions.{j},
# up_blocks.{i}.resnets.{j}, conv_in, conv_norm_out and conv_out are the same names in both
_FROM_DIFFUSERS = [(r"time_embedding\.", ""), (r"\.downsamplers\.0\.conv\.", ".downsample."),
                   (r"\.upsamplers\.0\.conv\.", ".upsample_conv."), (r"^mid_block\.resnets\.0\.", "resnet_block."),
                   (r"^mid_block\.attentions\.0\.", "attn_block."), (r"^mid_block\.resnets\.1\.", "resnet_block_1."),
                   (r"\.to_out\.0\.", ".to_out.")]


def test_ddpm_matches_diffusers_at_tiny_size():
    import importlib.util

    if importlib.util.find_spec("diffusers") is None:
        pytest.skip("diffusers is not installed")
    _transformers()
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    ref = UNet2DModel(act_fn="silu", attention_head_dim=None, block_out_channels=[32, 64, 64, 64],
                      down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
                      up_block_types=["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"], downsample_padding=0,
                      flip_sin_to_cos=False, freq_shift=1, in_channels=3, out_channels=3, layers_per_block=2,
                      norm_eps=1e-6, norm_num_groups=32, sample_size=16, time_embedding_type="positional").eval()
    spec, model = _tiny("ddpm_cifar10")

    def rename(k):  # the spec's `for ... as down_blocks` loops give diffusers' own nesting: a handful of names differ
        for pattern, ours in _FROM_DIFFUSERS:
            k = re.sub(pattern, ours, k)
        return k
    assert set(map(rename, ref.state_dict())) == set(model.state_dict())
    _load_renamed(model, ref.state_dict(), rename)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 917])
    with torch.no_grad():
        torch.testing.assert_close(model(x, t), ref(x, t).sample, atol=1e-4, rtol=1e-4)
