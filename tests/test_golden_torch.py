"""Golden files for emitted PyTorch source: tests/golden/torch/<spec>.py at -O0 and tests/golden/torch_default/<spec>.py
at the default level (what `specc compile` writes; plain modules, see specc/passes/pipeline.py).

A change to the emitter shows up here as a diff. Read it; if it is what you meant, refresh the files with

    SPECC_ACCEPT=1 pytest tests/test_golden_torch.py      (or `pytest --accept`)

and commit them with the change that caused them.
"""
from __future__ import annotations

import difflib
import os

import pytest
from torch_util import REPO, SPECS

import specc

GOLDEN = REPO / "tests" / "golden" / "torch"
CASES = ["lenet5", "resnet18", "resnet50", "gpt2", "deepseek_moe_16b"]


DEFAULT = REPO / "tests" / "golden" / "torch_default"
DEFAULT_CASES = ["lenet5", "resnet18", "gpt2", "bert_base", "deepseek_moe_16b", "ddpm_cifar10"]


def _check(stem: str, folder, opt_level: int | None) -> None:
    path = SPECS / f"{stem}.nn"
    if not path.is_file():
        pytest.skip(f"{path.name} not in specs/")
    got = specc.load(path).torch_source(opt_level=opt_level)
    golden = folder / f"{stem}.py"
    if os.environ.get("SPECC_ACCEPT") == "1":  # also set by `pytest --accept` (tests/conftest.py)
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(got)
        return
    assert golden.is_file(), f"no golden file {golden.relative_to(REPO)}: run with SPECC_ACCEPT=1 to create it"
    want = golden.read_text()
    if got != want:
        rel = golden.relative_to(REPO / "tests")
        diff = "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True), str(rel),
                                            f"emitted {stem}.py"))
        pytest.fail(f"emitted source differs from the golden file (SPECC_ACCEPT=1 to accept):\n{diff}")


@pytest.mark.parametrize("stem", CASES)
def test_emitted_source_matches_golden(stem):
    _check(stem, GOLDEN, 0)


@pytest.mark.parametrize("stem", DEFAULT_CASES)
def test_default_level_source_matches_golden(stem):
    _check(stem, DEFAULT, None)


def test_api_and_cli_compile_write_the_same_text(tmp_path, capsys):
    """One driver: `specc compile p` writes exactly `specc.load(p).torch_source()`, at the default level and at
    each explicit one."""
    from specc.cli import main

    path = SPECS / "resnet18.nn"
    spec = specc.load(path)
    for level in (None, 0, 1, 2):
        out = tmp_path / str(level)
        assert main(["compile", str(path), "-o", str(out), *(["-O", str(level)] if level is not None else [])]) == 0
        (written,) = out.glob("*.py")
        assert written.read_text() == spec.torch_source(opt_level=level), f"-O{level}"
    capsys.readouterr()
    assert spec.torch_source() == spec.torch_source(opt_level=1) != spec.torch_source(opt_level=2)
