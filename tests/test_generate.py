"""generate() of emitted causal language models (issue 12 item 6): a key/value cache that gives the logits of a full
recompute at every step, greedy and sampled decoding (temperature, top-k, top-p, a seeded generator), end tokens,
the context limit, and no generate() on models that are not causal LMs."""
from __future__ import annotations

import sys

import pytest
import torch
from torch_util import SHRINK, SPECS

import specc
from specc.api import loads

LMS = ["gpt2", "mixtral_8x7b", "llama2_7b", "deepseek_moe_16b", "mistral"]


# Mistral-style: rotary positions, grouped-query attention and a sliding window of 4 positions (Mistral 7B's 4096)
MISTRAL = """
import "std/transformer.nn"

block SlidingWindowAttention(x, heads: int, kv_heads: int, window: int) {
  d = features(x)
  hd = d // heads
  q = x -> linear(d, bias=false) as q_proj -> reshape(dim(x, 0), dim(x, 1), heads, hd) -> transpose(1, 2)
  k = x -> linear(kv_heads * hd, bias=false) as k_proj -> reshape(dim(x, 0), dim(x, 1), kv_heads, hd) -> transpose(1, 2)
  v = x -> linear(kv_heads * hd, bias=false) as v_proj -> reshape(dim(x, 0), dim(x, 1), kv_heads, hd) -> transpose(1, 2)
  q = q -> rope(1000000.0)
  k = k -> rope(1000000.0)
  y = sdpa(q, k, v, causal=true, window=window)
  return y -> transpose(1, 2) -> reshape(dim(x, 0), dim(x, 1), d) -> linear(d, bias=false) as o_proj
}

block MistralLayer(x, heads: int, kv_heads: int, window: int, hidden: int) {
  x = x + (x -> rmsnorm(1e-5) as input_layernorm -> SlidingWindowAttention(heads, kv_heads, window) as self_attn)
  return x + (x -> rmsnorm(1e-5) as post_attention_layernorm -> SwiGLU(hidden) as mlp)
}

model Mistral(vocab: int = 100, ctx: int = 32, layers: int = 2, d: int = 64, heads: int = 4, kv_heads: int = 2,
              window: int = 4, hidden: int = 96) {
  input tokens: i64[B, T] where T <= ctx
  x = tokens -> embedding(vocab, d) as embed_tokens
  repeat layers {
    x = x -> MistralLayer(heads, kv_heads, window, hidden)
  }
  output logits = x -> rmsnorm(1e-5) as norm -> linear(vocab, bias=false) as lm_head
}
"""


def _build(name: str, opt_level: int | None = None, **overrides):
    if name == "mistral":
        spec = loads(MISTRAL, "mistral.nn", **overrides)
    else:
        spec = specc.load(SPECS / f"{name}.nn", overrides={**SHRINK[name], **overrides})
    torch.manual_seed(0)
    return spec.to_torch(opt_level=opt_level).eval()


def _runtime(model):
    """The emitted file's module (KVCache, next_token)."""
    return sys.modules[type(model).__module__]


def _prompt(model, b: int = 2, t: int = 5, seed: int = 1) -> torch.Tensor:
    vocab = model.config.vocab
    return torch.randint(0, vocab, (b, t), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name,level", [(n, None) for n in LMS] + [("gpt2", 2)])
def test_cached_steps_give_the_logits_of_a_full_recompute(name, level):
    """Prompt, then one token a step on the cache: the logits of every step equal the last position of a forward
    over the whole prefix (to 1e-5), so greedy decoding picks the same tokens."""
    model = _build(name, level)
    tokens = _prompt(model)
    cache = _runtime(model).KVCache(model.config.ctx)
    with torch.no_grad():
        logits = model(tokens, cache=cache)
        torch.testing.assert_close(logits, model(tokens), rtol=0, atol=1e-5)
        for _ in range(8):
            token = logits[:, -1].argmax(-1, keepdim=True)
            tokens = torch.cat([tokens, token], 1)
            logits = model(token, cache=cache)
            assert logits.shape[1] == 1 and cache.start == tokens.size(1)
            torch.testing.assert_close(logits[:, -1], model(tokens)[:, -1], rtol=0, atol=1e-5)
    generated = model.generate(tokens[:, :5], max_new_tokens=8, temperature=0)
    assert torch.equal(generated, tokens)


@pytest.mark.parametrize("name", ["gpt2", "mixtral_8x7b", "mistral"])
def test_a_prompt_fed_in_chunks_sees_the_cached_chunks(name):
    """Several new positions after cached ones: the causal mask is aligned to the end (query t at start + t)."""
    model = _build(name)
    tokens = _prompt(model, t=9)
    cache = _runtime(model).KVCache(9)
    with torch.no_grad():
        parts = [model(tokens[:, :3], cache=cache), model(tokens[:, 3:7], cache=cache), model(tokens[:, 7:], cache=cache)]
        torch.testing.assert_close(torch.cat(parts, 1), model(tokens), rtol=0, atol=1e-5)


def test_the_sliding_window_limits_what_cached_steps_see():
    """With a window of 4, a token 8 positions on no longer sees the prompt's start: the logits differ from those
    of the same weights with a window as long as the context, and the cached steps follow the windowed model."""
    narrow, wide = _build("mistral"), _build("mistral", window=32)
    wide.load_state_dict(narrow.state_dict())
    tokens = _prompt(narrow, t=12)
    with torch.no_grad():
        assert torch.allclose(narrow(tokens)[:, :4], wide(tokens)[:, :4], atol=1e-6)  # inside the window: equal
        assert not torch.allclose(narrow(tokens)[:, -1], wide(tokens)[:, -1], atol=1e-3)
    src = loads(MISTRAL, "mistral.nn").torch_source()
    assert "window: int = 4" in src and "triu(-self.window + 1)" in src  # the window is the config's


def test_the_cache_refuses_positions_beyond_its_room():
    model = _build("gpt2")
    cache = _runtime(model).KVCache(4)
    with torch.no_grad():
        model(_prompt(model, t=3), cache=cache)
        with pytest.raises(ValueError, match="room for 4 positions: 3 cached and 2 new"):
            model(_prompt(model, t=2), cache=cache)


def test_sampling_with_a_seeded_generator_is_reproducible_and_matches_the_uncached_loop():
    model = _build("llama2_7b")
    prompt = _prompt(model)
    kw = {"max_new_tokens": 8, "temperature": 0.8, "top_k": 20, "top_p": 0.9}
    a = model.generate(prompt, **kw, generator=torch.Generator().manual_seed(3))
    b = model.generate(prompt, **kw, generator=torch.Generator().manual_seed(3))
    c = model.generate(prompt, **kw, generator=torch.Generator().manual_seed(4))
    assert a.shape == (2, 13) and torch.equal(a, b) and not torch.equal(a, c)
    # the same draws without a cache: the whole prefix recomputed each step
    gen, tokens = torch.Generator().manual_seed(3), prompt
    with torch.no_grad():
        for _ in range(8):
            token = _runtime(model).next_token(model(tokens)[:, -1], 0.8, 20, 0.9, gen)
            tokens = torch.cat([tokens, token], 1)
    assert torch.equal(a, tokens)


def _support(model, logits: torch.Tensor, n: int = 400, **kw) -> set[int]:
    gen = torch.Generator().manual_seed(0)
    draws = _runtime(model).next_token(logits.expand(n, -1), generator=gen, **kw)
    return set(draws.flatten().tolist())


def test_top_k_and_top_p_restrict_the_tokens_drawn():
    model = _build("gpt2")
    probs = torch.tensor([[0.05, 0.4, 0.25, 0.15, 0.1, 0.05]])
    logits = probs.log()
    assert _support(model, logits) == {0, 1, 2, 3, 4, 5}  # unrestricted: every token shows up
    assert _support(model, logits, top_k=2) == {1, 2}
    assert _support(model, logits, top_k=1) == {1}
    assert _support(model, logits, top_p=0.6) == {1, 2}  # 0.4 < 0.6 <= 0.4 + 0.25
    assert _support(model, logits, top_p=0.65) == {1, 2}  # the mass reaches top_p exactly with the second token
    assert _support(model, logits, top_p=0.7) == {1, 2, 3}
    assert _support(model, logits, top_p=0.1) == {1}  # the most likely token always stays
    assert _support(model, logits, top_k=3, top_p=0.99) == {1, 2, 3}
    assert _support(model, logits, temperature=0) == {1}
    # a low temperature sharpens the distribution towards the most likely token
    low = _runtime(model).next_token(logits.expand(400, -1), 0.2, generator=torch.Generator().manual_seed(0))
    assert (low == 1).float().mean() > 0.8


def test_eos_ends_each_row_and_pads_it():
    model = _build("gpt2")
    prompt = _prompt(model, b=3)
    free = model.generate(prompt, max_new_tokens=10, temperature=0)
    eos = int(free[0, 7])  # row 0's third new token
    out = model.generate(prompt, max_new_tokens=10, temperature=0, eos_token=eos)
    for row, full in zip(out, free):
        new = full[5:].tolist()
        stop = new.index(eos) + 1 if eos in new else len(new)
        expected = new[:stop] + [eos] * (out.size(1) - 5 - stop)
        assert row[5:].tolist() == expected and torch.equal(row[:5], full[:5])
    # every row finished: generation stops early
    first = model.generate(prompt[:1], max_new_tokens=10, temperature=0, eos_token=eos)
    assert first.size(1) == 5 + free[0, 5:].tolist().index(eos) + 1 < 15


def test_the_context_limit_is_a_clear_error():
    model = _build("gpt2")  # ctx 16
    with pytest.raises(ValueError, match=r"tokens has T = 12 and max_new_tokens = 5: 17 positions, GPT2 was built "
                                         r"for T <= 16 \(ctx\)"):
        model.generate(_prompt(model, t=12), max_new_tokens=5)
    assert model.generate(_prompt(model, t=12), max_new_tokens=4, temperature=0).shape == (2, 16)
    with pytest.raises(ValueError, match="top_p must be in"):
        model.generate(_prompt(model), max_new_tokens=2, top_p=0.0)


@pytest.mark.parametrize("name", ["bert_base", "lstm_lm", "transformer_base", "vit_b16"])
def test_models_that_are_not_causal_lms_have_no_generate(name):
    """Bidirectional attention, a recurrent LM (no key/value cache fits it), an encoder-decoder, an image model."""
    spec = specc.load(SPECS / f"{name}.nn", overrides=SHRINK.get(name, {}))
    source = spec.torch_source()
    assert "def generate(" not in source and "class KVCache" not in source and "cache=cache" not in source
    assert not hasattr(spec.to_torch(), "generate")


def test_inputs_called_cache_keep_their_names():
    """The cache argument is named clear of the spec's inputs, in the model and in every block it passes through."""
    text = MISTRAL.replace("input tokens:", "input cache:").replace("x = tokens ->", "x = cache ->")
    attention, rest = text.split("block MistralLayer")
    attention = attention.replace("(x,", "(cache,").replace("features(x)", "features(cache)") \
        .replace("x ->", "cache ->").replace("dim(x,", "dim(cache,")
    spec = loads(attention + "block MistralLayer" + rest, "mistral.nn")
    assert "def forward(self, cache, cache_1=None):" in spec.torch_source()
    model = spec.to_torch().eval()
    tokens = _prompt(model)
    with torch.no_grad():
        for _ in range(4):
            tokens = torch.cat([tokens, model(tokens)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(model.generate(tokens[:, :5], 4, temperature=0), tokens)


TINY_LM = """
block Attn(x, heads: int) {
  d = features(x)
  q, k, v = x -> linear(3 * d) as c_attn -> split(3)
  q = q -> reshape(dim(x, 0), dim(x, 1), heads, d // heads) -> transpose(1, 2)
  k = k -> reshape(dim(x, 0), dim(x, 1), heads, d // heads) -> transpose(1, 2)
  v = v -> reshape(dim(x, 0), dim(x, 1), heads, d // heads) -> transpose(1, 2)
  y = sdpa(q, k, v, causal=CAUSAL) -> transpose(1, 2) -> reshape(dim(x, 0), dim(x, 1), d)
  return y -> linear(d) as c_proj
}
model LM(vocab: int = 50, d: int = 32) {
  input tokens: i64[B, T] where T <= 16
  x = tokens -> embedding(vocab, d)
  x = x + (x -> Attn(4))
  EXTRA
  output logits = x -> linear(vocab)
}
"""


@pytest.mark.parametrize("extra,causal,generates", [
    ("", "true", True),
    ("x = softmax(x, -1)", "true", True),  # over the features: per position
    ("x = x -> unsqueeze(1) -> reshape(dim(x, 0), dim(x, 1), d)", "true", True),
    ("", "false", False),  # bidirectional attention
    ("x = softmax(x, 1)", "true", False),  # over the sequence
    ("x = x - mean(x, 1, keepdim=true)", "true", False),
    ("x = x -> transpose(1, 2) -> conv1d(d, 3, padding=1) -> transpose(1, 2)", "true", False),  # mixes neighbours
    ("x = x + parameter(16, d)[:T]", "true", False),  # a table read from position 0, whatever the cache holds
])
def test_generate_comes_from_the_ir_only_for_models_a_cache_cannot_change(extra, causal, generates):
    from specc.backends.torch.kvcache import cache_plan

    spec = loads(TINY_LM.replace("EXTRA", extra).replace("CAUSAL", causal), "lm.nn")
    assert (cache_plan(spec.module) is not None) == generates
    assert ("def generate(" in spec.torch_source()) == generates


def test_a_window_without_causal_is_a_located_error():
    from specc.api import CheckError

    with pytest.raises(CheckError) as e:
        loads(TINY_LM.replace("EXTRA", "").replace("causal=CAUSAL", "window=4"), "lm.nn")
    text = str(e.value)
    assert "sliding window over causal attention: set causal=true" in text and "lm.nn:8" in text
