"""Calls of ops, layer instances and block values, and the attributes and shape checks of op nodes."""
from __future__ import annotations

import os
from typing import Any

import pydantic

from .. import ast as A
from ..attrs import BlockValue
from ..attrs import short as _short
from ..attrs import to_attr as _to_attr
from ..diagnostics import Diagnostic, Note, ShapeError, SpecError
from ..hyper import driven
from ..ir import Node
from ..limits import internal_error, short_int
from ..ops import registry
from ..ops.context import collect_needs
from ..source import Span
from ..symbolic import Sym
from ..symbolic import prod as numel
from ..types import ErrorType, TensorType, TupleType
from .builtins import BUILTINS
from .inits import INIT_KWARGS
from .sizes import size_env
from .values import (
    POISON,
    GraphBuilder,
    LayerInstance,
    Scope,
    Tensor,
    _closest,
    _literal,
    _params_str,
    _Poison,
    _shape,
    _takes_tuple,
    _typename,
)


class CallsMixin:
    """Calls of ops, layer instances and block values, and the attributes and shape checks of op nodes."""

    def call_named(self, name: str, name_span: Span | None, firsts: list, args: tuple, alias: str | None,
                   span: Span | None, scope: Scope, b: GraphBuilder) -> Any:
        pos, kw, arg_spans, arg_exprs = list(firsts), {}, {}, {}
        first_spans = [getattr(f, "span", None) for f in firsts]
        for a in args:
            v = self.ev(a.value, scope, b)
            if a.name is None:
                if kw:
                    raise self.fail("E0104", "positional argument after a keyword argument", a.span)
                arg_spans[len(pos)] = a.span
                arg_exprs[len(pos)] = a.value
                pos.append(v)
            else:
                if a.name in kw:
                    raise self.fail("E0103", f"argument {a.name!r} given twice", a.span)
                arg_spans[a.name] = a.span
                arg_exprs[a.name] = a.value
                kw[a.name] = v
        for i, s in enumerate(first_spans):
            arg_spans.setdefault(i, s)
        if any(v is POISON for v in [*pos, *kw.values()]):
            return POISON
        inst = scope.get(name)
        if isinstance(inst, LayerInstance):
            return self.apply_instance(inst, pos, kw, span, alias, b)
        if isinstance(inst, BlockValue):  # `ffn = SwiGLU(1408)` ... `x -> ffn`: the block with its arguments
            out = self.apply_block_value(inst, pos, kw, span, arg_spans, alias, b)
            if isinstance(out, Tensor) and isinstance(b.graph.hparams.get(name), BlockValue) and \
                    b.graph[out.node].kind == "call":
                b.graph.given[out.node] = name
            return out
        # `sqrt(2 * layers)` is compile-time arithmetic, `sqrt(x)` of a tensor the op
        tensor_op = registry.get(name) is not None and any(isinstance(v, Tensor) for v in [*pos, *kw.values()])
        if name in BUILTINS and name not in self.defs and not tensor_op:
            return BUILTINS[name](self, pos, kw, span, arg_spans, b)
        if name in self.defs:
            return self.apply_block(self.defs[name], pos, kw, span, arg_spans, alias, b, arg_exprs)
        if registry.get(name) is not None:
            tensors = [v for v in pos if isinstance(v, Tensor)]
            values = [v for v in pos if not isinstance(v, Tensor)]
            # positions of value args relative to the op's positional attrs
            vspans, vexprs = {}, {}
            k = 0
            for i, v in enumerate(pos):
                if not isinstance(v, Tensor):
                    vspans[k] = arg_spans.get(i)
                    vexprs[k] = arg_exprs.get(i)
                    k += 1
            for kname in kw:
                vspans[kname] = arg_spans.get(kname)
                vexprs[kname] = arg_exprs.get(kname)
            tspans = [arg_spans.get(i) for i, v in enumerate(pos) if isinstance(v, Tensor)]
            return self.apply_op(name, tensors, values, kw, span, alias, b, vspans, tspans, exprs=vexprs)
        raise self.unknown_callable(name, name_span, scope)

    def make_attrs(self, op: registry.OpDef, values: list, kw: dict, span: Span | None, spans: dict | None,
                   label: str) -> Any:
        spans = spans or {}
        positional = op.positional
        if len(values) > len(positional) and len(positional) == 1:
            if _takes_tuple(op.attrs, positional[0]):
                values = [tuple(values)]  # reshape(x, B, T, -1) / permute(x, 0, 2, 1)
        if len(values) > len(positional):
            raise self.fail("E0104", f"{label} takes at most {len(positional)} value argument(s) "
                            f"({', '.join(positional) or 'none'}), got {len(values)}",
                            spans.get(len(positional), span))
        data: dict[str, Any] = {}
        where: dict[str, Span | None] = {}
        for i, v in enumerate(values):
            data[positional[i]] = v
            where[positional[i]] = spans.get(i, span)
        for k, v in kw.items():
            if k in data:
                raise self.fail("E0103", f"{label}: argument {k!r} given twice", spans.get(k, span))
            data[k] = v
            where[k] = spans.get(k, span)
        for k, v in list(data.items()):
            if isinstance(v, LayerInstance):
                data[k] = v.name
            elif isinstance(v, Tensor):
                raise self.fail("E0108", f"{label}: argument {k!r} must be a compile-time value, got a tensor",
                                where[k])
            else:
                data[k] = _to_attr(v)
                big = _beyond_int64(data[k])
                if big is not None:
                    raise self.fail("E0107", f"{label}: bad value for {k!r}: {short_int(big)} does not fit in 64 bits",
                                    where[k])
        try:
            return keep_sizes(op.attrs(**data), data)
        except pydantic.ValidationError as err:
            diags = []
            for item in err.errors():
                key = str(item["loc"][0]) if item["loc"] else None
                sp = where.get(key, span) if key else span
                if item["type"] == "extra_forbidden":
                    names = [*op.attrs.model_fields, *(INIT_KWARGS if op.params else ())]  # + init=, bias_init=
                    fields = ", ".join(dict.fromkeys(names))
                    close = _closest(key or "", names) or ("init" if (key or "").startswith("init") and op.params
                                                           else None)  # `init_std=0.02`: now `init=normal(0.02)`
                    diags.append(Diagnostic("E0103", f"{label} has no argument {key!r}", sp, "unknown argument",
                                            help=(f"did you mean {close!r}? " if close else "") + f"it takes: {fields}"))
                elif item["type"] == "missing":
                    diags.append(Diagnostic("E0105", f"{label}: missing argument {key!r}", span,
                                            help=f"positional order: {', '.join(positional)}"))
                else:
                    got = data.get(key)
                    diags.append(Diagnostic("E0107", f"{label}: bad value {_short(got)} for {key!r}: {item['msg']}",
                                            sp))
            raise SpecError(*diags) from None

    def apply_op(self, opname: str, tensors: list, values: list, kw: dict, span: Span | None, alias: str | None,
                 b: GraphBuilder, vspans: dict | None = None, tspans: list | None = None,
                 layer: LayerInstance | None = None, exprs: dict | None = None) -> Any:
        op = registry.get(opname)
        self.tick(span, OP_STEPS)
        label = f"{opname} '{alias}'" if alias else opname
        lo, hi = op.arity
        if not lo <= len(tensors) <= (hi if hi is not None else len(tensors)):
            want = f"{lo}" if lo == hi else f"{lo} to {hi}" if hi is not None else f"at least {lo}"
            raise self.fail("E0104", f"{label} takes {want} tensor input(s), got {len(tensors)}", span)
        blocks = self.block_args(op, label, tensors, values, kw, vspans or {}, span, b)
        if blocks is None:
            return POISON
        values, kw = blocks
        own, kw = self.own_inits(op, kw, vspans or {})
        attrs = self.make_attrs(op, values, kw, span, vspans, label)
        if any(isinstance(t.type, ErrorType) for t in tensors):
            return POISON
        for i, t in enumerate(tensors):
            if isinstance(t.type, TupleType) and opname not in TAKES_TUPLES:
                which = f"input {i}" if len(tensors) > 1 else "its input"
                raise self.fail("E0108", f"{label} takes tensors, {which} is a tuple of {len(t.type.items)} "
                                f"tensors {t.type}", span, notes=[Note(t.span, "the tuple comes from here")],
                                help="unpack it first (`a, b = ...`) or pick one with [i]")
        name = alias if alias and b.free(alias) else b.fresh(alias or opname)
        label = f"{opname} '{name}'" if alias else opname
        ins = [t.type for t in tensors]
        if b.trace is not None:  # in a rolled loop's names (`x_channels`), not those of the input node's iteration
            self.trace.inputs[name] = ins
        try:
            with collect_needs() as needs:
                out = op.infer(ins, attrs)
            self.needs.extend((d, least, span, opname) for d, least in needs)
        except ShapeError as err:
            notes = []
            if err.operand is not None and err.operand < len(tensors):
                src = tensors[err.operand]
                which = f"input {err.operand}" if len(tensors) > 1 else "input"
                notes.append(Note(src.span, f"{which} ({src.type}) comes from here"))
            else:  # about all inputs (e.g. two shapes that do not broadcast): show where each comes from
                for i, t in enumerate(tensors):
                    which = f"input {i}" if len(tensors) > 1 else "input"
                    notes.append(Note(t.span, f"{which} ({t.type}) comes from here"))
            notes.extend(err.notes)
            # "conv2d: expects a rank-4 input", not "conv2d: conv2d expects ..."
            raise self.fail(err.code, f"{label}: {str(err).removeprefix(opname + ' ')}", span, notes=notes) from None
        except Exception as e:  # noqa: BLE001 - a shape rule's bug, located at this node
            if os.environ.get("SPECC_DEBUG"):
                raise
            raise internal_error(e, span, f"{label}'s shape rule") from e
        self.check_dims(out, label, span)
        init = ()
        if layer is None or name == layer.name:  # the layer that owns the parameters
            init = self.layer_init(opname, layer.name if layer else alias, op.param_shapes(ins, attrs), own,
                                   getattr(attrs, "tie", None), label, span)
        node = Node(name=name, kind="op", target=opname, inputs=tuple(t.node for t in tensors), attrs=attrs,
                    type=out, span=span, layer=layer.name if layer else None,
                    exprs=_attr_exprs(op, values, kw, exprs or {}), init=init)
        self.check_tie(op, node, ins, b)
        return b.add(node)

    def check_dims(self, t, label: str, span: Span | None) -> None:
        """Every dim a shape rule produced fits the int64 sizes tensors have at run time."""
        for item in t.items if isinstance(t, TupleType) else (t,):
            if not isinstance(item, TensorType):
                continue
            for d in (*item.shape, numel(item.shape)):  # each dim, and the number of elements
                coefs = d.terms.values() if isinstance(d, Sym) else (d,)
                if any(not -INT64 <= c < INT64 for c in coefs):
                    raise self.fail("E0305", f"{label}: its output {_short_type(item)} has a dimension or a number "
                                    "of elements beyond 64-bit sizes", span)

    def block_args(self, op: registry.OpDef, label: str, tensors: list, values: list, kw: dict, spans: dict,
                   span: Span | None, b: GraphBuilder) -> tuple[list, dict] | None:
        """Specialise the block values among an op's arguments (`moe(SwiGLU(1408), ...)`) for the inputs the op
        feeds them; the op's attribute gets the graph's name. None when a block failed (its errors are reported)."""
        if not any(isinstance(v, BlockValue) for v in [*values, *kw.values()]):
            return values, kw
        if any(isinstance(t.type, ErrorType) for t in tensors):
            return None

        def resolve(v: Any, where: Span | None, attr: str) -> Any:
            if not isinstance(v, BlockValue):
                return v
            if op.block_inputs is None:
                raise self.fail("E0108", f"{label} takes no block arguments, got {_typename(v)}", where)
            try:
                types = op.block_inputs([t.type for t in tensors])
            except ShapeError as err:
                raise self.fail(err.code, f"{label}: {err}", span) from None
            gname = self.instantiate(v, types)
            if gname is not POISON and self.last_instance_env is not None:
                # per attribute: moe's routed and shared experts may be one graph built from differently named
                # sizes (SwiGLU(hidden) and SwiGLU(shared_hidden) with equal values)
                b.graph.embedded.setdefault(f"{attr}:{gname}", self.last_instance_env)
            return gname

        values = [resolve(v, spans.get(i, span), op.positional[i] if i < len(op.positional) else str(i))
                  for i, v in enumerate(values)]
        kw = {k: resolve(v, spans.get(k, span), k) for k, v in kw.items()}
        return None if any(v is POISON for v in [*values, *kw.values()]) else (values, kw)

    def apply_block_value(self, bv: BlockValue, pos: list, kw: dict, span: Span | None, spans: dict,
                          alias: str | None, b: GraphBuilder) -> Any:
        twice = sorted(set(kw) & {k for k, _ in bv.kw})
        if twice:
            raise self.fail("E0103", f"block {bv}: argument {twice[0]!r} is already given", spans.get(twice[0], span),
                            notes=[Note(bv.span, "given here")])
        tensors = [v for v in pos if isinstance(v, Tensor)]
        values = [v for v in pos if not isinstance(v, Tensor)]
        return self.apply_block(self.defs[bv.name], [*tensors, *bv.values, *values], {**dict(bv.kw), **kw}, span,
                                {**dict(bv.spans), **spans}, alias, b)

    def instantiate(self, bv: BlockValue, types: list) -> str | _Poison:
        """The graph of block value `bv` specialised for inputs of `types` (memoised like any block call)."""
        scratch = GraphBuilder("_", "_", {}, None)  # only the call node's target is kept
        ins = [scratch.add(Node(name=f"in{i}", kind="input", type=t, span=bv.span)) for i, t in enumerate(types)]
        call = self.apply_block(self.defs[bv.name], [*ins, *bv.values], dict(bv.kw), bv.span, dict(bv.spans), None,
                                scratch)
        if call is POISON:
            return call
        node = scratch.graph[call.node]
        callee = self.graphs[node.target]
        env = {k: v for k, v in node.attrs.args if driven(v)}  # in the caller's names, for the emitted class
        for i, t in zip(callee.inputs, types):
            env.update(size_env(callee[i].type, t))
        self.last_instance_env = env
        return node.target

    def check_tie(self, op: registry.OpDef, node: Node, ins: list, b: GraphBuilder) -> None:
        tie = getattr(node.attrs, "tie", None)
        if tie is None:
            return
        other = b.graph[tie] if tie in b.graph else None
        if other is None or other.kind != "op":
            raise self.fail("E0101", f"{node.target} '{node.name}': tie={tie!r} must name a layer applied earlier in "
                            "this block", node.span)
        mine = op.param_shapes(ins, node.attrs).get("weight")
        odef = registry.get(other.target)
        theirs = odef.param_shapes([b.graph[i].type for i in other.inputs], other.attrs).get("weight")
        if mine != theirs:
            raise self.fail("E0301", f"{node.target} '{node.name}': cannot tie weight {_shape(mine)} to "
                            f"{other.target} '{other.name}' weight {_shape(theirs)}", node.span,
                            notes=[Note(other.span, f"{other.name} defined here")])

    def apply_instance(self, inst: LayerInstance, pos: list, kw: dict, span: Span | None, alias: str | None,
                       b: GraphBuilder) -> Any:
        if kw or any(not isinstance(v, Tensor) for v in pos):
            raise self.fail("E0104", f"layer {inst.name!r} is already configured; apply it to tensors only", span,
                            notes=[Note(inst.span, "configured here")])
        link = inst.link
        name = inst.name if inst.first is None else b.fresh(inst.name)
        if inst.first is not None and alias:
            name = b.fresh(alias)
        result = self.apply_op(link.func, pos, inst.values, inst.kw, span, name, b, inst.spans, layer=inst,
                               exprs=inst.exprs)
        if result is POISON:
            return result
        node = b.graph[result.node]
        op = registry.get(link.func)
        params = op.param_shapes([b.graph[i].type for i in node.inputs], node.attrs)
        if inst.first is None:
            inst.first, inst.params = node, params
        elif params != inst.params:
            raise self.fail("E0301", f"{link.func} '{inst.name}': this use needs parameters "
                            f"{_params_str(params)}, the first use made {_params_str(inst.params)}", span,
                            notes=[Note(inst.first.span, "first used here"), Note(inst.span, "declared here")])
        return result


INT64 = 2 ** 63
OP_STEPS = 10  # an op costs a shape rule and a graph node: about ten expression steps
TAKES_TUPLES = frozenset({"getitem"})  # ops whose shape rule takes a tuple value (the rest take tensors)


def _beyond_int64(v: Any) -> int | None:
    """The first int in an attribute value that no int64 holds (PyTorch and TVM take sizes as int64)."""
    if isinstance(v, int) and not isinstance(v, bool) and not -INT64 <= v < INT64:
        return v
    if isinstance(v, tuple):
        return next((b for b in map(_beyond_int64, v) if b is not None), None)
    return None


def _short_type(t: TensorType) -> str:
    text = str(t)
    return text if len(text) <= 80 else text[:60] + "...]"


def _attr_exprs(op: registry.OpDef, values: list, kw: dict, exprs: dict) -> tuple[tuple[str, str], ...]:
    """(attribute, spec expression) for each attribute given by a non-literal expression, by the same positional
    mapping as make_attrs (several values packed into one tuple attribute print as one tuple expression)."""
    if not exprs:
        return ()
    positional = op.positional
    named: dict[str, str] = {}
    if len(values) > len(positional) == 1 and _takes_tuple(op.attrs, positional[0]):
        items = [exprs.get(i) for i in range(len(values))]
        if all(e is not None for e in items) and not all(_literal(e) for e in items):
            named[positional[0]] = "(" + ", ".join(A.unparse(e) for e in items) + ")"
    else:
        for i in range(min(len(values), len(positional))):
            e = exprs.get(i)
            if e is not None and not _literal(e):
                named[positional[i]] = A.unparse(e)
    for k, v in kw.items():
        e = exprs.get(k)
        if e is not None and not _literal(e) and not isinstance(v, LayerInstance):  # tie=wte names itself
            named[k] = A.unparse(e)
    fields = op.attrs.model_fields
    return tuple((k, v) for k, v in named.items() if k in fields)


def keep_sizes(attrs: Any, data: dict) -> Any:
    """The validated attributes with the sizes given as HInts put back (pydantic makes them plain ints), so that
    the shape rule's arithmetic and the emitter see their expressions; only where validation kept the value."""
    for k, v in data.items():
        if driven(v) and getattr(attrs, k, None) == v and not isinstance(getattr(attrs, k), bool):
            attrs.__dict__[k] = v
    return attrs
