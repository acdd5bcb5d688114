"""Torch-free inference for exported detectors (NumPy, OpenCV and ONNX Runtime or the LiteRT
interpreter only).

Example::

    from detector.runtime import Detector

    det = Detector.load("outputs/export/<run>/best.onnx")  # reads best.json next to it
    result = det(image_rgb_uint8)  # boxes (pixel xyxy), scores, labels (1..C), class_names

    from detector.runtime import load_detector

    det = load_detector("outputs/export/<run>/best.tflite")  # picks the runtime by suffix

Nothing in this package imports PyTorch.
"""

from __future__ import annotations

from .base import ExportedDetector
from .loader import load_detector
from .numpy_ops import class_nms, decode_deltas, greedy_nms, iou_matrix
from .onnx_detector import Detector, preprocess_image, read_sidecar_file
from .tflite_detector import TFLiteDetector

__all__ = [
    "Detector",
    "ExportedDetector",
    "TFLiteDetector",
    "class_nms",
    "decode_deltas",
    "greedy_nms",
    "iou_matrix",
    "load_detector",
    "preprocess_image",
    "read_sidecar_file",
]
