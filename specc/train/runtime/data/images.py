"""Image classification sources: CIFAR-10/100's python-pickle folders and image folder trees (one subfolder per
class, decoded with Pillow in the loader's workers)."""
from __future__ import annotations

import dataclasses
import io
import os
import pickle

import numpy as np

from ..setup import DataError, ScriptSetup
from .arrays import READ_ERRORS, Samples, classification_samples

CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


class _ArraysOnly(pickle.Unpickler):
    """CIFAR's batches are pickles of dicts, lists and numpy arrays; anything else in the file is refused, so a
    data file can never run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"), ("numpy.core.numeric", "_frombuffer"),
               ("numpy._core.numeric", "_frombuffer")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_batch(path: str) -> dict:
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file (a CIFAR python folder holds data_batch_1..5 and test_batch, or "
                        "train and test for CIFAR-100)")
    try:
        with open(path, "rb") as f:
            batch = _ArraysOnly(io.BytesIO(f.read()), encoding="bytes").load()
    except READ_ERRORS as exc:
        raise DataError(f"{path}: not a readable CIFAR batch ({exc})") from None
    if not isinstance(batch, dict) or b"data" not in batch:
        raise DataError(f"{path}: not a CIFAR batch (no b'data' entry)")
    return batch


def cifar_files(folder: str, split: str) -> list[str]:
    """The batch files of one split ('train' or 'test') of a CIFAR-10 or CIFAR-100 python folder."""
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: no such folder (--train-path should be the extracted cifar-10-batches-py "
                        "or cifar-100-python folder)")
    if os.path.exists(os.path.join(folder, "train")) or os.path.exists(os.path.join(folder, "test")):
        return [os.path.join(folder, split)]
    names = CIFAR10_TRAIN if split == "train" else ("test_batch",)
    return [os.path.join(folder, name) for name in names]


def cifar_samples(setup: ScriptSetup, cfg, folder: str, split: str) -> Samples:
    images, labels = [], []
    for path in cifar_files(folder, split):
        batch = _read_batch(path)
        data = np.asarray(batch[b"data"])
        key = b"labels" if b"labels" in batch else b"fine_labels"
        if key not in batch:
            raise DataError(f"{path}: no b'labels' or b'fine_labels' entry")
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataError(f"{path}: b'data' should be uint8 rows of 3072 values, got {data.dtype} {data.shape}")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[key], dtype=np.int64))
    name = setup.inputs[0].name
    arrays = {name: np.concatenate(images), "labels": np.concatenate(labels)}
    return classification_samples(setup, cfg, arrays, {name: folder, "labels": folder})


@dataclasses.dataclass(frozen=True)
class ImageFiles:
    """An image folder tree: `root/<class>/<file>`; classes in sorted order are labels 0, 1, ..."""

    root: str
    name: str  # the model input the images feed
    paths: tuple
    labels: np.ndarray
    channels: int
    size: tuple  # (H, W) every image is resized to
    offset: int = 0
    count: int = 0

    @property
    def files(self) -> dict:
        return {"labels": self.root}

    @property
    def source(self) -> str:
        return self.root

    def take(self, indices: np.ndarray) -> dict:
        rows = self.offset + np.asarray(indices, dtype=np.int64)
        return {self.name: np.stack([self._decode(self.paths[i]) for i in rows]), "labels": self.labels[rows]}

    def split(self, n_tail: int) -> tuple:
        head = dataclasses.replace(self, count=self.count - n_tail)
        tail = dataclasses.replace(self, offset=self.offset + self.count - n_tail, count=n_tail)
        return head, tail

    def _decode(self, path: str) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                image = image.convert("L" if self.channels == 1 else "RGB")
                if image.size != (self.size[1], self.size[0]):
                    image = image.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
                array = np.asarray(image, dtype=np.uint8)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise DataError(f"{path}: not a readable image ({exc})") from None
        return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def image_folder(setup: ScriptSetup, cfg, root: str) -> ImageFiles:
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise DataError(f"{root}: --data images needs Pillow (pip install pillow)") from None
    if not os.path.isdir(root):
        raise DataError(f"{root}: no such folder")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not classes:
        raise DataError(f"{root}: no class subfolders (expected {root}/<class>/<image>)")
    if len(classes) > cfg.num_classes:
        raise DataError(f"{root}: {len(classes)} class folders, but the model has {cfg.num_classes} classes")
    paths, labels = [], []
    for label, name in enumerate(classes):
        for dirpath, _dirs, files in sorted(os.walk(os.path.join(root, name))):
            for file in sorted(files):
                if file.lower().endswith(IMAGE_SUFFIXES):
                    paths.append(os.path.join(dirpath, file))
                    labels.append(label)
    if not paths:
        raise DataError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders")
    # a fixed shuffle, so that a held-out tail (no --val-path) has every class
    order = np.random.default_rng(0).permutation(len(paths))
    spec = setup.inputs[0]
    channels, height, width = spec.shape[1:4]
    size = (cfg.resize, cfg.resize) if cfg.resize else (height, width)
    if not all(isinstance(d, int) for d in (channels, *size)):
        raise DataError(f"{root}: input '{spec.name}' has symbolic image dims {spec.shape}: set --resize")
    return ImageFiles(root, spec.name, tuple(paths[i] for i in order), np.asarray(labels, dtype=np.int64)[order], channels,
                      size, count=len(paths))
