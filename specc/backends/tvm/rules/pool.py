"""Pooling: max/avg 1-D, 2-D and 3-D (PyTorch semantics: avg counts padding, -inf padding for max), global and
adaptive pooling. Inputs may be unbatched ([C, *spatial])."""
from __future__ import annotations

from tvm import relax

from ....ops.registry import pair
from . import lowering, with_batch


def _pool(kind: str, nd: int):
    fn = getattr(relax.op.nn, f"{kind}_pool{nd}d")

    def rule(ctx, x):
        a = ctx.attrs
        k = pair(a.kernel_size, nd)
        s = pair(a.stride if a.stride is not None else a.kernel_size, nd)
        p = pair(a.padding, nd)
        extra = {"count_include_pad": True} if kind == "avg" else {}
        return with_batch(ctx, x, ctx.in_types[0].rank, nd, lambda t: fn(
            t, pool_size=k, strides=s, padding=list(p) + list(p), ceil_mode=a.ceil_mode, **extra))
    return rule


for _nd in (1, 2, 3):
    for _kind in ("max", "avg"):
        lowering(f"{_kind}pool{_nd}d")(_pool(_kind, _nd))


@lowering("global_avgpool", "global_maxpool")
def _global(ctx, x):
    axes = list(range(2, ctx.in_types[0].rank))
    if ctx.node.target == "global_avgpool":
        return relax.op.mean(x, axes, keepdims=True)
    return relax.op.max(x, axes, keepdims=True)


def _adaptive_check(node, in_types, target):
    """Adaptive max pooling is lowered as a plain max pool: the output size must divide the input size."""
    x = in_types[0]
    nd = int(node.target[-2])
    out = pair(node.attrs.output_size, nd)
    for size, o in zip(x.shape[x.rank - nd:], out):
        if not isinstance(size, int):
            return f"adaptive pooling needs static spatial dims, input is {x}"
        if node.target.startswith("adaptive_max") and size % o:
            return f"adaptive max pooling from {size} to {o} is not a uniform window"
    return None


def _adaptive(kind: str, nd: int):
    def rule(ctx, x):
        x_t = ctx.in_types[0]
        out = pair(ctx.attrs.output_size, nd)
        sizes = [int(d) for d in x_t.shape[x_t.rank - nd:]]
        if all(s == o for s, o in zip(sizes, out)):
            return x
        if all(s % o == 0 for s, o in zip(sizes, out)):
            # uniform windows: an ordinary pool (the CPU schedules handle it well)
            k = [s // o for s, o in zip(sizes, out)]
            fn = getattr(relax.op.nn, f"{kind}_pool{nd}d")
            return with_batch(ctx, x, x_t.rank, nd, lambda t: fn(t, pool_size=k, strides=k))
        fn = getattr(relax.op.nn, f"adaptive_{kind}_pool{nd}d")
        return with_batch(ctx, x, x_t.rank, nd, lambda t: fn(t, out))
    return rule


for _nd in (1, 2):
    for _kind in ("avg", "max"):
        lowering(f"adaptive_{_kind}pool{_nd}d", check=_adaptive_check)(_adaptive(_kind, _nd))
