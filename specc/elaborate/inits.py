"""Initialisation declared in the spec: `init=` / `bias_init=` on a layer, and `init { ... }` sections.

A section at the top of a block or model holds rules `selector[.param]: initialiser`; a selector is an op kind
(`linear`: every linear layer) or a layer name (`c_proj`), the parameter is `weight` unless named. A section
covers the layers of its block and of every block that block calls. For each parameter of a layer the first
declaration found wins, in this order: the layer's own `init=` / `bias_init=`; then the sections from the innermost
block outwards (the model's section is the model-wide default), a name rule before a kind rule within one section.
A parameter nothing declares keeps PyTorch's default. A tied weight is its owner's. A rule that matches no
parameter is an error (a misspelt name would otherwise do nothing).

The result is stored on each layer's node (`Node.init`: (parameter, Init) pairs); the PyTorch emitter writes it as
an `_init_weights` method. Rules are evaluated once, when the block starts, from its hyper-parameters, so the same
rules apply to every layer of the block wherever the section stands in it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .. import ast as A
from ..attrs import FAN_INITS, Init
from ..diagnostics import Note, SpecError
from ..ops import registry
from ..source import Span
from .values import POISON, Scope, _literal, _typename

INIT_KWARGS = {"init": "weight", "bias_init": "bias"}  # a layer's own declarations and the parameter each sets


@dataclass(frozen=True)
class InitRule:
    """One rule of an `init { }` section, evaluated."""

    selector: str
    param: str | None  # None: `weight`
    init: Init
    by_kind: bool  # the selector names an op (every layer of that op) rather than a layer
    span: Span | None = field(default=None, compare=False)


class InitsMixin:
    """`init` sections and `init=` arguments: which initialiser each layer parameter gets."""

    def init_section(self, body: tuple, scope: Scope, b) -> tuple[InitRule, ...]:
        """The rules of the `init { }` sections at the top of a block or model body (an error per bad rule)."""
        rules: list[InitRule] = []
        for s in body:
            if not isinstance(s, A.InitSection):
                continue
            self.top_init_sections.add(id(s))
            for r in s.rules:
                try:
                    rule = self.init_rule(r, scope, b)
                except SpecError as e:  # report it and go on with the other rules
                    self.diags.extend(e.diagnostics)
                    continue
                if rule is not None:
                    rules.append(rule)
                    self.init_rules.setdefault(r.span, [rule, False])
        return tuple(rules)

    def init_rule(self, r: A.InitRule, scope: Scope, b) -> InitRule | None:
        op = registry.get(r.selector)
        if op is not None and op.params is None:
            raise self.fail("E0103", f"init rule {r.selector!r}: op {r.selector} has no parameters to initialise",
                            r.span)
        init = self.init_value(r.value, scope, b, f"init rule {r.selector!r}")
        if init is None:
            return None
        return InitRule(r.selector, r.param, init, op is not None, r.span)

    def init_value(self, e, scope: Scope, b, what: str) -> Init | None:
        """An initialiser expression's value, with its spec text when an argument was computed."""
        v = self.ev(e, scope, b)
        if v is POISON:
            return None
        if not isinstance(v, Init):
            raise self.fail("E0108", f"{what} takes an initialiser such as normal(0.02), zeros or "
                            f"kaiming_normal(mode=\"fan_out\"), got {_typename(v)}", e.span)
        computed = isinstance(e, A.Call) and not all(_literal(a.value) for a in e.args)
        return Init(v.kind, v.args, A.unparse(e)) if computed else v

    def init_key(self) -> tuple:
        """What a block specialisation's layers inherit: part of its memo key, so that the same block under other
        rules is its own graph."""
        return tuple(self.init_scopes)

    def layer_init(self, opname: str, alias: str | None, params: dict, own: dict, tie: str | None,
                   label: str, span: Span | None) -> tuple[tuple[str, Init], ...]:
        """(parameter, initialiser) for one layer: its own declarations, then the sections inside out."""
        out: dict[str, Init] = {}
        for p, (init, where) in own.items():
            if p not in params:
                raise self.fail("E0103", f"{label}: {_arg_of(p)}= names no parameter of this layer"
                                + _has(params), where)
            self.check_init_fits(init, p, params[p], label, where, span)
            out[p] = init
        for rules in reversed(self.init_scopes):
            for rule in sorted(rules, key=lambda r: r.by_kind):  # name rules first
                if rule.selector != (opname if rule.by_kind else alias):
                    continue
                p = rule.param or "weight"
                if p not in params:
                    if rule.by_kind:  # `linear.bias` on a linear without bias
                        continue
                    raise self.fail("E0103", f"init rule {rule.selector!r}: {label} has no parameter {p!r}"
                                    + _has(params), rule.span, notes=[Note(span, "the layer")])
                self.init_rules[rule.span][1] = True
                if p not in out:
                    self.check_init_fits(rule.init, p, params[p], label, rule.span, span)
                    out[p] = rule.init
        if tie is not None:
            out.pop("weight", None)  # the owner's
        return tuple((p, out[p]) for p in params if p in out)

    def check_init_fits(self, init: Init, param: str, shape: tuple, label: str, where: Span | None,
                        layer: Span | None) -> None:
        if init.kind in FAN_INITS and len(shape) < 2:
            raise self.fail("E0305", f"{init.kind} needs a parameter of rank >= 2 (it reads fan-in/fan-out); "
                            f"{label} {param} is [{', '.join(map(str, shape))}]", where,
                            notes=[Note(layer, "the layer")] if layer != where else [])

    def own_inits(self, op: registry.OpDef, kw: dict, spans: dict) -> tuple[dict, dict]:
        """Split a layer's own `init=` / `bias_init=` from its op attributes (an op with an attribute of that name,
        `parameter(init="zeros")`, keeps it unless it is given an initialiser)."""
        own, rest = {}, {}
        for k, v in kw.items():
            if k in INIT_KWARGS and (k not in op.attrs.model_fields or isinstance(v, Init)):
                if not isinstance(v, Init):
                    raise self.fail("E0108", f"{k}= takes an initialiser such as normal(0.02), zeros or "
                                    f"kaiming_normal(mode=\"fan_out\"), got {_typename(v)}", spans.get(k))
                own[INIT_KWARGS[k]] = (v, spans.get(k))
            else:
                rest[k] = v
        return own, rest

    def check_init_rules_used(self) -> None:
        """A rule that initialised nothing is a located error (a misspelt layer name would otherwise do nothing)."""
        for span, (rule, used) in self.init_rules.items():
            if not used:
                what = f"no {rule.selector} layer" if rule.by_kind else f"no layer named {rule.selector!r}"
                self.error("E0103", f"init rule {rule.selector!r}" + (f".{rule.param}" if rule.param else "")
                           + f" initialises nothing: {what}" + (f" has a parameter {rule.param!r}" if rule.param
                                                                 else " has a weight")
                           + " in this block or the blocks it calls", span)


def _arg_of(param: str) -> str:
    return next(k for k, p in INIT_KWARGS.items() if p == param)


def _has(params: dict) -> str:
    return f" (it has: {', '.join(params)})" if params else " (it has no parameters)"
