"""Generated train.py on real data formats: CIFAR folders with the seed's augmentation, image trees, text files;
exact resume with loader workers and augmentation; honest evaluation; checkpoints by metric; --eval-only."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from test_train_script import REPO, load_script, read_log, run_script, write_script
from train_data import cifar10_folder, class_images

torch = pytest.importorskip("torch")

# the seed workflow: RandomCrop(32, padding=4) + RandomHorizontalFlip + Normalize, SGD 0.01 momentum 0.9, batch 64
CIFAR_SETTINGS = dict(data="cifar", random_crop=32, crop_padding=4, hflip=True, normalize="given",
                      mean="0.4914,0.4822,0.4465", std="0.2470,0.2435,0.2616", optimizer="sgd", lr=0.01,
                      momentum=0.9, weight_decay=0.0, batch_size=64, log_every=1)


def need_torchvision() -> None:
    from specc.train.runtime.augment import transforms_v2
    from specc.train.runtime.setup import DataError

    try:
        transforms_v2()
    except DataError:
        pytest.skip("torchvision not installed")


def weights(path) -> dict:
    return torch.load(path, weights_only=True)["model"]


def test_cifar10_folder_with_the_seeds_augmentation(tmp_path):
    need_torchvision()
    cifar10_folder(tmp_path / "cifar-10-batches-py")
    # the data path comes from the command line: the spec's train section need not name it
    script = write_script(tmp_path, "TinyCNN", **CIFAR_SETTINGS, epochs=4, eval_every=0)
    result = run_script(script, "--train-path", "cifar-10-batches-py")
    assert result.returncode == 0, result.stderr
    final = json.loads((tmp_path / "out" / "final.json").read_text())
    assert final["step"] == 4 * 7  # 500 images / 64 per step = 7 steps an epoch
    assert final["val_samples"] == 200  # CIFAR's whole test batch, not a prefix of it
    assert final["val_accuracy"] > 0.6  # chance is 0.1
    assert "eval at step 28 on 200 samples" in result.stdout
    val = [int(r["step"]) for r in read_log(tmp_path / "out") if r["split"] == "val"]
    assert val == [7, 14, 21, 28]  # after every epoch
    # the accuracy is the model's on the whole test set, recomputed here from the saved weights
    module = load_script(script)
    model = module.TinyCNN(module.TinyCNNConfig())
    model.load_state_dict(weights(tmp_path / "out" / "checkpoint.pt"))
    model.eval()
    import pickle

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    x = torch.from_numpy(batch[b"data"].reshape(-1, 3, 32, 32)).float() / 255
    x = (x - torch.tensor([0.4914, 0.4822, 0.4465])[:, None, None]) / torch.tensor([0.2470, 0.2435, 0.2616])[:, None, None]
    with torch.no_grad():
        accuracy = (model(x).argmax(1).numpy() == np.array(batch[b"labels"])).mean()
    assert accuracy == pytest.approx(final["val_accuracy"])


def test_sigkill_and_resume_with_workers_and_augmentation_is_exact(tmp_path):
    need_torchvision()
    cifar10_folder(tmp_path / "c", per_batch=40, test=64)
    script = write_script(tmp_path, "TinyCNN", **{**CIFAR_SETTINGS, "batch_size": 16}, steps=14, workers=2,
                          checkpoint_every=3, eval_every=5, train_path="c")
    reference = run_script(script, "--quiet", "--out-dir", "ref")
    assert reference.returncode == 0, reference.stderr
    kill_at = int(np.random.default_rng().integers(4, 13))  # a random moment between two checkpoints or on one
    killed = run_script(script, "--quiet", "--out-dir", "cut", "--kill-after-step", str(kill_at))
    assert killed.returncode == -signal.SIGKILL
    (tmp_path / "cut" / "checkpoint.pt.tmp").write_bytes(b"torn")  # as a save killed half-way leaves it
    resumed = run_script(script, "--quiet", "--out-dir", "cut", "--resume", "--workers", "1")
    assert resumed.returncode == 0, resumed.stderr
    assert not (tmp_path / "cut" / "checkpoint.pt.tmp").exists()
    a, b = weights(tmp_path / "ref" / "checkpoint.pt"), weights(tmp_path / "cut" / "checkpoint.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"killed after step {kill_at}"
    assert read_log(tmp_path / "ref") == read_log(tmp_path / "cut")


def test_augmentation_is_applied_and_seeded(tmp_path):
    need_torchvision()
    cifar10_folder(tmp_path / "c", per_batch=20, test=20)
    module = load_script(write_script(tmp_path, "TinyCNN", **CIFAR_SETTINGS, train_path=str(tmp_path / "c")))
    cfg = module.specc_train.cli.parse_args(module.SETUP, ["--quiet"])
    from specc.train.runtime.build import load_sources, make_preprocess
    from specc.train.runtime.tasks import make_batch

    env = module.specc_train.env.Env(0, 1, torch.device("cpu"))
    train, _ = load_sources(module.SETUP, cfg, env)
    preprocess = make_preprocess(module.SETUP, cfg, train, [])
    idx = np.arange(8)
    first = make_batch(module.SETUP, cfg, train, idx, 0, preprocess, seed=1)[0][0]
    again = make_batch(module.SETUP, cfg, train, idx, 0, preprocess, seed=1)[0][0]
    other = make_batch(module.SETUP, cfg, train, idx, 0, preprocess, seed=2)[0][0]
    plain = make_batch(module.SETUP, cfg, train, idx, 1, preprocess, seed=1)[0][0]  # evaluation: no randomness
    assert torch.equal(first, again) and not torch.equal(first, other)
    raw = torch.from_numpy(train.take(idx)["x"]).float() / 255
    mean = torch.tensor([0.4914, 0.4822, 0.4465])[:, None, None]
    std = torch.tensor([0.2470, 0.2435, 0.2616])[:, None, None]
    assert torch.allclose(plain, (raw - mean) / std, atol=1e-5)  # scaled from uint8, then normalised
    assert ((first * std + mean) == 0).flatten(1).any(1).sum() > 0  # padding shows as zeros after random crops


def test_raw_uint8_images_are_scaled_unless_told_otherwise(tmp_path):
    images, labels = class_images(64)
    np.save(tmp_path / "x.npy", images)
    np.save(tmp_path / "y.npy", labels)
    module = load_script(write_script(tmp_path, "TinyCNN", data="npy", train_path="x.npy", train_labels="y.npy",
                                      val_fraction=0.25, batch_size=16, steps=3))
    from specc.train.runtime.build import load_sources, make_preprocess
    from specc.train.runtime.tasks import make_batch

    for flag, top in (("true", 1.0), ("false", 255.0)):
        cfg = module.specc_train.cli.parse_args(module.SETUP, ["--scale-uint8", flag, "--train-path",
                                                               str(tmp_path / "x.npy"), "--train-labels",
                                                               str(tmp_path / "y.npy")])
        train, _ = load_sources(module.SETUP, cfg, module.specc_train.env.Env(0, 1, torch.device("cpu")))
        x = make_batch(module.SETUP, cfg, train, np.arange(16), 0, make_preprocess(module.SETUP, cfg, train, []))[0][0]
        assert x.dtype == torch.float32 and 0.5 * top < float(x.max()) <= top


def test_image_folder_tree(tmp_path):
    image = pytest.importorskip("PIL.Image")
    images, labels = class_images(60, classes=3, size=40)
    for i, (pixels, label) in enumerate(zip(images, labels)):
        folder = tmp_path / "photos" / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        image.fromarray(pixels.transpose(1, 2, 0)).save(folder / f"{i}.png")
    module = load_script(write_script(tmp_path, "TinyCNN", data="images", val_fraction=0.25, batch_size=9,
                                      steps=6, eval_every=6, workers=1, out_dir=str(tmp_path / "out")))
    assert module.specc_train.main(module.SETUP, ["--quiet", "--train-path", str(tmp_path / "photos")]) == 0
    final = json.loads((tmp_path / "out" / "final.json").read_text())
    assert final["val_samples"] == 15  # a quarter held out, all of it evaluated (40x40 resized to 32x32)


def test_full_validation_set_is_evaluated(tmp_path):
    """A validation set whose labels are wrong from row 600 on: the whole set must be counted, not a prefix."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 3, 32, 32)).astype(np.float32)
    y = rng.integers(10, size=1000)
    np.savez(tmp_path / "val.npz", x=x, labels=y)
    np.savez(tmp_path / "train.npz", x=x[:64], labels=y[:64])
    module = load_script(write_script(tmp_path, "TinyCNN", data="npz", train_path=str(tmp_path / "train.npz"),
                                      val_path=str(tmp_path / "val.npz"), steps=1, batch_size=32,
                                      out_dir=str(tmp_path / "out")))
    assert module.specc_train.main(module.SETUP, ["--quiet"]) == 0
    state = weights(tmp_path / "out" / "checkpoint.pt")
    model = module.TinyCNN(module.TinyCNNConfig())
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        predicted = model(torch.from_numpy(x)).argmax(1).numpy()
    final = json.loads((tmp_path / "out" / "final.json").read_text())
    assert final["val_samples"] == 1000
    assert final["val_accuracy"] == pytest.approx((predicted == y).mean())
    # --eval-steps keeps the old partial evaluation available, and says how much it saw
    assert module.specc_train.main(module.SETUP, ["--quiet", "--eval-only", "--init-from",
                                                  str(tmp_path / "out" / "checkpoint.pt"), "--eval-steps", "2",
                                                  "--out-dir", str(tmp_path / "partial")]) == 0
    partial = json.loads((tmp_path / "partial" / "final.json").read_text())
    assert partial["val_samples"] == 64 and partial["val_accuracy"] == pytest.approx((predicted[:64] == y[:64]).mean())


def _tokenizer(path, words: list[str]) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.train_from_iterator([" ".join(words)], tokenizers.trainers.WordLevelTrainer(
        vocab_size=64, special_tokens=["[UNK]", "[EOS]"]))
    tok.save(str(path))


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_text_files_through_datasets_and_a_tokenizer(tmp_path, kind):
    pytest.importorskip("datasets")
    words = [f"w{i}" for i in range(40)]
    rng = np.random.default_rng(0)
    docs = [" ".join(words[j % 40] for j in range(s, s + 30)) for s in rng.integers(40, size=60)]
    _tokenizer(tmp_path / "tokenizer.json", words)
    path = tmp_path / f"corpus.{kind}"
    if kind == "jsonl":
        path.write_text("".join(json.dumps({"body": d}) + "\n" for d in docs))
    else:
        pandas = pytest.importorskip("pandas")
        frame = pandas.DataFrame({"body": docs})
        frame.to_parquet(path)
    module = load_script(write_script(tmp_path, "TinyGPT", data="text", text_field="body", eos_token="[EOS]",
                                      seq_len=16, batch_size=8, steps=8, lr=1e-2, log_every=1,
                                      out_dir=str(tmp_path / "out")))
    assert module.specc_train.main(module.SETUP, ["--quiet", "--train-path", str(path), "--tokenizer",
                                                  str(tmp_path / "tokenizer.json")]) == 0
    losses = [float(r["loss"]) for r in read_log(tmp_path / "out") if r["split"] == "train"]
    assert len(losses) == 8 and losses[-1] < losses[0]
    final = json.loads((tmp_path / "out" / "final.json").read_text())
    windows = (60 * 31 - 17) // 16 + 1  # 60 documents of 30 words + [EOS]; 17-token windows, stride 16
    assert final["val_samples"] == int(windows * 0.1)


def test_memory_budget_refusal_names_the_numbers(tmp_path, capsys):
    module = load_script(write_script(tmp_path, "TinyCNN", steps=2, batch_size=8, synthetic_samples=64,
                                      out_dir=str(tmp_path / "out")))
    assert module.specc_train.main(module.SETUP, ["--quiet", "--memory-budget-gb", "0.0001"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the run needs about ") and "over --memory-budget-gb 0.0001" in err
    for part in ("parameters", "gradients", "optimizer", "activations"):
        assert part in err
    assert "--strategy fsdp" in err


def test_optional_libraries_load_only_for_their_data(tmp_path):
    script = write_script(tmp_path, "TinyGPT", steps=2, seq_len=16, batch_size=4, synthetic_samples=64)
    code = ("import runpy, sys; sys.argv = [sys.argv[1], '--quiet'];\n"
            "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('datasets', 'tokenizers', 'PIL', 'torchvision', 'pandas') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code, str(script)], capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
