"""Anchor matching: agreement with torchvision's SSDMatcher and hand-built cases."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection._utils import SSDMatcher
from torchvision.ops import box_iou

from detector.matcher import match_anchors, match_anchors_batch, pad_ground_truth


def _random_boxes(n: int, generator: torch.Generator, max_size: float = 0.5) -> torch.Tensor:
    centres = torch.rand(n, 2, generator=generator)
    sizes = torch.rand(n, 2, generator=generator) * max_size + 0.01
    return torch.cat((centres - sizes / 2, centres + sizes / 2), dim=1)


def _reference(gt: torch.Tensor, anchors: torch.Tensor, threshold: float) -> torch.Tensor:
    if gt.numel() == 0:  # SSDMatcher refuses empty targets; torchvision's SSD uses all -1
        return torch.full((anchors.shape[0],), -1, dtype=torch.int64)
    return SSDMatcher(threshold)(box_iou(gt, anchors))


# Five unit anchors side by side along x: [i, 0, i + 1, 1].
_ROW_ANCHORS = torch.tensor([[i, 0.0, i + 1, 1.0] for i in range(5)])


@pytest.mark.parametrize(
    ("gt", "threshold", "expected"),
    [
        # IoU rows: g0 [1, 0, 0, 0, 0]; g1 [0, 1/3, 1/3, 0, 0] (tie: first anchor forced);
        # g2 [0, 0, 0, 0.556, 0.444].
        (
            [[0.0, 0.0, 1.0, 1.0], [1.5, 0.0, 2.5, 1.0], [3.0, 0.0, 4.8, 1.0]],
            0.5,
            [0, 1, -1, 2, -1],
        ),
        # g0 and g1 both have their best IoU on anchor 0 (1.0 and 0.833): the later box takes it
        # although g0 matches it better; g2 [0, 0, 0.667, 0.111, 0].
        (
            [[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.2, 1.0], [2.2, 0.0, 3.2, 1.0]],
            0.5,
            [1, -1, 2, -1, -1],
        ),
        # Threshold 0.3: g1 [0, 0.556, 0.4, 0, 0] also takes anchor 2 (0.4 >= 0.3, beats g2's 0.1);
        # g2 [0, 0, 0.1, 0.833, 0]; g0 is tiny inside anchor 4 (IoU 0.04): forced onto it.
        (
            [[4.4, 0.4, 4.6, 0.6], [1.0, 0.0, 2.8, 1.0], [2.8, 0.0, 4.0, 1.0]],
            0.3,
            [-1, 1, 1, 2, 0],
        ),
    ],
)
def test_hand_built_3x5(gt: list[list[float]], threshold: float, expected: list[int]) -> None:
    gt_t = torch.tensor(gt)
    result = match_anchors(gt_t, _ROW_ANCHORS, threshold)
    assert result.dtype == torch.int64
    assert result.tolist() == expected
    assert torch.equal(result, _reference(gt_t, _ROW_ANCHORS, threshold))


def test_iou_equal_to_threshold_is_a_match() -> None:
    anchors = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, 1.0], [3.0, 0.0, 4.0, 1.0]])
    gt = torch.tensor([[0.0, 0.0, 1.0, 1.0]])  # IoU 1, exactly 0.5, 0
    assert match_anchors(gt, anchors, 0.5).tolist() == [0, 0, -1]


def test_no_ground_truth_gives_background() -> None:
    anchors = _random_boxes(50, torch.Generator().manual_seed(1))
    for empty in (torch.zeros(0, 4), torch.zeros(0)):
        result = match_anchors(empty, anchors)
        assert result.shape == (50,)
        assert result.dtype == torch.int64
        assert (result == -1).all()
    assert match_anchors_batch([], anchors).shape == (0, 50)


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("seed", range(4))
def test_random_matches_torchvision(seed: int, threshold: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    anchors = _random_boxes(500, generator)
    batch = [
        _random_boxes(int(torch.randint(0, 12, (1,), generator=generator)), generator)
        for _ in range(6)
    ]
    batch[2] = torch.zeros(0, 4)
    expected = torch.stack([_reference(gt, anchors, threshold) for gt in batch])
    assert torch.equal(match_anchors_batch(batch, anchors, threshold), expected)
    for gt, row in zip(batch, expected, strict=True):
        assert torch.equal(match_anchors(gt, anchors, threshold), row)


def test_every_ground_truth_is_forced_onto_its_best_anchor() -> None:
    # Tiny boxes inside anchors 4, 0 and 2: every IoU is far below the threshold.
    gt = torch.tensor([[4.4, 0.4, 4.6, 0.6], [0.1, 0.1, 0.2, 0.2], [2.5, 0.5, 2.6, 0.9]])
    assert match_anchors(gt, _ROW_ANCHORS, 0.5).tolist() == [1, -1, 2, -1, 0]


def test_pad_ground_truth_layout() -> None:
    boxes = [torch.ones(2, 4), torch.zeros(0, 4), 2 * torch.ones(3, 4)]
    labels = [torch.tensor([1, 2]), torch.zeros(0, dtype=torch.int64), torch.tensor([3, 4, 5])]
    gt = pad_ground_truth(boxes, labels)
    assert gt.boxes.shape == (3, 3, 4)
    assert gt.valid.tolist() == [[True, True, False], [False, False, False], [True, True, True]]
    assert gt.labels is not None
    assert gt.labels.tolist() == [[1, 2, 0], [0, 0, 0], [3, 4, 5]]
    assert gt.flat_index.tolist() == [0, 1, 6, 7, 8]
    empty = pad_ground_truth([torch.zeros(0, 4)] * 2)
    assert empty.boxes.shape == (2, 1, 4)
    assert not empty.valid.any()
