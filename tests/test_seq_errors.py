"""Static checks of the sequence families: each error is located and points at both lines involved (and, for
errors inside a std block, at the user's call), with no follow-on errors."""
from __future__ import annotations

import pytest

from specc.api import CheckError, loads

STD = 'import "std/transformer.nn"\n'


def error(text: str, name: str = "m.nn"):
    with pytest.raises(CheckError) as info:
        loads(text, name)
    (diag,) = info.value.diagnostics  # exactly one: no cascade
    return diag, info.value.render()


def lines(diag, file: str = "m.nn") -> list[int]:
    """Lines of the user's file that the error and its notes point at."""
    spans = [diag.span] + [n.span for n in diag.notes]
    return [s.line for s in spans if s is not None and s.file == file]


def test_position_table_shorter_than_the_sequence_bound():
    diag, text = error("model M(ctx: int = 1024) {\n"
                       "  input ids: i64[B, T] where T <= 2048\n"
                       "  x = ids -> embedding(10, 8)\n"
                       "  output y = x -> learned_pos(ctx) as wpe\n}\n")
    assert diag.code == "E0304"
    assert "1024 positions, but sequence length T can be up to 2048" in diag.message
    assert diag.span.line == 4 and 2 in lines(diag)  # the table and the `where T <= 2048` bound
    assert "T is bounded here: T <= 2048" in text


def test_unbounded_sequence_against_a_position_table():
    diag, _ = error("model M() {\n  input ids: i64[B, T]\n  output y = ids -> embedding(10, 8) -> learned_pos(16)\n}\n")
    assert diag.code == "E0304" and "where T <= 16" in diag.message


def test_static_sequence_longer_than_the_table():
    diag, _ = error("model M() {\n  input x: f32[B, 20, 8]\n  output y = x -> sinusoidal_pos(16)\n}\n")
    assert diag.code == "E0304" and "sequence length 20 exceeds" in diag.message


def test_gpt2_context_checked_through_overrides():
    from pathlib import Path

    import specc

    spec = Path(__file__).resolve().parent.parent / "specs" / "gpt2.nn"
    specc.load(spec, ctx=16, layers=1, d=32, heads=4, vocab=10)  # T <= ctx: fine
    text = spec.read_text().replace("where T <= ctx", "where T <= 2 * ctx")  # bound larger than the table
    with pytest.raises(CheckError) as info:
        loads(text, "gpt2.nn")
    (diag,) = info.value.diagnostics
    lines_of = {s: i for i, ln in enumerate(text.splitlines(), 1) for s in ("input tokens", "learned_pos") if s in ln}
    assert diag.code == "E0304" and "can be up to 2048" in diag.message
    assert diag.span.line == lines_of["learned_pos"] and lines_of["input tokens"] in lines(diag, "gpt2.nn")


def test_heads_must_divide_the_width():
    diag, text = error(STD + "model M() {\n"
                       "  input ids: i64[B, T]\n"
                       "  x = ids -> embedding(10, 100) as emb\n"
                       "  output y = x -> MultiHeadAttention(heads=12)\n}\n")
    assert diag.code == "E0109" and "heads must divide the width (heads = 12)" in diag.message
    assert lines(diag) == [4, 5]  # where the width comes from, and the call with heads=12
    assert "x (f32[B, T, 100]) comes from here" in text and "in block MultiHeadAttention, called here" in text


def test_kv_heads_must_divide_heads():
    diag, _ = error(STD + "model M() {\n  input x: f32[B, T, 64]\n"
                    "  output y = x -> MultiHeadAttention(heads=8, kv_heads=3)\n}\n")
    assert "kv_heads must divide heads (heads = 8, kv_heads = 3)" in diag.message
    assert lines(diag) == [4]


def test_sdpa_checks_grouped_query_heads():
    diag, _ = error("model M() {\n  input q: f32[B, 8, T, 16]\n  input k: f32[B, 3, T, 16]\n"
                    "  output y = sdpa(q, k, k)\n}\n")
    assert "3 heads, which does not divide the 8 query heads" in diag.message
    assert lines(diag) == [4, 3]


def test_encoder_width_must_match_cross_attention():
    diag, text = error(STD + "model M() {\n"
                       "  input src: i64[B, S]\n"
                       "  input x: f32[B, T, 64]\n"
                       "  memory = src -> embedding(10, 32) as encoder_out\n"
                       "  output y = x -> DecoderLayer(memory, heads=4)\n}\n")
    assert "must be as wide as the queries (d = 64)" in diag.message
    assert lines(diag) == [5, 6]  # the encoder output, and the decoder layer using it
    assert "kv (f32[B, S, 32]) comes from here" in text
    assert "in block MultiHeadAttention, called here" in text and "in block DecoderLayer, called here" in text


def test_recurrent_state_shapes_are_checked():
    diag, _ = error("model M() {\n  input x: f32[B, T, 6]\n  input h0: f32[1, B, 5]\n"
                    "  y, h, c = (x, h0) -> lstm(5, 2) as rnn\n  output o = y\n}\n")
    assert "takes its initial state as h0 and c0" in diag.message
    diag, _ = error("model M() {\n  input x: f32[B, T, 6]\n  input h0: f32[1, B, 5]\n"
                    "  y, h = (x, h0) -> gru(5, 2, bidirectional=true)\n  output o = y\n}\n")
    assert "h0 is f32[1, B, 5], gru needs f32[4, B, 5]" in diag.message and lines(diag) == [4, 3]


def test_optional_tensor_inputs_of_blocks():
    ok = loads(STD + "model M() {\n  input x: f32[B, T, 16]\n"
               "  output y = x -> MultiHeadAttention(mask=none, heads=2)\n}\n")
    assert [n.target for n in ok.module.graph.nodes() if n.kind == "call"] == ["MultiHeadAttention"]
    diag, _ = error(STD + "model M() {\n  input x: f32[B, T, 16]\n"
                    "  output y = x -> MultiHeadAttention(mask=3, heads=2)\n}\n")
    assert diag.code == "E0103" and "tensor input 'mask' must be a tensor or none" in diag.message
