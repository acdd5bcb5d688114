"""Post-processing settings: the one type for them, shared by every command and the library.

Torch-free (``detect.py model=<.onnx>`` and the runtime import it without PyTorch). It is the
Hydra schema of the ``postprocess`` group (``conf/postprocess/*.yaml``: ``default`` for
evaluation, ``detect`` for showing detections) and what :func:`detector.postprocess.\
postprocess_detections`, the exporters and the runtime take.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SCORE_FUNCTIONS", "PostprocessConfig"]

#: How class scores come from the logits (a property of the model, see ``ModelConfig.score_fn``).
SCORE_FUNCTIONS = ("softmax", "sigmoid")


@dataclass
class PostprocessConfig:
    """Scalar post-processing settings (defaults as torchvision's SSD).

    Pass them on with ``postprocess_detections(..., **dataclasses.asdict(settings))``. How scores
    come from logits (softmax or sigmoid) is the model's, not a setting.

    Attributes:
        score_thresh: candidates must score strictly above this, in ``[0, 1)``.
        nms_thresh: IoU threshold of the per-class NMS, in ``[0, 1]``.
        topk_candidates: best candidates kept per class before NMS (>= 1).
        max_detections: detections kept per image after NMS (>= 1).
        clip_boxes: clip the boxes to the image.
    """

    score_thresh: float = 0.01
    nms_thresh: float = 0.45
    topk_candidates: int = 400
    max_detections: int = 200
    clip_boxes: bool = True

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise ``ValueError`` naming the first value out of range."""
        if not 0.0 <= self.score_thresh < 1.0:
            raise ValueError(f"postprocess.score_thresh must be in [0, 1), got {self.score_thresh}")
        if not 0.0 <= self.nms_thresh <= 1.0:
            raise ValueError(f"postprocess.nms_thresh must be in [0, 1], got {self.nms_thresh}")
        if self.topk_candidates < 1 or self.max_detections < 1:
            raise ValueError(
                "postprocess.topk_candidates and postprocess.max_detections must be >= 1, got "
                f"{self.topk_candidates} and {self.max_detections}"
            )
