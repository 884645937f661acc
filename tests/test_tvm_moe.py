"""The TVM lowering of `moe` runs each expert on the tokens routed to it only (specc/backends/tvm/rules/moe.py):
the experts' matmuls have a run-time row count, not the layer's N tokens, and the outputs match the emitted
PyTorch layer within 1e-4 relative for Switch-style top-1 with capacity drops, Mixtral-style top-2 SwiGLU, DeepSeek
shared + fine-grained experts and an expert no token is routed to; at two token counts from one build. An expert
whose types tie the token count to another dim lowers densely (every expert on every token) and still matches.
A static-dims build (only the routed counts known at run time) matches too; CUDA builds keep the dense form."""
from __future__ import annotations

import math

import pytest
from tvm_util import max_rel_diff, reference_model

from specc.api import loads

pytestmark = pytest.mark.tvm
tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

import tvm.sym  # noqa: E402, F811 - the Analyzer lives in a submodule
from tvm import relax, tirx  # noqa: E402

from specc.backends.tvm.lower import lower  # noqa: E402

RTOL = 1e-4
LAYERS = """
import "std/transformer.nn"
model Layers(d: int = 16) {
  input x: f32[B, T, d]
  output mixtral = x -> moe(SwiGLU(24), 4, 2, softmax="after") as mixtral_moe
  output switch = x -> moe(FeedForward(32, "relu", 0.0, bias=false), 4, 1, capacity_factor=0.5) as switch_moe
  output deepseek = x -> moe(SwiGLU(8), 8, 3, shared=SwiGLU(12), shared_experts=2) as deepseek_moe
  output idle = x -> moe(SwiGLU(8), 4, 2, renormalize=true) as idle_moe
}
"""
# matmuls that see all N tokens: the four routers and the two shared experts' three projections
FULL_WIDTH_MATMULS = 4 + 2 * 3
# matmuls on routed rows: 4 + 4 + 8 + 4 experts, 3 projections (SwiGLU) or 2 (ReLU feed-forward) each
ROUTED_MATMULS = 4 * 3 + 4 * 2 + 8 * 3 + 4 * 3


def _matmul_rows(mod) -> list:
    """The row count (first dim of the lhs) of every matmul in main, and the model's token count B*T (or N)."""
    b, t = mod["main"].params[0].ty.shape.values[:2]
    rows, same = [], tvm.sym.Analyzer().can_prove_equal
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            v = binding.value
            if isinstance(v, relax.Call) and isinstance(v.op, tvm.ir.Op) and v.op.name == "relax.matmul":
                r = v.args[0].ty.shape.values[0]
                rows.append("N" if same(r, b * t) else r.name if isinstance(r, tirx.Var) else str(r))
    return rows


def test_experts_run_on_routed_rows_only():
    spec = loads(LAYERS, "layers.nn")
    rows = _matmul_rows(lower(spec.module).mod)  # -O0: SwiGLU keeps its three projections
    routed = [r for r in rows if r.startswith("routed")]
    assert rows.count("N") == FULL_WIDTH_MATMULS and len(routed) == ROUTED_MATMULS, rows


def _idle_router(model) -> None:
    """Route every token with positive features to experts 0 and 1 of layer `idle`: 2 and 3 get no rows."""
    w = torch.zeros_like(model.idle_moe.router.weight)
    w[0], w[1], w[2], w[3] = 1.0, 0.5, -1.0, -2.0
    with torch.no_grad():
        model.idle_moe.router.weight.copy_(w)


def _dropped(model, x) -> int:
    """(token, slot) pairs the Switch layer drops at this token count (capacity ceil(0.5 * N / 4))."""
    tokens = x.reshape(-1, x.shape[-1])
    chosen = model.switch_moe.router(tokens).argmax(-1)
    capacity = math.ceil(0.5 * tokens.shape[0] / 4)
    return int(sum(max(0, int((chosen == e).sum()) - capacity) for e in range(4)))


def test_routed_layers_match_pytorch_at_two_token_counts():
    spec = loads(LAYERS, "layers.nn")
    model = reference_model(spec)
    _idle_router(model)
    compiled = spec.to_tvm("tvm-cpu", weights=model)
    gen = torch.Generator().manual_seed(3)
    for shape in ((2, 7, 16), (1, 3, 16)):
        x = torch.randn(shape, generator=gen).abs()
        assert _dropped(model, x) > 0, "the capacity must drop pairs for this test to mean anything"
        with torch.no_grad():
            want = model(x)
        for name, g, w in zip(("mixtral", "switch", "deepseek", "idle"), compiled(x), want):
            assert max_rel_diff(g, w) <= RTOL, (name, shape)
    # all dims static but the routed counts (a build whose run-time sizes once lost their definition in FuseOps)
    static = spec.to_tvm("tvm-cpu", weights=model, dims={"B": 1, "T": 3})
    assert max_rel_diff(static(x), want) <= RTOL


STATIC = """
import "std/transformer.nn"
model Static() {
  input x: f32[2, 4, 8]
  output y = x -> moe(SwiGLU(12), 4, 2) as moe
}
"""


def test_token_count_equal_to_width_lowers_densely_and_matches():
    """8 tokens of width 8: the experts' [8, 8] types cannot say which 8 is the token count."""
    spec = loads(STATIC, "static.nn")
    mod = lower(spec.module).mod
    assert "tensor_to_shape" not in mod.script() and _matmul_rows(mod) == ["N"] * (1 + 4 * 3)
    model = reference_model(spec)
    x = torch.randn(2, 4, 8)
    with torch.no_grad():
        want = model(x)
    assert max_rel_diff(spec.to_tvm("tvm-cpu", weights=model)(x), want) <= RTOL


def test_cuda_keeps_the_dense_form():
    """The routed form reads each expert's row count on the host (a CPU tensor): a CUDA build does not route."""
    from specc.backends.tvm import resolve_target

    spec = loads(STATIC.replace("f32[2, 4, 8]", "f32[B, T, 8]"), "cuda.nn")
    cpu, cuda = (lower(spec.module, resolve_target(t)).mod.script() for t in ("tvm-cpu", "tvm-cuda"))
    assert "specc_moe_expert_lists" in cpu and "nonzero" not in cpu
    assert "specc_moe_expert_lists" not in cuda and "one_hot" in cuda


UNEVEN = """
import "std/transformer.nn"
model Uneven(d: int = 16) {
  input x: f32[B, T, d]
  output y = x -> moe(SwiGLU(24), 6, 2) as moe
}
"""


def test_one_pass_lists_equal_the_per_expert_nonzero(monkeypatch):
    """The expert lists built in one pass (one kernel, a view per expert) give the rows the per-expert host
    `nonzero` gave, bit for bit, with uneven and empty experts (a router that sends every token to experts 0, 1, 3
    only, unevenly) at two token counts of one symbolic build; and the one-pass lowering calls no nonzero."""
    spec = loads(UNEVEN, "uneven.nn")
    model = reference_model(spec)
    with torch.no_grad():  # experts 2, 4, 5 get no token; 0, 1 and 3 get different shares
        w = model.moe.router.weight
        w.zero_()
        w[0, :] = 1.0
        w[1, :8] = 2.0
        w[3, 8:] = 2.0
    builds = {}
    for flag in ("0", "1"):
        monkeypatch.setenv("SPECC_MOE_ONE_PASS", flag)
        builds[flag] = spec.to_tvm("tvm-cpu", weights=model)
    assert "nonzero" not in lower(spec.module).mod.script()
    gen = torch.Generator().manual_seed(5)
    for shape in ((1, 9, 16), (2, 5, 16)):
        x = torch.randn(shape, generator=gen).abs() + 0.1  # positive: the zero-logit experts never win
        with torch.no_grad():
            want = model(x)
        old, new = (builds[f](x) for f in ("0", "1"))
        assert torch.equal(torch.as_tensor(old), torch.as_tensor(new)), shape
        assert max_rel_diff(new, want) <= RTOL, shape
        picked = model.moe.router(x.reshape(-1, 16)).topk(2, dim=-1).indices.flatten().tolist()
        counts = [picked.count(e) for e in range(6)]
        assert counts[2] == counts[4] == counts[5] == 0 and len({counts[0], counts[1], counts[3]}) > 1, counts
