"""Open any exported detector by its file suffix (``.onnx``, ``.tflite``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import ExportedDetector

__all__ = ["RUNTIME_SUFFIXES", "load_detector"]

#: File suffix -> ``"module:class"`` of its torch-free detector (imported on use).
RUNTIME_SUFFIXES: dict[str, str] = {
    ".onnx": "onnx_detector:Detector",
    ".tflite": "tflite_detector:TFLiteDetector",
}


def load_detector(path: str | Path, **kwargs: Any) -> ExportedDetector:
    """Load an exported model and its sidecar with the runtime its suffix names.

    Args:
        path: the exported model (``.onnx`` or ``.tflite``) with ``<name>.json`` next to it.
        **kwargs: passed to the detector's ``load`` (``sidecar_path``, ``score_thresh``,
            ``nms_thresh``, ``topk_candidates``, ``max_detections``, ``threads``).

    Returns:
        The detector: call it on an RGB ``uint8`` image.

    Raises:
        ValueError: an unknown suffix, or a model/sidecar that cannot be read.
        FileNotFoundError: the model or its sidecar is missing.
    """
    from importlib import import_module

    suffix = Path(path).suffix.lower()
    target = RUNTIME_SUFFIXES.get(suffix)
    if target is None:
        raise ValueError(
            f"{path}: unknown exported model type {suffix or '(no suffix)'}; the torch-free "
            f"runtime reads {', '.join(sorted(RUNTIME_SUFFIXES))}"
        )
    module, name = target.split(":")
    cls = getattr(import_module(f"{__package__}.{module}"), name)
    return cls.load(path, **kwargs)
