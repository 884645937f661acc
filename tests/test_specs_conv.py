"""The convolutional-era zoo: exact parameter and multiply-accumulate counts (the published torchvision figures)."""
from __future__ import annotations

from pathlib import Path

import pytest

import specc
import specc.api
from specc.cli import main
from specc.summary import default_env

SPECS = Path(__file__).resolve().parent.parent / "specs"

# spec -> (params, MACs at the spec's input size with B=1, output type)
ZOO = {
    "lenet5": (61_706, 416_520, "f32[B, 10]"),
    "cifar_cnn": (4_275_594, 24_843_264, "f32[B, 10]"),
    "alexnet": (61_100_840, 714_188_480, "f32[B, 1000]"),
    "vgg16": (138_357_544, 15_470_264_320, "f32[B, 1000]"),
    "resnet18": (11_689_512, 1_814_073_344, "f32[B, 1000]"),
    "resnet50": (25_557_032, 4_089_184_256, "f32[B, 1000]"),
}


@pytest.fixture(scope="module", params=sorted(ZOO))
def zoo(request):
    return request.param, specc.load(SPECS / f"{request.param}.nn")


def test_params_and_macs(zoo):
    name, spec = zoo
    params, macs, out = ZOO[name]
    s = spec.summary()
    assert s.params == params
    assert s.eval_macs({"B": 1}) == macs
    assert s.eval_macs({"B": 8}) == 8 * macs
    assert list(s.outputs.values()) == [out]


def test_table_rows_add_up_to_the_totals(zoo):
    name, spec = zoo
    s = spec.summary()
    top = [r for r in s.rows if r.depth == 0]
    assert sum(r.params for r in top) == s.params
    assert sum(r.macs.subs({"B": 1}) if not isinstance(r.macs, int) else r.macs for r in top) == ZOO[name][1]


def test_flat_table_lists_every_repeat_iteration():
    spec = specc.load(SPECS / "resnet50.nn")
    folded, flat = spec.summary(), spec.summary(flat=True)
    assert folded.params == flat.params
    assert len(flat.rows) > len(folded.rows)
    assert sum(r.params for r in flat.rows if r.op == "conv2d") == \
        sum(r.params * _times(r, folded) for r in folded.rows if r.op == "conv2d")


def _times(row, summary) -> int:
    """How often a row of the folded table runs: the product of the counts of the repeats around it."""
    k = 1
    for r in summary.rows:
        if r.count > 1 and row.name.startswith(r.name + "."):
            k *= r.count
    return k


@pytest.mark.parametrize("name", sorted(ZOO))
def test_inspect_prints_the_exact_counts(name, capsys):
    params, macs, _ = ZOO[name]
    assert main(["inspect", str(SPECS / f"{name}.nn")]) == 0
    text = capsys.readouterr().out
    assert f"total params: {params:,}\n" in text
    assert f"MACs: {macs:,} (" in text


def test_resnet_headline_figures(capsys):
    main(["inspect", str(SPECS / "resnet18.nn")])
    assert "MACs: 1,814,073,344 (1.814 G)" in capsys.readouterr().out
    main(["inspect", str(SPECS / "resnet50.nn")])
    assert "MACs: 4,089,184,256 (4.089 G)" in capsys.readouterr().out


def test_repeats_stay_folded():
    """ResNet-50's 16 bottlenecks are 4 first-of-stage blocks plus 4 repeats, not 16 copies."""
    m = specc.load(SPECS / "resnet50.nn").module
    reps = [n for n in m.graph.nodes() if n.kind == "repeat"]
    assert [r.attrs.count for r in reps] == [2, 3, 5, 2]
    assert sorted({g.block for g in m.graphs.values()}) == ["Bottleneck", "ResNet50", "ResNet50_layer"]


def test_resnet18_reuses_block_specialisations():
    m = specc.load(SPECS / "resnet18.nn").module
    calls = [n for n in m.graph.nodes() if n.kind == "call"]
    assert len(calls) == 8
    assert len({c.target for c in calls}) == 7  # the two 64-wide stride-1 blocks share one graph


def test_named_layers_read_like_torchvision():
    spec = specc.load(SPECS / "resnet18.nn")
    names = {r.name for r in spec.summary().rows}
    assert {"conv1", "bn1", "fc", "layer1.0.conv1", "layer2.0.down_conv"} <= names
    alex = {r.name for r in specc.load(SPECS / "alexnet.nn").summary().rows}
    assert {"conv1", "conv5", "fc1", "fc3"} <= alex


@pytest.mark.parametrize("name, overrides, params", [
    ("resnet50", {"classes": 10}, 25_557_032 - 1000 * 2049 + 10 * 2049),
    ("resnet18", {"classes": 10}, 11_689_512 - 1000 * 513 + 10 * 513),
    ("vgg16", {"classes": 10}, 138_357_544 - 1000 * 4097 + 10 * 4097),
    ("cifar_cnn", {"hidden": 128}, 1792 + 73856 + 8192 * 128 + 128 + 128 * 10 + 10),
])
def test_overrides_shrink_models(name, overrides, params):
    assert specc.load(SPECS / f"{name}.nn", **overrides).params == params


def test_resnet50_depths_override():
    spec = specc.load(SPECS / "resnet50.nn", depths=[1, 1, 1, 1])
    assert not [n for n in spec.graph.nodes() if n.kind == "repeat" and n.attrs.count > 0]
    assert spec.params < 25_557_032


def test_every_input_dim_but_the_batch_is_static():
    for name in ZOO:
        m = specc.load(SPECS / f"{name}.nn").module
        assert default_env(m) == {"B": 1}


def test_std_conv_blocks():
    spec = specc.api.loads("""
        import "std/conv.nn"
        model MobileNetStem() {
          input image: f32[B, 32, 112, 112]
          output y = image -> DepthwiseSeparable(64) -> DepthwiseSeparable(128, stride=2)
        }""")
    # depthwise 3x3 + BN, pointwise 1x1 + BN, twice: (288 + 64 + 2048 + 128) + (576 + 128 + 8192 + 256)
    assert spec.params == 11_680
    assert str(spec.graph["y"].type) == "f32[B, 128, 56, 56]"
    convs = [n for _, n, _, _ in spec.module.walk() if n.target == "conv2d"]
    assert [(c.attrs.groups, c.attrs.padding) for c in convs] == [(32, 1), (1, 0), (64, 1), (1, 0)]
