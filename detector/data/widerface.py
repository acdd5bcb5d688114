"""WIDER FACE: ``wider_face_{train,val}_bbx_gt.txt`` plus the ``WIDER_{split}/images`` tree.

Each record of the ground-truth file is an image path, a face count and one line per face with
``x y w h blur expression illumination invalid occlusion pose`` (an image with no face still has
one line of zeros). Faces flagged ``invalid``, faces smaller than ``min_face_size`` and faces
blurrier than ``max_blur`` are kept for evaluation as ``ignore`` and left out of training; how many
of each is in :attr:`WiderFace.num_filtered`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from detector.data.base import (
    DatasetError,
    DataWarning,
    DetectionDataset,
    ImageEntry,
    IssueLog,
    check_boxes,
    image_size_from_header,
    make_entry,
    missing_images_error,
)
from detector.data.registry import DatasetConfig, DatasetKind, register_dataset

__all__ = ["WiderFace", "parse_wider_gt"]


def parse_wider_gt(path: str | Path) -> list[tuple[str, np.ndarray]]:
    """Parse a WIDER FACE ground-truth file.

    Returns:
        ``(relative image path, float64 [N, 10] rows)`` per image; rows are ``x y w h blur
        expression illumination invalid occlusion pose``.

    Raises:
        DatasetError: missing file, or a count or face line that does not parse (with the line
            number).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: WIDER FACE ground-truth file not found")
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[tuple[str, np.ndarray]] = []
    i = 0
    while i < len(lines):
        name = lines[i].strip()
        if not name:
            i += 1
            continue
        if i + 1 >= len(lines):
            raise DatasetError(f"{path}:{i + 2}: missing face count after {name!r}")
        try:
            count = int(lines[i + 1].strip())
        except ValueError:
            raise DatasetError(
                f"{path}:{i + 2}: face count {lines[i + 1].strip()!r} is not an integer"
            ) from None
        if count < 0:
            raise DatasetError(f"{path}:{i + 2}: negative face count {count}")
        n_lines = max(count, 1)
        rows = []
        for j in range(i + 2, i + 2 + n_lines):
            if j >= len(lines):
                raise DatasetError(f"{path}:{j + 1}: file ends inside the faces of {name!r}")
            parts = lines[j].split()
            try:
                values = [float(v) for v in parts]
            except ValueError:
                raise DatasetError(
                    f"{path}:{j + 1}: face line {lines[j]!r} is not numeric"
                ) from None
            if len(values) < 4:
                raise DatasetError(
                    f"{path}:{j + 1}: face line needs at least x y w h, got {lines[j]!r}"
                )
            rows.append((values + [0.0] * 10)[:10])
        faces = np.asarray(rows[:count], dtype=np.float64).reshape(-1, 10)
        out.append((name, faces))
        i += 2 + n_lines
    return out


class WiderFace(DetectionDataset):
    """WIDER FACE (one class, ``"face"``).

    Args:
        root: folder with ``wider_face_split/`` and ``WIDER_{split}/images/``.
        split: ``"train"`` or ``"val"`` (the test split has no public ground truth).
        ann_file: ground-truth file; default ``root/wider_face_split/wider_face_{split}_bbx_gt.txt``
            (or the same name directly in ``root``).
        image_dir: image tree; default ``root/WIDER_{split}/images``.
        min_face_size: faces whose shorter side is below this many pixels are ``ignore``.
        max_blur: faces whose blur flag (0 clear, 1 normal, 2 heavy) is above this are
            ``ignore`` (2 keeps all).
        keep_invalid: also train on faces flagged invalid that pass the size and blur filters
            (they stay ``ignore`` for evaluation).
        eval_gt_dir: the official ``eval_tools`` ground-truth folder (``wider_face_val.mat`` and
            the easy / medium / hard files); only stored, for the WIDER FACE evaluator.
        strict: raise on every repaired or skipped problem.
        check_files: check that every image exists and read its size; ``False`` reads the ground
            truth from the annotation file alone (sizes unknown, boxes not clipped), which is all
            scoring a results file needs.

    Attributes:
        num_filtered: faces made ``ignore`` per reason (``invalid``, ``small``, ``blur``; a face
            can have several), counted over the annotation file.

    Raises:
        DatasetError: missing or malformed ground truth, missing images, zero images.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        ann_file: str | Path | None = None,
        image_dir: str | Path | None = None,
        min_face_size: float = 0.0,
        keep_invalid: bool = False,
        max_blur: int = 2,
        eval_gt_dir: str | Path | None = None,
        strict: bool = False,
        check_files: bool = True,
    ) -> None:
        root = Path(root)
        if split not in {"train", "val"} and ann_file is None:
            raise DatasetError(f"WIDER FACE split {split!r} has no ground truth (use train or val)")
        if ann_file is None:
            name = f"wider_face_{split}_bbx_gt.txt"
            ann_file = root / "wider_face_split" / name
            if not ann_file.is_file() and (root / name).is_file():
                ann_file = root / name
        self.ann_file = Path(ann_file)
        self.image_dir = (
            Path(image_dir) if image_dir is not None else root / f"WIDER_{split}" / "images"
        )
        self.min_face_size = float(min_face_size)
        self.max_blur = int(max_blur)
        self.eval_gt_dir = Path(eval_gt_dir) if eval_gt_dir is not None else None
        self.num_filtered = {"invalid": 0, "small": 0, "blur": 0}
        self._init_issues(f"WIDER FACE {split}", strict)

        records = parse_wider_gt(self.ann_file)
        entries: list[ImageEntry] = []
        missing: list[tuple[Path, str]] = []
        for rel, faces in records:
            path = self.image_dir / rel
            if check_files and not path.is_file():
                missing.append((path, str(self.ann_file)))
                continue
            width, height = image_size_from_header(path) if path.is_file() else (0, 0)
            boxes = np.concatenate([faces[:, :2], faces[:, :2] + faces[:, 2:4]], axis=1)
            invalid = faces[:, 7] != 0
            small = np.minimum(faces[:, 2], faces[:, 3]) < self.min_face_size
            blurred = faces[:, 4] > self.max_blur
            for reason, mask in (("invalid", invalid), ("small", small), ("blur", blurred)):
                self.num_filtered[reason] += int(mask.sum())
            entry = make_entry(
                path,
                rel,
                width,
                height,
                boxes,
                np.ones(len(faces), dtype=np.int64),
                invalid | small | blurred,
                source=f"{self.ann_file} ({rel})",
                issues=self.issues,
                file_name=rel,
            )
            if keep_invalid:
                eb = entry.boxes
                big = np.minimum(eb[:, 2] - eb[:, 0], eb[:, 3] - eb[:, 1]) >= self.min_face_size
                if blurred.any():  # the rows make_entry kept, to align the blur flags
                    _, kept = check_boxes(boxes, width, height, source="", issues=IssueLog(""))
                    big &= ~blurred[kept]
                entry.train = entry.train | (entry.ignore & big)
            entries.append(entry)
        if missing:
            raise missing_images_error(self.name, missing)
        self._finish(entries, ["face"])
        total = sum(len(r[1]) for r in records)
        if any(self.num_filtered.values()):
            # On purpose, not a data problem (strict mode does not fail on it), but said once
            # with the counts so nobody wonders where faces went.
            parts = ", ".join(
                f"{n} {label}"
                for label, n in (
                    ("flagged invalid", self.num_filtered["invalid"]),
                    (f"smaller than {self.min_face_size:g} px", self.num_filtered["small"]),
                    (f"blur above {self.max_blur}", self.num_filtered["blur"]),
                )
                if n
            )
            warnings.warn(
                f"{self.name}: faces ignored (no loss, not counted in evaluation) as set by "
                f"min_face_size / max_blur: {parts}, of {total} faces in {self.ann_file}",
                DataWarning,
                stacklevel=2,
            )


# ------------------------------------------------------------------------- registry entry
@dataclass
class WiderFaceDatasetConfig(DatasetConfig):
    """``dataset=widerface``: WIDER FACE (``WIDER_train``, ``WIDER_val``, ``wider_face_split``).

    Attributes:
        min_face_size: faces with a shorter side below this (px) are ignored.
        max_blur: faces with a blur flag above this (0 clear, 1 normal, 2 heavy) are ignored.
        eval_gt_dir: the official eval_tools ``ground_truth/`` (``wider_face_val.mat``,
            ``wider_{easy,medium,hard}_val.mat``): ``eval=widerface`` then gives
            easy/medium/hard AP; None: plain AP over the val records.
    """

    kind: str = "widerface"
    min_face_size: float = 0.0
    max_blur: int = 2
    eval_gt_dir: Optional[str] = None
    eval: str = "widerface"


def read_widerface(split: str, *, root: str | Path, **options: Any) -> WiderFace:
    """``root`` (WIDER FACE layout); other options as :class:`WiderFace`."""
    return WiderFace(root, split, **options)


def _widerface_options(config: WiderFaceDatasetConfig, split: str) -> tuple[str, dict[str, Any]]:
    if config.classes is not None:
        raise DatasetError(
            "dataset.classes is not supported by dataset.kind=widerface (one class: face)"
        )
    return split, {
        "root": config.root,
        "min_face_size": config.min_face_size,
        "max_blur": config.max_blur,
        "eval_gt_dir": None if split == "train" else config.eval_gt_dir,
    }


register_dataset(
    DatasetKind("widerface", WiderFaceDatasetConfig, read_widerface, _widerface_options)
)
