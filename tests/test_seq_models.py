"""The sequence-model specs: published parameter counts (as `specc inspect` prints them), forward and backward of the
emitted PyTorch, and outputs within 1e-5 of the hand-written references in tests/references/seq.py (shrunk with
hyper-parameter overrides, weights copied across by name)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import specc
from specc.cli import main

SPECS = Path(__file__).resolve().parent.parent / "specs"
ATOL = 1e-5

COUNTS = {
    "lstm_lm": 19_780_400,
    "gru_lm": 18_087_800,
    "transformer_base": 63_084_544,
    "bert_base": 109_482_240,
    "gpt2": 124_439_808,
    "vit_b16": 86_567_656,
}


@pytest.mark.parametrize("name", COUNTS)
def test_inspect_prints_published_parameter_count(name, capsys):
    assert main(["inspect", str(SPECS / f"{name}.nn")]) == 0
    assert f"total params: {COUNTS[name]:,}\n" in capsys.readouterr().out


def test_gpt2_forward_flops_at_128_tokens(capsys):
    assert main(["inspect", str(SPECS / "gpt2.nn"), "--dim", "T=128"]) == 0
    flops = re.search(r"FLOPs: ([\d,]+) \(([\d.]+) G\)", capsys.readouterr().out)
    assert flops.group(2) == "32.228"  # 2 * MACs of every linear (lm head included) and both attention matmuls
    assert int(flops.group(1).replace(",", "")) == 2 * 128 * (12 * (768 * 9216 + 2 * 128 * 768) + 768 * 50257)


@pytest.mark.parametrize("name", [*COUNTS, "seq2seq_attention"])
def test_ir_verifies_and_prints_back(name):
    from specc.printer import parse_module, print_module
    from specc.verify import verify

    m = specc.load(SPECS / f"{name}.nn").module
    verify(m)
    text = print_module(m)
    assert print_module(parse_module(text)) == text


# ---- emitted PyTorch: every spec, shrunk, runs forward and backward -------------------------------------------

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from tests.references import seq as R  # noqa: E402

SMALL = {
    "lstm_lm": dict(vocab=50, d=16),
    "gru_lm": dict(vocab=50, d=16),
    "seq2seq_attention": dict(src_vocab=40, tgt_vocab=30, emb=8, hidden=16, align=12),
    "transformer_base": dict(vocab=60, d=32, heads=4, layers=2, d_ff=64, max_len=64, dropout=0.0),
    "bert_base": dict(vocab=60, max_pos=16, layers=2, heads=4, d=32, d_ff=64, dropout=0.0),
    "gpt2": dict(vocab=60, ctx=16, layers=2, heads=4, d=32),
    "vit_b16": dict(image_size=32, patch=8, classes=10, layers=2, heads=4, d=32, d_ff=64),
}


def emitted(name: str):
    torch.manual_seed(0)
    return specc.load(SPECS / f"{name}.nn", **SMALL[name]).to_torch()


def inputs_for(name: str, model) -> list:
    spec_inputs = specc.load(SPECS / f"{name}.nn", **SMALL[name]).module
    g = spec_inputs.graph
    dims = {"B": 2, "T": 7, "S": 9}
    out = []
    for i in g.inputs:
        t = g[i].type
        shape = [d if isinstance(d, int) else dims[str(d)] for d in t.shape]
        if t.dtype == "i64":
            out.append(torch.randint(0, 2, shape))  # valid ids for every table, token types too
        elif t.dtype == "bool":
            out.append(torch.ones(shape, dtype=torch.bool))
        else:
            out.append(torch.randn(shape))
    return out


@pytest.mark.parametrize("name", SMALL)
def test_every_spec_runs_forward_and_backward(name):
    model = emitted(name).train()
    outs = model(*inputs_for(name, model))
    outs = outs if isinstance(outs, tuple) else (outs,)
    sum(o.float().square().mean() for o in outs).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient reached {missing}"


def close(a, b) -> None:
    assert a.shape == b.shape, (a.shape, b.shape)
    assert torch.allclose(a, b, atol=ATOL, rtol=0), (a - b).abs().max().item()


def load_mapped(model: nn.Module, ref: nn.Module, rename) -> None:
    """Load ref's weights into model, renaming each key with rename(key) (None: not a parameter of ours)."""
    sd = {}
    for k, v in ref.state_dict().items():
        new = rename(k)
        if new is not None:
            sd[new] = v.reshape(model.state_dict()[new].shape)
    model.load_state_dict(sd)
    model.eval()
    ref.eval()


def subs(key: str, table: list[tuple[str, str]]) -> str:
    for pat, rep in table:
        key = re.sub(pat, rep, key)
    return key


@pytest.mark.parametrize("name,cls", [("lstm_lm", R.LSTMLM), ("gru_lm", R.GRULM)])
def test_recurrent_lms_match_reference(name, cls):
    model = emitted(name)
    ref = cls(vocab_size=50, hidden_size=16, num_layers=2, dropout=0.5)
    load_mapped(model, ref, lambda k: k)  # same names: embedding, rnn.weight_ih_l0, ..., decoder
    idx = torch.randint(0, 50, (3, 11))
    logits, *state = model(idx)
    want, hidden = ref(idx)
    close(logits, want)
    for got, w in zip(state, hidden if isinstance(hidden, tuple) else (hidden,)):
        close(got, w)


def test_gpt2_matches_nanogpt_reference():
    model = emitted("gpt2")
    ref = R.GPT2(R.GPT2Config(vocab_size=60, block_size=16, n_layer=2, n_head=4, n_embd=32))
    load_mapped(model, ref, lambda k: subs(k, [(r"^transformer\.", "")]))  # the spec names its stack h
    idx = torch.randint(0, 60, (2, 16))
    close(model(idx), ref(idx))
    assert model.lm_head.weight is model.wte.weight


BERT_NAMES = [
    (r"^embeddings\.LayerNorm", "embeddings_norm"), (r"^embeddings\.", ""), (r"^layers\.", "layer."),
    (r"\.attention\.query", ".self_attn.q_proj"), (r"\.attention\.key", ".self_attn.k_proj"),
    (r"\.attention\.value", ".self_attn.v_proj"), (r"\.attention_output", ".self_attn.out_proj"),
    (r"\.attention_LayerNorm", ".norm1"), (r"\.intermediate", ".ffn.w_1"), (r"\.output_LayerNorm", ".norm2"),
    (r"\.output\.", ".ffn.w_2."),
]


def test_bert_matches_reference_with_padding():
    model = emitted("bert_base")
    ref = R.BertModel(R.BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=64, max_position_embeddings=16))
    load_mapped(model, ref, lambda k: subs(k, BERT_NAMES))
    ids, types = torch.randint(0, 60, (3, 10)), torch.randint(0, 2, (3, 10))
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[1, 6:] = False
    seq, pooled = model(ids, types, mask)
    want_seq, want_pooled = ref(ids, types, mask.long())
    close(seq, want_seq)
    close(pooled, want_pooled)


VIT_NAMES = [
    (r"^class_token$", "class_token.weight"), (r"^pos_embedding$", "pos_embedding.weight"),
    (r"\.ln_1\.", ".norm1."), (r"\.ln_2\.", ".norm2."), (r"\.attn\.(q|k|v)\.", r".self_attn.\1_proj."),
    (r"\.attn\.out\.", ".self_attn.out_proj."), (r"\.mlp\.0\.", ".ffn.w_1."), (r"\.mlp\.3\.", ".ffn.w_2."),
]


def test_vit_matches_reference():
    model = emitted("vit_b16")
    ref = R.ViT(R.ViTConfig(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64,
                            num_classes=10))
    nn.init.normal_(ref.class_token)  # zeros by default: make the test see it
    load_mapped(model, ref, lambda k: subs(k, VIT_NAMES))
    images = torch.randn(2, 3, 32, 32)
    close(model(images), ref(images))


TRANSFORMER_NAMES = [
    (r"^embedding\.", "emb."),
    (r"\.w_(q|k|v)\.", r".\1_proj."), (r"\.w_o\.", ".out_proj."),
]


def test_transformer_matches_reference_with_shared_embedding():
    model = emitted("transformer_base")
    ref = R.Transformer(R.TransformerConfig(vocab_size=60, d_model=32, n_heads=4, num_encoder_layers=2,
                                            num_decoder_layers=2, d_ff=64, max_len=64))
    load_mapped(model, ref, lambda k: subs(k, TRANSFORMER_NAMES))
    src, tgt = torch.randint(0, 60, (2, 9)), torch.randint(0, 60, (2, 7))
    close(model(src, tgt), ref(src, tgt))
    assert model.generator.weight is model.emb.weight


class Seq2SeqReference(nn.Module):
    """Written from the paper's equations, independent of the spec: same sizes and attribute names."""

    def __init__(self, src_vocab=40, tgt_vocab=30, emb=8, hidden=16, align=12):
        super().__init__()
        self.src_emb, self.tgt_emb = nn.Embedding(src_vocab, emb), nn.Embedding(tgt_vocab, emb)
        self.encoder = nn.GRU(emb, hidden, batch_first=True, bidirectional=True)
        self.init = nn.Linear(hidden, hidden)
        self.decoder = nn.GRU(emb, hidden, batch_first=True)
        self.W_a = nn.Linear(hidden, align, bias=False)
        self.U_a = nn.Linear(2 * hidden, align)
        self.v_a = nn.Linear(align, 1, bias=False)
        self.combine = nn.Linear(3 * hidden, hidden)
        self.out = nn.Linear(hidden, tgt_vocab)

    def forward(self, src, tgt):
        h, h_n = self.encoder(self.src_emb(src))  # h_j = [forward; backward]
        s0 = torch.tanh(self.init(h_n[1])).unsqueeze(0)
        s, _ = self.decoder(self.tgt_emb(tgt), s0)
        logits = []
        for t in range(s.shape[1]):  # one decoder step at a time: e_tj = v^T tanh(W s_t + U h_j)
            e = self.v_a(torch.tanh(self.W_a(s[:, t:t + 1]) + self.U_a(h))).squeeze(-1)  # [B, S]
            c = (e.softmax(-1).unsqueeze(-1) * h).sum(1)  # [B, 2H]
            logits.append(self.out(torch.tanh(self.combine(torch.cat([s[:, t], c], -1)))))
        return torch.stack(logits, 1)


def test_seq2seq_attention_matches_reference():
    model = emitted("seq2seq_attention")
    ref = Seq2SeqReference()
    load_mapped(model, ref, lambda k: subs(k, [(r"^(W|U|v)_a\.", r"attention.\1.")]))
    src, tgt = torch.randint(0, 40, (3, 9)), torch.randint(0, 30, (3, 6))
    close(model(src, tgt), ref(src, tgt))
