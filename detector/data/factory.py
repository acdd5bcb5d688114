"""``build_dataset(kind, split, **options)``: one entry point over all readers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from detector.data.base import DatasetError, DetectionDataset
from detector.data.coco import CocoDetection
from detector.data.folder import FolderDetection
from detector.data.synthetic import generate_synthetic, split_paths
from detector.data.voc import VOCDetection
from detector.data.widerface import WiderFace

__all__ = ["DATASET_KINDS", "build_dataset"]

DATASET_KINDS = ("coco", "voc", "folder", "widerface", "synthetic")


def _coco(
    split: str,
    *,
    root: str | Path | None = None,
    ann_file: str | Path | None = None,
    image_dir: str | Path | None = None,
    year: int | str = 2017,
    **options: Any,
) -> CocoDetection:
    if ann_file is None:
        if root is None:
            raise DatasetError("coco dataset needs ann_file=... or root=... (COCO layout)")
        root = Path(root)
        ann_file = root / "annotations" / f"instances_{split}{year}.json"
        if image_dir is None:
            image_dir = root / f"{split}{year}"
    return CocoDetection(ann_file, image_dir, **options)


def _voc(split: str, *, root: str | Path, years: Any = "2007", **options: Any) -> VOCDetection:
    return VOCDetection(root, split, years, **options)


def _folder(
    split: str,
    *,
    root: str | Path,
    split_files: Mapping[str, str | Path] | None = None,
    **options: Any,
) -> FolderDetection:
    if split_files is not None and "split_file" not in options:
        if split not in split_files:
            raise DatasetError(
                f"folder dataset: no split file for split {split!r} (have {sorted(split_files)})"
            )
        options["split_file"] = split_files[split]
    return FolderDetection(root, split, **options)


def _widerface(split: str, *, root: str | Path, **options: Any) -> WiderFace:
    return WiderFace(root, split, **options)


def _synthetic(
    split: str,
    *,
    root: str | Path,
    num_train: int | None = None,
    num_val: int | None = None,
    seed: int | None = None,
    generator: Mapping[str, Any] | None = None,
    reader: str = "coco",
    **options: Any,
) -> DetectionDataset:
    root = Path(root)
    params = (num_train, num_val, seed, generator)
    if any(v is not None for v in params) or not (root / "meta.json").is_file():
        info = generate_synthetic(
            root,
            num_train=2000 if num_train is None else num_train,
            num_val=200 if num_val is None else num_val,
            seed=0 if seed is None else seed,
            **dict(generator or {}),
        )
        root, classes = info["root"], info["classes"]
    else:  # only the folder given: read what is there, whatever its parameters
        meta = json.loads((root / "meta.json").read_text())
        classes = list(meta["params"]["config"]["classes"])
    ann_file, image_dir = split_paths(root, split)
    if reader == "coco":
        return CocoDetection(ann_file, image_dir, **options)
    if reader == "voc":
        return FolderDetection(
            root / split,
            "all",
            image_dir=image_dir,
            ann_dir=root / split / "xml",
            classes=classes,
            **options,
        )
    raise DatasetError(f"synthetic reader must be 'coco' or 'voc', got {reader!r}")


_BUILDERS = {
    "coco": _coco,
    "voc": _voc,
    "folder": _folder,
    "widerface": _widerface,
    "synthetic": _synthetic,
}


def build_dataset(kind: str, split: str, **options: Any) -> DetectionDataset:
    """Build a dataset by kind.

    Args:
        kind: one of :data:`DATASET_KINDS`:

            * ``coco``: ``ann_file`` (+ ``image_dir``), or ``root`` in the COCO layout
              (``root/annotations/instances_{split}{year}.json``, images in ``root/{split}{year}``);
              options of :class:`~detector.data.CocoDetection`.
            * ``voc``: ``root`` (VOCdevkit), ``years`` (``"2007"``, ``"2007+2012"``...); options of
              :class:`~detector.data.VOCDetection`.
            * ``folder``: ``root`` plus options of :class:`~detector.data.FolderDetection`; also
              ``split_files={"train": ..., "val": ...}``.
            * ``widerface``: ``root``; options of :class:`~detector.data.WiderFace`.
            * ``synthetic``: ``root``, ``num_train``, ``num_val``, ``seed``, ``generator`` (a dict of
              :class:`~detector.data.SyntheticConfig` overrides); generates (or reuses) the data and
              reads the split's COCO JSON (``reader="voc"`` reads the XML files instead). With
              only ``root``, an existing dataset there is read as is (else the defaults are
              generated).
        split: split name (``train``, ``val``, ``trainval``, ``test``...).
        **options: kind-specific options (above).

    Raises:
        ValueError: unknown kind. Readers raise :class:`~detector.data.DatasetError`.
    """
    if kind not in _BUILDERS:
        raise ValueError(f"unknown dataset kind {kind!r} (choose from {', '.join(DATASET_KINDS)})")
    return _BUILDERS[kind](split, **options)
