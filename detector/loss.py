"""SSD multibox loss: anchor matching, box regression and classification with hard negatives.

The default configuration reproduces torchvision's ``SSD.compute_loss`` (itself Caffe-SSD's
``MultiBoxLoss``):

* anchors are matched to ground truth with :func:`detector.matcher.match_padded` (IoU >= 0.5 plus
  each ground-truth box forced onto its best anchor);
* box loss: smooth-L1 (summed) between the predicted deltas and the encoded matched boxes, on
  positive anchors only;
* classification loss: softmax cross-entropy over ``C + 1`` columns (column 0 = background) on all
  positives plus, per image, the ``neg_pos_ratio * num_pos_image`` negatives with the highest loss
  (hard negative mining);
* both are divided by ``max(1, total positives in the batch)``.

Two deliberate, documented edge-case choices:

* An image without positives (e.g. no boxes) mines ``neg_pos_ratio * 0 = 0`` negatives, so it adds
  nothing to the classification loss. This is torchvision's behaviour (Caffe-SSD does the same).
* The number of hard negatives per image is capped at the number of negative anchors. torchvision
  does not cap it, so when ``neg_pos_ratio * num_pos > num_anchors - num_pos`` its ranking spills
  over onto the positives (sorted last, at ``-inf``) and adds their cross-entropy a second time;
  here each anchor counts at most once (the variant torchvision leaves commented out). Whenever
  the cap is not reached, which is the normal case, both agree exactly.

``classification="focal"`` replaces the softmax/hard-negative term with RetinaNet's sigmoid focal
loss over the ``C`` object columns (column 0 of the logits is ignored), summed over all anchors
and divided by ``max(1, num_pos)``.

The loss is computed in float32 (float64 inputs stay float64), outside any autocast region, and is
vectorised over the batch (matching included). It reads two data-dependent sizes per call (the
positive anchors and the largest hard-negative count), i.e. two host-device syncs on accelerators
(torchvision's loss syncs too, once per image).

Inputs are not checked for NaN/inf (that would cost a sync per step); finite inputs give a finite
loss, including degenerate (zero-width/height or inverted) ground-truth boxes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

from detector.box_ops import BoxCoder
from detector.matcher import match_padded, pad_ground_truth

__all__ = ["MultiBoxLoss"]

_CLASSIFICATIONS = ("softmax", "focal")


def _ensure_min_size(boxes_xyxy: Tensor, min_size: float) -> Tensor:
    """Grow boxes narrower or shorter than ``min_size`` (also inverted ones) to ``min_size``.

    ``x2``/``y2`` become ``max(x2, x1 + min_size)`` / ``max(y2, y1 + min_size)``; other boxes are
    returned bit-for-bit unchanged.

    Args:
        boxes_xyxy: ``Tensor[..., 4]`` boxes, xyxy.
        min_size: smallest width and height.

    Returns:
        ``Tensor[..., 4]`` boxes with positive width and height.
    """
    top_left = boxes_xyxy[..., :2]
    bottom_right = torch.maximum(boxes_xyxy[..., 2:], top_left + min_size)
    return torch.cat((top_left, bottom_right), dim=-1)


class MultiBoxLoss(nn.Module):
    """SSD multibox loss (smooth-L1 + softmax with hard negative mining, or sigmoid focal).

    Args:
        box_coder: encodes matched boxes into regression targets; default
            ``BoxCoder(weights=(10, 10, 5, 5))``.
        iou_threshold: IoU at or above which an anchor matches a ground-truth box.
        neg_pos_ratio: hard negatives kept per positive, per image (``"softmax"`` only).
        classification: ``"softmax"`` (SSD, with hard negative mining) or ``"focal"`` (sigmoid focal
            loss over all anchors, no mining).
        focal_alpha: focal-loss weight of the positive targets (``"focal"`` only; ``< 0``
            disables it, as in ``torchvision.ops.sigmoid_focal_loss``).
        focal_gamma: focal-loss focusing exponent (``"focal"`` only).
        smooth_l1_beta: transition point of the smooth-L1 box loss.
        box_weight: multiplier of the box loss in the total ``"loss"``.
        min_box_size: ground-truth (and anchor) widths and heights are raised to at least this
            before encoding, so degenerate boxes never give ``log(0)``. In the anchors' units
            (normalised by default: ``1e-4`` is far below a pixel).

    Call arguments (``forward``):
        box_deltas: ``Tensor[B, A, 4]`` predicted ``(dx, dy, dw, dh)``.
        class_logits: ``Tensor[B, A, C + 1]`` class scores, column 0 = background.
        anchors: ``Tensor[A, 4]`` anchors, normalised xyxy (shared by the batch).
        targets: ``B`` dicts with ``"boxes"`` ``Tensor[N_i, 4]`` (normalised xyxy; ``N_i`` may
            be 0) and ``"labels"`` ``Tensor[N_i]`` int64 in ``1..C``.

    Returns (``forward``):
        Dict of scalar tensors: ``"loss"`` (``box_weight * loss_box + loss_cls``),
        ``"loss_box"``, ``"loss_cls"`` (float32, or float64 for float64 inputs) and ``"num_pos"``
        (int64, number of positive anchors in the batch, detached).
    """

    def __init__(
        self,
        box_coder: BoxCoder | None = None,
        iou_threshold: float = 0.5,
        neg_pos_ratio: float = 3.0,
        classification: str = "softmax",
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        smooth_l1_beta: float = 1.0,
        box_weight: float = 1.0,
        *,
        min_box_size: float = 1e-4,
    ) -> None:
        super().__init__()
        if classification not in _CLASSIFICATIONS:
            raise ValueError(
                f"classification must be one of {_CLASSIFICATIONS}, got {classification!r}"
            )
        if neg_pos_ratio < 0:
            raise ValueError(f"neg_pos_ratio must be >= 0, got {neg_pos_ratio}")
        if smooth_l1_beta < 0:
            raise ValueError(f"smooth_l1_beta must be >= 0, got {smooth_l1_beta}")
        if min_box_size <= 0:
            raise ValueError(f"min_box_size must be > 0, got {min_box_size}")
        self.box_coder = box_coder if box_coder is not None else BoxCoder((10.0, 10.0, 5.0, 5.0))
        self.iou_threshold = float(iou_threshold)
        self.neg_pos_ratio = float(neg_pos_ratio)
        self.classification = classification
        self.focal_alpha = float(focal_alpha)
        self.focal_gamma = float(focal_gamma)
        self.smooth_l1_beta = float(smooth_l1_beta)
        self.box_weight = float(box_weight)
        self.min_box_size = float(min_box_size)

    def extra_repr(self) -> str:
        return (
            f"classification={self.classification!r}, iou_threshold={self.iou_threshold}, "
            f"neg_pos_ratio={self.neg_pos_ratio}, box_weight={self.box_weight}"
        )

    def forward(
        self,
        box_deltas: Tensor,
        class_logits: Tensor,
        anchors: Tensor,
        targets: Sequence[dict[str, Tensor]],
    ) -> dict[str, Tensor]:
        """Compute the loss; see the class docstring for shapes."""
        self._check_shapes(box_deltas, class_logits, anchors, targets)
        device = box_deltas.device
        with torch.autocast(device_type=device.type, enabled=False):
            return self._compute(box_deltas, class_logits, anchors, targets)

    @staticmethod
    def _check_shapes(
        box_deltas: Tensor,
        class_logits: Tensor,
        anchors: Tensor,
        targets: Sequence[dict[str, Tensor]],
    ) -> None:
        if box_deltas.dim() != 3 or box_deltas.shape[-1] != 4:
            raise ValueError(f"box_deltas must be [B, A, 4], got {tuple(box_deltas.shape)}")
        num_images, num_anchors, _ = box_deltas.shape
        if class_logits.dim() != 3 or class_logits.shape[:2] != box_deltas.shape[:2]:
            raise ValueError(
                f"class_logits must be [B, A, C + 1] = [{num_images}, {num_anchors}, C + 1], "
                f"got {tuple(class_logits.shape)}"
            )
        if class_logits.shape[-1] < 2:
            raise ValueError("class_logits needs a background column and at least one class")
        if anchors.shape != (num_anchors, 4):
            raise ValueError(f"anchors must be [{num_anchors}, 4], got {tuple(anchors.shape)}")
        if len(targets) != num_images:
            raise ValueError(f"got {len(targets)} targets for a batch of {num_images}")

    def _compute(
        self,
        box_deltas: Tensor,
        class_logits: Tensor,
        anchors: Tensor,
        targets: Sequence[dict[str, Tensor]],
    ) -> dict[str, Tensor]:
        device = box_deltas.device
        dtype = torch.promote_types(box_deltas.dtype, torch.float32)
        deltas = box_deltas.to(dtype)
        logits = class_logits.to(dtype)
        anchors = anchors.to(device=device, dtype=dtype)
        num_columns = logits.shape[-1]

        gt = pad_ground_truth(
            [t["boxes"] for t in targets],
            [t["labels"] for t in targets],
            dtype=dtype,
            device=device,
        )
        matched = match_padded(gt, anchors, self.iou_threshold)  # [B, A], -1 = background
        positive = matched >= 0  # [B, A]
        num_pos_per_image = positive.sum(dim=1)  # [B]
        num_pos = num_pos_per_image.sum()
        normaliser = num_pos.clamp(min=1).to(dtype)
        gt_index = matched.clamp(min=0)

        # Box regression on the positives only (a compact gather: several times cheaper than a
        # dense, masked computation over all B * A anchors).
        pos_image, pos_anchor = positive.nonzero(as_tuple=True)  # [P], [P]
        pos_boxes = gt.boxes[pos_image, matched[pos_image, pos_anchor]]  # [P, 4]
        target_deltas = self.box_coder.encode(
            _ensure_min_size(pos_boxes, self.min_box_size),
            _ensure_min_size(anchors[pos_anchor], self.min_box_size),
        )  # [P, 4]
        loss_box = (
            F.smooth_l1_loss(
                deltas[pos_image, pos_anchor],
                target_deltas,
                reduction="sum",
                beta=self.smooth_l1_beta,
            )
            / normaliser
        )

        # Classification targets: matched label, 0 (background) elsewhere.
        assert gt.labels is not None
        class_targets = torch.where(positive, gt.labels.gather(1, gt_index), 0)  # [B, A]
        if self.classification == "softmax":
            loss_cls = self._softmax_loss(logits, class_targets, positive, num_pos_per_image)
        else:
            one_hot = F.one_hot(class_targets, num_columns)[..., 1:].to(dtype)  # [B, A, C]
            loss_cls = sigmoid_focal_loss(
                logits[..., 1:],
                one_hot,
                alpha=self.focal_alpha,
                gamma=self.focal_gamma,
                reduction="sum",
            )
        loss_cls = loss_cls / normaliser

        return {
            "loss": self.box_weight * loss_box + loss_cls,
            "loss_box": loss_box,
            "loss_cls": loss_cls,
            "num_pos": num_pos.detach(),
        }

    def _softmax_loss(
        self, logits: Tensor, class_targets: Tensor, positive: Tensor, num_pos_per_image: Tensor
    ) -> Tensor:
        """Summed cross-entropy over positives and each image's hardest negatives.

        Args:
            logits: ``Tensor[B, A, C + 1]``.
            class_targets: ``Tensor[B, A]`` int64, 0 = background.
            positive: ``Tensor[B, A]`` bool.
            num_pos_per_image: ``Tensor[B]`` int64.

        Returns:
            Scalar tensor, the unnormalised sum.
        """
        num_images, num_anchors, num_columns = logits.shape
        cross_entropy = F.cross_entropy(
            logits.reshape(-1, num_columns), class_targets.reshape(-1), reduction="none"
        ).view(num_images, num_anchors)
        positive_sum = torch.where(positive, cross_entropy, 0.0).sum()

        # Per image: ratio * num_pos negatives (rank < that count, as torchvision), capped at the
        # number of negatives so that no positive is ever counted twice.
        num_neg = torch.minimum(
            self.neg_pos_ratio * num_pos_per_image.to(cross_entropy.dtype),
            (num_anchors - num_pos_per_image).to(cross_entropy.dtype),
        )  # [B]
        mining = cross_entropy.detach().masked_fill(positive, -math.inf)
        # topk(k) with the batch's largest count is several times cheaper than a full sort.
        k = min(num_anchors, math.ceil(float(num_neg.max())))
        if k == 0:
            return positive_sum
        order = mining.topk(k, dim=1, largest=True, sorted=True).indices  # [B, k]
        ranked = cross_entropy.gather(1, order)  # [B, k], hardest first, with gradients
        keep = torch.arange(k, device=ranked.device) < num_neg.unsqueeze(1)
        # The sum over the top ranks does not depend on how ties are ordered.
        return positive_sum + torch.where(keep, ranked, 0.0).sum()
