"""Flattening for backends and pictures that want one graph: every `call` inlined and every `repeat` unrolled.

Node names become paths, as the emitted module names its submodules: `basic_block_2.conv1`, `layers.3.attn.q_proj`
(a repeat body that only calls a block is that block, as in the emitted ModuleList). Types, attributes and spans
are kept; only graph inputs/outputs of inlined graphs disappear (their values are wired straight through)."""
from __future__ import annotations

from .ir import Graph, Module, Node
from .types import TupleType


class _Inliner:
    def __init__(self, m: Module) -> None:
        self.m = m
        self.out = Graph(name=m.main, block=m.graph.block, hparams=dict(m.graph.hparams), span=m.graph.span)
        # (tuple-valued inlined node, item) -> the flat value; lets getitem of an inlined call resolve directly
        self.items: dict[tuple[str, int], str] = {}

    def add(self, n: Node) -> str:
        self.out.add(n)
        return n.name

    def graph(self, g: Graph, prefix: str, args: list[str]) -> list[str]:
        """Inline `g` with its inputs bound to flat values `args`; return the flat values of its outputs."""
        env: dict[str, str] = dict(zip(g.inputs, args))
        outs: list[str] = []
        for n in g.nodes():
            if n.kind == "input":
                if not prefix:
                    env[n.name] = self.add(n)
                continue
            if n.kind == "output":
                if prefix:
                    outs.append(env[n.inputs[0]])
                else:
                    self.add(n.model_copy(update={"inputs": (env[n.inputs[0]],)}))
                continue
            ins = [env[i] for i in n.inputs]
            q = prefix + n.name
            if n.kind == "op" and n.target == "getitem" and (ins[0], n.attrs.index) in self.items:
                env[n.name] = self.items[(ins[0], n.attrs.index)]
            elif n.kind == "op":
                layer = prefix + n.layer if n.layer else None
                env[n.name] = self.add(n.model_copy(update={"name": q, "inputs": tuple(ins), "layer": layer}))
            elif n.kind == "call":
                env[n.name] = self._tuple(q, n, self.graph(self.m.graphs[n.target], q + ".", ins))
            else:  # repeat: unroll, carried values flow from one copy into the next
                env[n.name] = self._tuple(q, n, self._repeat(n, q, ins))
        return outs

    def _repeat(self, n: Node, q: str, ins: list[str]) -> list[str]:
        body = self.m.graphs[n.target]
        inner = repeated_block(body)
        carried, captured = ins[:n.attrs.carried], ins[n.attrs.carried:]
        for i in range(n.attrs.count):
            if inner is not None:  # the body only calls one block: that block is the repeated unit
                carried = self.graph(self.m.graphs[inner], f"{q}.{i}.", carried + captured)
            else:
                carried = self.graph(body, f"{q}.{i}.", carried + captured)
        return carried

    def _tuple(self, q: str, n: Node, outs: list[str]) -> str:
        """The flat value standing for call/repeat `n`: its single output, or a name whose items resolve."""
        if not isinstance(n.type, TupleType):
            return outs[0]
        for i, o in enumerate(outs):
            self.items[(q, i)] = o
        return q


def repeated_block(body: Graph) -> str | None:
    """The block a repeat body does nothing but call with its own inputs (`x = x -> Block(...)`), if so."""
    inner = [n for n in body.nodes() if n.kind not in ("input", "output")]
    if len(inner) != 1 or inner[0].kind != "call" or list(inner[0].inputs) != body.inputs:
        return None
    outs = [body[o].inputs[0] for o in body.outputs]
    return inner[0].target if outs == [inner[0].name] else None


def flatten_module(m: Module) -> Module:
    """A new Module whose main graph has every block inlined and every repeat unrolled (the input is unchanged)."""
    inl = _Inliner(m)
    inl.graph(m.graph, "", [])
    return Module(name=m.name, graphs={m.main: inl.out}, main=m.main, hparams=m.hparams, constraints=m.constraints,
                  train=m.train, path=m.path)
