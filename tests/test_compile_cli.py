"""`specc compile` end to end: exit codes (0 ok, 1 spec error, 2 usage error, 3 internal error), no tracebacks,
and atomic output: a failed compile leaves the output folder byte-for-byte as it was, and files specc did not
write are never overwritten without --force."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from torch_util import REPO, SPECS

import specc
from specc import cli, fsutil

LENET = SPECS / "lenet5.nn"


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "specc", *args], capture_output=True, text=True, cwd=cwd,
                         timeout=120, check=False)
    assert "Traceback" not in res.stderr + res.stdout
    return res


def snapshot(folder: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file and folder under folder (hidden ones too): contents, mode, mtime."""
    if not folder.exists():
        return {}
    out = {}
    for p in sorted(folder.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(folder))] = (p.read_bytes() if p.is_file() else b"<dir>", st.st_mode, st.st_mtime_ns)
    return out


@pytest.fixture
def populated(tmp_path):
    """An output folder holding a previous specc build, a user's own file, and a hidden file."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "lenet5.py").write_text(fsutil.MARKER + " 0.0.1 from an older build\nold = True\n")
    (out / "notes.py").write_text("# my notes, not generated\n")
    (out / ".keep").write_bytes(b"")
    return out


def test_compile_writes_the_module(tmp_path):
    out = tmp_path / "out"
    res = run_cli("compile", str(LENET), "-O", "0", "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"wrote {out / 'lenet5.py'}"
    written = (out / "lenet5.py").read_text()
    assert written == specc.load(LENET).torch_source()
    assert sorted(p.name for p in out.iterdir()) == ["lenet5.py"]  # no temporary files left
    mode = stat.S_IMODE((out / "lenet5.py").stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # the usual permissions, not mkstemp's 0600


def test_default_target_is_torch_and_output_runs(tmp_path):
    torch = pytest.importorskip("torch")
    res = run_cli("compile", str(LENET), "-o", str(tmp_path))
    assert res.returncode == 0, res.stderr
    again = run_cli("compile", str(LENET), "--target", "torch-cpu", "-o", str(tmp_path / "b"))
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "lenet5.py").read_bytes() == (tmp_path / "b" / "lenet5.py").read_bytes()
    from specc.backends.torch import load_source

    mod = load_source((tmp_path / "lenet5.py").read_text(), "cli")
    assert mod.LeNet5()(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_spec_error_exits_1_and_leaves_folder_alone(populated, tmp_path):
    bad = tmp_path / "bad.nn"
    bad.write_text("model M() {\n  input x: f32[B, 4]\n  output y = x -> linear(4) -> conv2d(3, 3)\n}\n")
    before = snapshot(populated)
    res = run_cli("compile", str(bad), "-o", str(populated))
    assert res.returncode == 1
    assert "error[E0303]" in res.stderr and f"{bad}:3:" in res.stderr
    assert snapshot(populated) == before


def test_usage_errors_exit_2(populated, tmp_path):
    before = snapshot(populated)
    assert run_cli("compile", str(tmp_path / "missing.nn"), "-o", str(populated)).returncode == 2
    res = run_cli("compile", str(LENET), "-D", "no equals sign", "-o", str(populated))
    assert res.returncode == 2 and "-D expects NAME=VALUE" in res.stderr
    assert run_cli("compile").returncode == 2  # argparse: missing FILE
    assert snapshot(populated) == before


def test_bad_override_exits_1_with_location(populated):
    before = snapshot(populated)
    res = run_cli("compile", str(LENET), "-D", 'classes="ten"', "-o", str(populated))
    assert res.returncode == 1 and "lenet5.nn:3:" in res.stderr
    assert snapshot(populated) == before


def test_foreign_file_is_not_overwritten_without_force(populated, tmp_path):
    spec = tmp_path / "notes.nn"  # compiles to notes.py, the user's file
    spec.write_text("model Notes() {\n  input x: f32[B, 4]\n  output y = x -> linear(4)\n}\n")
    before = snapshot(populated)
    res = run_cli("compile", str(spec), "-O", "0", "-o", str(populated))
    assert res.returncode == 2
    assert "refusing to overwrite" in res.stderr and "notes.py" in res.stderr and "--force" in res.stderr
    assert snapshot(populated) == before
    res = run_cli("compile", str(spec), "-O", "0", "-o", str(populated), "--force")
    assert res.returncode == 0, res.stderr
    assert (populated / "notes.py").read_text().startswith(fsutil.MARKER)


def test_file_specc_wrote_is_replaced_without_force(populated):
    res = run_cli("compile", str(LENET), "-O", "0", "-o", str(populated))
    assert res.returncode == 0, res.stderr
    assert (populated / "lenet5.py").read_text() == specc.load(LENET).torch_source()
    assert (populated / "notes.py").read_text() == "# my notes, not generated\n"


def test_output_path_that_is_a_file_exits_2(tmp_path):
    target = tmp_path / "a-file"
    target.write_text("x")
    res = run_cli("compile", str(LENET), "-o", str(target / "sub"))
    assert res.returncode == 2 and "is not a folder" in res.stderr
    assert target.read_text() == "x"


def test_emitter_crash_exits_3_and_leaves_folder_alone(populated, monkeypatch, capsys):
    """An exception inside the emitter (injected) is an internal error: exit 3, a message, no traceback, and
    nothing written."""
    from specc.backends.torch import emit

    def boom(*a, **k):
        raise RuntimeError("injected emitter failure")

    monkeypatch.setattr(emit, "emit_module_source", boom)
    before = snapshot(populated)
    code = cli.main(["compile", str(LENET), "-O", "0", "-o", str(populated)])
    err = capsys.readouterr().err
    assert code == 3 and "internal error" in err and "injected emitter failure" in err and "Traceback" not in err
    assert snapshot(populated) == before


def test_failure_while_committing_rolls_back(populated, monkeypatch):
    """All files or none: when the second rename fails, the first target gets its old bytes back, the staged
    files are removed, and folders created for the output are removed again."""
    before = snapshot(populated)
    real_replace = os.replace
    calls = []

    def flaky(src, dst, *a, **k):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("disk full (injected)")
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(fsutil.os, "replace", flaky)
    files = {populated / "lenet5.py": fsutil.MARKER + " new\n", populated / "new" / "deep" / "b.py": "b\n"}
    with pytest.raises(OSError, match="injected"):
        fsutil.commit_files(files)
    monkeypatch.setattr(fsutil.os, "replace", real_replace)
    assert snapshot(populated) == before


def test_commit_refuses_folders_and_foreign_files_before_writing_anything(populated):
    before = snapshot(populated)
    (populated / "adir.py").mkdir()
    before = snapshot(populated)
    with pytest.raises(fsutil.OutputError, match="is a folder"):
        fsutil.commit_files({populated / "lenet5.py": fsutil.MARKER + "\n", populated / "adir.py": "x"})
    with pytest.raises(fsutil.OutputError, match="did not write"):
        fsutil.commit_files({populated / "lenet5.py": fsutil.MARKER + "\n", populated / "notes.py": "x"})
    assert snapshot(populated) == before


def test_compile_is_byte_identical_across_runs(tmp_path):
    for d in ("a", "b"):
        assert run_cli("compile", str(SPECS / "resnet18.nn"), "-o", str(tmp_path / d)).returncode == 0
    assert (tmp_path / "a" / "resnet18.py").read_bytes() == (tmp_path / "b" / "resnet18.py").read_bytes()
