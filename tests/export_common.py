"""Tiny models and settings shared by the export tests (ONNX, ExecuTorch, TFLite, Core ML).

Not a test module: pytest puts ``tests/`` on ``sys.path``, so the test files import it by name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from detector.export import ExportError, ExportOptions, export_checkpoint
from detector.models import SSD, ssd_mobilenet_v1
from detector.runtime import iou_matrix

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


def assert_fails_before_work(
    options: ExportOptions, message: str, tmp_path: Path, monkeypatch
) -> None:
    """``export_checkpoint`` rejects ``options`` with ``message`` before reading the checkpoint
    or writing anything."""
    import detector.engine.checkpoint as ckpt

    def must_not_load(*args, **kw):
        raise AssertionError("the checkpoint was read before the request was checked")

    monkeypatch.setattr(ckpt, "load_detector", must_not_load)
    with pytest.raises(ExportError, match=message):
        export_checkpoint(tmp_path / "missing.pt", tmp_path, options, log=None)
    assert not any(tmp_path.iterdir())


def assert_same_detections(ours: dict, ref: dict, min_score: float = 0.3) -> None:
    """The detections scoring ``>= min_score`` agree: same count and labels, box IoU >= 0.9,
    scores within 1e-4 (both in decreasing score order)."""
    a = np.asarray(ours["scores"]) >= min_score
    b = np.asarray(ref["scores"]) >= min_score
    assert b.sum() > 0, "the test model should give confident detections"
    assert a.sum() == b.sum()
    np.testing.assert_array_equal(np.asarray(ours["labels"])[a], np.asarray(ref["labels"])[b])
    ious = iou_matrix(np.asarray(ours["boxes"])[a], np.asarray(ref["boxes"])[b]).diagonal()
    assert ious.min() >= 0.9
    np.testing.assert_allclose(
        np.asarray(ours["scores"])[a], np.asarray(ref["scores"])[b], atol=1e-4
    )
