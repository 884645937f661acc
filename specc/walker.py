"""One walker over the IR, specialised by every pass over a whole model (torch.fx ``Interpreter`` style).

``Interpreter.run_graph(g, args, ctx)`` visits the nodes of graph ``g`` in their stable topological order, keeps an
environment from node name to value, and dispatches on node kind to one method per kind. The values are whatever
the subclass computes (Relax expressions, torch tensors, names of flat nodes, DOT node ids...); ``ctx`` is whatever
the subclass needs to know where it is (a module path, the nn.Module that owns the graph...). The walker itself
knows only the IR's structure:

* ``call`` runs the callee graph on the call's inputs, in ``call_context(...)``, and packs its outputs;
* ``repeat`` runs the body ``count`` times: the first ``carried`` inputs flow from one iteration into the next,
  the rest (captured values) are passed unchanged to every iteration; iteration ``i`` runs in
  ``iteration_context(..., i)``. The body is the graph the emitted ``nn.ModuleList`` holds (``repeat_body``: a body
  that only calls one block is that block), so module paths agree with the PyTorch state_dict.

Specialising it: override ``op`` (required), and any of ``input``, ``output``, ``call``, ``repeat``, ``iteration``,
``call_context``, ``iteration_context``, ``pack``, ``repeat_body``. For example, the qualified name of every op node
as the emitted PyTorch module names it (``layers.0.attn.q_proj``)::

    from specc.naming import attribute_names

    class OpPaths(Interpreter):
        def __init__(self, module):
            super().__init__(module)
            self.paths = []

        def op(self, g, n, ins, prefix):
            self.paths.append(prefix + attribute_names(g).get(n.layer or n.name, n.name))

        def call_context(self, g, n, prefix):
            return f"{prefix}{attribute_names(g)[n.layer or n.name]}."

        def iteration_context(self, g, n, i, prefix):
            return f"{prefix}{attribute_names(g)[n.layer or n.name]}.{i}."

    walker = OpPaths(module)
    walker.run_graph(module.graph, [None] * len(module.graph.inputs), "")

A subclass that wraps a kind (draw a cluster around a call, say) overrides the method and calls ``super()``.
"""
from __future__ import annotations

from typing import Any, Generic, TypeVar

from .ir import Graph, Module, Node
from .naming import repeat_body

V = TypeVar("V")  # the values the walk computes
C = TypeVar("C")  # where the walk is (a path, an owning module...)


class Interpreter(Generic[V, C]):
    """Runs graphs of an IR module node by node; see the module docstring."""

    def __init__(self, module: Module) -> None:
        self.module = module

    def run_graph(self, g: Graph, args: list[V], ctx: C) -> list[V]:
        """The values of `g`'s outputs, with its inputs bound to `args` (in `g.inputs` order)."""
        given = dict(zip(g.inputs, args))
        env: dict[str, Any] = {}
        outs: list[V] = []
        for n in g.nodes():
            if n.kind == "input":
                env[n.name] = self.input(g, n, given.get(n.name), ctx)
            elif n.kind == "output":
                outs.append(self.output(g, n, env[n.inputs[0]], ctx))
            else:
                ins = [env[i] for i in n.inputs]
                env[n.name] = self.run_node(g, n, ins, ctx)
        return outs

    def run_node(self, g: Graph, n: Node, ins: list[V], ctx: C) -> V:
        """Dispatch on node kind (op, call, repeat)."""
        if n.kind == "op":
            return self.op(g, n, ins, ctx)
        if n.kind == "call":
            return self.call(g, n, ins, ctx)
        if n.kind == "repeat":
            return self.repeat(g, n, ins, ctx)
        raise AssertionError(f"unknown node kind {n.kind!r}")  # pragma: no cover - the IR's kinds are a Literal

    # -- one method per node kind ------------------------------------------------------------------------------
    def input(self, g: Graph, n: Node, arg: V | None, ctx: C) -> V:
        return arg

    def output(self, g: Graph, n: Node, value: V, ctx: C) -> V:
        return value

    def op(self, g: Graph, n: Node, ins: list[V], ctx: C) -> V:
        raise NotImplementedError(f"{type(self).__name__} does not evaluate op nodes")

    def call(self, g: Graph, n: Node, ins: list[V], ctx: C) -> V:
        callee = self.module.graphs[n.target]
        return self.pack(g, n, self.run_graph(callee, ins, self.call_context(g, n, ctx)), ctx)

    def repeat(self, g: Graph, n: Node, ins: list[V], ctx: C) -> V:
        body = self.repeat_body(n)
        carried, captured = ins[:n.attrs.carried], ins[n.attrs.carried:]
        for i in range(n.attrs.count):
            carried = self.iteration(g, n, body, i, carried + captured, ctx)
        return self.pack(g, n, carried, ctx)

    # -- hooks -------------------------------------------------------------------------------------------------
    def iteration(self, g: Graph, n: Node, body: Graph, i: int, args: list[V], ctx: C) -> list[V]:
        """Iteration `i` of repeat `n`: the body's outputs (the next iteration's carried values)."""
        return self.run_graph(body, args, self.iteration_context(g, n, i, ctx))

    def call_context(self, g: Graph, n: Node, ctx: C) -> C:
        return ctx

    def iteration_context(self, g: Graph, n: Node, i: int, ctx: C) -> C:
        return ctx

    def repeat_body(self, n: Node) -> Graph:
        return repeat_body(self.module, n)

    def pack(self, g: Graph, n: Node, outs: list[V], ctx: C) -> V:
        """The value of a call/repeat node from its graph's outputs: the one output, or a tuple of them."""
        return outs[0] if len(outs) == 1 else tuple(outs)
