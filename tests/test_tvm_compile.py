"""`specc compile --target tvm-cpu -o out/`: a native library, its weights and a runner, written all or nothing."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from torch_util import REPO
from tvm_util import runner_model

from specc.cli import main

pytestmark = pytest.mark.tvm
tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

LENET = str(REPO / "specs" / "lenet5.nn")


def _run_runner(out, runtime_only: bool = False) -> subprocess.CompletedProcess:
    """lenet5_tvm.py on random inputs at B=2, in its own process; `runtime_only`: with TVM's runtime library alone."""
    import os

    env = {**os.environ, "TVM_USE_RUNTIME_LIB": "1"} if runtime_only else None
    return subprocess.run([sys.executable, str(out / "lenet5_tvm.py"), "--dim", "B=2"], capture_output=True, text=True,
                          timeout=120, env=env)


def test_compile_writes_library_weights_and_runner(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compile", LENET, "--target", "tvm-cpu", "-o", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    # the manifest (written last) says which library, weights and runner belong together
    assert names == ["lenet5.manifest.json", "lenet5.npz", "lenet5.npz.specc", "lenet5.so", "lenet5.so.specc",
                     "lenet5_tvm.py"]
    assert "wrote" in capsys.readouterr().out

    # the runner script is clean Python and runs on its own (random inputs) ...
    from torch_util import ruff_check

    lint = ruff_check([out / "lenet5_tvm.py"])
    assert lint is None or lint.returncode == 0, lint.stdout
    res = _run_runner(out)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "logits: float32[2, 10]" in res.stdout
    # ... with TVM's runtime alone too (no compiler library: what a deployment machine may have)
    res = _run_runner(out, runtime_only=True)
    assert res.returncode == 0 and "logits: float32[2, 10]" in res.stdout, res.stderr[-2000:]

    # ... and the library computes what the emitted PyTorch module computes with the saved weights
    sys.path.insert(0, str(out))
    try:
        import lenet5_tvm
    finally:
        sys.path.remove(str(out))
    import specc

    model = specc.load(LENET).to_torch(opt_level=1).eval()
    with np.load(out / "lenet5.npz") as w:
        model.load_state_dict({k: torch.from_numpy(w[k]) for k in w.files}, strict=False)
    x = np.random.default_rng(0).standard_normal((3, 1, 32, 32)).astype("float32")
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(lenet5_tvm.load()(x), want, rtol=1e-4, atol=1e-5)

    # compiling again replaces specc's own files
    assert main(["compile", LENET, "--target", "tvm-cpu", "-o", str(out)]) == 0

    # a library from another compile (here: one byte changed) is refused by the runner, not run on the wrong data
    from specc.fsutil import check_manifest

    assert check_manifest(out, "lenet5.manifest.json") == []
    lib = out / "lenet5.so"
    lib.write_bytes(lib.read_bytes() + b"\0")
    assert check_manifest(out, "lenet5.manifest.json") == ["lenet5.so"]
    res = _run_runner(out)
    assert res.returncode != 0 and "is not the library this runner was compiled with" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_compile_refuses_foreign_files_before_building(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "lenet5.so").write_bytes(b"not ours")
    assert main(["compile", LENET, "--target", "tvm-cpu", "-o", str(out)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["lenet5.so"]
    assert (out / "lenet5.so").read_bytes() == b"not ours"


def test_compile_dim_fixes_a_symbolic_dim(tmp_path):
    """--dim B=1 builds a static-shape library (the kind tuned kernels apply to); other batch sizes are refused."""
    out = tmp_path / "static"
    assert main(["compile", LENET, "--target", "tvm-cpu", "--dim", "B=1", "-o", str(out)]) == 0
    ex = tvm.runtime.load_module(str(out / "lenet5.so"))
    vm = tvm.relax.VirtualMachine(ex, tvm.cpu())
    x = np.random.default_rng(0).standard_normal((1, 1, 32, 32)).astype("float32")
    assert vm["main"](tvm.runtime.tensor(x, tvm.cpu())).numpy().shape == (1, 10)
    with pytest.raises(Exception):  # noqa: B017 - TVM reports a shape mismatch with its own error types
        vm["main"](tvm.runtime.tensor(np.concatenate([x, x]), tvm.cpu()))


def test_compile_dim_is_refused_for_pytorch(tmp_path):
    assert main(["compile", LENET, "--dim", "B=1", "-o", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_library_without_weights_runner_uploads_them(tmp_path, monkeypatch):
    """A CUDA compile leaves the weights out of the library (the runner uploads the .npz once, through
    main_transform_params); checked end to end on the CPU by compiling tvm-cpu that way."""
    from specc.backends.tvm import artifacts

    monkeypatch.setattr(artifacts, "WEIGHTS_IN_LIBRARY", ())
    out = tmp_path / "out"
    assert main(["compile", LENET, "--target", "tvm-cpu", "-o", str(out)]) == 0
    with np.load(out / "lenet5.npz") as w:
        names = list(w.files)
        state = {k: torch.from_numpy(w[k]) for k in names}
    assert runner_model((out / "lenet5_tvm.py").read_text())["params"] == names

    res = _run_runner(out, runtime_only=True)
    assert res.returncode == 0 and "logits: float32[2, 10]" in res.stdout, res.stderr[-2000:]

    import importlib.util

    import specc

    # a module name of its own: another test imports a lenet5_tvm from its own folder
    found = importlib.util.spec_from_file_location("lenet5_tvm_without_weights", out / "lenet5_tvm.py")
    runner = importlib.util.module_from_spec(found)
    found.loader.exec_module(runner)
    model = specc.load(LENET).to_torch(opt_level=1).eval()
    model.load_state_dict(state, strict=False)
    x = np.random.default_rng(1).standard_normal((2, 1, 32, 32)).astype("float32")
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(runner.load()(x), want, rtol=1e-4, atol=1e-5)

    weights = out / "lenet5.npz"  # weights from another compile are refused, not run
    weights.write_bytes(weights.read_bytes() + b"\0")
    res = _run_runner(out)
    assert res.returncode != 0 and "is not the weights this runner was compiled with" in res.stderr, res.stderr


def test_cuda_compile_keeps_weights_out_of_the_library(tmp_path):
    out = tmp_path / "out"
    assert main(["compile", LENET, "--target", "tvm-cuda", "-o", str(out)]) == 0
    model = runner_model((out / "lenet5_tvm.py").read_text())
    assert model["device"] == "cuda" and model["params"]
    with np.load(out / "lenet5.npz") as w:
        assert model["params"] == list(w.files)
    assert b"__global__" in (out / "lenet5.so").read_bytes()


def _runner_template():
    import importlib.util

    from specc.backends.tvm.artifacts import TEMPLATE

    found = importlib.util.spec_from_file_location("runner_template_under_test", TEMPLATE)
    module = importlib.util.module_from_spec(found)
    found.loader.exec_module(module)
    return module


@pytest.mark.skipif(tvm.cuda(0).exist, reason="this machine has a GPU: the model runs")
def test_cuda_runner_without_a_gpu_says_so(tmp_path):
    """The runner of a CUDA library, on a machine without a CUDA driver or device, under TVM's runtime alone: a
    one-line reason, not a traceback from a missing loader."""

    out = tmp_path / "out"
    assert main(["compile", LENET, "--target", "tvm-cuda", "-o", str(out)]) == 0
    res = _run_runner(out, runtime_only=True)
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "LeNet5 needs a CUDA GPU" in res.stderr or "no CUDA device: LeNet5" in res.stderr, res.stderr


def test_nvcc_fallback_compiles_a_kernel():
    """cuda_runtime's fallback when NVRTC is unusable (as on the H200 image bench/cuda.py ran on)."""
    import shutil

    if shutil.which("nvcc") is None:
        pytest.skip("no nvcc on PATH")
    cubin = _runner_template().nvcc_cubin('extern "C" __global__ void k(float* x) { x[threadIdx.x] *= 2.0f; }',
                                          "sm_80")
    assert cubin[:4] == b"\x7fELF"
