"""Pictures of the IR: Graphviz DOT, SVG (laid out by graphviz's `dot`) and one self-contained HTML page.

Every edge is labelled with the type of the value it carries; a block call is a cluster named after the call and
the block; `repeat N` is one cluster "xN" holding the body once, with a dashed back edge for the carried values
(`flat=True` unrolls it into N clusters). Graph inputs/outputs of blocks are not drawn: values flow straight in.

The HTML page embeds the SVG and a JSON table of node details, with a small inline script (no network): drag to
pan, wheel to zoom, click a cluster's label to fold/unfold it, click a node to see its op, attributes, input and
output types, parameters and source line."""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .ir import Graph, Module, Node
from .naming import trivial_body
from .ops import registry
from .printer import attrs_dict
from .source import Span
from .types import TupleType
from .walker import Interpreter

ASSETS = Path(__file__).parent / "viz_assets"

# fill colours by what a node is (first match wins)
_COLOURS = (
    ("fused", "#fdd9a0"),  # made by a fusion pass
    ("attention", "#e3d3f5"),
    ("layer", "#cfe3f7"),  # owns parameters
    ("shape", "#eeeeee"),
    ("other", "#ffffff"),
)


class GraphvizMissing(RuntimeError):
    pass


@dataclass
class _Value:
    node: str  # the DOT node producing it
    type: object
    label: str = ""  # extra edge label prefix, e.g. "[1] " for an item of a tuple


@dataclass
class _Cluster:
    id: str
    title: str
    parent: str | None = None
    block: str = ""  # the block drawn inside
    nodes: list[str] = field(default_factory=list)  # DOT node ids inside (transitively)
    edges: list[str] = field(default_factory=list)  # DOT edge ids with both ends inside


class _Dot(Interpreter):
    def __init__(self, m: Module, flat: bool) -> None:
        super().__init__(m)
        self.m = m
        self.flat = flat
        self.lines: list[str] = []
        self.edges: list[str] = []
        self.details: dict[str, dict] = {}
        self.clusters: dict[str, _Cluster] = {}
        self.open: list[_Cluster] = []  # the clusters being drawn, outermost first
        self.edge_count = 0
        self.sources: dict[str, list[str] | None] = {}

    # -- DOT text ----------------------------------------------------------------------------------------------
    def emit(self, line: str) -> None:
        self.lines.append("  " * (len(self.open) + 1) + line)

    def node(self, nid: str, label: str, **attrs: str) -> None:
        extra = "".join(f", {k}={_q(v)}" for k, v in attrs.items())
        self.emit(f"{_q(nid)} [id={_q(nid)}, label={_q(label)}{extra}];")
        for c in self.open:
            c.nodes.append(nid)

    def edge(self, src: _Value, dst: str, **attrs: str) -> None:
        eid = f"e{self.edge_count}"
        self.edge_count += 1
        label = src.label + _type(src.type)
        extra = "".join(f", {k}={_q(v)}" for k, v in attrs.items())
        # at top level: an edge statement inside a cluster would pull its source node into that cluster
        self.edges.append(f"  {_q(src.node)} -> {_q(dst)} [id={_q(eid)}, label={_q(label)}{extra}];")
        for c in self.open:
            if src.node in c.nodes:
                c.edges.append(eid)

    def begin(self, cid: str, title: str, info: dict) -> None:
        c = _Cluster(cid, title, "cluster_" + self.open[-1].id if self.open else None, info["callee"])
        self.clusters[cid] = c
        self.emit(f"subgraph {_q('cluster_' + cid)} {{")
        self.open.append(c)
        self.emit(f"id={_q('cluster_' + cid)}; label={_q(title)}; style=\"rounded,filled\"; "
                  f"fillcolor=\"#f7f7f2\"; color=\"#8a8a80\"; fontname=\"Helvetica-Bold\"; fontsize=11;")
        self.details["cluster_" + cid] = info

    def end(self) -> None:
        self.open.pop()
        self.emit("}")

    # -- walking the IR: values are _Value (the DOT node producing them); the context is the path prefix ------
    def graph(self, g: Graph, path: str, args: list[_Value]) -> list[_Value]:
        return self.run_graph(g, args, path)

    def input(self, g: Graph, n: Node, arg: _Value | None, path: str) -> _Value:
        if path:  # a block's input: values flow straight in
            return arg
        nid = path + n.name
        self.node(nid, f"{n.name}\n{_type(n.type)}", shape="ellipse", style="filled", fillcolor="#d8f0d8")
        self.details[nid] = self.info(n, g, nid, [])
        return _Value(nid, n.type)

    def output(self, g: Graph, n: Node, value: _Value, path: str) -> _Value:
        if path:
            return value
        nid = path + n.name
        self.node(nid, n.name, shape="ellipse", style="filled", fillcolor="#f0d8d8")
        self.details[nid] = self.info(n, g, nid, [value])
        self.edge(value, nid)
        return value

    def op(self, g: Graph, n: Node, ins: list[_Value], path: str) -> _Value | None:
        nid = path + n.name
        if n.target == "getitem":  # drawn as an edge label, not a node
            src = ins[0]
            items = src.type.items if isinstance(src.type, TupleType) else None
            if isinstance(src, _Tuple):
                return src.items[n.attrs.index]
            return _Value(src.node, items[n.attrs.index], f"[{n.attrs.index}] ") if items is not None else None
        self.node(nid, _label(n), shape="box", style="rounded,filled", fillcolor=_colour(n))
        self.details[nid] = self.info(n, g, nid, ins)
        for v in ins:
            self.edge(v, nid)
        return _Value(nid, n.type)

    def call(self, g: Graph, n: Node, ins: list[_Value], path: str) -> _Value:
        nid = path + n.name
        callee = self.m.graphs[n.target]
        self.begin(nid, f"{n.name}: {callee.block}{_hp(callee.hparams)}", self.block_info(n, callee, nid))
        value = super().call(g, n, ins, path)
        self.end()
        return value

    def call_context(self, g: Graph, n: Node, path: str) -> str:
        return f"{path}{n.name}."

    def iteration_context(self, g: Graph, n: Node, i: int, path: str) -> str:
        return f"{path}{n.name}.{i}."

    def repeat_body(self, n: Node) -> Graph:
        return self.m.graphs[n.target]  # the body as written, also when it only calls one block

    def pack(self, g: Graph, n: Node, outs: list[_Value], path: str) -> _Value:
        return _pack(outs, n)

    def iteration(self, g: Graph, n: Node, body: Graph, i: int, args: list[_Value], path: str) -> list[_Value]:
        nid = path + n.name  # only with flat=True: one cluster per iteration
        self.begin(f"{nid}.{i}", f"{n.name}[{i}]", self.block_info(n, body, f"{nid}.{i}", i))
        outs = super().iteration(g, n, body, i, args, path)
        self.end()
        return outs

    def repeat(self, g: Graph, n: Node, ins: list[_Value], path: str) -> _Value:
        if self.flat:
            return super().repeat(g, n, ins, path)
        # folded: the body once, in one "xN" cluster, with dashed back edges for the carried values
        nid = path + n.name
        body = self.m.graphs[n.target]
        self.begin(nid, f"{n.name} \u00d7{n.attrs.count}", self.block_info(n, body, nid))
        start = len(self.edges)
        outs = self.graph(body, nid + ".", ins)
        # each carried output feeds the next iteration's first reader of that input
        for out, name in zip(outs, body.inputs[:n.attrs.carried]):
            first = self._first_reader(ins[body.inputs.index(name)].node, start)
            if first:
                self.edge(out, first, style="dashed", constraint="false", color="#8a8a80")
        self.end()
        return _pack(outs, n)

    def _first_reader(self, src: str, start: int) -> str | None:
        """The first DOT node that reads DOT node `src` through an edge drawn since edge `start`."""
        head = f"{_q(src)} -> "
        for line in self.edges[start:]:
            s = line.strip()
            if s.startswith(head):
                return _unq(s[len(head):].split(" [", 1)[0])
        return None

    # -- details for the HTML page -----------------------------------------------------------------------------
    def info(self, n: Node, g: Graph, nid: str, ins: list[_Value]) -> dict:
        d = {"name": nid, "kind": n.kind, "op": n.target, "block": g.block, "type": str(n.type),
             "inputs": [{"from": v.node, "type": _type(v.type)} for v in ins],
             "attrs": {k: _plain(v) for k, v in attrs_dict(n).items()}, "params": {}}
        if n.kind == "op":
            op = registry.get(n.target)
            in_types = [g[i].type for i in n.inputs]
            try:
                d["params"] = {k: [str(s) for s in v] for k, v in op.param_shapes(in_types, n.attrs).items()}
                d["buffers"] = {k: [str(s) for s in v] for k, v in op.buffer_shapes(in_types, n.attrs).items()}
            except Exception:  # noqa: BLE001 - a picture must not fail on a param rule
                pass
            d["doc"] = op.doc
        if n.layer:
            d["layer"] = n.layer
        if n.span:
            d["source"] = _where(n.span)
            d["code"] = self.code(n.span)
        if n.origin:
            d["fused_from"] = [{"source": _where(s), "code": self.code(s)} for s in n.origin]
        return d

    def block_info(self, n: Node, body: Graph, cid: str, index: int | None = None) -> dict:
        inner = self.m.graphs[trivial_body(self.m, body) or body.name] if n.kind == "repeat" else body
        d = {"name": cid, "kind": n.kind, "block": self.open[-1].block if self.open else self.m.graph.block,
             "callee": inner.block, "hparams": {k: _plain(v) for k, v in inner.hparams.items()}, "type": str(n.type)}
        if n.kind == "repeat":
            d["count"] = n.attrs.count
            if index is not None:
                d["iteration"] = index
        if n.span:
            d["source"] = _where(n.span)
            d["code"] = self.code(n.span)
        return d

    def code(self, s: Span) -> str:
        """The source line of `s` with a caret line under the span (empty if the file cannot be read)."""
        if s.file not in self.sources:
            try:
                self.sources[s.file] = Path(s.file).read_text(encoding="utf-8").splitlines()
            except OSError:
                self.sources[s.file] = None
        lines = self.sources[s.file]
        if not lines or not 0 < s.line <= len(lines):
            return ""
        line = lines[s.line - 1].rstrip()
        end = s.end_col if s.end_line == s.line else len(line) + 1
        return f"{line}\n{' ' * (s.col - 1)}{'^' * max(1, end - s.col)}"

    def text(self) -> str:
        head = [f"digraph {_q(self.m.name)} {{",
                "  graph [rankdir=TB, fontname=\"Helvetica\", nodesep=0.25, ranksep=0.35];",
                "  node [fontname=\"Helvetica\", fontsize=11, margin=\"0.12,0.04\", height=0.3];",
                "  edge [fontname=\"Helvetica\", fontsize=9, fontcolor=\"#555555\", color=\"#666666\", "
                "arrowsize=0.6];"]
        return "\n".join(head + self.lines + self.edges + ["}"]) + "\n"


@dataclass
class _Tuple(_Value):
    items: list[_Value] = field(default_factory=list)


def _pack(vals: list[_Value], n: Node) -> _Value:
    if isinstance(n.type, TupleType):
        return _Tuple(vals[0].node if vals else "", n.type, items=vals)
    return vals[0]


# ---- labels ---------------------------------------------------------------------------------------------------

def _label(n: Node) -> str:
    a = n.attrs
    if n.target == "fused":
        steps = [a.base] + (["batchnorm"] if a.bn else []) + list(a.epilogue)
        return f"{n.name}\nfused: {' + '.join(steps)}"
    if n.target == "merged_linear":
        return f"{n.name}\nmerged_linear {' | '.join(a.layers)}"
    pos = registry.get(n.target).positional
    items = [_short(v) if k in pos[:2] else f"{k}={_short(v)}" for k, v in attrs_dict(n).items()]
    call = n.target + (f"({', '.join(items[:3])}{', ...' if len(items) > 3 else ''})" if items else "")
    generated = n.name == n.target or n.name.removeprefix(n.target + "_").isdigit()
    return call if generated else f"{n.name}\n{call}"


def _colour(n: Node) -> str:
    op = registry.get(n.target)
    kind = ("fused" if n.target in ("fused", "merged_linear") else
            "attention" if n.target == "sdpa" else
            "layer" if registry.LAYER in op.categories else
            "shape" if registry.SHAPE in op.categories or n.target == "getitem" else "other")
    return dict(_COLOURS)[kind]


def _short(v) -> str:
    s = repr(v) if not isinstance(v, str) else v
    return s if len(s) <= 18 else s[:16] + "\u2026"


def _hp(hp: dict) -> str:
    if not hp:
        return ""
    return "(" + ", ".join(f"{k}={_short(v)}" for k, v in hp.items()) + ")"


def _type(t) -> str:
    return str(t)


def _where(s: Span) -> str:
    path = Path(s.file)
    try:
        path = path.resolve().relative_to(Path.cwd())
    except (ValueError, OSError):
        pass
    return f"{path}:{s.line}:{s.col}"


def _plain(v):
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    return str(v)


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _unq(s: str) -> str:
    return s[1:-1].replace('\\"', '"').replace("\\\\", "\\") if s.startswith('"') else s


# ---- entry points ---------------------------------------------------------------------------------------------

def to_dot(m: Module, flat: bool = False) -> tuple[str, dict, dict]:
    """(DOT text, node/cluster details by SVG id, cluster contents by cluster id)."""
    d = _Dot(m, flat)
    d.graph(m.graph, "", [])
    folds = {"cluster_" + c.id: {"title": c.title, "nodes": c.nodes, "edges": c.edges, "parent": c.parent}
             for c in d.clusters.values()}
    return d.text(), d.details, folds


def dot_to_svg(dot: str) -> str:
    exe = shutil.which("dot")
    if exe is None:
        raise GraphvizMissing("graphviz's `dot` is not installed (Debian: apt-get install graphviz)")
    res = subprocess.run([exe, "-Tsvg"], input=dot, capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        raise RuntimeError(f"dot failed: {res.stderr.strip()}")
    return res.stdout


def render(m: Module, fmt: str, flat: bool = False) -> str:
    """`fmt` is "dot", "svg" or "html"."""
    dot, details, folds = to_dot(m, flat)
    if fmt == "dot":
        return dot
    svg = dot_to_svg(dot)
    if fmt == "svg":
        return svg
    if fmt == "html":
        return html_page(m, svg, details, folds)
    raise ValueError(f"unknown picture format {fmt!r}")


def html_page(m: Module, svg: str, details: dict, folds: dict) -> str:
    start = svg.find("<svg")
    svg = svg[start:] if start >= 0 else svg
    data = json.dumps({"model": m.name, "nodes": details, "clusters": folds}, sort_keys=True)
    data = data.replace("</", "<\\/")  # never ends the <script> element early
    values = {"TITLE": html.escape(f"{m.name} \u2014 specc"), "MODEL": html.escape(m.name),
              "CSS": (ASSETS / "viewer.css").read_text(encoding="utf-8"),
              "JS": (ASSETS / "viewer.js").read_text(encoding="utf-8"), "DATA": data, "SVG": svg}
    page = (ASSETS / "viewer.html").read_text(encoding="utf-8")
    return re.sub(r"\{\{([A-Z]+)\}\}", lambda mt: values[mt[1]], page)  # one pass: values are not rescanned
