"""Benchmark: a generated train.py vs a plain hand-written PyTorch loop, same model, data, optimizer and batch.

    python bench/train_throughput.py [--threads 2] [--rounds 3] [--steps 30] [--models cnn,gpt]

Models, from the specs as users get them (`specc train-script`):
  * cnn  specs/cifar_cnn.nn on CIFAR-shaped uint8 images (scaled to [0, 1]), SGD 0.01 momentum 0.9, batch 64:
         images/s
  * gpt  specs/gpt2.nn shrunk with -D (4 layers, d 128, 4 heads, vocab 512, ctx 128) on a flat token file,
         AdamW, batch 16 x 128 tokens: tokens/s

The generated script runs in-process through its `main` and reports the seconds spent in its training steps (data
loading, forward, backward, update; not start-up, evaluation or checkpoints) in final.json. The hand-written loop
times the same steps. Runs are interleaved (script, loop, script, loop, ...) so that load drifting on a shared
machine hits both alike; medians and the ratio script/loop are printed (target >= 0.95).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _setup_threads(argv: list[str]) -> None:
    threads = "2"
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            threads = argv[i + 1]
    os.environ.setdefault("OMP_NUM_THREADS", threads)


_setup_threads(sys.argv)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(ROOT))
from specc.api import load  # noqa: E402
from specc.train import train_script_for  # noqa: E402

MODELS = {
    "cnn": dict(spec="cifar_cnn.nn", overrides={}, batch=64, unit="images/s"),
    "gpt": dict(spec="gpt2.nn", overrides=dict(layers=4, d=128, heads=4, vocab=512, ctx=128), batch=16,
                seq=128, unit="tokens/s"),
}


def load_script(path: Path):
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_data(name: str, folder: Path) -> list[str]:
    rng = np.random.default_rng(0)
    if name == "cnn":
        np.savez(folder / "data.npz", image=rng.integers(0, 256, size=(4096, 3, 32, 32), dtype=np.uint8),
                 labels=rng.integers(10, size=4096))
        return ["--data", "npz", "--train-path", str(folder / "data.npz"), "--optimizer", "sgd", "--lr", "0.01",
                "--momentum", "0.9", "--weight-decay", "0"]
    rng.integers(512, size=600_000).astype(np.uint16).tofile(folder / "tokens.bin")
    return ["--data", "tokens", "--train-path", str(folder / "tokens.bin"), "--seq-len", "128",
            "--optimizer", "adamw", "--lr", "3e-4"]


def run_script(module, args: list[str], out: Path, steps: int) -> float:
    """Samples per second in the script's own training steps."""
    code = module.specc_train.main(module.SETUP, ["--quiet", *args, "--steps", str(steps), "--val-fraction", "0",
                                                  "--eval-every", "0", "--out-dir", str(out)])
    assert code == 0
    return json.loads((out / "final.json").read_text())["samples_per_second"]


def run_loop(module, name: str, folder: Path, steps: int, batch: int) -> float:
    """The same training, written by hand: numpy batches, one forward/backward/step per batch."""
    torch.manual_seed(0)
    model = getattr(module, module.SETUP.model_name)(module.SETUP.config_class())
    model.train()
    rng = np.random.default_rng(0)
    if name == "cnn":
        data = np.load(folder / "data.npz")
        images, labels = data["image"], data["labels"]
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        order = rng.permutation(len(images))
    else:
        tokens = np.memmap(folder / "tokens.bin", dtype=np.uint16, mode="r")
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
        starts = rng.permutation((len(tokens) - 129) // 128) * 128
    began = time.perf_counter()
    for step in range(steps):
        if name == "cnn":
            idx = np.sort(order[step * batch:(step + 1) * batch])
            x = torch.from_numpy(images[idx]).float().div_(255)
            y = torch.from_numpy(labels[idx])
            loss = F.cross_entropy(model(x), y)
        else:
            rows = np.stack([tokens[s:s + 129] for s in starts[step * batch:(step + 1) * batch]]).astype(np.int64)
            x, y = torch.from_numpy(rows[:, :-1]), torch.from_numpy(rows[:, 1:])
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * batch / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--models", default="cnn,gpt")
    args = parser.parse_args()
    torch.set_num_threads(int(args.threads))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    for name in args.models.split(","):
        info = MODELS[name]
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            script = folder / f"train_{name}.py"
            script.write_text(train_script_for(load(ROOT / "specs" / info["spec"], **info["overrides"])))
            module = load_script(script)
            extra = make_data(name, folder) + ["--batch-size", str(info["batch"])]
            per_sample = info.get("seq", 1)
            scripted, looped = [], []
            for r in range(args.rounds):
                scripted.append(run_script(module, extra, folder / f"out{r}", args.steps) * per_sample)
                looped.append(run_loop(module, name, folder, args.steps, info["batch"]) * per_sample)
            a, b = statistics.median(scripted), statistics.median(looped)
            print(f"{name}: generated train.py {a:,.0f} {info['unit']} (runs: "
                  f"{', '.join(f'{v:,.0f}' for v in scripted)}); hand-written loop {b:,.0f} {info['unit']} (runs: "
                  f"{', '.join(f'{v:,.0f}' for v in looped)}); ratio {a / b:.3f}")


if __name__ == "__main__":
    main()
