"""NumPy-only SSD post-processing for exported graphs (no PyTorch).

Implements the same procedure as :func:`detector.postprocess.postprocess_detections`: decode the
box deltas against the anchors, score the classes, keep per class the best ``topk_candidates``
anchors scoring above ``score_thresh``, run greedy per-class NMS and keep the best
``max_detections`` over all classes. Written here (rather than imported from
:mod:`detector.export`) because that package imports PyTorch.
"""

from __future__ import annotations

import heapq
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

    The result is that of running, for every class, "the ``topk_candidates`` best anchors, keep
    scores above ``score_thresh``, greedy NMS", then keeping the ``max_detections`` best over
    all classes (ties: lower class first, then lower anchor index), which is what
    :func:`detector.postprocess.postprocess_detections` computes with torchvision.

    It is computed so that a trained model's tens of thousands of candidates at a low threshold
    stay cheap in NumPy: candidates are selected for all classes at once, and the classes' NMS
    runs interleaved in descending score order (a heap of class heads), stopping as soon as
    ``max_detections`` boxes are kept -- a box's fate depends only on higher-scoring boxes of
    its class, so the first boxes kept in that order are exactly the best kept ones.

    Args:
        boxes: ``[A, 4]`` pixel xyxy boxes.
        scores: ``[A, C]`` foreground class scores (column ``c`` is label ``c + 1``).
        score_thresh: candidates must score strictly above this.
        nms_thresh: IoU threshold of the per-class NMS (IoU strictly above it suppresses).
        topk_candidates: best anchors considered per class.
        max_detections: detections kept over all classes.

    Returns:
        ``(boxes [K, 4] float32, scores [K] float32, labels [K] int64 in 1..C)``, by decreasing
        score.
    """
    scores = np.asarray(scores)
    k = min(int(topk_candidates), scores.shape[0])
    limit = int(max_detections)
    anchor, cls = np.nonzero(scores > score_thresh)
    cand_scores = scores[anchor, cls]
    boxes = np.asarray(boxes)
    # Only the best candidates can matter when max_detections stop the NMS early: try the top
    # few first (every box that could suppress one of them is among them), all if that is short.
    budget = max(8 * limit, 1024)
    while True:
        if cand_scores.size > budget:
            cut = np.partition(cand_scores, cand_scores.size - budget)[cand_scores.size - budget]
            sub = np.flatnonzero(cand_scores >= cut)  # ties at the cut all stay
        else:
            sub = None
        result = _class_nms_sorted(
            boxes,
            anchor if sub is None else anchor[sub],
            cls if sub is None else cls[sub],
            cand_scores if sub is None else cand_scores[sub],
            k,
            float(nms_thresh),
            limit,
        )
        if sub is None or result[0].shape[0] >= limit:
            return result
        budget *= 8


def _class_nms_sorted(
    boxes: np.ndarray,
    anchor: np.ndarray,
    cls: np.ndarray,
    cand_scores: np.ndarray,
    k: int,
    nms_thresh: float,
    limit: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`class_nms` on a candidate set closed under "scores higher in the same class"."""
    if anchor.size == 0 or k <= 0 or limit <= 0:
        return (
            np.zeros((0, 4), dtype=np.float32),
            np.zeros((0,), dtype=np.float32),
            np.zeros((0,), dtype=np.int64),
        )
    order = np.lexsort((anchor, -cand_scores, cls))  # by class, then score down, then anchor
    anchor, cls, cand_scores = anchor[order], cls[order], cand_scores[order]
    starts = np.flatnonzero(np.r_[True, cls[1:] != cls[:-1]])
    counts = np.diff(np.r_[starts, cls.size])
    rank = np.arange(cls.size) - np.repeat(starts, counts)
    top = rank < k
    anchor, cls, cand_scores = anchor[top], cls[top], cand_scores[top]
    starts = np.flatnonzero(np.r_[True, cls[1:] != cls[:-1]])
    ends = np.r_[starts[1:], cls.size]

    cand_boxes = boxes[anchor].astype(np.float64)
    areas = np.maximum(cand_boxes[:, 2] - cand_boxes[:, 0], 0) * np.maximum(
        cand_boxes[:, 3] - cand_boxes[:, 1], 0
    )
    # Per class: the candidate positions still alive, best first.
    remaining = {int(cls[s0]): np.arange(s0, e0) for s0, e0 in zip(starts, ends)}
    heap = [(-float(cand_scores[s0]), int(cls[s0])) for s0 in starts]
    heapq.heapify(heap)
    kept: list[int] = []
    while heap and len(kept) < limit:
        _, c = heapq.heappop(heap)
        alive = remaining[c]
        best, rest = int(alive[0]), alive[1:]
        kept.append(best)
        if rest.size == 0:
            continue
        b, r = cand_boxes[best], cand_boxes[rest]
        inter = np.maximum(np.minimum(b[2], r[:, 2]) - np.maximum(b[0], r[:, 0]), 0) * np.maximum(
            np.minimum(b[3], r[:, 3]) - np.maximum(b[1], r[:, 1]), 0
        )
        union = areas[best] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        rest = rest[iou <= nms_thresh]
        if rest.size:
            remaining[c] = rest
            heapq.heappush(heap, (-float(cand_scores[rest[0]]), c))
    idx = np.asarray(kept, dtype=np.int64)
    return (
        cand_boxes[idx].astype(np.float32),
        cand_scores[idx].astype(np.float32),
        cls[idx].astype(np.int64) + 1,
    )


_ANCHORS_CACHE: dict[int, tuple[Any, np.ndarray]] = {}


def _anchors_array(anchors: Any) -> np.ndarray:
    """``float32 [A, 4]`` from the sidecar's nested list, converted once per list object (a
    2000-anchor list takes about a millisecond to convert, a tenth of the NMS)."""
    if isinstance(anchors, np.ndarray):
        return anchors.astype(np.float32, copy=False)
    hit = _ANCHORS_CACHE.get(id(anchors))
    if hit is not None and hit[0] is anchors:
        return hit[1]
    array = np.asarray(anchors, np.float32)
    if len(_ANCHORS_CACHE) > 8:
        _ANCHORS_CACHE.clear()
    _ANCHORS_CACHE[id(anchors)] = (anchors, array)  # holding the list keeps its id unique
    return array


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
            _anchors_array(dec["anchors"]),
            coder["weights"],
            coder["scale_clamp"],
        )
        scores = scores_from_logits(outputs["class_logits"], sidecar["scores"]["score_fn"])
    elif stage == "decoded":
        boxes, scores = outputs["boxes"], outputs["scores"]
    else:
        raise ValueError(f"unknown stage {stage!r}")
    background = sidecar["scores"].get("background_index", 0)
    num_columns = scores.shape[-1]
    if background == 0:  # a view, no copy
        keep_cols: Any = slice(1, None)
    elif background == num_columns - 1:
        keep_cols = slice(0, num_columns - 1)
    else:
        keep_cols = [c for c in range(num_columns) if c != background]
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
