"""Position encodings over [..., T, d] sequences: learned and sinusoidal tables (added to x), rotary (applied to q, k).

The table ops check the sequence length statically: T must be a number or a symbol bounded in the model
(`input ids: i64[B, T] where T <= ctx`), and the bound may not exceed the table (GPT-2's 1024 positions)."""
from __future__ import annotations

from pydantic import PositiveFloat, PositiveInt

from ..diagnostics import Note, ShapeError
from ..symbolic import Dim, Sym
from ..types import TensorType
from .context import bounds
from .registry import LAYER, Attrs, OpDef, expect_float, register
from .torch_rule import TorchRule, pyval


def _sequence(ins: list[TensorType], what: str) -> TensorType:
    (x,) = ins
    expect_float(x, what)
    if x.rank < 2 or not isinstance(x.shape[-1], int):
        raise ShapeError(f"{what} expects [..., T, d] with a static d, got {x}", "E0303")
    return x


def _bounds() -> dict | None:
    """The model's `where` bounds {sym: (bound, span)}; None when no model is being elaborated or rewritten
    (e.g. the IR verifier re-inferring types): symbolic lengths were checked when the model was elaborated."""
    return bounds()


def upper_bound(d: Dim) -> tuple[int | None, list[Note]]:
    """The largest value dim `d` can take under the model's `where` bounds (None if unbounded), and the bounds
    used. Sound for polynomials with non-negative coefficients, e.g. T, T + 1, 2*T."""
    if isinstance(d, int):
        return d, []
    bounds = _bounds() or {}
    if any(c < 0 for m, c in d.terms.items() if m) or not all(s in bounds for s in d.symbols()):
        return None, []
    env = {s: bounds[s][0] for s in d.symbols()}
    notes = [Note(bounds[s][1], f"{s} is bounded here: {s} <= {bounds[s][0]}") for s in sorted(env)]
    return d.subs(env), notes


def check_length(t: Dim, max_len: int, table: str) -> None:
    if isinstance(t, int):
        if t > max_len:
            raise ShapeError(f"sequence length {t} exceeds the {table} ({max_len} positions)", "E0304", 0)
        return
    if _bounds() is None:
        return
    bound, notes = upper_bound(t)
    if bound is None:
        names = ", ".join(sorted(t.symbols())) if isinstance(t, Sym) else str(t)
        raise ShapeError(f"cannot check sequence length {t} against the {table} ({max_len} positions): "
                         f"bound it in the input, e.g. `where {names} <= {max_len}`", "E0304", 0)
    if bound > max_len:
        raise ShapeError(f"the {table} has {max_len} positions, but sequence length {t} can be up to {bound}",
                         "E0304", 0, notes=notes)


# ---- learned: x + table[:T] ---------------------------------------------------------------------------------

class LearnedPosAttrs(Attrs):
    max_len: PositiveInt


def _learned_infer(ins: list[TensorType], a: LearnedPosAttrs) -> TensorType:
    x = _sequence(ins, "learned_pos")
    check_length(x.shape[-2], a.max_len, "learned position table")
    return x


_LEARNED = '''
class LearnedPositions(nn.Module):
    """x + the first T rows of a learned [max_len, d] table (GPT-2 wpe, BERT position embeddings, ViT)."""

    def __init__(self, max_len: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_len, dim))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight[: x.size(-2)]
'''

register(OpDef(
    name="learned_pos", attrs=LearnedPosAttrs, positional=("max_len",), infer=_learned_infer,
    params=lambda ins, a: {"weight": (a.max_len, ins[0].shape[-1])},
    categories=frozenset({LAYER}),
    torch=TorchRule(module=lambda ins, a: f"LearnedPositions({a.max_len}, {ins[0].shape[-1]})", support=(_LEARNED,)),
    doc="x[..., T, d] + a learned [max_len, d] position table's first T rows; checks T <= max_len.",
))


# ---- sinusoidal: x + fixed table[:T] (a buffer) ---------------------------------------------------------------

class SinusoidalAttrs(Attrs):
    max_len: PositiveInt = 5000
    base: PositiveFloat = 10000.0


def _sinusoidal_infer(ins: list[TensorType], a: SinusoidalAttrs) -> TensorType:
    x = _sequence(ins, "sinusoidal_pos")
    if x.shape[-1] % 2:
        raise ShapeError(f"sinusoidal positions pair sin and cos: the width must be even, got {x}", "E0305", 0)
    check_length(x.shape[-2], a.max_len, "sinusoidal position table")
    return x


_SINUSOIDAL = '''
class SinusoidalPositions(nn.Module):
    """x + the fixed table PE[t, 2i] = sin(t / base^(2i/d)), PE[t, 2i+1] = cos(...) (Vaswani et al. 2017)."""

    def __init__(self, max_len: int, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        t = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
        inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(base) / dim))
        pe = torch.zeros(max_len, dim)
        pe[:, 0::2] = torch.sin(t * inv_freq)
        pe[:, 1::2] = torch.cos(t * inv_freq)
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[: x.size(-2)]
'''


def _sinusoidal_module(ins, a: SinusoidalAttrs) -> str:
    base = "" if a.base == 10000.0 else f", base={pyval(a.base)}"
    return f"SinusoidalPositions({a.max_len}, {ins[0].shape[-1]}{base})"


register(OpDef(
    name="sinusoidal_pos", attrs=SinusoidalAttrs, positional=("max_len",), infer=_sinusoidal_infer,
    buffers=lambda ins, a: {"pe": (a.max_len, ins[0].shape[-1])},
    categories=frozenset({LAYER}),
    torch=TorchRule(module=_sinusoidal_module, imports=("import math",), support=(_SINUSOIDAL,)),
    doc="x[..., T, d] + the fixed sin/cos position table (no parameters); checks T <= max_len.",
))


# ---- rotary: rotate feature pairs of q or k by t * base^(-2i/d) -----------------------------------------------

class RopeAttrs(Attrs):
    base: PositiveFloat = 10000.0
    interleaved: bool = False  # pairs (2i, 2i+1) as in RoFormer / Meta LLaMA; else (i, i + d/2) as GPT-NeoX / HF


def _rope_infer(ins: list[TensorType], a: RopeAttrs) -> TensorType:
    x = _sequence(ins, "rope")
    if x.shape[-1] % 2:
        raise ShapeError(f"rope rotates feature pairs: the head dim must be even, got {x}", "E0305", 0)
    return x


_ROPE = '''
def apply_rope(x: torch.Tensor, base: float = 10000.0, interleaved: bool = False) -> torch.Tensor:
    """Rotary position embedding (Su et al. 2021) of x [..., T, d]: feature pair i of position t turns by
    t * base^(-2i/d). Pairs are (i, i + d/2), or (2i, 2i + 1) when interleaved."""
    t, d = x.size(-2), x.size(-1)
    inv_freq = base ** -(torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    angle = torch.outer(torch.arange(t, device=x.device, dtype=torch.float32), inv_freq)  # [T, d/2]
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    if interleaved:
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
'''


def _rope_call(args, a: RopeAttrs, ins) -> str:
    extra = "" if a.base == 10000.0 else f", base={pyval(a.base)}"
    extra += ", interleaved=True" if a.interleaved else ""
    return f"apply_rope({args[0]}{extra})"


register(OpDef(
    name="rope", attrs=RopeAttrs, positional=("base",), infer=_rope_infer,
    torch=TorchRule(call=_rope_call, support=(_ROPE,)),
    doc="rotary position embedding of q or k [..., T, head_dim] (no parameters).",
))
