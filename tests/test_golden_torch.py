"""Golden files for emitted PyTorch source: tests/golden/torch/<spec>.py.

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


@pytest.mark.parametrize("stem", CASES)
def test_emitted_source_matches_golden(stem):
    path = SPECS / f"{stem}.nn"
    if not path.is_file():
        pytest.skip(f"{path.name} not in specs/")
    got = specc.load(path).torch_source()
    golden = GOLDEN / f"{stem}.py"
    if os.environ.get("SPECC_ACCEPT") == "1":  # also set by `pytest --accept` (tests/conftest.py)
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(got)
        return
    assert golden.is_file(), f"no golden file {golden.relative_to(REPO)}: run with SPECC_ACCEPT=1 to create it"
    want = golden.read_text()
    if got != want:
        diff = "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True), f"golden/{stem}.py",
                                            f"emitted {stem}.py"))
        pytest.fail(f"emitted source differs from the golden file (SPECC_ACCEPT=1 to accept):\n{diff}")
