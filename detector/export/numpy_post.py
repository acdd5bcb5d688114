"""Torch-free post-processing driven by an export sidecar (NumPy only; implemented once, in
:mod:`detector.runtime.numpy_ops`, which devices use without torch).

What a deployment without PyTorch does with an exported graph: read the sidecar, decode the raw
outputs with its anchors and box-coder settings, score with its ``score_fn``, run per-class top-k
and NMS with its settings, scale boxes to the original image. It mirrors
:func:`detector.postprocess.postprocess_detections` and is how verification reads every artifact,
so the sidecar is checked to be sufficient on every export.
"""

from __future__ import annotations

from ..runtime.numpy_ops import detections_from_outputs
from ..runtime.numpy_ops import iou_matrix as box_iou

__all__ = ["box_iou", "detections_from_outputs"]
