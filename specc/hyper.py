"""Sizes that remember the hyper-parameters they were computed from.

``HInt(2304, "3 * d")`` is the int 2304 everywhere (arithmetic, comparisons, hashing, shapes, JSON, TVM), and also
carries the expression, in its block's own names, that computed it. The elaborator binds a block's integer
hyper-parameters and the static sizes of its inputs as HInts named after themselves (``width``, ``x_channels``), so
every size its layers get is tracked through the shape rules' plain integer arithmetic (``width * expansion``) the
way torch's SymInts carry a formula next to their hint. A call's result sizes are put back in the caller's names
(:func:`substitute`).

Only printing differs, and only inside :func:`rendering`: there an HInt prints as its expression with each name
mapped by the renderer (``config.d`` in a model's constructor, ``self.heads`` in a forward), which is how the
PyTorch emitter writes sizes driven by a config instead of the numbers of one compile. Outside it (IR dumps,
diagnostics, golden files) an HInt prints as its number.
"""
from __future__ import annotations

import ast
import contextlib
import keyword
import operator
from contextvars import ContextVar
from functools import lru_cache
from typing import Any, Callable, Iterator

Renderer = Callable[[str], "str | None"]  # a name -> its text (None: no text for it; the number is printed)
_RENDER: ContextVar["tuple[Renderer, set[str]] | None"] = ContextVar("specc_hyper_render", default=None)


# names an expression may call that every emitted file has: never a hyper-parameter
KEEP = {"math", "min", "max", "int", "float", "len", "range"}


_MANGLE = "ʰ"  # before a name no expression may use as it is (`class`, `math`): never in a spec (ASCII) name


def expr_name(name: str) -> str:
    """The name as an expression may spell it: a Python keyword, one of KEEP or a non-identifier is mangled."""
    if name.isascii() and name.isidentifier() and not keyword.iskeyword(name) and name not in KEEP:
        return name
    return _MANGLE + name


def spec_name(name: str) -> str:
    return name.removeprefix(_MANGLE)


class Unrenderable(Exception):
    """An expression names something the renderer has no text for."""


class HInt(int):
    expr: str | None

    def __new__(cls, value: int, expr: str | None = None) -> "HInt":
        obj = super().__new__(cls, value)
        obj.expr = expr
        return obj

    def __getnewargs__(self) -> tuple:
        return int(self), self.expr

    def __repr__(self) -> str:
        ctx = _RENDER.get()
        if ctx is None or self.expr is None:
            return int.__repr__(self)
        return render_expr(self.expr, ctx)

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return int.__format__(self, spec) if spec else repr(self)

    def __neg__(self) -> Any:
        return _wrap(-int(self), _unary("-", self.expr))

    def __pos__(self) -> "HInt":
        return self

    def __abs__(self) -> Any:
        return self if self >= 0 else -self


class InputSize(HInt):
    """A block's input size (`x_channels`): what the caller passes, not what the block computes. Where a shape rule
    joins it with an equal size the block computes (`x + h`, h from `conv2d(out)`), the result takes the computed
    one: a branch decided at run time (`if channels(x) != out { x = ... }`) replaces the input's size, never the
    block's own (DDPM's ResnetBlock returned `x_channels`, the caller's `ch`, for what is `ch * mult[0]`)."""


def prefer_computed(a: Any, b: Any) -> Any:
    """Of two sizes a shape rule found equal, the one to keep: `a`, unless only it is a block's input size."""
    return b if isinstance(a, InputSize) and not isinstance(b, InputSize) and isinstance(b, HInt) else a


class HFloat(float):
    """A float hyper-parameter (`dropout`, `eps`) that remembers its name while it is passed on unchanged; arithmetic
    on it gives plain floats (only sizes are tracked through arithmetic)."""

    expr: str | None

    def __new__(cls, value: float, expr: str | None = None) -> "HFloat":
        obj = super().__new__(cls, value)
        obj.expr = expr
        return obj

    def __getnewargs__(self) -> tuple:
        return float(self), self.expr

    def __repr__(self) -> str:
        ctx = _RENDER.get()
        if ctx is None or self.expr is None:
            return float.__repr__(self)
        return render_expr(self.expr, ctx)

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return float.__format__(self, spec) if spec else repr(self)


def _float_binop(name: str, sym: str, reflected: bool = False):
    fn = getattr(operator, name)

    def method(self: Any, other: Any) -> Any:
        if isinstance(other, bool) or not isinstance(other, (int, float)):
            return NotImplemented
        a, b = (other, self) if reflected else (self, other)
        value = fn(float(a) if isinstance(a, float) else int(a), float(b) if isinstance(b, float) else int(b))
        ta, tb = _ftext(a), _ftext(b)
        if not isinstance(value, float) or (not _tracked(a) and not _tracked(b)):
            return value
        return HFloat(value, _unparse(ast.BinOp(_parse(ta), _OPS[sym](), _parse(tb))))

    method.__name__ = f"__{'r' if reflected else ''}{name.strip('_')}__"
    return method


def _binop(name: str, sym: str, reflected: bool = False):
    fn = getattr(operator, name)
    with_float = _float_binop(name, sym, reflected)

    def method(self: HInt, other: Any) -> Any:
        if isinstance(other, float):  # `d ** 0.5`, `d * 0.5`: a float that remembers d
            return with_float(self, other)
        if isinstance(other, bool) or not isinstance(other, int):
            a, b = (other, int(self)) if reflected else (int(self), other)
            try:
                return fn(a, b)
            except TypeError:
                return NotImplemented
        a, b = (other, self) if reflected else (self, other)
        value = fn(int(a), int(b))
        return _wrap(value, combine(_text(a), sym, _text(b)))

    method.__name__ = f"__{'r' if reflected else ''}{name.strip('_')}__"
    return method


for _name, _sym in (("add", "+"), ("sub", "-"), ("mul", "*"), ("floordiv", "//"), ("mod", "%"), ("pow", "**")):
    setattr(HInt, f"__{_name}__", _binop(_name, _sym))
    setattr(HInt, f"__r{_name}__", _binop(_name, _sym, reflected=True))



class Flag:
    """A bool hyper-parameter as the code writer sees an op attribute it sets (`sdpa(..., causal=causal)`): true or
    false as its value, printed as its name while rendering (`is_causal=self.causal`). Only the emitter makes these,
    on a copy of a node's attributes: bool cannot be subclassed, and the IR keeps plain bools."""

    __slots__ = ("value", "expr")

    def __init__(self, value: bool, expr: str) -> None:
        self.value, self.expr = bool(value), expr

    def __bool__(self) -> bool:
        return self.value

    def __eq__(self, other: Any) -> bool:
        return self.value == (other.value if isinstance(other, Flag) else other)

    def __hash__(self) -> int:
        return hash(self.value)

    def __repr__(self) -> str:
        ctx = _RENDER.get()
        return repr(self.value) if ctx is None else render_expr(self.expr, ctx)


def _tracked(v: Any) -> bool:
    return isinstance(v, (HInt, HFloat, Flag)) and v.expr is not None


def driven(v: Any) -> bool:
    """Whether `v` comes from hyper-parameters (its value is the config's, not a constant of the spec); a list or
    tuple does when one of its items does."""
    if isinstance(v, (list, tuple)):
        return any(driven(x) for x in v)
    return _tracked(v)


def rendering_active() -> bool:
    return _RENDER.get() is not None


def render_now(expr: str, keep: set[str]) -> str:
    """`expr` written by the active renderer (rendering_active() must hold), the names in `keep` left as they are
    (a loop's own variable)."""
    renderer, used = _RENDER.get()
    return render_expr(expr, (lambda k: k if k in keep else renderer(k), used))


def _ftext(v: Any) -> str:
    if _tracked(v):
        return v.expr
    return float.__repr__(float(v)) if isinstance(v, float) else int.__repr__(int(v))


def call_of(func: str, args: list, value: Any) -> Any:
    """`value` = func(*args) remembering `func(arg expressions)` when an argument comes from hyper-parameters."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not any(_tracked(a) for a in args):
        return value
    text = f"{func}({', '.join(_ftext(a) for a in args)})"
    return HInt(value, text) if isinstance(value, int) else HFloat(value, text)


# an arithmetic operator -> its method's name (`__{name}__`, `__r{name}__`): the ones HFloat tracks
FLOAT_OPS = {"+": "add", "-": "sub", "*": "mul", "/": "truediv", "**": "pow", "//": "floordiv", "%": "mod"}
for _sym, _name in FLOAT_OPS.items():
    setattr(HFloat, f"__{_name}__", _float_binop(_name, _sym))
    setattr(HFloat, f"__r{_name}__", _float_binop(_name, _sym, reflected=True))
HInt.__truediv__ = _float_binop("truediv", "/")
HInt.__rtruediv__ = _float_binop("truediv", "/", reflected=True)


def _text(v: int) -> str:
    return v.expr if isinstance(v, HInt) and v.expr is not None else int.__repr__(int(v))


def _wrap(value: Any, expr: str | None) -> Any:
    if isinstance(value, float) and expr is not None:  # `2 ** -k`
        return HFloat(value, expr)
    if not isinstance(value, int) or isinstance(value, bool) or expr is None:
        return value
    if _is_number(expr):
        return int(value)
    return HInt(value, expr)


def _is_number(expr: str) -> bool:
    return expr.lstrip("-").isdigit()


def _unary(op: str, expr: str | None) -> str | None:
    if expr is None:
        return None
    return canonical(ast.UnaryOp(ast.USub(), _parse(expr)))


_OPS = {"+": ast.Add, "-": ast.Sub, "*": ast.Mult, "//": ast.FloorDiv, "%": ast.Mod, "**": ast.Pow, "/": ast.Div}


@lru_cache(maxsize=65536)
def combine(a: str, op: str, b: str) -> str | None:
    """`a op b` as text with the fewest parentheses, identities folded (`x * 1`, `x + 0`, `x // 1`); None when both
    sides are numbers (the result is a plain int)."""
    if _is_number(a) and _is_number(b):
        return None
    if (op in ("*", "//") and b == "1") or (op in ("+", "-") and b == "0"):
        return a
    if (op == "*" and a == "1") or (op == "+" and a == "0"):
        return b
    return canonical(ast.BinOp(_parse(a), _OPS[op](), _parse(b)))


def canonical(tree: ast.expr) -> str | None:
    """The expression in the canonical form of specc's symbolic dims (`x - 1 + 1` is `x`, `3 * d // 3` is `d`,
    `(h - 1)//s + 1` stays), or as written where it leaves polynomials and floor division; None for a number."""
    try:
        value = _as_dim(tree)
    except (ValueError, TypeError, ZeroDivisionError):
        return _unparse(tree)
    if isinstance(value, int):
        return None
    return _unparse(_parse(str(value)))


def _as_dim(node: ast.expr) -> Any:
    from .symbolic import Sym  # the basics layer: no cycle (symbolic imports nothing of specc)

    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, (ast.Name, ast.Subscript, ast.Attribute)):
        return Sym.var(_unparse(node))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_as_dim(node.operand)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv)):
        a, b = _as_dim(node.left), _as_dim(node.right)
        if isinstance(node.op, ast.FloorDiv) and isinstance(b, int) and b <= 0:
            raise ValueError("floor division by a non-positive number")
        return {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
                ast.FloorDiv: operator.floordiv}[type(node.op)](a, b)
    raise ValueError(ast.dump(node))


@lru_cache(maxsize=4096)
def _parsed(expr: str) -> ast.expr:
    return ast.parse(expr, mode="eval").body


def _parse(expr: str) -> ast.expr:
    return _parsed(expr)


def _unparse(node: ast.expr) -> str:
    return ast.unparse(ast.fix_missing_locations(node))


def names(expr: str) -> set[str]:
    """The names an expression reads (`config.depths[0] - 1` reads `config`)."""
    return {spec_name(n.id) for n in ast.walk(_parse(expr)) if isinstance(n, ast.Name) and n.id not in KEEP}


def implied(cond: str, given: list[str]) -> bool:
    """Whether `cond` reads nothing once the `lhs == constant` conditions among `given` are put in: it is decided by
    them (`len(mult) - 1 > 0` given `len(mult) == 4`), so a check of it adds nothing to theirs."""
    known = {}
    for g in given:
        tree = _parse(g)
        if isinstance(tree, ast.Compare) and len(tree.ops) == 1 and isinstance(tree.ops[0], ast.Eq):
            left, right = tree.left, tree.comparators[0]
            if isinstance(left, ast.Constant):
                left, right = right, left
            if isinstance(right, ast.Constant) and not isinstance(left, ast.Constant):
                known[ast.dump(left)] = right.value

    class Put(ast.NodeTransformer):
        def visit(self, node: ast.AST) -> ast.AST:
            key = ast.dump(node) if isinstance(node, ast.expr) else None
            return ast.Constant(known[key]) if key in known else self.generic_visit(node)

    tree = Put().visit(_copy(_parse(cond)))
    return bool(known) and not any(isinstance(n, ast.Name) and n.id not in KEEP for n in ast.walk(tree))


def pinned_equal(pins: list[str]) -> dict[str, str]:
    """Sizes the conditions `pins` hold equal, name -> the expression it equals: `not ((x_channels) != (out))` (an
    `if channels(x) != out` not taken) gives {x_channels: out}; so does `x_channels == out`, and each side of an
    `and` (or of a negated `or`). Only a plain name on one side counts: the other side is what the block computed."""
    out: dict[str, str] = {}

    def visit(node: ast.expr, negated: bool) -> None:
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            visit(node.operand, not negated)
        elif isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or if negated else ast.And):
            for v in node.values:
                visit(v, negated)
        elif isinstance(node, ast.Compare) and len(node.ops) == 1 and \
                isinstance(node.ops[0], ast.NotEq if negated else ast.Eq):
            left, right = node.left, node.comparators[0]
            for a, b in ((left, right), (right, left)):
                if isinstance(a, ast.Name) and a.id not in KEEP and not isinstance(b, ast.Constant):
                    out.setdefault(spec_name(a.id), _unparse(b))
                    return

    for cond in pins:
        visit(_parse(cond), False)
    return out


def substitute(value: Any, env: dict[str, Any]) -> Any:
    """`value` with the names of its expression replaced by env's values (HInts or plain ints): a callee's size in
    its caller's names. A name env lacks leaves the plain number (the size is then fixed, not driven)."""
    if not isinstance(value, HInt) or value.expr is None:
        return value
    tree = _parse(value.expr)

    class Swap(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.expr:
            if node.id in KEEP:
                return node
            if spec_name(node.id) not in env:
                raise Unrenderable(node.id)
            v = env[spec_name(node.id)]
            if isinstance(v, (HList, HTuple)) and v.expr is not None:  # `widths[1]` given the caller's list `a`
                return _parse(v.expr)
            if isinstance(v, bool) or not isinstance(v, int):
                raise Unrenderable(node.id)
            return _parse(_text(v))

    try:
        new = Swap().visit(_copy(tree))
    except Unrenderable:
        return int(value)
    return _wrap(int(value), canonical(new))


def _copy(tree: ast.expr) -> ast.expr:
    return ast.parse(ast.unparse(tree), mode="eval").body


def render_expr(expr: str, ctx: "tuple[Renderer, set[str]]") -> str:
    """The expression with each name replaced by the renderer's text for it; the names used are noted in ctx."""
    renderer, used = ctx
    tree = _copy(_parse(expr))

    class Swap(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.expr:
            if node.id in KEEP:
                return node
            text = renderer(spec_name(node.id))
            if text is None:
                raise Unrenderable(node.id)
            used.add(spec_name(node.id))
            return _parse(text)

    return _unparse(Swap().visit(tree))


@contextlib.contextmanager
def rendering(renderer: Renderer) -> Iterator[set[str]]:
    """Inside: HInts print as their expressions, names mapped by `renderer`; yields the set of names printed."""
    used: set[str] = set()
    token = _RENDER.set((renderer, used))
    try:
        yield used
    finally:
        _RENDER.reset(token)


def named(value: Any, name: str) -> Any:
    """A hyper-parameter's value as the elaborator binds it: ints (and the ints of lists and tuples, as
    `name[i]`) remember `name`."""
    return _named(value, expr_name(name))


def _named(value: Any, expr: str) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return HInt(value, expr)
    if isinstance(value, float):
        return HFloat(value, expr)
    if isinstance(value, (list, tuple)):
        items = [_named(v, f"{expr}[{i}]") for i, v in enumerate(value)]
        return HList(items, expr) if isinstance(value, list) else HTuple(items, expr)
    return value


class HList(list):
    """A list hyper-parameter: its `len` remembers the name (`len(mult)`), so a loop over it pins its length."""

    def __init__(self, items=(), expr: str | None = None) -> None:
        super().__init__(items)
        self.expr = expr


class HTuple(tuple):
    expr: str | None

    def __new__(cls, items=(), expr: str | None = None) -> "HTuple":
        obj = super().__new__(cls, items)
        obj.expr = expr
        return obj

    def __getnewargs__(self) -> tuple:
        return tuple(self), self.expr


def length(value: list | tuple | str) -> int:
    """len(value), an HInt `len(name)` for a hyper-parameter list."""
    expr = getattr(value, "expr", None)
    return HInt(len(value), f"len({expr})") if expr is not None else len(value)


def plain(value: Any) -> Any:
    """`value` with every HInt made a plain int (lists and tuples too)."""
    if isinstance(value, HInt):
        return int(value)
    if isinstance(value, HFloat):
        return float(value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    return value
