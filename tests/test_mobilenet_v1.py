"""MobileNetV1 against the paper (Howard et al. 2017, Tables 1, 6 and 7)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from detector.models import MobileNetV1, count_mult_adds, count_parameters
from detector.models.layers import Conv2dSame, scaled_channels

# Paper Table 6: width multiplier at 224 -> (million mult-adds, million parameters).
TABLE_6 = {1.0: (569, 4.2), 0.75: (325, 2.6), 0.5: (149, 1.3), 0.25: (41, 0.5)}
# Paper Table 7: alpha 1.0, resolution -> million mult-adds.
TABLE_7 = {192: 418, 160: 290, 128: 186}


@pytest.mark.parametrize("alpha", sorted(TABLE_6))
def test_table6_width_multiplier(alpha: float) -> None:
    model = MobileNetV1(alpha, num_classes=1000)
    mult_adds = count_mult_adds(model, torch.zeros(1, 3, 224, 224)) / 1e6
    params = count_parameters(model) / 1e6
    paper_madds, paper_params = TABLE_6[alpha]
    assert mult_adds == pytest.approx(paper_madds, rel=0.01)
    # The paper rounds parameters to 0.1M.
    assert round(params, 1) == paper_params


@pytest.mark.parametrize("resolution", sorted(TABLE_7))
def test_table7_resolution_multiplier(resolution: int) -> None:
    model = MobileNetV1(1.0, num_classes=1000)
    mult_adds = count_mult_adds(model, torch.zeros(1, 3, resolution, resolution)) / 1e6
    assert mult_adds == pytest.approx(TABLE_7[resolution], rel=0.01)


def test_table1_layers() -> None:
    """Stem + 13 separable blocks, widths and strides as in Table 1 (7x7x1024 at 224)."""
    model = MobileNetV1(1.0)
    assert model.channels == (32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024)
    feats = model.forward_features(torch.zeros(1, 3, 224, 224), tuple(range(14)))
    sides = [f.shape[-1] for f in feats]
    assert sides == [112, 112, 56, 56, 28, 28, 14, 14, 14, 14, 14, 14, 7, 7]
    block = model.features[2]
    assert block.depthwise.conv.groups == block.depthwise.conv.in_channels == 64
    assert block.depthwise.conv.kernel_size == (3, 3)
    assert block.pointwise.conv.kernel_size == (1, 1)
    assert isinstance(block.depthwise.act, torch.nn.ReLU6)


# Golden channel lists of the TF-slim rule max(min_depth, int(c * alpha)).
GOLDEN = {
    0.25: (8, 16, 32, 32, 64, 64, 128, 128, 128, 128, 128, 128, 256, 256),
    0.5: (16, 32, 64, 64, 128, 128, 256, 256, 256, 256, 256, 256, 512, 512),
    0.75: (24, 48, 96, 96, 192, 192, 384, 384, 384, 384, 384, 384, 768, 768),
}


@pytest.mark.parametrize("alpha", sorted(GOLDEN))
def test_channel_rule_golden(alpha: float) -> None:
    assert MobileNetV1(alpha).channels == GOLDEN[alpha]


def test_any_alpha_and_min_depth() -> None:
    model = MobileNetV1(0.3, min_depth=16)
    assert model.channels[0] == 16  # int(32 * 0.3) = 9, floored to 16
    assert model.channels[-1] == int(1024 * 0.3)
    assert scaled_channels(100, 0.333, 8) == 33
    with pytest.raises(ValueError, match="alpha"):
        MobileNetV1(0.0)
    out = model(torch.rand(2, 3, 97, 131))
    assert out.shape == (2, int(1024 * 0.3), 4, 5)


def test_relu_activation_and_bad_choices() -> None:
    model = MobileNetV1(0.25, activation="relu")
    assert isinstance(model.features[1].pointwise.act, torch.nn.ReLU)
    with pytest.raises(ValueError, match="activation"):
        MobileNetV1(0.25, activation="gelu")
    with pytest.raises(ValueError, match="padding"):
        MobileNetV1(0.25, padding="reflect")


@pytest.mark.parametrize("size", [7, 8, 299, 300])
def test_tf_same_padding(size: int) -> None:
    """TF "SAME": output ceil(n/s); for stride 2 the extra pad goes after (bottom/right)."""
    torch.manual_seed(0)
    conv = Conv2dSame(3, 4, 3, 2, bias=False)
    x = torch.randn(1, 3, size, size)
    out = conv(x)
    assert out.shape[-1] == -(-size // 2)
    total = max((out.shape[-1] - 1) * 2 + 3 - size, 0)
    before, after = total // 2, total - total // 2
    expected = F.conv2d(F.pad(x, (before, after, before, after)), conv.weight, stride=2)
    torch.testing.assert_close(out, expected)
    if size % 2 == 0:  # the asymmetric case differs from PyTorch's symmetric padding
        sym = F.conv2d(x, conv.weight, stride=2, padding=1)
        assert sym.shape == out.shape
        assert not torch.allclose(sym, out)


def test_tf_padding_backbone_shapes_match_torch() -> None:
    a = MobileNetV1(0.25, padding="torch")
    b = MobileNetV1(0.25, padding="tf")
    b.load_state_dict(a.state_dict())  # same parameter names
    x = torch.rand(1, 3, 300, 300)
    assert a(x).shape == b(x).shape == (1, 256, 10, 10)
