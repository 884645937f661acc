"""tvm-cuda on a machine without a GPU: the build still produces a library holding CUDA kernels (dlight gives every
kernel a GPU schedule; a pipeline without it would silently produce host code only). Running needs a GPU."""
from __future__ import annotations

import pytest
from torch_util import REPO, load_small

pytestmark = pytest.mark.tvm
tvm = pytest.importorskip("tvm")

from specc.backends.tvm.codegen import assert_has_cuda_kernels, device_modules  # noqa: E402


@pytest.mark.parametrize("name", ["lenet5", "gpt2", "mixtral_8x7b"])
def test_cuda_build_contains_cuda_kernels(name, tmp_path):
    spec = load_small(REPO / "specs" / f"{name}.nn")
    model = spec.to_tvm("tvm-cuda")
    cuda = device_modules(model.executable, "cuda")
    assert cuda, "no CUDA module in the executable"
    source = "".join(m.inspect_source() for m in cuda)
    assert assert_has_cuda_kernels(model.executable) == source.count("__global__") > 0
    assert "sm_80" in model.stats["target"]
    lib = model.export_library(tmp_path / f"{name}.so")
    assert b"__global__" in lib.read_bytes()  # the kernels travel inside the exported library


def test_host_only_code_is_caught():
    spec = load_small(REPO / "specs" / "lenet5.nn")
    cpu = spec.to_tvm("tvm-cpu")
    with pytest.raises(RuntimeError, match="no CUDA kernels"):
        assert_has_cuda_kernels(cpu.executable)


@pytest.mark.skipif(tvm.cuda(0).exist, reason="this machine has a GPU: the model runs")
def test_running_without_a_gpu_says_so():
    import numpy as np

    spec = load_small(REPO / "specs" / "lenet5.nn")
    model = spec.to_tvm("tvm-cuda")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        model(np.zeros((1, 1, 32, 32), "float32"))


@pytest.mark.skipif(not tvm.cuda(0).exist, reason="needs a CUDA GPU")
def test_cuda_matches_pytorch():
    torch = pytest.importorskip("torch")
    from tvm_util import max_rel_diff, reference_model

    spec = load_small(REPO / "specs" / "gpt2.nn")
    model = reference_model(spec)
    tokens = torch.randint(0, 100, (2, 7))
    with torch.no_grad():
        want = model(tokens)
    assert max_rel_diff(spec.to_tvm("tvm-cuda", weights=model)(tokens), want) <= 1e-4


def test_target_file_picks_the_gpu_architecture(tmp_path):
    toml = tmp_path / "h100.toml"
    toml.write_text('backend = "tvm"\ndevice = "cuda"\narch = "sm_90"\nschedules = "dlight"\n')
    spec = load_small(REPO / "specs" / "lenet5.nn")
    model = spec.to_tvm(str(toml))
    assert "sm_90" in model.stats["target"] and assert_has_cuda_kernels(model.executable) > 0


def test_unbound_weights_compute_the_same_function():
    """build(bind_weights=False): the weights are parameters, put through main_transform_params once (resnet18's
    folded batchnorm and NCHWc weight layouts included), and the model computes what the bound build computes."""
    import numpy as np

    spec = load_small(REPO / "specs" / "resnet18.nn")
    bound = spec.to_tvm("tvm-cpu", dims={"B": 1})
    free = spec.to_tvm("tvm-cpu", dims={"B": 1}, bind_weights=False)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype("float32")
    want, got = bound(x), free(x)
    assert float(np.abs(got - want).max() / np.abs(want).max()) <= 1e-5
    assert bound.params() == []
    # batchnorm folded into the convolutions once, in main_transform_params: fewer arguments than weights
    assert 0 < len(free.params()) < len(free.lowered.weights)



def test_unbound_cuda_library_leaves_the_weights_out(tmp_path):
    import math

    spec = load_small(REPO / "specs" / "gpt2.nn")
    free_model = spec.to_tvm("tvm-cuda", bind_weights=False)
    weight_bytes = sum(4 * math.prod(shape) for shape, _ in free_model.lowered.weights.values())
    bound = spec.to_tvm("tvm-cuda").export_library(tmp_path / "bound.so")
    free = free_model.export_library(tmp_path / "free.so")
    assert b"__global__" in free.read_bytes()
    assert bound.stat().st_size - free.stat().st_size >= 0.9 * weight_bytes


def test_bench_cuda_steps_run_apart_with_only_the_tvm_runtime(tmp_path):
    """bench/cuda.py's `build` (here) and `run` (on a GPU machine, which has TVM's runtime but not its compiler)
    checked on the CPU: lenet5 for tvm-cpu, the run step in a process with TVM_USE_RUNTIME_LIB=1."""
    import os
    import subprocess
    import sys

    bench = str(REPO / "bench" / "cuda.py")
    subprocess.run([sys.executable, bench, "build", str(tmp_path), "--models", "lenet5", "--target", "tvm-cpu"],
                   check=True, capture_output=True, text=True)
    env = {**os.environ, "TVM_USE_RUNTIME_LIB": "1"}
    done = subprocess.run([sys.executable, bench, "run", str(tmp_path), "--models", "lenet5", "--runs", "2"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "lenet5 {'B': 4}" in done.stdout and "(OK)" in done.stdout



def _cuda_source(model) -> str:
    return "".join(m.inspect_source() for m in device_modules(model.executable, "cuda"))


def _kernels(source: str) -> dict[str, str]:
    import re

    parts = re.split(r'(?=extern "C" __global__)', source)[1:]
    return {re.search(r"(\w+)\(", p.split(")", 1)[1]).group(1): p for p in parts}


def test_cuda_pipeline_is_tvms_with_specc_matmul_tiles(monkeypatch):
    """schedules/cuda.py: with dlight's own Matmul config it builds exactly the kernels TVM's default CUDA pipeline
    builds; with MATMUL (the default) its matmul and convolution kernels differ, the others do not."""
    from specc.backends.tvm import codegen
    from specc.backends.tvm.schedules.cuda import DLIGHT

    spec = load_small(REPO / "specs" / "lenet5.nn")
    ours = _cuda_source(spec.to_tvm("tvm-cuda"))
    monkeypatch.setenv("SPECC_CUDA_MATMUL", ",".join(map(str, DLIGHT)))
    as_dlight = _cuda_source(spec.to_tvm("tvm-cuda"))
    real_compile = tvm.compile
    monkeypatch.setattr(codegen.tvm, "compile", lambda mod, target, **kw: real_compile(mod, target))
    tvms = _cuda_source(spec.to_tvm("tvm-cuda"))
    assert as_dlight == tvms
    ours, tvms = _kernels(ours), _kernels(tvms)
    assert ours.keys() == tvms.keys()
    tiled = {k for k in ours if "matmul" in k or "conv2d" in k}
    assert tiled and all(ours[k] != tvms[k] for k in tiled)
    assert all(ours[k] == tvms[k] for k in ours.keys() - tiled)
