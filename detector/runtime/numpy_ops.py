"""NumPy-only SSD post-processing for exported graphs (no PyTorch).

Implements the same procedure as :func:`detector.postprocess.postprocess_detections`: decode the
box deltas against the anchors, score the classes, keep per class the best ``topk_candidates``
anchors scoring above ``score_thresh``, run greedy per-class NMS and keep the best
``max_detections`` over all classes. Written here (rather than imported from
:mod:`detector.export`) because that package imports PyTorch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["class_nms", "decode_deltas", "greedy_nms", "iou_matrix", "sigmoid", "softmax"]


def decode_deltas(
    deltas: np.ndarray,
    anchors: np.ndarray,
    weights: Sequence[float],
    scale_clamp: float,
) -> np.ndarray:
    """Decode ``(dx, dy, dw, dh)`` regressions into normalised xyxy boxes.

    Args:
        deltas: ``[..., A, 4]`` box regressions.
        anchors: ``[A, 4]`` normalised xyxy anchors.
        weights: box-coder weights ``(wx, wy, ww, wh)``.
        scale_clamp: upper bound of ``dw / ww`` and ``dh / wh`` before the exponential.

    Returns:
        ``[..., A, 4]`` float32 xyxy boxes in the anchors' coordinates.
    """
    d = np.asarray(deltas, dtype=np.float32)
    a = np.asarray(anchors, dtype=np.float32)
    wx, wy, ww, wh = (np.float32(v) for v in weights)
    widths = a[:, 2] - a[:, 0]
    heights = a[:, 3] - a[:, 1]
    ctr_x = a[:, 0] + 0.5 * widths
    ctr_y = a[:, 1] + 0.5 * heights
    clamp = np.float32(scale_clamp)
    pred_cx = d[..., 0] / wx * widths + ctr_x
    pred_cy = d[..., 1] / wy * heights + ctr_y
    half_w = 0.5 * np.exp(np.minimum(d[..., 2] / ww, clamp)) * widths
    half_h = 0.5 * np.exp(np.minimum(d[..., 3] / wh, clamp)) * heights
    return np.stack(
        [pred_cx - half_w, pred_cy - half_h, pred_cx + half_w, pred_cy + half_h], axis=-1
    ).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (float32)."""
    x = np.asarray(logits, dtype=np.float32)
    x = np.exp(x - x.max(axis=-1, keepdims=True))
    return x / x.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic function (float32)."""
    x = np.asarray(logits, dtype=np.float32)
    return 1.0 / (1.0 + np.exp(-x))


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU between xyxy boxes ``[N, 4]`` and ``[M, 4]``, as ``[N, M]`` float64."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = np.maximum(a[:, 2] - a[:, 0], 0) * np.maximum(a[:, 3] - a[:, 1], 0)
    area_b = np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    union = area_a[:, None] + area_b[None, :] - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, iou_thresh: float) -> np.ndarray:
    """Indices kept by greedy NMS, highest score first (IoU strictly above the threshold is
    suppressed)."""
    remaining = np.argsort(-np.asarray(scores), kind="stable")
    kept: list[int] = []
    while remaining.size > 0:
        best = int(remaining[0])
        kept.append(best)
        rest = remaining[1:]
        if rest.size == 0:
            break
        overlaps = iou_matrix(boxes[best][None], boxes[rest])[0]
        remaining = rest[overlaps <= iou_thresh]
    return np.asarray(kept, dtype=np.int64)


def class_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    *,
    score_thresh: float,
    nms_thresh: float,
    topk_candidates: int,
    max_detections: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class candidate selection and NMS for one image.

    Args:
        boxes: ``[A, 4]`` pixel xyxy boxes.
        scores: ``[A, C]`` foreground class scores (column ``c`` is label ``c + 1``).
        score_thresh: candidates must score strictly above this.
        nms_thresh: IoU threshold of the per-class NMS.
        topk_candidates: best anchors considered per class.
        max_detections: detections kept over all classes.

    Returns:
        ``(boxes [K, 4] float32, scores [K] float32, labels [K] int64 in 1..C)``, by decreasing
        score.
    """
    num_anchors, num_classes = scores.shape
    k = min(int(topk_candidates), num_anchors)
    all_boxes, all_scores, all_labels = [], [], []
    for c in range(num_classes):
        col = scores[:, c]
        cand = np.argsort(-col, kind="stable")[:k]
        cand = cand[col[cand] > score_thresh]
        if cand.size == 0:
            continue
        keep = cand[greedy_nms(boxes[cand], col[cand], nms_thresh)]
        all_boxes.append(boxes[keep])
        all_scores.append(col[keep])
        all_labels.append(np.full(keep.size, c + 1, dtype=np.int64))
    if not all_scores:
        return (
            np.zeros((0, 4), dtype=np.float32),
            np.zeros((0,), dtype=np.float32),
            np.zeros((0,), dtype=np.int64),
        )
    b = np.concatenate(all_boxes).astype(np.float32)
    s = np.concatenate(all_scores).astype(np.float32)
    lab = np.concatenate(all_labels)
    order = np.argsort(-s, kind="stable")[: int(max_detections)]
    return b[order], s[order], lab[order]
