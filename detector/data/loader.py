"""Glue between datasets, transforms and ``torch.utils.data.DataLoader``.

Reproducibility: albumentations 2.x keeps its own generators inside each ``Compose`` and ignores
the global ``random``/``numpy`` state, and DataLoader workers are forked copies. So
:class:`SeededTransformDataset` reseeds ``random``, ``numpy`` and the transform for every sample
from ``(seed, epoch, index)``: the augmentation of a sample depends on nothing else (not the
number of workers, not which worker loads it, not where an interrupted run resumed).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from detector.data.base import Sample

__all__ = ["SeededTransformDataset", "collate_detection", "mix_seeds"]


def mix_seeds(*values: int) -> int:
    """A 63-bit seed from integers (SplitMix64-style mixing; stable across processes)."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


class SeededTransformDataset(Dataset):
    """Apply ``transform`` to ``dataset[i]`` with randomness seeded by ``(seed, epoch, i)``."""

    def __init__(self, dataset: Dataset, transform, seed: int = 0) -> None:
        self.dataset = dataset
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        self.classes = getattr(dataset, "classes", None)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        sample = self.dataset[index]
        s = mix_seeds(self.seed, self.epoch, index)
        random.seed(s)
        np.random.seed(s % (2**32))
        seeder = getattr(self.transform, "set_seed", None) or getattr(
            self.transform, "set_random_seed", None
        )
        if seeder is not None:
            seeder(s % (2**32))
        return self.transform(sample)


def collate_detection(batch: Sequence[Sample]) -> dict[str, Any]:
    """Stack transformed samples into a batch.

    Args:
        batch: samples of one common image size (resized by the transform).

    Returns:
        ``images``: ``float32 [B, 3, H, W]`` RGB in ``[0, 1]``; ``boxes``: list of ``float32 [Ni, 4]``
        xyxy normalised by the image ``W, H``; ``labels``: list of ``int64 [Ni]``; ``image_ids``:
        list; ``orig_sizes``: list of the original ``(H, W)`` (to map predictions back);
        ``stands_in_for``: list, per sample the id of the unreadable image it replaces, or None.

    Raises:
        ValueError: empty batch or images of different sizes.
    """
    if not batch:
        raise ValueError("collate_detection got an empty batch")
    h, w = batch[0].image.shape[:2]
    for s in batch:
        if s.image.shape != (h, w, 3) or s.image.dtype != np.uint8:
            raise ValueError(
                f"collate_detection needs uint8 RGB images of one size; got {s.image.shape} "
                f"{s.image.dtype} (image {s.image_id!r}) and {(h, w, 3)}: resize in the transform"
            )
    images = torch.from_numpy(np.stack([s.image for s in batch])).permute(0, 3, 1, 2)
    images = images.float().div_(255.0).contiguous()
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    boxes = [
        torch.from_numpy(np.asarray(s.boxes, np.float32).reshape(-1, 4)) / scale for s in batch
    ]
    labels = [torch.from_numpy(np.asarray(s.labels, np.int64).reshape(-1)) for s in batch]
    return {
        "images": images,
        "boxes": boxes,
        "labels": labels,
        "image_ids": [s.image_id for s in batch],
        "orig_sizes": [tuple(s.orig_size) if s.orig_size is not None else (h, w) for s in batch],
        "stands_in_for": [s.stands_in_for for s in batch],
    }
