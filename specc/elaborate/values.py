"""Compile-time values of the elaborator: tensors (references to IR nodes), block values, layer instances, the
error value POISON, the graph builder, and the pure helpers that convert and print values. Block values and
the conversion to IR attributes live in specc/attrs.py (the printer needs them too)."""
from __future__ import annotations

import re
import typing
from dataclasses import dataclass, field
from typing import Any

from .. import ast as A
from ..attrs import BlockValue
from ..hyper import FLOAT_OPS, HFloat, HInt
from ..ir import Graph, Node
from ..source import Span
from ..symbolic import Sym
from ..types import Type


class _Poison:
    def __repr__(self) -> str:
        return "<error>"


POISON = _Poison()

MAX_BLOCK_DEPTH = 48  # nested block calls; deeper is almost surely a block calling itself without end
MAX_UNROLL = 100_000  # iterations of a `repeat ... as i` whose body reads i


@dataclass(frozen=True)
class Tensor:
    node: str
    type: Type
    span: Span | None


@dataclass
class LayerInstance:
    """`layer fc = linear(10)`: one set of parameters, applied wherever `fc` is used."""

    name: str
    link: A.Link
    span: Span | None
    values: list = field(default_factory=list)
    kw: dict = field(default_factory=dict)
    spans: dict = field(default_factory=dict)
    first: Node | None = None
    params: dict[str, tuple] = field(default_factory=dict)
    exprs: dict = field(default_factory=dict)  # argument key -> its AST expression (Node.exprs)


_PY_TYPES = {"int": (int,), "float": (float, int), "bool": (bool,), "str": (str,), "list": (list, tuple),
             "tuple": (tuple, list), "dim": (int, Sym), "tensor": (Tensor,), "any": (object,)}


def _typename(v: Any) -> str:
    if isinstance(v, BlockValue):
        return f"block {v}"
    if isinstance(v, Tensor):
        return f"tensor {v.type}"
    if isinstance(v, Sym):
        return f"dim {v}"
    return "int" if isinstance(v, HInt) else "float" if isinstance(v, HFloat) else type(v).__name__


class _Return(Exception):
    def __init__(self, values: list) -> None:
        self.values = values


class _Halt(Exception):
    """A failed `assert` ends its block (or model): what follows relies on it, so its errors would be noise."""


class GraphBuilder:
    def __init__(self, name: str, block: str, hparams: dict, span: Span | None) -> None:
        self.graph = Graph(name=name, block=block, hparams=hparams, span=span)
        self.counts: dict[str, int] = {}
        self.reserved: set[str] = set()  # the model's output names: `output add = x + y` keeps the name `add`
        self.as_model = False  # the graph of a model called as a block (elaborate/models.py)
        self.stack: str | None = None  # the named stack (`for ... as layer`) that layers made now belong to
        # a repeat body's index (`repeat n as h[i]`): whether anything but an `if` deciding on it read it
        self.index: str | None = None
        self.index_read = False
        self.deciding = 0  # > 0 while an `if` condition is evaluated
        # the `for v in range(n)` loops around the statement being run that give their layers a module path
        # (Node.site): (name, v, index), name None for a loop without `as` inside one with it
        self.frames: list[tuple[str | None, str, int]] = []
        self.bases: dict[str, str] = {}  # node name -> the name it was made from (`resnets` for `resnets_3`)
        self.site_names: dict[tuple, dict] = {}  # container kind -> {site: its attribute}
        self.trace: list | None = None  # a rolled elaboration's model: its statements' runs (ir.RolledTrace)
        self.rolled_depth = 0  # rolled loops around the statement being run (Elaborator.rolling)

    def free(self, name: str) -> bool:
        return name not in self.graph and name not in self.reserved

    def fresh(self, base: str) -> str:
        base = base or "v"
        n = self.counts.get(base, 0)
        while True:
            name = base if n == 0 else f"{base}_{n}"
            n += 1
            if self.free(name):
                self.counts[base] = n
                self.bases[name] = base
                return name

    def add(self, node: Node) -> Tensor:
        if self.stack and node.stack is None and node.kind in ("op", "call", "repeat"):
            node = node.model_copy(update={"stack": self.stack})
        if self.frames and node.kind in ("op", "call", "repeat") and node.layer in (None, node.name) \
                and _owns_module(node):
            node = node.model_copy(update={"site": self.site_of(node)})
        self.graph.add(node)
        return Tensor(node.name, node.type, node.span)

    def site_of(self, node: Node) -> tuple:
        """node's module path inside the loops around it (Node.site): each `as` loop a list of per-iteration
        modules (`down_blocks.1`), in which a layer is an attribute named as the spec names it; a loop without `as`
        makes the layers in it lists indexed by its variable (`resnets.0`). One attribute per place in the spec."""
        segments, pending = [], []
        for name, var, k in self.frames:
            pending.append((var, k))
            if name is not None:
                segments.append((name, tuple(pending)))
                pending = []
        taken = self.site_names.setdefault(tuple(s for s, _ in segments), {})
        key = (node.span, node.kind)
        if key not in taken:
            base = name = self.bases.get(node.name, node.name)
            k = 1
            while name in taken.values():
                name = f"{base}_{k}"
                k += 1
            taken[key] = name
        return (*segments, (taken[key], tuple(pending)))

    def name_value(self, val: Any, var: str) -> None:
        """Record that the spec bound `val` to variable `var` (the first binding of a value wins: `y = x` keeps x)."""
        if isinstance(val, Tensor) and val.node in self.graph:
            n = self.graph[val.node]
            if n.var is None and n.kind in ("op", "call", "repeat"):
                self.graph.replace(n.model_copy(update={"var": var}))


def _owns_module(node: Node) -> bool:
    """Whether node's emitted code holds an nn.Module (a block, a repeat, an op with parameters or buffers)."""
    if node.kind != "op":
        return True
    from ..ops import registry

    op = registry.get(node.target)
    return op is not None and op.torch is not None and op.torch.module is not None


class TensorList(list):
    """A list of tensors a rolled loop carries (`skips`, Elaborator.rolling): it keeps its name through `+` and
    slices, so an element read by index is tagged with the list's sizes at that index (`skips_channels[-1]`), the
    same text in every iteration."""

    def __init__(self, items=(), name: str = "") -> None:
        super().__init__(items)
        self.name = name

    def __add__(self, other):
        return TensorList([*self, *other], self.name)

    def __radd__(self, other):
        return TensorList([*other, *self], self.name)


class Scope(dict):
    pass


def _const_binop(op: str, a: Any, b: Any) -> Any:
    if op in ("==", "!="):
        eq = a == b
        return eq if op == "==" else not eq
    if isinstance(a, bool) or isinstance(b, bool):
        raise TypeError
    if op in ("<", "<=", ">", ">="):
        if isinstance(a, Sym) or isinstance(b, Sym):
            raise TypeError
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
    if isinstance(a, (list, tuple)) and op in ("+", "*"):
        return a + b if op == "+" else a * b
    if not isinstance(a, (int, float, Sym)) or not isinstance(b, (int, float, Sym)):
        raise TypeError
    if type(a) is float and isinstance(b, HInt) and op in FLOAT_OPS:  # float.__mul__ would drop d in `0.5 * d`
        return getattr(b, f"__r{FLOAT_OPS[op]}__")(a)
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        if isinstance(a, Sym) or isinstance(b, Sym):
            raise TypeError
        return a / b
    if op == "//":
        if isinstance(b, int) and b == 0:
            raise ZeroDivisionError
        return a // b
    if op == "%":
        if isinstance(a, Sym) or isinstance(b, Sym):
            raise TypeError
        return a % b
    if op == "**":
        if isinstance(a, Sym) or isinstance(b, Sym):
            raise TypeError  # sizes of the result are checked by the caller before (Elaborator.check_binop)
        return a ** b
    raise TypeError


def _freeze(v: Any) -> Any:
    if isinstance(v, BlockValue):
        return ("block", v.name, _freeze(v.values), tuple((k, _freeze(x)) for k, x in v.kw))
    if isinstance(v, list):
        return ("list", tuple(_freeze(x) for x in v))
    if isinstance(v, tuple):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, Sym):
        return ("sym", str(v))
    if isinstance(v, HInt):  # a size is the same hyper-parameter value whatever expression computed it
        return ("int", int(v))
    if isinstance(v, HFloat):
        return ("float", float(v))
    return (type(v).__name__, v)


def _shape(s) -> str:
    return "[" + ", ".join(str(d) for d in s) + "]" if s is not None else "none"


def _params_str(p: dict) -> str:
    return ", ".join(f"{k}{_shape(v)}" for k, v in p.items()) or "none"


def _snake(name: str) -> str:
    """A block's name as a layer name: SwiGLU -> swi_glu, ResNetBlock -> res_net_block, and a short mixed-case
    acronym stays one word (SparseMoE -> sparse_moe, ReLU -> relu: a word of at most two letters followed by one of
    at most two capitals)."""
    words = re.findall(r"[A-Z]+[0-9]*(?![a-z])|[A-Z]?[a-z0-9]+|[^A-Za-z0-9]+", name)
    out: list[str] = []
    for w in words:
        if out and out[-1][-1:].isalpha() and len(out[-1]) <= 2 and w.isupper() and len(w) <= 2 \
                and out[-1][:1].isupper():
            out[-1] += w
        else:
            out.append(w)
    return "_".join(w.lower() for w in out if w.strip("_")) or name.lower()


def _closest(name: str, cands: list[str]) -> str | None:
    import difflib

    m = difflib.get_close_matches(name, sorted(set(cands)), n=1, cutoff=0.75)
    return m[0] if m else None


def _optional_tensor(p: A.Param) -> bool:
    return p.type == "tensor" and isinstance(p.default, A.Lit) and p.default.value is None


def _literal(e: Any) -> bool:
    """A spec expression that is a constant as written: `3`, `-1`, `"tanh"`, `(1, 2)`."""
    if isinstance(e, A.Lit):
        return True
    if isinstance(e, A.Unary) and e.op in "+-":
        return _literal(e.operand)
    if isinstance(e, (A.TupleLit, A.ListLit)):
        return all(_literal(x) for x in e.items)
    return False


def _is_data(v: Any) -> bool:
    """A compile-time value (not a tensor, layer, block or poisoned value)."""
    return v is None or isinstance(v, (bool, int, float, str, Sym)) or (
        isinstance(v, (tuple, list)) and all(_is_data(x) for x in v))


def _takes_tuple(attrs: type, field: str) -> bool:
    """Whether an attribute accepts a tuple, so `reshape(x, B, T, -1)` may pass its items one by one."""
    ann = attrs.model_fields[field].annotation
    return typing.get_origin(ann) is tuple or any(typing.get_origin(a) is tuple for a in typing.get_args(ann))
