"""Helpers shared by the ``test_data_*`` modules: tiny datasets written into ``tmp_path``.

(Named ``test_*`` so it sits with the data tests; it defines no tests itself.)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from detector.data import write_voc_xml


def write_image(path: Path, width: int, height: int, seed: int = 0) -> Path:
    """Write a small random JPEG (or PNG, by suffix) of ``width x height``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)
    return path


def write_coco(
    root: Path,
    images: Sequence[dict[str, Any]],
    annotations: Sequence[dict[str, Any]],
    categories: Sequence[dict[str, Any]],
    *,
    make_files: bool = True,
    name: str = "annotations.json",
) -> Path:
    """Write a COCO JSON under ``root`` (images in ``root/images``) and return its path."""
    root.mkdir(parents=True, exist_ok=True)
    if make_files:
        for k, img in enumerate(images):
            write_image(root / "images" / img["file_name"], img["width"], img["height"], seed=k)
    ann_file = root / name
    data = {
        "images": list(images),
        "annotations": list(annotations),
        "categories": list(categories),
    }
    ann_file.write_text(json.dumps(data))
    return ann_file


def coco_ann(ann_id: int, image_id: int, cat: int, xywh: Sequence[float], crowd: int = 0) -> dict:
    """One COCO annotation dict."""
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": cat,
        "bbox": list(xywh),
        "area": float(xywh[2] * xywh[3]),
        "iscrowd": crowd,
    }


def write_voc_image(
    image_dir: Path,
    xml_dir: Path,
    stem: str,
    size: tuple[int, int],
    objects: Sequence[tuple[str, Sequence[float], bool]],
    *,
    seed: int = 0,
    ext: str = ".jpg",
) -> None:
    """Write ``stem.jpg`` and ``stem.xml`` (objects: ``(name, xyxy 0-based, difficult)``)."""
    w, h = size
    write_image(image_dir / f"{stem}{ext}", w, h, seed=seed)
    xml_dir.mkdir(parents=True, exist_ok=True)
    write_voc_xml(
        xml_dir / f"{stem}.xml",
        f"{stem}{ext}",
        w,
        h,
        np.array([o[1] for o in objects], dtype=np.float64).reshape(-1, 4),
        [o[0] for o in objects],
        difficult=[o[2] for o in objects],
    )
