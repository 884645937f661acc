"""One class for several specialisations of a block (class planning, classes.py, calls these on its plans):

* two specialisations down the two branches of one `if` become one class with that `if` (`merge_branches`,
  ResNet's Bottleneck with and without its projection shortcut);
* classes whose code differs only in shape comments are one class, the comments keeping the dims they share;
* a specialisation that is another with some sizes equal or an optional input bound to another input is built by
  the general class (`specialisations`), which also takes the optional inputs a specialisation it does not cover
  was given, where leaving them out (None) is its own code (`join`).
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import itertools
import re
from typing import TYPE_CHECKING, Callable

from ...ir import Module

if TYPE_CHECKING:
    from .plan import ClassPlan


def merge_branches(a: ClassPlan, b: ClassPlan) -> bool:
    """Make `a` the class of both `a` and `b` when they are one block down the two branches of one `if`: their
    checks differ in that one condition only, and `b`'s code is `a`'s without one run of its lines (or the other way
    round). The extra layers are built under `if cond:` and stored as a flag the forward tests, as torchvision's
    Bottleneck tests `downsample`. False (and nothing changed) otherwise."""
    if not a.generic or not b.generic or a.sources != b.sources or a.fwd_args != b.fwd_args or \
            len(a.pins) != len(b.pins):
        return False
    diff = [i for i, (p, q) in enumerate(zip(a.pins, b.pins)) if p[0] != q[0]]
    if len(diff) != 1:
        return False
    i = diff[0]
    cond_a, cond_b = a.pins[i][0], b.pins[i][0]
    if _norm(cond_b) != _norm(f"not ({cond_a})") and _norm(cond_a) != _norm(f"not ({cond_b})"):
        return False
    big, small, cond = (a, b, cond_a) if len(a.init) >= len(b.init) else (b, a, cond_b)
    init_run, fwd_run = _extra_run(big.init, small.init), _extra_run(big.forward, small.forward)
    weights_run = _extra_run(big.weights, small.weights)
    if init_run is None or (fwd_run is None and big.forward != small.forward) or \
            (weights_run is None and big.weights != small.weights):
        return False
    start, k = init_run
    attrs = [ln.split("=")[0].strip() for ln in big.init[start:start + k] if ln.startswith("self.")]
    if not attrs:
        return False
    flag = f"self.has_{attrs[0].removeprefix('self.').split('.')[0].split('[')[0]}"
    a.init = [f"{flag} = {cond}  # which branch of the spec's `if` this block takes",
              *_under_if(big.init, init_run, cond)]
    a.weights = _under_if(big.weights, weights_run, flag) if weights_run else big.weights
    a.forward, a.comments = big.forward, big.comments
    if fwd_run:
        a.forward = _under_if(big.forward, fwd_run, flag)
        a.comments = [*big.comments[:fwd_run[0]], "", *big.comments[fwd_run[0]:]]  # none for the `if` line
    a.pins = [p for j, p in enumerate(a.pins) if j != i]
    return True


_SHAPE = re.compile(r"\[([^\[\]]*)\]")


def shared_shape(a: str, b: str) -> str:
    """One shape comment for a line two members of a class run with different shapes: the dims they share, `*`
    for the rest (`[B, S, d]` and `[B*T, d]` -> `[*, d]`, as torch's docs write nn.Linear's input)."""
    if a == b:
        return a
    ma, mb = _SHAPE.fullmatch(a.strip()), _SHAPE.fullmatch(b.strip())
    if ma is None or mb is None:
        return ""
    da = [d.strip() for d in ma.group(1).split(",")] if ma.group(1).strip() else []
    db = [d.strip() for d in mb.group(1).split(",")] if mb.group(1).strip() else []
    head = 0
    while head < min(len(da), len(db)) and da[head] == db[head]:
        head += 1
    tail = 0
    while tail < min(len(da), len(db)) - head and da[-1 - tail] == db[-1 - tail]:
        tail += 1
    if head + tail == 0:
        return ""
    return "[" + ", ".join([*da[:head], "*", *da[len(da) - tail:]]) + "]"


def _norm(cond: str) -> str:
    return ast.unparse(ast.parse(cond, mode="eval"))


def _extra_run(big: list[str], small: list[str]) -> tuple[int, int] | None:
    """(start, length) of the one contiguous run of lines `big` has and `small` lacks; None when there is none."""
    k = len(big) - len(small)
    if k <= 0:
        return None
    return next(((start, k) for start in range(len(small) + 1) if big[:start] + big[start + k:] == small), None)


def _under_if(lines: list[str], run: tuple[int, int], cond: str) -> list[str]:
    start, k = run
    return [*lines[:start], f"if {cond}:", *("    " + ln for ln in lines[start:start + k]), *lines[start + k:]]


# ---- one class for a block and its special cases ------------------------------------------------------------------
# A block specialised twice where one specialisation is the other with some of its sizes equal (VGG's repeat body
# takes `x_channels` in its first iteration and `width` after: the second is the first with x_channels = width) or
# with an optional input bound to another (self-attention is cross-attention with `kv = x`, the spec's own
# `if kv == none { kv = x }`) is one class: the special case's callers build the general class with those values,
# and call its forward without that input (`forward(self, x, kv=None)` starts `if kv is None: kv = x`). Found by
# substituting into the general's code and comparing it with the special's, line for line: nothing is guessed.

_STORE = re.compile(r"^self\.(\w+) = (\w+)$")


def specialisations(m: Module, plans: list[ClassPlan], live: list[str],
                    callees: Callable[[Module, object], list[str]]) -> tuple[dict[str, tuple[str, dict]], list]:
    """special graph -> (general graph, substitution), and the planning order with each general before its first
    special case (when its callees still come before it)."""
    merges: dict[str, tuple[str, dict]] = {}
    by_block: dict[str, list[ClassPlan]] = {}
    for p in plans:
        if p.generic and p.members and p.members[0] != m.main:
            by_block.setdefault(m.graphs[p.members[0]].block, []).append(p)
    for ps in by_block.values():
        generals: list[tuple[ClassPlan, dict]] = []  # (plan, optional input -> what it defaults to)
        joined: set[int] = set()  # the generals that already take another specialisation's optional inputs
        for p in sorted(ps, key=lambda q: (-len(q.params), -len(q.fwd_args))):
            for gen, defaults in generals:
                sigma = _specialises(gen, p)
                if sigma is None and id(gen) not in joined:  # gen taking p's optional inputs as well
                    sigma = join(gen, p)
                if sigma is None or any(defaults.get(a, t) != t for a, t in sigma["args"].items()):
                    continue
                if "join" in sigma:
                    joined.add(id(gen))
                sigma["comments"] = list(p.comments)  # the shapes the special case sees
                defaults.update(sigma["args"])
                for member in p.members:
                    merges[member] = (gen.members[0], sigma)
                break
            else:
                generals.append((p, {}))
    order = list(live)
    for special, (general, _) in sorted(merges.items(), key=lambda kv: live.index(kv[0])):
        at, now = order.index(special), order.index(general)
        before = [c for c in callees(m, m.graphs[general]) if c in order]
        if now > at and all(order.index(c) < at for c in before):
            order.insert(at, order.pop(now))
    return {k: v for k, v in merges.items() if order.index(v[0]) < order.index(k)}, order


def _specialises(gen: ClassPlan, sp: ClassPlan, normal: bool = False) -> dict | None:
    """The substitution ({"params": general parameter -> special's, "args": general forward input -> special's})
    under which `gen`'s code is `sp`'s; None if there is none (tried over the few parameters only gen has)."""
    if not gen.generic or not sp.generic or any(t not in gen.params for t in sp.params):
        return None
    extra = [t for t in gen.params if t not in sp.params]
    gpos = [a for a in gen.fwd_args if "=" not in a]
    spos = [a for a in sp.fwd_args if "=" not in a]
    if [a for a in gen.fwd_args if "=" in a] != [a for a in sp.fwd_args if "=" in a] or gpos[:len(spos)] != spos:
        return None  # the special's inputs must come first, in order: its callers pass them by position
    extra_args = gpos[len(spos):]
    if len(extra) > 3 or len(extra_args) > 2 or not (extra or extra_args):
        return None
    def code(p: ClassPlan, params: dict, args: dict) -> tuple:
        init, fwd, wts, pins = _code(p, params, args, _stored(sp))
        return (init, [_normal(ln) for ln in fwd], [_normal(ln) for ln in wts], pins) if normal else \
            (init, fwd, wts, pins)
    want = code(sp, {}, {})
    for targets in itertools.product(sp.params, repeat=len(extra)):
        for arg_targets in itertools.product(spos, repeat=len(extra_args)):
            sigma = {"params": dict(zip(extra, targets)), "args": dict(zip(extra_args, arg_targets))}
            if code(gen, sigma["params"], sigma["args"]) == want:
                return sigma
    return None


def _stored(p: ClassPlan) -> dict[str, str]:
    """constructor parameter -> the attribute the constructor stores it in (`self.d = d`)."""
    return {mt.group(2): mt.group(1) for ln in p.init if (mt := _STORE.match(ln)) and mt.group(2) in p.params}


def _code(p: ClassPlan, params: dict[str, str], args: dict[str, str], stored_sp: dict[str, str]) -> tuple:
    """p's code (without its stores) with parameters and forward inputs renamed, for comparison."""
    on_self = {f"self.{attr}": f"self.{stored_sp.get(params[t], '?' + params[t])}"
               for t, attr in _stored(p).items() if t in params}

    def fwd(text: str) -> str:
        for old, new in on_self.items():
            text = re.sub(rf"{re.escape(old)}\b", new, text)
        return _rename(text, args)
    init = [_rename(ln, params) for ln in [*p.prologue, *p.init]
            if not (_STORE.match(ln) and _STORE.match(ln).group(2) in p.params)]
    pins = {(_rename(c, params), msg) for c, msg in p.pins}
    return (init, [fwd(ln) for ln in p.forward], [fwd(ln) for ln in p.weights],
            frozenset(pin for pin in pins if not _always(pin[0])))


def _always(cond: str) -> bool:
    """`d == d`: a check that a substitution made trivially true."""
    tree = ast.parse(cond, mode="eval").body
    return isinstance(tree, ast.Compare) and len(tree.ops) == 1 and isinstance(tree.ops[0], (ast.Eq, ast.LtE,
                                                                                             ast.GtE)) \
        and ast.dump(tree.left) == ast.dump(tree.comparators[0])


def alias(general: ClassPlan, special: ClassPlan, sigma: dict) -> ClassPlan:
    """How the special case's callers build the general class: each general parameter from the special's value."""
    source = dict(zip(special.params, special.sources))
    sources = [source[sigma["params"].get(t, t)] for t in general.params]
    return type(general)(general.name, [], general.params, [], [], [], general.fwd_args, "", sources=sources,
                     annots=general.annots, generic=True, inherits=special.inherits)


def take_optional_inputs(p: ClassPlan, sigmas: list[dict]) -> None:
    """The general class's forward takes the inputs its special cases leave out as optional, defaulting as the
    spec's `if kv == none { kv = x }` does, and those a joined special case takes (None: absent)."""
    defaults: dict[str, str] = {}
    added: list[str] = []
    for sigma in sigmas:
        defaults.update(sigma["args"])
        joined = sigma.get("join")
        if joined is not None:
            if (p.forward, p.weights) not in (joined["base"], (joined["forward"], joined["weights"])):
                raise AssertionError(f"{p.name}: the joined class's code changed between planning passes")
            p.forward, p.weights = list(joined["forward"]), list(joined["weights"])
            added += [a for a in joined["args"] if a not in added]
        if len(p.comments) == len(sigma.get("comments", ())):  # the dims the general and its special cases share
            p.comments = [shared_shape(a, b) for a, b in zip(p.comments, sigma["comments"])]
    if not defaults and not added:
        return
    p.fwd_args = [f"{a}=None" if a in defaults else a for a in p.fwd_args] + [f"{a}=None" for a in added]
    lines = [ln for a, t in defaults.items() for ln in (f"if {a} is None:", f"    {a} = {t}")]
    p.forward = [*lines, *p.forward]
    p.comments = [*[""] * len(lines), *p.comments]


# ---- one class for specialisations given different optional inputs -----------------------------------------------
# T5's self-attention is given a position bias and no kv, its cross-attention kv and no bias. One class takes both
# (`forward(self, x, kv=None, bias=None)`) when the cross-attention's code is the self-attention's with kv bound to x
# (as above) except on the lines that read the bias, and those lines with the bias absent are the cross-attention's:
# an op whose PyTorch call takes None for an absent input says so (TorchRule.none_keywords: sdpa's attn_mask).


def join(gen: ClassPlan, sp: ClassPlan) -> dict | None:
    """The substitution under which `gen`'s class, taking also the optional inputs only `sp` takes, is `sp`'s code,
    with "join": those inputs, the class's forward and weight lines, and gen's (what they replace); None if none."""
    own = [a for a in sp.fwd_args if a not in gen.fwd_args]
    if not own or len(own) > 2 or any(a not in sp.optional for a in own) or not gen.generic or not sp.generic \
            or any(t not in gen.params for t in sp.params) or len(gen.forward) != len(sp.forward):
        return None  # (the cheap tests first: a spec may specialise one block many times)
    absent = {a: "None" for a in own}
    without = dataclasses.replace(sp, fwd_args=[a for a in sp.fwd_args if a not in own],
                                  forward=[_drop_none(_rename(ln, absent)) for ln in sp.forward],
                                  weights=[_drop_none(_rename(ln, absent)) for ln in sp.weights])
    sigma = _specialises(gen, without, normal=True)
    if sigma is None or len(gen.weights) != len(sp.weights):
        return None
    _, fwd, wts, _ = _code(gen, sigma["params"], sigma["args"], _stored(sp))
    forward = [g if g_sp == s else s for g, g_sp, s in zip(gen.forward, fwd, sp.forward)]
    weights = [g if g_sp == s else s for g, g_sp, s in zip(gen.weights, wts, sp.weights)]
    joined = dataclasses.replace(gen, forward=forward, weights=weights)
    # both ways, whole: the class with gen's inputs bound is sp, and with sp's own inputs absent is gen
    if _code(joined, sigma["params"], sigma["args"], _stored(sp)) != _code(sp, {}, {}, _stored(sp)):
        return None
    if [_normal(_drop_none(_rename(ln, absent))) for ln in [*forward, *weights]] != \
            [_normal(ln) for ln in [*gen.forward, *gen.weights]]:
        return None
    return {**sigma, "join": {"args": own, "forward": forward, "weights": weights,
                              "base": (list(gen.forward), list(gen.weights))}}


def _rename(text: str, mapping: dict[str, str]) -> str:
    for old, new in mapping.items():
        text = re.sub(rf"(?<![\w.]){re.escape(old)}\b", new, text)
    return text


@functools.cache
def _none_keywords() -> frozenset:
    from ...ops import registry
    return frozenset(pair for op in registry.all_ops().values() if op.torch is not None
                     for pair in op.torch.none_keywords)


def _drop_none(line: str) -> str:
    """line without the `keyword=None` arguments that mean "no such input" to the call they are given to."""
    tree = _parsed(line)
    if tree is None:
        return line
    dropped = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            fn = ast.unparse(node.func)
            keep = [k for k in node.keywords if not ((fn, k.arg) in _none_keywords()
                                                      and isinstance(k.value, ast.Constant) and k.value.value is None)]
            dropped |= len(keep) != len(node.keywords)
            node.keywords = keep
    return _unparsed(line, tree) if dropped else line


def _normal(line: str) -> str:
    """line as ast.unparse writes it (so that a rewritten line compares with one as emitted)."""
    tree = _parsed(line)
    return line if tree is None else _unparsed(line, tree)


def _unparsed(line: str, tree: ast.Module) -> str:
    return line[:len(line) - len(line.lstrip())] + ast.unparse(tree)


def _parsed(line: str) -> ast.Module | None:
    try:
        return ast.parse(line.strip())
    except SyntaxError:  # `if kv is None:`, a line of a block
        return None
