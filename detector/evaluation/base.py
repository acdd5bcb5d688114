"""The evaluator base class shared by COCO, VOC and WIDER FACE evaluation.

Every evaluator follows the same life cycle::

    evaluator.reset()
    for images, targets in loader:
        outputs = model(images)
        evaluator.process(image_ids, outputs)  # cheap: only stores numpy copies
    metrics = evaluator.evaluate()              # flat dict, always has "protocol"

or scores a results file (no model, no images)::

    metrics = evaluator.evaluate_results_file("detections.json", out_dir="runs/eval")

Predictions are dicts with ``"boxes"`` (``[K, 4]`` pixel ``xyxy`` in the ORIGINAL image, Tensor
or ndarray), ``"scores"`` (``[K]``) and ``"labels"`` (``[K]`` int, contiguous ``1..C`` where ``C``
is the number of object classes; there is no background label). A prediction
``{"skipped": "<reason>"}`` says the image was not run (e.g. it could not be decoded): the image
is then left out of the scoring, its ground truth included, and counted in
``metrics["num_images_skipped"]`` with the reasons in ``metrics["skipped_images"]``.

Distributed evaluation: ``process`` does no evaluation work, it only validates and stores numpy
copies. Each rank calls ``state()`` (a picklable list, one entry per image), the lists are
gathered, e.g. with ``torch.distributed.all_gather_object``, and rank 0 calls
``load_state(merge_states(gathered))`` followed by ``evaluate()``. Images processed twice (as
happens with the padding of ``DistributedSampler``) keep their last predictions; they are counted
in ``metrics["num_duplicate_images"]`` and reported with an :class:`EvaluationWarning`.

What a concrete evaluator implements (everything else is here): ``protocol``, ``_score`` (the
metrics of checked flat :class:`Detections` on some of the images), ``image_lookup`` /
``category_lookup`` (how a results file names images and classes) and ``pr_curves``; optionally
``category_ids`` (labels as written to results files), ``canonical_image_id``, ``summary`` and
``pr_title``. It registers itself in :mod:`detector.evaluation.registry`.
"""

from __future__ import annotations

import abc
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from detector.evaluation.detections import (
    Detections,
    EvaluationWarning,
    ResultsFileError,
    drop_invalid,
    gc_paused,
    invalid_detection_mask,
    merge_states,
    to_numpy,
)
from detector.evaluation.report import write_report
from detector.evaluation.results import detections_from_results, load_detections_file

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

#: Key of a prediction dict that marks an image as not run; its value is the reason.
SKIPPED = "skipped"


class Evaluator(abc.ABC):
    """Base class of every evaluator: stores predictions, runs the life cycle, writes outputs.

    A subclass sets :attr:`kind`, :attr:`display_name`, calls :meth:`_init_evaluator` from its
    ``__init__`` and implements the abstract members.

    Attributes:
        kind: the registry name (``"coco"``, ``"voc"``, ``"widerface"``).
        display_name: short name used in messages (``"COCO"``).
        class_names: the ``C`` class names; label ``k`` is ``class_names[k - 1]``.
        num_classes: ``C``.
        image_ids: the ground truth's own image ids, in evaluation order.
        strict: raise instead of dropping detections with NaN/inf values or negative sizes.
        last_detections: the detections of the last evaluation (after the checks).
    """

    kind: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    #: Options of other evaluators that :meth:`from_options` ignores for this one.
    unused_options: ClassVar[frozenset[str]] = frozenset()

    class_names: list[str]
    num_classes: int
    image_ids: list[Any]
    strict: bool
    last_detections: Detections | None

    def _init_evaluator(
        self, image_ids: Sequence[Any], class_names: Sequence[str], *, strict: bool
    ) -> None:
        """Set the shared state: class names, image ids and an empty prediction store."""
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.image_ids = list(image_ids)
        self.strict = bool(strict)
        self.last_detections = None
        self._store = PredictionStore(self.image_ids, self.num_classes)

    @classmethod
    def from_options(cls, **options: Any) -> Evaluator:
        """Build from the common option set of :func:`~detector.evaluation.build_evaluator`.

        Options that are ``None`` or in :attr:`unused_options` are left out.
        """
        kept = {k: v for k, v in options.items() if v is not None and k not in cls.unused_options}
        return cls(**kept)

    # -- what a concrete evaluator implements ------------------------------------------------------

    @property
    @abc.abstractmethod
    def protocol(self) -> str:
        """Human-readable name of exactly what :meth:`evaluate` computes."""

    def evaluate_detections(
        self,
        dets: Detections,
        *,
        counters: dict[str, Any] | None = None,
        source: str = "detections",
        image_mask: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """Score flat detections (``image_index`` into :attr:`image_ids`, labels ``1..C``).

        Detections with NaN/inf values or negative sizes are dropped with a counted warning
        (an error with ``strict``) before :meth:`_score` computes the metrics.

        Args:
            dets: the detections.
            counters: numbers to copy into the metrics.
            source: what to name in messages (a file name, ``"predictions"``).
            image_mask: ``[len(image_ids)]`` bool, the images to score (ground truth and
                detections); ``None`` scores every image.
        """
        counters = dict(counters or {})
        dets = drop_invalid(dets, strict=self.strict, source=source, counters=counters)
        mask = image_mask_or_all(image_mask, len(self.image_ids))
        if image_mask is not None:
            dets = dets.select(mask[dets.image_index])
        self.last_detections = dets
        return self._score(dets, mask, counters, source)

    @abc.abstractmethod
    def _score(
        self, dets: Detections, image_mask: np.ndarray, counters: dict[str, Any], source: str
    ) -> dict[str, Any]:
        """The metrics of checked detections on the images where ``image_mask`` is true.

        ``counters`` (a fresh dict) go into the metrics; ``source`` is named in messages.
        """

    @abc.abstractmethod
    def image_lookup(self) -> dict[Any, int]:
        """Image id as written in a results file -> position in :attr:`image_ids`."""

    @abc.abstractmethod
    def category_lookup(self) -> dict[Any, int]:
        """Category id as written in a results file -> label ``1..C``."""

    @abc.abstractmethod
    def pr_curves(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Name -> ``(recall, precision)`` of the last evaluation."""

    def category_ids(self, labels: np.ndarray) -> np.ndarray:
        """The category ids written to results files for labels ``1..C`` (default: the label)."""
        return labels

    def canonical_image_id(self, image_id: Any) -> Any:
        """The ground-truth image id that ``image_id`` (as given to :meth:`process`) names."""
        return image_id

    def summary(self) -> str | None:
        """Free-text summary of the last evaluation (``summary.txt``), if the protocol has one."""
        return None

    @property
    def pr_title(self) -> str:
        """Title of the precision/recall figure."""
        return f"{self.display_name} precision/recall"

    # -- shared life cycle --------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget all processed predictions."""
        self._store.reset()

    def process(self, image_ids: Sequence[Any], predictions: Sequence[Mapping[str, Any]]) -> None:
        """Store a batch of predictions (see the module docstring for the format)."""
        self._store.add([self.canonical_image_id(i) for i in image_ids], predictions)

    def state(self) -> list[Any]:
        """Picklable per-image predictions, for gathering across distributed ranks."""
        return self._store.state()

    def load_state(self, state: Iterable[Any]) -> None:
        """Add per-image predictions produced by :meth:`state` (of this or another rank)."""
        self._store.load_state(state)

    def _coverage_counters(self, counters: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Hook: add counters / warnings about which images got predictions (default: none)."""

    def evaluate(self) -> dict[str, Any]:
        """Compute the metrics over everything processed since the last :meth:`reset`.

        Images marked as skipped (see the module docstring) are left out of the scoring, ground
        truth included, with an :class:`EvaluationWarning` that says how many and why.
        """
        counters: dict[str, Any] = {"num_duplicate_images": self._store.num_duplicate_images}
        self._store.warn_duplicates()
        image_mask = None
        skipped = self._store.skipped
        if skipped:
            image_mask = np.ones(len(self.image_ids), dtype=bool)
            image_mask[list(skipped)] = False
            listed = [f"{self.image_ids[i]} ({reason})" for i, reason in sorted(skipped.items())]
            shown = "; ".join(listed[:10]) + (
                f"; ... {len(listed) - 10} more" if len(listed) > 10 else ""
            )
            counters["num_images_skipped"] = len(skipped)
            counters["skipped_images"] = shown
            warnings.warn(
                f"{len(skipped)} of the {len(self.image_ids)} images were not run and are left out "
                f"of the scoring (their ground truth too): {shown}",
                EvaluationWarning,
                stacklevel=2,
            )
        self._coverage_counters(counters)
        dets = self._store.detections()
        if not len(dets):
            warnings.warn(
                f"{self.display_name} evaluation without any detection",
                EvaluationWarning,
                stacklevel=2,
            )
        return self.evaluate_detections(
            dets, counters=counters, source="predictions", image_mask=image_mask
        )

    # -- outputs ------------------------------------------------------------------------------------

    def _checked_detections(self) -> Detections:
        dets = self.last_detections
        if dets is None:
            dets = drop_invalid(
                self._store.detections(), strict=self.strict, source="predictions", counters={}
            )
        return dets

    def results(self) -> list[dict[str, Any]]:
        """The last evaluated detections as a COCO-format results list.

        ``image_id`` is the ground truth's own image id, ``category_id`` from
        :meth:`category_ids`, ``bbox`` ``[x, y, w, h]`` pixels with full float precision, so
        that scoring the written file gives the same numbers.
        """
        dets = self._checked_detections()
        ids = [self.image_ids[i] for i in dets.image_index.tolist()]
        ids = [i.item() if hasattr(i, "item") else i for i in ids]
        categories = np.asarray(self.category_ids(dets.labels)).tolist()
        return [
            {"image_id": i, "category_id": c, "bbox": b, "score": s}
            for i, c, b, s in zip(ids, categories, dets.get_xywh().tolist(), dets.scores.tolist())
        ]

    def report_artifacts(self, *, with_results: bool = True) -> dict[str, Any]:
        """Keyword arguments for :func:`detector.evaluation.report.write_report`."""
        return {
            "pr_curves": self.pr_curves(),
            "summary": self.summary(),
            "results": self.results() if with_results else None,
            "pr_title": self.pr_title,
        }

    def evaluate_results_file(
        self,
        path: str | Path,
        *,
        out_dir: str | Path | None = None,
        t_start: float | None = None,
    ) -> dict[str, Any]:
        """Score a results file: no model and no images, only this evaluator's ground truth.

        Args:
            path: a COCO-format results JSON list, or a folder of WIDER FACE per-image ``.txt``
                prediction files (see :func:`detector.evaluation.results.load_detections_file`).
            out_dir: when given, ``metrics.json``, the per-class tables, the PR curves and
                ``summary.txt`` are written there.
            t_start: when the caller started (building the ground truth); for ``time_gt_s``.

        Returns:
            The metrics plus ``results_file`` and the ``time_*_s`` timings.

        Raises:
            ResultsFileError: the file cannot be read or parsed, or names unknown images or
                classes (one message naming the file).
        """
        t_gt = time.perf_counter()
        source = str(path)
        entries = load_detections_file(path)
        counters: dict[str, Any] = {}
        if not entries:
            warnings.warn(
                f"{source} holds no detections ([]); every AP will be 0",
                EvaluationWarning,
                stacklevel=2,
            )
            counters["num_empty_results_files"] = 1
        t_parse = time.perf_counter()
        with gc_paused():
            dets = detections_from_results(
                entries,
                image_lookup=self.image_lookup(),
                category_lookup=self.category_lookup(),
                source=source,
            )
            del entries
        t_load = time.perf_counter()
        metrics = self.evaluate_detections(dets, counters=counters, source=source)
        t_eval = time.perf_counter()
        metrics["results_file"] = source
        if out_dir is not None:
            write_report(metrics, out_dir, **self.report_artifacts(with_results=False))
        t_end = time.perf_counter()
        metrics.update(
            {
                "time_gt_s": t_gt - (t_start if t_start is not None else t_gt),
                "time_parse_s": t_parse - t_gt,
                "time_check_s": t_load - t_parse,
                "time_load_s": t_load - t_gt,
                "time_eval_s": t_eval - t_load,
                "time_write_s": t_end - t_eval,
                "time_total_s": t_end - (t_start if t_start is not None else t_gt),
            }
        )
        if out_dir is not None:  # metrics.json again, now with the timings
            write_report(metrics, out_dir, metrics_only=True)
        return metrics


def image_mask_or_all(image_mask: np.ndarray | None, num_images: int) -> np.ndarray:
    """``image_mask`` checked against the number of images, or all true."""
    if image_mask is None:
        return np.ones(num_images, dtype=bool)
    mask = np.asarray(image_mask, dtype=bool)
    if mask.shape != (num_images,):
        raise ValueError(f"image_mask must be [{num_images}] bool, got shape {mask.shape}")
    return mask


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
    skipped: dict[int, str] = field(init=False, repr=False)
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
        self.skipped = {}
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
            if SKIPPED in pred:
                self._skip(index, str(pred[SKIPPED]))
                continue
            boxes, scores, labels = _unpack_prediction(pred, image_id, self.num_classes)
            self._store(index, boxes, scores, labels)

    def _store(self, index: int, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> None:
        if index in self._preds:
            self.num_duplicate_images += 1
        self._preds[index] = (boxes, scores, labels)
        self.skipped.pop(index, None)  # the image did run (e.g. on another rank)

    def _skip(self, index: int, reason: str) -> None:
        if index not in self._preds:
            self.skipped[index] = reason

    def state(self) -> list[tuple[Any, Any, Any, Any]]:
        """``[(image_id, boxes [K,4], scores [K], labels int64 [K]), ...]`` (numpy, picklable).

        A skipped image is ``(image_id, None, None, reason)``.
        """
        out: list[tuple[Any, Any, Any, Any]] = [
            (self.image_ids[i], *self._preds[i]) for i in sorted(self._preds)
        ]
        out += [(self.image_ids[i], None, None, r) for i, r in sorted(self.skipped.items())]
        return out

    def load_state(self, state: Iterable[Any]) -> None:
        """Add entries produced by :meth:`state`."""
        for image_id, boxes, scores, labels in state:
            if boxes is None:
                self._skip(self.index_of(image_id), str(labels))
            else:
                self._store(self.index_of(image_id), boxes, scores, labels)

    def warn_duplicates(self) -> None:
        """Warn (once per evaluation) when images were processed more than once."""
        if self.num_duplicate_images:
            warnings.warn(
                f"{self.num_duplicate_images} image(s) were processed more than once; the last "
                "predictions of each were kept (DistributedSampler pads the last shard by "
                "repeating images)",
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
