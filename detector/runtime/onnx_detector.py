"""Run an exported ONNX detector with NumPy, OpenCV and ONNX Runtime only (no PyTorch).

The sidecar JSON written next to the ``.onnx`` file by :mod:`detector.export` says how to build
the input (whole image resized to the model's ``(W, H)``, RGB, ``[0, 1]`` float, NCHW) and what
the outputs are; decoding and NMS run here in NumPy when the graph does not contain them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .numpy_ops import detections_from_outputs

__all__ = ["Detector", "preprocess_image", "read_sidecar_file"]


def read_sidecar_file(onnx_path: str | Path, sidecar_path: str | Path | None = None) -> dict:
    """Parse the sidecar of an exported model (``<name>.json`` next to ``<name>.onnx`` unless
    ``sidecar_path`` is given).

    Raises:
        FileNotFoundError: the sidecar does not exist.
        ValueError: the sidecar is not valid JSON or lacks required keys.
    """
    path = Path(sidecar_path) if sidecar_path is not None else Path(onnx_path).with_suffix(".json")
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: sidecar JSON not found (it is written by export.py next to the .onnx file)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read sidecar JSON ({exc})") from exc
    missing = [k for k in ("stage", "input", "postprocess", "scores") if k not in data]
    if missing:
        raise ValueError(f"{path}: not a detector export sidecar (missing {', '.join(missing)})")
    return data


def preprocess_image(image_rgb: np.ndarray, height_width: tuple[int, int]) -> np.ndarray:
    """RGB ``uint8 [H, W, 3]`` image to a ``float32 [1, 3, h, w]`` input in ``[0, 1]``."""
    h, w = height_width
    resized = cv2.resize(image_rgb, (int(w), int(h)), interpolation=cv2.INTER_LINEAR)
    return (resized.astype(np.float32) * np.float32(1.0 / 255.0)).transpose(2, 0, 1)[None].copy()


@dataclass
class Detector:
    """An exported detector ready to run.

    Build it with :meth:`load`; call it on an RGB ``uint8`` image.

    Attributes:
        session: the ONNX Runtime inference session.
        sidecar: the parsed sidecar.
        score_thresh, nms_thresh, topk_candidates, max_detections: post-processing settings
            (default: the sidecar's). For graphs that end with NMS, only ``score_thresh`` and
            ``max_detections`` can narrow what the graph returns.
    """

    session: Any
    sidecar: dict[str, Any]
    score_thresh: float
    nms_thresh: float
    topk_candidates: int
    max_detections: int
    class_names: list[str] = field(default_factory=list)

    @classmethod
    def load(
        cls,
        onnx_path: str | Path,
        *,
        sidecar_path: str | Path | None = None,
        score_thresh: float | None = None,
        nms_thresh: float | None = None,
        topk_candidates: int | None = None,
        max_detections: int | None = None,
        threads: int = 0,
    ) -> Detector:
        """Open ``onnx_path`` and its sidecar.

        Args:
            onnx_path: the exported ``.onnx`` model.
            sidecar_path: its sidecar (default: same name with ``.json``).
            score_thresh, nms_thresh, topk_candidates, max_detections: override the sidecar's
                post-processing settings.
            threads: intra-op threads of ONNX Runtime (0: its default).

        Raises:
            FileNotFoundError: the model or its sidecar is missing.
            ValueError: the model or sidecar cannot be read.
        """
        import onnxruntime as ort

        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise FileNotFoundError(f"{onnx_path}: ONNX model not found")
        sidecar = read_sidecar_file(onnx_path, sidecar_path)
        opts = ort.SessionOptions()
        if threads > 0:
            opts.intra_op_num_threads = threads
        try:
            session = ort.InferenceSession(
                str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ValueError(f"{onnx_path}: cannot load ONNX model ({exc})") from exc
        post = sidecar["postprocess"]
        classes = list(sidecar.get("classes") or [])
        if not classes:
            classes = [f"class{i}" for i in range(1, int(sidecar.get("num_classes", 0)) + 1)]
        return cls(
            session=session,
            sidecar=sidecar,
            score_thresh=float(post["score_thresh"] if score_thresh is None else score_thresh),
            nms_thresh=float(post["nms_thresh"] if nms_thresh is None else nms_thresh),
            topk_candidates=int(
                post["topk_candidates"] if topk_candidates is None else topk_candidates
            ),
            max_detections=int(
                post["max_detections"] if max_detections is None else max_detections
            ),
            class_names=classes,
        )

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
        """The graph's named outputs for one RGB ``uint8`` image."""
        name = self.sidecar["input"].get("name", "images")
        inputs = {name: preprocess_image(image_rgb, self.input_size)}
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, inputs), strict=True))

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
