"""Batched SSD post-processing: decode, score, threshold, per-class top-k, NMS.

Kept apart from the model so that training, evaluation, export checks and the reference tests can
all run the same code on raw head outputs. The procedure is torchvision's
``SSD.postprocess_detections`` (score threshold, per-class top-k candidates, class-wise
``batched_nms``, best ``max_detections`` by score), with normalised anchors and a choice of softmax
or sigmoid scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import batched_nms, clip_boxes_to_image

from detector.box_ops import BoxCoder
from detector.postprocess_config import SCORE_FUNCTIONS, PostprocessConfig

__all__ = ["SCORE_FUNCTIONS", "PostprocessConfig", "postprocess_detections"]


def postprocess_detections(
    box_deltas: Tensor,
    class_logits: Tensor,
    anchors: Tensor,
    image_sizes: Sequence[tuple[int, int]],
    *,
    box_coder: BoxCoder | None = None,
    score_fn: str = "softmax",
    score_thresh: float = 0.01,
    nms_thresh: float = 0.45,
    topk_candidates: int = 400,
    max_detections: int = 200,
    clip_boxes: bool = True,
) -> list[dict[str, Tensor]]:
    """Turn raw SSD head outputs into detections, one dict per image.

    For each image: decode the deltas against the anchors, scale the boxes to the image's pixels
    (and clip them), score every class, keep per class the ``topk_candidates`` best anchors scoring
    above ``score_thresh``, run class-wise NMS, and keep the ``max_detections`` best.

    Args:
        box_deltas: ``Tensor[B, A, 4]`` box regressions ``(dx, dy, dw, dh)`` (TF models give
            ``(dy, dx, dh, dw)``: permute the last dimension with ``[1, 0, 3, 2]`` first).
        class_logits: ``Tensor[B, A, C + 1]`` class logits; column 0 is the background and is
            never reported.
        anchors: ``Tensor[A, 4]`` anchors, normalised ``xyxy`` (as from
            :meth:`detector.anchors.AnchorGenerator.generate`).
        image_sizes: ``B`` pairs ``(H, W)``: the original size of each image in pixels. The
            boxes, normalised to the model input, are scaled to these sizes (right for inputs made
            by a plain resize of the whole image).
        box_coder: the coder of the deltas; ``BoxCoder()`` (weights ``(10, 10, 5, 5)``) if None.
        score_fn: ``"softmax"`` over the ``C + 1`` columns, or ``"sigmoid"`` per column (the
            background column is then simply ignored).
        score_thresh: keep candidates whose score is strictly above this.
        nms_thresh: IoU threshold of the class-wise NMS.
        topk_candidates: candidates kept per class (best scores) before NMS.
        max_detections: detections kept per image (best scores) after NMS.
        clip_boxes: clip the boxes to ``[0, W] x [0, H]``.

    Returns:
        ``B`` dicts with ``"boxes"`` (``Tensor[K, 4]`` float pixel ``xyxy``), ``"scores"``
        (``Tensor[K]``, decreasing) and ``"labels"`` (``Tensor[K]`` int64 in ``1..C``), ``K``
        possibly 0.

    Raises:
        ValueError: inconsistent shapes or an unknown ``score_fn``.
    """
    if box_deltas.dim() != 3 or box_deltas.shape[-1] != 4:
        raise ValueError(f"box_deltas must be [B, A, 4], got {tuple(box_deltas.shape)}")
    if class_logits.dim() != 3 or class_logits.shape[:2] != box_deltas.shape[:2]:
        raise ValueError(
            f"class_logits must be [B, A, C+1] matching box_deltas {tuple(box_deltas.shape)}, "
            f"got {tuple(class_logits.shape)}"
        )
    if class_logits.shape[-1] < 2:
        raise ValueError("class_logits needs a background column and at least one class")
    num_images, num_anchors = box_deltas.shape[:2]
    if anchors.shape != (num_anchors, 4):
        raise ValueError(f"anchors must be [{num_anchors}, 4], got {tuple(anchors.shape)}")
    if len(image_sizes) != num_images:
        raise ValueError(f"got {len(image_sizes)} image sizes for {num_images} images")
    if score_fn not in SCORE_FUNCTIONS:
        raise ValueError(f"unknown score_fn {score_fn!r}; expected one of {SCORE_FUNCTIONS}")
    if topk_candidates < 1 or max_detections < 0:
        raise ValueError("topk_candidates must be >= 1 and max_detections >= 0")

    coder = box_coder if box_coder is not None else BoxCoder()
    device = box_deltas.device
    boxes = coder.decode(box_deltas.float(), anchors.to(device=device, dtype=torch.float32))
    logits = class_logits.float()
    scores = logits.softmax(dim=-1) if score_fn == "softmax" else logits.sigmoid()
    scores = scores[..., 1:]  # [B, A, C]: drop the background
    num_classes = scores.shape[-1]
    k = min(topk_candidates, num_anchors)
    # Class-major candidate labels, matching the flattened [C, k] top-k below.
    cand_labels = torch.arange(1, num_classes + 1, device=device).repeat_interleave(k)

    detections: list[dict[str, Tensor]] = []
    for image_boxes, image_scores, (height, width) in zip(boxes, scores, image_sizes):
        scale = image_boxes.new_tensor([width, height, width, height])
        image_boxes = image_boxes * scale
        if clip_boxes:
            image_boxes = clip_boxes_to_image(image_boxes, (int(height), int(width)))
        # Per-class top-k (the top-k of the thresholded scores = the thresholded top-k).
        top_scores, top_idx = image_scores.topk(k, dim=0)  # [k, C], decreasing per class
        top_scores = top_scores.t().reshape(-1)
        top_idx = top_idx.t().reshape(-1)
        keep = top_scores > score_thresh
        cand_scores = top_scores[keep]
        cand_boxes = image_boxes[top_idx[keep]]
        labels = cand_labels[keep]
        kept = _nms_best(cand_boxes, cand_scores, labels, nms_thresh, max_detections)
        detections.append(
            {"boxes": cand_boxes[kept], "scores": cand_scores[kept], "labels": labels[kept]}
        )
    return detections


def _nms_best(
    boxes: Tensor, scores: Tensor, labels: Tensor, nms_thresh: float, max_detections: int
) -> Tensor:
    """``batched_nms(...)[:max_detections]``, cheaper when there are many candidates.

    A trained sigmoid model at a low score threshold gives tens of thousands of candidates
    (28k per image for the TF OD API COCO model at 0.01) and NMS over all of them then costs
    more than the network. Whether a box survives depends only on the higher-scoring boxes of
    its class, so NMS over the best few thousand candidates (ties at the cut included) keeps
    exactly the same best boxes; only when that keeps fewer than ``max_detections`` is the
    whole set needed.
    """
    budget = max(8 * max_detections, 1024)
    if scores.numel() > budget:
        cut = scores.kthvalue(scores.numel() - budget + 1).values
        sub = torch.nonzero(scores >= cut).squeeze(1)
        kept = batched_nms(boxes[sub], scores[sub], labels[sub], nms_thresh)
        if kept.numel() >= max_detections:
            return sub[kept[:max_detections]]
    return batched_nms(boxes, scores, labels, nms_thresh)[:max_detections]
