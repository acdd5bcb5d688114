"""The evaluator protocol shared by COCO, VOC and face evaluation, and the common machinery.

Every evaluator follows the same life cycle::

    evaluator.reset()
    for images, targets in loader:
        outputs = model(images)
        evaluator.process(image_ids, outputs)  # cheap: only stores numpy copies
    metrics = evaluator.evaluate()              # flat dict, always has "protocol"

Predictions are dicts with ``"boxes"`` (``[K, 4]`` pixel ``xyxy`` in the ORIGINAL image, Tensor
or ndarray), ``"scores"`` (``[K]``) and ``"labels"`` (``[K]`` int, contiguous ``1..C`` where ``C``
is the number of object classes; there is no background label).

Distributed evaluation: ``process`` does no evaluation work, it only validates and stores numpy
copies. Each rank calls ``state()`` (a picklable list, one entry per image), the lists are
gathered, e.g. with ``torch.distributed.all_gather_object``, and rank 0 calls
``load_state(merge_states(gathered))`` followed by ``evaluate()``. Images processed twice (as
happens with the padding of ``DistributedSampler``) keep their last predictions; they are counted
in ``metrics["num_duplicate_images"]`` and reported with an :class:`EvaluationWarning`.
"""

from __future__ import annotations

import contextlib
import gc
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "Detections",
    "EvaluationWarning",
    "Evaluator",
    "PredictionStore",
    "ResultsFileError",
    "gc_paused",
    "invalid_detection_mask",
    "merge_states",
    "to_numpy",
]


class EvaluationWarning(UserWarning):
    """Something was wrong with the input but the evaluation could go on; it is also counted."""


class ResultsFileError(ValueError):
    """A results file or a batch of predictions cannot be evaluated as given."""


@runtime_checkable
class Evaluator(Protocol):
    """Protocol of every evaluator (COCO, VOC, faces).

    ``evaluate`` returns a flat ``dict`` of numbers and strings that always contains
    ``"protocol"``, a human-readable name of exactly what was computed.
    """

    def reset(self) -> None:
        """Forget all processed predictions."""

    def process(self, image_ids: Sequence[Any], predictions: Sequence[Mapping[str, Any]]) -> None:
        """Store the predictions of a batch (see the module docstring for the format)."""

    def evaluate(self) -> dict[str, Any]:
        """Compute the metrics over everything processed since the last ``reset``."""

    def state(self) -> list[Any]:
        """Picklable per-image predictions, for gathering across distributed ranks."""

    def load_state(self, state: Iterable[Any]) -> None:
        """Add per-image predictions produced by ``state()`` (of this or another rank)."""


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while building many small objects.

    Parsing a results file or building the engines' per-detection dicts allocates millions of
    acyclic objects; every few hundred allocations the collector would walk the young objects
    and now and then all of them, which costs about a third of the parsing time. Nothing cyclic
    is made here, and the collector is switched back on (if it was on) afterwards.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def merge_states(states: Iterable[Iterable[Any]]) -> list[Any]:
    """Concatenate the ``state()`` lists gathered from several ranks."""
    merged: list[Any] = []
    for part in states:
        merged.extend(part)
    return merged


def to_numpy(value: Any, dtype: Any = None) -> np.ndarray:
    """Convert a Tensor (any device, with or without grad), ndarray or sequence to numpy."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    return array.astype(dtype, copy=False) if dtype is not None else array


@dataclass
class Detections:
    """Detections of a whole run as flat arrays (one row per detection, in input order).

    Attributes:
        image_index: ``[N]`` int64 index into the evaluator's list of ground-truth images.
        labels: ``[N]`` int64 contiguous labels ``1..C``.
        boxes: ``[N, 4]`` float64 pixel ``xyxy``.
        scores: ``[N]`` float64.
        xywh: optional ``[N, 4]`` float64 ``[x, y, w, h]`` exactly as read from a COCO results
            file; when present it is used instead of recomputing it from ``boxes`` so that the
            numbers are those of the file, bit for bit.
    """

    image_index: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    xywh: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def empty(cls) -> Detections:
        """No detections."""
        return cls(
            np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0), None
        )

    def select(self, mask: np.ndarray) -> Detections:
        """The detections where ``mask`` is true, order kept."""
        return Detections(
            self.image_index[mask],
            self.labels[mask],
            self.boxes[mask],
            self.scores[mask],
            None if self.xywh is None else self.xywh[mask],
        )

    def get_xywh(self) -> np.ndarray:
        """``[N, 4]`` float64 ``[x, y, w, h]``."""
        if self.xywh is not None:
            return self.xywh
        out = self.boxes.copy()
        out[:, 2:] -= out[:, :2]
        return out


def invalid_detection_mask(
    boxes_or_xywh: np.ndarray, scores: np.ndarray, *, xywh: bool
) -> dict[str, np.ndarray]:
    """Per-reason boolean masks of detections that cannot be evaluated.

    Args:
        boxes_or_xywh: ``[N, 4]`` boxes, ``xyxy`` or ``xywh`` (see ``xywh``).
        scores: ``[N]`` scores.
        xywh: whether the boxes are ``[x, y, w, h]``.

    Returns:
        ``{"non_finite_score", "non_finite_box", "negative_size"}`` masks (a detection can be in
        several).
    """
    finite_box = np.isfinite(boxes_or_xywh).all(axis=1)
    if xywh:
        w, h = boxes_or_xywh[:, 2], boxes_or_xywh[:, 3]
    else:
        w = boxes_or_xywh[:, 2] - boxes_or_xywh[:, 0]
        h = boxes_or_xywh[:, 3] - boxes_or_xywh[:, 1]
    with np.errstate(invalid="ignore"):
        negative = finite_box & ((w < 0) | (h < 0))
    return {
        "non_finite_score": ~np.isfinite(scores),
        "non_finite_box": ~finite_box,
        "negative_size": negative,
    }


def drop_invalid(
    dets: Detections, *, strict: bool, source: str, counters: dict[str, int]
) -> Detections:
    """Remove detections with NaN/inf values or negative sizes, counting and warning.

    Args:
        dets: the detections.
        strict: raise :class:`ResultsFileError` instead of dropping.
        source: what to name in the message (a file name, "predictions").
        counters: updated in place with ``num_invalid_<reason>`` and ``num_invalid_dropped``.

    Returns:
        The valid detections (the same object when nothing was dropped).
    """
    if dets.xywh is not None:
        masks = invalid_detection_mask(dets.xywh, dets.scores, xywh=True)
    else:
        masks = invalid_detection_mask(dets.boxes, dets.scores, xywh=False)
    bad = np.zeros(len(dets), dtype=bool)
    for reason, mask in masks.items():
        n = int(mask.sum())
        counters[f"num_invalid_{reason}"] = counters.get(f"num_invalid_{reason}", 0) + n
        bad |= mask
    n_bad = int(bad.sum())
    counters["num_invalid_dropped"] = counters.get("num_invalid_dropped", 0) + n_bad
    if not n_bad:
        return dets
    detail = ", ".join(
        f"{int(m.sum())} with {reason.replace('_', ' ')}" for reason, m in masks.items() if m.any()
    )
    first = int(np.flatnonzero(bad)[0])
    message = (
        f"{source}: {n_bad} of {len(dets)} detections cannot be evaluated ({detail}; first at "
        f"index {first})"
    )
    if strict:
        raise ResultsFileError(message)
    warnings.warn(message + "; they were dropped and counted", EvaluationWarning, stacklevel=3)
    return dets.select(~bad)


@dataclass
class PredictionStore:
    """Validated per-image predictions, keyed by image position; the shared part of evaluators.

    Args:
        image_ids: the ground-truth image ids, in evaluation order.
        num_classes: ``C``; labels must lie in ``1..C``.
    """

    image_ids: Sequence[Any]
    num_classes: int
    _index: dict[Any, int] = field(init=False, repr=False)
    _preds: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(init=False, repr=False)
    num_duplicate_images: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._index = {}
        for i, image_id in enumerate(self.image_ids):
            key = _hashable(image_id)
            if key in self._index:
                raise ValueError(f"duplicate image id {image_id!r} in the ground truth")
            self._index[key] = i
        self.reset()

    def reset(self) -> None:
        """Forget all stored predictions."""
        self._preds = {}
        self.num_duplicate_images = 0

    def index_of(self, image_id: Any) -> int:
        """Position of ``image_id`` in the ground truth; raises ``KeyError`` with a clear message."""
        try:
            return self._index[_hashable(image_id)]
        except KeyError:
            raise KeyError(
                f"image id {image_id!r} is not in the ground truth ({len(self._index)} images)"
            ) from None

    def add(self, image_ids: Sequence[Any], predictions: Sequence[Mapping[str, Any]]) -> None:
        """Validate and store a batch (see the module docstring for the format)."""
        if len(image_ids) != len(predictions):
            raise ValueError(f"got {len(image_ids)} image ids but {len(predictions)} predictions")
        for image_id, pred in zip(image_ids, predictions):
            index = self.index_of(image_id)
            boxes, scores, labels = _unpack_prediction(pred, image_id, self.num_classes)
            self._store(index, boxes, scores, labels)

    def _store(self, index: int, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> None:
        if index in self._preds:
            self.num_duplicate_images += 1
        self._preds[index] = (boxes, scores, labels)

    def state(self) -> list[tuple[Any, np.ndarray, np.ndarray, np.ndarray]]:
        """``[(image_id, boxes [K,4], scores [K], labels int64 [K]), ...]`` (numpy, picklable)."""
        return [(self.image_ids[i], *self._preds[i]) for i in sorted(self._preds)]

    def load_state(self, state: Iterable[Any]) -> None:
        """Add entries produced by :meth:`state`."""
        for image_id, boxes, scores, labels in state:
            self._store(self.index_of(image_id), boxes, scores, labels)

    def warn_duplicates(self) -> None:
        """Warn (once per evaluation) when images were processed more than once."""
        if self.num_duplicate_images:
            warnings.warn(
                f"{self.num_duplicate_images} image(s) were processed more than once; the last "
                "predictions of each were kept (expected with DistributedSampler padding)",
                EvaluationWarning,
                stacklevel=3,
            )

    @property
    def num_images_with_predictions(self) -> int:
        """How many distinct images have been processed."""
        return len(self._preds)

    def detections(self) -> Detections:
        """All stored predictions as flat arrays, images in ground-truth order."""
        if not self._preds:
            return Detections.empty()
        order = sorted(self._preds)
        boxes = np.concatenate([self._preds[i][0] for i in order]).astype(np.float64)
        scores = np.concatenate([self._preds[i][1] for i in order]).astype(np.float64)
        labels = np.concatenate([self._preds[i][2] for i in order]).astype(np.int64)
        counts = [len(self._preds[i][1]) for i in order]
        image_index = np.repeat(np.asarray(order, dtype=np.int64), counts)
        return Detections(image_index, labels, boxes.reshape(-1, 4), scores)


def _hashable(image_id: Any) -> Any:
    """Normalise numpy / tensor scalars so that ``np.int64(3)`` and ``3`` are the same key."""
    if hasattr(image_id, "item") and callable(image_id.item):
        return image_id.item()
    return image_id


def _unpack_prediction(
    pred: Mapping[str, Any], image_id: Any, num_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check one prediction dict and return ``(boxes f32 [K,4], scores f32 [K], labels i64 [K])``."""
    missing = [k for k in ("boxes", "scores", "labels") if k not in pred]
    if missing:
        raise ValueError(f"prediction for image {image_id!r} lacks {missing}")
    boxes = to_numpy(pred["boxes"])
    scores = to_numpy(pred["scores"])
    labels = to_numpy(pred["labels"])
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"image {image_id!r}: boxes must be [K, 4], got {tuple(boxes.shape)}")
    k = boxes.shape[0]
    if scores.shape != (k,) or labels.shape != (k,):
        raise ValueError(
            f"image {image_id!r}: boxes {tuple(boxes.shape)}, scores {tuple(scores.shape)} and "
            f"labels {tuple(labels.shape)} disagree"
        )
    integral = np.issubdtype(labels.dtype, np.integer) or np.all(np.mod(labels, 1) == 0)
    if k and not integral:
        raise ValueError(f"image {image_id!r}: labels must be integers")
    labels = labels.astype(np.int64)
    if k and (labels.min() < 1 or labels.max() > num_classes):
        raise ValueError(
            f"image {image_id!r}: labels must lie in 1..{num_classes} (no background), got "
            f"{labels.min()}..{labels.max()}"
        )
    # float32 model outputs stay float32 (half the memory to gather); anything else is float64.
    dtype = np.float32 if boxes.dtype == np.float32 and scores.dtype == np.float32 else np.float64
    return boxes.astype(dtype), scores.astype(dtype), labels
