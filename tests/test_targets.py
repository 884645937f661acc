"""Targets are data: targets/*.toml load and validate; a user's own file works with --target PATH; a bad file
gives one located error per problem (file:line:col, the line quoted), never a traceback."""
from __future__ import annotations

import subprocess
import sys

import pytest
from torch_util import REPO

from specc.api import CheckError
from specc.targets import TARGETS_DIR, Target, TargetNotFound, available, load_target


def test_shipped_targets_load():
    assert {"torch-cpu", "torch-cuda"} <= set(available())
    for name in available():
        t = load_target(name)
        assert isinstance(t, Target) and t.name == name
    cpu, cuda = load_target("torch-cpu"), load_target("torch-cuda")
    assert (cpu.backend, cpu.device, cpu.dtype, cpu.compile) == ("torch", "cpu", "float32", False)
    assert (cuda.backend, cuda.device, cuda.compile) == ("torch", "cuda", True)
    assert load_target("torch") == cpu  # the default alias


def test_target_by_path(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('backend = "torch"\ndevice = "cpu"\ndtype = "bfloat16"\ndescription = "my own"\n')
    t = load_target(str(path))
    assert (t.name, t.dtype, t.description) == ("mine", "bfloat16", "my own")
    assert load_target(str(TARGETS_DIR / "torch-cuda.toml")) == load_target("torch-cuda")


def _errors(tmp_path, text: str, name: str = "t.toml"):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(CheckError) as err:
        load_target(str(path))
    return err.value


BAD = [
    # (file text, code, line, col, words in the message)
    ('backend = "torch"\nfoo = 1\n', "E0107", 2, 1, "unknown target key 'foo'"),
    ('backend = "torch"\n\n[extra]\nx = 1\n', "E0107", 3, 2, "unknown target key 'extra'"),
    ('backend = "torch"\ncompile = "yes"\n', "E0107", 2, 11, "'compile'"),
    ('backend = "torch"\ncompile = 1\n', "E0107", 2, 11, "'compile'"),
    ('backend = "torch"\ndtype = "float64"  # no\n', "E0107", 2, 9, "'dtype'"),
    ('backend = "torch"\nnum_threads = 0\n', "E0107", 2, 15, "greater than or equal to 1"),
    ('backend = "torch"\nnum_threads = "4"\n', "E0107", 2, 15, "'num_threads'"),
    ('backend = "onnx"\n', "E0107", 1, 11, "'backend'"),
    ('device = "cpu"\n', "E0107", 1, 1, "no 'backend'"),
    ('backend = "torch"\ndevice = \n', "E0001", 2, 10, "bad target file"),
    ('backend = "torch"\ndevice = "cpu"\ndevice = "cuda"\n', "E0001", 3, None, "bad target file"),
    ('backend = "torch\n', "E0001", 1, None, "bad target file"),
]


@pytest.mark.parametrize("text,code,line,col,words", BAD, ids=[b[4] + f"@{b[2]}" for b in BAD])
def test_bad_target_file_is_located(tmp_path, text, code, line, col, words):
    err = _errors(tmp_path, text)
    d = next(d for d in err.diagnostics if words in d.message)
    assert d.code == code
    assert d.span.file.endswith("t.toml") and d.span.line == line
    if col is not None:
        assert d.span.col == col
    rendered = err.render()
    assert f"t.toml:{line}:" in rendered and "Traceback" not in rendered


def test_every_problem_of_a_file_is_reported(tmp_path):
    err = _errors(tmp_path, 'backend = "torch"\ndevice = "tpu"\nfoo = 1\nnum_threads = -2\n')
    assert sorted(d.span.line for d in err.diagnostics) == [2, 3, 4]


def test_unknown_target_name_lists_the_known_ones():
    with pytest.raises(TargetNotFound) as err:
        load_target("torch-tpu")
    assert "torch-cpu" in str(err.value)


def test_cli_unknown_target_is_a_usage_error(tmp_path):
    res = _cli("compile", "specs/lenet5.nn", "--target", "torch-tpu", "-o", str(tmp_path / "out"))
    assert res.returncode == 2
    assert "unknown target 'torch-tpu'" in res.stderr and "torch-cpu" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "out").exists()


def _cli(*args: str, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "specc", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120, check=False)


def test_cli_target_path_and_bad_file(tmp_path):
    good = tmp_path / "mine.toml"
    good.write_text('backend = "torch"\n')
    res = _cli("compile", "specs/lenet5.nn", "--target", str(good), "-O", "0", "-o", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out" / "lenet5.py").is_file()
    bad = tmp_path / "bad.toml"
    bad.write_text('backend = "torch"\ncompile = "sometimes"\n')
    res = _cli("compile", "specs/lenet5.nn", "--target", str(bad), "-o", str(tmp_path / "out2"))
    assert res.returncode == 1
    assert f"{bad}:2:11" in res.stderr and 'compile = "sometimes"' in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "out2").exists()


def test_target_settings_reach_the_built_module(tmp_path):
    torch = pytest.importorskip("torch")
    import specc

    path = tmp_path / "bf16.toml"
    path.write_text('backend = "torch"\ndevice = "cpu"\ndtype = "bfloat16"\ncompile = true\n')
    model = specc.load(REPO / "specs" / "lenet5.nn").to_torch(target=load_target(str(path)))
    assert isinstance(model, torch._dynamo.eval_frame.OptimizedModule)  # wrapped, compiled on first call
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
