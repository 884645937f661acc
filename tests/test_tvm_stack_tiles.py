"""Register tiles on the stack (specc/backends/tvm/schedules/stack_tiles.py): a kernel's small `local` buffers are
allocas, not TVMBackendAllocWorkspace calls, so LLVM keeps a 1.5 KiB AVX-512 GEMM tile in registers across the
prefetching reduction; SPECC_STACK_TILES=0 keeps TVM's 1 KiB rule. Both builds agree with numpy."""
from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from tvm import relax  # noqa: E402

from specc.backends.tvm.codegen import device_modules  # noqa: E402
from specc.backends.tvm.schedules import TIR_PIPELINE, optimize_for_cpu  # noqa: E402

pytestmark = pytest.mark.tvm

HOST = tvm.target.Target.from_device(tvm.cpu())
AVX512 = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 1})


def _gemm(rows: int, k: int, n: int, rng):
    w = (rng.standard_normal((k, n)) * 0.1).astype("float32")
    x = relax.Var("x", relax.TensorType((rows, k), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(relax.op.matmul(x, relax.const(w))))
        bb.emit_func_output(out)
    return bb.get(), w


def _workspace_calls(ex) -> int:
    """Calls of TVMBackendAllocWorkspace in the LLVM IR (through its function pointer, as TVM's codegen emits it)."""
    return sum(m.inspect_source("ll").count("load ptr, ptr @__TVMBackendAllocWorkspace")
               for m in device_modules(ex, "llvm"))


def test_gemm_tile_is_an_alloca_and_the_builds_agree(monkeypatch):
    """The AVX-512 GEMM (6 x 64 tile, 1.5 KiB, next weight panel prefetched) allocates no workspace with the pass and
    does without it; on the host both builds compute x @ W."""
    rng = np.random.default_rng(0)
    mod, w = _gemm(128, 768, 3072, rng)
    ex = tvm.compile(optimize_for_cpu(mod, AVX512), AVX512, tir_pipeline=TIR_PIPELINE)
    assert _workspace_calls(ex) == 0
    monkeypatch.setenv("SPECC_STACK_TILES", "0")
    assert _workspace_calls(tvm.compile(optimize_for_cpu(mod, AVX512), AVX512, tir_pipeline=TIR_PIPELINE)) > 0
    xi = rng.standard_normal((128, 768)).astype("float32")
    want = xi @ w
    for flag in ("0", "1"):
        monkeypatch.setenv("SPECC_STACK_TILES", flag)
        ex = tvm.compile(optimize_for_cpu(mod, HOST), HOST, tir_pipeline=TIR_PIPELINE)
        got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(xi)).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_only_small_local_buffers_move_to_the_stack():
    """_small_local: local scope, constant shape, at most 4 KiB; a global buffer or a bigger one keeps the rule."""
    from tvm import tirx

    from specc.backends.tvm.schedules import stack_tiles

    def buf(shape, scope, dtype="float32"):
        return tirx.decl_buffer(shape, dtype, "b", scope=scope)

    assert stack_tiles._small_local(buf((6, 64), "local"))
    assert stack_tiles._small_local(buf((16, 64), "local"))          # 4 KiB
    assert not stack_tiles._small_local(buf((17, 64), "local"))
    assert not stack_tiles._small_local(buf((6, 64), "global"))
    assert not stack_tiles._small_local(buf((tirx.Var("n", "int64"), 64), "local"))
