"""The seed documents' fine-tuning workflow, end to end as a user runs it (issue 13): a Hugging Face BERT checkpoint
-> `specc weights import --into bert` into the zoo's classifier on BERT -> `specc train-script` -> `python train.py
--init-from` with the spec's AdamW at 2e-5. The backbone starts exactly from the checkpoint, the new head is reported
as newly initialised, and accuracy rises on a learnable synthetic task. Model-side tensor names are never written
here: they come from the map and the import."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from torch_util import SPECS
from weights_util import transformers

import specc
from specc.weights import init_from, stored_overrides

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

REPO = Path(__file__).resolve().parent.parent
VOCAB, T = 61, 12


def specc_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(list(args), capture_output=True, text=True, cwd=cwd, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def task(n: int, seed: int) -> dict[str, np.ndarray]:
    """Sentences of random tokens, labelled by their first token (low ids: class 1). The first position is the one
    BERT's pooler reads ([CLS]), so the checkpoint's features carry the label and a head learns it at 2e-5 (the
    checkpoint here is random, not pretrained: a task that needs the backbone to learn much more would need more
    steps than a test can take at this learning rate). Every token is real, one segment."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, size=(n, T))
    return {"ids": ids.astype(np.int64), "token_types": np.zeros((n, T), np.int64), "mask": np.ones((n, T), bool),
            "labels": (ids[:, 0] < VOCAB // 2).astype(np.int64)}


def accuracy(out_dir: Path) -> float:
    with open(out_dir / "metrics.csv", newline="") as f:
        return [float(r["accuracy"]) for r in csv.DictReader(f) if r["split"] == "val"][-1]


def test_fine_tune_a_classifier_from_a_huggingface_bert(tmp_path):
    tf = transformers()
    torch.manual_seed(0)
    cfg = tf.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=24)
    hf = tf.BertModel(cfg).eval()
    hf.save_pretrained(tmp_path / "hf")
    spec = SPECS / "bert_classifier.nn"
    weights = tmp_path / "w.safetensors"

    out = specc_cli(sys.executable, "-m", "specc", "weights", "import", str(spec), str(tmp_path / "hf"), "--map",
                    "bert-hf", "--into", "bert", "-o", str(weights), cwd=tmp_path).stdout
    assert "config.json set -D" in out and f"wrote {weights}" in out
    sizes = stored_overrides(weights)  # what config.json set, recorded in the file
    assert (sizes["vocab"], sizes["d"], sizes["layers"], sizes["d_ff"]) == (VOCAB, 32, 2, 48)
    defines = [a for k in ("vocab", "max_pos", "type_vocab", "layers", "heads", "d", "d_ff")
               for a in ("-D", f"{k}={sizes[k]}")]

    # before training: the emitted module with the imported weights computes the library's BERT exactly
    model = specc.load(spec, **sizes).to_torch().eval()
    report = init_from(model, weights)
    assert report.loaded and not report.unused and not report.reinitialised
    head = report.missing  # only the new head is left to initialise
    assert head and len(head) < len(report.loaded)
    data = task(8, seed=9)
    data["mask"][1, 7:] = False  # padding too
    x = [torch.from_numpy(data[k]) for k in ("ids", "token_types", "mask")]
    with torch.no_grad():
        want = hf(input_ids=x[0], token_type_ids=x[1], attention_mask=x[2].long())
        sequence, pooled = model.bert(*x)
    assert (sequence - want.last_hidden_state).abs().max().item() <= 1e-5
    assert (pooled - want.pooler_output).abs().max().item() <= 1e-5

    np.savez(tmp_path / "train.npz", **task(512, seed=1))
    np.savez(tmp_path / "val.npz", **task(256, seed=2))
    script = tmp_path / "train.py"
    specc_cli(sys.executable, "-m", "specc", "train-script", str(spec), *defines, "-o", str(script), cwd=tmp_path)
    text = script.read_text()
    assert 'Setting("optimizer", "str", "adamw"' in text and 'Setting("lr", "float", 2e-05' in text

    common = ["--init-from", str(weights), "--train-path", "train.npz", "--val-path", "val.npz", "--seq-len", str(T),
              "--batch-size", "32", "--seed", "0"]
    before = specc_cli(sys.executable, str(script), *common, "--eval-only", "--out-dir", "before", cwd=tmp_path)
    run = specc_cli(sys.executable, str(script), *common, "--steps", "200", "--eval-every", "200", "--out-dir", "run",
                    cwd=tmp_path)
    log = run.stdout + run.stderr
    assert f"initialised from {weights}" in log
    fresh = next(line for line in log.splitlines() if "not in the file are newly initialised" in line)
    assert sorted(fresh.split(": ", 1)[1].split(", ")) == sorted(head)  # the head, and nothing else
    assert "of another shape" not in log
    start = float(before.stdout.split("accuracy ")[-1].split()[0])  # the fresh head on the imported backbone
    end = accuracy(tmp_path / "run")
    assert end >= 0.65 and end >= start + 0.15, (start, end)


def test_into_fills_one_submodule_and_names_the_others_when_it_is_wrong(tmp_path):
    from safetensors.torch import save_file

    from specc.api import import_weights
    from specc.weights import WeightsError, open_checkpoint

    sizes = dict(vocab=VOCAB, max_pos=16, layers=1, heads=2, d=8, d_ff=16)
    spec = SPECS / "bert_classifier.nn"
    torch.manual_seed(0)
    backbone = specc.load(SPECS / "bert_base.nn", **sizes).to_torch()
    save_file(backbone.state_dict(), str(tmp_path / "own.safetensors"))  # the backbone spec's own layout
    import_weights(spec, tmp_path / "own.safetensors", tmp_path / "w.safetensors", overrides=sizes, into="bert")
    model = specc.load(spec, **sizes).to_torch()
    report = init_from(model, tmp_path / "w.safetensors")
    with open_checkpoint(tmp_path / "w.safetensors") as ckpt:
        assert len(ckpt.info) == len(backbone.state_dict()) == len(report.loaded)
    assert not report.unused and report.missing and all(n in model.state_dict() for n in report.missing)
    with pytest.raises(WeightsError) as err:
        import_weights(spec, tmp_path / "own.safetensors", tmp_path / "x.safetensors", overrides=sizes, into="berty")
    assert "has no submodule 'berty'" in str(err.value) and "bert" in str(err.value).split("it has: ")[1]
    assert not (tmp_path / "x.safetensors").exists()
