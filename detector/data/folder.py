"""Custom datasets: a folder of images with one VOC XML file per image.

This is the layout written by labelImg and similar tools, e.g. the raccoon dataset::

    root/images/raccoon-1.jpg        root/annotations/raccoon-1.xml

Images and XML files may also share one folder. Each XML is matched to the image with the same
stem (any common image extension), falling back to the XML's ``<filename>``.

Class names come from ``classes``, a labels file (one name per line), or are discovered from all
XML files of the folder (sorted, so every split gets the same list). ``class_map`` renames or
merges the XML class names first, e.g. the three mask states of a face-mask dataset into one
``face`` class. The split comes from a list
file (plain text with one image name or stem per line, or a CSV with a ``filename`` column such
as the raccoon ``train_labels.csv``) or from a seeded random ratio.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional  # noqa: UP035 - OmegaConf reads typing generics

import numpy as np

from detector.data.base import (
    DatasetError,
    DetectionDataset,
    ImageEntry,
    image_size_from_header,
    make_entry,
)
from detector.data.registry import DatasetConfig, DatasetKind, register_dataset
from detector.data.voc import VocXml, parse_voc_xml, voc_entry

__all__ = [
    "IMAGE_EXTENSIONS",
    "FolderDetection",
    "ratio_split",
    "read_labels_file",
    "read_split_list",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def read_labels_file(path: str | Path) -> list[str]:
    """Class names from a text file: one name per line; blank lines and ``#`` comments ignored.

    Raises:
        DatasetError: missing file, no names, or duplicated names.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: labels file not found")
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line)
    if not names:
        raise DatasetError(f"{path}: labels file lists no class names")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DatasetError(f"{path}: labels file repeats class names {dupes}")
    if "background" in names[:1] or "__background__" in names[:1]:
        names = names[1:]
    return names


def read_split_list(path: str | Path) -> list[str]:
    """Image stems listed in a split file.

    Accepts a plain list (one file name or stem per line, first whitespace-separated field) or a
    CSV file with a ``filename`` (or ``file_name``/``image``) column; repeated names (a CSV row per
    box) are kept once, in first-seen order.

    Raises:
        DatasetError: missing file, a CSV without a file name column, or an empty list.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: split list not found")
    names: list[str] = []
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields = reader.fieldnames or []
            column = next(
                (c for c in ("filename", "file_name", "image", "image_id") if c in fields), None
            )
            if column is None:
                raise DatasetError(
                    f"{path}: CSV split list has no 'filename' column (columns: {fields})"
                )
            names = [row[column].strip() for row in reader if row.get(column)]
    else:
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.split()
            if parts and not parts[0].startswith("#"):
                names.append(parts[0])
    stems = list(
        dict.fromkeys(
            Path(n).stem if Path(n).suffix.lower() in IMAGE_EXTENSIONS else n for n in names
        )
    )
    if not stems:
        raise DatasetError(f"{path}: split list is empty")
    return stems


def ratio_split(
    stems: Sequence[str],
    split: str,
    *,
    val_fraction: float,
    test_fraction: float = 0.0,
    seed: int = 0,
) -> list[str]:
    """Deterministic random split of ``stems`` into ``train``/``val``/``test``.

    The stems are sorted, then shuffled with ``seed``; the first ``round(val_fraction * n)`` go to
    ``val``, the next ``round(test_fraction * n)`` to ``test`` and the rest to ``train``. The result
    does not depend on file system order. ``split="all"`` returns everything.

    Raises:
        DatasetError: an unknown split name or fractions outside ``[0, 1)``.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DatasetError(
            f"split fractions must be in [0, 1) (val={val_fraction}, test={test_fraction})"
        )
    ordered = sorted(stems)
    if split == "all":
        return ordered
    order = np.random.default_rng(seed).permutation(len(ordered))
    n_val = round(val_fraction * len(ordered))
    n_test = round(test_fraction * len(ordered))
    parts = {
        "val": order[:n_val],
        "test": order[n_val : n_val + n_test],
        "train": order[n_val + n_test :],
    }
    if split not in parts:
        raise DatasetError(
            f"unknown split {split!r} for a ratio split (use train, val, test or all)"
        )
    return [ordered[i] for i in sorted(parts[split])]


def _pick_dir(root: Path, candidates: Sequence[str]) -> Path:
    for name in candidates:
        if (root / name).is_dir():
            return root / name
    return root


class FolderDetection(DetectionDataset):
    """A folder of images with one VOC XML annotation per image.

    Args:
        root: dataset folder.
        split: ``"all"``, or a split name (``train``/``val``/``test``) for the ratio split, or just a
            name when ``split_file`` is given.
        image_dir: image folder; default ``root/images`` (or ``JPEGImages``) if present, else root.
        ann_dir: XML folder; default ``root/annotations`` (or ``Annotations``, ``xml``) if present,
            else the image folder.
        classes: class names in label order.
        labels_file: text file with class names (used when ``classes`` is not given).
        split_file: list of the split's images (text or CSV, see :func:`read_split_list`).
        val_fraction: fraction of images in ``val`` for the ratio split.
        test_fraction: fraction in ``test`` for the ratio split.
        seed: seed of the ratio split.
        class_map: rename/merge XML class names before they are looked up, ``{xml name: class}``;
            several names may map to one class. Names not in the map are used as they are. A key
            that no XML file uses, or (with ``classes``/``labels_file``) a value that is not one of
            the classes, is an error.
        include_unannotated: also use images that have no XML file (as images without objects,
            i.e. background negatives). Either way they are counted: ``num_unannotated`` images
            were found without XML, ``num_unannotated_used`` of them were kept.
        keep_difficult: also train on objects marked difficult.
        skip_unknown_classes: drop (and count) objects whose class is not in ``classes`` instead of
            raising.
        strict: raise on every repaired or skipped problem.

    Raises:
        DatasetError: no XML files, unparseable XML, unknown class, an XML without image, a split
            list naming images that do not exist, zero images or no class.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "all",
        *,
        image_dir: str | Path | None = None,
        ann_dir: str | Path | None = None,
        classes: Sequence[str] | None = None,
        labels_file: str | Path | None = None,
        class_map: Mapping[str, str] | None = None,
        split_file: str | Path | None = None,
        val_fraction: float = 0.2,
        test_fraction: float = 0.0,
        seed: int = 0,
        include_unannotated: bool = False,
        keep_difficult: bool = False,
        skip_unknown_classes: bool = False,
        strict: bool = False,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"{root}: dataset folder not found")
        self.root = root
        self.split = split
        self._init_issues(f"folder {root.name} [{split}]", strict)
        img_dir = (
            Path(image_dir) if image_dir is not None else _pick_dir(root, ("images", "JPEGImages"))
        )
        xml_dir = (
            Path(ann_dir)
            if ann_dir is not None
            else _pick_dir(root, ("annotations", "Annotations", "xml"))
        )
        if not img_dir.is_dir():
            raise DatasetError(f"{img_dir}: image folder not found")
        if not xml_dir.is_dir():
            raise DatasetError(f"{xml_dir}: annotation folder not found")
        self.image_dir, self.ann_dir = img_dir, xml_dir

        images = {
            p.stem: p for p in sorted(img_dir.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS
        }
        xml_files = sorted(xml_dir.glob("*.xml"))
        if not xml_files and not (include_unannotated and images):
            raise DatasetError(f"{xml_dir}: no .xml annotation files found")
        parsed: dict[str, VocXml] = {}
        image_of: dict[str, Path] = {}
        missing: list[str] = []
        for xml_path in xml_files:
            ann = parse_voc_xml(xml_path)
            stem = xml_path.stem
            image_path = images.get(stem)
            if image_path is None and ann.filename:
                candidate = img_dir / ann.filename
                image_path = candidate if candidate.is_file() else None
            if image_path is None:
                missing.append(f"{xml_path} (no image {stem}.* or {ann.filename!r} in {img_dir})")
                continue
            parsed[stem] = ann
            image_of[stem] = image_path
        if missing:
            listed = "\n  ".join(missing[:10])
            raise DatasetError(
                f"{self.name}: {len(missing)} annotation(s) point at missing images:\n  {listed}"
            )
        unannotated = [stem for stem in images if stem not in parsed]
        self.num_unannotated = len(unannotated)
        if include_unannotated:
            for stem in unannotated:
                image_of[stem] = images[stem]
        elif unannotated:
            for stem in unannotated:
                self.issues.add(
                    "image left out: no XML (dataset.include_unannotated=true keeps it as a "
                    "negative)",
                    f"{images[stem]} has no {stem}.xml in {xml_dir}",
                )

        raw_names = {obj.name for ann in parsed.values() for obj in ann.objects}
        class_map = dict(class_map or {})
        unused = sorted(set(class_map) - raw_names)
        if unused:
            raise DatasetError(
                f"{xml_dir}: class_map names class(es) {unused} that no XML file uses "
                f"(names in the XML files: {sorted(raw_names)})"
            )
        if classes is None and labels_file is not None:
            classes = read_labels_file(labels_file)
        if classes is None:
            classes = sorted({class_map.get(name, name) for name in raw_names})
            if not classes:
                raise DatasetError(f"{self.name}: no class names found in {len(parsed)} XML files")
        classes = list(classes)
        class_to_label = {name: i + 1 for i, name in enumerate(classes)}
        bad_targets = sorted({t for t in class_map.values() if t not in class_to_label})
        if bad_targets:
            raise DatasetError(
                f"{self.name}: class_map maps to unknown class(es) {bad_targets} "
                f"(classes: {classes})"
            )
        for raw, target in class_map.items():
            class_to_label[raw] = class_to_label[target]

        if split_file is not None:
            wanted = read_split_list(split_file)
            unknown = [s for s in wanted if s not in image_of]
            if unknown:
                raise DatasetError(
                    f"{split_file}: {len(unknown)} listed image(s) have no annotated image in "
                    f"{img_dir}: {unknown[:10]}"
                )
        else:
            wanted = ratio_split(
                list(image_of),
                split,
                val_fraction=val_fraction,
                test_fraction=test_fraction,
                seed=seed,
            )

        self.num_unannotated_used = sum(stem not in parsed for stem in wanted)
        entries: list[ImageEntry] = []
        for stem in wanted:
            if stem in parsed:
                entries.append(
                    voc_entry(
                        parsed[stem],
                        image_of[stem],
                        stem,
                        class_to_label,
                        dataset=self,
                        keep_difficult=keep_difficult,
                        skip_unknown=skip_unknown_classes,
                    )
                )
            else:
                w, h = image_size_from_header(image_of[stem])
                entries.append(
                    make_entry(
                        image_of[stem],
                        stem,
                        w,
                        h,
                        [],
                        [],
                        [],
                        source=str(image_of[stem]),
                        issues=self.issues,
                    )
                )
        self._finish(entries, classes)
        #: images without any object (background negatives: empty XML or no XML), kept and counted
        self.num_negatives = sum(len(e.boxes) == 0 for e in entries)


# ------------------------------------------------------------------------- registry entry
@dataclass
class FolderDatasetConfig(DatasetConfig):
    """``dataset=folder``: a folder of images with one VOC XML file per image.

    Attributes:
        labels_file: one class name per line; None: the classes found in the XML files.
        train_list, val_list: files listing each split's images; None: a seeded split of all
            images, ``val_fraction`` of them for validation.
        val_fraction: share of the images held out for validation (seeded by ``seed``).
        seed: seed of that split.
        class_map: renames or merges the XML class names, e.g.
            ``{with_mask: face, without_mask: face}``.
        include_unannotated: images without an XML file are kept as negatives (else left out and
            counted).
    """

    kind: str = "folder"
    labels_file: Optional[str] = None
    train_list: Optional[str] = None
    val_list: Optional[str] = None
    val_fraction: float = 0.1
    seed: int = 0
    class_map: Optional[Dict[str, str]] = None
    include_unannotated: bool = False
    eval: str = "voc"


def read_folder(
    split: str,
    *,
    root: str | Path,
    split_files: Mapping[str, str | Path] | None = None,
    **options: Any,
) -> FolderDetection:
    """``root`` plus options of :class:`FolderDetection`; also
    ``split_files={"train": ..., "val": ...}``."""
    if split_files is not None and "split_file" not in options:
        if split not in split_files:
            raise DatasetError(
                f"folder dataset: no split file for split {split!r} (have {sorted(split_files)})"
            )
        options["split_file"] = split_files[split]
    return FolderDetection(root, split, **options)


def _folder_options(config: FolderDatasetConfig, split: str) -> tuple[str, dict[str, Any]]:
    options: dict[str, Any] = {
        "root": config.root,
        "labels_file": config.labels_file,
        "val_fraction": config.val_fraction,
        "seed": config.seed,
        "class_map": config.class_map,
        "include_unannotated": config.include_unannotated,
    }
    if config.classes is not None:
        options["classes"] = list(config.classes)
    split_file = config.train_list if split == "train" else config.val_list
    if split_file is not None:
        options["split_file"] = split_file
    return split, options


register_dataset(DatasetKind("folder", FolderDatasetConfig, read_folder, _folder_options))
