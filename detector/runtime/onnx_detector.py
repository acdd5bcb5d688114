"""Run an exported ONNX detector with NumPy, OpenCV and ONNX Runtime only (no PyTorch).

The sidecar JSON written next to the ``.onnx`` file by :mod:`detector.export` says how to build
the input (whole image resized to the model's ``(W, H)``, RGB, ``[0, 1]`` float, NCHW) and what
the outputs are; decoding and NMS run here in NumPy when the graph does not contain them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import ExportedDetector, preprocess_image, read_sidecar_file, settings_from_sidecar

__all__ = ["Detector", "preprocess_image", "read_sidecar_file"]


class Detector(ExportedDetector):
    """An exported ONNX detector ready to run.

    Build it with :meth:`load`; call it on an RGB ``uint8`` image (see
    :meth:`~detector.runtime.base.ExportedDetector.__call__`).

    Attributes:
        session: the ONNX Runtime inference session.
        sidecar: the parsed sidecar.
        score_thresh, nms_thresh, topk_candidates, max_detections: post-processing settings
            (default: the sidecar's). For graphs that end with NMS, only ``score_thresh`` and
            ``max_detections`` can narrow what the graph returns.
    """

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
        settings = settings_from_sidecar(
            sidecar,
            score_thresh=score_thresh,
            nms_thresh=nms_thresh,
            topk_candidates=topk_candidates,
            max_detections=max_detections,
        )
        return cls(session=session, sidecar=sidecar, **settings)

    def run_raw(self, image_rgb: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's named outputs for one RGB ``uint8`` image."""
        name = self.sidecar["input"].get("name", "images")
        inputs = {name: preprocess_image(image_rgb, self.input_size)}
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, inputs), strict=True))
