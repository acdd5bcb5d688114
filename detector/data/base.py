"""The sample every dataset yields, image loading, box checks and the shared dataset base class.

Conventions:

* Images are RGB ``uint8`` arrays ``[H, W, 3]`` decoded with OpenCV. EXIF orientation is ignored
  (the stored pixel grid is used), as PIL-based loaders do, so that annotation sizes and the
  decoded image agree.
* Boxes are ``float32 [N, 4]`` pixel ``xyxy`` in continuous coordinates: a box covering pixel
  columns ``0..9`` is ``x1 = 0, x2 = 10``.
* Labels are ``int64 [N]`` in ``1..num_classes``; ``0`` is reserved for the background and never
  appears in a dataset. ``classes[label - 1]`` is the class name.

Problem policy (the same for every reader):

* Structural problems are errors raised while the dataset is built, before any training starts:
  annotation files that do not parse or miss fields, unknown class names, annotations pointing at
  images that do not exist, and datasets with no usable image or no class.
* Box problems users meet in real data (zero-area, inverted, non-finite or out-of-image boxes) are
  repaired (clipped) or skipped and counted; one :class:`DataWarning` summarises the counts with
  the first examples (file and problem) once the dataset is built. Boxes at most
  :data:`CLIP_TOLERANCE` pixels outside the image are clipped silently (1-based vs 0-based
  coordinate conventions).
* An image that cannot be decoded is only found when it is read. It is then skipped (the next
  readable image is returned instead) with a warning naming the file, so an epoch never stops
  half way. :meth:`DetectionDataset.verify` decodes everything up front.
* ``strict=True`` turns every repair or skip into a :class:`DatasetError`.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from torch.utils.data import Dataset

__all__ = [
    "CLIP_TOLERANCE",
    "DataWarning",
    "DatasetError",
    "DetectionDataset",
    "ImageEntry",
    "IssueLog",
    "Sample",
    "image_size_from_header",
    "load_image",
]

#: Boxes reaching at most this many pixels outside the image are clipped without a warning.
CLIP_TOLERANCE = 1.0

ImageId = int | str


class DatasetError(ValueError):
    """A dataset cannot be used as given; the message names the file and the problem."""


class DataWarning(UserWarning):
    """Problems that were repaired or skipped (summarised once per dataset)."""


@dataclass
class Sample:
    """One training or evaluation sample.

    Attributes:
        image: ``uint8 [H, W, 3]`` RGB.
        boxes: ``float32 [N, 4]`` pixel ``xyxy`` in ``image`` coordinates.
        labels: ``int64 [N]`` in ``1..len(classes)``.
        image_id: ``int`` for COCO-style datasets, ``str`` otherwise.
        classes: class names (no background); ``classes[label - 1]`` names a label.
        orig_size: ``(H, W)`` of the image as decoded from disk, kept through transforms so that
            predictions on a resized image can be mapped back.
        stands_in_for: the id of the unreadable image this sample was returned in place of
            (see :meth:`DetectionDataset.__getitem__`); ``None`` for the image asked for.
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    image_id: ImageId
    classes: tuple[str, ...] = ()
    orig_size: tuple[int, int] | None = None
    stands_in_for: ImageId | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if len(self.boxes) != len(self.labels):
            raise ValueError(
                f"Sample {self.image_id!r}: {len(self.boxes)} boxes but {len(self.labels)} labels"
            )
        if self.orig_size is None:
            self.orig_size = (int(self.image.shape[0]), int(self.image.shape[1]))

    def replace(self, **changes: Any) -> Sample:
        """Return a copy with some fields replaced (``dataclasses.replace``)."""
        return replace(self, **changes)


@dataclass
class ImageEntry:
    """Parsed ground truth of one image (what :meth:`DetectionDataset.records` returns).

    Attributes:
        path: image file.
        image_id: dataset-unique id.
        width: image width from the annotation (or the file header).
        height: image height.
        boxes: ``float32 [M, 4]`` pixel xyxy, already checked and clipped.
        labels: ``int64 [M]``.
        ignore: ``bool [M]``: crowd, difficult, invalid or too small; kept for evaluation.
        train: ``bool [M]``: boxes used for training (by default ``~ignore``).
        source: the annotation file, for messages.
    """

    path: Path
    image_id: ImageId
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    ignore: np.ndarray
    train: np.ndarray
    source: str = ""
    file_name: str = ""

    def __post_init__(self) -> None:
        if not self.file_name:
            self.file_name = self.path.name


class IssueLog:
    """Counts repaired or skipped problems and keeps the first examples of each kind.

    Args:
        name: dataset name used in the summary.
        strict: raise :class:`DatasetError` on the first problem instead of counting it.
        max_examples: examples kept per kind.
    """

    def __init__(self, name: str, *, strict: bool = False, max_examples: int = 3) -> None:
        self.name = name
        self.strict = strict
        self.max_examples = max_examples
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def add(self, kind: str, message: str) -> None:
        """Record one problem of ``kind`` (e.g. ``"box clipped"``) with a message naming the file.

        Raises:
            DatasetError: in strict mode.
        """
        if self.strict:
            raise DatasetError(f"{message} [{kind}; strict mode]")
        self.counts[kind] += 1
        examples = self.examples.setdefault(kind, [])
        if len(examples) < self.max_examples:
            examples.append(message)

    def __len__(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """Multi-line summary: one line per kind with its count and first examples."""
        lines = [f"{self.name}: {len(self)} annotation problem(s) repaired or skipped"]
        for kind, count in sorted(self.counts.items()):
            lines.append(f"  {kind}: {count}")
            lines.extend(f"    e.g. {example}" for example in self.examples[kind])
        return "\n".join(lines)

    def warn(self) -> None:
        """Emit the summary as one :class:`DataWarning` (nothing when there was no problem)."""
        if self.counts:
            warnings.warn(self.summary(), DataWarning, stacklevel=3)


def load_image(path: str | Path) -> np.ndarray:
    """Decode an image file to RGB ``uint8 [H, W, 3]``.

    Grey and 16-bit images are converted, an alpha channel is dropped, EXIF orientation is
    ignored.

    Raises:
        DatasetError: the file is missing, empty or not a decodable image.
    """
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file not found") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read image file ({exc})") from None
    if data.size == 0:
        raise DatasetError(f"{path}: image file is empty")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None or image.ndim != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise DatasetError(f"{path}: corrupt or unsupported image (could not be decoded)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def image_size_from_header(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image read from its header only (no decoding).

    Raises:
        DatasetError: missing or unreadable file.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as img:
            return int(img.size[0]), int(img.size[1])
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(f"{path}: corrupt or unsupported image ({exc})") from None


def _fmt_box(box: Sequence[float]) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in box) + "]"


def check_boxes(
    boxes: np.ndarray,
    width: float,
    height: float,
    *,
    source: str,
    issues: IssueLog,
) -> tuple[np.ndarray, np.ndarray]:
    """Check pixel xyxy boxes against an image of ``width x height``; clip or drop bad ones.

    Problems counted in ``issues`` (or raised in strict mode): non-finite coordinates, inverted
    boxes (``x2 < x1`` or ``y2 < y1``), zero-area boxes, boxes entirely outside the image (all
    skipped) and boxes reaching more than :data:`CLIP_TOLERANCE` pixels outside (clipped).

    Args:
        boxes: ``[N, 4]`` pixel xyxy.
        width: image width in pixels (``<= 0`` when unknown: only the shape checks run).
        height: image height in pixels.
        source: annotation file (and object) named in messages.
        issues: where problems are counted.

    Returns:
        ``(clipped_boxes [N, 4] float32, keep bool [N])``; dropped rows are left as they were.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(boxes).all(axis=1)
        inverted = finite & ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))
        zero = finite & ~inverted & ((boxes[:, 2] == boxes[:, 0]) | (boxes[:, 3] == boxes[:, 1]))
    keep = finite & ~inverted & ~zero
    out = boxes.copy()
    if width > 0 and height > 0:
        outside = keep & (
            (boxes[:, 2] <= 0)
            | (boxes[:, 3] <= 0)
            | (boxes[:, 0] >= width)
            | (boxes[:, 1] >= height)
        )
        keep &= ~outside
        out[:, 0::2] = np.clip(out[:, 0::2], 0.0, float(width))
        out[:, 1::2] = np.clip(out[:, 1::2], 0.0, float(height))
        overshoot = np.where(keep, np.abs(out - boxes).max(axis=1), 0.0)
        clipped = overshoot > CLIP_TOLERANCE
    else:
        outside = clipped = np.zeros(len(boxes), dtype=bool)
        overshoot = np.zeros(len(boxes))
    if not keep.all() or clipped.any():
        size = f"{width:g}x{height:g}"
        for i in np.flatnonzero(~keep | clipped):
            where = f"{source}: box {i} {_fmt_box(boxes[i])}"
            if not finite[i]:
                issues.add(
                    "box skipped: non-finite coordinate", f"{where} has a non-finite coordinate"
                )
            elif inverted[i]:
                issues.add("box skipped: inverted", f"{where} is inverted (x2 < x1 or y2 < y1)")
            elif zero[i]:
                issues.add("box skipped: zero area", f"{where} has zero width or height")
            elif outside[i]:
                issues.add(
                    "box skipped: outside the image", f"{where} lies outside the {size} image"
                )
            else:
                issues.add(
                    "box clipped: partly outside the image",
                    f"{where} reaches {overshoot[i]:g} px outside the {size} image",
                )
    return out.astype(np.float32), keep


_EMPTY_BOXES = np.zeros((0, 4), dtype=np.float32)
_EMPTY_LABELS = np.zeros((0,), dtype=np.int64)
_EMPTY_BOOL = np.zeros((0,), dtype=bool)


def make_entry(
    path: Path,
    image_id: ImageId,
    width: int,
    height: int,
    boxes: Sequence[Sequence[float]] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    ignore: Sequence[bool] | np.ndarray,
    *,
    source: str,
    issues: IssueLog,
    train_ignored: bool = False,
    file_name: str = "",
) -> ImageEntry:
    """Build an :class:`ImageEntry`, checking boxes with :func:`check_boxes`.

    Args:
        path: image file.
        image_id: id.
        width: image width (``<= 0`` when unknown).
        height: image height.
        boxes: raw ``[N, 4]`` pixel xyxy.
        labels: ``[N]`` contiguous labels.
        ignore: ``[N]`` crowd / difficult / invalid flags.
        source: annotation file for messages.
        issues: problem counter.
        train_ignored: also train on ignored boxes (e.g. VOC ``keep_difficult``).
        file_name: image name as the annotation gives it (default: the file's name).
    """
    boxes_arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels_arr = np.asarray(labels, dtype=np.int64).reshape(-1)
    ignore_arr = np.asarray(ignore, dtype=bool).reshape(-1)
    if len(boxes_arr):
        clipped, keep = check_boxes(boxes_arr, width, height, source=source, issues=issues)
        boxes_out, labels_out, ignore_out = clipped[keep], labels_arr[keep], ignore_arr[keep]
    else:
        boxes_out, labels_out, ignore_out = _EMPTY_BOXES, _EMPTY_LABELS, _EMPTY_BOOL
    train = np.ones_like(ignore_out) if train_ignored else ~ignore_out
    return ImageEntry(
        path=path,
        image_id=image_id,
        width=int(width),
        height=int(height),
        boxes=boxes_out,
        labels=labels_out,
        ignore=ignore_out,
        train=train,
        source=source,
        file_name=file_name,
    )


class DetectionDataset(Dataset):
    """Base class of all readers: a list of :class:`ImageEntry` plus class names.

    Subclasses parse their annotation format into entries and call :meth:`_finish`.

    Attributes:
        classes: class names without background (label ``k`` is ``classes[k - 1]``).
        issues: problems repaired or skipped while reading.
        strict: whether problems raise instead of being counted.
    """

    classes: list[str]
    name: str = "dataset"

    def _init_issues(self, name: str, strict: bool) -> None:
        self.name = name
        self.strict = strict
        self.issues = IssueLog(name, strict=strict)
        self._bad: set[int] = set()

    def _finish(self, entries: list[ImageEntry], classes: Sequence[str]) -> None:
        """Store entries and classes, check the dataset is usable and warn once about problems.

        Raises:
            DatasetError: no classes, no images, no box at all, or duplicate class names.
        """
        self.classes = [str(c) for c in classes]
        if not self.classes:
            raise DatasetError(f"{self.name}: no classes (nothing to train on)")
        if len(set(self.classes)) != len(self.classes):
            dupes = sorted({c for c in self.classes if self.classes.count(c) > 1})
            raise DatasetError(f"{self.name}: duplicate class names {dupes}")
        if not entries:
            raise DatasetError(f"{self.name}: zero usable images (nothing to train on)")
        if not any(len(e.boxes) for e in entries):
            skipped = (
                f"; {len(self.issues)} problem(s) found:\n{self.issues.summary()}"
                if self.issues.counts
                else ""
            )
            raise DatasetError(
                f"{self.name}: {len(entries)} images but zero usable boxes (nothing to train on "
                f"or evaluate){skipped}"
            )
        self.entries = entries
        self.issues.warn()

    @property
    def num_classes(self) -> int:
        """Number of classes (without background)."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.entries)

    def num_boxes(self, *, train_only: bool = False) -> int:
        """Total number of boxes (all, or only those used for training)."""
        if train_only:
            return int(sum(int(e.train.sum()) for e in self.entries))
        return int(sum(len(e.boxes) for e in self.entries))

    def records(self) -> list[dict[str, Any]]:
        """Evaluation ground truth of every image, without decoding images.

        Returns:
            One dict per image: ``image_id``, ``file_name``, ``width``, ``height``, ``boxes``
            (``float32 [M, 4]`` pixel xyxy), ``labels`` (``int64 [M]``) and ``ignore``
            (``bool [M]``: crowd, difficult or otherwise not to be scored).
        """
        return [
            {
                "image_id": e.image_id,
                "file_name": e.file_name,
                "width": e.width,
                "height": e.height,
                "boxes": e.boxes.copy(),
                "labels": e.labels.copy(),
                "ignore": e.ignore.copy(),
            }
            for e in self.entries
        ]

    def _load(self, index: int) -> Sample:
        entry = self.entries[index]
        image = load_image(entry.path)
        boxes, labels = entry.boxes[entry.train], entry.labels[entry.train]
        h, w = image.shape[:2]
        if len(boxes) and (entry.width, entry.height) != (w, h):
            local = IssueLog(self.name, strict=self.strict)
            clipped, keep = check_boxes(boxes, w, h, source=str(entry.path), issues=local)
            changed = int((np.abs(clipped - boxes).max(axis=1) > 0)[keep].sum())
            if changed or not keep.all():
                self._warn_now(
                    f"{entry.path}: decoded image is {w}x{h} but annotated as "
                    f"{entry.width}x{entry.height}; {changed} box(es) clipped, "
                    f"{int((~keep).sum())} dropped"
                )
            boxes, labels = clipped[keep], labels[keep]
        return Sample(
            image=image,
            boxes=boxes.copy(),
            labels=labels.copy(),
            image_id=entry.image_id,
            classes=tuple(self.classes),
            orig_size=(h, w),
        )

    def __getitem__(self, index: int) -> Sample:
        n = len(self.entries)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        for step in range(n):
            i = (index + step) % n
            if i in self._bad:
                continue
            try:
                sample = self._load(i)
            except DatasetError as exc:
                if self.strict:
                    raise
                self._bad.add(i)
                self.issues.counts["image skipped: unreadable"] += 1
                self._warn_now(f"{exc}; skipped, using the next image instead")
                continue
            if i != index:  # evaluation must know: it scores only the images that ran
                sample = sample.replace(stands_in_for=self.entries[index].image_id)
            return sample
        raise DatasetError(f"{self.name}: none of the {n} images could be read")

    def _warn_now(self, message: str) -> None:
        warnings.warn(f"{self.name}: {message}", DataWarning, stacklevel=3)

    def verify(self) -> None:
        """Decode every image now; raise listing all unreadable files.

        Raises:
            DatasetError: one or more images cannot be decoded.
        """
        bad = []
        for entry in self.entries:
            try:
                load_image(entry.path)
            except DatasetError as exc:
                bad.append(str(exc))
        if bad:
            listed = "\n  ".join(bad[:20])
            more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
            raise DatasetError(f"{self.name}: {len(bad)} unreadable image(s):\n  {listed}{more}")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, images={len(self)}, "
            f"boxes={self.num_boxes()}, classes={len(self.classes)})"
        )


def missing_images_error(name: str, missing: list[tuple[Path, str]]) -> DatasetError:
    """Error listing annotated images that do not exist (``(image, referenced_by)`` pairs)."""
    lines = [f"{img} (referenced by {src})" for img, src in missing[:10]]
    more = f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else ""
    return DatasetError(
        f"{name}: {len(missing)} annotated image(s) not found:\n  " + "\n  ".join(lines) + more
    )
