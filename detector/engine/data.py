"""From the dataset config to DataLoaders, with reproducible, resumable order and augmentation.

* :class:`ResumableBatchSampler`: the order of an epoch is ``randperm(n)`` seeded by
  ``(seed, epoch)``, sharded over ranks, and can start at any batch of the epoch (resume).
* :class:`SeededTransformDataset`: sample ``i`` of epoch ``e`` is augmented with a generator seeded
  by ``(seed, e, i)``, whatever worker process loads it, so augmentation does not depend on the
  number of workers or on where a run was interrupted.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..config import DatasetSchema, TrainSchema
from ..data import build_dataset, build_transforms, collate_detection, generate_synthetic
from .distributed import DistInfo, barrier

__all__ = [
    "ResumableBatchSampler",
    "SeededTransformDataset",
    "build_datasets",
    "dataset_options",
    "make_train_loader",
    "make_val_loader",
]


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (SplitMix64-style mixing; stable across processes)."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


class ResumableBatchSampler(Sampler[list[int]]):
    """Batches of indices, shuffled per epoch by ``(seed, epoch)``, sharded by rank.

    Args:
        num_samples: dataset length.
        batch_size: per-rank batch size.
        shuffle: shuffle (training) or keep order (evaluation).
        drop_last: drop the incomplete last batch (training).
        seed: base seed.
        rank, world_size: distributed sharding (every rank gets the same number of batches).
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        shuffle: bool,
        drop_last: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(_mix(self.seed, self.epoch))
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        if self.world_size > 1:
            per_rank = -(-self.num_samples // self.world_size)
            if self.drop_last:
                per_rank = self.num_samples // self.world_size
                order = order[: per_rank * self.world_size]
            else:
                order = order + order[: per_rank * self.world_size - len(order)]
            order = order[self.rank :: self.world_size]
        return order

    def _batches(self) -> list[list[int]]:
        order = self._indices()
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._batches()[self.start_batch :]

    def __len__(self) -> int:
        return len(self._batches())


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
        s = _mix(self.seed, self.epoch, index)
        random.seed(s)
        np.random.seed(s % (2**32))
        seeder = getattr(self.transform, "set_seed", None) or getattr(
            self.transform, "set_random_seed", None
        )
        if seeder is not None:
            seeder(s % (2**32))
        return self.transform(sample)


def dataset_options(cfg: DatasetSchema, split: str) -> dict[str, Any]:
    """Reader options for ``split`` ("train" or "val") from the dataset config."""
    train = split == "train"
    kind = cfg.kind
    if kind == "synthetic":
        return {
            "root": cfg.root,
            "num_train": cfg.num_train,
            "num_val": cfg.num_val,
            "seed": cfg.seed,
        }
    if kind == "coco":
        return {
            "ann_file": cfg.train_ann_file if train else cfg.val_ann_file,
            "image_dir": cfg.train_images if train else cfg.val_images,
            "drop_empty": not cfg.keep_empty if train else False,
        }
    if kind == "voc":
        return {
            "root": cfg.root,
            "years": list(cfg.train_years if train else cfg.val_years),
            "keep_difficult": cfg.keep_difficult,
        }
    if kind == "folder":
        options: dict[str, Any] = {
            "root": cfg.root,
            "labels_file": cfg.labels_file,
            "classes": cfg.classes,
            "class_map": cfg.class_map,
            "include_unannotated": cfg.include_unannotated,
            "val_fraction": cfg.val_ratio,
            "seed": cfg.seed,
        }
        split_file = cfg.train_list if train else cfg.val_list
        if split_file is not None:
            options["split_file"] = split_file
        return options
    if kind == "widerface":
        return {
            "root": cfg.root,
            "min_face_size": cfg.min_face_size,
            "max_blur": cfg.max_blur,
            "eval_gt_dir": None if train else cfg.eval_gt_dir,
        }
    raise ValueError(
        f"unknown dataset.kind {kind!r}; choose synthetic, coco, voc, folder or widerface"
    )


def split_name(cfg: DatasetSchema, split: str) -> str:
    """The reader's split name: VOC image sets come from the config, the others use train/val."""
    if cfg.kind == "voc":
        return cfg.train_split if split == "train" else cfg.val_split
    return split


def build_datasets(spec: TrainSchema, info: DistInfo) -> tuple[Dataset, Dataset | None]:
    """The raw training and validation datasets (the synthetic one is generated on rank 0)."""
    cfg = spec.dataset
    if cfg.kind == "synthetic":
        if cfg.root is None:
            raise ValueError("dataset.root must name the folder for the synthetic dataset")
        if info.is_main:  # generate (or find cached) once before the other ranks read it
            generate_synthetic(
                Path(cfg.root), num_train=cfg.num_train, num_val=cfg.num_val, seed=cfg.seed
            )
        barrier(info)
    train = build_dataset(cfg.kind, split_name(cfg, "train"), **dataset_options(cfg, "train"))
    val = build_dataset(cfg.kind, split_name(cfg, "val"), **dataset_options(cfg, "val"))
    if list(val.classes) != list(train.classes):
        raise ValueError(
            f"training and validation classes differ: {list(train.classes)} vs {list(val.classes)}"
        )
    return train, val


def make_train_loader(dataset: Dataset, spec: TrainSchema, info: DistInfo) -> DataLoader:
    aug = spec.augment
    transform = build_transforms(
        aug.preset,
        tuple(spec.image_size),
        train=True,
        mean_fill=tuple(aug.mean_fill),
        p_flip=aug.p_flip,
        max_zoom_out=aug.max_zoom_out,
        p_zoom_out=aug.p_zoom_out,
        p_photometric=aug.p_photometric,
    )
    wrapped = SeededTransformDataset(dataset, transform, seed=spec.seed)
    sampler = ResumableBatchSampler(
        len(wrapped),
        spec.trainer.batch_size,
        shuffle=True,
        drop_last=True,
        seed=spec.seed,
        rank=info.rank,
        world_size=info.world_size,
    )
    workers = spec.trainer.num_workers
    return DataLoader(
        wrapped,
        batch_sampler=sampler,
        collate_fn=collate_detection,
        num_workers=workers,
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
        prefetch_factor=4 if workers > 0 else None,
    )


def make_val_loader(
    dataset: Dataset,
    image_size: tuple[int, int],
    batch_size: int,
    num_workers: int,
    info: DistInfo,
) -> DataLoader:
    """Evaluation loader: plain resize to the model input, original order, sharded by rank."""
    transform = build_transforms("none", tuple(image_size), train=False)
    wrapped = SeededTransformDataset(dataset, transform)
    sampler = ResumableBatchSampler(
        len(wrapped),
        batch_size,
        shuffle=False,
        drop_last=False,
        rank=info.rank,
        world_size=info.world_size,
    )
    return DataLoader(
        wrapped, batch_sampler=sampler, collate_fn=collate_detection, num_workers=num_workers
    )
