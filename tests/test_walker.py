"""The IR walker base (specc/walker.py): the example of its docstring works, and the base's repeat loop visits what
the model runs (carried values flow, captured values are passed to every iteration)."""
from __future__ import annotations

import pytest
from torch_util import REPO

import specc
from specc.api import loads
from specc.naming import attribute_names
from specc.ops import registry
from specc.walker import Interpreter


class OpPaths(Interpreter):
    """The docstring's example: the module path of every op node, as the emitted PyTorch module names it."""

    def __init__(self, module):
        super().__init__(module)
        self.paths = []

    def op(self, g, n, ins, prefix):
        self.paths.append(prefix + attribute_names(g).get(n.layer or n.name, n.name))

    def call_context(self, g, n, prefix):
        return f"{prefix}{attribute_names(g)[n.layer or n.name]}."

    def iteration_context(self, g, n, i, prefix):
        return f"{prefix}{attribute_names(g)[n.layer or n.name]}.{i}."


class Trace(Interpreter):
    """Values are the list of op names that produced them, so what flows where is visible."""

    def input(self, g, n, arg, ctx):
        return arg if arg is not None else [n.name]

    def op(self, g, n, ins, ctx):
        return [x for v in ins for x in v] + [n.target]


@pytest.mark.parametrize("name", ["resnet18", "gpt2"])
def test_op_paths_are_the_emitted_modules_with_parameters(name):
    torch = pytest.importorskip("torch")
    spec = specc.load(REPO / "specs" / f"{name}.nn")
    m = spec.module
    walker = OpPaths(m)
    walker.run_graph(m.graph, [None] * len(m.graph.inputs), "")
    with_params = set()
    for _, n, g, _ in m.walk():
        if n.kind == "op" and registry.get(n.target).param_shapes([g[i].type for i in n.inputs], n.attrs):
            with_params.add(n.name)
    model = spec.to_torch(opt_level=0)
    owners = {mod for mod, sub in model.named_modules() if any(True for _ in sub.parameters(recurse=False))}
    # every emitted module that owns parameters is an op path the walker produced
    assert owners <= set(walker.paths), sorted(owners - set(walker.paths))[:5]
    assert isinstance(model, torch.nn.Module)


def test_repeat_loop_visits_every_iteration_and_threads_carried_values():
    m = loads("""
model M(n: int = 3) {
  input x: f32[B, 8]
  input y: f32[B, 8]
  repeat n {
    x = x -> linear(8) -> add(y)
  }
  output out = x
}
""").module
    ops = []

    class Count(Trace):
        def op(self, g, n, ins, ctx):
            ops.append(n.target)
            return super().op(g, n, ins, ctx)

    (out,) = Count(m).run_graph(m.graph, [None, None], None)
    assert ops == ["linear", "add"] * 3  # the folded body runs count times
    # the carried value went through all three iterations; the captured `y` reached each add
    assert out == ["x"] + ["linear", "y", "add"] * 3
