"""Winograd F(2x2, 3x3) for 3x3 stride-1 NCHWc convs (specc/backends/tvm/schedules/winograd.py): the transforms'
algebra, the weight packing, when the rule takes a conv, and the three kernels' numerics against TVM's reference
lowering and against the direct kernel, with the conv's epilogue fused, on even and odd planes, at batch 1 and 2."""
from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from tvm import relax, tirx  # noqa: E402

from specc.backends.tvm.schedules import TIR_PIPELINE, last_stats, optimize_for_cpu, winograd  # noqa: E402
from specc.backends.tvm.schedules._target import cpu_info  # noqa: E402

pytestmark = pytest.mark.tvm

HOST = tvm.target.Target.from_device(tvm.cpu())
AVX2 = tvm.target.Target({"kind": "llvm", "mcpu": "znver3"})
AVX512 = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512"})


def _correlate3x3(d: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The 2x2 'valid' cross-correlation of a 4x4 tile with a 3x3 filter, as a conv layer computes it."""
    return np.array([[np.sum(d[i:i + 3, j:j + 3] * g) for j in range(2)] for i in range(2)])


@pytest.mark.parametrize("m", [2, 4])
def test_transforms_compute_the_3x3_correlation(m):
    """A^T [(G g G^T) * (B^T d B)] A equals the direct 3x3 correlation of an (m + 2)^2 tile (float64, random
    tiles), for F(2x2, 3x3) and F(4x4, 3x3)."""
    rng = np.random.default_rng(m)
    bt, g_m, at = (np.asarray(mat, np.float64) for mat in winograd.MATRICES[m])
    for _ in range(20):
        d, g = rng.standard_normal((m + 2, m + 2)), rng.standard_normal((3, 3))
        y = at @ ((g_m @ g @ g_m.T) * (bt @ d @ bt.T)) @ at.T
        want = np.array([[np.sum(d[i:i + 3, j:j + 3] * g) for j in range(m)] for i in range(m)])
        np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("m", [2, 4])
def test_weight_transform_packing(m):
    """transform_weight_np puts U[e] = (G g G^T)[e] of filter (o, i) at [e, o // nr, i, o % nr]."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((64, 48, 3, 3)).astype("float32")
    up = winograd.transform_weight_np(w, 32, m)
    assert up.shape == ((m + 2) ** 2, 2, 48, 32) and up.dtype == np.float32
    g_m = np.asarray(winograd.MATRICES[m][1])
    for o, i in ((0, 0), (63, 47), (33, 17), (5, 40)):
        u = (g_m @ w[o, i].astype(np.float64) @ g_m.T).reshape(-1)
        np.testing.assert_allclose(up[:, o // 32, i, o % 32], u, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("target", [HOST, AVX2, AVX512], ids=["host", "avx2", "avx512"])
def test_which_convs_take_winograd(target, monkeypatch):
    """3x3, stride 1, dilation 1, padding 1, channels in whole NCHWc blocks, a static plane: F(4x4) with at least
    4 MR 4x4 tiles, else F(2x2) with at least 2 MR 2x2 tiles; anything else, and SPECC_CONV_WINOGRAD=0, stays
    direct; SPECC_CONV_WINOGRAD=2 never takes F(4x4)."""
    info = cpu_info(target)
    c, mr = info.nr, info.default_mr
    ok = dict(kh=3, kw=3, strides=(1, 1), pad=(1, 1, 1, 1), dil=(1, 1), ic=c, oc=2 * c, hw=(56, 56), info=info)
    assert winograd.tile_size(**ok) == 4
    assert winograd.tile_size(**{**ok, "hw": (28, 28)}) == 4
    assert winograd.tile_size(**{**ok, "hw": (14, 14)}) == 2   # 16 4x4 tiles, 49 2x2
    assert winograd.tile_size(**{**ok, "hw": (7, 7)}) == 2     # 16 2x2 tiles
    for change in ({"strides": (2, 2)}, {"dil": (2, 2)}, {"pad": (0, 0, 0, 0)}, {"pad": (1, 1, 2, 2)},
                   {"kh": 5, "kw": 5}, {"kh": 1, "kw": 1}, {"ic": c + 8}, {"oc": c // 2}, {"hw": (4, 4)},
                   {"hw": (tirx.Var("h", "int64"), 7)}):
        assert winograd.tile_size(**{**ok, **change}) == 0, change
    # the thresholds: 2 MR 2x2 tiles, 4 MR 4x4 tiles
    assert winograd.tile_size(**{**ok, "hw": (2, 4 * mr)}) == 2
    assert winograd.tile_size(**{**ok, "hw": (2, 4 * mr - 2)}) == 0
    assert winograd.tile_size(**{**ok, "hw": (4, 16 * mr)}) == 4
    assert winograd.tile_size(**{**ok, "hw": (4, 16 * mr - 4)}) == 2
    monkeypatch.setenv("SPECC_CONV_WINOGRAD", "2")
    assert winograd.tile_size(**ok) == 2
    monkeypatch.setenv("SPECC_CONV_WINOGRAD", "0")
    assert winograd.tile_size(**ok) == 0


def _const(rng, shape, scale=0.2):
    return relax.const((rng.standard_normal(shape) * scale).astype("float32"))


def _module(rng, c: int, size: int):
    """x [n, c, size, size] -> relu(bn(conv3x3(x)) + x) -> conv3x3 -> relu: two 3x3 convs, the first with a folded
    batch norm and a residual add in its epilogue, the second with 2c output channels."""
    n = tirx.Var("n", "int64")
    x = relax.Var("x", relax.TensorType((n, c, size, size), "float32"))
    op = relax.op
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(op.nn.conv2d(x, _const(rng, (c, c, 3, 3)), padding=1))
            y = bb.emit(op.add(op.multiply(y, _const(rng, (1, c, 1, 1), 1.0)), _const(rng, (1, c, 1, 1))))
            y = bb.emit(op.nn.relu(op.add(y, x)))
            z = bb.emit(op.nn.relu(op.nn.conv2d(y, _const(rng, (2 * c, c, 3, 3)), padding=1)))
            out = bb.emit_output(z)
        bb.emit_func_output(out)
    return bb.get()


def _vm(mod, target, optimized=True):
    if optimized:
        ex = tvm.compile(optimize_for_cpu(mod, target), target, tir_pipeline=TIR_PIPELINE)
    else:
        with target:
            ex = tvm.compile(relax.get_pipeline("zero")(mod), target)
    return relax.VirtualMachine(ex, tvm.cpu())


def _tiles_used(mod, target) -> list[int]:
    """The output tile m of each Winograd input transform in optimize_for_cpu(mod, target)."""
    import re

    return sorted(int(t) for f in optimize_for_cpu(mod, target).functions.values() if isinstance(f, tirx.PrimFunc)
                  for t in re.findall(r'"specc.kernel": "winograd_in", "specc.tile": (\d)', f.script()))


@pytest.mark.parametrize("target", [HOST, AVX2], ids=["host", "avx2"])
@pytest.mark.parametrize("size", [14, 9, 22])
def test_winograd_convs_agree_with_the_reference_and_the_direct_kernel(target, size, monkeypatch):
    """Both convs of _module run as Winograd (input transform, tiled GEMM, output transform with the epilogue fused):
    F(2x2) on 14x14 and 9x9 planes (the last tile row and column half outside), F(4x4) on 22x22 (36 tiles, the last
    row and column half outside); the outputs agree with TVM's reference lowering and with the direct kernels'
    build at batch 1 and 2."""
    rng = np.random.default_rng(size)
    c = cpu_info(target).nr
    mod = _module(rng, c, size)
    assert _tiles_used(mod, target) == ([4] if size == 22 else [2])  # one function: both convs' inputs alike
    fast = _vm(mod, target)
    stats = last_stats()
    schedules = list(stats["schedules"].values())
    assert stats["replaced"]["winograd"] == 2 and "winograd-input" in schedules, stats
    assert schedules.count("winograd-output") == 2, stats
    gemms = [k for k, v in stats["schedules"].items() if "winograd_gemm" in k]
    assert len(gemms) == 2 and all(stats["schedules"][k].startswith("tiled-gemm") for k in gemms), stats
    monkeypatch.setenv("SPECC_CONV_WINOGRAD", "0")
    direct = _vm(mod, target)
    assert "winograd-input" not in last_stats()["schedules"].values()
    ref = _vm(mod, target, optimized=False)
    for batch in (1, 2):
        xi = rng.standard_normal((batch, c, size, size)).astype("float32")
        inp = tvm.runtime.tensor(xi)
        want = ref["main"](inp).numpy()
        got = fast["main"](inp).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(got, direct["main"](inp).numpy(), rtol=1e-4, atol=1e-4)
        assert float(np.abs(got - want).max() / np.abs(want).max()) < 2e-5


def test_gemm_tile_divides_the_output_channels():
    """The 16 GEMMs take CPUInfo.gemm_tile's panel width when it divides the output channels, else the
    convolutions' two vectors (the transformed weight is packed by that width and never padded)."""
    info = cpu_info(AVX512)
    assert info.gemm_tile(128)[1] == 4 and winograd.gemm_tile(128, 49, info)[1] == 64
    # 544 = 17 x 32: gemm_tile pads it to 576 (a 4-vector panel), which does not divide it
    assert info.gemm_tile(544)[1] == 4
    assert winograd.gemm_tile(544, 49, info)[1] == 32
    avx2 = cpu_info(AVX2)
    assert winograd.gemm_tile(64, 49, avx2)[1] == 16
    # the tile height: pick_mr's for the tile count (49 = 10 x 5 - 1 with 5-row tiles; 4 tiles: one 4-row tile)
    assert winograd.gemm_tile(64, 49, info)[0] == 5 and winograd.gemm_tile(64, 4, info)[0] == 4
