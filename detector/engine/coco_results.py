"""COCO results files keyed by ``file_name`` (what ``detect.py`` writes) -> keyed by image id.

``detect.py`` without ``ann_file=`` numbers the images of a folder ``1, 2, 3, ...``; its rows also
carry the image's ``file_name`` (relative to the source folder). :func:`results_by_image_id`
rewrites such a file for a COCO annotation file: each row's ``image_id`` becomes the id of the
image with that ``file_name`` (exact path, else the unique base name). Files without
``file_name`` are used as they are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from detector import fastjson

__all__ = ["results_by_image_id"]


def results_by_image_id(
    results_json: str | Path, ann_file: str | Path, out_dir: str | Path
) -> Path:
    """The results file to score against ``ann_file``: ``results_json`` itself, or (rows with
    ``file_name``) a copy with the annotation file's image ids written to ``out_dir``.

    Raises:
        ValueError: a ``file_name`` that is not in ``ann_file`` (or is ambiguous there); one line
            naming the first ones and how many there are.
    """
    results_json = Path(results_json)
    try:
        rows = fastjson.load_file(results_json)
    except (OSError, ValueError):
        return results_json  # the results reader reports unreadable files with its own message
    if not isinstance(rows, list) or not any(
        isinstance(r, dict) and "file_name" in r for r in rows
    ):
        return results_json
    gt = fastjson.load_file(ann_file)
    by_name: dict[str, Any] = {}
    by_base: dict[str, list[Any]] = {}
    for img in gt.get("images", []):
        name = str(img.get("file_name", "")).replace("\\", "/")
        by_name[name] = img["id"]
        by_base.setdefault(Path(name).name, []).append(img["id"])
    unknown: list[str] = []
    n_unknown = 0
    out_rows = []
    for row in rows:
        if isinstance(row, dict) and "file_name" in row:
            name = str(row["file_name"]).replace("\\", "/")
            image_id = by_name.get(name)
            if image_id is None and len(by_base.get(Path(name).name, [])) == 1:
                image_id = by_base[Path(name).name][0]
            if image_id is None:
                n_unknown += 1
                if name not in unknown and len(unknown) < 5:
                    unknown.append(name)
                continue
            row = {**row, "image_id": image_id}
        out_rows.append(row)
    if n_unknown:
        raise ValueError(
            f"{results_json}: {n_unknown} detections have a file_name that is not (or not "
            f"uniquely) in {ann_file}, e.g. {unknown}"
        )
    out = Path(out_dir) / "detections_by_image_id.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(out_rows, separators=(",", ":")), encoding="utf-8")
    return out
