"""Pascal VOC: XML annotation files and the VOCdevkit layout (2007, 2012 and 07+12).

VOC XML coordinates are 1-based and inclusive (``xmin = 1`` is the first pixel column, ``xmax =
width`` the last), so a box is read as ``x1 = xmin - 1, x2 = xmax`` (and written back the same
way): integer pixel boxes round-trip exactly. Files written by 0-based tools then reach at most
one pixel outside the image, which is clipped silently.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List  # noqa: UP035 - OmegaConf reads typing generics

import numpy as np

from detector.data.base import (
    DatasetError,
    DetectionDataset,
    ImageEntry,
    image_size_from_header,
    make_entry,
    missing_images_error,
)
from detector.data.registry import DatasetConfig, DatasetKind, register_dataset

__all__ = [
    "VOC_CLASSES",
    "VOCDetection",
    "VocObject",
    "VocXml",
    "parse_voc_xml",
    "parse_years",
    "write_voc_xml",
]

#: The 20 Pascal VOC classes in the standard (alphabetical) order.
VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


@dataclass
class VocObject:
    """One ``<object>``: class name, pixel xyxy box (0-based, continuous) and flags."""

    name: str
    box: tuple[float, float, float, float]
    difficult: bool = False
    truncated: bool = False


@dataclass
class VocXml:
    """A parsed VOC XML file. ``width``/``height`` are 0 when the file has no usable size."""

    path: Path
    filename: str
    width: int
    height: int
    objects: list[VocObject] = field(default_factory=list)


def _text(node: ET.Element, tag: str) -> str | None:
    child = node.find(tag)
    if child is None or child.text is None:
        return None
    return child.text.strip()


def _flag(node: ET.Element, tag: str) -> bool:
    value = _text(node, tag)
    if not value:
        return False
    try:
        return float(value) != 0
    except ValueError:
        return value.lower() in {"true", "yes"}


def parse_voc_xml(path: str | Path) -> VocXml:
    """Parse one VOC XML annotation file.

    Args:
        path: the ``.xml`` file.

    Returns:
        The parsed annotation with boxes converted to 0-based continuous pixel xyxy.

    Raises:
        DatasetError: the file is missing, does not parse, is not a VOC annotation, or an object
            misses its name or a numeric box coordinate. The message names the file.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise DatasetError(f"{path}: annotation file not found") from None
    except ET.ParseError as exc:
        raise DatasetError(f"{path}: XML does not parse ({exc})") from None
    if root.tag != "annotation":
        raise DatasetError(f"{path}: not a VOC annotation (root element <{root.tag}>)")
    filename = _text(root, "filename") or ""
    try:
        width = int(float(_text(root, "size/width") or 0))
        height = int(float(_text(root, "size/height") or 0))
    except ValueError:
        raise DatasetError(f"{path}: <size> is not numeric") from None
    objects = []
    for k, obj in enumerate(root.findall("object")):
        name = _text(obj, "name")
        if not name:
            raise DatasetError(f"{path}: object {k} has no <name>")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise DatasetError(f"{path}: object {k} ({name}) has no <bndbox>")
        coords = []
        for tag in ("xmin", "ymin", "xmax", "ymax"):
            value = _text(bndbox, tag)
            try:
                coords.append(float(value))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise DatasetError(
                    f"{path}: object {k} ({name}) has a missing or non-numeric <{tag}>: {value!r}"
                ) from None
        xmin, ymin, xmax, ymax = coords
        objects.append(
            VocObject(
                name=name,
                box=(xmin - 1.0, ymin - 1.0, xmax, ymax),
                difficult=_flag(obj, "difficult"),
                truncated=_flag(obj, "truncated"),
            )
        )
    return VocXml(
        path=path, filename=filename, width=max(width, 0), height=max(height, 0), objects=objects
    )


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{float(v):.2f}"


def write_voc_xml(
    path: str | Path,
    filename: str,
    width: int,
    height: int,
    boxes: np.ndarray | Sequence[Sequence[float]],
    names: Sequence[str],
    *,
    difficult: Sequence[bool] | None = None,
    truncated: Sequence[bool] | None = None,
    folder: str = "images",
) -> None:
    """Write a VOC XML annotation file (the inverse of :func:`parse_voc_xml`).

    Args:
        path: output ``.xml`` file.
        filename: image file name stored in ``<filename>``.
        width: image width.
        height: image height.
        boxes: ``[N, 4]`` 0-based continuous pixel xyxy.
        names: ``N`` class names.
        difficult: optional ``N`` difficult flags.
        truncated: optional ``N`` truncated flags.
        folder: value of ``<folder>``.
    """
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = folder
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(int(width))
    ET.SubElement(size, "height").text = str(int(height))
    ET.SubElement(size, "depth").text = "3"
    ET.SubElement(root, "segmented").text = "0"
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    for i, (box, name) in enumerate(zip(boxes, names, strict=True)):
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = str(name)
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = str(int(bool(truncated[i]))) if truncated else "0"
        ET.SubElement(obj, "difficult").text = str(int(bool(difficult[i]))) if difficult else "0"
        bnd = ET.SubElement(obj, "bndbox")
        x1, y1, x2, y2 = (float(v) for v in box)
        ET.SubElement(bnd, "xmin").text = _fmt(x1 + 1.0)
        ET.SubElement(bnd, "ymin").text = _fmt(y1 + 1.0)
        ET.SubElement(bnd, "xmax").text = _fmt(x2)
        ET.SubElement(bnd, "ymax").text = _fmt(y2)
    ET.indent(root, space="\t")
    Path(path).write_bytes(ET.tostring(root, encoding="utf-8"))


def voc_entry(
    ann: VocXml,
    image_path: Path,
    image_id: str,
    class_to_label: dict[str, int],
    *,
    dataset: DetectionDataset,
    keep_difficult: bool,
    skip_unknown: bool,
) -> ImageEntry:
    """Turn a parsed XML into an :class:`ImageEntry` (shared by the VOC and folder readers).

    Raises:
        DatasetError: an object's class is not in ``class_to_label`` (unless ``skip_unknown``).
    """
    boxes, labels, ignore = [], [], []
    for k, obj in enumerate(ann.objects):
        label = class_to_label.get(obj.name)
        if label is None:
            message = (
                f"{ann.path}: object {k} has unknown class name {obj.name!r} "
                f"(known: {', '.join(class_to_label)})"
            )
            if not skip_unknown:
                raise DatasetError(message)
            dataset.issues.add("object skipped: unknown class", message)
            continue
        boxes.append(obj.box)
        labels.append(label)
        ignore.append(obj.difficult)
    width, height = ann.width, ann.height
    if (width <= 0 or height <= 0) and image_path.is_file():
        width, height = image_size_from_header(image_path)
    return make_entry(
        image_path,
        image_id,
        width,
        height,
        boxes,
        labels,
        ignore,
        source=str(ann.path),
        issues=dataset.issues,
        train_ignored=keep_difficult,
    )


def parse_years(years: str | int | Iterable[str | int]) -> list[str]:
    """Normalise VOC years: ``"2007"``, ``2012``, ``"07+12"``, ``"2007+2012"`` or a list."""
    if isinstance(years, (str, int)):
        parts = str(years).replace(",", "+").split("+")
    else:
        parts = [str(y) for y in years]
    out = []
    for part in parts:
        part = part.strip()
        if len(part) == 2 and part.isdigit():
            part = "20" + part
        if part not in {"2007", "2012"}:
            raise DatasetError(f"VOC year {part!r} is not supported (use 2007, 2012 or 2007+2012)")
        out.append(part)
    return out


class VOCDetection(DetectionDataset):
    """Pascal VOC in the VOCdevkit layout.

    ``root`` is the ``VOCdevkit`` folder holding ``VOC2007/`` and/or ``VOC2012/``, each with
    ``Annotations/``, ``JPEGImages/`` and ``ImageSets/Main/{split}.txt``. The classic training
    set is ``years="2007+2012", split="trainval"``; the test set is ``years="2007",
    split="test"``.

    Difficult objects are marked ``ignore`` in :meth:`records` (VOC evaluation neither rewards nor
    penalises them) and left out of training samples unless ``keep_difficult``.

    Args:
        root: the VOCdevkit folder (or a ``VOC2007`` folder itself when one year is asked for).
        split: image set name in ``ImageSets/Main`` (``train``, ``val``, ``trainval``, ``test``).
        years: ``"2007"``, ``"2012"``, ``"2007+2012"`` (``"07+12"``) or a list.
        classes: class names; defaults to the 20 VOC classes.
        keep_difficult: also train on difficult objects.
        skip_unknown_classes: drop objects whose class is not in ``classes`` (counted) instead of
            raising; useful to train on a subset of the classes.
        strict: raise on every repaired or skipped problem.
        check_files: check that every image file exists; ``False`` reads the ground truth from
            the XML files alone (scoring a results file needs no images).

    Raises:
        DatasetError: missing folders or image set, unreadable XML, unknown class, missing image.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "trainval",
        years: str | int | Iterable[str | int] = "2007",
        *,
        classes: Sequence[str] = VOC_CLASSES,
        keep_difficult: bool = False,
        skip_unknown_classes: bool = False,
        strict: bool = False,
        check_files: bool = True,
    ) -> None:
        root = Path(root)
        year_list = parse_years(years)
        self.root = root
        self.split = split
        self.years = year_list
        self._init_issues(f"VOC{'+'.join(year_list)} {split}", strict)
        class_to_label = {name: i + 1 for i, name in enumerate(classes)}
        entries: list[ImageEntry] = []
        missing: list[tuple[Path, str]] = []
        for year in year_list:
            year_dir = root / f"VOC{year}"
            if not year_dir.is_dir() and root.name == f"VOC{year}" and len(year_list) == 1:
                year_dir = root
            list_file = year_dir / "ImageSets" / "Main" / f"{split}.txt"
            if not list_file.is_file():
                raise DatasetError(
                    f"{list_file}: image set not found (expected the VOCdevkit layout "
                    f"{root}/VOC{year}/ImageSets/Main/{split}.txt)"
                )
            ids = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
            for stem in ids:
                xml_path = year_dir / "Annotations" / f"{stem}.xml"
                image_path = year_dir / "JPEGImages" / f"{stem}.jpg"
                if check_files and not image_path.is_file():
                    missing.append((image_path, str(list_file)))
                    continue
                ann = parse_voc_xml(xml_path)
                entries.append(
                    voc_entry(
                        ann,
                        image_path,
                        f"VOC{year}/{stem}",
                        class_to_label,
                        dataset=self,
                        keep_difficult=keep_difficult,
                        skip_unknown=skip_unknown_classes,
                    )
                )
        if missing:
            raise missing_images_error(self.name, missing)
        self._finish(entries, list(classes))


# ------------------------------------------------------------------------- registry entry
@dataclass
class VocDatasetConfig(DatasetConfig):
    """``dataset=voc0712``: Pascal VOC in the VOCdevkit layout.

    Attributes:
        train_years, train_split: years and image set of the training split (07+12 trainval).
        val_years, val_split: of the evaluation split (2007 test).
        keep_difficult: train on objects flagged difficult (evaluation always ignores them).
    """

    kind: str = "voc"
    train_years: List[str] = field(default_factory=lambda: ["2007", "2012"])
    train_split: str = "trainval"
    val_years: List[str] = field(default_factory=lambda: ["2007"])
    val_split: str = "test"
    keep_difficult: bool = False
    eval: str = "voc07"


def read_voc(split: str, *, root: str | Path, years: Any = "2007", **options: Any) -> VOCDetection:
    """``root`` (VOCdevkit) and ``years`` (``"2007"``, ``"2007+2012"``...); other options as
    :class:`VOCDetection`."""
    return VOCDetection(root, split, years, **options)


def _voc_options(config: VocDatasetConfig, split: str) -> tuple[str, dict[str, Any]]:
    train = split == "train"
    options: dict[str, Any] = {
        "root": config.root,
        "years": list(config.train_years if train else config.val_years),
        "keep_difficult": config.keep_difficult,
    }
    if config.classes is not None:
        options["classes"] = tuple(config.classes)
    return (config.train_split if train else config.val_split), options


register_dataset(DatasetKind("voc", VocDatasetConfig, read_voc, _voc_options))
