"""WIDER FACE matching and threshold counting (steps 3 and 5 of the official protocol).

See :mod:`detector.evaluation.widerface` for the protocol these functions implement.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from detector.evaluation.voc import voc_iou

__all__ = ["match_faces", "score_outcomes", "threshold_pr_counts"]


def _iou_plus_one(dt: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU matrix ``[K, N]`` of ``xyxy`` boxes with the ``+1`` inclusive-pixel convention.

    The devkit's element-wise IoU (:func:`~detector.evaluation.voc.voc_iou`) over every pair;
    non-overlapping pairs (intersection width or height ``<= 0``) get 0, as in the reference.
    """
    k, n = len(dt), len(gt)
    pairs = voc_iou(np.repeat(dt, n, axis=0), np.tile(gt, (k, 1)), plus_one=True)
    return np.maximum(pairs.reshape(k, n), 0.0)


def match_faces(
    image_index: np.ndarray,
    boxes_xyxy: np.ndarray,
    gt_boxes_xyxy: Sequence[np.ndarray],
    *,
    iou_threshold: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Best face of each detection, image by image (step 3 of the module docstring).

    Args:
        image_index: ``[D]`` int64 image of each detection, detections already in the order
            they are matched (by image, descending score within an image).
        boxes_xyxy: ``[D, 4]`` float64 pixel ``[x1, y1, x2, y2]`` (``x2 = x + w``).
        gt_boxes_xyxy: per image float64 ``[N_i, 4]`` faces as pixel ``xyxy``.
        iou_threshold: minimum IoU of a match (``>=``).

    Returns:
        ``(face, matched)``: ``face`` ``[D]`` int64 index of the best face into the
        concatenation of ``gt_boxes_xyxy`` (-1 for images without faces), ``matched`` ``[D]``
        bool, the best IoU reaches ``iou_threshold``.
    """
    d = len(image_index)
    face = np.full(d, -1, dtype=np.int64)
    matched = np.zeros(d, dtype=bool)
    if d == 0:
        return face, matched
    offsets = np.concatenate(([0], np.cumsum([len(g) for g in gt_boxes_xyxy])))
    starts = np.flatnonzero(np.r_[True, image_index[1:] != image_index[:-1]])
    ends = np.r_[starts[1:], d]
    for lo, hi in zip(starts.tolist(), ends.tolist()):
        img = int(image_index[lo])
        gt = gt_boxes_xyxy[img]
        if len(gt) == 0:
            continue
        iou = _iou_plus_one(boxes_xyxy[lo:hi], gt)
        best = np.argmax(iou, axis=1)  # the first maximum, as MATLAB's max / numpy's argmax
        face[lo:hi] = best + offsets[img]
        matched[lo:hi] = iou[np.arange(hi - lo), best] >= iou_threshold
    return face, matched


def score_outcomes(
    face: np.ndarray, matched: np.ndarray, kept_face: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(proposal, recall)`` per detection, detections in matching order.

    ``proposal``: counts as a true or false positive (not matched to an ignored face);
    ``recall``: the first detection to recall a kept face (a true positive).
    """
    safe = np.maximum(face, 0)
    on_kept = matched & (face >= 0) & kept_face[safe]
    proposal = ~(matched & (face >= 0) & ~kept_face[safe])
    recall = np.zeros(len(face), dtype=bool)
    hits = np.flatnonzero(on_kept)
    _, first = np.unique(face[hits], return_index=True)
    recall[hits[first]] = True
    return proposal, recall


def threshold_pr_counts(
    scores: np.ndarray, proposal: np.ndarray, recall: np.ndarray, num_thresholds: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """Proposals and recalled faces at the reference's score thresholds (step 5).

    Args:
        scores: ``[D]`` float64 normalised scores in ``[0, 1]``.
        proposal: ``[D]`` bool, the detection is a true or false positive.
        recall: ``[D]`` bool, the detection recalls a face (a subset of ``proposal``).
        num_thresholds: ``T``; threshold ``t = 1..T`` is ``1 - t / T``.

    Returns:
        ``(proposals [T], recalled [T])`` int64 counts of detections scoring ``>=`` each
        threshold, thresholds in the reference's order (decreasing).
    """
    thresholds = 1.0 - np.arange(1, num_thresholds + 1, dtype=np.float64) / num_thresholds
    # Detection d passes thresholds t >= first[d]; thresholds decrease, so count those above.
    passed = np.searchsorted(thresholds[::-1], scores, side="right")  # how many are <= score
    first = num_thresholds - passed
    props = np.bincount(first[proposal], minlength=num_thresholds + 1)[:num_thresholds]
    recs = np.bincount(first[recall], minlength=num_thresholds + 1)[:num_thresholds]
    return np.cumsum(props), np.cumsum(recs)
