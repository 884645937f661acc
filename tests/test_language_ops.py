"""The ops added for issue 14 (transposed/3-D conv, resampling, padding, activations, group/instance norm, drop-path,
max/min/where, learned parameters): every registry example checks, builds in PyTorch with the shape the IR predicts,
matches the op's NumPy reference (weights copied from the emitted module) and, in one TVM build of all examples,
matches PyTorch."""
from __future__ import annotations

import numpy as np
import pytest

from specc.api import loads
from specc.ops import all_ops

torch = pytest.importorskip("torch")

NEW_OPS = [
    "conv_transpose1d", "conv_transpose2d", "conv3d", "maxpool3d", "avgpool3d",
    "upsample", "pixel_shuffle", "pixel_unshuffle", "pad",
    "relu6", "hardtanh", "clamp", "hardswish", "hardsigmoid", "elu", "softplus", "mish", "glu",
    "groupnorm", "instancenorm", "drop_path", "maximum", "minimum", "where", "masked_fill", "parameter", "sincos",
    "timestep_embedding",
]


def spec_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, (tuple, list)):
        return "(" + ", ".join(spec_value(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    return repr(v)


def example_line(op: str, ex, k: int, prefix: str = "") -> tuple[list[str], str]:
    """Input declarations and the output line of example `ex` of `op`; inputs are named {prefix}x0, x1, ..."""
    names = [f"{prefix}x{i}" for i in range(len(ex.inputs))]
    # a model needs an input: ops without tensor inputs get an unused one
    decls = [f"  input {n}: {t}" for n, t in zip(names, ex.inputs)] or [f"  input {prefix}unused: f32[1]"]
    args = ", ".join(f"{key}={spec_value(v)}" for key, v in ex.attrs.items())
    src = names[0] if len(names) == 1 else f"({', '.join(names)})"  # () for ops without tensor inputs
    return decls, f"  output {prefix}y = {src} -> {op}({args}) as {prefix}l{k}"


def examples():
    for name in NEW_OPS:
        op = all_ops()[name]
        assert op.examples, f"{name} has no example"
        for k, ex in enumerate(op.examples):
            yield pytest.param(name, k, ex, id=f"{name}-{k}")


def random_input(t, gen):
    shape = [int(d) for d in t.shape]
    if t.dtype == "bool":
        return torch.rand(shape, generator=gen) < 0.5
    if t.dtype == "i64":
        return torch.randint(0, 1000, shape, generator=gen)
    return torch.randn(shape, generator=gen)


def build(op: str, k: int, ex):
    decls, out = example_line(op, ex, k)
    spec = loads("model M() {\n" + "\n".join(decls) + "\n" + out + "\n}\n", "t.nn")
    torch.manual_seed(0)
    model = spec.to_torch().eval()
    gen = torch.Generator().manual_seed(1)
    g = spec.module.graph
    xs = [random_input(g[i].type, gen) for i in g.inputs]
    return spec, model, xs


@pytest.mark.parametrize("op,k,ex", list(examples()))
def test_example_matches_shape_params_and_reference(op, k, ex):
    spec, model, xs = build(op, k, ex)
    with torch.no_grad():
        y = model(*xs)
    (out,) = spec.module.graph.outputs
    y = y.detach()
    assert tuple(y.shape) == tuple(int(d) for d in spec.module.graph[out].type.shape)
    state = {n.split(".", 1)[1]: v.numpy() for n, v in model.state_dict().items()}
    assert spec.params == sum(p.numel() for p in model.parameters())
    opdef = all_ops()[op]
    node = spec.module.graph[spec.module.graph[out].inputs[0]]
    want = opdef.numpy([x.numpy() for x in xs][:len(ex.inputs)], node.attrs, state)
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-4, atol=1e-5)


def test_drop_path_is_per_sample_scaled_and_training_only():
    spec = loads("model M() {\n  input x: f32[64, 3, 4]\n  output y = x -> drop_path(0.25)\n}\n", "t.nn")
    model = spec.to_torch()
    x = torch.ones(64, 3, 4)
    assert torch.equal(model.eval()(x), x)
    torch.manual_seed(0)
    y = model.train()(x)
    per_sample = y.flatten(1)
    kept = per_sample[:, 0] != 0
    # each sample is either dropped whole or kept whole and scaled by 1 / (1 - p)
    assert torch.all((per_sample == 0).all(1) | (per_sample == 1 / 0.75).all(1))
    assert 0 < kept.sum() < 64


@pytest.mark.tvm
def test_tvm_matches_pytorch_on_every_example():
    pytest.importorskip("tvm")
    decls, outs = [], []
    cases = [(op, k, ex) for op, k, ex in (p.values for p in examples()) if op != "drop_path"]
    for j, (op, k, ex) in enumerate(cases):
        d, o = example_line(op, ex, k, prefix=f"c{j}_")
        decls += d
        outs.append(o)
    spec = loads("model M() {\n" + "\n".join(decls + outs) + "\n}\n", "t.nn")
    torch.manual_seed(0)
    model = spec.to_torch().eval()
    gen = torch.Generator().manual_seed(1)
    g = spec.module.graph
    xs = [random_input(g[i].type, gen) for i in g.inputs]
    with torch.no_grad():
        want = model(*xs)
    got = spec.to_tvm(weights=model)(*[x.numpy() for x in xs])
    for (op, _, _), w, o in zip(cases, want, got):
        np.testing.assert_allclose(np.asarray(o), w.detach().numpy(), rtol=1e-4, atol=1e-4, err_msg=op)


def test_layernorm_over_the_channels_of_a_conv_map():
    text = ("model M() {\n  input x: f32[B, 8, H, W]\n"
            "  output y = x -> conv2d(6, 3, padding=1) as conv -> layernorm(dim=1, eps=1e-6) as norm\n}\n")
    spec = loads(text, "t.nn")
    assert spec.params == 8 * 6 * 9 + 6 + 2 * 6
    model = spec.to_torch().eval()
    with torch.no_grad():
        model.norm.weight.normal_()
        model.norm.bias.normal_()
        x = torch.randn(2, 8, 5, 7)
        want = torch.nn.functional.layer_norm(model.conv(x).permute(0, 2, 3, 1), (6,), model.norm.weight,
                                              model.norm.bias, 1e-6).permute(0, 3, 1, 2)
        torch.testing.assert_close(model(x), want)
    assert "LayerNormDim" in spec.torch_source()
    # the last dim keeps the plain nn.LayerNorm and no helper class
    plain = loads("model M() {\n  input x: f32[B, 8]\n  output y = x -> layernorm as norm\n}\n", "t.nn")
    assert "LayerNormDim" not in plain.torch_source()


LAYER_SCALE = """model M(d: int = 6) {
  input x: f32[B, d, H, W]
  input s: f32[B, 5, 8]
  param gamma: f32[d, 1, 1] = constant(0.5)
  buffer frozen: f32[5, 8] = normal(1.0)
  layer query = parameter(2, 8, init="zeros")
  param pos: f32[5, 8] = sincos("halves")
  output y = x + (x -> conv2d(d, 3, padding=1, groups=d) as dw) * gamma
  output z = s + frozen + sincos(5, 8, layout="halves") + query()[1] - pos
}
"""


def test_parameters_and_buffers_are_declarations_usable_in_expressions():
    spec = loads(LAYER_SCALE, "t.nn")
    # gamma (6) + query (16) + pos (40) + the conv (6*9 + 6); frozen and the sin/cos table are buffers
    assert spec.params == 6 + 16 + 40 + 60
    model = spec.to_torch().eval()
    assert {n for n, _ in model.named_parameters()} == {"gamma.weight", "query.weight", "pos.weight", "dw.weight",
                                                        "dw.bias"}
    assert "frozen.weight" in dict(model.named_buffers())
    torch.testing.assert_close(model.gamma.weight, torch.full((6, 1, 1), 0.5))
    x, s = torch.randn(2, 6, 4, 5), torch.randn(2, 5, 8)
    t = torch.arange(5.0)[:, None] * torch.exp(torch.arange(0, 8, 2) * (-np.log(10000.0) / 8))
    table = torch.cat([t.sin(), t.cos()], 1)  # halves: all sines, then all cosines
    with torch.no_grad():
        y, z = model(x, s)
        torch.testing.assert_close(y, x + model.dw(x) * 0.5)
        torch.testing.assert_close(model.pos.weight, table)  # a sincos-initialised parameter
        torch.testing.assert_close(z, s + model.frozen.weight + table + model.query.weight[1] - table)


def test_sincos_layouts_interleave_or_concatenate():
    from specc.ops.param import sincos_table

    inter, halves = sincos_table(4, 6), sincos_table(4, 6, "halves")
    np.testing.assert_array_equal(inter[:, 0::2], halves[:, :3])
    np.testing.assert_array_equal(inter[:, 1::2], halves[:, 3:])
    np.testing.assert_allclose(halves[3, 0], np.sin(3.0), rtol=1e-6)


def test_a_bad_parameter_init_is_a_located_error():
    from specc.api import CheckError

    with pytest.raises(CheckError) as err:
        loads("model M() {\n  input x: f32[2]\n  param g: f32[2] = x + 1\n  output y = x * g\n}\n", "t.nn")
    assert "t.nn:3:21" in err.value.render() and "init" in err.value.render()


@pytest.mark.tvm
def test_parameters_lower_to_tvm():
    pytest.importorskip("tvm")
    spec = loads(LAYER_SCALE, "t.nn")
    torch.manual_seed(0)
    model = spec.to_torch().eval()
    x, s = torch.randn(2, 6, 4, 5), torch.randn(2, 5, 8)
    with torch.no_grad():
        want = model(x, s)
    got = spec.to_tvm(weights=model)(x.numpy(), s.numpy())
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), w.detach().numpy(), rtol=1e-5, atol=1e-5)


def test_specc_ops_lists_every_argument_and_shows_one_op_with_a_working_example(capsys):
    from specc.cli import main

    assert main(["ops"]) == 0
    listing = capsys.readouterr().out
    line = next(ln for ln in listing.splitlines() if ln.startswith("conv2d("))
    for arg in ("out_channels: int", "groups: int = 1", "bias: bool = true", "dilation: int | (int, ...) = 1"):
        assert arg in line
    assert main(["ops", "upsample"]) == 0
    shown = capsys.readouterr().out
    assert 'mode: "nearest" | "bilinear" = "nearest"' in shown
    # the example it prints is a valid spec body
    body = shown.split("example:\n", 1)[1]
    spec = loads("model M() {\n" + body.replace("  y = ", "  output y = ") + "}\n", "t.nn")
    assert spec.module.graph.outputs
    assert main(["ops", "convtranspose2d"]) == 2
    assert "did you mean 'conv_transpose2d'" in capsys.readouterr().err


def test_the_issue_snippets_for_a_layer_scale_check_and_name_the_parameter():
    # `gamma = parameter(d, 1, 1)` and `param g: f32[8, 1, 1]` were both errors before
    text = ("model M(d: int = 8) {\n  input x: f32[B, d, 4, 4]\n  gamma = parameter(d, 1, 1, init=\"constant\", "
            "value=1e-6)\n  param g: f32[8, 1, 1] = ones\n  output y = x * gamma + x * g\n}\n")
    spec = loads(text, "t.nn")
    model = spec.to_torch()
    assert set(model.state_dict()) == {"gamma.weight", "g.weight"} and spec.params == 16
    x = torch.randn(2, 8, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(model(x), x * 1e-6 + x)
