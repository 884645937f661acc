"""maximum / minimum, where, masked_fill; and upsample, pixel (un)shuffle, pad (specc/ops/resample.py)."""
from __future__ import annotations

from tvm import relax

from ....ops.resample import pad_widths
from . import lowering


def _minmax(fn):
    def rule(ctx, *xs):
        other = xs[1] if len(xs) > 1 else ctx.const(ctx.attrs.scalar, ctx.dtype(ctx.in_types[0]))
        return fn(xs[0], other)
    return rule


lowering("maximum")(_minmax(relax.op.maximum))
lowering("minimum")(_minmax(relax.op.minimum))


@lowering("where")
def _where(ctx, cond, x, *rest):
    other = rest[0] if rest else ctx.const(ctx.attrs.other)
    return relax.op.where(cond, x, other)


@lowering("masked_fill")
def _masked_fill(ctx, x, mask):
    return relax.op.where(mask, ctx.const(ctx.attrs.value), x)


@lowering("upsample", "interpolate")
def _upsample(ctx, x):
    a = ctx.attrs
    out = ctx.shape()[2:]
    if a.mode == "nearest":
        kw = {"method": "nearest_neighbor", "coordinate_transformation_mode": "asymmetric", "rounding_method": "floor"}
    else:
        kw = {"method": "linear",
              "coordinate_transformation_mode": "align_corners" if a.align_corners else "half_pixel"}
    if ctx.in_types[0].rank == 4:
        return relax.op.image.resize2d(x, out, **kw)
    # 1-D / 3-D nearest: repeat each element (integer scales) or gather along each spatial dim
    y = x
    t = ctx.in_types[0]
    for i, (n_in, n_out) in enumerate(zip(t.shape[2:], ctx.out_type.shape[2:])):
        k = n_out // n_in if isinstance(n_in, int) and isinstance(n_out, int) else None
        if k is None or k * n_in != n_out:
            raise NotImplementedError("TVM lowers nearest upsampling of 1-D / 3-D maps by integer scales only")
        y = ctx.emit(relax.op.repeat(y, k, axis=2 + i))
    return y


@lowering("pixel_shuffle")
def _pixel_shuffle(ctx, x):
    r = ctx.attrs.factor
    n, c, h, w = ctx.shape(ctx.in_types[0])
    y = ctx.emit(relax.op.reshape(x, (n, c // (r * r), r, r, h, w)))
    y = ctx.emit(relax.op.permute_dims(y, [0, 1, 4, 2, 5, 3]))
    return relax.op.reshape(y, ctx.shape())


@lowering("pixel_unshuffle")
def _pixel_unshuffle(ctx, x):
    r = ctx.attrs.factor
    n, c, h, w = ctx.shape(ctx.in_types[0])
    y = ctx.emit(relax.op.reshape(x, (n, c, h // r, r, w // r, r)))
    y = ctx.emit(relax.op.permute_dims(y, [0, 1, 3, 5, 2, 4]))
    return relax.op.reshape(y, ctx.shape())


def _pad_check(node, in_types, target):
    t = in_types[0]
    if node.attrs.mode == "replicate":
        widths = pad_widths(node.attrs, t.rank)
        if any((b or e) and not isinstance(d, int) for d, (b, e) in zip(t.shape, widths)):
            return f"replicate padding needs static sizes in the padded dims, input is {t}"
    return None


@lowering("pad", check=_pad_check)
def _pad(ctx, x):
    a = ctx.attrs
    widths = pad_widths(a, ctx.in_types[0].rank)
    if a.mode == "replicate":  # TVM's "edge" pad legalises to zeros: gather clamped indices instead
        import numpy as np

        for axis, (b, e) in enumerate(widths):
            if b or e:
                n = int(ctx.in_types[0].shape[axis])
                idx = np.clip(np.arange(-b, n + e), 0, n - 1).astype("int64")
                x = ctx.emit(relax.op.take(x, relax.const(idx), axis=axis))
        return x
    flat = [w for pair in widths for w in pair]  # (before, after) per axis
    mode = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}[a.mode]
    return relax.op.nn.pad(x, flat, pad_mode=mode, pad_value=a.value)
