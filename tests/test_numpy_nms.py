"""The torch-free NumPy post-processing against torchvision's batched NMS pipeline.

:func:`detector.runtime.numpy_ops.class_nms` stops early and first works on the best
candidates only; these cases make sure that shortcut changes nothing, with trained-model-like
loads (tens of thousands of candidates over many classes) where it kicks in, many score ties,
and degenerate boxes.
"""

import numpy as np
import pytest
import torch

from detector.postprocess import postprocess_detections
from detector.runtime.numpy_ops import class_nms, greedy_nms


def _case(seed: int, anchors: int, classes: int, ties: bool):
    rng = np.random.default_rng(seed)
    # clustered boxes, as detectors produce: many overlapping boxes per object
    centres = rng.uniform(0.1, 0.9, (12, 2))
    c = centres[rng.integers(0, 12, anchors)] + rng.normal(0, 0.03, (anchors, 2))
    wh = rng.uniform(0.02, 0.3, (anchors, 2))
    boxes = np.concatenate([c - wh / 2, c + wh / 2], axis=1).astype(np.float32)
    boxes[rng.random(anchors) < 0.02, 2:] = boxes[rng.random(anchors) < 0.02, :2][:1]
    logits = rng.normal(-3, 2, (anchors, classes + 1)).astype(np.float32)
    if ties:
        logits = np.round(logits)
    return boxes, logits


def _torch_reference(boxes, logits, **kw):
    """postprocess_detections (torchvision batched_nms) on the same decoded boxes: zero deltas
    against anchors equal to the boxes decode to the boxes themselves."""
    det = postprocess_detections(
        torch.zeros(1, boxes.shape[0], 4),
        torch.from_numpy(logits)[None],
        torch.from_numpy(boxes),
        [(1, 1)],
        score_fn="sigmoid",
        clip_boxes=False,
        **kw,
    )[0]
    return det["boxes"].numpy(), det["scores"].numpy(), det["labels"].numpy()


_COCO = dict(score_thresh=0.01, nms_thresh=0.45, topk_candidates=400, max_detections=200)


@pytest.mark.parametrize(
    ("seed", "anchors", "classes", "kw"),
    [
        (0, 1917, 90, _COCO),
        (1, 1917, 90, {**_COCO, "max_detections": 20}),
        (
            2,
            4420,
            1,
            dict(score_thresh=0.02, nms_thresh=0.3, topk_candidates=5000, max_detections=750),
        ),
        (
            3,
            3000,
            20,
            dict(score_thresh=0.3, nms_thresh=0.6, topk_candidates=50, max_detections=10),
        ),
        (
            4,
            500,
            5,
            dict(score_thresh=0.0, nms_thresh=0.5, topk_candidates=100, max_detections=1000),
        ),
    ],
)
def test_class_nms_matches_torchvision_pipeline(seed, anchors, classes, kw) -> None:
    """Distinct scores (with ties, torchvision's NMS order among equal scores is unspecified, and
    so is which of two equal overlapping boxes survives; the next test covers ties)."""
    boxes, logits = _case(seed, anchors, classes, ties=False)
    scores = 1.0 / (1.0 + np.exp(-logits[:, 1:].astype(np.float32)))
    ours = class_nms(boxes, scores, **kw)
    ref = _torch_reference(boxes, logits, **kw)
    assert ours[0].shape[0] == ref[0].shape[0] > 0
    np.testing.assert_array_equal(ours[2], ref[2])
    np.testing.assert_allclose(ours[0], ref[0], atol=1e-6)
    np.testing.assert_allclose(ours[1], ref[1], rtol=1e-6)


def test_class_nms_equals_plain_per_class_greedy() -> None:
    """The early-stopping result equals the textbook per-class loop, ties included."""
    boxes, logits = _case(7, 2500, 30, True)
    scores = 1.0 / (1.0 + np.exp(-logits[:, 1:]))
    kw = dict(score_thresh=0.05, nms_thresh=0.45, topk_candidates=300, max_detections=100)
    parts = []
    for c in range(scores.shape[1]):
        col = scores[:, c]
        cand = np.argsort(-col, kind="stable")[: kw["topk_candidates"]]
        cand = cand[col[cand] > kw["score_thresh"]]
        keep = cand[greedy_nms(boxes[cand], col[cand], kw["nms_thresh"])]
        parts += [(col[k], c + 1, k) for k in keep.tolist()]
    parts.sort(key=lambda t: -t[0])  # stable: class order, then kept order, for equal scores
    parts = parts[: kw["max_detections"]]
    ours = class_nms(boxes, scores, **kw)
    assert ours[2].tolist() == [p[1] for p in parts]
    np.testing.assert_array_equal(ours[0], boxes[[p[2] for p in parts]])


def test_class_nms_empty_and_degenerate() -> None:
    boxes = np.zeros((10, 4), np.float32)
    scores = np.full((10, 3), 0.5, np.float32)
    b, s, lab = class_nms(
        boxes, scores, score_thresh=0.9, nms_thresh=0.5, topk_candidates=5, max_detections=5
    )
    assert b.shape == (0, 4) and s.shape == (0,) and lab.dtype == np.int64
    # zero-area boxes never suppress each other (IoU 0), so every class keeps its top-k
    b, s, lab = class_nms(
        boxes, scores, score_thresh=0.1, nms_thresh=0.5, topk_candidates=4, max_detections=100
    )
    assert b.shape[0] == 12 and sorted(set(lab.tolist())) == [1, 2, 3]
