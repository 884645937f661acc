"""Shape ops and reductions. Ops that only regroup elements (flatten, reshape, unsqueeze) reshape to the output
shape the IR inferred, so symbolic dims need no arithmetic here."""
from __future__ import annotations

from tvm import relax

from ....symbolic import Sym
from . import axis, lowering, permute


@lowering("flatten", "reshape", "unsqueeze")
def _reshape(ctx, x):
    return relax.op.reshape(x, ctx.shape())


@lowering("permute")
def _permute(ctx, x):
    rank = ctx.in_types[0].rank
    return permute(ctx, x, [axis(d, rank) for d in ctx.attrs.dims])


@lowering("transpose")
def _transpose(ctx, x):
    rank = ctx.in_types[0].rank
    axes = list(range(rank))
    i, j = axis(ctx.attrs.dim0, rank), axis(ctx.attrs.dim1, rank)
    axes[i], axes[j] = axes[j], axes[i]
    return permute(ctx, x, axes)


@lowering("concat")
def _concat(ctx, *xs):
    return relax.op.concat(list(xs), axis=axis(ctx.attrs.dim, ctx.in_types[0].rank))


@lowering("split")
def _split(ctx, x):
    ax = axis(ctx.attrs.dim, ctx.in_types[0].rank)
    sections = ctx.attrs.sections
    if isinstance(sections, int):
        return relax.op.split(x, sections, axis=ax)
    cuts, total = [], 0
    for s in sections[:-1]:
        total += s
        cuts.append(total)
    return relax.op.split(x, cuts, axis=ax)


@lowering("getitem")
def _getitem(ctx, t):
    i = ctx.attrs.index
    if isinstance(t, tuple):  # the result of a block call or repeat: a Python tuple of values
        return t[i]
    n = len(ctx.in_types[0].items)
    return relax.TupleGetItem(t, i % n)


@lowering("slice")
def _slice(ctx, x, *carriers):
    """x[i, a:b:s, ..., None]: one strided_slice over the sliced/indexed dims, then a reshape to the IR's output
    shape (which drops indexed dims and inserts new ones). Symbolic bounds (`table[:T]`) are the function's shape
    variables, so the inputs that carry their sizes (`carriers`) are not read here."""
    xt = ctx.in_types[0]
    used = sum(1 for it in ctx.attrs.items if it not in ("...", "new"))
    axes, begin, end, strides = [], [], [], []
    d = 0
    for it in ctx.attrs.items:
        if it == "...":
            d += xt.rank - used
            continue
        if it == "new":
            continue
        size = xt.shape[d]
        if isinstance(it, int):
            start = it if it >= 0 else size + it
            axes.append(d)
            begin.append(ctx.dim(start))
            end.append(ctx.dim(start + 1))
            strides.append(1)
        else:
            start, stop, step = _bounds(ctx.attrs.bounds(it), size)
            axes.append(d)
            begin.append(ctx.dim(start))
            end.append(ctx.dim(stop))
            strides.append(step)
        d += 1
    y = x
    if axes:
        y = ctx.emit(relax.op.strided_slice(x, axes, begin, end, strides, assume_inbound=True))
    return relax.op.reshape(y, ctx.shape())


def _bounds(item, size):
    """(start, stop, step) of a Python slice as in-range dims; symbolic sizes follow the IR's shape rule."""
    start, stop, step = item
    step = step or 1
    if isinstance(size, int) and not any(isinstance(b, Sym) for b in (start, stop)):
        return slice(start, stop, step).indices(size)
    start = 0 if start is None else (size + start if isinstance(start, int) and start < 0 else start)
    stop = size if stop is None else (size + stop if isinstance(stop, int) and stop < 0 else stop)
    return start, stop, step


_REDUCE = {"mean": relax.op.mean, "sum": relax.op.sum, "amax": relax.op.max}


def _reduce(fn):
    def rule(ctx, x):
        dims = ctx.attrs.dim if isinstance(ctx.attrs.dim, tuple) else (ctx.attrs.dim,)
        rank = ctx.in_types[0].rank
        return fn(x, sorted(axis(d, rank) for d in dims), keepdims=ctx.attrs.keepdim)
    return rule


for _name, _fn in _REDUCE.items():
    lowering(_name)(_reduce(_fn))


@lowering("var")
def _var(ctx, x):
    a = ctx.attrs
    xt = ctx.in_types[0]
    dims = sorted(axis(d, xt.rank) for d in (a.dim if isinstance(a.dim, tuple) else (a.dim,)))
    y = relax.op.variance(x, dims, keepdims=a.keepdim)
    if not a.unbiased:
        return y
    count = 1
    for d in dims:
        count = count * xt.shape[d]
    if isinstance(count, int):
        return relax.op.multiply(ctx.emit(y), ctx.const(count / (count - 1)))
    # symbolic element count: n / (n - 1) from a reduction over ones
    n = ctx.emit(relax.op.sum(relax.op.ones_like(x), dims, keepdims=a.keepdim))
    return relax.op.multiply(ctx.emit(y), relax.op.divide(n, relax.op.subtract(n, ctx.const(1.0))))
