"""Anchor generation: counts, hand-computed boxes, and the real models' anchors."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from detector.anchors import (
    ANCHOR_PRESETS,
    AnchorConfig,
    AnchorGenerator,
    build_anchor_generator,
)

SHAPES_300 = [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
SHAPES_320 = [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
SHAPES_512 = [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
# Ultra-Light slim-320 feature maps at its 320x240 input (strides 8, 16, 32, 64; ceil).
FACE_SHAPES_320x240 = [(30, 40), (15, 20), (8, 10), (4, 5)]


def _wh(anchors: torch.Tensor) -> torch.Tensor:
    return anchors[:, 2:] - anchors[:, :2]


def _centres(anchors: torch.Tensor) -> torch.Tensor:
    return 0.5 * (anchors[:, :2] + anchors[:, 2:])


def _yxhw_to_xyxy(yxhw: torch.Tensor) -> torch.Tensor:
    cy, cx, h, w = yxhw.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)


def _xyxy_to_yxhw(xyxy: torch.Tensor) -> torch.Tensor:
    x1, y1, x2, y2 = xyxy.unbind(-1)
    return torch.stack(((y1 + y2) / 2, (x1 + x2) / 2, y2 - y1, x2 - x1), dim=-1)


# --------------------------------------------------------------------------------------------
# Counts and layout
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("shapes", "size", "expected"),
    [(SHAPES_300, 300, 1917), (SHAPES_320, 320, 2034), (SHAPES_512, 512, 5118)],
)
@pytest.mark.parametrize("preset", ["tf", "caffe"])
def test_anchor_counts(preset: str, shapes, size: int, expected: int) -> None:
    gen = build_anchor_generator(preset)
    anchors = gen.generate(shapes, (size, size))
    assert anchors.shape == (expected, 4)
    assert anchors.dtype == torch.float32
    assert gen.num_anchors_per_location(6) == [3, 6, 6, 6, 6, 6]
    assert sum(h * w * k for (h, w), k in zip(shapes, gen.num_anchors_per_location(6))) == expected


def test_tf_without_reduced_lowest_layer_and_interpolation() -> None:
    settings = dataclasses.replace(
        ANCHOR_PRESETS["tf"], reduce_boxes_in_lowest_layer=False, interpolated_scale_aspect_ratio=0
    )
    gen = AnchorGenerator(settings)
    assert gen.num_anchors_per_location(4) == [5, 5, 5, 5]
    assert gen.generate([(4, 4), (2, 2), (1, 1), (1, 1)], (128, 128)).shape == (22 * 5, 4)


def test_order_is_row_major_then_slot() -> None:
    gen = build_anchor_generator("tf")
    anchors = gen.generate([(2, 3)], (300, 300))  # one level: 2 rows x 3 cols x 3 slots
    centres = _centres(anchors).view(2, 3, 3, 2)
    # every slot of a cell shares the centre
    assert torch.allclose(centres, centres[:, :, :1].expand_as(centres), atol=1e-6)
    expected_x = (torch.arange(3) + 0.5) / 3
    expected_y = (torch.arange(2) + 0.5) / 2
    assert torch.allclose(centres[0, :, 0, 0], expected_x, atol=1e-6)
    assert torch.allclose(centres[:, 0, 0, 1], expected_y, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Hand-computed boxes
# --------------------------------------------------------------------------------------------
def test_tf_hand_computed_boxes() -> None:
    anchors = build_anchor_generator("tf").generate(SHAPES_300, (300, 300)).double()
    # layer 0, cell (0, 0): 0.1 square, then scale 0.2 with ratio 2 and 1/2
    c = 0.5 / 19
    assert torch.allclose(
        anchors[0], torch.tensor([c - 0.05, c - 0.05, c + 0.05, c + 0.05]).double(), atol=1e-6
    )
    w2, h2 = 0.2 * math.sqrt(2), 0.2 / math.sqrt(2)
    assert torch.allclose(_wh(anchors[1:3]), torch.tensor([[w2, h2], [h2, w2]]).double(), atol=1e-6)
    # layer 1 (scale 0.35) starts after 19*19*3 anchors; the interpolated square is slot 5 (last)
    first = 19 * 19 * 3
    wh = _wh(anchors[first : first + 6])
    s, s_next = 0.35, 0.5
    expected = [
        (s, s),
        (s * math.sqrt(2), s / math.sqrt(2)),
        (s / math.sqrt(2), s * math.sqrt(2)),
        (s * math.sqrt(3), s / math.sqrt(3)),
        (s / math.sqrt(3), s * math.sqrt(3)),
        (math.sqrt(s * s_next), math.sqrt(s * s_next)),
    ]
    assert torch.allclose(wh, torch.tensor(expected).double(), atol=1e-6)
    assert torch.allclose(
        _centres(anchors[first : first + 6]), torch.full((6, 2), 0.05).double(), atol=1e-6
    )
    # last layer: scale 0.95, interpolated with the extra scale 1.0, centred
    last = anchors[-6:]
    assert torch.allclose(_centres(last), torch.full((6, 2), 0.5).double(), atol=1e-6)
    assert torch.allclose(_wh(last[:1]), torch.tensor([[0.95, 0.95]]).double(), atol=1e-6)
    side = math.sqrt(0.95)
    assert torch.allclose(_wh(last[-1:]), torch.tensor([[side, side]]).double(), atol=1e-6)


def test_caffe_hand_computed_boxes() -> None:
    anchors = build_anchor_generator("caffe").generate(SHAPES_300, (300, 300)).double() * 300
    step = 300 / 19  # float step, not 16
    c = 0.5 * step
    assert torch.allclose(
        anchors[0], torch.tensor([c - 30, c - 30, c + 30, c + 30]).double(), atol=1e-3
    )
    # slots 1, 2 of layer 0: ratio 2 and 1/2 of the 60 px min size
    expected = [[60 * math.sqrt(2), 60 / math.sqrt(2)], [60 / math.sqrt(2), 60 * math.sqrt(2)]]
    assert torch.allclose(_wh(anchors[1:3]), torch.tensor(expected).double(), atol=1e-3)
    # conv13 cell 0: min 105, sqrt(105*150) second, then ratios 2, 1/2, 3, 1/3
    first = 19 * 19 * 3
    wh = _wh(anchors[first : first + 6])
    r2, r3 = math.sqrt(2), math.sqrt(3)
    expected = [
        [105, 105],
        [math.sqrt(105 * 150)] * 2,
        [105 * r2, 105 / r2],
        [105 / r2, 105 * r2],
        [105 * r3, 105 / r3],
        [105 / r3, 105 * r3],
    ]
    assert torch.allclose(wh, torch.tensor(expected).double(), atol=1e-3)
    assert torch.allclose(
        _centres(anchors[first : first + 1]), torch.tensor([[15.0, 15.0]]).double(), atol=1e-3
    )
    # last layer: 285 square then sqrt(285*300) square, centred, not clipped
    assert torch.allclose(
        _wh(anchors[-6:-4]),
        torch.tensor([[285.0, 285.0], [math.sqrt(285 * 300)] * 2]).double(),
        atol=1e-3,
    )
    assert anchors.min() < 0 and anchors.max() > 300


def test_caffe_clip() -> None:
    settings = dataclasses.replace(ANCHOR_PRESETS["caffe"], clip=True)
    anchors = AnchorGenerator(settings).generate(SHAPES_300, (300, 300))
    assert anchors.min() >= 0 and anchors.max() <= 1


def test_face_preset_matches_ultralight_priors() -> None:
    """The face preset gives Ultra-Light's (unclamped) priors at 320x240, in the same order."""
    gen = build_anchor_generator("face")
    assert gen.num_anchors_per_location(4) == [3, 2, 2, 3]
    anchors = gen.generate(FACE_SHAPES_320x240, (240, 320)).double()
    assert anchors.shape == (4420, 4)
    # Ultra-Light: centre ((x + 0.5) * stride / 320, (y + 0.5) * stride / 240), box min_box px
    # square (w = m / 320, h = m / 240); feature maps are ceil(size / stride).
    rows = []
    for stride, boxes in zip((8, 16, 32, 64), ((10, 16, 24), (32, 48), (64, 96), (128, 192, 256))):
        for y in range(math.ceil(240 / stride)):
            for x in range(math.ceil(320 / stride)):
                cx, cy = (x + 0.5) * stride / 320, (y + 0.5) * stride / 240
                for m in boxes:
                    rows.append([cx - m / 640, cy - m / 480, cx + m / 640, cy + m / 480])
    assert torch.allclose(anchors, torch.tensor(rows, dtype=torch.float64), atol=1e-6)
    # all square in pixels
    wh_px = _wh(anchors) * torch.tensor([320.0, 240.0]).double()
    assert torch.allclose(wh_px[:, 0], wh_px[:, 1], atol=1e-4)


# --------------------------------------------------------------------------------------------
# Non-square inputs
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["tf", "caffe"])
def test_non_square_input_gives_pixel_square_ratio_one_anchors(preset: str) -> None:
    height, width = 300, 600
    shapes = [(19, 38), (10, 19), (5, 10), (3, 5), (2, 3), (1, 2)]
    gen = build_anchor_generator(preset)
    anchors = gen.generate(shapes, (height, width)).double()
    counts = gen.num_anchors_per_location(6)
    assert anchors.shape[0] == sum(h * w * k for (h, w), k in zip(shapes, counts))
    wh_px = _wh(anchors) * torch.tensor([width, height]).double()
    # the first slot of every cell has ratio 1 in both styles
    offsets = np.cumsum([0] + [h * w * k for (h, w), k in zip(shapes, counts)])[:-1]
    for (h, w), k, start in zip(shapes, counts, offsets):
        level = wh_px[start : start + h * w * k].view(h * w, k, 2)
        assert torch.allclose(level[:, 0, 0], level[:, 0, 1], atol=1e-3)
    # sizes are fractions of the shorter side (300 px): tf 0.1 -> 30 px, caffe 0.2 -> 60 px
    first_side = 30.0 if preset == "tf" else 60.0
    assert wh_px[0, 0].item() == pytest.approx(first_side, abs=1e-3)
    # ratio-2 slot is twice as wide as tall in pixels
    assert (wh_px[1, 0] / wh_px[1, 1]).item() == pytest.approx(2.0, rel=1e-5)
    # centres follow each axis' own grid
    c = _centres(anchors[:1])[0]
    assert c[0].item() == pytest.approx(0.5 / 38, abs=1e-6)
    assert c[1].item() == pytest.approx(0.5 / 19, abs=1e-6)


# --------------------------------------------------------------------------------------------
# Errors and builders
# --------------------------------------------------------------------------------------------
def test_unknown_preset_lists_presets() -> None:
    with pytest.raises(ValueError, match="unknown anchor preset") as info:
        build_anchor_generator("yolo")
    for name in ANCHOR_PRESETS:
        assert name in str(info.value)


def test_invalid_settings() -> None:
    with pytest.raises(ValueError, match="style"):
        AnchorConfig(style="retina")
    with pytest.raises(ValueError, match="max_sizes"):
        AnchorConfig(style="caffe", max_sizes=(0.5,))
    with pytest.raises(ValueError, match="caffe_aspect_ratio_counts"):
        AnchorConfig(style="caffe", caffe_aspect_ratio_counts=(1, 1))
    with pytest.raises(ValueError, match="feature levels"):
        build_anchor_generator("caffe").generate(SHAPES_300[:5], (300, 300))
    with pytest.raises(TypeError):
        build_anchor_generator(3)  # type: ignore[arg-type]


def test_build_from_settings_and_mapping() -> None:
    settings = ANCHOR_PRESETS["caffe"]
    assert build_anchor_generator(settings).settings is settings
    mapping = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    mapping = {k: list(v) if isinstance(v, tuple) else v for k, v in mapping.items()}
    assert build_anchor_generator(mapping).settings == settings
    with pytest.raises(ValueError, match="unknown anchor settings fields"):
        build_anchor_generator({"style": "tf", "sizes": [1]})


def test_settings_fields_are_simple_types() -> None:
    allowed = {"str", "float", "int", "bool", "tuple[float, ...]", "tuple[int, ...]"}
    for field in dataclasses.fields(AnchorConfig):
        assert field.type in allowed, (field.name, field.type)


# --------------------------------------------------------------------------------------------
# Real references
# --------------------------------------------------------------------------------------------
def test_tf_anchors_match_tflite_model(shared_data) -> None:
    """tf preset at 300x300 = the anchors constant of detect.tflite (uint8, step 0.006453)."""
    folder = shared_data / "ssd_mobilenet_v1_coco_quant_tflite"
    ref_yxhw = torch.from_numpy(np.load(folder / "anchors_dequantized_yxhw.npy"))
    meta = json.loads((folder / "tflite_reference_detections.json").read_text())["meta"]
    step = meta["raw_tensor_quantization"]["anchors"]["scale"]
    ours = build_anchor_generator("tf").generate(SHAPES_300, (300, 300))
    ours_yxhw = _xyxy_to_yxhw(ours)
    assert ours_yxhw.shape == ref_yxhw.shape == (1917, 4)
    assert (ours_yxhw - ref_yxhw).abs().max().item() <= step
    # Quantising ours the way the graph stores them reproduces the constant exactly.
    quantised = torch.round(ours_yxhw / step) * step
    assert torch.allclose(quantised, ref_yxhw, atol=1e-6)
    assert torch.allclose(_yxhw_to_xyxy(ref_yxhw), ours, atol=1.5 * step)


def test_caffe_anchors_match_opencv_priorbox(shared_data) -> None:
    ref = np.load(shared_data / "mobilenet_ssd_caffe" / "opencv_priorbox_reference.npy")
    priors = torch.from_numpy(ref[0, 0].reshape(1917, 4))
    variances = torch.from_numpy(ref[0, 1].reshape(1917, 4))
    ours = build_anchor_generator("caffe").generate(SHAPES_300, (300, 300))
    assert torch.allclose(ours, priors, atol=1e-5)
    assert torch.allclose(variances, torch.tensor([0.1, 0.1, 0.2, 0.2]).expand(1917, 4))
