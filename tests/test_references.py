"""Sanity tests for the hand-written reference models in ``tests/references``.

Full-size models are built on the ``meta`` device (no memory, no init cost) and
only their parameter counts are checked against the published numbers;
forward passes run on small inputs / tiny configurations.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.references import conv, moe, seq


def n_params(model: torch.nn.Module) -> int:
    # model.parameters() de-duplicates shared (tied) tensors.
    return sum(p.numel() for p in model.parameters())


def build_meta(factory):
    with torch.device("meta"):
        return factory()


# --------------------------------------------------------------------------- #
# Published parameter counts
# --------------------------------------------------------------------------- #
PARAM_COUNTS = [
    ("LeNet5", lambda: conv.LeNet5(), 61_706),
    ("CifarCNN", lambda: conv.CifarCNN(), 4_275_594),
    ("AlexNet", lambda: conv.AlexNet(), 61_100_840),
    ("VGG16", lambda: conv.VGG16(), 138_357_544),
    ("ResNet18", lambda: conv.ResNet18(), 11_689_512),
    ("ResNet50", lambda: conv.ResNet50(), 25_557_032),
    ("LSTMLM", lambda: seq.LSTMLM(), 19_780_400),
    ("GRULM", lambda: seq.GRULM(), 18_087_800),
    ("GPT2", lambda: seq.GPT2(seq.GPT2Config()), 124_439_808),
    ("BertModel", lambda: seq.BertModel(seq.BertConfig()), 109_482_240),
    ("ViT-B/16", lambda: seq.ViT(seq.ViTConfig()), 86_567_656),
    ("Transformer-base", lambda: seq.Transformer(seq.TransformerConfig()), 63_084_544),
]


@pytest.mark.parametrize("name,factory,expected", PARAM_COUNTS, ids=[c[0] for c in PARAM_COUNTS])
def test_param_count(name, factory, expected):
    model = build_meta(factory)
    assert n_params(model) == expected


def test_tied_weights_are_shared():
    gpt = build_meta(lambda: seq.GPT2(seq.GPT2Config()))
    assert gpt.lm_head.weight is gpt.transformer.wte.weight
    tr = build_meta(lambda: seq.Transformer(seq.TransformerConfig()))
    assert tr.generator.weight is tr.embedding.weight
    assert tr.generator.bias is None


def test_resnet_torchvision_names():
    r18 = build_meta(conv.ResNet18)
    names18 = {n for n, _ in r18.named_parameters()}
    assert {"conv1.weight", "bn1.weight", "fc.weight", "fc.bias",
            "layer2.0.downsample.0.weight", "layer2.0.downsample.1.weight",
            "layer4.1.conv2.weight"} <= names18
    assert "layer1.0.downsample.0.weight" not in names18
    r50 = build_meta(conv.ResNet50)
    # v1.5: stride lives on the 3x3 conv of the first bottleneck of a stage.
    assert r50.layer2[0].conv2.stride == (2, 2)
    assert r50.layer2[0].conv1.stride == (1, 1)
    assert r50.layer1[0].downsample is not None  # 64 -> 256 channels


# --------------------------------------------------------------------------- #
# Forward passes (small inputs / tiny configs)
# --------------------------------------------------------------------------- #
@torch.no_grad()
def test_conv_forward_shapes():
    torch.manual_seed(0)
    assert conv.LeNet5().eval()(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    assert conv.CifarCNN().eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert conv.ResNet18(num_classes=7).eval()(torch.randn(2, 3, 64, 64)).shape == (2, 7)
    assert conv.ResNet50(num_classes=7).eval()(torch.randn(1, 3, 64, 64)).shape == (1, 7)
    # AlexNet needs >= 63x63 input; adaptive pooling handles the rest.
    assert conv.AlexNet(num_classes=5).eval()(torch.randn(1, 3, 64, 64)).shape == (1, 5)
    assert conv.VGG16(num_classes=5).eval()(torch.randn(1, 3, 32, 32)).shape == (1, 5)


@torch.no_grad()
def test_rnn_lm_forward_shapes():
    torch.manual_seed(0)
    idx = torch.randint(0, 50, (3, 7))
    lstm = seq.LSTMLM(vocab_size=50, hidden_size=16, num_layers=2).eval()
    logits, (h, c) = lstm(idx)
    assert logits.shape == (3, 7, 50)
    assert h.shape == c.shape == (2, 3, 16)
    gru = seq.GRULM(vocab_size=50, hidden_size=16, num_layers=2).eval()
    logits, h = gru(idx)
    assert logits.shape == (3, 7, 50)
    assert h.shape == (2, 3, 16)


@torch.no_grad()
def test_gpt2_forward_and_causality():
    torch.manual_seed(0)
    cfg = seq.GPT2Config(vocab_size=97, block_size=16, n_layer=2, n_head=4, n_embd=32)
    m = seq.GPT2(cfg).eval()
    idx = torch.randint(0, 97, (2, 10))
    logits = m(idx)
    assert logits.shape == (2, 10, 97)
    # Changing a future token must not change earlier logits.
    idx2 = idx.clone()
    idx2[:, -1] = (idx2[:, -1] + 1) % 97
    torch.testing.assert_close(m(idx2)[:, :-1], logits[:, :-1])


@torch.no_grad()
def test_bert_forward_shapes_and_mask():
    torch.manual_seed(0)
    cfg = seq.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=64,
                         max_position_embeddings=16, type_vocab_size=2)
    m = seq.BertModel(cfg).eval()
    ids = torch.randint(0, 100, (2, 9))
    types = torch.randint(0, 2, (2, 9))
    seq_out, pooled = m(ids, types)
    assert seq_out.shape == (2, 9, 32)
    assert pooled.shape == (2, 32)
    assert pooled.abs().max() <= 1.0  # tanh
    # Padding tokens masked out must not influence the unpadded positions.
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[:, 6:] = 0
    ids2 = ids.clone()
    ids2[:, 6:] = 0
    a, _ = m(ids, types, mask)
    b, _ = m(ids2, types, mask)
    torch.testing.assert_close(a[:, :6], b[:, :6])


@torch.no_grad()
def test_vit_forward_shape():
    torch.manual_seed(0)
    cfg = seq.ViTConfig(image_size=32, patch_size=8, num_layers=2, num_heads=4,
                        hidden_dim=32, mlp_dim=64, num_classes=10)
    m = seq.ViT(cfg).eval()
    assert m.pos_embedding.shape == (1, 17, 32)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert build_meta(seq.ViT).pos_embedding.shape == (1, 197, 768)


@torch.no_grad()
def test_transformer_forward_and_causality():
    torch.manual_seed(0)
    cfg = seq.TransformerConfig(vocab_size=60, d_model=32, n_heads=4, num_encoder_layers=2,
                                num_decoder_layers=2, d_ff=64, max_len=64)
    m = seq.Transformer(cfg).eval()
    src = torch.randint(0, 60, (2, 11))
    tgt = torch.randint(0, 60, (2, 7))
    logits = m(src, tgt)
    assert logits.shape == (2, 7, 60)
    tgt2 = tgt.clone()
    tgt2[:, -1] = (tgt2[:, -1] + 1) % 60
    torch.testing.assert_close(m(src, tgt2)[:, :-1], logits[:, :-1])
    pad = torch.zeros(2, 11, dtype=torch.bool)
    pad[:, 8:] = True
    assert m(src, tgt, pad).shape == (2, 7, 60)


def test_sinusoidal_positions():
    pe = seq.sinusoidal_positions(10, 8)
    assert pe.shape == (10, 8)
    torch.testing.assert_close(pe[0, 0::2], torch.zeros(4))
    torch.testing.assert_close(pe[0, 1::2], torch.ones(4))
    torch.testing.assert_close(pe[3, 2], torch.sin(torch.tensor(3.0 / 10000 ** (2 / 8))))


# --------------------------------------------------------------------------- #
# MoE
# --------------------------------------------------------------------------- #
def _dense_moe(layer: moe.MoELayer, x: torch.Tensor) -> torch.Tensor:
    """Vectorised re-statement of the MoE maths, to cross-check the loops."""
    t = x.reshape(-1, layer.d_model)
    p = layer.router(t).softmax(-1)
    w, idx = p.topk(layer.top_k, dim=-1)
    if layer.renormalize:
        w = w / w.sum(-1, keepdim=True)
    gate = torch.zeros_like(p).scatter(1, idx, w)  # (T, E)
    all_out = torch.stack([e(t) for e in layer.experts], dim=1)  # (T, E, d)
    y = (gate.unsqueeze(-1) * all_out).sum(1)
    for s in layer.shared_experts:
        y = y + s(t)
    return y.reshape(x.shape)


@pytest.mark.parametrize("top_k,renorm,shared", [(1, False, 0), (2, True, 0), (2, False, 2)])
def test_moe_matches_dense_restatement(top_k, renorm, shared):
    torch.manual_seed(0)
    layer = moe.MoELayer(d_model=8, d_hidden=16, num_experts=4, top_k=top_k,
                         renormalize=renorm, num_shared_experts=shared, shared_hidden=12)
    x = torch.randn(2, 5, 8)
    y, aux = layer(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, _dense_moe(layer, x))
    # Gradients flow through router and experts.
    (y.sum() + aux["load_balancing_loss"] + aux["router_z_loss"]).backward()
    assert layer.router.weight.grad is not None
    assert layer.router.bias is None


def test_moe_param_count():
    layer = moe.MoELayer(d_model=8, d_hidden=16, num_experts=4, top_k=2,
                         num_shared_experts=1, shared_hidden=12)
    assert n_params(layer) == 8 * 4 + 4 * 3 * 8 * 16 + 3 * 8 * 12


def test_moe_aux_losses():
    # Uniform router (zero logits): P_i = 1/E; every expert chosen equally
    # often by construction -> loss exactly 1; z-loss = log(E)^2.
    E = 4  # top-2 routing below
    probs = torch.full((8, E), 1.0 / E)
    idx = torch.tensor([[0, 1], [2, 3]] * 4)
    torch.testing.assert_close(moe.load_balancing_loss(probs, idx, E), torch.tensor(1.0))
    logits = torch.zeros(8, E)
    torch.testing.assert_close(moe.router_z_loss(logits), torch.tensor(math.log(E) ** 2))
    # Fully collapsed routing: all tokens to expert 0 with prob 1 -> loss E.
    probs = torch.zeros(6, E)
    probs[:, 0] = 1.0
    idx = torch.zeros(6, 1, dtype=torch.long)
    torch.testing.assert_close(moe.load_balancing_loss(probs, idx, E), torch.tensor(float(E)))
    # z-loss definition against a direct computation.
    logits = torch.randn(5, E)
    expected = sum(float(torch.log(torch.exp(l).sum())) ** 2 for l in logits) / 5
    torch.testing.assert_close(moe.router_z_loss(logits), torch.tensor(expected))
