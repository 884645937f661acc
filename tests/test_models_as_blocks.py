"""Models as blocks: a zoo model imported into another spec and called like a block (its inputs become tensor
arguments, its outputs results); the composite checks, builds, and computes exactly the imported model followed by
the new head."""
from __future__ import annotations

import shutil

import pytest
from torch_util import SPECS

import specc
from specc.api import CheckError

torch = pytest.importorskip("torch")

TINY_BERT = "vocab=100, max_pos=16, layers=2, heads=4, d=32, d_ff=64"
CLASSIFIER = f"""import "bert_base.nn"

model BertClassifier(classes: int = 3) {{
  input ids: i64[B, T]
  input types: i64[B, T]
  input mask: bool[B, T]
  seq, pooled = (ids, types, mask) -> BertBase({TINY_BERT}) as bert
  output logits = pooled -> linear(classes) as classifier
}}
"""


@pytest.fixture
def folder(tmp_path):
    shutil.copy(SPECS / "bert_base.nn", tmp_path / "bert_base.nn")
    return tmp_path


def write(folder, text: str):
    path = folder / "cls.nn"
    path.write_text(text)
    return path


def test_a_classifier_on_the_zoo_bert_matches_bert_then_the_head(folder):
    spec = specc.load(write(folder, CLASSIFIER))
    bert = specc.load(SPECS / "bert_base.nn", overrides=dict(vocab=100, max_pos=16, layers=2, heads=4, d=32, d_ff=64))
    assert spec.params == bert.params + 32 * 3 + 3
    # the imported model's `where T <= max_pos` bounds the caller's T
    assert spec.module.constraints["T"][0] == 16
    torch.manual_seed(0)
    model = spec.to_torch().eval()
    ref = bert.to_torch().eval()
    ref.load_state_dict({k.removeprefix("bert."): v for k, v in model.state_dict().items() if k.startswith("bert.")})
    ids, types = torch.randint(0, 100, (2, 7)), torch.randint(0, 2, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 5:] = False
    with torch.no_grad():
        _, pooled = ref(ids, types, mask)
        torch.testing.assert_close(model(ids, types, mask), model.classifier(pooled))


def test_a_model_input_of_the_wrong_dtype_is_a_located_error(folder):
    text = CLASSIFIER.replace("input types: i64[B, T]", "input types: f32[B, T]")
    with pytest.raises(CheckError) as err:
        specc.load(write(folder, text))
    msg = err.value.render()
    assert "model input 'token_types' is declared i64[B, T], got f32[B, T]" in msg
    assert "bert_base.nn:8:" in msg and "cls.nn:5:" in msg  # the declaration, and where the tensor came from


def test_a_length_over_the_imported_bound_is_reported(folder):
    text = CLASSIFIER.replace("input ids: i64[B, T]", "input ids: i64[B, 32]").replace(
        "input types: i64[B, T]", "input types: i64[B, 32]").replace("input mask: bool[B, T]", "input mask: bool[B, 32]")
    with pytest.raises(CheckError) as err:
        specc.load(write(folder, text))
    assert "T = 32 exceeds its bound 16" in err.value.render()


@pytest.mark.tvm
def test_model_as_block_lowers_to_tvm(folder):
    pytest.importorskip("tvm")
    import numpy as np

    spec = specc.load(write(folder, CLASSIFIER))
    torch.manual_seed(0)
    model = spec.to_torch().eval()
    ids, types = torch.randint(0, 100, (2, 5)), torch.randint(0, 2, (2, 5))
    mask = torch.ones(2, 5, dtype=torch.bool)
    with torch.no_grad():
        want = model(ids, types, mask)
    got = spec.to_tvm(weights=model)(ids.numpy(), types.numpy(), mask.numpy())
    np.testing.assert_allclose(np.asarray(got), want.numpy(), rtol=1e-4, atol=1e-5)
