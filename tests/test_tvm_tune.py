"""`specc tune`: MetaSchedule candidates per kernel, timed against specc's schedule; cached kernels (TVMScript) are
picked up by later static-shape builds and compute the same outputs."""
from __future__ import annotations

import pytest
from torch_util import REPO

import specc

pytestmark = [pytest.mark.tvm]
tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")
pytest.importorskip("psutil")  # MetaSchedule needs it

from specc.backends.tvm import tune, tuned  # noqa: E402
from specc.backends.tvm.codegen import tvm_target  # noqa: E402
from specc.targets import load_target  # noqa: E402


@pytest.mark.slow
def test_tune_caches_kernels_that_later_builds_use(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPECC_CACHE_DIR", str(tmp_path))
    spec = specc.load(REPO / "specs" / "lenet5.nn")
    # keep every kernel MetaSchedule found, faster or not, so the reuse below does not depend on timing luck
    monkeypatch.setattr(tune, "worth_caching", lambda specc_ms, tuned_ms: True)
    from specc.cli import main

    assert main(["tune", str(REPO / "specs" / "lenet5.nn"), "--trials", "4"]) == 0
    out = capsys.readouterr().out
    assert "tuned" in out and "kernel time" in out
    cached = tuned.cached_kernels(tvm_target(load_target("tvm-cpu")))
    assert cached and all(p.read_text().startswith("# specc tuned kernel:") for p in cached.values())

    torch.manual_seed(0)
    model = spec.to_torch().eval()
    built = spec.to_tvm("tvm-cpu", weights=model, dims={"B": 1})
    assert built.stats["tuned"], "the static build did not use the cached kernels"
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(built(x), model(x), rtol=1e-4, atol=1e-5)
    # a symbolic-batch build has different kernels: it schedules them itself
    assert not spec.to_tvm("tvm-cpu", weights=model).stats["tuned"]


def test_tune_needs_sizes_for_symbolic_dims(capsys):
    from specc.cli import main

    assert main(["tune", str(REPO / "specs" / "gpt2.nn"), "-D", "layers=1"]) == 2
    assert "--dim T=" in capsys.readouterr().err


def _cpu_target(mcpu: str):
    return load_target("tvm-cpu").model_copy(update={"mcpu": mcpu, "num_threads": 1})


def test_tuned_kernel_is_only_applied_to_the_target_it_was_tuned_for(tmp_path, monkeypatch):
    """A database entry carries the identity of the target it was tuned for (LLVM cpu, SIMD features, vector width,
    threads). Stored for an AVX2 target, it is used there; copied into the folder of an AVX-512 target (a shared or
    hand-copied database), it is refused, and that build schedules the kernel itself."""
    from specc.backends.tvm.schedules._target import cpu_info
    from specc.backends.tvm.schedules.schedule import schedule_primfunc

    monkeypatch.setenv("SPECC_CACHE_DIR", str(tmp_path))
    spec = specc.load(REPO / "specs" / "lenet5.nn")
    avx2, avx512 = _cpu_target("haswell"), _cpu_target("skylake-avx512")
    kernels, ttarget = tune.extract_kernels(spec, avx2, {"B": 1})
    name, func = max(kernels, key=lambda kv: len(kv[1].script()))  # the biggest kernel: a conv
    scheduled, _ = schedule_primfunc(func, ttarget, cpu_info(ttarget))  # stands in for a MetaSchedule result
    path = tuned.store_kernel(ttarget, tuned.kernel_key(func), scheduled, {"kernel": name})
    assert tuned.kernel_meta(path)["target"]["features"] == ["avx", "avx2", "fma", "sse4.2"]

    torch.manual_seed(0)
    model = spec.to_torch().eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        want = model(x)
    built = spec.to_tvm(avx2, weights=model, dims={"B": 1})
    assert built.stats["tuned"] and not built.stats["tuned_refused"]
    torch.testing.assert_close(built(x), want, rtol=1e-4, atol=1e-5)

    other = tvm_target(avx512)
    assert tuned.target_key(other) != tuned.target_key(ttarget)
    foreign = tmp_path / "tvm-tuned" / tuned.target_key(other) / path.name
    foreign.parent.mkdir(parents=True)
    foreign.write_text(path.read_text())
    with pytest.raises(ValueError, match="tuned for"):
        tuned.load_kernel(foreign, other)
    built = spec.to_tvm(avx512, weights=model, dims={"B": 1})
    assert not built.stats["tuned"] and built.stats["tuned_refused"] == [path.stem]
    torch.testing.assert_close(built(x), want, rtol=1e-4, atol=1e-5)

    # an entry without an identity (an older database) is refused too
    path.write_text(path.read_text().split("\n", 1)[1])
    assert not spec.to_tvm(avx2, weights=model, dims={"B": 1}).stats["tuned"]
