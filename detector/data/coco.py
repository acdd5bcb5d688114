"""COCO instances JSON (the official files or any custom file in the same format).

Category ids need not be contiguous: categories sorted by id get labels ``1..C`` and
:attr:`CocoDetection.label_to_category_id` maps back for results files. Crowd annotations
(``iscrowd=1``) are kept for evaluation (``ignore``) but never trained on.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from detector import fastjson
from detector.data.base import (
    DatasetError,
    DetectionDataset,
    ImageEntry,
    image_size_from_header,
    make_entry,
    missing_images_error,
)
from detector.data.registry import DatasetConfig, DatasetKind, register_dataset

__all__ = ["CocoDatasetConfig", "CocoDetection", "load_coco_json", "read_coco", "write_coco_json"]


def _require(cond: bool, path: Path, message: str) -> None:
    if not cond:
        raise DatasetError(f"{path}: {message}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def load_coco_json(path: str | Path) -> dict[str, Any]:
    """Read and check the structure of a COCO instances file.

    Checks the top-level lists, the fields every reader needs (``images[].id/file_name``,
    ``annotations[].image_id/category_id/bbox``, ``categories[].id/name``), duplicate ids and
    annotations that refer to unknown images or categories.

    Raises:
        DatasetError: the file is missing, is not valid JSON, or fails a check; the message names
            the file and the offending entry.
    """
    path = Path(path)
    try:
        data = fastjson.load_file(path)
    except FileNotFoundError:
        raise DatasetError(f"{path}: annotation file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from None
    _require(isinstance(data, dict), path, "top level is not a JSON object")
    for key in ("images", "annotations", "categories"):
        _require(isinstance(data.get(key), list), path, f"missing or non-list {key!r}")
    image_ids: set[Any] = set()
    for k, img in enumerate(data["images"]):
        _require(
            isinstance(img, dict) and "id" in img and "file_name" in img,
            path,
            f"images[{k}] needs 'id' and 'file_name'",
        )
        _require(img["id"] not in image_ids, path, f"images[{k}]: duplicate image id {img['id']!r}")
        image_ids.add(img["id"])
    cat_ids: set[Any] = set()
    for k, cat in enumerate(data["categories"]):
        _require(
            isinstance(cat, dict) and "id" in cat and "name" in cat,
            path,
            f"categories[{k}] needs 'id' and 'name'",
        )
        _require(
            cat["id"] not in cat_ids, path, f"categories[{k}]: duplicate category id {cat['id']!r}"
        )
        cat_ids.add(cat["id"])
    for k, ann in enumerate(data["annotations"]):
        _require(isinstance(ann, dict), path, f"annotations[{k}] is not an object")
        for key in ("image_id", "category_id", "bbox"):
            _require(key in ann, path, f"annotations[{k}] has no {key!r}")
        bbox = ann["bbox"]
        _require(
            isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox),
            path,
            f"annotations[{k}] (id {ann.get('id')}): bbox {bbox!r} is not 4 numbers [x, y, w, h]",
        )
        _require(
            ann["image_id"] in image_ids,
            path,
            f"annotations[{k}] (id {ann.get('id')}) points at image_id {ann['image_id']!r}, which is not in 'images'",
        )
    return data


def write_coco_json(path: str | Path, data: dict[str, Any]) -> None:
    """Write a COCO dict compactly (UTF-8)."""
    Path(path).write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")


class CocoDetection(DetectionDataset):
    """COCO-format detection dataset read with ``pycocotools``.

    Args:
        ann_file: instances JSON.
        image_dir: folder the ``file_name`` entries are relative to; default: ``images/`` next to
            the JSON if it exists, else the JSON's folder.
        drop_empty: leave out images without any trainable box (no annotation, or only crowd or
            skipped ones). Default keeps them (SSD learns background from them).
        skip_unknown_categories: drop (and count) annotations whose category id is not in
            ``categories`` instead of raising.
        check_files: check that every image file exists (one ``stat`` per image).
        strict: raise on every repaired or skipped problem.

    Attributes:
        ann_file: the JSON path (for the COCO evaluator).
        coco: the ``pycocotools.coco.COCO`` index.
        label_to_category_id: contiguous label -> original category id.
        category_id_to_label: the inverse.

    Raises:
        DatasetError: unreadable or malformed JSON, unknown categories, missing images, no images
            or no categories.
    """

    def __init__(
        self,
        ann_file: str | Path,
        image_dir: str | Path | None = None,
        *,
        drop_empty: bool = False,
        skip_unknown_categories: bool = False,
        check_files: bool = True,
        strict: bool = False,
    ) -> None:
        from pycocotools.coco import COCO

        self.ann_file = Path(ann_file)
        if image_dir is None:
            image_dir = self.ann_file.parent / "images"
            if not image_dir.is_dir():
                image_dir = self.ann_file.parent
        self.image_dir = Path(image_dir)
        self._init_issues(f"COCO {self.ann_file.name}", strict)

        data = load_coco_json(self.ann_file)
        coco = COCO()
        coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        self.coco = coco

        cats = sorted(data["categories"], key=lambda c: c["id"])
        self.label_to_category_id = {i + 1: int(c["id"]) for i, c in enumerate(cats)}
        self.category_id_to_label = {cid: label for label, cid in self.label_to_category_id.items()}
        classes = [str(c["name"]) for c in cats]

        by_image: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        for k, ann in enumerate(data["annotations"]):
            if ann["category_id"] not in self.category_id_to_label:
                message = (
                    f"{self.ann_file}: annotations[{k}] (id {ann.get('id')}) has category_id "
                    f"{ann['category_id']!r}, which is not in 'categories'"
                )
                if not skip_unknown_categories:
                    raise DatasetError(message)
                self.issues.add("annotation skipped: unknown category", message)
                continue
            by_image[ann["image_id"]].append(ann)

        entries: list[ImageEntry] = []
        missing: list[tuple[Path, str]] = []
        for img in data["images"]:
            path = self.image_dir / str(img["file_name"])
            if check_files and not path.is_file():
                missing.append((path, f"{self.ann_file} image id {img['id']}"))
                continue
            anns = by_image.get(img["id"], [])
            boxes = [
                (
                    a["bbox"][0],
                    a["bbox"][1],
                    a["bbox"][0] + a["bbox"][2],
                    a["bbox"][1] + a["bbox"][3],
                )
                for a in anns
            ]
            labels = [self.category_id_to_label[a["category_id"]] for a in anns]
            ignore = [bool(a.get("iscrowd", 0)) or bool(a.get("ignore", 0)) for a in anns]
            width, height = int(img.get("width") or 0), int(img.get("height") or 0)
            if (width <= 0 or height <= 0) and path.is_file():
                width, height = image_size_from_header(path)
            entry = make_entry(
                path,
                img["id"],
                width,
                height,
                boxes,
                labels,
                ignore,
                source=f"{self.ann_file} image {img['id']} ({img['file_name']})",
                issues=self.issues,
                file_name=str(img["file_name"]),
            )
            if drop_empty and not entry.train.any():
                continue
            entries.append(entry)
        if missing:
            raise missing_images_error(self.name, missing)
        self._finish(entries, classes)

    def category_ids(self, labels: Sequence[int]) -> list[int]:
        """Map contiguous labels back to the file's category ids."""
        return [self.label_to_category_id[int(label)] for label in labels]


# ------------------------------------------------------------------------- registry entry
@dataclass
class CocoDatasetConfig(DatasetConfig):
    """``dataset=coco``: COCO instances JSON files and their image folders.

    Attributes:
        train_ann_file, val_ann_file: the annotation files of the two splits.
        train_images, val_images: their image folders.
        drop_empty: leave training images without annotations out (validation keeps them).
        ann_file: ``eval.py detections=...``: the file a results file is scored against
            (default: ``val_ann_file``).
    """

    kind: str = "coco"
    train_ann_file: Optional[str] = None
    val_ann_file: Optional[str] = None
    train_images: Optional[str] = None
    val_images: Optional[str] = None
    drop_empty: bool = True
    ann_file: Optional[str] = None
    eval: str = "coco"


def read_coco(
    split: str,
    *,
    root: str | Path | None = None,
    ann_file: str | Path | None = None,
    image_dir: str | Path | None = None,
    year: int | str = 2017,
    **options: Any,
) -> CocoDetection:
    """``ann_file`` (+ ``image_dir``), or ``root`` in the COCO layout
    (``root/annotations/instances_{split}{year}.json``, images in ``root/{split}{year}``); other
    options as :class:`CocoDetection`."""
    if ann_file is None:
        if root is None:
            raise DatasetError("coco dataset needs ann_file=... or root=... (COCO layout)")
        root = Path(root)
        ann_file = root / "annotations" / f"instances_{split}{year}.json"
        if image_dir is None:
            image_dir = root / f"{split}{year}"
    return CocoDetection(ann_file, image_dir, **options)


def _coco_options(config: CocoDatasetConfig, split: str) -> tuple[str, dict[str, Any]]:
    if config.classes is not None:
        raise DatasetError(
            "dataset.classes is not supported by dataset.kind=coco (its classes come from the data)"
        )
    train = split == "train"
    return split, {
        "ann_file": config.train_ann_file if train else config.val_ann_file,
        "image_dir": config.train_images if train else config.val_images,
        "drop_empty": config.drop_empty and train,
    }


register_dataset(DatasetKind("coco", CocoDatasetConfig, read_coco, _coco_options))
