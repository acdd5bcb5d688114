"""What every torch-free exported detector shares: the sidecar, the input and the post-processing.

A format's detector (:class:`~detector.runtime.onnx_detector.Detector` for ONNX,
:class:`~detector.runtime.tflite_detector.TFLiteDetector` for TFLite) only has to open its model
and implement :meth:`ExportedDetector.run_raw`; resizing, decoding, NMS and class names are done
here from the sidecar JSON written next to the model by :mod:`detector.export`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .numpy_ops import detections_from_outputs

__all__ = ["ExportedDetector", "preprocess_image", "read_sidecar_file"]


def read_sidecar_file(model_path: str | Path, sidecar_path: str | Path | None = None) -> dict:
    """Parse the sidecar of an exported model.

    Args:
        model_path: the exported model (``.onnx``, ``.tflite`` ...).
        sidecar_path: the sidecar (default: ``model_path`` with the suffix ``.json``).

    Returns:
        The parsed sidecar.

    Raises:
        FileNotFoundError: the sidecar does not exist.
        ValueError: the sidecar is not valid JSON or lacks required keys.
    """
    path = Path(sidecar_path) if sidecar_path is not None else Path(model_path).with_suffix(".json")
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: sidecar JSON not found (it is written by export.py next to the "
            f"{Path(model_path).suffix or 'model'} file)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read sidecar JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a detector export sidecar (not a JSON object)")
    missing = [k for k in ("stage", "input", "postprocess", "scores") if k not in data]
    if missing:
        raise ValueError(f"{path}: not a detector export sidecar (missing {', '.join(missing)})")
    return data


def preprocess_image(image_rgb: np.ndarray, height_width: tuple[int, int]) -> np.ndarray:
    """RGB ``uint8 [H, W, 3]`` image to a ``float32 [1, 3, h, w]`` input in ``[0, 1]``."""
    h, w = height_width
    resized = cv2.resize(image_rgb, (int(w), int(h)), interpolation=cv2.INTER_LINEAR)
    return (resized.astype(np.float32) * np.float32(1.0 / 255.0)).transpose(2, 0, 1)[None].copy()


def settings_from_sidecar(sidecar: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """Post-processing settings and class names for a detector's constructor.

    Args:
        sidecar: the parsed sidecar.
        **overrides: ``score_thresh``, ``nms_thresh``, ``topk_candidates``, ``max_detections``;
            None keeps the sidecar's value.

    Returns:
        Keyword arguments ``score_thresh`` ... ``max_detections`` and ``class_names``.
    """
    post = sidecar["postprocess"]

    def pick(key: str, cast: type) -> Any:
        value = overrides.get(key)
        return cast(post[key] if value is None else value)

    classes = list(sidecar.get("classes") or [])
    if not classes:
        classes = [f"class{i}" for i in range(1, int(sidecar.get("num_classes", 0)) + 1)]
    return {
        "score_thresh": pick("score_thresh", float),
        "nms_thresh": pick("nms_thresh", float),
        "topk_candidates": pick("topk_candidates", int),
        "max_detections": pick("max_detections", int),
        "class_names": classes,
    }


@dataclass
class ExportedDetector:
    """Base of the torch-free detectors: call it on an RGB ``uint8`` image.

    Subclasses open their model in a ``load`` classmethod and implement :meth:`run_raw`.

    Attributes:
        session: the format's inference session (ONNX Runtime session, TFLite model ...).
        sidecar: the parsed sidecar.
        score_thresh, nms_thresh, topk_candidates, max_detections: post-processing settings
            (default: the sidecar's). For graphs that end with NMS, only ``score_thresh`` and
            ``max_detections`` can narrow what the graph returns.
        class_names: class names, ``class_names[label - 1]``.
    """

    session: Any
    sidecar: dict[str, Any]
    score_thresh: float
    nms_thresh: float
    topk_candidates: int
    max_detections: int
    class_names: list[str] = field(default_factory=list)

    @property
    def input_size(self) -> tuple[int, int]:
        """Model input ``(H, W)``."""
        h, w = self.sidecar["input"]["height_width"]
        return int(h), int(w)

    @property
    def stage(self) -> str:
        """Where the graph ends: ``raw``, ``decoded`` or ``nms``."""
        return str(self.sidecar["stage"])

    def run_raw(self, image_rgb: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's named outputs (float32) for one RGB ``uint8`` image."""
        raise NotImplementedError

    def __call__(self, image_rgb: np.ndarray) -> dict[str, Any]:
        """Detect objects in one image.

        Args:
            image_rgb: ``uint8 [H, W, 3]`` RGB image.

        Returns:
            ``{"boxes": float32 [K, 4] pixel xyxy in the original image, "scores": float32 [K]
            (decreasing), "labels": int64 [K] in 1..C, "class_names": list of K names}``.

        Raises:
            ValueError: the image is not ``[H, W, 3]``.
        """
        image_rgb = np.asarray(image_rgb)
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
            raise ValueError(f"expected an RGB image [H, W, 3], got shape {image_rgb.shape}")
        if image_rgb.dtype != np.uint8:
            image_rgb = np.clip(image_rgb, 0, 255).astype(np.uint8)
        height, width = image_rgb.shape[:2]
        settings = {
            "score_thresh": self.score_thresh,
            "nms_thresh": self.nms_thresh,
            "topk_candidates": self.topk_candidates,
            "max_detections": self.max_detections,
        }
        det = detections_from_outputs(
            self.run_raw(image_rgb), self.sidecar, [(height, width)], post=settings
        )[0]
        boxes, scores, labels = det["boxes"], det["scores"], det["labels"]
        names = [self.name_of(int(lab)) for lab in labels]
        return {"boxes": boxes, "scores": scores, "labels": labels, "class_names": names}

    def name_of(self, label: int) -> str:
        """Class name of a 1-based label."""
        if 1 <= label <= len(self.class_names):
            return self.class_names[label - 1]
        return f"class{label}"
