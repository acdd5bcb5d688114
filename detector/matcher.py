"""Anchor-to-ground-truth matching for SSD training.

The rule is Caffe-SSD's (and torchvision's ``SSDMatcher``):

1. *Per-prediction matching*: every anchor takes the ground-truth box it overlaps most (IoU), and
   keeps it only when that IoU is ``>= iou_threshold``; otherwise it is background (``-1``).
2. *Bipartite step*: every ground-truth box is then forced onto the anchor it overlaps most, even
   when that IoU is below the threshold, so that no object goes without a positive anchor.

Ties follow ``torch.max``: the first maximal index wins in both steps. When two ground-truth boxes
share the same best anchor, the later box (higher index) takes it, which is what torchvision's
in-place assignment does on the CPU; here it is deterministic on every device.

Everything is vectorised over the batch: the ground truth of all images is padded to the largest
count and matched in one go, without host-device synchronisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torchvision.ops import box_iou

__all__ = [
    "PaddedGroundTruth",
    "match_anchors",
    "match_anchors_batch",
    "match_padded",
    "pad_ground_truth",
]

# IoU given to padding rows: below any real IoU (>= 0), so padding never wins a max.
_PAD_IOU = -1.0


class PaddedGroundTruth(NamedTuple):
    """Ground truth of a batch, padded to a common count ``G = max(1, max_i G_i)``.

    Attributes:
        boxes: ``Tensor[B, G, 4]`` xyxy boxes; padding rows are zeros.
        labels: ``Tensor[B, G]`` int64 labels (zeros on padding rows), or ``None``.
        valid: ``Tensor[B, G]`` bool, ``False`` on padding rows.
        flat_index: ``Tensor[S]`` int64 positions of the ``S = sum_i G_i`` real boxes in
            ``boxes.view(B * G, 4)``, image by image.
    """

    boxes: Tensor
    labels: Tensor | None
    valid: Tensor
    flat_index: Tensor


def pad_ground_truth(
    boxes: Sequence[Tensor],
    labels: Sequence[Tensor] | None = None,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> PaddedGroundTruth:
    """Stack per-image ground truth into padded batch tensors (no host-device sync).

    Args:
        boxes: ``B`` tensors ``Tensor[G_i, 4]`` (xyxy); an empty image may be ``Tensor[0, 4]`` or
            ``Tensor[0]``.
        labels: optional ``B`` tensors ``Tensor[G_i]`` (int64).
        dtype: dtype of the padded boxes (default: that of the first image's boxes, or float32).
        device: device of the outputs (default: that of the first image's boxes).

    Returns:
        A :class:`PaddedGroundTruth`.
    """
    num_images = len(boxes)
    if dtype is None:
        dtype = boxes[0].dtype if num_images and boxes[0].is_floating_point() else torch.float32
    if device is None:
        device = boxes[0].device if num_images else "cpu"
    box_list = [b.reshape(-1, 4).to(device=device, dtype=dtype) for b in boxes]
    counts = [b.shape[0] for b in box_list]
    max_count = max([1, *counts])
    # A dummy of full length makes pad_sequence pad to max_count (>= 1) even if all are empty.
    filler = torch.zeros((max_count, 4), dtype=dtype, device=device)
    padded = pad_sequence([*box_list, filler], batch_first=True)[:num_images]
    count_t = torch.tensor(counts, dtype=torch.int64).to(device, non_blocking=True)
    valid = torch.arange(max_count, device=device) < count_t.view(-1, 1)
    flat = [i * max_count + j for i, c in enumerate(counts) for j in range(c)]
    flat_index = torch.tensor(flat, dtype=torch.int64).to(device, non_blocking=True)
    padded_labels = None
    if labels is not None:
        label_list = [lab.reshape(-1).to(device=device, dtype=torch.int64) for lab in labels]
        label_filler = torch.zeros((max_count,), dtype=torch.int64, device=device)
        padded_labels = pad_sequence([*label_list, label_filler], batch_first=True)[:num_images]
    return PaddedGroundTruth(padded, padded_labels, valid, flat_index)


def match_padded(gt: PaddedGroundTruth, anchors_xyxy: Tensor, iou_threshold: float = 0.5) -> Tensor:
    """Match padded ground truth to anchors (the batched core of :func:`match_anchors`).

    IoU is computed only for the real boxes (``torchvision.ops.box_iou``); padding rows get IoU
    ``-1`` so they never win.

    Args:
        gt: padded ground truth from :func:`pad_ground_truth`, same units as the anchors.
        anchors_xyxy: ``Tensor[A, 4]`` anchors, xyxy.
        iou_threshold: minimum IoU for a per-prediction match.

    Returns:
        ``Tensor[B, A]`` int64: matched ground-truth index per anchor, ``-1`` for background.
    """
    num_images, num_gt, _ = gt.boxes.shape
    num_anchors = anchors_xyxy.shape[0]
    device = gt.boxes.device
    anchors = anchors_xyxy.to(device=device, dtype=gt.boxes.dtype)

    real_boxes = gt.boxes.reshape(-1, 4).index_select(0, gt.flat_index)
    iou = torch.full(
        (num_images * num_gt, num_anchors), _PAD_IOU, dtype=anchors.dtype, device=device
    )
    iou.index_copy_(0, gt.flat_index, box_iou(real_boxes, anchors))
    iou = iou.view(num_images, num_gt, num_anchors)

    # 1. per-prediction: best gt for each anchor, kept at or above the threshold.
    best_iou, matches = iou.max(dim=1)  # [B, A]
    matches = matches.masked_fill(best_iou < iou_threshold, -1)

    # 2. bipartite: each real gt is forced onto its best anchor (highest gt index wins on clashes).
    best_anchor = iou.max(dim=2).indices  # [B, G]
    gt_index = torch.arange(num_gt, device=device).expand(num_images, num_gt)
    gt_index = torch.where(gt.valid, gt_index, -1)
    flat = best_anchor + num_anchors * torch.arange(num_images, device=device).unsqueeze(1)
    forced = torch.full((num_images * num_anchors,), -1, dtype=torch.int64, device=device)
    forced.scatter_reduce_(0, flat.reshape(-1), gt_index.reshape(-1), reduce="amax")
    forced = forced.view(num_images, num_anchors)
    return torch.where(forced >= 0, forced, matches)


def match_anchors_batch(
    gt_boxes_xyxy: Sequence[Tensor], anchors_xyxy: Tensor, iou_threshold: float = 0.5
) -> Tensor:
    """Match the ground truth of a batch of images to a shared set of anchors.

    Args:
        gt_boxes_xyxy: ``B`` tensors ``Tensor[G_i, 4]``, xyxy, same units as the anchors.
        anchors_xyxy: ``Tensor[A, 4]`` anchors, xyxy.
        iou_threshold: minimum IoU for the per-prediction match.

    Returns:
        ``Tensor[B, A]`` int64: index (into that image's boxes) of the matched ground truth, or
        ``-1`` for background. Images without boxes are all ``-1``.
    """
    if len(gt_boxes_xyxy) == 0:
        return torch.empty(
            (0, anchors_xyxy.shape[0]), dtype=torch.int64, device=anchors_xyxy.device
        )
    dtype = torch.promote_types(anchors_xyxy.dtype, torch.float32)
    gt = pad_ground_truth(gt_boxes_xyxy, dtype=dtype, device=anchors_xyxy.device)
    return match_padded(gt, anchors_xyxy, iou_threshold)


def match_anchors(
    gt_boxes_xyxy: Tensor, anchors_xyxy: Tensor, iou_threshold: float = 0.5
) -> Tensor:
    """Match one image's ground-truth boxes to anchors (same result as torchvision's ``SSDMatcher``).

    Args:
        gt_boxes_xyxy: ``Tensor[G, 4]`` ground-truth boxes, xyxy, same units as the anchors.
        anchors_xyxy: ``Tensor[A, 4]`` anchors, xyxy.
        iou_threshold: minimum IoU for the per-prediction match.

    Returns:
        ``Tensor[A]`` int64: index of the matched ground-truth box, or ``-1`` for background.
        ``G == 0`` gives all ``-1``.
    """
    return match_anchors_batch([gt_boxes_xyxy], anchors_xyxy, iou_threshold)[0]
