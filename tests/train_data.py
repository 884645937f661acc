"""Data sets the training tests make for themselves (nothing is downloaded)."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def class_images(n: int, classes: int = 10, seed: int = 0, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [n, 3, size, size] whose class is a colour (plus noise): easy to learn, easy to check."""
    rng = np.random.default_rng(seed)
    colours = np.random.default_rng(1234).integers(30, 226, size=(classes, 3))
    labels = rng.integers(classes, size=n)
    noise = rng.normal(0, 25, size=(n, 3, size, size))
    images = np.clip(colours[labels][:, :, None, None] + noise, 0, 255).astype(np.uint8)
    return images, labels


def cifar10_folder(root: Path, per_batch: int = 100, test: int = 200, classes: int = 10) -> Path:
    """A folder in CIFAR-10's python format: data_batch_1..5 and test_batch, pickled dicts of uint8 rows."""
    root.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for seed, name in enumerate(names):
        images, labels = class_images(test if name == "test_batch" else per_batch, classes, seed=seed)
        batch = {b"batch_label": name.encode(), b"labels": labels.tolist(),
                 b"data": images.reshape(len(images), -1), b"filenames": [b"x.png"] * len(images)}
        with open(root / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)  # as the published files (Python 2 pickles)
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(classes)]}, f)
    return root
