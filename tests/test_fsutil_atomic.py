"""Multi-file outputs commit as a whole: a compile killed at any point is finished (or its litter removed) by the
next commit into the folder, and the manifest tells a reader whether the files belong to one compile."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from specc import fsutil

MANIFEST = "m.manifest.json"


def _version(folder: Path, v: int, size: int = 1) -> dict[Path, bytes]:
    return {folder / name: (f"{fsutil.MARKER} v{v} {name}\n".encode() * size) for name in ("m.so", "m.npz", "m_tvm.py")}


def _commit_in_child(folder: Path, v: int, die_at: str, size: int = 1) -> int:
    """Run commit_files in a child that dies with os._exit at the named point, as a SIGKILL would."""
    code = f"""
import os, sys
from pathlib import Path
from specc import fsutil
folder = Path({str(folder)!r})
files = {{folder / n: (f"{{fsutil.MARKER}} v{v} {{n}}\\n".encode() * {size}) for n in ("m.so", "m.npz", "m_tvm.py")}}
real_replace, real_stage, n = os.replace, fsutil._stage, [0]
def replace(src, dst):
    real_replace(src, dst)
    if {die_at!r} == "rename" and not str(dst).endswith(".json"):
        n[0] += 1
        if n[0] == 2:
            os._exit(9)
def stage(path, data):
    tmp = real_stage(path, data)
    if {die_at!r} == "stage":
        os._exit(9)
    return tmp
fsutil.os.replace, fsutil._stage = replace, stage
fsutil.commit_files(files, manifest={MANIFEST!r})
"""
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": os.getcwd()},
                          timeout=120).returncode


def _litter(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(fsutil.PREFIX))


def test_a_compile_killed_between_renames_is_finished_by_the_next(tmp_path):
    fsutil.commit_files(_version(tmp_path, 1), manifest=MANIFEST)
    assert _commit_in_child(tmp_path, 2, "rename") == 9
    # the kill left a mix: a reader checking the manifest refuses it
    assert b" v2 " in (tmp_path / "m.so").read_bytes() and b" v1 " in (tmp_path / "m_tvm.py").read_bytes()
    assert fsutil.check_manifest(tmp_path, MANIFEST), "a mix of two compiles must not pass the manifest"
    assert _litter(tmp_path)
    fsutil.commit_files({tmp_path / "other.py": fsutil.MARKER + "\n"})  # any later commit into the folder
    assert fsutil.check_manifest(tmp_path, MANIFEST) == []
    assert all(b" v2 " in p.read_bytes() for p in _version(tmp_path, 2))
    assert _litter(tmp_path) == []


def test_a_compile_killed_while_staging_leaves_the_old_files_and_its_litter_is_removed(tmp_path):
    fsutil.commit_files(_version(tmp_path, 1), manifest=MANIFEST)
    assert _commit_in_child(tmp_path, 2, "stage") == 9
    assert _litter(tmp_path), "the staged file stays behind"
    assert fsutil.check_manifest(tmp_path, MANIFEST) == []  # nothing was renamed: still version 1
    fsutil.recover(tmp_path)
    assert _litter(tmp_path) == []
    assert all(b" v1 " in p.read_bytes() for p in _version(tmp_path, 1))


def test_manifest_names_the_files_of_another_compile(tmp_path):
    fsutil.commit_files(_version(tmp_path, 1), manifest=MANIFEST)
    assert fsutil.check_manifest(tmp_path, MANIFEST) == []
    (tmp_path / "m.npz").write_bytes(b"weights of another build")
    assert fsutil.check_manifest(tmp_path, MANIFEST) == ["m.npz"]
    assert fsutil.check_manifest(tmp_path, "missing.json") == ["missing.json"]


def test_random_sigkills_never_leave_a_mix_after_recovery(tmp_path):
    """SIGKILL a child committing 3 files of 2 MB at random moments; after recovery the folder always holds one
    whole version (the manifest matches) and no litter."""
    rng = random.Random(0)
    fsutil.commit_files(_version(tmp_path, 0, 1 << 16), manifest=MANIFEST)
    for v in range(1, 9):
        p = subprocess.Popen([sys.executable, "-c", f"""
from pathlib import Path
from specc import fsutil
folder = Path({str(tmp_path)!r})
while True:
    files = {{folder / n: (f"{{fsutil.MARKER}} v{v} {{n}}\\n".encode() * (1 << 16)) for n in ("m.so", "m.npz", "m_tvm.py")}}
    fsutil.commit_files(files, manifest={MANIFEST!r})
"""], env={**os.environ, "PYTHONPATH": os.getcwd()})
        time.sleep(0.5 + rng.random() * 1.0)
        p.send_signal(signal.SIGKILL)
        p.wait()
        fsutil.recover(tmp_path)
        assert fsutil.check_manifest(tmp_path, MANIFEST) == [], f"kill {v}: a mix of compiles"
        assert _litter(tmp_path) == []
