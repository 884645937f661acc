"""Spec generators for the fuzzer: case `i` of seed `s` is a pure function of (s, i), so any finding is reproduced by
its number (`python -m tests.fuzz.run --seed s --only i`).

Three families, drawn in turn:

* **mutants** of the zoo specs (specs/*.nn): tokens deleted, duplicated, swapped, renamed; numbers replaced by
  hostile ones (huge, non-finite, beyond int64); stray characters; keywords glued to names;
* **chains** built from the op registry: an `input` of random dtype and rank, then one to four ops whose keyword
  attributes are drawn from each op's pydantic schema (valid values mostly, hostile values sometimes);
* **templates** of compile-time programs meant to exhaust something: big loops, big integers, deep nesting,
  block recursion that fans out, huge ranges and lists, with their sizes drawn at random.
"""
from __future__ import annotations

import random
import re
import typing
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SPECS = REPO / "specs"

TOKEN = re.compile(r'"[^"\n]*"|#[^\n]*|\d+\.\d+|\d+|[A-Za-z_]\w*|->|//|\*\*|[<>=!]=|\S')
NUMBER = re.compile(r"\d+(?:\.\d+)?")
NAME = re.compile(r"[A-Za-z_]\w*")

HOSTILE_NUMBERS = ["0", "1", "2", "3", "-1", "7", "64", "1000000", "2.5", "0.5", "1e999", "1e308", "-1e308",
                   "99999999999999999999", "2147483647", "9223372036854775807", "9223372036854775808",
                   "1" + "0" * 5000, "1e-400", "1_000", "0.0", "1.5"]
CHARS = list('(){}[],:=+-*/%@<>.#"\\ \n\t0123456789abxyz_') + ["é", "\x00", "->", "...", "as", "repeat", "\u2028",
                                                             "\ufeff", "**", "'"]
KEYWORDS = ["model", "block", "for", "in", "repeat", "if", "else", "return", "output", "input", "layer", "as",
            "import", "assert", "train", "none", "true", "not", "and", "or"]
DTYPES = ["f32", "f32", "f32", "f16", "bf16", "i64", "i32", "bool"]


def _sources() -> dict[str, str]:
    return {p.relative_to(SPECS).as_posix(): p.read_text() for p in sorted(SPECS.rglob("*.nn"))}


SOURCES = _sources()
ZOO = sorted(SOURCES)


def case(seed: int, i: int) -> tuple[str, str]:
    """(file name, spec text) of case i."""
    rng = random.Random(f"{seed}:{i}")
    family = (mutant, chain, template)[i % 3]
    return family(rng)


# ---- mutants --------------------------------------------------------------------------------------------------

def _splice(text: str, span: tuple[int, int], new: str) -> str:
    return text[:span[0]] + new + text[span[1]:]


def mutate(rng: random.Random, text: str) -> str:
    tokens = [m.span() for m in TOKEN.finditer(text)]
    kind = rng.choice(["delete", "duplicate", "swap", "number", "number", "insert", "rename", "glue", "line"])
    if kind == "insert" or not tokens:
        at = rng.randint(0, len(text))
        return _splice(text, (at, at), rng.choice(CHARS + KEYWORDS))
    a = rng.choice(tokens)
    if kind == "delete":
        return _splice(text, a, "")
    if kind == "duplicate":
        return _splice(text, a, text[a[0]:a[1]] + " " + text[a[0]:a[1]])
    if kind == "swap":
        a, b = sorted((a, rng.choice(tokens)))
        if a[1] > b[0]:
            return text
        return text[:a[0]] + text[b[0]:b[1]] + text[a[1]:b[0]] + text[a[0]:a[1]] + text[b[1]:]
    if kind == "number":
        spans = [m.span() for m in NUMBER.finditer(text)]
        return _splice(text, rng.choice(spans), rng.choice(HOSTILE_NUMBERS)) if spans else text
    if kind == "glue":  # a keyword run into the next name: `for i inrange(2)`
        spans = [m.span() for m in NAME.finditer(text) if m.group() in KEYWORDS]
        if not spans:
            return text
        s = rng.choice(spans)
        j = s[1]
        while j < len(text) and text[j] == " ":
            j += 1
        return text[:s[1]] + text[j:]
    if kind == "line":  # duplicate or drop a whole line
        lines = text.split("\n")
        k = rng.randrange(len(lines))
        if rng.random() < 0.5:
            lines.insert(k, lines[k])
        else:
            del lines[k]
        return "\n".join(lines)
    names = [m.span() for m in NAME.finditer(text)]
    src, dst = rng.choice(names), rng.choice(names)
    return _splice(text, dst, text[src[0]:src[1]])


def mutant(rng: random.Random) -> tuple[str, str]:
    name = rng.choice(ZOO)
    text = SOURCES[name]
    for _ in range(rng.randint(1, 4)):
        text = mutate(rng, text)
    return name, text


# ---- chains from the registry -----------------------------------------------------------------------------------

def _ops():
    from specc.ops.registry import all_ops

    return {n: op for n, op in sorted(all_ops().items()) if op.block_inputs is None}


def _value(rng: random.Random, ann, depth: int = 0, tame: bool = False) -> str | None:
    """A spec literal for a pydantic field annotation: mostly plausible, sometimes hostile (never when tame)."""
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin is typing.Annotated:
        return _value(rng, args[0], depth, tame)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return _value(rng, rng.choice(args), depth, tame)
    if origin is typing.Literal:
        return rng.choice([f'"{a}"' if isinstance(a, str) else str(a).lower() for a in args])
    if origin is tuple:
        if depth > 1:
            return "()"
        n = rng.choice([1, 2, 2] if tame else [0, 1, 2, 2, 3, 4])
        inner = args[0] if args else int
        return "(" + ", ".join(_value(rng, inner, depth + 1, tame) or "1" for _ in range(n)) + ("," if n == 1 else "") \
            + ")"
    if ann is bool:
        return rng.choice(["true", "false"])
    if ann is int and tame:
        return rng.choice(["1", "2", "2", "3", "4", "8", "-1", "0"])
    if ann is float and tame:
        return rng.choice(["0.0", "0.1", "0.5", "1.0", "1e-5"])
    if ann is int:
        return rng.choice(["1", "2", "3", "4", "8", "16", "0", "-1", "-2", "2147483647", "9223372036854775808",
                           "10**30", "1" + "0" * 4400])
    if ann is float:
        return rng.choice(["0.0", "0.1", "0.5", "1.0", "1e-5", "-1.0", "1e308 * 10.0", "1e999", "2.5"])
    if ann is str:
        return rng.choice(['"tanh"', '"none"', '"x"', '""', '"<script>"'])
    if ann is type(None):
        return "none"
    return None


def _tensor_type(rng: random.Random, tame: bool = False) -> str:
    rank = rng.choice([1, 2, 2, 3, 3, 3, 4, 4])
    dims = [rng.choice(["B", "T", "2", "3", "4", "8", "16", "1", "32"]) for _ in range(rank)]
    if tame:
        dims = ["B", "T", "4", "8"][:rank] if rank < 4 else ["B", "3", "8", "8"]
        return f"{rng.choice(['f32'] * 6 + ['bf16', 'i64'])}[{', '.join(dims)}]"
    if rng.random() < 0.05:
        dims[rng.randrange(rank)] = rng.choice(["0", "9223372036854775808", "1" + "0" * 4400])
    return f"{rng.choice(DTYPES)}[{', '.join(dict.fromkeys(dims) if rng.random() < 0.3 else dims)}]"


def _call(rng: random.Random, name: str, op, tame: bool = False) -> str:
    fields = list(op.attrs.model_fields.items())
    required = [(k, f) for k, f in fields if f.is_required()]
    optional = [(k, f) for k, f in fields if not f.is_required()]
    chosen = required + rng.sample(optional, rng.randint(0, min(2, len(optional))))
    args = []
    positional = list(op.positional)
    for k, f in chosen:
        v = _value(rng, f.annotation, tame=tame)
        if v is None:
            continue
        if k in positional and rng.random() < 0.5 and positional.index(k) == len(args):
            args.append(v)
        else:
            args.append(f"{k}={v}")
    return f"{name}({', '.join(args)})" if args or rng.random() < 0.5 else name


def chain(rng: random.Random, tame: bool = False) -> tuple[str, str]:
    ops = _ops()
    names = sorted(ops)
    lines = [f"model M(n: int = {rng.choice([1, 2, 4])}) {{", f"  input x: {_tensor_type(rng, tame)}"]
    if rng.random() < 0.3:
        lines.append(f"  input y: {_tensor_type(rng, tame)}")
    cur = "x"
    for j in range(rng.randint(1, 4)):
        name = rng.choice(names)
        op = ops[name]
        call = _call(rng, name, op, tame)
        if op.arity[0] >= 2 or (op.arity[1] or 9) >= 2 and rng.random() < 0.3:
            other = rng.choice(["x", cur, "y" if "input y" in lines[-1] or len(lines) > 2 else "x"])
            head, _, tail = call.partition("(")
            call = f"{head}({other}{', ' + tail if tail and tail != ')' else ')'}"
        form = rng.random()
        if form < 0.15:
            lines.append(f"  h{j} = {cur} + ({cur} -> {call})")
        elif form < 0.25:
            lines.append(f"  a{j}, b{j} = {cur} -> {call}")
            lines.append(f"  h{j} = a{j} * b{j}")
        else:
            lines.append(f"  h{j} = {cur} -> {call}")
        cur = f"h{j}"
    lines.append(f"  output out = {cur}")
    lines.append("}")
    return "chain.nn", "\n".join(lines) + "\n"


# ---- templates: compile-time programs that exhaust something -------------------------------------------------------

def _big(rng: random.Random) -> str:
    return rng.choice(["10", "1000", "100000", "10**10", "2147483647", "10**4400", "1e308", "10**5"])


TEMPLATES = [
    # repeated squaring: unbounded big-int arithmetic
    "model M() {{\n  input x: f32[B, 4]\n  n = 3\n  for i in range({a}) {{\n    n = n * n\n  }}\n  output y = x\n}}\n",
    # nested loops
    "model M() {{\n  input x: f32[B, 4]\n  s = 0\n  for i in range({a}) {{\n    for j in range({b}) {{\n"
    "      s = s + 1\n    }}\n  }}\n  output y = x\n}}\n",
    # a huge range or list
    "model M() {{\n  input x: f32[B, 4]\n  r = range({a})\n  output y = x\n}}\n",
    "model M() {{\n  input x: f32[B, 4]\n  r = [1, 2] * {a}\n  output y = x\n}}\n",
    "model M() {{\n  input x: f32[B, 4]\n  r = len(range({a}))\n  output y = x -> linear(r)\n}}\n",
    # a big integer printed in an error message or used as a dim
    "model M() {{\n  input x: f32[B, 4]\n  n = {a} ** {c}\n  output y = x -> linear(n)\n}}\n",
    "model M() {{\n  input x: f32[{a}, 4]\n  output y = x -> reshape(-1)\n}}\n",
    "model M() {{\n  input x: f32[B, 4]\n  output y = x -> reshape(B * {a}, -1)\n}}\n",
    # int() of non-finite floats, float times dims
    "model M() {{\n  input x: f32[B, 4]\n  n: int = int({f})\n  output y = x -> linear(n)\n}}\n",
    "model M() {{\n  input x: f32[B, 4]\n  output y = x -> reshape(B * {f}, -1)\n}}\n",
    # deep nesting of repeats, ifs and parentheses
    "model M() {{\n  input x: f32[B, 4]\n{nest}  output y = x\n}}\n",
    "model M() {{\n  input x: f32[B, 4]\n  n = {parens}\n  output y = x\n}}\n",
    # block recursion that fans out into many specialisations
    "block F(x, d: int) {{\n  if d == 0 {{\n    return x\n  }}\n  a = x -> F(d - 1)\n  b = x -> F(d - 1)\n"
    "  return a + b\n}}\nmodel M() {{\n  input x: f32[B, 4]\n  output y = x -> F({c})\n}}\n",
    "block F(x, d: int, k: int) {{\n  if d == 0 {{\n    return x\n  }}\n  return (x -> F(d - 1, k * 2)) + "
    "(x -> F(d - 1, k * 2 + 1))\n}}\nmodel M() {{\n  input x: f32[B, 4]\n  output y = x -> F({c}, 1)\n}}\n",
    # a repeat with a huge count, recurrent layers with huge sizes
    "model M() {{\n  input x: f32[B, 4]\n  repeat {a} {{\n    x = x -> relu\n  }}\n  output y = x\n}}\n",
    "model M() {{\n  input x: f32[B, T, 4]\n  o, h = x -> {rnn}(4, num_layers={a})\n  output y = o\n}}\n",
    # tuple values where a tensor is expected
    "model M() {{\n  input x: f32[B, T, 4]\n  s = x -> {tup}\n  output y = s {binop} x\n}}\n",
    "model M() {{\n  input x: f32[B, T, 4]\n  s = x -> {tup}\n  output y = s -> relu\n}}\n",
    # empty and odd tuples in attributes
    "model M() {{\n  input x: f32[B, 3, 8, 8]\n  output y = x -> {pool}\n}}\n",
    # slices
    "model M() {{\n  input x: f32[{a}, 4]\n  output y = x[{sl}]\n}}\n",
]


def template(rng: random.Random) -> tuple[str, str]:
    t = rng.choice(TEMPLATES)
    depth = rng.choice([5, 50, 200, 240, 260, 1000])
    kind = rng.choice(["repeat 1", "if true", "for i in range(1)"])
    nest = "".join(f"  {kind} {{\n" for _ in range(depth)) + "".join("  }\n" for _ in range(depth))
    parens = "(" * depth + "1" + ")" * depth
    text = t.format(
        a=_big(rng), b=_big(rng), c=rng.choice(["2", "5", "20", "40", "100", "10000"]),
        f=rng.choice(["1e308 * 10.0", "0.0 / 0.0", "1.5", "2.9", "0.5", "2.0", "1e999", "-1e999"]),
        nest=nest, parens=parens, rnn=rng.choice(["lstm", "gru", "rnn"]),
        tup=rng.choice(["split(2)", "lstm(4)", "gru(4)", "split(2, dim=-1)"]),
        binop=rng.choice(["+", "*", "-", "/"]),
        pool=rng.choice(["conv2d(4, 3, padding=())", "maxpool2d(2, padding=())", "avgpool2d(2, padding=())",
                         "conv2d(4, 3, stride=())", "maxpool2d((), stride=(1, 2, 3))", "conv2d(4, (), padding=1)",
                         "conv2d(4, 3, stride=9223372036854775808)", "conv2d(4, 3, padding=2147483648)"]),
        sl=rng.choice([":", "0:", ":9223372036854775808", "-9223372036854775809:", "::2", "..., :"]),
    )
    if rng.random() < 0.3:
        text = mutate(rng, text)
    return "template.nn", text
