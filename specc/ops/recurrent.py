"""Recurrent layers: rnn, lstm, gru over batch-first sequences, as torch.nn.RNN / LSTM / GRU.

    out, h = x -> gru(650, num_layers=2) as rnn              # x [B, T, I] -> out [B, T, D*H], h [L*D, B, H]
    out, h, c = x -> lstm(650, num_layers=2) as rnn          # c: the LSTM's final cell state, like h
    out, h = (x, h0) -> gru(650) / out, h, c = (x, h0, c0) -> lstm(650)   # with an initial state

Multi-layer, bidirectional (D = 2: `out` concatenates both directions), dropout between layers, two biases per
gate. Parameter names are PyTorch's (weight_ih_l0, bias_hh_l1_reverse, ...), so weights copy across."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt

from ..diagnostics import ShapeError
from ..symbolic import Dim
from ..types import TensorType, TupleType
from .registry import LAYER, Attrs, Example, OpDef, expect_float, expect_rank, register
from .torch_rule import TorchRule, pyval, support_text

GATES = {"rnn": 1, "gru": 3, "lstm": 4}


class RecurrentAttrs(Attrs):
    hidden_size: PositiveInt
    num_layers: int = Field(1, gt=0, le=1024)  # each layer has its own parameters: more is a mistake
    bias: bool = True
    dropout: float = Field(0.0, ge=0.0, lt=1.0)  # on the outputs of every layer but the last (training only)
    bidirectional: bool = False
    input_size: PositiveInt | None = None  # optional: checked against the input when given


class RNNAttrs(RecurrentAttrs):
    nonlinearity: Literal["tanh", "relu"] = "tanh"


def _states(kind: str) -> int:
    return 2 if kind == "lstm" else 1


def _infer(kind: str):
    def infer(ins: list[TensorType], a: RecurrentAttrs) -> TupleType:
        x = ins[0]
        expect_rank(x, (3,), kind)
        expect_float(x, kind)
        if not isinstance(x.shape[-1], int):
            raise ShapeError(f"{kind} needs a static feature dim (last dim), input is {x}")
        if a.input_size is not None and a.input_size != x.shape[-1]:
            raise ShapeError(f"input has {x.shape[-1]} features, layer expects {a.input_size}")
        dirs = 2 if a.bidirectional else 1
        state = TensorType(x.dtype, (a.num_layers * dirs, x.shape[0], a.hidden_size))
        given = ins[1:]
        if given and len(given) != _states(kind):
            raise ShapeError(f"{kind} takes its initial state as {' and '.join(_state_names(kind))}, "
                             f"got {len(given)} tensor(s)", "E0104")
        for i, (t, name) in enumerate(zip(given, _state_names(kind)), start=1):
            if t.shape != state.shape or t.dtype != x.dtype:
                raise ShapeError(f"initial state {name} is {t}, {kind} needs {state} "
                                 f"([num_layers * directions, B, hidden_size])", "E0301", i)
        out = TensorType(x.dtype, (*x.shape[:2], dirs * a.hidden_size))
        return TupleType((out,) + (state,) * _states(kind))
    return infer


def _state_names(kind: str) -> tuple[str, ...]:
    return ("h0", "c0") if kind == "lstm" else ("h0",)


def _param_shapes(kind: str):
    def params(ins: list[TensorType], a: RecurrentAttrs) -> dict[str, tuple[Dim, ...]]:
        g, h = GATES[kind], a.hidden_size
        dirs = 2 if a.bidirectional else 1
        out: dict[str, tuple[Dim, ...]] = {}
        for layer in range(a.num_layers):
            fin = ins[0].shape[-1] if layer == 0 else dirs * h
            for suffix in ("", "_reverse")[:dirs]:
                out[f"weight_ih_l{layer}{suffix}"] = (g * h, fin)
                out[f"weight_hh_l{layer}{suffix}"] = (g * h, h)
                if a.bias:
                    out[f"bias_ih_l{layer}{suffix}"] = (g * h,)
                    out[f"bias_hh_l{layer}{suffix}"] = (g * h,)
        return out
    return params


def _macs(kind: str):
    def macs(ins: list[TensorType], out, a: RecurrentAttrs) -> Dim:
        g, h = GATES[kind], a.hidden_size
        dirs = 2 if a.bidirectional else 1
        x = ins[0]
        per_step = sum(dirs * g * h * ((x.shape[-1] if layer == 0 else dirs * h) + h) for layer in range(a.num_layers))
        return x.shape[0] * x.shape[1] * per_step
    return macs


_DEFAULTS = {"num_layers": 1, "bias": True, "dropout": 0.0, "bidirectional": False, "nonlinearity": "tanh"}


def _module(kind: str):
    cls = {"rnn": "nn.RNN", "gru": "nn.GRU", "lstm": "FlatLSTM"}[kind]

    def module(ins: list[TensorType], a: RecurrentAttrs) -> str:
        extra = "".join(f", {k}={pyval(getattr(a, k))}" for k, d in _DEFAULTS.items()
                        if hasattr(a, k) and getattr(a, k) != d)
        return f"{cls}({ins[0].shape[-1]}, {a.hidden_size}{extra}, batch_first=True)"
    return module


# nn.LSTM returns (out, (h, c)); the IR's tuples are flat, so the emitted layer returns (out, h, c).
_FLAT_LSTM = support_text("flat_lstm")

def _np_cell(kind: str, a: RecurrentAttrs):
    """One time step (x [B, I], state) -> state, with PyTorch's gate order (GRU r, z, n; LSTM i, f, g, o)."""
    import numpy as np

    def sig(v):
        return 1 / (1 + np.exp(-v))

    def step(x, state, w_ih, w_hh, b_ih, b_hh):
        h = state[0]
        gi, gh = x @ w_ih.T + b_ih, h @ w_hh.T + b_hh
        if kind == "rnn":
            pre = gi + gh
            return (np.tanh(pre) if getattr(a, "nonlinearity", "tanh") == "tanh" else np.maximum(pre, 0),)
        if kind == "gru":
            (ir, iz, in_), (hr, hz, hn) = np.split(gi, 3, -1), np.split(gh, 3, -1)
            r, z = sig(ir + hr), sig(iz + hz)
            n = np.tanh(in_ + r * hn)
            return ((1 - z) * n + z * h,)
        i, f, g, o = np.split(gi + gh, 4, -1)
        c = sig(f) * state[1] + sig(i) * np.tanh(g)
        return (sig(o) * np.tanh(c), c)
    return step


def _np_recurrent(kind: str):
    """Layer by layer, each direction over the sequence (the reverse one from the end); out concatenates the
    directions; final states are ordered layer-major, direction-minor, as PyTorch's h_n."""
    def ref(xs, a: RecurrentAttrs, p):
        import numpy as np

        x = xs[0].astype(np.float64)
        batch, steps = x.shape[:2]
        dirs = 2 if a.bidirectional else 1
        zeros = np.zeros((a.num_layers * dirs, batch, a.hidden_size))
        init = [s.astype(np.float64) for s in xs[1:]] or [zeros] * _states(kind)
        step = _np_cell(kind, a)
        finals = []
        for layer in range(a.num_layers):
            outs = []
            for d, suffix in enumerate(("", "_reverse")[:dirs]):
                w = [p[f"{n}_l{layer}{suffix}"] for n in ("weight_ih", "weight_hh")]
                b = [p[f"{n}_l{layer}{suffix}"] if a.bias else 0 for n in ("bias_ih", "bias_hh")]
                state = tuple(s[layer * dirs + d] for s in init)
                seq = [None] * steps
                for t in (range(steps - 1, -1, -1) if d else range(steps)):
                    state = step(x[:, t], state, *w, *b)
                    seq[t] = state[0]
                outs.append(np.stack(seq, 1))
                finals.append(state)
            x = np.concatenate(outs, -1)
        return (x, *(np.stack([f[i] for f in finals]) for i in range(_states(kind))))
    return ref


RECURRENT_EXAMPLES = (
    Example(("f32[2, 4, 3]",), {"hidden_size": 5}),
    Example(("f32[2, 3, 3]",), {"hidden_size": 4, "num_layers": 2, "bidirectional": True}),
    Example(("f32[1, 3, 2]",), {"hidden_size": 3, "bias": False}),
)


def _examples(kind: str) -> tuple[Example, ...]:
    """The shared cases, one with an initial state given, and (rnn) the relu nonlinearity."""
    state = "f32[1, 2, 4]"
    extra = (Example(("f32[2, 3, 6]",) + (state,) * _states(kind), {"hidden_size": 4}),)
    if kind == "rnn":
        extra += (Example(("f32[2, 3, 3]",), {"hidden_size": 4, "nonlinearity": "relu"}),)
    return RECURRENT_EXAMPLES + extra


for _kind in ("rnn", "gru", "lstm"):
    register(OpDef(
        name=_kind, attrs=RNNAttrs if _kind == "rnn" else RecurrentAttrs, positional=("hidden_size", "num_layers"),
        arity=(1, 1 + _states(_kind)), infer=_infer(_kind), params=_param_shapes(_kind), macs=_macs(_kind),
        categories=frozenset({LAYER}),
        torch=TorchRule(module=_module(_kind), support=(_FLAT_LSTM,) if _kind == "lstm" else ()),
        doc=f"{_kind.upper()} over x [B, T, I] (batch first); returns (out [B, T, D*H], h_n [L*D, B, H]"
            + (", c_n)" if _kind == "lstm" else ")") + "; optional initial state after x.",
        numpy=_np_recurrent(_kind), examples=_examples(_kind),
    ))
