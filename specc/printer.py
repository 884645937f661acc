"""The stable IR text format. ``print_module`` output parses back with ``parse_module`` to an equal Module.

    module ResNet18 {'classes': 1000}
    constraint T <= 1024  # gpt2.nn:12:30-12:41
    graph BasicBlock block=BasicBlock {'out': 64, 'stride': 1}
      %x: f32[B, 64, 56, 56] = input  # resnet18.nn:3:16-3:17
      %conv1: f32[B, 64, 56, 56] = op conv2d(%x) {'out_channels': 64, 'kernel_size': 3} exprs={'out_channels': 'out'}
      %y: f32[B, 64, 56, 56] = op add(%x, %relu) var=y  # resnet18.nn:5:7-5:14
      %out: f32[B, 64, 56, 56] = output(%relu)
    end

`var=` is the spec variable a value was bound to, `exprs=` the hyper-parameter expression behind each computed
attribute, `init=` how a layer's parameters start ({parameter: (initialiser, arguments[, spec text])}), `lets=` on a graph the compile-time names its block defined (`d = features(x)`).
Attribute values are Python literals (read back with ast.literal_eval, never eval). Defaults are omitted.
"""
from __future__ import annotations

import ast as pyast
import re

from .attrs import Init, to_attr
from .ir import CallAttrs, Graph, Module, Node, RepeatAttrs
from .ops import registry
from .source import Span
from .symbolic import parse_dim
from .types import ErrorType, TensorType, TupleType, Type


def attrs_dict(node: Node) -> dict:
    a = node.attrs
    if a is None:
        return {}
    if isinstance(a, CallAttrs):
        return {"args": a.args} if a.args else {}
    if isinstance(a, RepeatAttrs):
        return {"count": a.count, "carried": a.carried}
    out = {}
    for name, f in type(a).model_fields.items():
        v = getattr(a, name)
        if f.is_required() or v != f.default:
            out[name] = v
    return out


def _span(s: Span | None) -> str:
    return f"{s.file}:{s.line}:{s.col}-{s.end_line}:{s.end_col}" if s else ""


def format_node(n: Node, spans: bool = True) -> str:
    head = f"%{n.name}: {n.type} = "
    args = ", ".join(f"%{i}" for i in n.inputs)
    if n.kind == "input":
        body = "input"
    elif n.kind == "output":
        body = f"output({args})"
    else:
        body = f"{n.kind} {n.target}({args})"
    a = attrs_dict(n)
    if a:
        body += " " + repr(a)
    if n.layer:
        body += f" layer={n.layer}"
    if n.var:
        body += f" var={n.var}"
    if n.exprs:
        body += f" exprs={dict(n.exprs)!r}"
    if n.stack:
        body += f" stack={n.stack}"
    if n.site:  # `down_blocks:level=1/resnets:i=0`: the module path of a layer made in `for ... as` loops
        body += " site=" + "/".join(name + "".join(f":{v}={k}" for v, k in loops) for name, loops in n.site)
    if n.init:
        body += f" init={ {p: i.data() for p, i in n.init}!r}"
    tail = ""
    if spans and n.span:
        tail = f"  # {_span(n.span)}"
        if n.origin:
            tail += " from " + " ".join(_span(s) for s in n.origin)
    return head + body + tail


def format_graph(g: Graph, spans: bool = True, header: bool = True) -> str:
    lines = []
    if header:
        lets = f" lets={g.lets!r}" if g.lets else ""
        lines.append(f"graph {g.name} block={g.block} {_hp(g.hparams)}".rstrip() + lets)
    lines += ["  " + format_node(n, spans) for n in g.nodes()]
    if header:
        lines.append("end")
    return "\n".join(lines)


def _hp(hp: dict) -> str:
    return repr({k: to_attr(v) for k, v in hp.items()}) if hp else ""


def print_module(m: Module, spans: bool = True) -> str:
    out = [f"module {m.name} {_hp(m.hparams)}".rstrip()]
    for sym, (bound, span) in sorted(m.constraints.items()):
        out.append(f"constraint {sym} <= {bound}" + (f"  # {_span(span)}" if spans and span else ""))
    for g in m.graphs.values():
        out.append(format_graph(g, spans))
    return "\n".join(out) + "\n"


def graph_signature(g: Graph) -> str:
    """Structure of a graph without its name: equal signatures mean interchangeable graphs."""
    return f"{g.block} {_hp(g.hparams)} {g.lets!r}\n" + format_graph(g, spans=False, header=False)


# ---- parsing back ---------------------------------------------------------------------------------------------

_NODE = re.compile(r"^%(?P<name>[A-Za-z_][\w.]*): (?P<type>.+?) = (?P<body>input|output\(.*?\)|(?P<kind>op|call|repeat) "
                   r"(?P<target>[\w.]+)\((?P<args>.*?)\))(?: (?P<attrs>\{.*?\}))?(?: layer=(?P<layer>\w+))?"
                   r"(?: var=(?P<var>\w+))?(?: exprs=(?P<exprs>\{.*?\}))?(?: stack=(?P<stack>\w+))?"
                   r"(?: site=(?P<site>\S+))?(?: init=(?P<init>\{.*?\}))?(?:  # (?P<span>\S+:\d+:\d+-\d+:\d+)(?: from (?P<origin>.*))?)?$")
_SPAN = re.compile(r"^(?P<file>.+):(?P<l>\d+):(?P<c>\d+)-(?P<el>\d+):(?P<ec>\d+)$")


def _parse_site(text: str | None) -> tuple:
    if not text:
        return ()
    out = []
    for segment in text.split("/"):
        name, *loops = segment.split(":")
        out.append((name, tuple((v, int(k)) for v, _, k in (lp.partition("=") for lp in loops))))
    return tuple(out)


class IRSyntaxError(ValueError):
    pass


def parse_span(text: str | None) -> Span | None:
    if not text:
        return None
    m = _SPAN.match(text)
    if not m:
        raise IRSyntaxError(f"bad span {text!r}")
    return Span(m["file"], int(m["l"]), int(m["c"]), int(m["el"]), int(m["ec"]))


def parse_type(text: str) -> Type:
    text = text.strip()
    if text == "<error>":
        return ErrorType()
    if text.startswith("("):
        inner = text[1:-1]
        items, depth, cur = [], 0, ""
        for ch in inner:
            if ch in "([":
                depth += 1
            elif ch in ")]":
                depth -= 1
            if ch == "," and depth == 0:
                items.append(cur)
                cur = ""
            else:
                cur += ch
        if cur.strip():
            items.append(cur)
        return TupleType(tuple(parse_type(i) for i in items))
    m = re.fullmatch(r"(\w+)\[(.*)\]", text)
    if not m:
        raise IRSyntaxError(f"bad type {text!r}")
    dims = _split_top(m[2]) if m[2].strip() else []
    return TensorType(m[1], tuple(parse_dim(d) for d in dims))


def _split_top(s: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in s:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return out


def parse_node(line: str) -> Node:
    m = _NODE.match(line.strip())
    if not m:
        raise IRSyntaxError(f"cannot parse IR line: {line!r}")
    body = m["body"]
    attrs_raw = pyast.literal_eval(m["attrs"]) if m["attrs"] else {}
    if body == "input":
        kind, target, inputs = "input", "", ()
    elif body.startswith("output("):
        kind, target = "output", ""
        inputs = tuple(a.strip()[1:] for a in body[7:-1].split(",") if a.strip())
    else:
        kind, target = m["kind"], m["target"]
        inputs = tuple(a.strip()[1:] for a in m["args"].split(",") if a.strip())
    if kind == "op":
        op = registry.get(target)
        if op is None:
            raise IRSyntaxError(f"unknown op {target!r}")
        attrs = op.attrs(**attrs_raw)
    elif kind == "call":
        attrs = CallAttrs(args=tuple(tuple(x) for x in attrs_raw.get("args", ())))
    elif kind == "repeat":
        attrs = RepeatAttrs(**attrs_raw)
    else:
        attrs = None
    origin = tuple(parse_span(s) for s in m["origin"].split()) if m["origin"] else ()
    return Node(name=m["name"], kind=kind, target=target, inputs=inputs, attrs=attrs, type=parse_type(m["type"]),
                span=parse_span(m["span"]), layer=m["layer"], origin=origin, var=m["var"], stack=m["stack"],
                site=_parse_site(m["site"]),
                exprs=tuple(pyast.literal_eval(m["exprs"]).items()) if m["exprs"] else (),
                init=tuple((p, Init.of(d)) for p, d in pyast.literal_eval(m["init"]).items()) if m["init"] else ())


def parse_module(text: str) -> Module:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("module "):
        raise IRSyntaxError("IR text must start with `module NAME`")
    head = lines[0][7:].split(" ", 1)
    name = head[0]
    hparams = pyast.literal_eval(head[1]) if len(head) > 1 else {}
    graphs: dict[str, Graph] = {}
    constraints = {}
    cur: Graph | None = None
    for ln in lines[1:]:
        s = ln.strip()
        if s.startswith("constraint "):
            body, _, span = s[11:].partition("  # ")
            sym, _, bound = body.partition(" <= ")
            constraints[sym] = (int(bound), parse_span(span) if span else None)
        elif s.startswith("graph "):
            head, _, lets = s[6:].partition(" lets=")
            parts = head.split(" ", 2)
            hp = pyast.literal_eval(parts[2]) if len(parts) > 2 else {}
            cur = Graph(name=parts[0], block=parts[1].removeprefix("block="), hparams=hp,
                        lets=pyast.literal_eval(lets) if lets else {})
        elif s == "end":
            assert cur is not None
            graphs[cur.name] = cur
            cur = None
        else:
            if cur is None:
                raise IRSyntaxError(f"node outside a graph: {s!r}")
            cur.add(parse_node(s))
    main = list(graphs)[-1]
    return Module(name=name, graphs=graphs, main=main, hparams=hparams, constraints=constraints)
