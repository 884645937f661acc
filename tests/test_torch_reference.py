"""Emitted PyTorch vs the hand-written references in tests/references/conv.py.

For each convolutional spec, an explicit name map takes the emitted module's state_dict keys to the reference's
(torchvision layout). Then: the mapped key sets are equal, the state_dict loads into the reference with
strict=True (and the reference's loads back into the emitted module), parameter counts are identical, and eval-mode
outputs agree within 1e-5. For ResNet-18 and LeNet-5 a train-mode forward/backward also gives the same gradients.
"""
from __future__ import annotations

import pytest
from torch_util import REPO, SPECS, n_params

torch = pytest.importorskip("torch")

import specc  # noqa: E402
from tests.references import conv  # noqa: E402

TOL = 1e-5


def _resnet_map(stages: list[list[str]]) -> dict[str, str]:
    """emitted block prefix -> torchvision `layerS.I.`, written out stage by stage below."""
    return {f"{emitted}.": f"layer{s}.{i}." for s, blocks in enumerate(stages, 1) for i, emitted in enumerate(blocks)}


# emitted prefix -> reference prefix; every key must match exactly one entry (longest prefix wins)
NAME_MAPS: dict[str, dict[str, str]] = {
    "lenet5": {"c1.": "conv1.", "c3.": "conv2.", "f5.": "fc1.", "f6.": "fc2.", "f7.": "fc3."},
    "cifar_cnn": {"stage1.conv.": "conv1.", "stage2.conv.": "conv2.", "fc1.": "fc1.", "fc2.": "fc2."},
    "alexnet": {
        "conv1.": "features.0.", "conv2.": "features.3.", "conv3.": "features.6.", "conv4.": "features.8.",
        "conv5.": "features.10.", "fc1.": "classifier.1.", "fc2.": "classifier.4.", "fc3.": "classifier.6.",
    },
    "vgg16": {  # `repeat convs as layers`: one ModuleList per stage
        "vgg_stage.layers.0.conv.": "features.0.", "vgg_stage.layers.1.conv.": "features.2.",
        "vgg_stage_1.layers.0.conv.": "features.5.", "vgg_stage_1.layers.1.conv.": "features.7.",
        "vgg_stage_2.layers.0.conv.": "features.10.", "vgg_stage_2.layers.1.conv.": "features.12.",
        "vgg_stage_2.layers.2.conv.": "features.14.",
        "vgg_stage_3.layers.0.conv.": "features.17.", "vgg_stage_3.layers.1.conv.": "features.19.",
        "vgg_stage_3.layers.2.conv.": "features.21.",
        "vgg_stage_4.layers.0.conv.": "features.24.", "vgg_stage_4.layers.1.conv.": "features.26.",
        "vgg_stage_4.layers.2.conv.": "features.28.",
        "fc1.": "classifier.0.", "fc2.": "classifier.3.", "fc3.": "classifier.6.",
    },
    # the specs name their stages `for ... as layer`: torchvision's own names (only `downsample` differs, INNER)
    "resnet18": {
        "conv1.": "conv1.", "bn1.": "bn1.", "fc.": "fc.",
        **_resnet_map([["layer1.0", "layer1.1"], ["layer2.0", "layer2.1"], ["layer3.0", "layer3.1"],
                       ["layer4.0", "layer4.1"]]),
    },
    "resnet50": {
        "conv1.": "conv1.", "bn1.": "bn1.", "fc.": "fc.",
        **_resnet_map([[f"layer{s}.{i}" for i in range(n)] for s, n in ((1, 3), (2, 4), (3, 6), (4, 3))]),
    },
}
# inside a residual block: the spec's projection shortcut is torchvision's `downsample` Sequential
INNER = {"down_conv.": "downsample.0.", "down_bn.": "downsample.1."}

REFERENCES = {
    "lenet5": (conv.LeNet5, (2, 1, 32, 32), {}),
    "cifar_cnn": (conv.CifarCNN, (2, 3, 32, 32), {}),
    "alexnet": (conv.AlexNet, (1, 3, 224, 224), {"classes": 10}),
    "vgg16": (conv.VGG16, (1, 3, 224, 224), {"classes": 10}),
    "resnet18": (conv.ResNet18, (2, 3, 224, 224), {"classes": 10}),
    "resnet50": (conv.ResNet50, (1, 3, 224, 224), {"classes": 10}),
}


def translate(key: str, table: dict[str, str]) -> str:
    hits = [p for p in table if key.startswith(p)]
    assert hits, f"no name-map entry for {key}"
    prefix = max(hits, key=len)
    rest = key[len(prefix):]
    for a, b in INNER.items():
        if rest.startswith(a):
            rest = b + rest[len(a):]
    return table[prefix] + rest


def build_pair(stem: str, opt_level: int = 0, seed: int = 0):
    """(emitted, reference, key map): the emitted model randomly initialised (batch-norm statistics included),
    the reference holding the same tensors loaded through the name map with strict=True."""
    ref_cls, _, overrides = REFERENCES[stem]
    spec = specc.load(SPECS / f"{stem}.nn", **overrides)
    torch.manual_seed(seed)
    emitted = spec.to_torch(opt_level=opt_level)
    with torch.no_grad():
        for mod in emitted.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):  # non-trivial statistics and affine terms
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.5, 0.5)
    names = {k: translate(k, NAME_MAPS[stem]) for k in emitted.state_dict()}
    assert len(set(names.values())) == len(names), "name map is not one-to-one"
    with torch.device("meta"):
        reference = ref_cls(num_classes=overrides.get("classes", 10))
    assert set(names.values()) == set(reference.state_dict()), "mapped keys differ from the reference's"
    reference.load_state_dict({names[k]: v.clone() for k, v in emitted.state_dict().items()}, strict=True,
                              assign=True)
    return spec, emitted, reference, names


@pytest.mark.parametrize("opt_level", [0, 1, 2], ids=["O0", "O1", "O2"])  # -O1 is what `specc compile` writes
@pytest.mark.parametrize("stem", list(REFERENCES))
def test_emitted_matches_reference(stem, opt_level):
    spec, emitted, reference, names = build_pair(stem, opt_level)
    assert n_params(emitted) == n_params(reference) == spec.summary().params
    # the reverse direction loads too (strict): the map covers the reference completely
    back = {v: k for k, v in names.items()}
    emitted.load_state_dict({back[k]: v for k, v in reference.state_dict().items()}, strict=True)
    x = torch.randn(REFERENCES[stem][1], generator=torch.Generator().manual_seed(1))
    emitted.eval()
    reference.eval()
    with torch.no_grad():
        a, b = emitted(x), reference(x)
    assert a.shape == b.shape
    diff = (a - b).abs().max().item()
    print(f"{stem} -O{opt_level}: max abs diff {diff:.3g} over {tuple(a.shape)}, |out| max {a.abs().max().item():.3g}")
    # float32 rounding grows with the activations: torchvision's initialisation (declared in the ResNet specs) gives
    # outputs in the thousands, so the bound is relative to the output's size (1e-5 absolute below 1)
    assert diff <= TOL * max(1.0, b.abs().max().item())
    assert a.abs().max() > 1e-3, "outputs too close to 0 for the comparison to mean much"


@pytest.mark.parametrize("opt_level", [0, 1, 2], ids=["O0", "O1", "O2"])
@pytest.mark.parametrize("stem", ["lenet5", "resnet18"])
def test_training_step_matches_reference(stem, opt_level):
    """Train mode (batch-norm batch statistics), backward: same loss, same gradients under the name map."""
    _, emitted, reference, names = build_pair(stem, opt_level)
    emitted.train()
    reference.train()
    x = torch.randn(REFERENCES[stem][1], generator=torch.Generator().manual_seed(2))
    target = torch.tensor([1, 3])
    losses = []
    for model in (emitted, reference):
        loss = torch.nn.functional.cross_entropy(model(x), target)
        loss.backward()
        losses.append(loss.item())
    assert abs(losses[0] - losses[1]) <= TOL
    ref_params = dict(reference.named_parameters())
    for k, p in emitted.named_parameters():
        torch.testing.assert_close(p.grad, ref_params[names[k]].grad, rtol=1e-4, atol=TOL, msg=k)
    # running statistics moved the same way
    ref_state = reference.state_dict()
    for k, v in emitted.state_dict().items():
        if "running" in k:
            torch.testing.assert_close(v, ref_state[names[k]], rtol=1e-5, atol=TOL, msg=k)


def test_name_maps_cover_every_conv_spec():
    convs = {p.stem for p in SPECS.glob("*.nn")} & set(REFERENCES)
    assert convs == set(NAME_MAPS) == set(REFERENCES)
    assert (REPO / "tests" / "references" / "conv.py").is_file()
