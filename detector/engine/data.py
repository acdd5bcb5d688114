"""From the dataset config to DataLoaders, with reproducible, resumable order and augmentation.

* :class:`ResumableBatchSampler`: the order of an epoch is ``randperm(n)`` seeded by
  ``(seed, epoch)``, sharded over ranks, and can start at any batch of the epoch (resume).
* :class:`~detector.data.SeededTransformDataset`: sample ``i`` of epoch ``e`` is augmented with a
  generator seeded by ``(seed, e, i)``, whatever worker process loads it, so augmentation does not
  depend on the number of workers or on where a run was interrupted.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..config import TrainConfig
from ..data import (
    SeededTransformDataset,
    build_transforms,
    collate_detection,
    dataset_from_config,
    dataset_kind,
)
from ..data.loader import mix_seeds
from .distributed import DistInfo, barrier

__all__ = [
    "ResumableBatchSampler",
    "build_datasets",
    "make_train_loader",
    "make_val_loader",
]


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
            g = torch.Generator().manual_seed(mix_seeds(self.seed, self.epoch))
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


def build_datasets(spec: TrainConfig, info: DistInfo) -> tuple[Dataset, Dataset | None]:
    """The raw training and validation datasets (a kind's ``prepare`` step, e.g. generating the
    synthetic data, runs once on rank 0 before any rank reads)."""
    entry = dataset_kind(spec.dataset.kind)
    if entry.prepare is not None:
        if info.is_main:
            entry.prepare(spec.dataset)
        barrier(info)
    train = dataset_from_config(spec.dataset, "train")
    val = dataset_from_config(spec.dataset, "val")
    if list(val.classes) != list(train.classes):
        raise ValueError(
            f"training and validation classes differ: {list(train.classes)} vs {list(val.classes)}"
        )
    return train, val


def make_train_loader(dataset: Dataset, spec: TrainConfig, info: DistInfo) -> DataLoader:
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
