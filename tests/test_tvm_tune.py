"""`specc tune`: MetaSchedule candidates per kernel, timed against specc's schedule; cached kernels (TVMScript) are
picked up by later static-shape builds and compute the same outputs."""
from __future__ import annotations

import pytest
from torch_util import REPO

import specc

pytestmark = [pytest.mark.tvm, pytest.mark.slow]
tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")
pytest.importorskip("psutil")  # MetaSchedule needs it

from specc.backends.tvm import tune, tuned  # noqa: E402
from specc.backends.tvm.codegen import tvm_target  # noqa: E402
from specc.targets import load_target  # noqa: E402


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
