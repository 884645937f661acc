"""Differential tests: every spec in specs/ (shrunk as for the PyTorch tests) gives the same outputs through TVM as
through the emitted PyTorch module, on the same weights (its state_dict) and inputs, within 1e-4 relative.

The same compiled library is run at two sizes of its symbolic dims: they stay symbolic."""
from __future__ import annotations

import pytest
from torch_util import REPO, dim_env, load_small, random_inputs, spec_paths
from tvm_util import max_rel_diff, reference_model

from specc.api import loads

pytestmark = pytest.mark.tvm
tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

RTOL = 1e-4
SLOW = {"alexnet", "resnet18", "resnet50", "vgg16"}  # 224x224 CNNs: 5-30 s to compile each on 2 cores
SPECS = [pytest.param(p, id=p.stem, marks=[pytest.mark.slow] if p.stem in SLOW else []) for p in spec_paths()]


def _other_sizes(env: dict[str, int]) -> dict[str, int]:
    return {k: (1 if k == "B" else max(1, v - 2)) for k, v in env.items()}


@pytest.mark.parametrize("path", SPECS)
def test_tvm_matches_pytorch(path):
    spec = load_small(path)
    model = reference_model(spec)
    compiled = spec.to_tvm("tvm-cpu", weights=model)
    env = dim_env(spec)
    for sizes in (env, _other_sizes(env)) if env else (env,):
        inputs = random_inputs(spec, sizes, seed=1)
        with torch.no_grad():
            want = model(*inputs)
        got = compiled(*inputs)
        assert max_rel_diff(got, want) <= RTOL, sizes


@pytest.mark.parametrize("name", ["bert_base", "cifar_cnn"])
def test_tvm_matches_pytorch_after_fusion_passes(name):
    """-O1 IR (fused conv+bias+relu, fused layernorm and attention, merged q/k/v projections): weights keep their
    names, so the optimized PyTorch module's state_dict still fits."""
    spec = load_small(REPO / "specs" / f"{name}.nn")
    model = reference_model(spec, opt_level=1)
    compiled = spec.to_tvm("tvm-cpu", weights=model, opt_level=1)
    inputs = random_inputs(spec, dim_env(spec), seed=2)
    with torch.no_grad():
        want = model(*inputs)
    assert max_rel_diff(compiled(*inputs), want) <= RTOL


ATTENTION = ["gpt2", "bert_base", "mixtral_8x7b", "whisper_tiny", "vit_b16", "llama2_7b", "transformer_base"]


@pytest.mark.parametrize("name", ATTENTION)
def test_attention_as_matmuls_matches_pytorch(name, monkeypatch):
    """The CUDA lowering of sdpa (two batched matmuls and a softmax; causal, padding and sliding-window masks,
    grouped-query heads, cross-attention), checked on the CPU by lowering it for tvm-cpu too."""
    from specc.backends.tvm.rules import attention

    monkeypatch.setattr(attention, "MATMULS_ON", ("cuda", "cpu"))
    spec = load_small(REPO / "specs" / f"{name}.nn")
    model = reference_model(spec)
    compiled = spec.to_tvm("tvm-cpu", weights=model)
    assert "relax.nn.attention" not in compiled.lowered.mod.script()
    inputs = random_inputs(spec, dim_env(spec), seed=3)
    with torch.no_grad():
        want = model(*inputs)
    assert max_rel_diff(compiled(*inputs), want) <= RTOL


RESIDUAL = """
import "std/resnet.nn"
model Tiny(classes: int = 5) {
  input image: f32[B, 3, 16, 16]
  x = image -> conv2d(8, 3, padding=1, bias=false) as conv1 -> batchnorm as bn1 -> relu
  x = x -> BasicBlock(8) -> BasicBlock(16, 2)
  output logits = x -> global_avgpool -> flatten -> linear(classes) as fc
}
"""


def test_batchnorm_residual_blocks_fused_and_unfused():
    """Eval-mode batchnorm with real statistics, projection shortcuts; -O0 and -O1 (conv+bn+add+relu fused)."""
    spec = loads(RESIDUAL, "tiny.nn")
    x = torch.randn(3, 3, 16, 16)
    for level in (None, 1):
        model = reference_model(spec, opt_level=level)
        with torch.no_grad():
            want = model(x)
        assert max_rel_diff(spec.to_tvm("tvm-cpu", weights=model, opt_level=level)(x), want) <= RTOL


RECURRENT = """
model Rec() {
  input x: f32[B, {T}, 6]
  out, h = x -> gru(5, num_layers=2, bidirectional=true) as rnn
  y, hl, cl = out -> lstm(4) as lstm
  z, hr = y -> rnn(3, nonlinearity="relu") as plain
  output o = z
  output h_n = h
  output c_n = cl
}
"""


@pytest.mark.parametrize("length", ["T", "4"], ids=["symbolic-loop", "static-unrolled"])
def test_recurrent_layers_loop_and_unrolled(length):
    """A symbolic length runs the TIR time loop; a short static one is unrolled. Both match nn.GRU/LSTM/RNN."""
    spec = loads(RECURRENT.replace("{T}", length), "rec.nn")
    model = reference_model(spec)
    x = torch.randn(2, 4, 6)
    with torch.no_grad():
        want = model(x)
    assert max_rel_diff(spec.to_tvm("tvm-cpu", weights=model)(x), want) <= RTOL


BLOCKED = """
model Blocked() {
  input x: f32[B, T, 6]
  y, h, c = x -> lstm(130, num_layers=2, bidirectional=true) as enc
  out, hg = y -> gru(24) as dec
  output o = out
  output h_n = h
  output c_n = c
}
"""


def test_recurrent_blocks_from_the_target():
    """The unit-blocked recurrence: blocks of vector lanes (AVX-512 16, AVX2 8) times the vectors that keep ~8 FMA
    chains in flight, halved while padding exceeds an eighth; threads split the blocks only when a step's W_hh is
    at least half an L2."""
    from dataclasses import replace

    from specc.backends.tvm.rules.recurrent import choose_blocking
    from specc.backends.tvm.schedules._target import cpu_info

    def info(mcpu, cores):  # the cache sizes of the machine the test runs on do not matter
        target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "num-cores": cores})
        return replace(cpu_info(target), l2=2 * 1024 * 1024)

    big = choose_blocking("lstm", 650, info("skylake-avx512", 2))
    assert (big.units, big.blocks, big.parallel) == (32, 21, True)
    assert choose_blocking("lstm", 650, info("skylake-avx512", 1)).parallel is False
    assert choose_blocking("lstm", 650, info("haswell", 2)).units == 16
    assert choose_blocking("rnn", 650, info("haswell", 2)).units == 64
    # W_hh of 256 KiB: on one thread; 1 MiB = half the L2: split
    assert [choose_blocking("lstm", h, info("skylake-avx512", 2)).parallel for h in (128, 256)] == [False, True]
    small = choose_blocking("gru", 24, info("haswell", 2))  # 2 x 8 lanes would pad 24 to 32: one vector
    assert (small.units, small.parallel) == (8, False)


@pytest.mark.parametrize("mcpu", ["host", "haswell"], ids=["host", "avx2"])
def test_recurrent_blocked_kernel_parallel_matches_pytorch(mcpu, monkeypatch):
    """lstm (padded blocks split across 2 threads, both directions, 2 layers) into a gru (one thread), symbolic B
    and T, for the host's and an AVX2 CPU's vector width: the outputs and final states match nn.LSTM / nn.GRU."""
    from dataclasses import replace

    from specc.backends.tvm.rules import recurrent
    from specc.targets import load_target

    plans = []

    def split_lstm(kind, hidden, info):  # the split whatever this machine's L2 (H=130 keeps the test short)
        plan = choose(kind, hidden, info)
        plans.append(replace(plan, parallel=kind == "lstm"))
        return plans[-1]

    choose = recurrent.choose_blocking
    monkeypatch.setattr(recurrent, "choose_blocking", split_lstm)
    spec = loads(BLOCKED, "blocked.nn")
    model = reference_model(spec)
    target = load_target("tvm-cpu").model_copy(update={"mcpu": mcpu, "num_threads": 2})
    compiled = spec.to_tvm(target, weights=model)
    assert [(p.kind, p.parallel) for p in plans] == [("lstm", True)] * 4 + [("gru", False)]
    for b, t in ((2, 19), (1, 3)):
        x = torch.randn(b, t, 6)
        with torch.no_grad():
            want = model(x)
        assert max_rel_diff(compiled(x), want) <= RTOL


def test_runner_accepts_numpy_and_checks_inputs():
    spec = load_small(REPO / "specs" / "gpt2.nn")
    compiled = spec.to_tvm("tvm-cpu")
    tokens = torch.randint(0, 100, (2, 7))
    logits = compiled(tokens.numpy())
    assert logits.shape == (2, 7, 100) and type(logits).__module__ == "numpy"
    with pytest.raises(ValueError, match="T <= 16"):
        compiled(torch.zeros(1, 17, dtype=torch.int64))
    with pytest.raises(TypeError, match="int64"):
        compiled(torch.zeros(1, 3))


def test_weights_by_state_dict_name_and_clear_mismatch(tmp_path):
    import numpy as np

    spec = load_small(REPO / "specs" / "lenet5.nn")
    model = reference_model(spec)
    path = tmp_path / "w.npz"
    np.savez(path, **{k: v.numpy() for k, v in model.state_dict().items()})
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        want = model(x)
    assert max_rel_diff(spec.to_tvm("tvm-cpu", weights=path)(x), want) <= RTOL
    bad = {k: v for k, v in model.state_dict().items() if k != "c1.weight"}
    with pytest.raises(ValueError, match="missing c1.weight"):
        spec.to_tvm("tvm-cpu", weights=bad)
