"""Torch-free inference for exported detectors (NumPy, OpenCV and ONNX Runtime only).

Example::

    from detector.runtime import Detector

    det = Detector.load("outputs/export/<run>/best.onnx")  # reads best.json next to it
    result = det(image_rgb_uint8)  # boxes (pixel xyxy), scores, labels (1..C), class_names

Nothing in this package imports PyTorch.
"""

from __future__ import annotations

from .numpy_ops import class_nms, decode_deltas, greedy_nms, iou_matrix
from .onnx_detector import Detector, preprocess_image, read_sidecar_file

__all__ = [
    "Detector",
    "class_nms",
    "decode_deltas",
    "greedy_nms",
    "iou_matrix",
    "preprocess_image",
    "read_sidecar_file",
]
