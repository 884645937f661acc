"""IR text round trip: print -> parse_module -> print is the identity, and the parsed graphs equal the originals."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import specc
from specc.api import loads
from specc.printer import format_graph, parse_module, print_module
from specc.symbolic import Sym, parse_dim

SPECS = Path(__file__).resolve().parent.parent / "specs"
ALL_SPECS = sorted(p.stem for p in SPECS.glob("*.nn"))


@pytest.fixture(scope="module", params=ALL_SPECS)
def module(request):
    return specc.load(SPECS / f"{request.param}.nn").module


def test_print_parse_print_is_identity(module):
    text = print_module(module)
    assert print_module(parse_module(text)) == text


def test_parsed_graphs_equal_the_originals(module):
    back = parse_module(print_module(module))
    assert back.name == module.name and back.main == module.main
    assert list(back.graphs) == list(module.graphs)
    assert {k: v[0] for k, v in back.constraints.items()} == {k: v[0] for k, v in module.constraints.items()}
    for name, g in module.graphs.items():
        h = back.graphs[name]
        assert (h.block, h.inputs, h.outputs) == (g.block, g.inputs, g.outputs)
        # nodes are frozen records: equal records mean equal op, inputs, attributes, type, span and layer
        assert h.nodes() == g.nodes(), name
        assert sorted(h.g.edges) == sorted(g.g.edges)


def test_text_without_spans_also_round_trips(module):
    text = print_module(module, spans=False)
    assert print_module(parse_module(text), spans=False) == text


def test_printing_is_deterministic():
    a = print_module(specc.load(SPECS / "resnet50.nn").module)
    b = print_module(specc.load(SPECS / "resnet50.nn").module)
    assert a == b


def test_graph_text_reads_like_the_spec():
    m = specc.load(SPECS / "lenet5.nn").module
    text = format_graph(m.graph, spans=False)
    assert "%c1: f32[B, 6, 28, 28] = op conv2d(%image) {'out_channels': 6, 'kernel_size': 5}" in text
    assert "%logits: f32[B, 10] = output(%f7)" in text


def test_symbolic_spatial_dims_round_trip_structurally():
    """Opaque dims such as (H - 1)//4 + 1 come back as the same polynomial, not one long atom."""
    src = (SPECS / "resnet50.nn").read_text().replace("f32[B, 3, 224, 224]", "f32[B, 3, H, W]")
    m = loads(src, name="resnet50_hw.nn").module
    text = print_module(m)
    # conv1 then the max pool: ((H - 1)//2 + 1 - 1)//2 + 1 is one division, and the last stage's H is (H - 1)//32 + 1
    assert "(H - 1)//4 + 1" in text and "(H - 1)//32 + 1" in text and ")//2)//2" not in text
    back = parse_module(print_module(m))
    for name, g in m.graphs.items():
        assert back.graphs[name].nodes() == g.nodes(), name


def _combine(pair_and_op):
    (a, b), op = pair_and_op
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return a // (abs(b) % 4 + 1 if isinstance(b, int) else b)


dims = st.recursive(
    st.one_of(st.integers(-3, 64), st.sampled_from(["B", "T", "H"]).map(Sym.var)),
    lambda sub: st.tuples(st.tuples(sub, sub), st.sampled_from("+-*/")).map(_combine),
    max_leaves=6)


@settings(max_examples=200, deadline=None)
@given(dims)
def test_parse_dim_inverts_printing(d):
    back = parse_dim(str(d))
    assert str(back) == str(d)
    assert back == d


def _both(pair_and_op):
    """The dim built by Sym arithmetic and, beside it, the same arithmetic on numbers."""
    ((a, fa), (b, fb)), op = pair_and_op
    if op == "+":
        return a + b, lambda env: fa(env) + fb(env)
    if op == "-":
        return a - b, lambda env: fa(env) - fb(env)
    if op == "*":
        return a * b, lambda env: fa(env) * fb(env)
    k = abs(b) % 4 + 1 if isinstance(b, int) else b if isinstance(b, Sym) and len(b.symbols()) == 1 else 3
    if isinstance(k, Sym) and str(k) not in ("B", "T", "H"):
        k = 3
    return a // k, lambda env: fa(env) // (k if isinstance(k, int) else env[str(k)])


def _leaf(v):
    return (v, lambda env: v) if isinstance(v, int) else (Sym.var(v), lambda env: env[v])


computed = st.recursive(
    st.one_of(st.integers(-3, 64), st.sampled_from(["B", "T", "H"])).map(_leaf),
    lambda sub: st.tuples(st.tuples(sub, sub), st.sampled_from("+-*/")).map(_both),
    max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(computed, st.integers(1, 60), st.integers(1, 60), st.integers(1, 60))
def test_simplified_dims_compute_what_their_arithmetic_computes(pair, b, t, h):
    """Floor divisions are simplified ((H - 2)//2 + 1 is H//2, (H//2)//2 is H//4): exactly, for any sizes."""
    d, f = pair
    env = {"B": b, "T": t, "H": h}
    value = d.subs(env) if isinstance(d, Sym) else d
    assert value == f(env), str(d)
    assert parse_dim(str(d)) == d


def test_simplified_floor_divisions_are_exact_for_every_size():
    """The chains convolution stacks build (pad 1 + 3x3 stride 2, conv1 + max pool, a division of a division, of a
    sum, of a negative), against the same arithmetic on numbers for sizes 1 to 200."""
    def conv(x, k, s, p):
        return (x + 2 * p - k) // s + 1
    cases = {
        "pad-1 stride-2 convs": lambda x: conv(conv(conv(x + 1, 3, 2, 0) + 1, 3, 2, 0) + 1, 3, 2, 0),
        "resnet stem": lambda x: conv(conv(x, 7, 2, 3), 3, 2, 1),
        "nested": lambda x: ((x // 2) // 3) // 5,
        "nested with constants": lambda x: ((x - 1) // 2 + 4) // 3 - 2,
        "sum inside": lambda x: (2 * x + 3 * (x // 2) + 7) // 2,
        "negative": lambda x: (-x - 5) // 4 + ((1 - x) // 2) // 2,
        "upsampled": lambda x: 2 * (conv(x + 1, 3, 2, 0) // 2) + 2,
        "patches": lambda x, p: conv(x, p, p, 0) * conv(x, p, p, 0) + 1,  # ViT/CLIP: (H - P)//P + 1 is H//P
        "by a product": lambda x, p: (3 * x * p - 2 * p + x + 5) // (2 * p) + (x - 2 * p) // p,
    }
    for name, f in cases.items():
        two = f.__code__.co_argcount == 2
        d = f(Sym.var("H"), Sym.var("P")) if two else f(Sym.var("H"))
        assert parse_dim(str(d)) == d, name
        for h in range(1, 121):
            for p in range(1, 10) if two else (1,):
                assert d.subs({"H": h, "P": p}) == (f(h, p) if two else f(h)), (name, str(d), h, p)
    assert str(cases["pad-1 stride-2 convs"](Sym.var("H"))) == "(H)//8"
    assert str(cases["patches"](Sym.var("H"), Sym.var("P"))) == "((H)//P)*((H)//P) + 1"


# ---- what the spec said: bound variables, hyper-parameter expressions, stack names ----------------------------

def _by_name(g):
    return {n.name: n for n in g.nodes()}


def test_nodes_keep_the_variables_the_spec_bound():
    m = specc.load(SPECS / "gpt2.nn").module
    attn = m.graphs["CausalSelfAttention"]
    items = [n for n in attn.nodes() if n.target == "getitem"]
    assert [n.var for n in items] == ["q", "k", "v"]  # q, k, v = x -> linear(3 * d) as c_attn -> split(3)
    transposes = [n for n in attn.nodes() if n.target == "transpose"]
    assert [n.var for n in transposes] == ["q", "k", "v", None]  # q = q -> reshape(...) -> transpose(1, 2)
    assert _by_name(m.graph)["lm_head"].var == "logits"
    assert _by_name(m.graphs["Block"])["add"].var == "x"


def test_attributes_keep_their_hyper_parameter_expressions():
    m = specc.load(SPECS / "gpt2.nn").module
    attn = _by_name(m.graphs["CausalSelfAttention"])
    assert dict(attn["c_attn"].exprs) == {"out_features": "3 * d"}
    assert dict(attn["reshape"].exprs) == {"shape": "(dim(x, 0), dim(x, 1), heads, d // heads)"}
    assert m.graphs["CausalSelfAttention"].lets == {"d": "features(x)"}
    main = _by_name(m.graph)
    assert dict(main["wte"].exprs) == {"num_embeddings": "vocab", "embedding_dim": "d"}  # via `layer wte = ...`
    assert dict(main["h"].exprs) == {"count": "layers"}  # repeat layers as h
    # the declared initialisation, with the expression behind a computed number (GPT-2's scaled residual init)
    assert [(p, str(i)) for p, i in main["wte"].init] == [("weight", "normal(std=0.02)")]
    proj = _by_name(m.graphs["MLP"])["c_proj"].init[0][1]
    assert proj.text == "normal(0.02 / sqrt(2 * layers))" and proj.args == (("std", 0.02 / (2 * 12) ** 0.5),)
    block = _by_name(m.graphs["Block"])
    assert dict(block["attn"].exprs) == {"heads": "heads", "dropout": "dropout"}


def test_stacks_are_named_by_as():
    src = """
    block B(x, w: int) {
      return x -> linear(w) as fc
    }
    model M(n: int = 3) {
      input x: f32[N, 8]
      for w in [8, 8] as layer {
        x = x -> B(w) -> B(w)
      }
      repeat n as h {
        x = x -> linear(8) as fc
      }
      repeat n as g[i] {
        if i == 0 {
          x = x -> linear(16) as wide
        } else {
          x = x -> linear(16) as fc
        }
      }
      output y = x
    }"""
    m = loads(src, name="stacks.nn").module
    nodes = m.graph.nodes()
    assert [n.stack for n in nodes if n.kind == "call"] == ["layer1", "layer1", "layer2", "layer2"]
    reps = [n for n in nodes if n.kind == "repeat"]
    assert reps[0].name == "h" and reps[0].stack is None  # one folded run: the ModuleList is h itself
    assert [(r.attrs.count, r.stack) for r in reps[1:]] == [(1, "g"), (2, "g")]  # two runs, one stack g
    back = parse_module(print_module(m))
    assert back.graph.nodes() == m.graph.nodes()


@pytest.mark.parametrize("text", [
    "3 * d", "(h - 1) // 2 + 1", "-x ** 2", "(-x) ** 2", "2 ** 3 ** 2", "(2 ** 3) ** 2", "a - (b - c)", "a - b - c",
    "not (a and b) or c", "f(x, k=2)[0]", "xs[1:]", "xs[::2]", "(1,)", "[1, 2.5, \"a\\\"b\", none, true]",
    "x.shape[-1]", "dim(x, 0) * heads",
])
def test_unparse_reads_back_as_the_same_expression(text):
    from specc import ast as A
    from specc.parse import parse

    def expr_of(t):
        prog = parse(f"model M() {{\n  v = {t}\n}}")
        return prog.defs[0].body[0].value

    e = expr_of(text)
    assert A.unparse(e) == text
    assert A.unparse(expr_of(A.unparse(e))) == text
