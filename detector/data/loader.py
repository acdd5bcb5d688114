"""Glue between datasets, transforms and ``torch.utils.data.DataLoader``.

Reproducibility: albumentations 2.x keeps its own generators inside each ``Compose`` and ignores
the global ``random``/``numpy`` state. DataLoader workers are forked copies, so without reseeding
every worker would replay the same augmentations. :func:`worker_init_fn` seeds ``random``,
``numpy`` and every transform reachable from the worker's dataset from the seed torch gives the
worker (``base_seed + worker_id``, where the base seed comes from the DataLoader's generator, so
a run is reproducible with ``torch.manual_seed`` or ``generator=`` and differs between epochs).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from detector.data.base import Sample

__all__ = ["TransformedDataset", "collate_detection", "seed_transforms", "worker_init_fn"]


class TransformedDataset(Dataset):
    """Apply a ``Sample -> Sample`` transform to every item of a dataset.

    Attributes ``classes``, ``records()``, ``ann_file`` and ``label_to_category_id`` of the wrapped
    dataset are forwarded.

    Args:
        dataset: any dataset yielding :class:`~detector.data.Sample`.
        transform: e.g. from :func:`~detector.data.build_transforms`; ``None`` = identity.
    """

    def __init__(self, dataset: Dataset, transform: Callable[[Sample], Sample] | None) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Sample:
        sample = self.dataset[index]
        return self.transform(sample) if self.transform is not None else sample

    @property
    def classes(self) -> list[str]:
        """Class names of the wrapped dataset."""
        return self.dataset.classes  # type: ignore[attr-defined,no-any-return]

    def records(self) -> list[dict[str, Any]]:
        """Evaluation ground truth of the wrapped dataset (original image coordinates)."""
        return self.dataset.records()  # type: ignore[attr-defined,no-any-return]

    def __getattr__(self, name: str) -> Any:
        if name in {
            "ann_file",
            "label_to_category_id",
            "category_id_to_label",
            "num_classes",
            "issues",
        }:
            return getattr(self.__dict__["dataset"], name)
        raise AttributeError(name)

    def set_seed(self, seed: int | None) -> None:
        """Reseed the transform (if it can be seeded)."""
        setter = getattr(self.transform, "set_seed", None)
        if setter is not None:
            setter(seed)


def seed_transforms(dataset: Any, seed: int | None, _depth: int = 0) -> int:
    """Reseed every seedable transform reachable from ``dataset``.

    Follows ``.dataset`` / ``.datasets`` (``Subset``, ``ConcatDataset``, :class:`TransformedDataset`)
    and calls ``set_seed`` on their ``transform``; several transforms get different seeds.

    Returns:
        The number of transforms reseeded.
    """
    if dataset is None or _depth > 16:
        return 0
    count = 0
    transform = getattr(dataset, "transform", None)
    if transform is not None and hasattr(transform, "set_seed"):
        transform.set_seed(None if seed is None else seed + 7919 * _depth)
        count += 1
    inner = getattr(dataset, "dataset", None)
    if inner is not None:
        count += seed_transforms(inner, None if seed is None else seed + 1, _depth + 1)
    for k, child in enumerate(getattr(dataset, "datasets", None) or ()):
        count += seed_transforms(
            child, None if seed is None else seed + 104729 * (k + 1), _depth + 1
        )
    return count


def worker_init_fn(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed ``random``, ``numpy`` and the worker's transforms.

    Also usable in the main process (``num_workers=0``) through :func:`seed_transforms`.
    """
    info = torch.utils.data.get_worker_info()
    seed = (info.seed if info is not None else torch.initial_seed()) % 2**32
    random.seed(seed)
    np.random.seed(seed)
    if info is not None:
        seed_transforms(info.dataset, seed % 2**31)


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
