"""Tiny models and settings shared by the export tests (ONNX, ExecuTorch, TFLite, Core ML).

Not a test module: pytest puts ``tests/`` on ``sys.path``, so the test files import it by name.
"""

from __future__ import annotations

import torch

from detector.models import SSD, ssd_mobilenet_v1

CLASSES = ["circle", "square", "triangle"]
# Small post-processing settings keep the in-graph NMS cheap; the logic is the same at any size.
POST = {"score_thresh": 0.05, "nms_thresh": 0.45, "topk_candidates": 100, "max_detections": 50}


def tiny_model(
    size: tuple[int, int],
    *,
    score_fn: str = "softmax",
    seed: int = 0,
    random_batchnorm: bool = False,
) -> SSD:
    """alpha 0.25 SSD at ``size`` (H, W) in eval mode, with class predictors sharpened 6x so that
    a randomly initialised model gives confident, image-dependent detections to compare.

    Args:
        random_batchnorm: draw BatchNorm running statistics away from (0, 1), so that folding
            them into the convolutions is really exercised.
    """
    torch.manual_seed(seed)
    model = ssd_mobilenet_v1(len(CLASSES), alpha=0.25, image_size=size, score_fn=score_fn)
    with torch.no_grad():
        for p in model.head.class_predictors:
            p.weight.mul_(6.0)
        if random_batchnorm:
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 2.0)
    return model.eval()
