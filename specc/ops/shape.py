"""Shape ops: flatten, reshape, permute, transpose, concat, split, chunk, slicing, tuple access, reductions."""
from __future__ import annotations

from pydantic import PositiveInt, field_validator

from ..diagnostics import ShapeError
from ..hyper import HInt, prefer_computed
from ..symbolic import Dim, Sym, base_symbols, is_monotone, subs
from ..types import TensorType, TupleType
from .context import bound_hint, bounds, need, upper_bound
from .registry import NO_MACS, REDUCTION, SHAPE, Attrs, Example, OpDef, numel, register
from .torch_rule import TorchRule, pyval


def _np_flatten(xs, a: FlattenAttrs, p):
    x = xs[0]
    s, e = a.start_dim % x.ndim, a.end_dim % x.ndim
    return x.reshape(*x.shape[:s], -1, *x.shape[e + 1:])


def _np_slice(xs, a, p):
    key = tuple(... if it == "..." else None if it == "new" else it if isinstance(it, int) else slice(*it)
                for it in a.items)
    return xs[0][key]


def _np_split(xs, a, p):
    import numpy as np

    x = xs[0]
    if isinstance(a.sections, int):
        return tuple(np.split(x, a.sections, axis=a.dim))
    return tuple(np.split(x, np.cumsum(a.sections)[:-1], axis=a.dim))


def _np_concat(xs, a, p):
    import numpy as np

    return np.concatenate(xs, axis=a.dim)


def _np_unsqueeze(xs, a, p):
    import numpy as np

    return np.expand_dims(xs[0], a.dim)


def _np_reduce(fn: str):
    def ref(xs, a, p):
        import numpy as np

        x = xs[0].astype(np.float64)
        kw = {"ddof": 1 if a.unbiased else 0} if fn == "var" else {}
        return getattr(np, fn)(x, axis=a.dim, keepdims=a.keepdim, **kw)
    return ref


def _axis(d: int, rank: int, what: str = "dim") -> int:
    if not -rank <= d < rank:
        raise ShapeError(f"{what} {d} is out of range for a rank-{rank} tensor", "E0305")
    return d % rank


class FlattenAttrs(Attrs):
    start_dim: int = 1
    end_dim: int = -1


def _flatten_infer(ins: list[TensorType], a: FlattenAttrs) -> TensorType:
    (x,) = ins
    s, e = _axis(a.start_dim, x.rank), _axis(a.end_dim, x.rank)
    if s > e:
        raise ShapeError(f"flatten start_dim {a.start_dim} is after end_dim {a.end_dim}", "E0305")
    return x.with_shape((*x.shape[:s], numel(x.shape[s:e + 1]), *x.shape[e + 1:]))


def _flatten_call(args, a: FlattenAttrs, ins) -> str:
    if a.end_dim == -1:
        return f"torch.flatten({args[0]}, {a.start_dim})"
    return f"torch.flatten({args[0]}, {a.start_dim}, {a.end_dim})"


register(OpDef(name="flatten", attrs=FlattenAttrs, positional=("start_dim", "end_dim"), infer=_flatten_infer,
               categories=frozenset({SHAPE}), torch=TorchRule(call=_flatten_call),
               doc="merge dims start_dim..end_dim", numpy=_np_flatten, waive={"macs": NO_MACS},
               examples=(Example(("f32[2, 3, 4, 5]",)), Example(("f32[2, 3, 4, 5]",), {"start_dim": 0, "end_dim": 2}))))


class ReshapeAttrs(Attrs):
    shape: tuple[int | str, ...]  # ints, -1 (inferred), or symbolic dims by name/expression

    def dims(self) -> tuple[Dim, ...]:
        from ..symbolic import parse_dim

        return tuple(d if isinstance(d, int) else parse_dim(d) for d in self.shape)


def _reshape_infer(ins: list[TensorType], a: ReshapeAttrs) -> TensorType:
    (x,) = ins
    dims = list(a.dims())
    for d in dims:
        if isinstance(d, Sym) and not _is_size(d, least=1):
            raise ShapeError(f"reshape to {_fmt(dims)}: {d} is not a size (it can be 0 or negative)", "E0305")
    if sum(1 for d in dims if d == -1) > 1:
        raise ShapeError("reshape can infer at most one dim (-1)", "E0305")
    total = numel(x.shape)
    if -1 in dims:
        known = numel(d for d in dims if d != -1)
        if known == 0:
            raise ShapeError(f"cannot infer the -1 of a reshape of {x} to {_fmt(dims)}: another dim is 0", "E0305")
        q = total // known
        if isinstance(q, int) and isinstance(total, int) and isinstance(known, int) and total % known:
            raise ShapeError(f"cannot reshape {x} ({total} elements) to {_fmt(dims)}")
        if isinstance(q, Sym) and "//" in str(q):
            raise ShapeError(f"cannot prove {x} reshapes to {_fmt(dims)}: {total} is not divisible by {known}")
        dims[dims.index(-1)] = q
    elif numel(dims) != total:
        raise ShapeError(f"cannot reshape {x} ({total} elements) to {_fmt(dims)} ({numel(dims)} elements)")
    # the emitted reshape computes every symbolic dim from the input's sizes; at most one may be left to -1
    unknown = [d for d in a.dims() if d == -1 or (isinstance(d, Sym) and _runtime_dim(d, [(x, "x")]) is None)]
    if len(unknown) > 1:
        raise ShapeError(f"reshape of {x} to {_fmt(a.dims())}: {', '.join(str(d) for d in unknown)} cannot all be "
                         "computed from the input's sizes at run time (at most one dim can be inferred)", "E0305")
    return x.with_shape(dims)


def _fmt(dims) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _reshape_call(args, a: ReshapeAttrs, ins) -> str:
    # symbolic dims are computed from the input's sizes at run time; -1 stands for the one inferred dim
    x = ins[0]
    parts = []
    for j, d in enumerate(a.dims()):
        if isinstance(d, int) and j < x.rank and _same_size(d, x.shape[j]):  # kept where it is: read it there
            parts.append(f"{args[0]}.size({j})")  # (a class then needs no parameter for an input's static size)
        elif isinstance(d, int):
            parts.append(str(d))
        else:
            parts.append(_runtime_dim(d, [(x, args[0])]) or "-1")
    return f"{args[0]}.reshape({', '.join(parts)})"


def _same_size(d: int, s) -> bool:
    """Whether static size d is the input's size s under one name (an HInt naming the same size)."""
    return isinstance(d, HInt) and isinstance(s, HInt) and d.expr is not None and d.expr == s.expr \
        and d.expr.isidentifier()


def _runtime_dim(d: Dim, tensors: list[tuple[TensorType, str]]) -> str | None:
    """`d` as a Python expression over `arg.size(i)` of the (type, arg) `tensors`: a dim of one of them, or a
    polynomial whose symbols are each some dim of one (`B * T` from x: [B, T, 8] is `x.size(0) * x.size(1)`).
    None when it cannot be."""
    for t, arg in tensors:
        for i, s in enumerate(t.shape):
            if s == d:
                return f"{arg}.size({i})"
    if not isinstance(d, Sym):
        return str(d)
    sizes: dict[str, str] = {}
    for t, arg in tensors:
        for i, s in enumerate(t.shape):
            if isinstance(s, Sym) and len(s.terms) == 1:
                ((mono, coef),) = s.terms.items()
                if coef == 1 and len(mono) == 1:
                    sizes.setdefault(mono[0], f"{arg}.size({i})")
    text = ""
    for mono, coef in sorted(d.terms.items(), key=lambda mc: (-len(mc[0]), mc[0])):
        if any(atom not in sizes for atom in mono):
            return None
        factors = [sizes[atom] for atom in mono]
        if abs(coef) != 1 or not mono:
            factors.insert(0, str(abs(coef)))
        term = " * ".join(factors)
        text = (f"-{term}" if coef < 0 else term) if not text else f"{text} {'-' if coef < 0 else '+'} {term}"
    return text


register(OpDef(name="reshape", attrs=ReshapeAttrs, positional=("shape",), infer=_reshape_infer,
               categories=frozenset({SHAPE}), torch=TorchRule(call=_reshape_call),
               doc="view with a new shape; one dim may be -1", waive={"macs": NO_MACS},
               numpy=lambda xs, a, p: xs[0].reshape(a.shape),
               examples=(Example(("f32[2, 3, 4]",), {"shape": (6, 4)}), Example(("f32[2, 3, 4]",), {"shape": (2, -1, 2)}))))


class PermuteAttrs(Attrs):
    dims: tuple[int, ...]


def _permute_infer(ins: list[TensorType], a: PermuteAttrs) -> TensorType:
    (x,) = ins
    if len(a.dims) != x.rank:
        raise ShapeError(f"permute needs {x.rank} dims for {x}, got {len(a.dims)}", "E0303")
    axes = [_axis(d, x.rank) for d in a.dims]
    if sorted(axes) != list(range(x.rank)):
        raise ShapeError(f"permute dims {a.dims} are not a permutation of 0..{x.rank - 1}", "E0305")
    return x.with_shape(x.shape[i] for i in axes)


register(OpDef(name="permute", attrs=PermuteAttrs, positional=("dims",), infer=_permute_infer,
               categories=frozenset({SHAPE}),
               torch=TorchRule(call=lambda args, a, ins: f"{args[0]}.permute{pyval(tuple(a.dims))}"),
               doc="reorder dims", numpy=lambda xs, a, p: xs[0].transpose(a.dims), waive={"macs": NO_MACS},
               examples=(Example(("f32[2, 3, 4]",), {"dims": (2, 0, 1)}), Example(("f32[2, 3, 4, 5]",), {"dims": (0, 2, 1, -1)}))))


class TransposeAttrs(Attrs):
    dim0: int = -2
    dim1: int = -1


def _transpose_infer(ins: list[TensorType], a: TransposeAttrs) -> TensorType:
    (x,) = ins
    i, j = _axis(a.dim0, x.rank), _axis(a.dim1, x.rank)
    s = list(x.shape)
    s[i], s[j] = s[j], s[i]
    return x.with_shape(s)


register(OpDef(name="transpose", attrs=TransposeAttrs, positional=("dim0", "dim1"), infer=_transpose_infer,
               categories=frozenset({SHAPE}),
               torch=TorchRule(call=lambda args, a, ins: f"{args[0]}.transpose({a.dim0}, {a.dim1})"),
               doc="swap two dims (default: the last two)", numpy=lambda xs, a, p: xs[0].swapaxes(a.dim0, a.dim1),
               waive={"macs": NO_MACS}, examples=(Example(("f32[2, 3, 4]",)), Example(("f32[2, 3, 4, 5]",), {"dim0": 1, "dim1": 2}))))


class ConcatAttrs(Attrs):
    dim: int = -1


def _concat_infer(ins: list[TensorType], a: ConcatAttrs) -> TensorType:
    first = ins[0]
    ax = _axis(a.dim, first.rank)
    total: Dim = 0
    shape = list(first.shape)
    for i, t in enumerate(ins):
        if t.rank != first.rank:
            raise ShapeError(f"concat operand {i} has rank {t.rank}, operand 0 has rank {first.rank}", "E0303", i)
        if t.dtype != first.dtype:
            raise ShapeError(f"concat operand {i} is {t.dtype}, operand 0 is {first.dtype}", "E0302", i)
        for k in range(t.rank):
            if k != ax and t.shape[k] != first.shape[k]:
                raise ShapeError(f"concat operand {i} is {t}, operand 0 is {first}: dim {k} differs", "E0301", i)
            shape[k] = prefer_computed(shape[k], t.shape[k])  # a block's input size gives way, as in broadcast
        total = total + t.shape[ax]
    shape[ax] = total
    return first.with_shape(shape)


register(OpDef(name="concat", attrs=ConcatAttrs, positional=("dim",), arity=(1, None), infer=_concat_infer,
               categories=frozenset({SHAPE}),
               torch=TorchRule(call=lambda args, a, ins: f"torch.cat([{', '.join(args)}], dim={a.dim})"),
               doc="join tensors along a dim", waive={"macs": NO_MACS},
               numpy=_np_concat,
               examples=(Example(("f32[2, 3]", "f32[2, 4]")), Example(("f32[1, 3]", "f32[2, 3]", "f32[1, 3]"), {"dim": 0}))))


class SplitAttrs(Attrs):
    sections: PositiveInt | tuple[PositiveInt, ...]  # number of equal parts, or explicit sizes
    dim: int = -1


def _split_sizes(x: TensorType, a: SplitAttrs) -> tuple[int, tuple[Dim, ...]]:
    ax = _axis(a.dim, x.rank)
    size = x.shape[ax]
    if isinstance(a.sections, int):
        if isinstance(size, int) and size % a.sections:
            raise ShapeError(f"cannot split dim {a.dim} of size {size} into {a.sections} equal parts", "E0305")
        part = size // a.sections
        if isinstance(part, Sym) and "//" in str(part):  # chunk() of 8 into 3 gives 3, 3, 2: not equal parts
            raise ShapeError(f"cannot prove that dim {a.dim} of size {size} splits into {a.sections} equal parts",
                             "E0305")
        return ax, (part,) * a.sections
    if sum(a.sections) != size:  # a sum of ints never equals a symbolic dim: the split would fail at run time
        raise ShapeError(f"split sizes {a.sections} add up to {sum(a.sections)}, dim {a.dim} is {size}", "E0305")
    return ax, tuple(a.sections)


def _split_infer(ins: list[TensorType], a: SplitAttrs) -> TupleType:
    (x,) = ins
    ax, sizes = _split_sizes(x, a)
    return TupleType(tuple(x.with_shape((*x.shape[:ax], s, *x.shape[ax + 1:])) for s in sizes))


def _split_call(args, a: SplitAttrs, ins) -> str:
    if isinstance(a.sections, int):
        return f"{args[0]}.chunk({a.sections}, dim={a.dim})"
    return f"{args[0]}.split({pyval(tuple(a.sections))}, dim={a.dim})"


register(OpDef(name="split", attrs=SplitAttrs, positional=("sections", "dim"), infer=_split_infer,
               categories=frozenset({SHAPE}), torch=TorchRule(call=_split_call),
               doc="split into n equal parts or parts of given sizes; returns a tuple", numpy=_np_split, waive={"macs": NO_MACS},
               examples=(Example(("f32[2, 6]",), {"sections": 3}), Example(("f32[5, 2]",), {"sections": (2, 3), "dim": 0}))))


class GetItemAttrs(Attrs):
    index: int


def _getitem_infer(ins, a: GetItemAttrs):
    (t,) = ins
    if not isinstance(t, TupleType):
        raise ShapeError(f"cannot take item {a.index} of a tensor {t}: it is not a tuple", "E0305")
    if not -len(t.items) <= a.index < len(t.items):
        raise ShapeError(f"item {a.index} is out of range for a {len(t.items)}-tuple", "E0305")
    return t.items[a.index]


register(OpDef(name="getitem", attrs=GetItemAttrs, positional=("index",), infer=_getitem_infer,
               torch=TorchRule(call=lambda args, a, ins: f"{args[0]}[{a.index}]"),
               doc="one element of a tuple value", numpy=lambda xs, a, p: xs[0][a.index],
               waive={"macs": NO_MACS, "examples": "takes a tuple, which only ops make: the examples of every "
                      "tuple-valued op (split, rnn, gru, lstm, merged_linear) read their results through getitem"}))


Bound = int | str | None  # a slice bound: an int, or a symbolic size as text ("T", "T - 1", "2*T")
SliceItem = int | tuple[Bound, Bound, int | None] | str  # index, (start, stop, step), "..." or "new"


class SliceAttrs(Attrs):
    items: tuple[SliceItem, ...]

    @field_validator("items")
    @classmethod
    def _items(cls, items):
        from ..symbolic import parse_dim

        for it in items:
            if isinstance(it, str) and it not in ("...", "new"):
                raise ValueError(f"a subscript item is an int, a (start, stop, step) slice, '...' or 'new', not {it!r}")
            if isinstance(it, tuple) and len(it) != 3:
                raise ValueError(f"a slice is (start, stop, step), got {it}")
            for b in it[:2] if isinstance(it, tuple) else ():
                if isinstance(b, str) and not isinstance(parse_dim(b), Sym):
                    raise ValueError(f"a symbolic slice bound is a size such as 'T - 1', not {b!r}")
        return items

    def bounds(self, item: tuple) -> tuple[Dim | None, Dim | None, int | None]:
        """A slice item's (start, stop, step) with symbolic bounds parsed back into dims."""
        from ..symbolic import parse_dim

        start, stop, step = item
        return (parse_dim(start) if isinstance(start, str) else start,
                parse_dim(stop) if isinstance(stop, str) else stop, step)

    def symbolic(self) -> bool:
        """True when a bound is a symbolic size, read at run time from the sizes of the op's inputs."""
        return any(isinstance(b, str) for it in self.items if isinstance(it, tuple) for b in it)


def _slice_len(size: Dim, start, stop, step) -> Dim:
    step = step or 1
    if step <= 0:
        raise ShapeError("slice step must be positive", "E0305")
    if isinstance(start, Sym) or isinstance(stop, Sym):
        return _symbolic_len(size, start, stop, step)
    if isinstance(size, int):
        if start in (None, 0) and stop is None and step == 1:
            return size  # the whole dim: an HInt keeps its expression
        return len(range(size)[slice(start, stop, step)])
    s0 = 0 if start is None else start
    # the predicted length holds only where the dim is long enough to have it (Python clips a slice silently)
    need(size, max(1, -s0, stop if stop is not None and stop >= 0 else 1,
                   1 + s0 - stop if stop is not None and stop < 0 <= s0 else 1))
    if stop is None:
        n = size - s0 if s0 >= 0 else -s0
    elif stop < 0:
        n = size + stop - (s0 if s0 >= 0 else size + s0)
    else:
        n = stop - s0 if s0 >= 0 else None
        if n is None:
            raise ShapeError(f"cannot slice symbolic dim {size} with [{start}:{stop}]", "E0305")
    return n if step == 1 else (n + step - 1) // step


def _is_size(d: Dim, least: int = 0) -> bool:
    """`d` is never below `least`: it never decreases as its (positive) symbols grow, and is >= least with all of
    them 1."""
    return is_monotone(d) and (subs(d, dict.fromkeys(base_symbols(d), 1)) or 0) >= least


def _symbolic_len(size: Dim, start, stop, step: int) -> Dim:
    """The length of size[start:stop:step] where a bound is a symbolic size (checked in range by _check_bound):
    Python's negative bounds would count from the end at run time, so int bounds must not be negative here."""
    if any(isinstance(b, int) and b < 0 for b in (start, stop)):
        raise ShapeError(f"a symbolic bound takes no negative bound beside it, got [{_text(start)}:{_text(stop)}]",
                         "E0305", 0)
    end = size if stop is None else stop
    n = end - (start or 0)
    if not _is_size(n) and not _bounded_by(start, end):
        raise ShapeError(f"cannot prove the slice [{_text(start)}:{_text(stop)}] of a dim of size {size} is not "
                         f"reversed: its length {n} can be negative", "E0305", 0)
    return n if step == 1 else (n + step - 1) // step


def _bounded_by(start: Dim | None, end: Dim) -> bool:
    """`table[T:]` of a [16, d] table: the where-bounds keep T <= 16 (checked already outside the verifier)."""
    if bounds() is None:
        return True
    largest = upper_bound(start)[0] if isinstance(start, Sym) else None
    return isinstance(end, int) and largest is not None and largest <= end


def _text(b) -> str:
    return "" if b is None else str(b)


def _check_bound(b: Dim, size: Dim, d: int, ins: list[TensorType]) -> None:
    """A symbolic slice bound must be a size that cannot pass the end of dim `d` (its `size`), and the op's inputs
    must carry its symbols so the emitted code can read it at run time."""
    if not _is_size(b):
        raise ShapeError(f"the bound {b} can be negative (a negative bound counts from the end)", "E0305", 0)
    if _runtime_dim(b, [(t, "") for t in ins]) is None:
        raise ShapeError(f"no input has a dim to read the bound {b} from at run time", "E0305")
    room = size - b
    if isinstance(room, int):
        if room < 0:
            raise ShapeError(f"the bound {b} is past the end of dim {d} ({size})", "E0305", 0)
        return
    if not isinstance(size, int):
        raise ShapeError(f"cannot prove the bound {b} is within dim {d} ({size})", "E0304", 0)
    if bounds() is None:  # e.g. the verifier re-inferring types: bounds were checked when elaborated
        return
    largest, notes = upper_bound(b)
    if largest is None:
        # no operand: the notes show both the sliced tensor and the input whose line takes the `where`
        raise ShapeError(f"cannot check the bound {b} against dim {d} (size {size}): " + bound_hint(b, size),
                         "E0304")
    if largest > size:
        raise ShapeError(f"the bound {b} can be up to {largest}, past the end of dim {d} (size {size})",
                         "E0304", 0, notes=notes)


def _slice_infer(ins: list[TensorType], a: SliceAttrs) -> TensorType:
    x = ins[0]  # the other inputs carry the sizes that symbolic bounds read at run time
    if len(ins) > 1 and not a.symbolic():
        raise ShapeError("a slice takes extra inputs only to read symbolic bounds from", "E0305", 1)
    n_ell = sum(1 for it in a.items if it == "...")
    used = sum(1 for it in a.items if it not in ("...", "new"))
    if n_ell > 1:
        raise ShapeError("at most one ... in a subscript", "E0305")
    if used > x.rank:
        raise ShapeError(f"too many indices ({used}) for {x}", "E0303")
    out: list[Dim] = []
    d = 0
    for it in a.items:
        if it == "...":
            skip = x.rank - used
            out.extend(x.shape[d:d + skip])
            d += skip
        elif it == "new":
            out.append(1)
        elif isinstance(it, int):
            size = x.shape[d]
            if isinstance(size, int) and not -size <= it < size:
                raise ShapeError(f"index {it} is out of range for dim {d} of size {size}", "E0305")
            need(size, it + 1 if it >= 0 else -it)
            d += 1
        else:
            start, stop, step = a.bounds(it)
            for b in (start, stop):
                if isinstance(b, Sym):
                    _check_bound(b, x.shape[d], d, ins)
            out.append(_slice_len(x.shape[d], start, stop, step))
            d += 1
    out.extend(x.shape[d:])
    return x.with_shape(out)


def _slice_call(args, a: SliceAttrs, ins) -> str:
    pairs = list(zip(ins, args))
    parts = []
    for it in a.items:
        if it == "...":
            parts.append("...")
        elif it == "new":
            parts.append("None")
        elif isinstance(it, int):
            parts.append(str(it))
        else:
            start, stop, step = (_runtime_dim(b, pairs) if isinstance(b, Sym) else b for b in a.bounds(it))
            # spaced like black: `t[: x.size(1)]` when a bound is an expression, `t[1:4]` otherwise
            colon = " : " if any(isinstance(b, str) for b in (start, stop)) else ":"
            texts = [_text(start), _text(stop)] + ([str(step)] if step not in (None, 1) else [])
            parts.append(colon.join(texts).strip())
    return f"{args[0]}[{', '.join(parts)}]"


register(OpDef(name="slice", attrs=SliceAttrs, positional=("items",), infer=_slice_infer, arity=(1, None),
               categories=frozenset({SHAPE}), torch=TorchRule(call=_slice_call),
               doc="x[i, a:b, ...]: integer indices drop a dim, slices keep it; a bound may be a size (table[:T]) "
                   "read at run time from the sizes of the extra inputs", numpy=_np_slice, waive={"macs": NO_MACS},
               examples=(Example(("f32[3, 5, 4]",), {"items": (1, (None, None, 2), (1, -1, None))}),
                         Example(("f32[2, 3, 4]",), {"items": ("...", "new", (None, 2, None))}),
                         Example(("f32[2, 5]",), {"items": ((None, None, None), -1)}))))


class UnsqueezeAttrs(Attrs):
    dim: int


def _unsqueeze_infer(ins: list[TensorType], a: UnsqueezeAttrs) -> TensorType:
    (x,) = ins
    ax = _axis(a.dim, x.rank + 1)
    s = list(x.shape)
    s.insert(ax, 1)
    return x.with_shape(s)


register(OpDef(name="unsqueeze", attrs=UnsqueezeAttrs, positional=("dim",), infer=_unsqueeze_infer,
               categories=frozenset({SHAPE}),
               torch=TorchRule(call=lambda args, a, ins: f"{args[0]}.unsqueeze({a.dim})"), doc="insert a size-1 dim",
               numpy=_np_unsqueeze, waive={"macs": NO_MACS},
               examples=(Example(("f32[2, 3]",), {"dim": 1}), Example(("f32[2, 3]",), {"dim": -1}))))


class ReduceAttrs(Attrs):
    dim: int | tuple[int, ...] = -1
    keepdim: bool = False

    @field_validator("dim")
    @classmethod
    def _dims(cls, v):
        if isinstance(v, tuple) and (not v or len(set(v)) != len(v)):
            # PyTorch reads dim=() as every dim, and refuses a dim given twice
            raise ValueError("give one or more distinct dims")
        return v


def _reduce_infer(ins: list[TensorType], a: ReduceAttrs) -> TensorType:
    (x,) = ins
    dims = a.dim if isinstance(a.dim, tuple) else (a.dim,)
    axes = {_axis(d, x.rank) for d in dims}
    if len(axes) < len(dims):
        raise ShapeError(f"dims {a.dim} name the same dim twice of a rank-{x.rank} tensor", "E0305")
    shape = [1 if i in axes else s for i, s in enumerate(x.shape)] if a.keepdim else \
        [s for i, s in enumerate(x.shape) if i not in axes]
    return x.with_shape(shape)


def _reduce_call(fn: str):
    def call(args, a: ReduceAttrs, ins) -> str:
        return f"{args[0]}.{fn}({pyval(a.dim)}" + (", keepdim=True)" if a.keepdim else ")")
    return call


REDUCE_EXAMPLES = (Example(("f32[2, 3, 4]",)), Example(("f32[2, 3, 4]",), {"dim": (0, 2), "keepdim": True}),
                   Example(("f32[3, 5]",), {"dim": 0}))


def _float_reduce_infer(ins: list[TensorType], a: ReduceAttrs) -> TensorType:
    from ..types import FLOAT_DTYPES

    if ins[0].dtype not in FLOAT_DTYPES:  # PyTorch's mean and var take floating-point tensors only
        raise ShapeError(f"expects a floating-point input, got {ins[0].dtype}", "E0302", 0)
    return _reduce_infer(ins, a)


for _name in ("mean", "sum", "amax"):
    register(OpDef(name=_name, attrs=ReduceAttrs, positional=("dim", "keepdim"),
                   infer=_float_reduce_infer if _name == "mean" else _reduce_infer,
                   categories=frozenset({REDUCTION}), torch=TorchRule(call=_reduce_call(_name)),
                   doc=f"{_name} over dim(s)", numpy=_np_reduce({"amax": "max"}.get(_name, _name)), waive={"macs": NO_MACS},
                   examples=REDUCE_EXAMPLES))


class VarAttrs(ReduceAttrs):
    unbiased: bool = False


register(OpDef(name="var", attrs=VarAttrs, positional=("dim", "keepdim"), infer=_float_reduce_infer,
               categories=frozenset({REDUCTION}),
               torch=TorchRule(call=lambda args, a, ins: f"{args[0]}.var({pyval(a.dim)}, correction="
                               f"{1 if a.unbiased else 0}" + (", keepdim=True)" if a.keepdim else ")")),
               doc="variance over dim(s) (biased by default, as layernorm uses)", numpy=_np_reduce("var"),
               waive={"macs": NO_MACS}, examples=REDUCE_EXAMPLES + (Example(("f32[2, 5]",), {"unbiased": True}),)))
