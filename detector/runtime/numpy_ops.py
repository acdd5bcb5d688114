"""NumPy-only SSD post-processing for exported graphs (no PyTorch).

Implements the same procedure as :func:`detector.postprocess.postprocess_detections`: decode the
box deltas against the anchors, score the classes, keep per class the best ``topk_candidates``
anchors scoring above ``score_thresh``, run greedy per-class NMS and keep the best
``max_detections`` over all classes. Written here (rather than imported from
:mod:`detector.export`) because that package imports PyTorch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "class_nms",
    "decode_deltas",
    "detections_from_outputs",
    "greedy_nms",
    "iou_matrix",
    "scores_from_logits",
    "sigmoid",
    "softmax",
]


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


def scores_from_logits(logits: np.ndarray, score_fn: str) -> np.ndarray:
    if score_fn == "softmax":
        return softmax(logits)
    if score_fn == "sigmoid":
        return sigmoid(logits)
    raise ValueError(f"unknown score_fn {score_fn!r}")


def detections_from_outputs(
    outputs: Mapping[str, np.ndarray],
    sidecar: Mapping[str, Any],
    image_sizes: Sequence[tuple[int, int]],
    post: Mapping[str, Any] | None = None,
) -> list[dict[str, np.ndarray]]:
    """Detections (pixel xyxy ``boxes``, ``scores``, ``labels`` in ``1..C``) for each image from
    the named outputs of an exported graph, using only what its sidecar says.

    Args:
        outputs: graph outputs by name (``box_deltas``/``class_logits``, ``boxes``/``scores``, or
            ``boxes``/``scores``/``labels``/``count``, as the sidecar's ``stage``).
        sidecar: the parsed ``<name>.json``.
        image_sizes: original ``(H, W)`` of each image.
        post: post-processing settings overriding the sidecar's (``score_thresh``,
            ``nms_thresh``, ``topk_candidates``, ``max_detections``); with an NMS graph they can
            only tighten what the graph kept.
    """
    stage = sidecar["stage"]
    overrides = dict(post or {})
    post = {**sidecar["postprocess"], **overrides}
    results = []
    if stage == "nms":
        for i, (h, w) in enumerate(image_sizes):
            n = int(np.asarray(outputs["count"]).reshape(-1)[i])
            scale = np.array([w, h, w, h], dtype=np.float32)
            boxes = outputs["boxes"][i, :n].astype(np.float32) * scale
            scores = outputs["scores"][i, :n].astype(np.float32)
            labels = outputs["labels"][i, :n].astype(np.int64)
            if overrides:  # the graph applied the sidecar's settings already
                keep = np.flatnonzero(scores > post["score_thresh"])[: int(post["max_detections"])]
                boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            results.append({"boxes": boxes, "scores": scores, "labels": labels})
        return results
    if stage == "raw":
        dec = sidecar["decode"]
        coder = dec["box_coder"]
        boxes = decode_deltas(
            outputs["box_deltas"],
            np.asarray(dec["anchors"], np.float32),
            coder["weights"],
            coder["scale_clamp"],
        )
        scores = scores_from_logits(outputs["class_logits"], sidecar["scores"]["score_fn"])
    elif stage == "decoded":
        boxes, scores = outputs["boxes"], outputs["scores"]
    else:
        raise ValueError(f"unknown stage {stage!r}")
    background = sidecar["scores"].get("background_index", 0)
    keep_cols = [c for c in range(scores.shape[-1]) if c != background]
    for i, (h, w) in enumerate(image_sizes):
        scale = np.array([w, h, w, h], dtype=np.float32)
        b = boxes[i].astype(np.float32) * scale
        if post.get("clip_boxes", True):
            b = np.clip(b, 0, scale)
        db, ds, dl = class_nms(
            b,
            scores[i][:, keep_cols],
            score_thresh=post["score_thresh"],
            nms_thresh=post["nms_thresh"],
            topk_candidates=post["topk_candidates"],
            max_detections=post["max_detections"],
        )
        results.append({"boxes": db, "scores": ds, "labels": dl})
    return results
