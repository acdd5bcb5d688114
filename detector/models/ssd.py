"""The SSD detector module: tensor in, tensor out.

``SSD.forward(images)`` takes RGB float images in ``[0, 1]`` (``Tensor[B, 3, H, W]``, already
resized to the model's input size), normalises them inside, and returns the raw head outputs
``(box_deltas Tensor[B, A, 4], class_logits Tensor[B, A, C + 1])``. Anchors are a buffer
(``model.anchors``, ``Tensor[A, 4]`` normalised xyxy) computed once from the real feature-map
shapes. Decoding and NMS live in :mod:`detector.postprocess`, so ``torch.export``, ONNX and
ExecuTorch take the module as is.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .heads import SSDFeatureExtractor, SSDHead

__all__ = ["SSD"]


class SSD(nn.Module):
    """Single Shot MultiBox Detector over a feature extractor.

    Args:
        features: module mapping normalised images to a list of feature maps.
        head: :class:`SSDHead` matching those feature maps.
        anchors: ``Tensor[A, 4]`` normalised xyxy anchors, in head output order.
        image_size: ``(H, W)`` the model was built for (anchors depend on it).
        mean, std: per-channel normalisation applied to the ``[0, 1]`` input inside ``forward``.
        score_fn: ``"softmax"`` or ``"sigmoid"``: how class logits become scores (used by
            post-processing and export; recorded here because it belongs to how the model
            was trained).
    """

    def __init__(
        self,
        features: SSDFeatureExtractor,
        head: SSDHead,
        anchors: Tensor,
        image_size: tuple[int, int],
        *,
        mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
        std: tuple[float, float, float] = (0.5, 0.5, 0.5),
        score_fn: str = "softmax",
    ) -> None:
        super().__init__()
        self.features = features
        self.head = head
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.num_classes = head.num_classes
        self.score_fn = score_fn
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        # Recomputed from the config at build time, so not part of the state dict.
        self.register_buffer("anchors", anchors.to(torch.float32), persistent=False)

    @property
    def num_anchors(self) -> int:
        return int(self.anchors.shape[0])

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Raw predictions.

        Args:
            images: ``Tensor[B, 3, H, W]`` RGB in ``[0, 1]`` at ``self.image_size``.

        Returns:
            ``box_deltas Tensor[B, A, 4]`` ``(dx, dy, dw, dh)`` relative to ``self.anchors``, and
            ``class_logits Tensor[B, A, num_classes + 1]`` with background at index 0.
        """
        x = (images - self.mean) / self.std
        return self.head(self.features(x))
