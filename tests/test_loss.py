"""MultiBoxLoss: agreement with torchvision's SSD loss, hand-computed values and robustness."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor
from torchvision.models.detection import _utils as tv_utils
from torchvision.models.detection.ssd import SSD
from torchvision.ops import box_iou, sigmoid_focal_loss

from detector.loss import MultiBoxLoss

# --------------------------------------------------------------------------------------------------
# helpers


def _grid_anchors(sizes: tuple[int, ...] = (10, 5, 3, 1)) -> Tensor:
    """Small SSD-like anchor set: per cell, a square, a 2:1 and a 1:2 box (normalised xyxy)."""
    anchors = []
    for level, size in enumerate(sizes):
        scale = 0.2 + 0.7 * level / max(1, len(sizes) - 1)
        centres = (torch.arange(size, dtype=torch.float32) + 0.5) / size
        cy, cx = torch.meshgrid(centres, centres, indexing="ij")
        for ratio in (1.0, 2.0, 0.5):
            w = scale * math.sqrt(ratio)
            h = scale / math.sqrt(ratio)
            anchors.append(
                torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1).reshape(-1, 4)
            )
    return torch.cat(anchors)  # A = 3 * (100 + 25 + 9 + 1) = 405; reaches outside [0, 1]


def _random_targets(
    num_images: int, num_classes: int, generator: torch.Generator, max_boxes: int = 5
) -> list[dict[str, Tensor]]:
    targets = []
    for _ in range(num_images):
        n = int(torch.randint(1, max_boxes + 1, (1,), generator=generator))
        centres = torch.rand(n, 2, generator=generator) * 0.8 + 0.1
        sizes = torch.rand(n, 2, generator=generator) * 0.5 + 0.05
        boxes = torch.cat((centres - sizes / 2, centres + sizes / 2), dim=1).clamp(0, 1)
        labels = torch.randint(1, num_classes + 1, (n,), generator=generator)
        targets.append({"boxes": boxes, "labels": labels})
    return targets


def _torchvision_matches(targets: list[dict[str, Tensor]], anchors: Tensor) -> list[Tensor]:
    matcher = tv_utils.SSDMatcher(0.5)
    matches = []
    for target in targets:
        if target["boxes"].numel() == 0:  # as torchvision's SSD.forward
            matches.append(torch.full((anchors.shape[0],), -1, dtype=torch.int64))
        else:
            matches.append(matcher(box_iou(target["boxes"], anchors)))
    return matches


def _torchvision_loss(
    box_deltas: Tensor, class_logits: Tensor, anchors: Tensor, targets: list[dict[str, Tensor]]
) -> dict[str, Tensor]:
    """torchvision's ``SSD.compute_loss`` called unbound on a stand-in holding its attributes."""
    stand_in = SimpleNamespace(
        box_coder=tv_utils.BoxCoder(weights=(10.0, 10.0, 5.0, 5.0)), neg_to_pos_ratio=3
    )
    head_outputs = {"bbox_regression": box_deltas, "cls_logits": class_logits}
    anchors_list = [anchors] * box_deltas.shape[0]
    matches = _torchvision_matches(targets, anchors)
    return SSD.compute_loss(stand_in, targets, head_outputs, anchors_list, matches)  # type: ignore[arg-type]


def _random_case(
    seed: int, num_images: int = 4, num_classes: int = 5, empty: tuple[int, ...] = ()
) -> tuple[Tensor, Tensor, Tensor, list[dict[str, Tensor]]]:
    generator = torch.Generator().manual_seed(seed)
    anchors = _grid_anchors()
    targets = _random_targets(num_images, num_classes, generator)
    for i in empty:
        targets[i] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    box_deltas = torch.randn(num_images, anchors.shape[0], 4, generator=generator)
    class_logits = 2 * torch.randn(
        num_images, anchors.shape[0], num_classes + 1, generator=generator
    )
    return box_deltas, class_logits, anchors, targets


# --------------------------------------------------------------------------------------------------
# agreement with torchvision


@pytest.mark.parametrize(
    ("seed", "num_images", "empty"),
    [(0, 1, ()), (1, 4, ()), (2, 4, (1,)), (3, 6, (0, 5)), (4, 3, ()), (5, 2, (1,))],
)
def test_default_loss_equals_torchvision(
    seed: int, num_images: int, empty: tuple[int, ...]
) -> None:
    box_deltas, class_logits, anchors, targets = _random_case(seed, num_images, empty=empty)
    # The comparison is exact only while no image asks for more negatives than it has.
    for match in _torchvision_matches(targets, anchors):
        num_pos = int((match >= 0).sum())
        assert 3 * num_pos <= anchors.shape[0] - num_pos

    ours = MultiBoxLoss()(box_deltas, class_logits, anchors, targets)
    reference = _torchvision_loss(box_deltas, class_logits, anchors, targets)

    assert ours["num_pos"] > 0
    torch.testing.assert_close(ours["loss_box"], reference["bbox_regression"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours["loss_cls"], reference["classification"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        ours["loss"],
        reference["bbox_regression"] + reference["classification"],
        rtol=1e-5,
        atol=1e-5,
    )


def test_torchvision_agreement_in_pixel_units() -> None:
    """Encoding and IoU are scale invariant: torchvision on pixel boxes gives the same loss."""
    box_deltas, class_logits, anchors, targets = _random_case(11, 3)
    scale = torch.tensor([300.0, 200.0, 300.0, 200.0])
    pixel_targets = [{"boxes": t["boxes"] * scale, "labels": t["labels"]} for t in targets]
    ours = MultiBoxLoss()(box_deltas, class_logits, anchors, targets)
    reference = _torchvision_loss(box_deltas, class_logits, anchors * scale, pixel_targets)
    torch.testing.assert_close(ours["loss_box"], reference["bbox_regression"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours["loss_cls"], reference["classification"], rtol=1e-5, atol=1e-5)


def test_float64_agreement_is_tight() -> None:
    box_deltas, class_logits, anchors, targets = _random_case(12, 4, empty=(2,))
    targets = [{"boxes": t["boxes"].double(), "labels": t["labels"]} for t in targets]
    ours = MultiBoxLoss()(box_deltas.double(), class_logits.double(), anchors.double(), targets)
    reference = _torchvision_loss(
        box_deltas.double(), class_logits.double(), anchors.double(), targets
    )
    assert ours["loss"].dtype == torch.float64
    torch.testing.assert_close(
        ours["loss_box"], reference["bbox_regression"], rtol=1e-10, atol=1e-10
    )
    torch.testing.assert_close(
        ours["loss_cls"], reference["classification"], rtol=1e-10, atol=1e-10
    )


# --------------------------------------------------------------------------------------------------
# hand-computed values


def _two_anchor_case() -> tuple[Tensor, Tensor, Tensor, list[dict[str, Tensor]]]:
    anchors = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])
    # IoU with anchor 0 = 0.225 / 0.275 = 0.82, with anchor 1 = 0; encoded: (1, 0, 0, 0).
    targets = [{"boxes": torch.tensor([[0.05, 0.0, 0.55, 0.5]]), "labels": torch.tensor([1])}]
    box_deltas = torch.tensor([[[0.0, 0.0, 0.0, 2.0], [5.0, 5.0, 5.0, 5.0]]])
    # anchor 0 (label 1): CE = ln 2; anchor 1 (background): CE = -ln(3/4) = ln(4/3).
    class_logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]])
    return box_deltas, class_logits, anchors, targets


def test_two_anchor_hand_computed() -> None:
    box_deltas, class_logits, anchors, targets = _two_anchor_case()
    out = MultiBoxLoss()(box_deltas, class_logits, anchors, targets)
    # smooth-L1 (beta 1): |0 - 1| -> 0.5, |2 - 0| -> 1.5; one positive.
    assert out["num_pos"].item() == 1
    assert out["loss_box"].item() == pytest.approx(2.0, abs=1e-5)
    # 3 negatives wanted, 1 available: the positive's CE + the one negative's CE.
    expected_cls = math.log(2.0) + math.log(4.0 / 3.0)
    assert out["loss_cls"].item() == pytest.approx(expected_cls, abs=1e-6)
    assert out["loss"].item() == pytest.approx(2.0 + expected_cls, abs=1e-5)


def test_two_anchor_differs_from_torchvision_only_by_the_double_counted_positive() -> None:
    """Documented divergence: torchvision's uncapped ranking re-adds the positive's CE."""
    box_deltas, class_logits, anchors, targets = _two_anchor_case()
    out = MultiBoxLoss()(box_deltas, class_logits, anchors, targets)
    reference = _torchvision_loss(box_deltas, class_logits, anchors, targets)
    torch.testing.assert_close(out["loss_box"], reference["bbox_regression"])
    torch.testing.assert_close(
        out["loss_cls"] + math.log(2.0), reference["classification"], rtol=1e-6, atol=1e-6
    )


def test_smooth_l1_beta_box_weight_and_ratio() -> None:
    box_deltas, class_logits, anchors, targets = _two_anchor_case()
    out = MultiBoxLoss(smooth_l1_beta=0.5, box_weight=2.0, neg_pos_ratio=0.0)(
        box_deltas, class_logits, anchors, targets
    )
    # beta 0.5: |1| -> 1 - 0.25, |2| -> 2 - 0.25.
    assert out["loss_box"].item() == pytest.approx(2.5, abs=1e-5)
    assert out["loss_cls"].item() == pytest.approx(math.log(2.0), abs=1e-6)  # no negatives
    assert out["loss"].item() == pytest.approx(2 * 2.5 + math.log(2.0), abs=1e-5)


def test_hard_negatives_are_the_highest_losses() -> None:
    """One positive, ratio 2: exactly the two largest background cross-entropies are added."""
    anchors = torch.tensor([[0.1 * i, 0.0, 0.1 * i + 0.1, 0.1] for i in range(8)])
    targets = [{"boxes": anchors[3:4].clone(), "labels": torch.tensor([2])}]
    class_logits = torch.zeros(1, 8, 3)
    background_scores = torch.tensor([3.0, -1.0, 0.5, 0.0, -2.0, 1.0, 2.0, -0.5])
    class_logits[0, :, 0] = background_scores  # higher background logit -> lower background CE
    out = MultiBoxLoss(neg_pos_ratio=2.0)(torch.zeros(1, 8, 4), class_logits, anchors, targets)
    ce = F.cross_entropy(class_logits[0], torch.tensor([0, 0, 0, 2, 0, 0, 0, 0]), reduction="none")
    # negatives sorted by CE: anchor 4 (bg -2), anchor 1 (bg -1), ...
    expected = ce[3] + ce[4] + ce[1]
    assert out["loss_cls"].item() == pytest.approx(expected.item(), abs=1e-6)
    assert out["loss_box"].item() == pytest.approx(0.0, abs=1e-6)


def test_empty_images_add_only_their_nothing() -> None:
    """An image without boxes mines 0 negatives (torchvision's rule): its logits do not matter."""
    box_deltas, class_logits, anchors, targets = _random_case(21, 3, empty=(1,))
    base = MultiBoxLoss()(box_deltas, class_logits, anchors, targets)
    changed_logits = class_logits.clone()
    changed_logits[1] = 10 * torch.randn_like(changed_logits[1])
    changed_deltas = box_deltas.clone()
    changed_deltas[1] = 10.0
    changed = MultiBoxLoss()(changed_deltas, changed_logits, anchors, targets)
    torch.testing.assert_close(base["loss"], changed["loss"])


@pytest.mark.parametrize("classification", ["softmax", "focal"])
def test_all_images_empty(classification: str) -> None:
    anchors = _grid_anchors((3, 1))
    targets = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}] * 2
    box_deltas = torch.randn(2, anchors.shape[0], 4, requires_grad=True)
    class_logits = torch.randn(2, anchors.shape[0], 4, requires_grad=True)
    out = MultiBoxLoss(classification=classification)(box_deltas, class_logits, anchors, targets)
    assert out["num_pos"].item() == 0
    assert out["loss_box"].item() == 0.0
    assert torch.isfinite(out["loss"])
    if classification == "softmax":
        assert out["loss_cls"].item() == 0.0
    else:  # focal: every anchor is a (down-weighted) negative
        assert out["loss_cls"].item() > 0.0
    out["loss"].backward()
    assert box_deltas.grad is not None
    assert class_logits.grad is not None
    assert torch.isfinite(class_logits.grad).all()


# --------------------------------------------------------------------------------------------------
# focal mode


@pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 2.0), (-1.0, 0.0), (0.5, 1.5)])
def test_focal_matches_direct_computation(alpha: float, gamma: float) -> None:
    box_deltas, class_logits, anchors, targets = _random_case(31, 4, num_classes=6, empty=(2,))
    out = MultiBoxLoss(classification="focal", focal_alpha=alpha, focal_gamma=gamma)(
        box_deltas, class_logits, anchors, targets
    )
    one_hot = torch.zeros((*class_logits.shape[:2], 6))
    num_pos = 0
    for i, (target, match) in enumerate(
        zip(targets, _torchvision_matches(targets, anchors), strict=True)
    ):
        positive = match >= 0
        num_pos += int(positive.sum())
        one_hot[i, positive, target["labels"][match[positive]] - 1] = 1.0
    expected_cls = sigmoid_focal_loss(
        class_logits[..., 1:], one_hot, alpha=alpha, gamma=gamma, reduction="sum"
    ) / max(1, num_pos)
    reference = _torchvision_loss(box_deltas, class_logits, anchors, targets)
    assert out["num_pos"].item() == num_pos
    torch.testing.assert_close(out["loss_cls"], expected_cls, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["loss_box"], reference["bbox_regression"], rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# gradients, dtypes


def test_gradients_flow_to_positives_and_mined_negatives() -> None:
    box_deltas, class_logits, anchors, targets = _random_case(41, 3, empty=(2,))
    box_deltas.requires_grad_(True)
    class_logits.requires_grad_(True)
    out = MultiBoxLoss()(box_deltas, class_logits, anchors, targets)
    out["loss"].backward()
    assert box_deltas.grad is not None and class_logits.grad is not None
    assert torch.isfinite(box_deltas.grad).all() and torch.isfinite(class_logits.grad).all()
    matches = torch.stack(_torchvision_matches(targets, anchors))
    positive = matches >= 0
    box_touched = box_deltas.grad.abs().sum(-1) > 0
    assert torch.equal(box_touched, positive)  # random deltas: no exact zero gradients
    cls_touched = class_logits.grad.abs().sum(-1) > 0
    num_pos = positive.sum(1)
    assert torch.equal((cls_touched & positive).sum(1), num_pos)
    assert torch.equal((cls_touched & ~positive).sum(1), 3 * num_pos)  # 0 for the empty image


def test_focal_gradients_reach_all_anchors_but_not_background_column() -> None:
    box_deltas, class_logits, anchors, targets = _random_case(42, 2)
    class_logits.requires_grad_(True)
    MultiBoxLoss(classification="focal")(box_deltas, class_logits, anchors, targets)[
        "loss"
    ].backward()
    assert class_logits.grad is not None
    assert (class_logits.grad[..., 0] == 0).all()
    assert (class_logits.grad[..., 1:].abs().sum(-1) > 0).all()


@pytest.mark.parametrize("classification", ["softmax", "focal"])
def test_bfloat16_inputs_and_autocast(classification: str) -> None:
    box_deltas, class_logits, anchors, targets = _random_case(51, 2)
    box_deltas = box_deltas.bfloat16().requires_grad_(True)
    class_logits = class_logits.bfloat16().requires_grad_(True)
    criterion = MultiBoxLoss(classification=classification)
    expected = criterion(box_deltas.float(), class_logits.float(), anchors, targets)
    out = criterion(box_deltas, class_logits, anchors, targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_autocast = criterion(box_deltas, class_logits, anchors, targets)
    for result in (out, out_autocast):
        assert result["loss"].dtype == torch.float32
        torch.testing.assert_close(result["loss"], expected["loss"], rtol=1e-5, atol=1e-5)
    out["loss"].backward()
    assert box_deltas.grad is not None and box_deltas.grad.dtype == torch.bfloat16
    assert class_logits.grad is not None and torch.isfinite(class_logits.grad.float()).all()


# --------------------------------------------------------------------------------------------------
# robustness


@pytest.mark.parametrize("classification", ["softmax", "focal"])
@pytest.mark.parametrize(
    "degenerate",
    [
        [0.3, 0.3, 0.3, 0.6],  # zero width
        [0.1, 0.5, 0.4, 0.5],  # zero height
        [0.7, 0.7, 0.7, 0.7],  # a point
        [0.9, 0.9, 0.6, 0.8],  # inverted
    ],
)
def test_degenerate_boxes_give_finite_loss(degenerate: list[float], classification: str) -> None:
    anchors = _grid_anchors((4, 2))
    boxes = torch.tensor([degenerate, [0.0, 0.0, 1.0, 1.0]])
    targets = [{"boxes": boxes, "labels": torch.tensor([1, 2])}]
    box_deltas = torch.randn(1, anchors.shape[0], 4, requires_grad=True)
    class_logits = torch.randn(1, anchors.shape[0], 3, requires_grad=True)
    # Every IoU of the degenerate box is 0: it is forced onto anchor 0, and torchvision's encoding
    # takes log(0) (or log of a negative) there.
    reference = _torchvision_loss(box_deltas, class_logits, anchors, targets)
    assert not torch.isfinite(reference["bbox_regression"])
    out = MultiBoxLoss(classification=classification)(box_deltas, class_logits, anchors, targets)
    assert out["num_pos"].item() >= 2
    assert all(torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    assert box_deltas.grad is not None and torch.isfinite(box_deltas.grad).all()
    assert (box_deltas.grad[0, 0] != 0).any()  # anchor 0 regresses towards the degenerate box


_finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False)
_coordinate = st.floats(min_value=-1.0, max_value=2.0, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    boxes=st.lists(
        st.lists(st.tuples(*[_coordinate] * 4), min_size=0, max_size=4), min_size=1, max_size=3
    ),
    num_classes=st.integers(1, 4),
    scale=st.sampled_from([0.0, 1e-3, 1.0, 30.0, 1e4]),
    special=_finite,
    seed=st.integers(0, 2**16),
    classification=st.sampled_from(["softmax", "focal"]),
)
def test_property_finite_and_non_negative(
    boxes: list[list[tuple[float, float, float, float]]],
    num_classes: int,
    scale: float,
    special: float,
    seed: int,
    classification: str,
) -> None:
    generator = torch.Generator().manual_seed(seed)
    anchors = _grid_anchors((3, 1))
    num_images, num_anchors = len(boxes), anchors.shape[0]
    targets = [
        {
            "boxes": torch.tensor(image, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.randint(1, num_classes + 1, (len(image),), generator=generator),
        }
        for image in boxes
    ]
    box_deltas = scale * torch.randn(num_images, num_anchors, 4, generator=generator)
    class_logits = scale * torch.randn(
        num_images, num_anchors, num_classes + 1, generator=generator
    )
    box_deltas[0, 0, 0] = special
    class_logits[0, -1, -1] = special
    box_deltas.requires_grad_(True)
    out = MultiBoxLoss(classification=classification)(box_deltas, class_logits, anchors, targets)
    for key in ("loss", "loss_box", "loss_cls"):
        assert torch.isfinite(out[key]), key
        assert out[key].item() >= 0.0, key
    out["loss"].backward()
    assert box_deltas.grad is not None and torch.isfinite(box_deltas.grad).all()


# --------------------------------------------------------------------------------------------------
# argument checks


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="classification"):
        MultiBoxLoss(classification="sigmoid")
    with pytest.raises(ValueError, match="neg_pos_ratio"):
        MultiBoxLoss(neg_pos_ratio=-1.0)
    criterion = MultiBoxLoss()
    anchors = _grid_anchors((2,))
    num_anchors = anchors.shape[0]
    targets = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    with pytest.raises(ValueError, match="box_deltas"):
        criterion(torch.zeros(1, num_anchors, 5), torch.zeros(1, num_anchors, 3), anchors, targets)
    with pytest.raises(ValueError, match="class_logits"):
        criterion(
            torch.zeros(1, num_anchors, 4), torch.zeros(1, num_anchors + 1, 3), anchors, targets
        )
    with pytest.raises(ValueError, match="anchors"):
        criterion(
            torch.zeros(1, num_anchors, 4), torch.zeros(1, num_anchors, 3), anchors[1:], targets
        )
    with pytest.raises(ValueError, match="targets"):
        criterion(
            torch.zeros(1, num_anchors, 4), torch.zeros(1, num_anchors, 3), anchors, targets * 2
        )
