"""The SSD detector: paper figures, shapes at any size, export, config round trip."""

from __future__ import annotations

import io

import pytest
import torch

from detector.models import (
    ModelConfig,
    build_ssd,
    count_mult_adds,
    count_parameters,
    ssd_mobilenet_v1,
)


def test_paper_table13_ssd300_mobilenet() -> None:
    """MobileNet paper Table 13, "SSD 300 MobileNet": 6.8M parameters, 1.2B mult-adds.

    COCO as in the TF OD API (90 classes + background), 1x1 predictors, ``tf`` anchors.
    The paper gives one decimal: our exact count is 1.237B (1.2 when rounded like the paper).
    """
    model = ssd_mobilenet_v1(90, head_kernel_size=1, anchors="tf")
    params = count_parameters(model) / 1e6
    mult_adds = count_mult_adds(model, torch.zeros(1, 3, 300, 300)) / 1e9
    assert params == pytest.approx(6.8, rel=0.03)
    assert round(mult_adds, 1) == 1.2
    assert mult_adds == pytest.approx(1.2, rel=0.035)


def test_outputs_and_anchor_counts() -> None:
    model = ssd_mobilenet_v1(20).eval()
    assert model.feature_shapes == [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    assert model.features.out_channels == (512, 1024, 512, 256, 256, 128)
    deltas, logits = model(torch.rand(2, 3, 300, 300))
    assert deltas.shape == (2, 1917, 4)
    assert logits.shape == (2, 1917, 21)
    assert model.anchors.shape == (1917, 4)


@pytest.mark.parametrize(
    ("alpha", "size"),
    [(0.25, (128, 128)), (0.5, (240, 320)), (0.75, (333, 201)), (1.0, (512, 512))],
)
def test_any_alpha_any_size(alpha: float, size: tuple[int, int]) -> None:
    """Anchors follow the real feature maps, so every width and input size works."""
    model = ssd_mobilenet_v1(3, alpha=alpha, image_size=size).eval()
    with torch.no_grad():
        deltas, logits = model(torch.rand(1, 3, *size))
    per_location = [3, 6, 6, 6, 6, 6]
    expected = sum(h * w * k for (h, w), k in zip(model.feature_shapes, per_location))
    assert deltas.shape == (1, expected, 4)
    assert logits.shape == (1, expected, 4)
    assert model.anchors.shape == (expected, 4)
    # Extra layers: d = 512, 256, 256, 128 scaled by alpha with a floor of 16.
    assert model.features.out_channels[2:] == tuple(
        max(16, int(d * alpha)) for d in (512, 256, 256, 128)
    )


def test_extra_layer_structure_tf() -> None:
    model = ssd_mobilenet_v1(90)
    first = model.features.extras[0]
    assert first.reduce.conv.kernel_size == (1, 1) and first.reduce.conv.out_channels == 256
    assert first.down.conv.kernel_size == (3, 3) and first.down.conv.stride == (2, 2)
    assert first.down.conv.out_channels == 512
    assert model.head.box_predictors[0].kernel_size == (1, 1)
    assert model.head.class_predictors[0].out_channels == 3 * 91


def test_head_variants() -> None:
    plain3 = ssd_mobilenet_v1(5, alpha=0.25, image_size=(160, 160), head_kernel_size=3)
    assert plain3.head.box_predictors[0].kernel_size == (3, 3)
    lite = ssd_mobilenet_v1(5, alpha=0.25, image_size=(160, 160), head="ssdlite")
    pred = lite.head.class_predictors[0]
    assert pred.depthwise.conv.groups == pred.depthwise.conv.in_channels
    assert lite.features.extras[0].down.depthwise.conv.groups > 1
    x = torch.rand(1, 3, 160, 160)
    assert lite.eval()(x)[1].shape == plain3.eval()(x)[1].shape
    assert count_parameters(lite) < count_parameters(plain3)
    with pytest.raises(ValueError, match="head"):
        ssd_mobilenet_v1(5, head="yolo")


def test_normalisation_inside_model() -> None:
    model = ssd_mobilenet_v1(
        2, alpha=0.25, image_size=(96, 96), mean=(0.1, 0.2, 0.3), std=(2, 3, 4)
    ).eval()
    x = torch.rand(1, 3, 96, 96)
    expected = model.head(model.features((x - model.mean) / model.std))
    torch.testing.assert_close(model(x), expected)
    torch.testing.assert_close(model.mean.flatten(), torch.tensor([0.1, 0.2, 0.3]))


def test_torch_export() -> None:
    model = ssd_mobilenet_v1(3, alpha=0.25, image_size=(128, 128)).eval()
    x = torch.rand(1, 3, 128, 128)
    program = torch.export.export(model, (x,))
    out = program.module()(x)
    ref = model(x)
    torch.testing.assert_close(out[0], ref[0])
    torch.testing.assert_close(out[1], ref[1])


def test_tf_padding_model_exports() -> None:
    model = ssd_mobilenet_v1(3, alpha=0.25, image_size=(128, 128), padding="tf").eval()
    x = torch.rand(1, 3, 128, 128)
    program = torch.export.export(model, (x,))
    torch.testing.assert_close(program.module()(x)[1], model(x)[1])


def test_config_round_trip_weights_only() -> None:
    """Checkpoints hold a plain dict config that ``torch.load(weights_only=True)`` accepts."""
    model = ssd_mobilenet_v1(
        4, alpha=0.5, image_size=(160, 192), anchors="caffe", head="ssdlite"
    ).eval()
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "model_config": model.config.to_dict()}, buffer)
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)
    rebuilt = build_ssd(ModelConfig.from_dict(ckpt["model_config"])).eval()
    rebuilt.load_state_dict(ckpt["model"], strict=True)
    torch.testing.assert_close(rebuilt.anchors, model.anchors)
    x = torch.rand(1, 3, 160, 192)
    torch.testing.assert_close(rebuilt(x), model(x))
    assert "anchors" not in ckpt["model"]  # recomputed from the config


def test_bad_config() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        ModelConfig(num_classes=0)
    with pytest.raises(ValueError, match="anchor preset"):
        ModelConfig(anchors="nope")
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({"num_classes": 3, "alhpa": 0.5})


def test_seeded_random_init_statistics() -> None:
    """A seeded random-init model's raw outputs are finite and reasonably scaled."""
    torch.manual_seed(0)
    model = ssd_mobilenet_v1(3, alpha=0.25, image_size=(128, 128)).eval()
    deltas, logits = model(torch.rand(2, 3, 128, 128))
    assert torch.isfinite(deltas).all() and torch.isfinite(logits).all()
    assert 0.01 < logits.std().item() < 10


def test_bf16_channels_last_gradients_finite_on_tiny_maps() -> None:
    """oneDNN's bf16 conv backward gives non-finite weight gradients on maps smaller than the
    3x3 kernel (the last extra layers); the model runs those in fp32 under autocast."""
    torch.manual_seed(0)
    model = ssd_mobilenet_v1(5, alpha=0.5, image_size=(128, 128), head="ssdlite").train()
    model = model.to(memory_format=torch.channels_last)
    assert min(model.feature_shapes[-1]) < 3
    for _ in range(4):
        x = torch.rand(16, 3, 128, 128).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            deltas, logits = model(x)
        model.zero_grad()
        (deltas.float().square().mean() + logits.float().logsumexp(-1).mean()).backward()
        bad = [n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
        assert not bad, bad
