"""Every kind of spec error, rendered rustc-style, compared with golden files; and the CLI's exit codes.

Each tests/golden/errors/NAME.nn is checked from inside that folder (so paths print as `NAME.nn:line:col`) and
its full rendering is compared with NAME.txt. `pytest --accept` rewrites the .txt files; read them before committing.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import specc
from specc.api import CheckError
from specc.diagnostics import CODES
from specc.elaborate import STDLIB

REPO = Path(__file__).resolve().parent.parent
ERRORS = REPO / "tests" / "golden" / "errors"

# golden case -> (the codes it must report, in order; -D overrides)
CASES = {
    "syntax": (["E0001"], {}),
    "syntax_eof": (["E0001"], {}),
    "syntax_char": (["E0001"], {}),
    "syntax_unclosed": (["E0001"], {}),
    "invalid_literal": (["E0002"], {}),
    "unknown_name": (["E0101"], {}),
    "unknown_op": (["E0102"], {}),
    "unknown_argument": (["E0103"], {}),
    "wrong_arity": (["E0104"], {}),
    "wrong_arity_block": (["E0104"], {}),
    "missing_argument": (["E0105"], {}),
    "duplicate_definition": (["E0106"], {}),
    "duplicate_parameter": (["E0106"], {}),
    "bad_hyper_parameter": (["E0107"], {}),
    "bad_hyper_parameter_type": (["E0107"], {}),
    "type_error": (["E0108"], {}),
    "assertion_failed": (["E0109"], {}),
    "bad_override": (["E0110"], {"clases": 10}),
    "recursion": (["E0111"], {}),
    "budget": (["E0112"], {}),
    "missing_import": (["E0201"], {}),
    "import_cycle": (["E0202"], {}),
    "shape_mismatch": (["E0301"], {}),
    "shape_mismatch_in_block": (["E0301"], {}),
    "dtype_mismatch": (["E0302"], {}),
    "rank_mismatch": (["E0303"], {}),
    "dim_constraint": (["E0304"], {}),
    "slice_bound": (["E0304"], {}),
    "invalid_attribute": (["E0305"], {}),
    "missing_model": (["E0401"], {}),
    "missing_output": (["E0402"], {}),
    "train_section": (["E0403"], {}),
    "init_section": (["E0404"], {}),
    "multiple_errors": (["E0103", "E0102", "E0301", "E0101"], {}),
}

# codes no spec can trigger in `specc check`: they belong to later stages
NOT_FROM_THE_FRONT_END = {"E0501",  # cannot lower: a backend's error
                          "E0900"}  # internal error: a bug in specc, by definition no spec is meant to reach it


def check(name: str, overrides: dict) -> CheckError:
    cwd = os.getcwd()
    os.chdir(ERRORS)
    try:
        with pytest.raises(CheckError) as e:
            specc.load(f"{name}.nn", **overrides)
    finally:
        os.chdir(cwd)
    return e.value


def normalise(text: str) -> str:
    return text.replace(str(STDLIB), "<specs>")


@pytest.mark.parametrize("name", sorted(CASES))
def test_error_rendering_matches_golden(name, golden):
    codes, overrides = CASES[name]
    err = check(name, overrides)
    assert [d.code for d in err.diagnostics] == codes, err.render()
    golden(ERRORS / f"{name}.txt", normalise(err.render()) + "\n")


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_diagnostic_is_located(name):
    err = check(name, CASES[name][1])
    for d in err.diagnostics:
        assert d.code in CODES
        if d.code not in ("E0401",):  # a file without a model has no line to point at
            assert d.span is not None and d.span.line >= 1 and d.span.col >= 1, d


def test_every_front_end_code_has_a_golden_case():
    covered = {c for codes, _ in CASES.values() for c in codes}
    assert covered == set(CODES) - NOT_FROM_THE_FRONT_END


def test_the_shape_mismatch_names_both_sides_and_the_producer():
    err = check("shape_mismatch", {})
    (d,) = err.diagnostics
    assert d.message == "linear 'fc2': input has 128 features, layer expects 256"
    assert (d.span.line, d.span.col) == (4, 19)
    (note,) = d.notes
    assert note.span.line == 3 and "f32[B, 128]" in note.message


def test_independent_errors_are_all_reported_once():
    err = check("multiple_errors", {})
    lines = sorted(d.span.line for d in err.diagnostics)
    assert lines == [4, 5, 6, 8]  # line 7 uses the failed values: no cascade
    assert err.render().endswith("4 errors found")


def test_errors_in_several_blocks_and_the_model_are_all_reported():
    src = """
block A(x) { return x -> lineer(4) }
block B2(x) { return x -> linear(4, wat=1) }
model M() {
  input x: f32[B, 4]
  a = x -> A
  b = x -> B2
  output y = x -> relu(3)
}"""
    with pytest.raises(CheckError) as e:
        specc.api.loads(src, name="t.nn")
    assert [d.code for d in e.value.diagnostics] == ["E0102", "E0103", "E0104"]


def test_the_same_block_error_is_reported_once_for_many_calls():
    src = """
block A(x) { return x -> lineer(4) }
model M() {
  input x: f32[B, 4]
  output y = x -> A -> A -> A
}"""
    with pytest.raises(CheckError) as e:
        specc.api.loads(src, name="t.nn")
    assert [d.code for d in e.value.diagnostics] == ["E0102"]


def test_syntax_error_points_at_the_token():
    err = check("syntax", {})
    (d,) = err.diagnostics
    assert (d.span.line, d.span.col, d.span.end_col) == (4, 3, 9)
    assert "')'" in d.help


# ---- the command line -------------------------------------------------------------------------------------------

def specc_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "specc", *args], cwd=cwd, capture_output=True, text=True)


def test_cli_check_ok():
    r = specc_cli("check", "specs/lenet5.nn", "specs/resnet18.nn")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["specs/lenet5.nn: ok: model LeNet5, 14 nodes, 61,706 params",
                                     "specs/resnet18.nn: ok: model ResNet18, 95 nodes, 11,689,512 params"]


def test_cli_spec_errors_exit_1_with_the_rendered_diagnostics():
    r = specc_cli("check", "shape_mismatch.nn", "unknown_op.nn", cwd=ERRORS)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert "error[E0301]: linear 'fc2': input has 128 features, layer expects 256" in r.stderr
    assert "error[E0102]" in r.stderr  # the second file is checked too
    assert "shape_mismatch.nn:4:19" in r.stderr


@pytest.mark.parametrize("args", [
    ("inspect", "specs/missing.nn"),
    ("check", "specs/lenet5.nn", "-D", "classes"),
    ("check", "specs/lenet5.nn", "-D", "3=classes"),
    ("inspect", "specs/lenet5.nn", "--dim", "B=x"),
    ("inspect", "specs/lenet5.nn", "--format", "pdf"),
    ("check",),
    (),
    ("frobnicate",),
])
def test_cli_usage_errors_exit_2(args):
    r = specc_cli(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("name", ["recursion", "import_cycle", "bad_override", "syntax_eof"])
def test_cli_never_prints_a_traceback(name):
    extra = ["-D", "clases=10"] if name == "bad_override" else []
    r = specc_cli("inspect", f"{name}.nn", *extra, cwd=ERRORS)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    assert "error[E" in r.stderr


def test_check_and_inspect_do_not_import_torch_or_tvm():
    code = """
import sys
from specc.cli import main
assert main(["check", "specs/resnet50.nn", "specs/alexnet.nn"]) == 0
for fmt in ("table", "text", "json"):
    assert main(["inspect", "specs/resnet18.nn", "--format", fmt]) == 0
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "tvm"))
print("HEAVY", heavy)
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout
