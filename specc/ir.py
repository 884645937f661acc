"""The graph IR: a networkx DiGraph per block specialisation, each node holding ONE frozen typed record.

Node kinds (torch.fx style, few of them):
  input   a graph input                      target: ""
  op      a registry op                      target: op name, attrs: the op's validated Attrs
  call    a call of another graph (a block)  target: callee graph name, attrs: CallAttrs
  repeat  N folded calls of a body graph     target: body graph name, attrs: RepeatAttrs
  output  a graph output                     target: "", inputs: (value,)

Each node also keeps what the spec said: ``var``, the variable its value was bound to, and ``exprs``, the
hyper-parameter expression behind each computed attribute (as types keep symbolic dims). A graph keeps its
block's compile-time definitions (``lets``: `d = features(x)`), so those expressions can be read in its terms.

Blocks stay subgraphs and ``repeat`` stays folded; ``specc.flatten.flatten_module`` expands both for backends that
want it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Literal

import networkx as nx
from pydantic import BaseModel, ConfigDict

from .source import Span
from .types import Type

NodeKind = Literal["input", "op", "call", "repeat", "output"]


class CallAttrs(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    args: tuple[tuple[str, Any], ...] = ()  # the block's hyper-parameters as called, for printing/emission


class RepeatAttrs(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    count: int
    carried: int  # the first `carried` inputs feed the body and come back out; the rest are read-only captures


class Node(BaseModel):
    """One IR node. Frozen: passes build new nodes instead of editing old ones."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)
    name: str
    kind: NodeKind
    target: str = ""
    inputs: tuple[str, ...] = ()
    attrs: Any = None
    type: Any  # specc.types.Type
    span: Span | None = None
    layer: str | None = None  # the layer instance whose parameters this node uses (shared layers)
    origin: tuple[Span, ...] = ()  # spans of the nodes a fusion replaced
    var: str | None = None  # the spec variable this value was bound to (`q, k, v = ...`: q, k and v)
    # (attribute, spec expression) for each attribute computed from hyper-parameters rather than written as a
    # literal: linear's out_features from `3 * d`, a repeat's count from `layers`, a call's `width` from `width`;
    # for an input, the bound of each bounded dim (`T <= ctx`: ("T", "ctx"))
    exprs: tuple[tuple[str, str], ...] = ()
    # the named stack whose module list holds this call or repeat: `for ... as layer` (layer1, layer2, ...), or
    # `repeat n as h` when its iterations fold into several runs (each run a slice of h)
    stack: str | None = None
    # how the layer's parameters start, as the spec declares it: (parameter, Init) pairs, in parameter order; a
    # parameter left out keeps PyTorch's default (specc/elaborate/inits.py)
    init: tuple[tuple[str, Any], ...] = ()
    # where a layer made inside `for v in range(n) as name` loops sits (naming.py): the module path as segments
    # (attribute, ((loop variable, index), ...)): `down_blocks.1.resnets.0` is
    # (("down_blocks", (("level", 1),)), ("resnets", (("i", 0),))); () elsewhere
    site: tuple = ()


@dataclass(frozen=True)
class ListValue:
    """A list of tensors as the rolled trace keeps it: the nodes of its last entries, at most LIST_TAIL of them (a loop
    that appends to a list would otherwise keep a copy per run: quadratic memory)."""

    tail: tuple[str, ...]


LIST_TAIL = 32


@dataclass
class TraceEvent:
    """One run of a model-body statement in a rolled elaboration (RolledTrace): the nodes it made, in order, and what
    it bound (variable -> node name, list of node names, or int)."""

    span: Span | None
    nodes: list[str]
    bound: dict[str, Any]
    before: dict[str, Any] = field(default_factory=dict)  # the type each target held before (tensors only)
    reads: dict[str, str] = field(default_factory=dict)  # node -> the list entry it was read as (`skips[-1]`)


@dataclass
class RolledTrace:
    """What the PyTorch emitter needs to write a model's `for v in range(n) as name` loops as loops
    (backends/torch/rolled.py), from an elaboration with Elaborator.rolling: the model body as written, every run of
    its assignments and outputs in order, and the sizes each call saw, in the loop's names (`x_channels`,
    `skips_channels[-1] + x_channels`) where the input nodes' own types name one iteration's sizes."""

    body: tuple = ()
    events: list[TraceEvent] = field(default_factory=list)
    sizes: dict[str, dict] = field(default_factory=dict)
    inputs: dict[str, list] = field(default_factory=dict)  # op or call node -> its input types as it saw them
    taken: set = field(default_factory=set)  # (`if` span, branch index; else = len(branches)), (`for` span, 0)
    reads: dict[str, str] = field(default_factory=dict)  # the statement being run's list entries (TraceEvent.reads)


@dataclass
class IndexRuns:
    """`repeat count as stack[var]` folded by an `if` on var into a first run (nodes[0], where `cond` holds) and a
    second (nodes[1], where it does not); `pins` are what the unrolled form took as given instead."""

    count: Any  # the repeat count (an HInt naming the hyper-parameter when one sets it)
    var: str
    cond: str  # Python text over the graph's names and var
    nodes: tuple[str, str]
    pins: tuple[tuple[str, str], ...]


@dataclass
class Graph:
    """One block specialisation (or the model body). Node order is insertion order, kept stable."""

    name: str
    block: str  # the spec block (or model) this came from
    hparams: dict[str, Any] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    span: Span | None = None
    lets: dict[str, str] = field(default_factory=dict)  # compile-time names the block defines -> spec expression
    # what the graph's structure took as given: (Python condition in the graph's size names, what it says), from
    # the `if`s, loop lengths and asserts ("assert:" + its message) its elaboration evaluated; emitted code checks
    # them in the constructor
    pins: list[tuple[str, str]] = field(default_factory=list)
    # the sizes a block value given to a call or an op was specialised with, in this graph's names: call node ->
    # {`ffn_hidden`: hidden} (LLaMA's `RotaryDecoderLayer(heads, SwiGLU(hidden))`), and for a block an op runs
    # (moe's experts) its graph -> {its parameter: value}
    call_values: dict[str, dict] = field(default_factory=dict)
    embedded: dict[str, dict] = field(default_factory=dict)
    # call node -> the hyper-parameter whose block value it applies (`ffn as mlp` in a block taking `ffn: any`): the
    # emitted class takes that module built by its caller
    given: dict[str, str] = field(default_factory=dict)
    # a named stack whose iterations an `if` on the index folds into two runs (`repeat layers as layers[i]` with
    # `if i < dense_layers`): stack -> IndexRuns; the emitted module builds it as one list chosen per index
    index_runs: dict[str, "IndexRuns"] = field(default_factory=dict)
    # a block parameter an `if` over sizes gives a new value (`if kv_heads == 0 { kv_heads = heads }`): its name
    # after the `if` (`kv_headsʹ`) -> Python text of its value in the graph's names; the constructor computes it
    resolved: list[tuple[str, str]] = field(default_factory=list)
    # the inputs the block declares optional (`kv: tensor = none`) that this specialisation was given: callers pass
    # them by name, and one class can serve specialisations given different ones
    optional: list[str] = field(default_factory=list)
    g: nx.DiGraph = field(default_factory=nx.DiGraph)
    _order: dict[str, int] = field(default_factory=dict)

    def add(self, node: Node) -> Node:
        if node.name in self.g:
            raise KeyError(f"node {node.name!r} already in graph {self.name!r}")
        self._order[node.name] = len(self._order)
        self.g.add_node(node.name, node=node)
        for i, src in enumerate(node.inputs):
            if src not in self.g:
                raise KeyError(f"node {node.name!r} reads unknown value {src!r}")
            self.g.add_edge(src, node.name)
            self.g.edges[src, node.name].setdefault("operands", []).append(i)
        if node.kind == "input":
            self.inputs.append(node.name)
        if node.kind == "output":
            self.outputs.append(node.name)
        return node

    def expr(self, node: Node, attr: str) -> str | None:
        """The spec expression node's attribute `attr` was computed from, or None for a literal."""
        return dict(node.exprs).get(attr)

    def replace(self, node: Node) -> None:
        """Swap the record of an existing node (same name and inputs), e.g. after re-typing."""
        old = self[node.name]
        assert old.inputs == node.inputs, "replace() cannot rewire; build a new graph"
        self.g.nodes[node.name]["node"] = node

    def __getitem__(self, name: str) -> Node:
        return self.g.nodes[name]["node"]

    def __contains__(self, name: str) -> bool:
        return name in self.g

    def __len__(self) -> int:
        return self.g.number_of_nodes()

    def nodes(self) -> list[Node]:
        """Nodes in a stable topological order (ties broken by insertion order)."""
        order = nx.lexicographical_topological_sort(self.g, key=lambda n: self._order[n])
        return [self[n] for n in order]

    def users(self, name: str) -> list[str]:
        return sorted(self.g.successors(name), key=lambda n: self._order[n])

    def output_types(self) -> list[Type]:
        return [self[o].type for o in self.outputs]


@dataclass
class Module:
    """A compiled spec: the model graph plus every block specialisation it calls (callees first)."""

    name: str
    graphs: dict[str, Graph]
    main: str
    hparams: dict[str, Any] = field(default_factory=dict)
    constraints: dict[str, tuple[Any, Span | None]] = field(default_factory=dict)  # sym -> (upper bound, span)
    train: dict[str, tuple[Any, Span | None]] = field(default_factory=dict)
    path: str = ""
    # sym -> (smallest size, span, op) that a window over it needs (elaborate/minimums.py): `T >= 8`
    minimums: dict[str, tuple[int, Span | None, str]] = field(default_factory=dict)

    @property
    def graph(self) -> Graph:
        return self.graphs[self.main]

    def walk(self, graph: Graph | None = None, prefix: str = "", times: int = 1
             ) -> Iterator[tuple[str, Node, Graph, int]]:
        """Yield (qualified name, node, owning graph, multiplicity) for every node, descending into calls.

        Repeat bodies are visited once with multiplicity N (folded), so costs scale without unrolling."""
        graph = self.graph if graph is None else graph  # an empty body graph is falsy
        for node in graph.nodes():
            q = f"{prefix}{node.name}"
            yield q, node, graph, times
            if node.kind == "call":
                yield from self.walk(self.graphs[node.target], q + ".", times)
            elif node.kind == "repeat":
                yield from self.walk(self.graphs[node.target], q + ".*.", times * node.attrs.count)
