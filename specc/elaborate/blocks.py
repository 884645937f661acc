"""Block calls: binding arguments, specialising a block per hyper-parameters and input types (memoised)."""
from __future__ import annotations

import dataclasses
from typing import Any

from .. import ast as A
from ..attrs import BlockValue
from ..attrs import to_attr as _to_attr
from ..diagnostics import Diagnostic, Note, SpecError
from ..hyper import HList, HTuple, named, plain
from ..hyper import driven as _tracked
from ..ir import CallAttrs, Node
from ..source import Span
from ..types import ErrorType, TupleType
from .sizes import as_computed, in_caller_terms, own_sizes, size_env
from .syntax import _seen_from_caller
from .values import (
    MAX_BLOCK_DEPTH,
    POISON,
    GraphBuilder,
    Scope,
    Tensor,
    _closest,
    _freeze,
    _Halt,
    _literal,
    _optional_tensor,
    _Return,
    _snake,
    _typename,
)


class BlocksMixin:
    """Block calls: binding arguments, specialising a block per hyper-parameters and input types (memoised)."""

    def apply_block(self, d: A.Def, pos: list, kw: dict, span: Span | None, spans: dict, alias: str | None,
                    b: GraphBuilder, exprs: dict | None = None) -> Any:
        tparams = [p for p in d.params if p.is_tensor]
        oparams = [p for p in d.params if _optional_tensor(p)]  # `mask: tensor = none`
        vparams = [p for p in d.params if not p.is_tensor and not _optional_tensor(p)]
        tensors = [v for v in pos if isinstance(v, Tensor)]
        values = [v for v in pos if not isinstance(v, Tensor)]
        if tparams and not tensors and not any(isinstance(v, Tensor) for v in kw.values()):
            return BlockValue(d.name, tuple(values), tuple(kw.items()), span, tuple(spans.items()))
        if not len(tparams) <= len(tensors) <= len(tparams) + len(oparams):
            raise self.fail("E0104", f"block {d.name} takes {len(tparams)} tensor input(s) "
                            f"({', '.join(p.name for p in tparams)}), got {len(tensors)}", span,
                            notes=[Note(d.name_span, f"{d.name} defined here")])
        given = {p.name: t for p, t in zip(tparams + oparams, tensors)}
        kw = dict(kw)
        for p in oparams:
            v = kw.pop(p.name, None)
            if v is None:
                continue
            if not isinstance(v, Tensor) or p.name in given:
                msg = "given twice" if p.name in given else f"must be a tensor or none, got {_typename(v)}"
                raise self.fail("E0103", f"block {d.name}: tensor input {p.name!r} {msg}", spans.get(p.name, span))
            given[p.name] = v
        present = [p for p in d.params if p.name in given]  # tensor inputs, in declaration order
        tensors = [given[p.name] for p in present]
        if len(values) > len(vparams):
            raise self.fail("E0104", f"block {d.name} takes {len(vparams)} hyper-parameter(s), got {len(values)}",
                            span, notes=[Note(d.name_span, f"{d.name} defined here")])
        bound: dict[str, Any] = {}
        for p, v in zip(vparams, values):
            bound[p.name] = v
        given_exprs = _given_exprs(vparams, pos, kw, bound, exprs or {})
        for k, v in kw.items():
            if k not in {p.name for p in vparams}:
                close = _closest(k, [p.name for p in vparams])
                raise self.fail("E0103", f"block {d.name} has no parameter {k!r}", spans.get(k, span),
                                help=f"did you mean {close!r}?" if close else None,
                                notes=[Note(d.name_span, f"{d.name} defined here")])
            if k in bound:
                raise self.fail("E0103", f"block {d.name}: parameter {k!r} given twice", spans.get(k, span))
            bound[k] = v
        if any(isinstance(t.type, ErrorType) for t in tensors):
            return POISON
        scope, hp = self.block_hparams(d, oparams, vparams, bound, span, spans)
        key = ("block", d.name, tuple((k, _freeze(v)) for k, v in hp.items()),
               tuple((p.name, t.type) for p, t in zip(present, tensors)))
        if self.init_scopes:  # the rules its layers inherit
            key += (self.init_key(),)
        gname = self.memo.get(key, ...)
        if gname is ...:  # not yet specialised (a failed specialisation is memoised as None: reported once)
            before = len(self.diags)
            gname = self.elaborate_block(d, scope, hp, present, tensors)
            self.memo[key] = gname
            for dg in self.diags[before:]:
                _seen_from_caller(dg, d, present, tensors, span)
        if gname is None:
            return POISON
        return self.add_call(d, gname, tensors, hp, given_exprs, span, alias, b)

    def add_call(self, d: A.Def, gname: str, tensors: list, hp: dict, given_exprs: dict, span: Span | None,
                 alias: str | None, b: GraphBuilder) -> Any:
        """The call node of block `d`'s specialisation `gname`, with the spec expressions of its arguments."""
        callee = self.graphs[gname]
        # its result's sizes in the caller's names: the callee's names are its hyper-parameters and input sizes
        env = {k: v for k, v in hp.items() if isinstance(v, (int, HList, HTuple))}
        for i, t in zip(callee.inputs, tensors):
            env.update(size_env(callee[i].type, t.type))
        pins = [cond for cond, _ in callee.pins]
        outs = [in_caller_terms(as_computed(o, pins, set(env)), env) for o in callee.output_types()]
        ty = outs[0] if len(outs) == 1 else TupleType(tuple(outs))
        name = alias if alias and b.free(alias) else b.fresh(alias or _snake(d.name))
        call_exprs = tuple((k, A.unparse(e)) for k, e in given_exprs.items() if e is not None and not _literal(e))
        given_blocks = {f"{k}_{a}": v for k, bv in hp.items() if isinstance(bv, BlockValue)
                        for a, v in self.block_value_args(bv).items() if _tracked(v)}
        if given_blocks:
            b.graph.call_values[name] = given_blocks
        if b.trace is not None:
            seen: dict = {}
            for i, t in zip(callee.inputs, tensors):
                seen.update(size_env(callee[i].type, t.type))
            self.trace.sizes[name] = seen
            self.trace.inputs[name] = [t.type for t in tensors]
        return b.add(Node(name=name, kind="call", target=gname, inputs=tuple(t.node for t in tensors),
                          attrs=CallAttrs(args=tuple((k, _to_attr(v)) for k, v in hp.items())), type=ty, span=span,
                          exprs=call_exprs))

    def block_hparams(self, d: A.Def, oparams: list, vparams: list, bound: dict, span: Span | None,
                      spans: dict) -> tuple[Scope, dict[str, Any]]:
        """The block's scope before its body runs and its hyper-parameters: the values given, else the defaults,
        each checked against its declared type (an error points at the argument and at the declaration)."""
        scope = Scope({p.name: None for p in oparams})
        hp: dict[str, Any] = {}
        gb_dummy = GraphBuilder("_", "_", {}, None)
        for p in vparams:
            if p.name in bound:
                val = bound[p.name]
            elif p.default is not None:
                val = self.ev(p.default, scope, gb_dummy)
            else:
                raise self.fail("E0105", f"block {d.name}: missing argument {p.name!r}", span,
                                notes=[Note(p.span, "declared here")])
            before = len(self.diags)
            val = self.check_param_type(p, val, d.name)
            if len(self.diags) > before:
                bad = self.diags.pop()
                raise SpecError(Diagnostic(bad.code, bad.message, spans.get(p.name, span), notes=[
                    Note(p.span, "declared here")]))
            # its sizes are written in the block's own names (specc/hyper.py); a block value's as `ffn_hidden`
            scope[p.name] = self.own_block_value(val, p.name) if isinstance(val, BlockValue) else named(val, p.name)
            hp[p.name] = val  # as the caller gave it: its constructor argument
        return scope, hp

    def block_value_args(self, bv: BlockValue) -> dict[str, Any]:
        """A block value's arguments by parameter name."""
        return {**dict(zip(self.value_params(bv), bv.values)), **dict(bv.kw)}

    def value_params(self, bv: BlockValue) -> list[str]:
        """The names of the hyper-parameters of the block a block value calls, in order."""
        d = self.defs.get(bv.name)
        return [p.name for p in d.params if not p.is_tensor and not _optional_tensor(p)] if d else []

    def own_block_value(self, bv: BlockValue, prefix: str) -> BlockValue:
        """`SwiGLU(hidden)` given as parameter `ffn`, with its sizes named `ffn_hidden` inside the receiving block."""
        def own(k: str, v: Any) -> Any:
            return named(plain(v), f"{prefix}_{k}") if _tracked(v) else v
        values = tuple(own(k, v) for k, v in zip(self.value_params(bv), bv.values))
        values += bv.values[len(values):]
        return dataclasses.replace(bv, values=values, kw=tuple((k, own(k, v)) for k, v in bv.kw))

    def elaborate_block(self, d: A.Def, scope: Scope, hp: dict, tparams: list, tensors: list) -> str | None:
        if self.block_depth >= MAX_BLOCK_DEPTH:
            self.error("E0111", f"block {d.name}: blocks nest more than {MAX_BLOCK_DEPTH} calls deep", d.name_span,
                       help="a block that calls itself needs an `if` that stops the recursion")
            return None
        name = self.unique_graph_name(d.name, d.name_span)
        bb = GraphBuilder(name, d.name, plain(hp), d.span)
        bb.as_model = d.kind == "model"  # a model called as a block: its `input`s bind, its `output`s name results
        bb.graph.optional = [p.name for p in tparams if _optional_tensor(p)]
        for p, t in zip(tparams, tensors):  # its static sizes are the block's own (x_channels, ...)
            scope[p.name] = bb.add(Node(name=p.name, kind="input", type=own_sizes(p.name, t.type), span=p.span))
        before = len(self.diags)
        returned = None
        self.block_depth += 1
        self.init_scopes.append(self.init_section(d.body, scope, bb))
        try:
            self.exec_body(d.body, scope, bb)
        except _Return as r:
            returned = r.values
        except SpecError as e:
            self.diags.extend(e.diagnostics)
        except _Halt:
            pass
        self.block_depth -= 1  # every exception of the body is caught above
        self.init_scopes.pop()
        if len(self.diags) > before:
            return None
        if returned is None:
            self.error("E0402", f"block {d.name} ends without `return`", d.name_span)
            return None
        for i, v in enumerate(returned):
            if v is POISON:
                return None
            if not isinstance(v, Tensor):
                self.error("E0108", f"block {d.name} must return tensors, value {i} is {_typename(v)}", d.name_span)
                return None
            bb.add(Node(name=bb.fresh("out" if len(returned) == 1 else f"out{i}"), kind="output", inputs=(v.node,),
                        type=v.type, span=v.span))
        return self.finish_graph(bb.graph)


def _given_exprs(vparams: list, pos: list, kw: dict, bound: dict, exprs: dict) -> dict:
    """The spec expression of each hyper-parameter given (positional ones in order after the tensors)."""
    given = dict(zip([p.name for p in vparams], [exprs.get(i) for i, v in enumerate(pos) if not isinstance(v, Tensor)]))
    given.update((k, exprs.get(k)) for k in kw if k in bound or k in {p.name for p in vparams})
    return given
