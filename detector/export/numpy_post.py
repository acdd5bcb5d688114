"""Torch-free post-processing driven by an export sidecar (NumPy only).

What a deployment without PyTorch does with an exported graph: read the sidecar, decode the raw
outputs with its anchors and box-coder settings, score with its ``score_fn``, run per-class top-k
and NMS with its settings, scale boxes to the original image. It mirrors
:func:`detector.postprocess.postprocess_detections` and is how verification reads every artifact,
so the sidecar is checked to be sufficient on every export.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["box_iou", "decode_boxes", "detections_from_outputs", "nms", "scores_from_logits"]


def decode_boxes(
    deltas: np.ndarray,
    anchors: np.ndarray,
    weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
    scale_clamp: float = float(np.log(1000.0 / 16)),
) -> np.ndarray:
    """``(dx, dy, dw, dh)`` deltas ``[..., A, 4]`` and xyxy anchors ``[A, 4]`` to xyxy boxes."""
    deltas = np.asarray(deltas, dtype=np.float32)
    anchors = np.asarray(anchors, dtype=np.float32)
    wx, wy, ww, wh = (np.float32(w) for w in weights)
    aw = anchors[:, 2] - anchors[:, 0]
    ah = anchors[:, 3] - anchors[:, 1]
    acx = anchors[:, 0] + 0.5 * aw
    acy = anchors[:, 1] + 0.5 * ah
    cx = deltas[..., 0] / wx * aw + acx
    cy = deltas[..., 1] / wy * ah + acy
    w = np.exp(np.minimum(deltas[..., 2] / ww, np.float32(scale_clamp))) * aw
    h = np.exp(np.minimum(deltas[..., 3] / wh, np.float32(scale_clamp))) * ah
    return np.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), axis=-1)


def scores_from_logits(logits: np.ndarray, score_fn: str) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float32)
    if score_fn == "softmax":
        e = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    if score_fn == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits))
    raise ValueError(f"unknown score_fn {score_fn!r}")


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes ``[N, 4]`` and ``[M, 4]`` -> ``[N, M]``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS: indices kept, by decreasing score; suppresses IoU strictly above the threshold."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if order.size == 1:
            break
        ious = box_iou(boxes[i : i + 1], boxes[order[1:]])[0]
        order = order[1:][ious <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def _class_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    *,
    score_thresh: float,
    nms_thresh: float,
    topk_candidates: int,
    max_detections: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class top-k, threshold, class-wise NMS, best ``max_detections``; scores ``[A, C]``."""
    num_anchors, num_classes = scores.shape
    k = min(topk_candidates, num_anchors)
    out_boxes, out_scores, out_labels = [], [], []
    for c in range(num_classes):
        s = scores[:, c]
        top = np.argsort(-s, kind="stable")[:k]
        top = top[s[top] > score_thresh]
        if top.size == 0:
            continue
        kept = top[nms(boxes[top], s[top], nms_thresh)]
        out_boxes.append(boxes[kept])
        out_scores.append(s[kept])
        out_labels.append(np.full(kept.size, c + 1, dtype=np.int64))
    if not out_scores:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    b, s, lab = np.concatenate(out_boxes), np.concatenate(out_scores), np.concatenate(out_labels)
    order = np.argsort(-s, kind="stable")[:max_detections]
    return b[order], s[order], lab[order]


def detections_from_outputs(
    outputs: Mapping[str, np.ndarray],
    sidecar: Mapping[str, Any],
    image_sizes: Sequence[tuple[int, int]],
) -> list[dict[str, np.ndarray]]:
    """Detections (pixel xyxy ``boxes``, ``scores``, ``labels`` in ``1..C``) for each image from
    the named outputs of an exported graph, using only what its sidecar says.

    Args:
        outputs: graph outputs by name (``box_deltas``/``class_logits``, ``boxes``/``scores``, or
            ``boxes``/``scores``/``labels``/``count``, as the sidecar's ``stage``).
        sidecar: the parsed ``<name>.json``.
        image_sizes: original ``(H, W)`` of each image.
    """
    stage = sidecar["stage"]
    post = sidecar["postprocess"]
    results = []
    if stage == "nms":
        for i, (h, w) in enumerate(image_sizes):
            n = int(outputs["count"][i])
            scale = np.array([w, h, w, h], dtype=np.float32)
            results.append(
                {
                    "boxes": outputs["boxes"][i, :n].astype(np.float32) * scale,
                    "scores": outputs["scores"][i, :n].astype(np.float32),
                    "labels": outputs["labels"][i, :n].astype(np.int64),
                }
            )
        return results
    if stage == "raw":
        dec = sidecar["decode"]
        coder = dec["box_coder"]
        boxes = decode_boxes(
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
        db, ds, dl = _class_nms(
            b,
            scores[i][:, keep_cols],
            score_thresh=post["score_thresh"],
            nms_thresh=post["nms_thresh"],
            topk_candidates=post["topk_candidates"],
            max_detections=post["max_detections"],
        )
        results.append({"boxes": db, "scores": ds, "labels": dl})
    return results
