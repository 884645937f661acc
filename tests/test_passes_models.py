"""The pipeline on every spec in specs/ (and the hand-written attention spec): the IR stays valid and typed after
every pass, parameters and output types do not change, and the emitted PyTorch agrees with the unoptimised module
within 1e-5 in eval mode, loading the same state_dict (both ways, strictly)."""
from __future__ import annotations

from pathlib import Path

import pytest
from torch_util import dim_env, load_small, random_inputs, spec_paths

from specc.passes import MAX_LEVEL, PipelineOptions, run_pipeline
from specc.passes.rewrite import shape_context
from specc.printer import parse_module, print_module
from specc.summary import summarize
from specc.verify import verify

HAND = Path(__file__).parent / "golden" / "passes" / "hand_attention.nn"
PATHS = spec_paths() + [HAND]
IDS = [p.stem for p in PATHS]


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_pipeline_keeps_the_ir_valid(path: Path) -> None:
    spec = load_small(path)
    m0 = spec.module
    text0 = print_module(m0)
    m1, _ = run_pipeline(m0, PipelineOptions(level=MAX_LEVEL, verify=True, inference=True))  # verifies after each pass
    assert print_module(m0) == text0, "the pipeline modified its input"
    with shape_context(m1):
        verify(m1)
    text = print_module(m1)
    assert print_module(parse_module(text)) == text
    assert summarize(m1).params == summarize(m0).params
    assert m1.graph.output_types() == m0.graph.output_types()
    same, _ = run_pipeline(m0, PipelineOptions(level=0))
    assert print_module(same) == text0, "-O0 must only re-infer types"


def _build(module, name: str):
    from specc.backends.torch import load_source
    from specc.backends.torch.emit import class_name, emit_module_source

    cls = class_name(name)
    return getattr(load_source(emit_module_source(module), cls), cls)()


def _randomise_batchnorm(model, seed: int = 0) -> None:
    """Non-trivial running statistics and affine terms, so that folding them into the convs is tested."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            n = mod.num_features
            with torch.no_grad():  # not through .data: PyTorch does not version that (see specc/ops/fused.py)
                mod.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
                mod.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                if mod.affine:
                    mod.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                    mod.bias.copy_(torch.rand(n, generator=gen) - 0.5)


def _outputs(y) -> list:
    return list(y) if isinstance(y, (tuple, list)) else [y]


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_optimised_module_agrees_in_eval_mode(path: Path) -> None:
    """-O1 (the default) and -O2 (eager fusion) as compiled (train-safe), and -O2 with PipelineOptions(inference=True)
    (dropout dropped, if that differs)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    spec = load_small(path)
    variants = {}
    for level, inference in ((1, False), (MAX_LEVEL, False), (MAX_LEVEL, True)):
        ir, _ = run_pipeline(spec.module, PipelineOptions(level=level, inference=inference))
        variants.setdefault(print_module(ir), ir)
    if any(n.site for n in spec.module.graph.nodes()):  # `for ... as` loops: written from the spec (rolled.py)
        from specc.backends.torch import build_module

        ref = build_module(spec, opt_level=0)
        variants = {level: level for level in (1, MAX_LEVEL)}
    else:
        ref = _build(spec.module, spec.name)
    _randomise_batchnorm(ref)
    ref.eval()
    inputs = random_inputs(spec, dim_env(spec))
    with torch.no_grad():
        want = _outputs(ref(*inputs))
    for ir in variants.values():
        opt = build_module(spec, opt_level=ir) if isinstance(ir, int) else _build(ir, spec.name)
        opt.load_state_dict(ref.state_dict())  # strict: same keys, same shapes
        ref.load_state_dict(opt.state_dict())
        opt.eval()
        with torch.no_grad():
            got = _outputs(opt(*inputs))
        for w, g in zip(want, got):
            # rounding grows with the activations (ResNet-50 under torchvision's init: outputs in the thousands)
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5 * max(1.0, w.abs().max().item()))


def test_fused_resnet_trains_exactly_like_the_unfused_one() -> None:
    """In training mode the fused call runs conv then batchnorm (batch statistics): same outputs, same gradients,
    same running-stat updates."""
    torch = pytest.importorskip("torch")
    from specc.api import loads

    # 64x64 images, declared as such: the emitted forward checks its inputs against the spec
    src = (Path(__file__).parent.parent / "specs" / "resnet18.nn").read_text()
    spec = loads(src.replace("f32[B, 3, 224, 224]", "f32[B, 3, 64, 64]"), name="resnet18.nn")
    opt_ir, _ = run_pipeline(spec.module)
    ref, opt = _build(spec.module, spec.name), _build(opt_ir, spec.name)
    opt.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 64, 64)
    for model in (ref, opt):
        model.train()
        model(x).square().mean().backward()
    torch.testing.assert_close(opt.state_dict(), ref.state_dict(), rtol=1e-6, atol=1e-6)  # running stats
    grads = {n: p.grad for n, p in ref.named_parameters()}
    for n, p in opt.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], rtol=1e-5, atol=1e-6, msg=n)


def test_folded_weights_follow_parameter_updates() -> None:
    """The eval-mode folded/concatenated weights are cached; an in-place update of a source tensor refreshes them."""
    torch = pytest.importorskip("torch")
    for path in (Path(__file__).parent.parent / "specs" / "resnet18.nn", HAND):
        spec = load_small(path)
        opt_ir, _ = run_pipeline(spec.module)
        ref, opt = _build(spec.module, spec.name), _build(opt_ir, spec.name)
        opt.load_state_dict(ref.state_dict())
        ref.eval()
        opt.eval()
        inputs = random_inputs(spec, dim_env(spec) | {"B": 1, "T": 4})
        with torch.no_grad():
            opt(*inputs)  # fills the caches
            _randomise_batchnorm(ref, seed=1)
            opt.load_state_dict(ref.state_dict())  # in-place copies into the cached sources
            torch.testing.assert_close(opt(*inputs), ref(*inputs), rtol=1e-5, atol=1e-5)
            for model in (ref, opt):  # as an optimizer step would
                for p in model.parameters():
                    p.mul_(0.9)
            torch.testing.assert_close(opt(*inputs), ref(*inputs), rtol=1e-5, atol=1e-5)


def test_hand_written_attention_is_emitted_as_sdpa() -> None:
    from specc.backends.torch.emit import emit_module_source

    spec = load_small(HAND)
    before = emit_module_source(spec.module)
    after = emit_module_source(run_pipeline(spec.module, PipelineOptions(level=MAX_LEVEL))[0])
    assert "F.softmax" in before and "F.scaled_dot_product_attention" not in before
    assert "F.scaled_dot_product_attention(" in after and "F.softmax" not in after
    assert "merged_linear(x, self.q, self.k, self.v)" in after
    assert "nn.LayerNorm(in_features, elementwise_affine=False)" in after
    assert "fused_layer(" in after


def test_cli_reports_and_prints_passes(capsys) -> None:
    from specc.cli import main

    assert main(["inspect", str(HAND), "-O2", "--passes", "--format", "text"]) == 0
    out = capsys.readouterr().out
    assert "pass fuse_attention: " in out and "-> sdpa(" in out
    assert "pass merge_projections: " in out and "-> merged_linear %q_k_v" in out
    assert "skipped: HandBlock: %add adds the result of block %attn" in out
    assert main(["inspect", str(HAND), "--print-after", "fuse_layernorm", "--format", "json"]) == 0
    cap = capsys.readouterr()
    assert "// ----- IR after fuse_layernorm -----" in cap.err and "op layernorm(%x) {'affine': False}" in cap.err
    assert main(["inspect", str(HAND), "-O2", "--print-after-all", "--format", "json"]) == 0
    assert capsys.readouterr().err.count("// ----- IR after ") == 9
    assert main(["inspect", str(HAND), "-O0", "--passes"]) == 0
    assert "pass fuse_attention: off at -O0" in capsys.readouterr().out
    assert main(["inspect", str(HAND), "-O2", "--disable-pass", "fuse_attention", "--format", "text"]) == 0
    out = capsys.readouterr().out
    assert "op sdpa" not in out and "op softmax" in out and "op merged_linear" in out
    assert main(["inspect", str(HAND), "--disable-pass", "nope"]) == 2
    assert "unknown pass nope" in capsys.readouterr().err


def test_cli_compile_levels(tmp_path, capsys) -> None:
    from specc.cli import main

    for level in ("0", "1", "2"):
        assert main(["compile", str(HAND), "-O", level, "-o", str(tmp_path / level)]) == 0
    capsys.readouterr()
    (o0,), (o1,), (o2,) = (list((tmp_path / lv).glob("*.py")) for lv in ("0", "1", "2"))
    assert "scaled_dot_product_attention" not in o0.read_text() and "scaled_dot_product_attention" in o1.read_text()
    # the default level keeps every layer a module call; eager fusion only at -O2
    assert "merged_linear(" not in o1.read_text() and "fused_layer(" not in o1.read_text()
    assert "merged_linear(" in o2.read_text() and "fused_layer(" in o2.read_text()
    assert main(["compile", str(HAND), "-O2", "--disable-pass", "fuse_attention", "-o", str(tmp_path / "d")]) == 0
    (od,) = list((tmp_path / "d").glob("*.py"))
    assert "scaled_dot_product_attention" not in od.read_text() and "merged_linear(" in od.read_text()
