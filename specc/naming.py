"""The PyTorch / state_dict layout of a compiled spec, in one place: how spec names become Python identifiers and
nn.Module attributes, which attribute each layer of a graph gets (so ``layer1.0.conv1.weight`` means the same in the
emitted PyTorch module, the TVM build's weight parameters, the diff interpreter, training scripts and weight maps),
how tuple results are unpacked, and the emitted file's names.

Every backend asks this module; none re-derives a name. Pure string work over the IR: imports neither torch nor tvm.
"""
from __future__ import annotations

import builtins
import keyword
import re
import sys
from pathlib import Path

from .ir import Graph, Module, Node
from .ops import registry
from .source import STDLIB
from .types import TupleType

# ---- identifiers ------------------------------------------------------------------------------------------------

# Names are escaped per namespace. A spec name that would mean something else in the emitted file gets a trailing
# "_" (and a counter when that is taken too): Python keywords, builtins, the names the emitted file defines or
# imports (locals and globals), and nn.Module's own attributes (attributes on self).
_GLOBALS = {"torch", "nn", "F", "math", "dataclass", "field", "self", "config", "layer", "losses", "m"}
_LOCALS = _GLOBALS | set(dir(builtins))
# public attributes of torch.nn.Module (tests/test_hostile.py checks this against the installed torch), plus the
# attributes emitted modules set or read on themselves
_MODULE_ATTRS = {
    "T_destination", "add_module", "apply", "bfloat16", "buffers", "call_super_init", "children", "compile", "cpu",
    "cuda", "double", "dump_patches", "eval", "extra_repr", "float", "forward", "get_buffer", "get_extra_state",
    "get_parameter", "get_submodule", "half", "ipu", "load_state_dict", "modules", "mtia", "named_buffers",
    "named_children", "named_modules", "named_parameters", "parameters", "register_backward_hook", "register_buffer",
    "register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook",
    "register_full_backward_pre_hook", "register_load_state_dict_post_hook", "register_load_state_dict_pre_hook",
    "register_module", "register_parameter", "register_state_dict_post_hook", "register_state_dict_pre_hook",
    "requires_grad_", "set_extra_state", "set_submodule", "share_memory", "state_dict", "to", "to_empty", "train",
    "type", "xpu", "zero_grad",
    "training", "config", "aux_loss", "last_aux_loss",
    # added to nn.Module by libraries users load beside the model (transformers 5 patches `smart_apply` in)
    "smart_apply",
}


def _identifier(name: str) -> str:
    """Any string as an identifier that is not private to Python or nn.Module (no leading underscore)."""
    name = re.sub(r"\W", "_", name, flags=re.ASCII) or "v"
    if name[0].isdigit() or name[0] == "_":
        name = "v" + name
    return name


def _escape(name: str, reserved: set[str]) -> str:
    name = _identifier(name)
    if keyword.iskeyword(name) or keyword.issoftkeyword(name) or name in reserved:
        name += "_"
    return name


def py_name(name: str) -> str:
    """A spec name as a local or global Python name: never a keyword, builtin or name the emitted file uses."""
    return _escape(name, _LOCALS)


def attr_name(name: str) -> str:
    """A spec name as an attribute of an nn.Module (so also a state_dict key part)."""
    return _escape(name, _MODULE_ATTRS)


class Namer:
    """Unique names in one namespace: the same key always gets the same name, first come first served."""

    def __init__(self, escape=py_name, taken: set[str] | None = None) -> None:
        self.escape = escape
        self.taken: set[str] = set(taken or ())
        self.names: dict[str, str] = {}

    def __call__(self, key: str) -> str:
        if key not in self.names:
            base = name = self.escape(key)
            k = 1
            while name in self.taken:
                name = f"{base}_{k}"
                k += 1
            self.taken.add(name)
            self.names[key] = name
        return self.names[key]


def class_name(name: str) -> str:
    parts = re.split(r"[_.]", name)
    out = "".join(p[:1].upper() + p[1:] for p in parts if p)
    return py_name(out or "Block")


def module_file_name(model: str) -> str:
    """The emitted file's name: never one that would shadow a module it (or Python) imports."""
    stem = class_name(model).lower()
    if stem in sys.stdlib_module_names or stem in _THIRD_PARTY or stem.startswith("torch"):
        stem += "_model"
    return stem + ".py"


# top-level packages that `import torch` pulls in: an emitted torch.py or numpy.py next to a script would shadow them
_THIRD_PARTY = {"torch", "numpy", "sympy", "mpmath", "networkx", "jinja2", "markupsafe", "filelock", "fsspec",
                "typing_extensions", "triton", "setuptools", "pkg_resources", "specc", "functorch", "torchgen"}


# ---- tuples and repeats -----------------------------------------------------------------------------------------

def unpacked_tuples(g: Graph) -> dict[str, list[str | None]]:
    """Tuple-valued nodes read only through getitems, one per item at most: item index -> getitem node."""
    out: dict[str, list[str | None]] = {}
    for n in g.nodes():
        if not isinstance(n.type, TupleType) or n.kind not in ("op", "call"):
            continue
        users = [g[u] for u in g.users(n.name)]
        if not users or any(u.kind != "op" or u.target != "getitem" for u in users):
            continue
        users = [u for u in users if g.users(u.name)]  # an item nothing reads is unpacked into `_`
        items: list[str | None] = [None] * len(n.type.items)
        for u in users:
            i = u.attrs.index % len(items)
            if items[i] is not None:
                break
            items[i] = u.name
        else:
            out[n.name] = items
    return out


def trivial_body(m: Module, body: Graph) -> str | None:
    """A repeat body that only calls one block (`x = x -> Block(...)`) is that block: return its graph."""
    inner = [n for n in body.nodes() if n.kind not in ("input", "output")]
    if len(inner) != 1 or inner[0].kind != "call":
        return None
    call = inner[0]
    outs = [body[o].inputs[0] for o in body.outputs]
    callee = m.graphs[call.target]
    if list(call.inputs) != body.inputs or len(callee.outputs) != len(outs):
        return None
    if len(outs) == 1 and outs[0] == call.name:
        return call.target
    return None


# ---- attributes of a graph's module -----------------------------------------------------------------------------

def module_keys(g: Graph, n: Node) -> list[str]:
    """The layer names of an op whose PyTorch module rule builds several layers (a fused op keeps each absorbed layer
    under its spec name, so its state_dict is the unfused one)."""
    if n.kind != "op" or (n.layer is not None and n.layer != n.name):
        return []
    rule = registry.get(n.target).torch
    if rule is None or rule.module is None:
        return []
    made = rule.module([g[i].type for i in n.inputs], n.attrs)
    return list(made) if isinstance(made, dict) else []


def attribute_namer(g: Graph) -> Namer:
    """The attribute namer of graph `g`'s nn.Module, with every layer's name already handed out in node order: a
    node's layer (or node) name, then the layers of a fused op. The PyTorch emitter names attributes through it,
    and ``attribute_names`` reads it, so every backend agrees on the state_dict keys."""
    attr_of = Namer(attr_name)
    unpacked = unpacked_tuples(g)
    stacks: dict[str, list] = {}  # stack -> [its attribute, entries so far]
    heads: dict[str, str] = {}  # the outermost list of `for v in range(n) as name` -> its attribute
    for n in g.nodes():
        if n.kind in ("input", "output") or (n.kind == "op" and n.target == "getitem" and n.inputs[0] in unpacked):
            continue
        if n.site:  # made inside `for v in range(n) as name`: `down_blocks.1.resnets.0`
            if n.site[0][0] not in heads:
                heads[n.site[0][0]] = _fresh(attr_of, attr_name(n.site[0][0]))
            attr_of.names[n.name] = site_path(n.site, heads[n.site[0][0]])
            continue
        if n.stack and n.kind in ("call", "repeat"):
            # `for ... as layer`: the blocks of item k are the entries of one module list, `layer{k+1}.0`, `.1`, ...;
            # a repeat there holds a run of entries from its position on (`layer1.1:`)
            if n.stack not in stacks:
                stacks[n.stack] = [_fresh(attr_of, attr_name(n.stack)), 0]
            head, k = stacks[n.stack]
            attr_of.names[n.name] = f"{head}.{k}" + (":" if n.kind == "repeat" else "")
            stacks[n.stack][1] = k + (n.attrs.count if n.kind == "repeat" else 1)
            continue
        attr_of(n.layer or n.name)
        for key in module_keys(g, n):
            attr_of(key)
    return attr_of


def _fresh(namer: Namer, base: str) -> str:
    """A name no attribute of `namer` has taken yet, claimed."""
    name, k = base, 1
    while name in namer.taken:
        name = f"{base}_{k}"
        k += 1
    namer.taken.add(name)
    return name


def site_path(site: tuple, head: str | None = None, index=lambda var, k: f".{k}") -> str:
    """A Node.site as a module path: `down_blocks.1.resnets.0` (`head`: the first segment's attribute; `index`
    writes each loop's position after its list: `[level]` for the path in the loops' own variables)."""
    return ".".join((head if i == 0 and head is not None else attr_name(name)) + "".join(index(v, k) for v, k in loops)
                    for i, (name, loops) in enumerate(site))


def stack_entry(attr: str) -> tuple[str, int, bool] | None:
    """Where a block held in a named stack sits: `layer1.0` -> ("layer1", 0, False); a repeat's run of entries from
    position 1 on, `layer1.1:` -> ("layer1", 1, True). None for a plain attribute (or a loop's site path)."""
    head, dot, index = attr.partition(".")
    if not dot or not index.rstrip(":").isdigit():
        return None
    return head, int(index.rstrip(":")), index.endswith(":")


def module_entry(attr: str, i: int) -> str:
    """The module of iteration i of the repeat whose attribute is `attr`: `h.3`, or in a stack `layer1.{1 + i}`."""
    entry = stack_entry(attr)
    return f"{entry[0]}.{entry[1] + i}" if entry else f"{attr}.{i}"


def attribute_names(g: Graph) -> dict[str, str]:
    """spec layer/node name -> attribute of graph `g`'s emitted nn.Module (a state_dict key part)."""
    return dict(attribute_namer(g).names)


def repeat_body(m: Module, n: Node) -> Graph:
    """The graph whose module a repeat node's ModuleList holds: its body, or the one block a trivial body calls."""
    return m.graphs[trivial_body(m, m.graphs[n.target]) or n.target]


# ---- files ------------------------------------------------------------------------------------------------------

def spec_relative(file: str, main: str) -> str:
    """A source file as the emitted code names it: relative to the main spec's folder (or the standard library),
    so that where the checkout lives never changes the output."""
    path, home = Path(file).resolve(), Path(main).resolve().parent
    for base in (home, STDLIB):
        if path.is_relative_to(base):
            return path.relative_to(base).as_posix()
    return path.name
