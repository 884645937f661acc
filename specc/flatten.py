"""Flattening for backends and pictures that want one graph: every `call` inlined and every `repeat` unrolled.

Node names become paths, as the emitted module names its submodules: `basic_block_2.conv1`, `layers.3.attn.q_proj`
(a repeat body that only calls a block is that block, as in the emitted ModuleList). Types, attributes and spans
are kept; only graph inputs/outputs of inlined graphs disappear (their values are wired straight through)."""
from __future__ import annotations

from .ir import Graph, Module, Node
from .types import TupleType
from .walker import Interpreter


class _Inliner(Interpreter):
    """Values are names of nodes in the flat graph; the walk's context is the path prefix of the graph being inlined
    ("" for the model graph)."""

    def __init__(self, m: Module) -> None:
        super().__init__(m)
        self.m = m
        self.out = Graph(name=m.main, block=m.graph.block, hparams=dict(m.graph.hparams), span=m.graph.span)
        # (tuple-valued inlined node, item) -> the flat value; lets getitem of an inlined call resolve directly
        self.items: dict[tuple[str, int], str] = {}

    def add(self, n: Node) -> str:
        self.out.add(n)
        return n.name

    def input(self, g: Graph, n: Node, arg: str | None, prefix: str) -> str:
        # the model's inputs stay; an inlined graph's inputs are wired straight to the caller's values
        return arg if prefix else self.add(n)

    def output(self, g: Graph, n: Node, value: str, prefix: str) -> str:
        if not prefix:
            self.add(n.model_copy(update={"inputs": (value,)}))
        return value

    def op(self, g: Graph, n: Node, ins: list[str], prefix: str) -> str:
        if n.target == "getitem" and (ins[0], n.attrs.index) in self.items:
            return self.items[(ins[0], n.attrs.index)]
        layer = prefix + n.layer if n.layer else None
        return self.add(n.model_copy(update={"name": prefix + n.name, "inputs": tuple(ins), "layer": layer}))

    def call_context(self, g: Graph, n: Node, prefix: str) -> str:
        return f"{prefix}{n.name}."

    def iteration_context(self, g: Graph, n: Node, i: int, prefix: str) -> str:
        return f"{prefix}{n.name}.{i}."

    def pack(self, g: Graph, n: Node, outs: list[str], prefix: str) -> str:
        """The flat value standing for call/repeat `n`: its single output, or a name whose items resolve."""
        q = prefix + n.name
        if not isinstance(n.type, TupleType):
            return outs[0]
        for i, o in enumerate(outs):
            self.items[(q, i)] = o
        return q


def flatten_module(m: Module) -> Module:
    """A new Module whose main graph has every block inlined and every repeat unrolled (the input is unchanged)."""
    inl = _Inliner(m)
    inl.run_graph(m.graph, [], "")
    return Module(name=m.name, graphs={m.main: inl.out}, main=m.main, hparams=m.hparams, constraints=m.constraints,
                  train=m.train, path=m.path)
