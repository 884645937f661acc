"""Sequence op families against independent references, weights copied across, outputs within 1e-5:
rnn / lstm / gru against torch.nn.RNN / LSTM / GRU; position encodings against direct formulas; the std attention
blocks (specs/std/transformer.nn) against torch.nn.MultiheadAttention, TransformerEncoderLayer and
TransformerDecoderLayer, and grouped-query attention against an explicit repeat-the-kv-heads computation."""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from specc.api import loads  # noqa: E402

ATOL = 1e-5


def build(text: str, **overrides):
    torch.manual_seed(0)
    return loads(text, "t.nn", **overrides).to_torch().eval()


def close(a, b) -> None:
    assert a.shape == b.shape, (a.shape, b.shape)
    assert torch.allclose(a, b, atol=ATOL, rtol=0), (a - b).abs().max().item()


# ---- recurrent ------------------------------------------------------------------------------------------------

RNN_CASES = [  # kind, layers, bidirectional, initial state, extra attrs
    ("lstm", 1, False, False, ""),
    ("lstm", 2, True, True, ", dropout=0.3"),
    ("gru", 2, False, True, ", dropout=0.2"),
    ("gru", 1, True, False, ", bias=false"),
    ("rnn", 2, True, True, ", nonlinearity=\"relu\""),
]


@pytest.mark.parametrize("kind,layers,bidir,state,extra", RNN_CASES)
def test_recurrent_matches_torch(kind, layers, bidir, state, extra):
    dirs = 2 if bidir else 1
    n_states = 2 if kind == "lstm" else 1
    names = ["h0", "c0"][:n_states]
    decl = "".join(f"  input {n}: f32[{layers * dirs}, B, 5]\n" for n in names) if state else ""
    args = f"(x, {', '.join(names)})" if state else "x"
    outs = ["y", "h", "c"][:1 + n_states]
    text = (f"model R() {{\n  input x: f32[B, T, 6]\n{decl}"
            f"  {', '.join(outs)} = {args} -> {kind}(5, {layers}, bidirectional={str(bidir).lower()}{extra}) as rnn\n"
            + "".join(f"  output {o}_out = {o}\n" for o in outs) + "}\n")
    model = build(text)
    cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[kind]
    kw = {"nonlinearity": "relu"} if kind == "rnn" else {}
    ref = cls(6, 5, num_layers=layers, bidirectional=bidir, batch_first=True, bias="bias=false" not in extra, **kw)
    ref.load_state_dict({k.removeprefix("rnn."): v for k, v in model.state_dict().items()})
    ref.eval()
    x = torch.randn(3, 7, 6, requires_grad=True)
    hx = [torch.randn(layers * dirs, 3, 5) for _ in names] if state else []
    got = model(x, *hx)
    want_out, want_h = ref(x, (tuple(hx) if kind == "lstm" else hx[0]) if state else None)
    want = [want_out, *(want_h if kind == "lstm" else (want_h,))]
    for g, w in zip(got, want):
        close(g, w)
    (gx,) = torch.autograd.grad(sum(g.sum() for g in got), x)
    (wx,) = torch.autograd.grad(sum(w.sum() for w in want), x)
    close(gx, wx)


def test_recurrent_parameter_names_and_counts():
    spec = loads("model R() {\n  input x: f32[B, T, 6]\n  y, h, c = x -> lstm(5, 2, bidirectional=true) as rnn\n"
                 "  output o = y\n}\n")
    ref = nn.LSTM(6, 5, num_layers=2, bidirectional=True, batch_first=True)
    assert spec.params == sum(p.numel() for p in ref.parameters())
    model = spec.to_torch()
    assert [k.removeprefix("rnn.") for k in model.state_dict()] == list(ref.state_dict())


# ---- position encodings ---------------------------------------------------------------------------------------

def test_sinusoidal_matches_reference_table():
    from tests.references.seq import sinusoidal_positions

    model = build("model P() {\n  input x: f32[B, T, 16] where T <= 50\n  output y = x -> sinusoidal_pos(50)\n}\n")
    x = torch.randn(2, 9, 16)
    close(model(x), x + sinusoidal_positions(50, 16)[:9])
    assert not list(model.parameters()) and not model.state_dict()  # a non-persistent buffer, no parameters


def test_learned_positions_add_the_first_rows():
    model = build("model P() {\n  input x: f32[B, T, 8] where T <= 12\n  output y = x -> learned_pos(12) as wpe\n}\n")
    x = torch.randn(2, 5, 8)
    close(model(x), x + model.wpe.weight[:5])
    emb = nn.Embedding(12, 8)
    emb.weight.data.copy_(model.wpe.weight.data)
    close(model(x), x + emb(torch.arange(5)))


def _rope_reference(x: torch.Tensor, base: float, interleaved: bool) -> torch.Tensor:
    """Rotation written as complex multiplication (Meta LLaMA's form) on pairs chosen by the layout."""
    t, d = x.shape[-2], x.shape[-1]
    freqs = 1.0 / base ** (torch.arange(0, d, 2).double() / d)
    rot = torch.polar(torch.ones(t, d // 2, dtype=torch.float64), torch.outer(torch.arange(t).double(), freqs))
    if interleaved:
        z = torch.view_as_complex(x.double().reshape(*x.shape[:-1], d // 2, 2).contiguous())
        return torch.view_as_real(z * rot).reshape(x.shape).float()
    z = torch.complex(x[..., : d // 2].double(), x[..., d // 2:].double()) * rot
    return torch.cat((z.real, z.imag), dim=-1).float()


@pytest.mark.parametrize("interleaved", [False, True])
def test_rope_matches_complex_rotation(interleaved):
    flag = "true" if interleaved else "false"
    model = build(f"model R() {{\n  input q: f32[B, H, T, 16]\n  output y = q -> rope(500.0, interleaved={flag})\n}}\n")
    q = torch.randn(2, 3, 11, 16)
    close(model(q), _rope_reference(q, 500.0, interleaved))


def test_rope_keeps_relative_positions():
    """<rope(q)_t, rope(k)_s> depends on t - s only: shifting both sequences leaves the scores unchanged."""
    model = build("model R() {\n  input q: f32[B, T, 8]\n  output y = q -> rope\n}\n")
    v = torch.randn(1, 1, 8)
    q, k = model(v.expand(1, 10, 8)), model(torch.randn(1, 1, 8).expand(1, 10, 8))
    scores = q @ k.transpose(1, 2)
    assert torch.allclose(scores[0, 3, 1], scores[0, 7, 5], atol=ATOL)


def test_class_token_prepends_a_learned_vector():
    model = build("model C() {\n  input x: f32[B, N, 8]\n  output y = x -> cls_token as class_token\n}\n")
    x = torch.randn(3, 4, 8)
    y = model(x)
    close(y[:, 1:], x)
    close(y[:, 0], model.class_token.weight[0].expand(3, 8))
    assert loads("model C() {\n  input x: f32[B, N, 8]\n  output y = x -> cls_token\n}\n").params == 8


# ---- attention ------------------------------------------------------------------------------------------------

STD = 'import "std/transformer.nn"\n'


def _mha_from(model_attn: nn.Module, d: int, heads: int, bias: bool = True) -> nn.MultiheadAttention:
    ref = nn.MultiheadAttention(d, heads, bias=bias, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([model_attn.q_proj.weight, model_attn.k_proj.weight,
                                            model_attn.v_proj.weight]))
        ref.out_proj.weight.copy_(model_attn.out_proj.weight)
        if bias:
            ref.in_proj_bias.copy_(torch.cat([model_attn.q_proj.bias, model_attn.k_proj.bias, model_attn.v_proj.bias]))
            ref.out_proj.bias.copy_(model_attn.out_proj.bias)
    return ref.eval()


def test_self_attention_with_padding_mask_matches_torch():
    model = build(STD + "model A() {\n  input x: f32[B, T, 32]\n  input mask: bool[B, T]\n"
                  "  output y = x -> MultiHeadAttention(mask=mask, heads=4) as attn\n}\n")
    ref = _mha_from(model.attn, 32, 4)
    x = torch.randn(3, 6, 32)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[1, 4:] = False
    mask[2, 1:] = False
    want, _ = ref(x, x, x, key_padding_mask=~mask, need_weights=False)
    close(model(x, mask), want)


def test_causal_cross_and_biasless_attention_match_torch():
    model = build(STD + "model A() {\n  input x: f32[B, T, 32]\n  input mem: f32[B, S, 32]\n  input mask: bool[B, S]\n"
                  "  a = x -> MultiHeadAttention(heads=8, causal=true, bias=false) as causal_attn\n"
                  "  output y = a -> MultiHeadAttention(mem, mask=mask, heads=2) as cross\n}\n")
    x, mem = torch.randn(2, 5, 32), torch.randn(2, 9, 32)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, 6:] = False
    future = torch.ones(5, 5, dtype=torch.bool).triu(1)
    a, _ = _mha_from(model.causal_attn, 32, 8, bias=False)(x, x, x, attn_mask=future, need_weights=False)
    y, _ = _mha_from(model.cross, 32, 2)(a, mem, mem, key_padding_mask=~mask, need_weights=False)
    close(model(x, mem, mask), y)


def test_causal_attention_with_a_key_mask_matches_torch():
    """F.scaled_dot_product_attention takes a mask or is_causal: the emitted call folds the triangle into the mask."""
    model = build(STD + "model A() {\n  input x: f32[B, T, 32]\n  input mask: bool[B, T]\n"
                  "  output y = x -> MultiHeadAttention(mask=mask, heads=4, causal=true) as attn\n}\n")
    x = torch.randn(2, 6, 32)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    future = torch.ones(6, 6, dtype=torch.bool).triu(1)
    want, _ = _mha_from(model.attn, 32, 4)(x, x, x, attn_mask=future, key_padding_mask=~mask, need_weights=False)
    close(model(x, mask), want)


def test_grouped_query_attention_matches_repeated_kv_heads():
    model = build(STD + "model G() {\n  input x: f32[B, T, 48]\n"
                  "  output y = x -> MultiHeadAttention(heads=6, kv_heads=2, causal=true) as attn\n}\n")
    a = model.attn
    assert a.k_proj.weight.shape == (16, 48) and a.q_proj.weight.shape == (48, 48)
    x = torch.randn(2, 7, 48)
    b, t, hd = 2, 7, 8
    q = a.q_proj(x).view(b, t, 6, hd).transpose(1, 2)
    k = a.k_proj(x).view(b, t, 2, hd).transpose(1, 2).repeat_interleave(3, dim=1)
    v = a.v_proj(x).view(b, t, 2, hd).transpose(1, 2).repeat_interleave(3, dim=1)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
    scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    want = a.out_proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, 48))
    close(model(x), want)


def test_llama_style_attention_rope_and_grouped_heads():
    """Rotary q/k, 2 kv heads for 4 query heads, no biases; the reference rotates with complex numbers."""
    model = build(STD + "model L() {\n  input x: f32[B, T, 32]\n"
                  "  output y = x -> MultiHeadAttention(heads=4, kv_heads=2, causal=true, bias=false, rope=true)"
                  " as attn\n}\n")
    a = model.attn
    x = torch.randn(2, 9, 32)
    q = _rope_reference(a.q_proj(x).view(2, 9, 4, 8).transpose(1, 2), 10000.0, False)
    k = _rope_reference(a.k_proj(x).view(2, 9, 2, 8).transpose(1, 2), 10000.0, False).repeat_interleave(2, 1)
    v = a.v_proj(x).view(2, 9, 2, 8).transpose(1, 2).repeat_interleave(2, 1)
    scores = (q @ k.transpose(-1, -2) / math.sqrt(8)).masked_fill(torch.ones(9, 9, dtype=torch.bool).triu(1), -math.inf)
    close(model(x), a.out_proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 9, 32)))


def _copy_layer(ours: nn.Module, ref: nn.Module, pairs: dict[str, str]) -> None:
    """Copy ours -> ref; attention in_proj (q, k, v stacked) is assembled from q_proj/k_proj/v_proj."""
    sd = ours.state_dict()
    out = {}
    for mine, theirs in pairs.items():
        for p in ("weight", "bias"):
            if mine.endswith("attn"):
                out[f"{theirs}.in_proj_{p}"] = torch.cat([sd[f"{mine}.{n}_proj.{p}"] for n in "qkv"])
                out[f"{theirs}.out_proj.{p}"] = sd[f"{mine}.out_proj.{p}"]
            else:
                out[f"{theirs}.{p}"] = sd[f"{mine}.{p}"]
    ref.load_state_dict(out)
    ref.eval()


ENC_PAIRS = {"self_attn": "self_attn", "ffn.w_1": "linear1", "ffn.w_2": "linear2", "norm1": "norm1",
             "norm2": "norm2"}


@pytest.mark.parametrize("norm_first,act", [(False, "relu"), (True, "gelu")])
def test_encoder_layer_matches_torch(norm_first, act):
    nf = "true" if norm_first else "false"
    model = build(STD + "model E() {\n  input x: f32[B, T, 32]\n  input mask: bool[B, T]\n"
                  f"  output y = x -> EncoderLayer(mask=mask, heads=4, d_ff=64, act=\"{act}\", norm_first={nf}) as enc\n}}\n")
    ref = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, activation=act, batch_first=True, norm_first=norm_first)
    _copy_layer(model.enc, ref, ENC_PAIRS)
    x = torch.randn(3, 6, 32, requires_grad=True)  # grad on: torch takes its slow, exact path
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[0, 3:] = False
    close(model(x, mask), ref(x, src_key_padding_mask=~mask))


def test_decoder_layer_matches_torch():
    model = build(STD + "model D() {\n  input x: f32[B, T, 32]\n  input mem: f32[B, S, 32]\n  input mask: bool[B, S]\n"
                  "  output y = x -> DecoderLayer(mem, mask=mask, heads=4, d_ff=64) as dec\n}\n")
    ref = nn.TransformerDecoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    _copy_layer(model.dec, ref, {**ENC_PAIRS, "cross_attn": "multihead_attn", "norm3": "norm3"})
    x, mem = torch.randn(2, 5, 32, requires_grad=True), torch.randn(2, 8, 32)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, 5:] = False
    want = ref(x, mem, tgt_mask=nn.Transformer.generate_square_subsequent_mask(5), tgt_is_causal=True,
               memory_key_padding_mask=~mask)
    close(model(x, mem, mask), want)


def test_swiglu_and_attention_dropout():
    model = build(STD + "model S() {\n  input x: f32[B, T, 16]\n  output y = x -> SwiGLU(40) as mlp\n}\n")
    x = torch.randn(2, 3, 16)
    m = model.mlp
    close(model(x), m.w2(nn.functional.silu(m.w1(x)) * m.w3(x)))
    assert m.w1.bias is None
    src = loads(STD + "model A() {\n  input x: f32[B, T, 16]\n"
                "  output y = x -> MultiHeadAttention(heads=2, dropout=0.1)\n}\n").torch_source()
    # the block's dropout hyper-parameter, stored by MultiHeadAttention(..., dropout=0.1) at construction
    assert "dropout_p=self.dropout if self.training else 0.0" in src and ", 0.1)" in src
