"""Box formats and the SSD box coder.

Conventions used across the project:

* ``xyxy``: ``[x1, y1, x2, y2]``; ``cxcywh``: ``[cx, cy, w, h]``.
* Anchors are stored normalised to the model input (``[0, 1]`` on both axes, may reach outside
  when not clipped). Ground-truth boxes handed to the loss are normalised the same way.
* Box deltas are ordered ``(dx, dy, dw, dh)`` (torchvision / Caffe-SSD order). TF Object Detection
  API models order them ``(dy, dx, dh, dw)``; weight importers permute their predictor channels.

IoU and format conversion come from :mod:`torchvision.ops`; only the SSD coder is written here.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.ops import box_convert

__all__ = ["BoxCoder", "cxcywh_to_xyxy", "xyxy_to_cxcywh"]

# exp() clamp as in torchvision's BoxCoder: a box may grow at most 1000/16 times per side.
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``Tensor[..., 4]`` cxcywh to ``Tensor[..., 4]`` xyxy (any leading shape)."""
    return box_convert(boxes, in_fmt="cxcywh", out_fmt="xyxy")


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``Tensor[..., 4]`` xyxy to ``Tensor[..., 4]`` cxcywh (any leading shape)."""
    return box_convert(boxes, in_fmt="xyxy", out_fmt="cxcywh")


class BoxCoder:
    """SSD centre-size box coding with weights (the inverse of the variances).

    ``weights=(10, 10, 5, 5)`` is the same as Caffe-SSD's variances ``(0.1, 0.1, 0.2, 0.2)`` and the
    TF Object Detection API's ``faster_rcnn_box_coder`` scales ``y/x 10, h/w 5``.

    Args:
        weights: ``(wx, wy, ww, wh)`` multipliers applied to the encoded deltas.
        scale_clamp: upper bound on ``dw``/``dh`` before ``exp`` when decoding, so that untrained
            heads never produce ``inf``.
    """

    def __init__(
        self,
        weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
        scale_clamp: float = DEFAULT_SCALE_CLAMP,
    ) -> None:
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = float(scale_clamp)

    def encode(self, boxes_xyxy: Tensor, anchors_xyxy: Tensor) -> Tensor:
        """Encode matched boxes relative to their anchors.

        Args:
            boxes_xyxy: ``Tensor[N, 4]`` target boxes, xyxy, same units as the anchors.
            anchors_xyxy: ``Tensor[N, 4]`` anchors, xyxy.

        Returns:
            ``Tensor[N, 4]`` deltas ``(dx, dy, dw, dh)``.
        """
        wx, wy, ww, wh = self.weights
        a = xyxy_to_cxcywh(anchors_xyxy)
        b = xyxy_to_cxcywh(boxes_xyxy)
        dx = wx * (b[..., 0] - a[..., 0]) / a[..., 2]
        dy = wy * (b[..., 1] - a[..., 1]) / a[..., 3]
        dw = ww * torch.log(b[..., 2] / a[..., 2])
        dh = wh * torch.log(b[..., 3] / a[..., 3])
        return torch.stack((dx, dy, dw, dh), dim=-1)

    def decode(self, deltas: Tensor, anchors_xyxy: Tensor) -> Tensor:
        """Decode deltas into boxes.

        Args:
            deltas: ``Tensor[..., A, 4]`` ``(dx, dy, dw, dh)``; leading batch dimensions allowed.
            anchors_xyxy: ``Tensor[A, 4]`` anchors, xyxy (broadcast over the leading dimensions).

        Returns:
            ``Tensor[..., A, 4]`` boxes, xyxy, in the anchors' units.
        """
        wx, wy, ww, wh = self.weights
        a = xyxy_to_cxcywh(anchors_xyxy.to(deltas.dtype))
        dx = deltas[..., 0] / wx
        dy = deltas[..., 1] / wy
        dw = (deltas[..., 2] / ww).clamp(max=self.scale_clamp)
        dh = (deltas[..., 3] / wh).clamp(max=self.scale_clamp)
        cx = dx * a[..., 2] + a[..., 0]
        cy = dy * a[..., 3] + a[..., 1]
        w = torch.exp(dw) * a[..., 2]
        h = torch.exp(dh) * a[..., 3]
        return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)
