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
