"""Symbolic dimensions: small integer polynomials over named symbols (B, T, ...).

A dim is either a plain ``int`` or a ``Sym``. Arithmetic that stays polynomial (+, -, *) is exact; a floor
division that does not divide evenly becomes an opaque atom such as ``(T - 1)//2``. Canonical printing makes
equality checks and golden files stable.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Union

Monomial = tuple[str, ...]  # sorted atom names, repeated for powers


class DimTypeError(TypeError):
    """A float mixed into a symbolic dim where the result is not provably an integer (`B * 1.5`): an error, never
    a silent truncation."""


def _exact(terms: dict[Monomial, int], f: float, what: str) -> Fraction:
    """`f` as an exact fraction, checked to keep every coefficient of `terms` integral after `what`."""
    if not math.isfinite(f):
        raise DimTypeError(f"{what}: {f} is not a finite number")
    q = Fraction(f)
    if any((c * q).denominator != 1 for c in terms.values()):
        raise DimTypeError(f"{what}: the result is not a whole number for every value of the dim")
    return q


class Sym:
    __slots__ = ("terms",)

    def __init__(self, terms: dict[Monomial, int]) -> None:
        self.terms = {m: c for m, c in terms.items() if c != 0}

    @classmethod
    def var(cls, name: str) -> "Sym":
        return cls({(name,): 1})

    # -- arithmetic ------------------------------------------------------------------------------------------
    def __add__(self, other: "Dim") -> "Dim":
        if isinstance(other, float):
            other = int(_exact({(): 1}, other, f"{self} + {other}"))
        o = _as_terms(other)
        t = dict(self.terms)
        for m, c in o.items():
            t[m] = t.get(m, 0) + c
        return _norm(t)

    __radd__ = __add__

    def __neg__(self) -> "Dim":
        return _norm({m: -c for m, c in self.terms.items()})

    def __sub__(self, other: "Dim") -> "Dim":
        return self + (-other if isinstance(other, Sym) else -other)

    def __rsub__(self, other: "Dim") -> "Dim":
        return (-self) + other

    def __mul__(self, other: "Dim") -> "Dim":
        if isinstance(other, float):  # 2*B * 1.5 == 3*B is fine; B * 1.5 is not a size
            q = _exact(self.terms, other, f"{self} * {other}")
            return _norm({m: int(c * q) for m, c in self.terms.items()})
        t: dict[Monomial, int] = {}
        for m1, c1 in self.terms.items():
            for m2, c2 in _as_terms(other).items():
                m = tuple(sorted(m1 + m2))
                t[m] = t.get(m, 0) + c1 * c2
        return _norm(t)

    __rmul__ = __mul__

    def __floordiv__(self, other: "Dim") -> "Dim":
        if isinstance(other, float):
            other = int(_exact({(): 1}, other, f"{self} // {other}"))
        if isinstance(other, int) and other != 0 and all(c % other == 0 for c in self.terms.values()):
            return _norm({m: c // other for m, c in self.terms.items()})
        if isinstance(other, Sym) and len(other.terms) == 1:
            exact = _div_by_monomial(self.terms, *next(iter(other.terms.items())))
            if exact is not None:
                return exact  # 32*B*T // (B*T) == 32, as reshape(B, T, -1) needs
            mono, coef = next(iter(other.terms.items()))
            parts = {m: _div_by_monomial({m: c}, mono, coef) for m, c in self.terms.items()}
            if coef > 0 and any(q is not None for q in parts.values()):
                # (a - p)//p == a//p - 1: the terms p divides come out (sizes are positive)
                rest = _norm({m: c for m, c in self.terms.items() if parts[m] is None})
                return sum(q for q in parts.values() if q is not None) + rest // other
        if isinstance(other, int) and other == 1:
            return self
        if isinstance(other, int) and other > 1:
            return _floordiv_int(self.terms, other)
        return Sym.var(f"({self})//{_paren(other)}")

    def __rfloordiv__(self, other: "Dim") -> "Dim":
        if isinstance(other, float):
            other = int(_exact({(): 1}, other, f"{other} // {self}"))
        return Sym.var(f"{_paren(other)}//({self})")

    # -- comparison / printing -------------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if isinstance(other, (int, Sym)):
            return _as_terms(other) == self.terms
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.terms.items())))

    def __str__(self) -> str:
        parts = []
        for m, c in sorted(self.terms.items(), key=lambda mc: (-len(mc[0]), mc[0])):
            # a floor division among other factors or negated keeps its parentheses: 2*((a)//p) is not 2*(a)//p,
            # -((2*a)//3) is not -(2*a)//3
            mono = "*".join(f"({a})" if (len(m) > 1 or c != 1) and _compound(a) else a for a in m)
            if not m:
                s = str(abs(c))
            elif abs(c) == 1:
                s = mono
            else:
                s = f"{abs(c)}*{mono}"
            parts.append(("-" if c < 0 else "+", s))
        if not parts:
            return "0"
        text = ("-" if parts[0][0] == "-" else "") + parts[0][1]
        for sign, s in parts[1:]:
            text += f" {sign} {s}"
        return text

    __repr__ = __str__

    def symbols(self) -> set[str]:
        return {a for m in self.terms for a in m}

    def subs(self, env: dict[str, int]) -> "Dim":
        total: Dim = 0
        for m, c in self.terms.items():
            term: Dim = c
            for atom in m:
                term = term * _atom_value(atom, env)
            total = total + term
        return total


Dim = Union[int, Sym]


def _atom_value(atom: str, env: dict[str, int]) -> Dim:
    if atom in env:
        return env[atom]
    if "//" in atom or "(" in atom:
        # opaque atom such as "(T - 1)//2": evaluate it if every symbol in it is known
        value = _safe_int_eval(atom, env)
        return Sym.var(atom) if value is None else value
    return Sym.var(atom)


def _safe_int_eval(text: str, env: dict[str, int]) -> int | None:
    """Integer arithmetic over names and literals only (+ - * // and parentheses); no eval()."""
    import ast

    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return None

    def ev(n):
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.Constant) and isinstance(n.value, int) and not isinstance(n.value, bool):
            return n.value
        if isinstance(n, ast.Name):
            if n.id not in env:
                raise KeyError(n.id)
            return env[n.id]
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            return -ev(n.operand)
        if isinstance(n, ast.BinOp):
            a, b = ev(n.left), ev(n.right)
            if isinstance(n.op, ast.Add):
                return a + b
            if isinstance(n.op, ast.Sub):
                return a - b
            if isinstance(n.op, ast.Mult):
                return a * b
            if isinstance(n.op, ast.FloorDiv) and b != 0:
                return a // b
        raise ValueError(ast.dump(n))

    try:
        return ev(tree)
    except (KeyError, ValueError, RecursionError):
        return None


def _div_by_monomial(terms: dict[Monomial, int], mono: Monomial, coef: int) -> "Dim | None":
    """terms / (coef * mono) when every term divides exactly, else None."""
    out: dict[Monomial, int] = {}
    for m, c in terms.items():
        rest = list(m)
        for atom in mono:
            if atom not in rest:
                return None
            rest.remove(atom)
        if c % coef:
            return None
        out[tuple(rest)] = out.get(tuple(rest), 0) + c // coef
    return _norm(out)


def _floordiv_int(terms: dict[Monomial, int], k: int) -> "Dim":
    """terms // k for k > 1, with the terms k divides taken out of the division (`(H - 2)//2 + 1` is `H//2`: the
    size after a pad-1 stride-2 conv) and a division of a division made one (`(H//2)//2` is `H//4`); exact for
    integer-valued symbols."""
    whole = {m: c // k for m, c in terms.items() if c % k == 0}
    rest = {m: c for m, c in terms.items() if c % k}
    if not rest:
        return _norm(whole)
    inner = _norm(rest)
    if isinstance(inner, int):  # only a constant is left (whole then holds the symbols)
        return _norm(whole) + inner // k
    nested = None
    if len(inner.terms) == 1:
        (mono, coef), = inner.terms.items()
        nested = _int_division(mono[0]) if coef == 1 and len(mono) == 1 else None
    if nested is not None:  # (X // b) // k == X // (b * k) for positive b, k
        quotient = nested[0] // (nested[1] * k)
    else:
        quotient = Sym.var(f"({inner})//{k}")
    return _norm(whole) + quotient


def _int_division(atom: str) -> "tuple[Dim, int] | None":
    """`(X)//b` (an atom the printer made, b a positive int) -> (X, b); None for any other atom."""
    head, sep, tail = atom.rpartition(")//")
    if not sep or not tail.isdigit() or int(tail) < 1:
        return None
    inner = _unwrapped(head + ")")  # the parentheses must enclose X alone: `(a)//2 + (b)//2` is no such atom
    return None if inner == head + ")" else (parse_dim(inner), int(tail))


def _compound(atom: str) -> bool:
    """An opaque atom with operators in it (`(T - 1)//2`), not a name or an index (`mult[0]`)."""
    return any(ch in atom for ch in "+-*/ ")


def _paren(d: Dim) -> str:
    s = str(d)
    return s if (isinstance(d, int) and d >= 0) or s.isidentifier() else f"({s})"


def _as_terms(d: Dim) -> dict[Monomial, int]:
    if isinstance(d, Sym):
        return d.terms
    if not isinstance(d, int):  # a float here would be truncated: the callers above convert exact ones first
        raise DimTypeError(f"cannot mix {type(d).__name__} {d} into a symbolic dim")
    return {(): d} if d else {}


def _norm(t: dict[Monomial, int]) -> Dim:
    t = {m: c for m, c in t.items() if c != 0}
    if not t:
        return 0
    if set(t) == {()}:
        return t[()]
    return Sym(t)


def dim_str(d: Dim) -> str:
    return str(d)


def is_static(d: Dim) -> bool:
    return isinstance(d, int)


def subs(d: Dim, env: dict[str, int]) -> Dim:
    return d.subs(env) if isinstance(d, Sym) else d


def prod(dims) -> Dim:
    out: Dim = 1
    for d in dims:
        out = out * d
    return out


def parse_dim(text: str) -> Dim:
    """Parse a printed dim back (used by the IR text parser); the inverse of ``str(dim)``.

    The printer joins terms with " + " / " - " and factors with "*"; a factor is an int, a symbol, or an opaque
    atom such as ``(H - 1)//2``, which has none of those separators outside its parentheses. So splitting at
    parenthesis depth 0 gives back the same terms, and ``((H - 1)//2)//2 + 1`` stays an atom plus 1."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    lead = -1 if text.startswith("-") else 1
    total: Dim = 0
    for sep, term in _split_top(text.removeprefix("-").lstrip(), (" + ", " - ")):
        val: Dim = 1
        for _, factor in _split_top(term, ("*",)):
            val = val * (int(factor) if factor.isdigit() else Sym.var(_unwrapped(factor)))
        sign = {"": lead, " + ": 1, " - ": -1}[sep]
        total = total + (val if sign == 1 else -val)
    return total


def _unwrapped(factor: str) -> str:
    """`((H - 1)//2)` -> `(H - 1)//2`: the parentheses the printer puts around a compound atom among factors (an atom
    itself never is one parenthesised whole)."""
    if not (factor.startswith("(") and factor.endswith(")")):
        return factor
    depth = 0
    for i, ch in enumerate(factor):
        depth += (ch == "(") - (ch == ")")
        if depth == 0:
            return factor[1:-1] if i == len(factor) - 1 else factor
    return factor


def _split_top(text: str, seps: tuple[str, ...]) -> list[tuple[str, str]]:
    """[(separator before, part)] of `text` split at `seps` outside parentheses; the first separator is ""."""
    parts, depth, start, before, i = [], 0, 0, "", 0
    while i < len(text):
        ch = text[i]
        depth += (ch == "(") - (ch == ")")
        sep = next((s for s in seps if depth == 0 and text.startswith(s, i)), None)
        if sep is not None:
            parts.append((before, text[start:i]))
            before, i = sep, i + len(sep)
            start = i
            continue
        i += 1
    parts.append((before, text[start:]))
    return parts


# ---- bounds: the largest value a dim takes when its symbols are bounded ---------------------------------------

def base_symbols(d: Dim) -> set[str]:
    """The input symbols a dim depends on, looking inside opaque atoms: {"F"} for ``(F - 1)//2 + 1``."""
    import ast

    if isinstance(d, int):
        return set()
    out: set[str] = set()
    for atom in d.symbols():
        if "(" in atom or "//" in atom:
            try:
                out |= {n.id for n in ast.walk(ast.parse(atom, mode="eval")) if isinstance(n, ast.Name)}
            except SyntaxError:
                out.add(atom)
        else:
            out.add(atom)
    return out


def is_monotone(d: Dim) -> bool:
    """True when `d` never decreases as any of its (positive) symbols grows: non-negative coefficients, and atoms
    built from such sums, products and floor divisions by positive numbers (what conv/pool/reshape produce). Then
    substituting each symbol's upper bound gives the dim's upper bound."""
    import ast

    if isinstance(d, int):
        return True
    if any(c < 0 for m, c in d.terms.items() if m):
        return False

    def const(n) -> bool:
        return not any(isinstance(x, ast.Name) for x in ast.walk(n))

    def mono(n) -> bool:
        if isinstance(n, ast.Expression):
            return mono(n.body)
        if isinstance(n, (ast.Name, ast.Constant)):
            return True
        if isinstance(n, ast.BinOp):
            if isinstance(n.op, ast.Add):
                return mono(n.left) and mono(n.right)
            if isinstance(n.op, ast.Sub):
                return mono(n.left) and const(n.right)
            if isinstance(n.op, ast.Mult):
                return mono(n.left) and mono(n.right) and _nonneg(n.left) and _nonneg(n.right)
            if isinstance(n.op, ast.FloorDiv):
                divisor = _safe_int_eval(ast.unparse(n.right), {}) if const(n.right) else None
                return mono(n.left) and divisor is not None and divisor > 0
        return False

    def _nonneg(n) -> bool:  # symbols are positive sizes; a constant factor must not be negative
        return not const(n) or (_safe_int_eval(ast.unparse(n), {}) or 0) >= 0

    for atom in d.symbols():
        if "(" in atom or "//" in atom:
            try:
                if not mono(ast.parse(atom, mode="eval")):
                    return False
            except SyntaxError:
                return False
    return True


def largest_within(d: Dim, sym: str, env: dict[str, int], limit: int, cap: int = 1 << 40) -> int | None:
    """The largest value of `sym` (>= 1) for which monotone `d`, with the other symbols at `env`, stays <= limit;
    None if even sym = 1 exceeds it."""
    def value(v: int) -> int | None:
        out = subs(d, {**env, sym: v})
        return out if isinstance(out, int) else None

    first = value(1)
    if first is None or first > limit:
        return None
    lo, hi = 1, 2
    while hi < cap and (value(hi) or 0) <= limit:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # value(lo) <= limit < value(hi)
        mid = (lo + hi) // 2
        if (value(mid) or 0) <= limit:
            lo = mid
        else:
            hi = mid
    return lo


def smallest_reaching(d: Dim, sym: str, target: int = 1, cap: int = 1 << 40) -> int | None:
    """The smallest value of `sym` (>= 1) for which monotone `d` (in `sym` alone) is at least `target`; None if
    not even `cap` reaches it."""
    def value(v: int) -> int:
        out = subs(d, {sym: v})
        return out if isinstance(out, int) else target  # not evaluable: make no claim

    if value(1) >= target:
        return 1
    lo, hi = 1, 2
    while value(hi) < target:  # value(lo) < target
        if hi >= cap:
            return None
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # value(lo) < target <= value(hi)
        mid = (lo + hi) // 2
        if value(mid) >= target:
            hi = mid
        else:
            lo = mid
    return hi
