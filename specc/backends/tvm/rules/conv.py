"""conv1d / conv2d / conv3d (OI... weights) and conv_transpose1d/2d (IO... weights), NC... layouts as in PyTorch.
conv1d runs as a conv2d over a height of 1 so that it gets the same fast CPU kernel."""
from __future__ import annotations

from tvm import relax

from ....ops.registry import pair
from . import lowering


def _padding(a, k: tuple[int, ...], d: tuple[int, ...]) -> list[int]:
    """(before..., after...) per spatial dim; "same" pads like PyTorch (the extra element goes after)."""
    nd = len(k)
    if a.padding == "valid":
        return [0] * (2 * nd)
    if a.padding == "same":
        total = [di * (ki - 1) for ki, di in zip(k, d)]
        return [t // 2 for t in total] + [t - t // 2 for t in total]
    p = pair(a.padding, nd)
    return list(p) + list(p)


@lowering("conv2d")
def _conv2d(ctx, x):
    a = ctx.attrs
    k, s, d = pair(a.kernel_size), pair(a.stride), pair(a.dilation)
    y = relax.op.nn.conv2d(x, ctx.param("weight"), strides=s, padding=_padding(a, k, d), dilation=d,
                           groups=a.groups)
    if a.bias:
        y = relax.op.add(ctx.emit(y), relax.op.reshape(ctx.param("bias"), (1, a.out_channels, 1, 1)))
    return y


@lowering("conv1d")
def _conv1d(ctx, x):
    a = ctx.attrs
    (k,), (s,), (d,) = pair(a.kernel_size, 1), pair(a.stride, 1), pair(a.dilation, 1)
    pad = _padding(a, (k,), (d,))
    w = ctx.param("weight")
    w2 = ctx.emit(relax.op.expand_dims(w, 2))  # [O, I, 1, K]: folds away once the weights are bound
    x2 = ctx.emit(relax.op.expand_dims(x, 2))
    y = ctx.emit(relax.op.nn.conv2d(x2, w2, strides=(1, s), padding=(0, pad[0], 0, pad[1]), dilation=(1, d),
                                    groups=a.groups))
    if a.bias:
        y = ctx.emit(relax.op.add(y, relax.op.reshape(ctx.param("bias"), (1, a.out_channels, 1, 1))))
    return relax.op.squeeze(y, [2])


@lowering("conv3d")
def _conv3d(ctx, x):
    a = ctx.attrs
    k, s, d = pair(a.kernel_size, 3), pair(a.stride, 3), pair(a.dilation, 3)
    y = relax.op.nn.conv3d(x, ctx.param("weight"), strides=s, padding=_padding(a, k, d), dilation=d,
                           groups=a.groups)
    if a.bias:
        y = relax.op.add(ctx.emit(y), relax.op.reshape(ctx.param("bias"), (1, a.out_channels, 1, 1, 1)))
    return y


def _conv_transpose(nd: int):
    fn = {1: relax.op.nn.conv1d_transpose, 2: relax.op.nn.conv2d_transpose}[nd]

    def rule(ctx, x):
        a = ctx.attrs
        p = pair(a.padding, nd)
        y = fn(x, ctx.param("weight"), strides=pair(a.stride, nd), padding=list(p) + list(p),
               output_padding=pair(a.output_padding, nd), dilation=pair(a.dilation, nd), groups=a.groups)
        if a.bias:
            y = relax.op.add(ctx.emit(y), relax.op.reshape(ctx.param("bias"), (1, a.out_channels) + (1,) * nd))
        return y
    return rule


for _nd in (1, 2):
    lowering(f"conv_transpose{_nd}d")(_conv_transpose(_nd))
