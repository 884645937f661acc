"""Shared test setup.

Golden files: `pytest --accept` (or SPECC_ACCEPT=1) rewrites them from the current output instead of comparing.
Read the diff (`git diff tests/golden`) before committing what it wrote.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n 2`: one core per worker, not each worker on every core
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--accept", action="store_true",
                     help="rewrite golden files from the current output (same as SPECC_ACCEPT=1)")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--accept"):
        os.environ["SPECC_ACCEPT"] = "1"  # so tests that read the variable themselves see it too


def accepting() -> bool:
    return os.environ.get("SPECC_ACCEPT") == "1"


@pytest.fixture
def golden():
    """golden(path, text): assert that `text` equals the file at `path` (or write it when accepting)."""

    def check(path: Path, actual: str) -> None:
        if accepting():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(actual, encoding="utf-8")
            return
        rel = path.relative_to(REPO) if path.is_relative_to(REPO) else path
        assert path.is_file(), f"no golden file {rel}: run `pytest --accept` to create it, then read it"
        expected = path.read_text(encoding="utf-8")
        if actual != expected:
            diff = "\n".join(difflib.unified_diff(expected.splitlines(), actual.splitlines(), f"{rel} (golden)",
                                                  "actual", lineterm=""))
            pytest.fail(f"output differs from {rel} (`pytest --accept` to accept):\n{diff}", pytrace=False)

    return check
