"""Per-pass tests: Before IR (tests/golden/passes/<case>.before.ir, hand-written) -> one pass -> the Expected IR and
the pass's report (<case>.expected.ir, a golden file: `pytest --accept` rewrites it; read the diff)."""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from specc.passes import PipelineOptions
from specc.passes.pipeline import PIPELINE, Pass, run_pipeline
from specc.passes.rewrite import shape_context
from specc.printer import parse_module, print_module
from specc.verify import verify

GOLDEN = Path(__file__).parent / "golden" / "passes"
CASES = sorted(p.name.removesuffix(".before.ir") for p in GOLDEN.glob("*.before.ir"))


def load_case(case: str):
    """(module, pass, options, description) of a Before file: `# pass: NAME [inference]` then comments, then IR."""
    lines = (GOLDEN / f"{case}.before.ir").read_text(encoding="utf-8").splitlines()
    head = lines[0].removeprefix("# pass: ").split()
    about = [ln[2:] for ln in lines[1:] if ln.startswith("# ")]
    text = "\n".join(ln for ln in lines if not ln.startswith("#"))
    module = parse_module(text)
    p: Pass = importlib.import_module(f"specc.passes.{head[0]}").PASS
    return module, p, PipelineOptions(inference="inference" in head[1:]), about


def checked(m) -> None:
    with shape_context(m):
        verify(m)
    text = print_module(m)
    assert print_module(parse_module(text)) == text, "the IR text does not round-trip"


@pytest.mark.parametrize("case", CASES)
def test_pass(case: str, golden) -> None:
    before, p, opts, about = load_case(case)
    if p.name != "infer":  # the infer case starts from deliberately stale types
        checked(before)
    text_before = print_module(before)
    res = p.run(before, opts)
    assert print_module(before) == text_before, f"{p.name} modified the module it was given"
    checked(res.module)
    report = [f"# rewrote: {c}" for c in res.changed] + [f"# skipped: {s}" for s in res.skipped]
    out = "\n".join([f"# {ln}" for ln in about] + [f"# after {p.name}:", print_module(res.module).rstrip(), *report])
    golden(GOLDEN / f"{case}.expected.ir", out + "\n")


def test_every_pass_has_a_case() -> None:
    tested = {load_case(c)[1].name for c in CASES}
    assert set(PIPELINE) <= tested, f"passes without a Before/Expected case: {set(PIPELINE) - tested}"


def test_each_pass_module_defines_pass() -> None:
    for name in PIPELINE:
        p = importlib.import_module(f"specc.passes.{name}").PASS
        assert isinstance(p, Pass) and p.name == name and p.doc


def test_passes_are_idempotent_on_their_output() -> None:
    for case in CASES:
        before, p, opts, _ = load_case(case)
        once = p.run(before, opts).module
        twice = p.run(once, opts)
        assert not twice.changed, f"{case}: {p.name} changes its own output again: {twice.changed}"


def test_fused_nodes_keep_every_source_span() -> None:
    before, p, opts, _ = load_case("fuse_layernorm")
    after = p.run(before, opts).module
    ln = [n for n in after.graph.nodes() if n.target == "layernorm"]
    assert len(ln) == 2
    lines = sorted(s.line for s in ln[0].origin)
    assert lines == [2, 3, 4, 5, 6, 7], lines  # mean, sub, var, add eps, sqrt, div


def test_unknown_pass_is_a_usage_error() -> None:
    from specc.errors import UsageError

    before, *_ = load_case("cse")
    with pytest.raises(UsageError, match="unknown pass nope"):
        run_pipeline(before, PipelineOptions(disabled=("nope",)))
