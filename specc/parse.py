"""Text -> AST. The grammar (grammar/specc.lark) is syntax only; this module turns lark trees into specc.ast
nodes with spans, and lark's exceptions into located E0001 diagnostics."""
from __future__ import annotations

import contextlib
import functools
import gc
import math
import re
import sys
from pathlib import Path

import lark
from lark import Token, Tree

from . import ast as A
from .diagnostics import Diagnostic, Note, SpecError
from .limits import Limits, check_name
from .source import Span

GRAMMAR = Path(__file__).resolve().parent.parent / "grammar" / "specc.lark"

# readable names for the terminals lark reports in "expected ..." lists
_TOKEN_NAMES = {
    "NAME": "a name", "INT": "an integer", "FLOAT": "a number", "STRING": "a string", "LPAR": "'('",
    "RPAR": "')'", "LBRACE": "'{'", "RBRACE": "'}'", "LSQB": "'['", "RSQB": "']'", "COMMA": "','",
    "COLON": "':'", "EQUAL": "'='", "MORETHAN": "'>'", "LESSTHAN": "'<'", "DOT": "'.'", "COMP": "a comparison",
    "ADD_OP": "'+' or '-'", "MUL_OP": "an operator", "__ANON_0": "'->'", "$END": "end of file",
}


@functools.lru_cache(maxsize=1)
def _parser() -> lark.Lark:
    return lark.Lark(GRAMMAR.read_text(), parser="lalr", propagate_positions=True, maybe_placeholders=True)


@contextlib.contextmanager
def gc_paused():
    """Defer Python's cyclic garbage collector while parse trees, ASTs and graphs are built.

    They make almost no reference cycles (refcounting frees them; the collector catches the rest once it runs
    again), but its passes over the ever larger heap made check time grow faster than the spec: bench/check_scaling.py measured 0.87 ms per block at 500 blocks
    and 1.29 ms at 4,000 with it on; with it paused, a flat 0.6-0.7 ms."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def parse(text: str, file: str = "<string>", limits: Limits | None = None) -> A.Program:
    with gc_paused(), deep_recursion():
        return _parse(text, file, limits or Limits())


@contextlib.contextmanager
def deep_recursion(frames: int = 20_000):
    """Room for the recursive tree walks (builder, elaborator) up to the nesting budget: Limits.nesting bounds the
    depth of every tree first, so this never lets a spec recurse without end."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, frames))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def _parse(text: str, file: str, limits: Limits) -> A.Program:
    try:
        tree = _parser().parse(text)
    except lark.exceptions.UnexpectedInput as e:
        raise SpecError(_syntax_diag(e, text, file)) from None
    _check_nesting(tree, file, limits)
    _check_glued_keywords(tree, text, file)
    _check_name_lengths(tree, file, limits)
    return _Builder(file).program(tree)


def _check_nesting(tree: Tree, file: str, limits: Limits) -> None:
    """Refuse trees deeper than Limits.nesting (a `->` chain's spine does not count: it is walked in a loop), at
    the first construct that goes too deep."""
    stack = [(tree, 0)]
    while stack:
        t, depth = stack.pop()
        if depth > limits.nesting:
            meta = t.meta
            line, col = (meta.line, meta.column) if not meta.empty else (1, 1)
            span = Span(file, line, col, line, col + 1)
            raise SpecError(Diagnostic(
                "E0001", f"syntax error: nested more than {limits.nesting} levels deep", span, label="too deep",
                help=f"split it into several statements or blocks (or raise the limit with "
                f"{Limits.flag('nesting')} N)"))
        for i, c in enumerate(t.children):
            if isinstance(c, Tree):
                stack.append((c, depth if (t.data == "chain" and i == 0) else depth + 1))


def _check_name_lengths(tree: Tree, file: str, limits: Limits) -> None:
    """Names end up in file names, class names and pictures: refuse the absurdly long ones here, located."""
    for t in tree.scan_values(lambda v: isinstance(v, Token) and v.type == "NAME" and len(v) > limits.name_length):
        check_name(limits, str(t), Span(file, t.line, t.column, t.end_line, t.end_column))


@functools.lru_cache(maxsize=1)
def _keywords() -> frozenset[str]:
    return frozenset(t.pattern.value for t in _parser().terminals
                     if t.pattern.type == "str" and t.pattern.value.isidentifier())


_WORD = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*|[A-Za-z_][A-Za-z0-9_]*')


def _check_glued_keywords(tree: Tree, text: str, file: str) -> None:
    """`modelM()` or `for i inrange(2)`: the lexer splits a keyword off the front of a word the parser then
    accepts. A word that begins with a keyword but is no name token of the tree was split that way."""
    tokens = list(tree.scan_values(lambda v: isinstance(v, Token) and v.type == "NAME"))
    names = {t.start_pos for t in tokens}
    kws = _keywords()
    for m in _WORD.finditer(text):
        word = m.group()
        if word[0] in '"#' or m.start() in names or word in kws:
            continue
        kw = next((k for k in kws if word.startswith(k)), None)
        if kw is not None:
            line = text.count("\n", 0, m.start()) + 1
            col = m.start() - (text.rfind("\n", 0, m.start()) + 1) + 1
            raise SpecError(Diagnostic("E0001", f"syntax error: keyword {kw!r} runs into {word[len(kw):]!r}",
                                       Span(file, line, col, line, col + len(word)), label="here",
                                       help=f"write `{kw} {word[len(kw):]}`"))


def _syntax_diag(e: lark.exceptions.UnexpectedInput, text: str, file: str) -> Diagnostic:
    line, col = getattr(e, "line", 1) or 1, getattr(e, "column", 1) or 1
    if isinstance(e, lark.exceptions.UnexpectedCharacters):
        ch = text[e.pos_in_stream] if e.pos_in_stream < len(text) else "end of file"
        msg = f"unexpected character {ch!r}"
        width = 1
    elif isinstance(e, lark.exceptions.UnexpectedEOF):
        lines = text.splitlines() or [""]
        line, col = len(lines), len(lines[-1]) + 1
        msg = "unexpected end of file"
        width = 1
    else:
        tok = e.token
        if tok.type == "$END":
            lines = text.splitlines() or [""]
            line, col = len(lines), len(lines[-1]) + 1
            msg = "unexpected end of file"
        else:
            msg = f"unexpected {tok.value!r}"
        width = max(1, len(str(tok.value))) if tok.type != "$END" else 1
    expected = sorted({_TOKEN_NAMES.get(t, _pretty_terminal(t)) for t in (getattr(e, "expected", None) or [])})
    if not expected and getattr(e, "allowed", None):
        expected = sorted({_TOKEN_NAMES.get(t, _pretty_terminal(t)) for t in e.allowed})
    span = Span(file, line, col, line, col + width)
    help_ = f"expected {', '.join(expected[:8])}{' ...' if len(expected) > 8 else ''}" if expected else None
    tok = getattr(e, "token", None)
    if msg == "unexpected end of file" or (tok is not None and tok.value in (")", "]", "}")):
        # an unclosed bracket is the usual cause; lark's list of every token that could follow is no help
        end = len(text) if msg == "unexpected end of file" else tok.start_pos
        opened = _unclosed_bracket(text[:end], file)
        closing = {"(": ")", "[": "]", "{": "}"}
        if opened is not None and (tok is None or tok.type == "$END" or closing[opened[0]] != tok.value):
            ch, where = opened
            return Diagnostic("E0001", f"syntax error: {msg}: {ch!r} is never closed", span, label="here",
                              notes=[Note(where, f"{ch!r} opened here")], help=f"add {closing[ch]!r}")
    return Diagnostic("E0001", f"syntax error: {msg}", span, label="here", help=help_)


def _unclosed_bracket(text: str, file: str) -> tuple[str, Span] | None:
    """The innermost bracket still open at the end of `text` (strings and comments skipped)."""
    stack: list[int] = []
    for m in re.finditer(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*|[(){}\[\]]', text):
        tok = m.group()
        if tok in ("(", "[", "{"):
            stack.append(m.start())
        elif tok in (")", "]", "}") and stack:
            stack.pop()
    if not stack:
        return None
    pos = stack[-1]
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return text[pos], Span(file, line, col, line, col + 1)


def _pretty_terminal(name: str) -> str:
    try:
        for t in _parser().terminals:
            if t.name == name and t.pattern.type == "str":
                return repr(t.pattern.value)
    except Exception:  # pragma: no cover - best effort naming only
        pass
    return name.lower()


class _Builder:
    """lark Tree -> specc.ast. One method per grammar rule name."""

    def __init__(self, file: str) -> None:
        self.file = file

    def span(self, t) -> Span | None:
        if isinstance(t, Token):
            return Span(self.file, t.line, t.column, t.end_line, t.end_column)
        meta = getattr(t, "meta", None)
        if meta is None or getattr(meta, "empty", True):
            return None
        return Span(self.file, meta.line, meta.column, meta.end_line, meta.end_column)

    def program(self, tree: Tree) -> A.Program:
        imports, defs = [], []
        for ch in tree.children:
            if ch.data == "import_stmt":
                imports.append(A.Import(self.span(ch), _unquote(ch.children[0])))
            else:
                name_tok = ch.children[0]
                params = tuple(self.param(p) for p in (ch.children[1].children if ch.children[1] else []))
                defs.append(A.Def(self.span(ch), "model" if ch.data == "model_def" else "block", str(name_tok),
                                  self.span(name_tok), params, self.body(ch.children[2])))
        return A.Program(None, self.file, tuple(imports), tuple(defs))

    def param(self, t: Tree) -> A.Param:
        name, ty, default = t.children
        return A.Param(self.span(t), str(name), str(ty.children[0]) if ty is not None else None,
                       self.expr(default) if default is not None else None)

    def body(self, t: Tree) -> tuple:
        return tuple(self.stmt(s) for s in t.children)

    # ---- statements ----------------------------------------------------------------------------------------
    def stmt(self, t: Tree):
        return getattr(self, "s_" + t.data)(t, self.span(t))

    def s_input_stmt(self, t, sp):
        name, ttype, *cons = t.children
        dtype_tok, *dims = ttype.children
        dims = [d for d in dims if d is not None]
        decls = tuple(A.DimDecl(self.span(d.children[0]), _int(str(d.children[0]), self.span(d.children[0]))
                                if d.data == "int_dim" else str(d.children[0])) for d in dims)
        constraints = tuple(A.Constraint(self.span(c), str(c.children[0]), str(c.children[1]), self.expr(c.children[2]))
                            for c in cons if c is not None)
        return A.InputStmt(sp, str(name), str(dtype_tok), self.span(dtype_tok), decls, constraints)

    def s_output_stmt(self, t, sp):
        name, value = t.children
        return A.OutputStmt(sp, str(name), self.expr(value) if value is not None else None)

    def s_assign(self, t, sp):
        *names, value = t.children
        return A.Assign(sp, tuple(str(n) for n in names), self.expr(value))

    def s_layer_stmt(self, t, sp):
        name, link = t.children
        return A.LayerStmt(sp, str(name), self.link(link))

    def s_buffer_stmt(self, t, sp):
        return self.s_param_stmt(t, sp, trainable=False)

    def s_param_stmt(self, t, sp, trainable: bool = True):
        """`param gamma: f32[d, 1, 1] = constant(1e-6)` is `gamma = () -> parameter((d, 1, 1), init="constant",
        value=1e-6, dtype="f32") as gamma`: a parameter op with no tensor input, named like the statement."""
        name, ttype, init = t.children
        dtype_tok, *dims = ttype.children
        shape = tuple(A.Lit(self.span(d.children[0]), int(d.children[0])) if d.data == "int_dim"
                      else A.Name(self.span(d.children[0]), str(d.children[0])) for d in dims if d is not None)
        args = [A.Arg(self.span(ttype), "shape", A.TupleLit(self.span(ttype), shape)),
                A.Arg(self.span(dtype_tok), "dtype", A.Lit(self.span(dtype_tok), str(dtype_tok)))]
        if init is not None:
            args += self.param_init(self.expr(init))
        if not trainable:
            args.append(A.Arg(sp, "buffer", A.Lit(sp, True)))
        link = A.Link(sp, "parameter", sp, tuple(args), str(name))
        return A.Assign(sp, (str(name),), A.Chain(sp, A.TupleLit(sp, ()), link))

    def param_init(self, e) -> list[A.Arg]:
        """`ones`, `zeros`, `normal(0.02)`, `trunc_normal(std=0.02)`, `uniform(0.1)`, `constant(1e-6)`,
        `sincos("halves")` -> args."""
        if isinstance(e, A.Name):
            return [A.Arg(e.span, "init", A.Lit(e.span, e.id))]
        if isinstance(e, A.Call) and isinstance(e.func, A.Name):
            key = {"constant": "value", "sincos": "layout"}.get(e.func.id, "std")
            return [A.Arg(e.func.span, "init", A.Lit(e.func.span, e.func.id)),
                    *(A.Arg(a.span, a.name or key, a.value) for a in e.args)]
        if isinstance(e, A.Lit) and isinstance(e.value, (int, float)) and not isinstance(e.value, bool):
            return [A.Arg(e.span, "init", A.Lit(e.span, "constant")), A.Arg(e.span, "value", e)]
        raise SpecError(Diagnostic("E0108", "a parameter's init is a name (ones, zeros, normal, trunc_normal, "
                                   "uniform, sincos), a call such as normal(0.02), constant(1e-6) or "
                                   "sincos(\"halves\"), or a number", e.span,
                                   label="here"))

    def s_if_stmt(self, t, sp):
        cond, body, *rest = t.children
        branches = [(self.expr(cond), self.body(body))]
        orelse = None
        for r in rest:
            if r is None:
                continue
            if r.data == "elif_clause":
                branches.append((self.expr(r.children[0]), self.body(r.children[1])))
            else:
                orelse = self.body(r.children[0])
        return A.If(sp, tuple(branches), orelse)

    def s_for_stmt(self, t, sp):
        target, iterable, stack, body = t.children
        names = tuple(str(n) for n in target.children)
        return A.For(sp, names, self.expr(iterable), self.body(body), target.data == "for_tuple",
                     str(stack) if stack is not None else None)

    def s_repeat_stmt(self, t, sp):
        count, stack, var, body = t.children
        return A.Repeat(sp, self.expr(count), str(var) if var is not None else None, self.body(body),
                        str(stack) if stack is not None else None)

    def s_return_stmt(self, t, sp):
        return A.Return(sp, tuple(self.expr(c) for c in t.children))

    def s_assert_stmt(self, t, sp):
        cond, msg = t.children
        return A.Assert(sp, self.expr(cond), _unquote(msg) if msg is not None else None)

    def s_train_stmt(self, t, sp):
        return A.Train(sp, tuple(A.TrainItem(self.span(i), str(i.children[0]), self.expr(i.children[1]))
                                 for i in t.children))

    def s_init_stmt(self, t, sp):
        return A.InitSection(sp, tuple(self._init_rule(r) for r in t.children if isinstance(r, Tree)))

    def _init_rule(self, r):
        sel, *param, value = r.children
        return A.InitRule(self.span(r), str(sel), ".".join(map(str, param)) or None, self.expr(value))

    # ---- expressions ---------------------------------------------------------------------------------------
    def expr(self, t):
        if isinstance(t, Token):
            return self._token_expr(t)
        return getattr(self, "e_" + t.data)(t, self.span(t))

    def _token_expr(self, t: Token):
        sp = self.span(t)
        if t.type == "NAME":
            return A.Name(sp, str(t))
        if t.type == "INT":
            return A.Lit(sp, _int(str(t), sp))
        if t.type == "FLOAT":
            return A.Lit(sp, self.float_lit(t, sp))
        if t.type == "STRING":
            return A.Lit(sp, _unquote(t))
        raise AssertionError(f"unexpected token {t.type}")

    def e_name(self, t, sp):
        return A.Name(sp, str(t.children[0]))

    def e_int_lit(self, t, sp):
        return A.Lit(sp, _int(str(t.children[0]), sp))

    def e_float_lit(self, t, sp):
        return A.Lit(sp, self.float_lit(t.children[0], sp))

    def float_lit(self, tok: Token, sp: Span | None) -> float:
        v = float(str(tok).replace("_", ""))
        if math.isinf(v):
            raise SpecError(Diagnostic("E0002", f"invalid literal: {tok} is too large for a float", sp, label="here"))
        return v

    def e_str_lit(self, t, sp):
        return A.Lit(sp, _unquote(t.children[0]))

    def e_true_lit(self, t, sp):
        return A.Lit(sp, True)

    def e_false_lit(self, t, sp):
        return A.Lit(sp, False)

    def e_none_lit(self, t, sp):
        return A.Lit(sp, None)

    def e_tuple_lit(self, t, sp):
        return A.TupleLit(sp, tuple(self.expr(c) for c in t.children if c is not None))

    def e_list_lit(self, t, sp):
        return A.ListLit(sp, tuple(self.expr(c) for c in t.children if c is not None))

    def e_chain(self, t, sp):
        # `a -> f -> g -> ...` nests to the left; walk the spine in a loop so long chains stay off the Python stack
        spine = []
        while isinstance(t, Tree) and t.data == "chain":
            spine.append(t)
            t = t.children[0]
        node = self.expr(t)
        for c in reversed(spine):
            node = A.Chain(self.span(c), node, self.link(c.children[1]))
        return node

    def link(self, t) -> A.Link:
        name, args, alias = t.children
        return A.Link(self.span(t), str(name), self.span(name), self.args(args) if args is not None else None,
                      str(alias) if alias is not None else None)

    def args(self, t) -> tuple[A.Arg, ...]:
        out = []
        for a in t.children:
            if a is None:
                continue
            if isinstance(a, Tree) and a.data == "kwarg":
                out.append(A.Arg(self.span(a), str(a.children[0]), self.expr(a.children[1])))
            else:
                out.append(A.Arg(self.span(a), None, self.expr(a)))
        return tuple(out)

    def _bin(self, t, sp, op=None):
        left, *mid, right = t.children
        return A.BinOp(sp, op or str(mid[0]), self.expr(left), self.expr(right))

    def e_or_op(self, t, sp):
        return self._bin(t, sp, "or")

    def e_and_op(self, t, sp):
        return self._bin(t, sp, "and")

    def e_not_op(self, t, sp):
        return A.Unary(sp, "not", self.expr(t.children[0]))

    def e_compare(self, t, sp):
        return self._bin(t, sp)

    def e_binop(self, t, sp):
        return self._bin(t, sp)

    def e_pow_op(self, t, sp):
        return self._bin(t, sp, "**")

    def e_unary(self, t, sp):
        return A.Unary(sp, str(t.children[0]), self.expr(t.children[1]))

    def e_call(self, t, sp):
        return A.Call(sp, self.expr(t.children[0]), self.args(t.children[1]))

    def e_attr(self, t, sp):
        return A.Attr(sp, self.expr(t.children[0]), str(t.children[1]))

    def e_index(self, t, sp):
        obj, *subs = t.children
        return A.Index(sp, self.expr(obj), tuple(self.subscript(s) for s in subs))

    def subscript(self, s):
        if isinstance(s, Tree) and s.data == "slice":
            parts = [self.expr(c) if c is not None else None for c in s.children]
            return A.SliceExpr(self.span(s), *parts)
        if isinstance(s, Tree) and s.data == "ellipsis":
            return A.Lit(self.span(s), Ellipsis)
        return self.expr(s)


def _int(text: str, sp) -> int:
    try:
        return int(text.replace("_", ""))
    except ValueError:  # Python refuses int() of more than 4300 digits
        raise SpecError.at("E0001", f"integer literal too long ({len(text)} digits)", sp) from None


def _unquote(tok) -> str:
    s = str(tok)[1:-1]
    # one left-to-right pass over the escapes the grammar admits (an escaped backslash before n stays a backslash
    # and an n); never eval()
    simple = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}
    return re.sub(r"\\(.)", lambda m: simple.get(m.group(1), "\\" + m.group(1)), s)
