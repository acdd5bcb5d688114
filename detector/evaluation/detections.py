"""Detections as flat arrays, the checks every evaluator applies to them, and the shared errors."""

from __future__ import annotations

import contextlib
import gc
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "Detections",
    "EvaluationWarning",
    "ResultsFileError",
    "drop_invalid",
    "gc_paused",
    "invalid_detection_mask",
    "merge_states",
    "to_numpy",
]


class EvaluationWarning(UserWarning):
    """Something was wrong with the input but the evaluation could go on; it is also counted."""


class ResultsFileError(ValueError):
    """A results file or a batch of predictions cannot be evaluated as given."""


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
