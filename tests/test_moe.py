"""The `moe` construct: the emitted layer against the loop-over-experts reference (tests/references/moe.py) with
weights copied, capacity dropping, the auxiliary losses, static checks, IR round trips, the summary's total and
active parameter counts, and shrunk Mixtral / DeepSeek-MoE / Switch models running forward and backward.

Load balancing uses one definition everywhere (specc/ops/moe.py, the reference, these tests): f_i is the fraction of
all N*k (token, slot) assignments that went to expert i, so balance = E * sum_i f_i * P_i is 1 when balanced."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from torch_util import REPO, SHRINK

import specc
from specc.api import CheckError, loads
from specc.printer import parse_module, print_module
from specc.verify import verify

torch = pytest.importorskip("torch")
sys.path.insert(0, str(REPO))
from tests.references.moe import MoELayer, load_balancing_loss, router_z_loss  # noqa: E402

SPECS = REPO / "specs"
MOE_SPECS = ["mixtral_8x7b", "deepseek_moe_16b", "switch_base_8"]

LAYER = """
import "std/transformer.nn"
model M(d: int = 16, h: int = 24, e: int = 4, k: int = 2, shared: int = 0, renorm: bool = true,
        softmax: str = "before", cf: float = 0.0, bc: float = 0.01, zc: float = 0.001) {{
  input x: f32[B, T, d]
  {body}
}}
"""


def moe_layer(**hp):
    """The emitted MixtureOfExperts of a one-layer spec: x -> moe(SwiGLU(h), ...)."""
    shared = ", shared=SwiGLU(h), shared_experts=shared" if hp.get("shared") else ""
    cap = ", capacity_factor=cf" if hp.get("cf") else ""
    body = (f"output y = x -> moe(SwiGLU(h), experts=e, top_k=k, softmax=softmax, renormalize=renorm, "
            f"balance_coef=bc, z_coef=zc{shared}{cap})")
    model = loads(LAYER.format(body=body), "layer.nn", **hp).to_torch()
    return model, model.moe


def copy_weights(ref: MoELayer, layer) -> None:
    """Reference -> emitted: router, experts[e].{w1,w2,w3}, shared experts (same parameter names)."""
    with torch.no_grad():
        layer.router.weight.copy_(ref.router.weight)
        for mine, theirs in [*zip(layer.experts, ref.experts), *zip(layer.shared, ref.shared_experts)]:
            for name in ("w1", "w2", "w3"):
                getattr(mine, name).weight.copy_(getattr(theirs, name).weight)


def reference(d=16, h=24, e=4, k=2, shared=0, renorm=True, seed=0) -> MoELayer:
    torch.manual_seed(seed)
    return MoELayer(d, h, e, top_k=k, renormalize=renorm, num_shared_experts=shared)


# ---- the emitted layer against the loop reference ------------------------------------------------------------

@pytest.mark.parametrize("k,renorm,shared,softmax", [
    (1, False, 0, "before"),  # Switch
    (2, True, 0, "before"),  # Mixtral
    (2, True, 0, "after"),  # Mixtral written as softmax over the top-k logits: the same weights
    (3, False, 2, "before"),  # DeepSeekMoE: no renormalisation, shared experts
    (4, True, 1, "before"),  # every expert chosen
])
def test_emitted_layer_matches_loop_reference(k, renorm, shared, softmax):
    ref = reference(k=k, renorm=renorm, shared=shared)
    model, layer = moe_layer(k=k, renorm=renorm, shared=shared, softmax=softmax)
    copy_weights(ref, layer)
    x = torch.randn(3, 7, 16)
    want, aux = ref(x)
    got = model(x)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(layer.last_balance_loss, aux["load_balancing_loss"], rtol=0, atol=1e-6)
    torch.testing.assert_close(layer.last_z_loss, aux["router_z_loss"], rtol=0, atol=1e-6)


def test_gradients_match_loop_reference():
    ref = reference(k=2, shared=1)
    model, layer = moe_layer(k=2, shared=1, bc=0.0, zc=0.0)
    copy_weights(ref, layer)
    x = torch.randn(2, 9, 16)
    ref(x)[0].square().sum().backward()
    model(x).square().sum().backward()
    pairs = [(layer.router, ref.router), *zip(layer.experts, ref.experts), (layer.shared[0], ref.shared_experts[0])]
    for mine, theirs in pairs:
        for pm, pt in zip(mine.parameters(), theirs.parameters()):
            torch.testing.assert_close(pm.grad, pt.grad, rtol=1e-4, atol=1e-5)


def test_one_token_and_empty_experts():
    """A single token leaves most experts with an empty slice: they still run (no data-dependent skip)."""
    ref = reference(e=8, k=2)
    model, layer = moe_layer(e=8, k=2)
    copy_weights(ref, layer)
    x = torch.randn(1, 1, 16)
    torch.testing.assert_close(model(x), ref(x)[0], rtol=0, atol=1e-5)


# ---- capacity and dropped tokens -----------------------------------------------------------------------------

def dropped_reference(ref: MoELayer, x: torch.Tensor, capacity_factor: float):
    """Loops, independent of the emitted code: each expert keeps its first `capacity` (token, slot) pairs, all
    first choices before all second choices, each in token order; a dropped pair contributes nothing."""
    tokens = x.reshape(-1, x.shape[-1])
    n, k, e = tokens.shape[0], ref.top_k, ref.num_experts
    capacity = math.ceil(capacity_factor * n * k / e)
    probs = ref.router(tokens).softmax(-1)
    w, idx = probs.topk(k, dim=-1)
    if ref.renormalize:
        w = w / w.sum(-1, keepdim=True)
    out = torch.zeros_like(tokens)
    taken = [0] * e
    kept = torch.zeros(n, k, dtype=torch.bool)
    for j in range(k):
        for t in range(n):
            ex = int(idx[t, j])
            if taken[ex] < capacity:
                taken[ex] += 1
                kept[t, j] = True
                out[t] += w[t, j] * ref.experts[ex](tokens[t])
    return out.reshape(x.shape), kept, capacity, taken


@pytest.mark.parametrize("k,cf", [(1, 0.5), (2, 0.75), (2, 1.0)])
def test_capacity_drops_overflowing_tokens(k, cf):
    ref = reference(e=4, k=k, renorm=k > 1)
    with torch.no_grad():  # a skewed router: most tokens want expert 0, so it overflows
        ref.router.weight[0] += 0.5
    model, layer = moe_layer(e=4, k=k, renorm=k > 1, cf=cf)
    copy_weights(ref, layer)
    x = torch.randn(2, 16, 16)
    want, kept, capacity, taken = dropped_reference(ref, x, cf)
    assert not kept.all(), "the test router should overflow some expert"
    assert max(taken) == capacity
    got = model(x)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    # a token whose every choice was dropped gets exactly zero (the residual carries it)
    fully_dropped = ~kept.any(-1)
    assert (got.reshape(-1, 16)[fully_dropped] == 0).all()
    # the balancing loss counts assignments before dropping: the same as without a capacity
    torch.testing.assert_close(layer.last_balance_loss, ref(x)[1]["load_balancing_loss"], rtol=0, atol=1e-6)


def test_large_capacity_drops_nothing():
    ref = reference(k=2)
    model, layer = moe_layer(k=2, cf=4.0)  # capacity = N*k: nothing can overflow
    copy_weights(ref, layer)
    x = torch.randn(2, 8, 16)
    torch.testing.assert_close(model(x), ref(x)[0], rtol=0, atol=1e-5)


# ---- auxiliary losses ----------------------------------------------------------------------------------------

def test_aux_loss_formulas():
    ref = reference(e=4, k=2)
    model, layer = moe_layer(e=4, k=2, bc=0.02, zc=0.003)
    copy_weights(ref, layer)
    x = torch.randn(4, 5, 16)
    model(x)
    logits = ref.router(x.reshape(-1, 16))
    probs = logits.softmax(-1)
    idx = probs.topk(2, dim=-1).indices
    f = torch.bincount(idx.reshape(-1), minlength=4).float() / idx.numel()
    balance = 4 * (f * probs.mean(0)).sum()
    z = (torch.logsumexp(logits, -1) ** 2).mean()
    torch.testing.assert_close(balance, load_balancing_loss(probs, idx, 4))
    torch.testing.assert_close(layer.last_balance_loss, balance)
    torch.testing.assert_close(layer.last_z_loss, z)
    torch.testing.assert_close(layer.last_aux_loss, 0.02 * balance + 0.003 * z)
    torch.testing.assert_close(model.aux_loss(), layer.last_aux_loss)
    torch.testing.assert_close(layer.last_z_loss, router_z_loss(logits))


def test_balanced_router_gives_balance_loss_one():
    _, layer = moe_layer(e=4, k=1, renorm=False)
    with torch.no_grad():
        layer.router.weight.zero_()  # uniform probabilities; ties go to expert 0 ...
    layer(torch.randn(8, 16))
    # ... so f = (1, 0, 0, 0), P = 1/4: E * sum f P = 1 (f_i P_i is only larger when P follows f)
    torch.testing.assert_close(layer.last_balance_loss, torch.tensor(1.0))


def test_aux_loss_sums_layers_and_reaches_the_router():
    body = """x = x -> moe(SwiGLU(h), experts=e, top_k=k) as moe1
  output y = x -> moe(SwiGLU(h), experts=e, top_k=k, z_coef=0.01) as moe2"""
    model = loads(LAYER.format(body=body), "two.nn").to_torch()
    model(torch.randn(2, 3, 16))
    total = model.aux_loss()
    torch.testing.assert_close(total, model.moe1.last_aux_loss + model.moe2.last_aux_loss)
    total.backward()
    assert model.moe1.router.weight.grad.abs().sum() > 0


def test_router_jitter_only_in_training():
    model, layer = moe_layer(e=4, k=1)
    layer.jitter = 0.1
    seen = []
    layer.router.register_forward_hook(lambda m, args, out: seen.append(args[0].detach().clone()))
    x = torch.randn(5, 16)
    layer.eval()
    layer(x)
    assert torch.equal(seen[-1], x)
    layer.train()
    layer(x)
    ratio = seen[-1] / x
    assert not torch.equal(seen[-1], x)
    assert ((ratio >= 0.9 - 1e-6) & (ratio <= 1.1 + 1e-6)).all()


# ---- static checks, with spans -------------------------------------------------------------------------------

BAD = """
import "std/transformer.nn"
block Widen(x, hidden: int) {{
  return x -> linear(hidden) as up
}}
model M(d: int = 16) {{
  input x: f32[B, T, d]
  output y = x -> {call}
}}
"""


def check_error(call: str) -> tuple[str, str]:
    text = BAD.format(call=call)
    with pytest.raises(CheckError) as e:
        loads(text, "bad.nn")
    d = e.value.diagnostics[0]
    where = ""
    if d.span and d.span.file == "bad.nn" and d.span.line == d.span.end_line:
        where = text.splitlines()[d.span.line - 1][d.span.col - 1:d.span.end_col - 1]
    return d.code + " " + d.message + " | " + " ".join(n.message for n in d.notes), where


def test_top_k_larger_than_experts():
    msg, where = check_error("moe(SwiGLU(32), experts=4, top_k=5)")
    assert "top_k = 5 picks more experts than the layer has (experts = 4)" in msg
    assert where == "top_k=5"


def test_expert_must_map_width_back():
    msg, where = check_error("moe(Widen(32), experts=4, top_k=2)")
    assert msg.startswith("E0301 ") and "expert Widen returns 32 features, the layer's input has 16" in msg
    assert "Widen returns f32[B*T, 32] here" in msg  # a note at the block's return
    assert where.startswith("moe(")


def test_shared_expert_width_checked():
    msg, _ = check_error("moe(SwiGLU(32), experts=4, top_k=2, shared=Widen(8))")
    assert "shared expert Widen returns 8 features, the layer's input has 16" in msg


def test_capacity_factor_must_be_positive():
    msg, where = check_error("moe(SwiGLU(32), experts=4, top_k=2, capacity_factor=0.0)")
    assert "capacity_factor" in msg and "greater than 0" in msg
    assert where == "capacity_factor=0.0"


def test_shared_experts_need_a_shared_block():
    msg, where = check_error("moe(SwiGLU(32), experts=4, top_k=2, shared_experts=2)")
    assert "shared_experts = 2 without a shared expert block" in msg
    assert where == "shared_experts=2"


def test_expert_must_be_a_block():
    msg, _ = check_error('moe("SwiGLU", experts=4, top_k=2)')
    assert "is not a block" in msg


def test_block_value_given_to_an_op_without_block_arguments():
    msg, where = check_error("linear(SwiGLU(32))")
    assert "linear takes no block arguments, got block SwiGLU(32)" in msg
    assert where == "SwiGLU(32)"


def test_errors_in_the_expert_block_point_at_the_expert():
    msg, where = check_error("moe(SwiGLU(32, bias=3), experts=4, top_k=2)")
    assert "SwiGLU: 'bias' is declared bool, got int 3" in msg
    assert where == "bias=3"
    with pytest.raises(CheckError) as e:  # fails inside the block (linear(0)); a note points at the argument
        loads(BAD.format(call="moe(SwiGLU(0), experts=4, top_k=2)"), "bad.nn")
    d = e.value.diagnostics[0]
    assert "out_features" in d.message and d.span.file.endswith("transformer.nn")
    (note,) = [n for n in d.notes if n.message == "in block SwiGLU, called here"]
    assert (note.span.file, note.span.line, note.span.col, note.span.end_col) == ("bad.nn", 8, 23, 32)


# ---- IR: round trip, verifier, structure ---------------------------------------------------------------------

@pytest.mark.parametrize("name", MOE_SPECS)
def test_ir_round_trip_and_verify(name):
    m = specc.load(SPECS / f"{name}.nn").module
    verify(m)
    text = print_module(m)
    again = parse_module(text)
    verify(again)
    assert print_module(again) == text


def test_verifier_names_a_missing_expert_graph():
    m = specc.load(SPECS / "mixtral_8x7b.nn", **SHRINK["mixtral_8x7b"]).module
    expert = next(n.attrs.expert for g in m.graphs.values() for n in g.nodes() if n.target == "moe")
    del m.graphs[expert]
    with pytest.raises(AssertionError, match=f"moe names unknown graph\\(s\\) {expert}"):
        verify(m)


def test_deepseek_first_layer_dense_then_moe():
    """`if i < dense_layers` inside `repeat`: two folded runs, x1 dense and x27 sparse."""
    m = specc.load(SPECS / "deepseek_moe_16b.nn").module
    runs = [n for n in m.graph.nodes() if n.kind == "repeat"]
    assert [n.attrs.count for n in runs] == [1, 27]
    targets = [{n.target for _, n, _, _ in m.walk(m.graphs[r.target])} for r in runs]
    assert "moe" not in targets[0] and "moe" in targets[1]


# ---- summary: total and active parameters, FLOPs per token, without weights -----------------------------------

COUNTS = {
    "mixtral_8x7b": (46_702_792_704, 12_879_925_248),
    "deepseek_moe_16b": (16_375_728_128, 2_828_650_496),
    "switch_base_8": (619_339_008, None),
}


@pytest.mark.parametrize("name", MOE_SPECS)
def test_inspect_reports_total_and_active_params_without_torch(name):
    total, active = COUNTS[name]
    code = ("import sys, json, specc.cli; rc = specc.cli.main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'inspect imported torch'; sys.exit(rc)")
    run = subprocess.run([sys.executable, "-c", code, "inspect", str(SPECS / f"{name}.nn")], capture_output=True,
                         text=True, cwd=REPO, check=False)
    assert run.returncode == 0, run.stderr
    assert f"total params: {total:,}" in run.stdout
    if active is not None:
        assert f"active params per token: {active:,}" in run.stdout
    assert "FLOPs per token: " in run.stdout


def test_inspect_json_has_active_params_and_flops_per_token():
    run = subprocess.run([sys.executable, "-m", "specc", "inspect", str(SPECS / "mixtral_8x7b.nn"), "--format",
                          "json", "--dim", "B=1,T=1"], capture_output=True, text=True, check=True)
    data = json.loads(run.stdout)
    assert (data["params"], data["active_params"]) == COUNTS["mixtral_8x7b"]
    assert data["flops_per_token"] == data["flops"]  # one token
    # at T=1 the per-token FLOPs are 2 x (active weights outside the embedding and the norms), plus attention
    s = specc.load(SPECS / "mixtral_8x7b.nn").summary()
    assert data["flops"] == 2 * s.eval_macs({"B": 1, "T": 1})


def test_active_params_of_a_layer():
    s = loads(LAYER.format(body="output y = x -> moe(SwiGLU(h), experts=e, top_k=k, shared=SwiGLU(h), "
                                      "shared_experts=2)"), "l.nn", e=8, k=2).summary()
    expert, router = 3 * 16 * 24, 8 * 16
    assert s.params == router + 8 * expert + 2 * expert
    assert s.active_params == router + 2 * expert + 2 * expert
    assert s.eval_macs({"B": 1, "T": 1}) == router + 4 * expert  # per token: router, 2 routed + 2 shared


@pytest.mark.parametrize("name", MOE_SPECS)
def test_full_size_params_on_meta_device(name):
    spec = specc.load(SPECS / f"{name}.nn")
    with torch.device("meta"):
        model = spec.to_torch()
    assert sum(p.numel() for p in model.parameters()) == COUNTS[name][0]


# ---- shrunk models run forward and backward -----------------------------------------------------------------

def cli_overrides(name: str) -> list[str]:
    return [f"-D{k}={v}" for k, v in SHRINK[name].items()]


@pytest.mark.parametrize("name", MOE_SPECS)
def test_shrunk_model_forward_and_backward(name):
    spec = specc.load(SPECS / f"{name}.nn", **SHRINK[name])
    torch.manual_seed(0)
    model = spec.to_torch().train()
    assert sum(p.numel() for p in model.parameters()) == spec.summary().params
    inputs = [torch.randint(0, 100, (2, 6))] + ([torch.randint(0, 100, (2, 5))] if name == "switch_base_8" else [])
    logits = model(*inputs)
    assert logits.shape == (2, inputs[-1].shape[1], 100)
    aux = model.aux_loss()
    assert aux.item() > 0
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 100), inputs[-1].reshape(-1)) + aux
    loss.backward()
    routers = [m.router.weight for m in model.modules() if type(m).__name__ == "MixtureOfExperts"]
    assert routers and all(w.grad is not None and w.grad.abs().sum() > 0 for w in routers)
    used = [p for p in model.parameters() if p.grad is not None]
    assert len(used) > len(list(model.parameters())) // 2


def test_shrunk_mixtral_via_cli_overrides(tmp_path):
    run = subprocess.run([sys.executable, "-m", "specc", "compile", str(SPECS / "mixtral_8x7b.nn"), "--target",
                          "torch", "-o", str(tmp_path), *cli_overrides("mixtral_8x7b")], capture_output=True,
                         text=True, check=False)
    assert run.returncode == 0, run.stderr
    (emitted,) = tmp_path.glob("*.py")
    text = emitted.read_text()  # the experts and their sizes come from the config the -D values set
    assert "MixtureOfExperts(in_features, [SwiGLU(in_features, hidden) for _ in range(experts)], top_k=top_k" in text
    assert "experts: int = 4" in text and "d: int = 64" in text


# ---- T5 relative position bias -------------------------------------------------------------------------------

def hf_t5_bucket(relative_position, bidirectional=True, num_buckets=32, max_distance=128):
    """Hugging Face T5Attention._relative_position_bucket, restated."""
    relative_buckets = 0
    if bidirectional:
        num_buckets //= 2
        relative_buckets += (relative_position > 0).to(torch.long) * num_buckets
        relative_position = torch.abs(relative_position)
    else:
        relative_position = -torch.min(relative_position, torch.zeros_like(relative_position))
    max_exact = num_buckets // 2
    is_small = relative_position < max_exact
    large = max_exact + (torch.log(relative_position.float() / max_exact) / math.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).to(torch.long)
    large = torch.min(large, torch.full_like(large, num_buckets - 1))
    return relative_buckets + torch.where(is_small, relative_position, large)


@pytest.mark.parametrize("causal", [False, True])
def test_rel_pos_bias_matches_t5_bucketing(causal):
    body = f"output b = x -> rel_pos_bias(4, causal={'true' if causal else 'false'}) as rel"
    model = loads(LAYER.format(body=body), "rel.nn").to_torch()
    pos = torch.arange(300)
    offset = pos[None, :] - pos[:, None]
    assert torch.equal(model.rel.bucket(offset), hf_t5_bucket(offset, bidirectional=not causal))
    x = torch.randn(1, 7, 16)
    bias = model(x)
    assert bias.shape == (1, 4, 7, 7)
    want = model.rel.weight[hf_t5_bucket(offset[:7, :7], not causal)].permute(2, 0, 1)
    if causal:
        want = want.masked_fill(offset[:7, :7] > 0, float("-inf"))
    assert torch.equal(bias[0], want)


# ---- torch.compile ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cf", [0.0, 1.0])
def test_one_graph_break_under_torch_compile(cf):
    """Dispatch has one data-dependent step, the run lengths read back to size each expert's slice (`tolist`);
    capacity dropping adds none (dropped pairs are sorted behind the runs, not masked out)."""
    _, layer = moe_layer(k=2, shared=1, cf=cf)
    x = torch.randn(2, 8, 16)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(layer)(x)
    assert explained.graph_break_count == 1, [r.reason for r in explained.break_reasons]
    compiled = torch.compile(layer, backend="aot_eager")
    torch.testing.assert_close(compiled(x), layer(x))


def test_dense_models_report_no_separate_active_count():
    run = subprocess.run([sys.executable, "-m", "specc", "inspect", str(SPECS / "resnet18.nn")], capture_output=True,
                         text=True, cwd=REPO, check=False)
    assert run.returncode == 0, run.stderr
    assert "total params: 11,689,512" in run.stdout and "active params" not in run.stdout
