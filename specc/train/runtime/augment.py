"""Image preprocessing and augmentation with torchvision.transforms.v2, seeded per batch.

Raw uint8 images are scaled to [0, 1] floats unless --scale-uint8 false. The random transforms draw from torch's
generator re-seeded for every batch from (seed, split, epoch, step, micro-batch, rank) inside `fork_rng`, so a
batch's augmentation depends on nothing but its place in the run: loader workers, their number and a resume
after SIGKILL all give the same pixels.
"""
from __future__ import annotations

import numpy as np
import torch

from .setup import DataError

_SCHEMAS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
            "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_LIBRARIES = []  # keeps the schema fragment registered


def transforms_v2():
    """torchvision.transforms.v2; a torchvision wheel built for another torch lacks its compiled ops, whose schemas
    its Python modules look up at import: define them (the transforms used here never call them)."""
    try:
        has_nms = hasattr(torch.ops.torchvision, "nms")
    except RuntimeError:
        has_nms = False
    if not has_nms:
        library = torch.library.Library("torchvision", "FRAGMENT")
        for schema in _SCHEMAS:
            library.define(schema)
        _LIBRARIES.append(library)
    try:
        from torchvision.transforms import v2
    except ImportError:
        raise DataError("augmentation and normalisation need torchvision "
                        "(pip install --no-deps torchvision matching your torch)") from None
    return v2


def parse_floats(text: str, what: str, channels: int) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise DataError(f"--{what} {text}: expected {channels} comma-separated numbers") from None
    if len(values) == 1:
        values *= channels
    if len(values) != channels or not all(np.isfinite(values)):
        raise DataError(f"--{what} {text}: expected {channels} finite numbers, one per channel")
    return values


class Preprocess:
    """What happens to the image input of a batch between the file and the model (picklable, for workers)."""

    def __init__(self, cfg, channels: int, size: tuple, mean: list | None, std: list | None) -> None:
        self.scale = cfg.scale_uint8
        self.mean, self.std = mean, std
        self.resize = cfg.resize
        self.crop, self.padding = cfg.random_crop, cfg.crop_padding
        self.hflip, self.vflip = cfg.hflip, cfg.vflip
        self.size = size
        self.needs_library = bool(self.resize or self.crop or self.hflip or self.vflip or mean is not None)
        if self.needs_library:
            transforms_v2()  # fail early, in the main process, when torchvision is missing

    def _random_ops(self, v2) -> list:
        ops = []
        if self.crop:
            ops.append(v2.RandomCrop(self.crop, padding=self.padding or None))
        if self.hflip:
            ops.append(v2.RandomHorizontalFlip())
        if self.vflip:
            ops.append(v2.RandomVerticalFlip())
        return ops

    def scaled(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8 and self.scale:
            return images.float().div_(255)
        return images.float()

    def __call__(self, images: torch.Tensor, train: bool, seed: int) -> torch.Tensor:
        images = self.scaled(images)
        if not self.needs_library:
            return images
        v2 = transforms_v2()
        if self.resize:
            images = v2.Resize((self.resize, self.resize), antialias=True)(images)
        ops = self._random_ops(v2) if train else []
        if ops:
            pipeline = v2.Compose(ops)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                images = torch.stack([pipeline(image) for image in images])
        elif self.crop and images.shape[-2:] != (self.crop, self.crop):
            images = v2.CenterCrop(self.crop)(images)  # evaluation: the middle of what training cropped from
        if self.mean is not None:
            images = v2.Normalize(self.mean, self.std)(images)
        return images


def channel_stats(source, name: str, preprocess: Preprocess, limit: int = 10_000) -> tuple[list, list, int]:
    """Per-channel mean and std of the scaled training images (the first `limit`), for --normalize auto."""
    count = min(source.count, limit)
    total = total_sq = None
    for start in range(0, count, 500):
        images = preprocess.scaled(torch.from_numpy(np.ascontiguousarray(
            source.take(np.arange(start, min(count, start + 500)))[name]))).double()
        sums, squares = images.sum((0, 2, 3)), images.square().sum((0, 2, 3))
        total = sums if total is None else total + sums
        total_sq = squares if total_sq is None else total_sq + squares
    pixels = count * images.shape[2] * images.shape[3]
    mean = total / pixels
    std = (total_sq / pixels - mean.square()).clamp_min(1e-12).sqrt()
    return mean.tolist(), std.tolist(), count
