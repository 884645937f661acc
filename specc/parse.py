"""Text -> AST. The grammar (grammar/specc.lark) is syntax only; this module turns lark trees into specc.ast
nodes with spans, and lark's exceptions into located E0001 diagnostics."""
from __future__ import annotations

import contextlib
import functools
import gc
import math
import re
from pathlib import Path

import lark
from lark import Token, Tree

from . import ast as A
from .diagnostics import Diagnostic, Note, SpecError
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


def parse(text: str, file: str = "<string>") -> A.Program:
    with gc_paused():
        return _parse(text, file)


def _parse(text: str, file: str) -> A.Program:
    try:
        tree = _parser().parse(text)
    except lark.exceptions.UnexpectedInput as e:
        raise SpecError(_syntax_diag(e, text, file)) from None
    try:
        return _Builder(file).program(tree)
    except RecursionError:  # e.g. thousands of nested parentheses; `->` chains are built without recursion
        raise SpecError(Diagnostic("E0001", "syntax error: expressions nested too deeply", Span(file, 1, 1, 1, 2),
                                   help="split the expression into several assignments")) from None


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
        decls = tuple(A.DimDecl(self.span(d.children[0]),
                                int(d.children[0]) if d.data == "int_dim" else str(d.children[0])) for d in dims)
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
