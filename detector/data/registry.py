"""The dataset-kind registry: one entry per reader module, written next to the reader.

A dataset kind is three things, all declared in the reader's own module and registered there with
:func:`register_dataset`:

* a config dataclass deriving from :class:`DatasetConfig` (the Hydra schema of
  ``conf/dataset/<name>.yaml``, and what the library takes);
* ``reader(split, **options)``: the reader with plain keyword arguments (what
  :func:`build_dataset` calls);
* ``from_config(config, split)``: the keyword arguments of ``reader`` for ``"train"`` or
  ``"val"`` (the reader's own split name comes from the config, e.g. VOC's image-set names).

Adding a kind is one module (reader + config + entry) and one YAML file; nothing else changes.
Schema fields use ``Optional``/``List`` from ``typing``: OmegaConf reads those annotations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, List, Optional  # noqa: UP035 - OmegaConf reads typing generics

from detector.data.base import DatasetError, DetectionDataset

__all__ = [
    "DATASETS",
    "DatasetConfig",
    "DatasetKind",
    "build_dataset",
    "dataset_from_config",
    "dataset_kind",
    "register_dataset",
]


@dataclass
class DatasetConfig:
    """What every dataset kind has.

    Attributes:
        kind: a key of :data:`DATASETS`.
        root: dataset folder (synthetic: where it is generated and cached).
        classes: class names to train on, in label order (kinds whose reader takes them); None:
            the classes found in the data.
        eval: the evaluator: ``coco``, ``voc07``, ``voc`` or ``widerface``.
    """

    kind: str = "synthetic"
    root: Optional[str] = None
    classes: Optional[List[str]] = None
    eval: str = "coco"


@dataclass(frozen=True)
class DatasetKind:
    """A registry entry (see the module docstring)."""

    name: str
    config: type[DatasetConfig]
    reader: Callable[..., DetectionDataset]
    from_config: Callable[[Any, str], tuple[str, dict[str, Any]]]
    #: Work done once before the readers are built (rank 0 only), e.g. generating data.
    prepare: Callable[[Any], None] | None = None


#: kind name -> entry; filled by the reader modules when :mod:`detector.data` is imported.
DATASETS: dict[str, DatasetKind] = {}


def register_dataset(kind: DatasetKind) -> DatasetKind:
    """Add ``kind`` to :data:`DATASETS` (its config's ``kind`` default must be its name)."""
    default = {f.name: f.default for f in dataclasses.fields(kind.config)}.get("kind")
    if default != kind.name:
        raise ValueError(f"{kind.config.__name__}.kind must default to {kind.name!r}")
    DATASETS[kind.name] = kind
    return kind


def dataset_kind(name: str) -> DatasetKind:
    """The entry for ``name``; an unknown name lists the known ones."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset kind {name!r} (choose from {', '.join(DATASETS)})")
    return DATASETS[name]


def build_dataset(kind: str, split: str, **options: Any) -> DetectionDataset:
    """Build a dataset by kind name with the reader's own keyword arguments.

    Args:
        kind: a key of :data:`DATASETS` (``coco``, ``voc``, ``folder``, ``widerface``,
            ``synthetic``); each reader's docstring lists its options.
        split: the reader's split name (``train``, ``val``, ``trainval``, ``test``...).
        **options: the reader's keyword arguments.

    Raises:
        ValueError: unknown kind. Readers raise :class:`~detector.data.DatasetError`.
    """
    return dataset_kind(kind).reader(split, **options)


def dataset_from_config(
    config: DatasetConfig, split: str, *, reader_split: str | None = None, **options: Any
) -> DetectionDataset:
    """The ``"train"`` or ``"val"`` split described by a dataset config.

    Args:
        config: a kind's config (a bare :class:`DatasetConfig` gets its kind's defaults).
        split: ``"train"`` or ``"val"``.
        reader_split: the reader's split name instead of the config's (e.g. ``eval.py split=``).
        **options: more reader keyword arguments (e.g. ``check_files=False``).
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    entry = dataset_kind(config.kind)
    if type(config) is DatasetConfig:  # the bare base (e.g. TrainConfig()): the kind's defaults
        given = {k: v for k, v in dataclasses.asdict(config).items() if v is not None}
        config = entry.config(**given)
    if not isinstance(config, entry.config):
        raise DatasetError(
            f"dataset.kind={config.kind} needs a {entry.config.__name__}, "
            f"got {type(config).__name__}"
        )
    own_split, own_options = entry.from_config(config, split)
    return entry.reader(reader_split or own_split, **{**own_options, **options})
