"""The spec language, construct by construct: what the parser builds (AST) and what elaboration makes of it (IR)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import specc
from specc import ast as A
from specc.api import CheckError, loads
from specc.parse import parse
from specc.types import TupleType

REPO = Path(__file__).resolve().parent.parent


def spec(src: str, **overrides):
    return loads(src, name="t.nn", **overrides)


def expr(text: str):
    """The AST of one expression."""
    return parse(f"model M() {{ v = {text} }}").defs[0].body[0].value


def types(s) -> dict[str, str]:
    """Output name -> printed type of a model's outputs."""
    g = s.graph
    return {o: str(g[o].type) for o in g.outputs}


def ops(s, graph: str | None = None) -> list[str]:
    g = s.module.graphs[graph] if graph else s.graph
    return [n.target for n in g.nodes() if n.kind == "op"]


# ---- definitions ------------------------------------------------------------------------------------------------

def test_model_and_block_with_typed_params_and_defaults():
    prog = parse("""
        block Proj(x, width: int, act: str = "relu", scale: float = 0.5,) { return x }
        model M(d: int = 8, name: str = "m") { input x: f32[B, 4]  output y = x }
    """)
    block, model = prog.defs
    assert (block.kind, block.name, model.kind, model.name) == ("block", "Proj", "model", "M")
    x, width, act, scale = block.params
    assert x.is_tensor and x.type is None and x.default is None
    assert (width.type, width.default, width.is_tensor) == ("int", None, False)
    assert (act.type, act.default.value) == ("str", "relu")
    assert scale.default.value == 0.5
    assert [p.name for p in model.params] == ["d", "name"]


def test_block_defaults_apply_and_are_overridable_by_keyword():
    s = spec("""
        block Proj(x, width: int = 16, bias: bool = true) { return x -> linear(width, bias=bias) }
        model M() {
          input x: f32[B, 4]
          output a = x -> Proj
          output b = x -> Proj(8)
          output c = x -> Proj(bias=false, width=2)
        }""")
    assert types(s) == {"a": "f32[B, 16]", "b": "f32[B, 8]", "c": "f32[B, 2]"}
    assert s.params == (4 * 16 + 16) + (4 * 8 + 8) + 4 * 2


def test_model_hyper_parameters_feed_layers():
    s = spec("model M(d: int = 8) { input x: f32[B, 4]  output y = x -> linear(d) }")
    assert types(s) == {"y": "f32[B, 8]"}
    assert s.module.hparams == {"d": 8}


# ---- compile-time arithmetic and control flow -------------------------------------------------------------------

def test_arithmetic_precedence_in_the_ast():
    e = expr("1 + 2 * 3 // 4 % 5 - -6")
    # ((1 + ((2 * 3) // 4) % 5) - (-6)): * // % bind tighter than + -, left-associative
    assert isinstance(e, A.BinOp) and e.op == "-"
    assert isinstance(e.right, A.Unary) and e.right.op == "-"
    add = e.left
    assert add.op == "+" and add.left.value == 1
    mod = add.right
    assert mod.op == "%" and mod.right.value == 5
    assert mod.left.op == "//" and mod.left.left.op == "*"
    pw = expr("2 ** 3 ** 2")
    assert pw.op == "**" and pw.right.op == "**"  # right-associative
    cmp = expr("a + 1 <= b and not c or d")
    assert cmp.op == "or" and cmp.left.op == "and" and isinstance(cmp.left.right, A.Unary)


def test_compile_time_arithmetic_values():
    s = spec("""
        model M(d: int = 64, heads: int = 12) {
          assert (7 // 2, 7 % 3, -7 // 2, 2 ** 10, 7 / 2, 3 - 5) == (3, 1, -4, 1024, 3.5, -2)
          assert d // heads == 5 and d % heads == 4
          assert [1, 2] + [3] == [1, 2, 3] and len([0] * 3) == 3 and max(2, 9, 4) == 9 and min([3, 1]) == 1
          assert range(1, 7, 2) == [1, 3, 5] and int(3.9) == 3 and float(2) == 2.0
          input x: f32[B, 4]
          output y = x -> linear(d // heads * 2 + d % heads)
        }""")
    assert types(s) == {"y": "f32[B, 14]"}


@pytest.mark.parametrize("mode, expected", [("relu", ["linear", "relu"]), ("gelu", ["linear", "gelu"]),
                                            ("none", ["linear"])])
def test_if_elif_else(mode, expected):
    s = spec("""
        model M(act: str = "relu") {
          input x: f32[B, 4]
          x = x -> linear(4)
          if act == "relu" {
            x = x -> relu
          } elif act == "gelu" {
            x = x -> gelu
          } else {
            x = x
          }
          output y = x
        }""", act=mode)
    assert ops(s) == expected


def test_for_with_tuple_unpacking_both_spellings():
    prog = parse("model M() { for (a, b) in [(1, 2)] { } for a, b in [(1, 2)] { } for w in [1] { } }")
    f1, f2, f3 = prog.defs[0].body
    assert f1.targets == f2.targets == ("a", "b") and f1.unpack and f2.unpack
    assert f3.targets == ("w",) and not f3.unpack
    s = spec("""
        model M() {
          input x: f32[B, 3, 16, 16]
          for (width, stride) in [(8, 1), (16, 2)] {
            x = x -> conv2d(width, 3, stride=stride, padding=1)
          }
          for w, k in [(4, 1)] {
            x = x -> conv2d(w, k)
          }
          output y = x
        }""")
    assert types(s) == {"y": "f32[B, 4, 8, 8]"}


def test_repeat_with_index_and_if_folds_equal_iterations():
    s = spec("""
        model M(n: int = 5) {
          input x: f32[B, 8]
          repeat n as layers[i] {
            if i == 0 {
              x = x -> linear(16) as widen
            } else {
              x = x -> linear(16) -> relu
            }
          }
          output y = x
        }""")
    reps = [n for n in s.graph.nodes() if n.kind == "repeat"]
    assert [r.attrs.count for r in reps] == [1, 4]  # iteration 0, then four identical ones: folded, not unrolled
    assert ops(s, reps[0].target) == ["linear"]
    assert ops(s, reps[1].target) == ["linear", "relu"]
    assert s.params == (8 * 16 + 16) + 4 * (16 * 16 + 16)
    assert len(s.module.graphs) == 3


def test_repeat_without_index_and_zero_times():
    s = spec("model M(n: int = 3) { input x: f32[B, 8]  repeat n { x = x -> linear(8) }  output y = x }")
    (rep,) = [n for n in s.graph.nodes() if n.kind == "repeat"]
    assert rep.attrs.count == 3 and s.params == 3 * 72
    s0 = spec("model M(n: int = 3) { input x: f32[B, 8]  repeat n { x = x -> linear(8) }  output y = x }", n=0)
    assert s0.params == 0 and types(s0) == {"y": "f32[B, 8]"}


def test_huge_repeat_is_folded_not_iterated():
    s = spec("model M() { input x: f32[B, 8]  repeat 1000000000 { x = x -> relu }  output y = x }")
    (rep,) = [n for n in s.graph.nodes() if n.kind == "repeat"]
    assert rep.attrs.count == 10**9


# ---- imports ----------------------------------------------------------------------------------------------------

def test_import_from_the_standard_library():
    prog = parse('import "std/resnet.nn"\nmodel M() { }')
    assert [i.path for i in prog.imports] == ["std/resnet.nn"]
    s = spec("""
        import "std/resnet.nn"
        model M() {
          input x: f32[B, 8, 16, 16]
          output y = x -> BasicBlock(16, stride=2) -> Bottleneck(4)
        }""")
    assert types(s) == {"y": "f32[B, 16, 8, 8]"}


def test_import_relative_to_the_importing_file(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "blocks.nn").write_text('import "more.nn"\nblock Twice(x) { return x -> Once -> Once }\n')
    (tmp_path / "lib" / "more.nn").write_text("block Once(x) { return x -> relu }\n")
    (tmp_path / "m.nn").write_text('import "lib/blocks.nn"\nmodel M() { input x: f32[B, 4]  output y = x -> Twice }\n')
    s = specc.load(tmp_path / "m.nn")
    assert [g.block for g in s.module.graphs.values()] == ["Once", "Twice", "M"]


def test_diamond_import_loads_each_file_once(tmp_path):
    (tmp_path / "base.nn").write_text("block Base(x) { return x -> relu }\n")
    (tmp_path / "a.nn").write_text('import "base.nn"\nblock A(x) { return x -> Base }\n')
    (tmp_path / "b.nn").write_text('import "base.nn"\nblock B2(x) { return x -> Base }\n')
    (tmp_path / "m.nn").write_text('import "a.nn"\nimport "b.nn"\n'
                                   "model M() { input x: f32[B, 4]  output y = x -> A -> B2 }\n")
    assert specc.load(tmp_path / "m.nn").name == "M"


# ---- inputs, outputs, symbolic dims -----------------------------------------------------------------------------

def test_symbolic_dims_and_where_bounds():
    prog = parse("model M(ctx: int = 128) { input ids: f32[B, T, 8] where T <= ctx, B < 64 }")
    inp = prog.defs[0].body[0]
    assert [d.value for d in inp.dims] == ["B", "T", 8]
    assert [(c.sym, c.op) for c in inp.constraints] == [("T", "<="), ("B", "<")]
    s = spec("""
        model M(ctx: int = 128) {
          input ids: f32[B, T, 8] where T <= ctx, B < 64
          input bias: f32[T, 1]
          output y = ids -> linear(4)
          output z = ids + bias
        }""")
    assert types(s) == {"y": "f32[B, T, 4]", "z": "f32[B, T, 8]"}
    assert {k: v[0] for k, v in s.module.constraints.items()} == {"T": 128, "B": 63}
    assert s.module.constraints["T"][1].line == 3


def test_symbolic_dims_flow_through_arithmetic():
    s = spec("""
        model M() {
          input x: f32[B, 3, H, W]
          output y = x -> conv2d(4, 3, stride=2, padding=1) -> flatten
        }""")
    (y,) = types(s).values()
    assert y.startswith("f32[B, ") and "H" in y and "W" in y


def test_several_inputs_and_outputs():
    s = spec("""
        model M() {
          input a: f32[B, 4]
          input b: i64[B]
          input c: f32[B, 4]
          output sum = a + c
          output diff = a - c
          output a
        }""")
    assert s.graph.inputs == ["a", "b", "c"]
    assert s.graph.outputs[:2] == ["sum", "diff"]  # an op's automatic name never takes an output's name
    assert len(s.graph.outputs) == 3  # (re-exporting input `a` needs a second node name)
    assert str(s.graph["b"].type) == "i64[B]"


def test_tuple_returns_and_unpacking():
    s = spec("""
        block Halves(x) {
          a, b = x -> split(2, dim=-1)
          return a -> relu, b
        }
        model M() {
          input x: f32[B, 8]
          lo, hi = x -> Halves
          pair = x -> Halves
          first = pair[0]
          output y = lo * hi + first
        }""")
    call = s.graph["halves"]
    assert isinstance(call.type, TupleType) and str(call.type) == "(f32[B, 4], f32[B, 4])"
    assert types(s) == {"y": "f32[B, 4]"}


# ---- op calls and chains ----------------------------------------------------------------------------------------

def test_op_call_positional_and_keyword_arguments():
    call = expr("conv2d(x, 8, 3, stride=2, padding=1)")
    assert isinstance(call, A.Call) and call.func.id == "conv2d"
    assert [a.name for a in call.args] == [None, None, None, "stride", "padding"]
    s = spec("model M() { input x: f32[B, 3, 8, 8]  output y = conv2d(x, 8, 3, stride=2, padding=1, bias=false) }")
    node = s.graph.nodes()[1]
    assert (node.target, node.attrs.out_channels, node.attrs.kernel_size, node.attrs.stride, node.attrs.padding,
            node.attrs.bias) == ("conv2d", 8, 3, 2, 1, False)
    assert types(s) == {"y": "f32[B, 8, 4, 4]"}


def test_chain_is_left_associative_with_as_names():
    e = expr("x -> linear(4) as fc1 -> relu -> linear(2) as fc2")
    assert isinstance(e, A.Chain) and e.link.func == "linear" and e.link.alias == "fc2"
    assert e.left.link.func == "relu" and e.left.link.args is None
    assert e.left.left.link.alias == "fc1" and isinstance(e.left.left.left, A.Name)
    s = spec("""
        model M() {
          input x: f32[B, 8]
          output y = x -> linear(4) as fc1 -> relu
                       -> linear(2) as fc2    # a chain may continue on the next line
        }""")
    assert [n.name for n in s.graph.nodes()] == ["x", "fc1", "relu", "fc2", "y"]


def test_chain_feeds_tuples_as_several_inputs():
    s = spec("""
        model M() {
          input a: f32[B, 4]
          input b: f32[B, 6]
          output y = (a, b) -> concat(dim=1)
        }""")
    assert types(s) == {"y": "f32[B, 10]"}


def test_long_chain_does_not_hit_the_recursion_limit():
    links = " ".join("-> relu" for _ in range(3000))
    s = spec(f"model M() {{ input x: f32[B, 4]  output y = x {links} }}")
    assert len(s.graph) == 3002


# ---- tensor arithmetic ------------------------------------------------------------------------------------------

def test_elementwise_arithmetic_broadcasts():
    s = spec("""
        model M() {
          input x: f32[B, 1, 8]
          input w: f32[4, 1]
          output add = x + w
          output sub = x - w
          output mul = w * x
          output div = x / w
          output scaled = 2 * x - 1
          output neg = -x
        }""")
    assert types(s) == {"add": "f32[B, 4, 8]", "sub": "f32[B, 4, 8]", "mul": "f32[B, 4, 8]",
                        "div": "f32[B, 4, 8]", "scaled": "f32[B, 1, 8]", "neg": "f32[B, 1, 8]"}
    scalar_ops = [(n.target, n.attrs.scalar, n.attrs.reverse) for n in s.graph.nodes()
                  if n.kind == "op" and getattr(n.attrs, "scalar", None) is not None]
    assert scalar_ops == [("mul", 2, True), ("sub", 1, False)]


def test_matmul():
    s = spec("""
        model M() {
          input q: f32[B, H, T, 16]
          input w: f32[16, 32]
          output y = q @ w
          output att = q @ q.T
        }""")
    assert types(s) == {"y": "f32[B, H, T, 32]", "att": "f32[B, H, T, T]"}


def test_slicing():
    idx = expr("x[:, 0, ..., 1:3, ::2]")
    assert isinstance(idx, A.Index) and len(idx.items) == 5
    assert isinstance(idx.items[0], A.SliceExpr) and idx.items[1].value == 0 and idx.items[2].value is Ellipsis
    s = spec("""
        model M() {
          input x: f32[B, T, 8]
          output first = x[:, 0]
          output mid = x[..., 1:3]
          output last = x[:, -1, :]
          output even = x[:, :, ::2]
          output tail = x[:, 1:]
          output lead = x[:, :4]
        }""")
    assert types(s) == {"first": "f32[B, 8]", "mid": "f32[B, T, 2]", "last": "f32[B, 8]", "even": "f32[B, T, 4]",
                        "tail": "f32[B, T - 1, 8]", "lead": "f32[B, 4, 8]"}


def test_concat_split_reshape_permute():
    s = spec("""
        model M(heads: int = 4) {
          input x: f32[B, T, 32]
          input y: f32[B, T, 16]
          c = concat(x, y, dim=-1)
          a, b, d = c -> split(3)
          p, q = x -> split((8, 24), dim=2)
          h = x -> reshape(B, T, heads, 32 // heads) -> permute(0, 2, 1, 3)
          output c
          output a
          output q
          output h
          output back = h -> permute(0, 2, 1, 3) -> reshape(B, T, -1)
          output flat = x -> flatten
        }""")
    assert types(s) == {"c": "f32[B, T, 48]", "a": "f32[B, T, 16]", "q": "f32[B, T, 24]",
                        "h": "f32[B, 4, T, 8]", "back": "f32[B, T, 32]", "flat": "f32[B, 32*T]"}


# ---- shared layers and tied weights ------------------------------------------------------------------------------

def test_shared_layer_applied_twice_counts_once():
    prog = parse("model M() { layer fc = linear(8, bias=false) }")
    (stmt,) = prog.defs[0].body
    assert isinstance(stmt, A.LayerStmt) and stmt.name == "fc" and stmt.link.func == "linear"
    s = spec("""
        model M() {
          input x: f32[B, 8]
          layer fc = linear(8)
          output y = x -> fc -> relu -> fc
        }""")
    uses = [n for n in s.graph.nodes() if n.target == "linear"]
    assert [n.layer for n in uses] == ["fc", "fc"] and uses[0].name == "fc"
    assert s.params == 8 * 8 + 8
    assert sum(r.params for r in s.summary().rows) == s.params


def test_tied_weight_counts_once():
    s = spec("""
        model M(vocab: int = 100, d: int = 16) {
          input ids: i64[B, T]
          layer wte = embedding(vocab, d)
          h = ids -> wte -> layernorm
          output logits = h -> linear(vocab, bias=false, tie=wte) as head
        }""")
    assert s.graph["head"].attrs.tie == "wte"
    assert s.params == 100 * 16 + 2 * 16  # embedding + layernorm; the head reuses the embedding's weight
    untied = spec("""
        model M() {
          input ids: i64[B, T]
          output logits = ids -> embedding(100, 16) -> layernorm -> linear(100, bias=false)
        }""")
    assert untied.params == s.params + 100 * 16


# ---- lexical details --------------------------------------------------------------------------------------------

def test_comments_whitespace_and_trailing_commas():
    s = spec("""
        # a comment on its own line
        model M(d: int = 4,) {   # after a header
          input x: f32[B, 4]     # trailing commas are fine in lists of arguments
          # inside a body
          output y = x -> linear(d, bias=false,) # after a statement
        }
        # at the end""")
    assert types(s) == {"y": "f32[B, 4]"}


def test_literals():
    e = expr('[1_000, 2.5, 1e-3, "a\\"b", true, false, none, (1,), ()]')
    assert [i.value if isinstance(i, A.Lit) else type(i).__name__ for i in e.items] == \
        [1000, 2.5, 0.001, 'a"b', True, False, None, "TupleLit", "TupleLit"]


def test_every_node_has_a_span():
    prog = parse("model M() {\n  input x: f32[B, 4]\n  output y = x -> relu\n}")
    out = prog.defs[0].body[1]
    assert (out.span.line, out.span.col) == (3, 3)
    assert (out.value.link.func_span.line, out.value.link.func_span.col) == (3, 19)


# ---- overrides ---------------------------------------------------------------------------------------------------

def test_overrides_in_the_python_api():
    s = specc.load(REPO / "specs" / "lenet5.nn", classes=3)
    assert s.module.hparams == {"classes": 3}
    assert types(s) == {"logits": "f32[B, 3]"}
    assert s.params == 61_706 - 84 * 7 - 7
    s = specc.load(REPO / "specs" / "resnet50.nn", overrides={"depths": [1, 1, 1, 1], "classes": 10})
    assert types(s) == {"logits": "f32[B, 10]"}


def test_override_of_an_unknown_hyper_parameter_is_reported():
    with pytest.raises(CheckError) as e:
        specc.load(REPO / "specs" / "lenet5.nn", clases=3)
    assert [d.code for d in e.value.diagnostics] == ["E0110"]


def test_overrides_on_the_command_line():
    out = subprocess.run([sys.executable, "-m", "specc", "inspect", "specs/cifar_cnn.nn", "-D", "classes=3",
                          "-D", "hidden=64", "--format", "json"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["outputs"] == {"logits": "f32[B, 3]"}
    assert info["params"] == 1792 + 73856 + (8192 * 64 + 64) + (64 * 3 + 3)


def test_model_selection_when_a_file_has_several():
    src = "model A() { input x: f32[B, 4]  output y = x }\nmodel Bee() { input x: f32[B, 4]  output y = x -> relu }"
    assert loads(src).name == "A"
    assert loads(src, model="Bee").name == "Bee"
