"""MobileNetV1 (Howard et al., 2017, "MobileNets: Efficient Convolutional Neural Networks for
Mobile Vision Applications"), exactly as the paper's Table 1.

A 3x3 stride-2 convolution to 32 channels, then 13 depthwise-separable blocks (3x3 depthwise +
BN + activation, 1x1 pointwise + BN + activation). Layer ``features[i]`` is TF-slim's
``Conv2d_i`` (``Conv2d_0`` the stem, ``Conv2d_1 .. Conv2d_13`` the separable blocks), which
keeps weight import from TF/Keras checkpoints a matter of renaming.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from .layers import conv_bn_act, init_conv, scaled_channels

__all__ = ["MOBILENET_V1_BLOCKS", "DepthwiseSeparable", "MobileNetV1"]

# (output channels, stride) of the 13 depthwise-separable blocks, paper Table 1.
MOBILENET_V1_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)
STEM_CHANNELS = 32


class DepthwiseSeparable(nn.Sequential):
    """3x3 depthwise conv + BN + act, then 1x1 pointwise conv + BN + act."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        *,
        activation: str = "relu6",
        padding: str = "torch",
    ) -> None:
        super().__init__(
            OrderedDict(
                depthwise=conv_bn_act(
                    in_channels,
                    in_channels,
                    3,
                    stride,
                    groups=in_channels,
                    activation=activation,
                    padding=padding,
                ),
                pointwise=conv_bn_act(
                    in_channels, out_channels, 1, activation=activation, padding=padding
                ),
            )
        )
        self.out_channels = out_channels


class MobileNetV1(nn.Module):
    """MobileNetV1 backbone with the paper's width multiplier.

    Args:
        alpha: width multiplier (any positive float). Channels follow the TF-slim rule
            ``max(min_depth, int(c * alpha))``.
        min_depth: floor on every layer's channel count (TF-slim default 8).
        num_classes: if given, adds the classifier (global average pool, dropout, fully
            connected to ``num_classes`` logits, e.g. 1000 for ImageNet weights). ``None`` builds the
            feature extractor only.
        activation: ``"relu6"`` (paper, TF) or ``"relu"`` (Caffe ports).
        padding: ``"torch"`` (symmetric) or ``"tf"`` (TensorFlow ``"SAME"``, asymmetric on
            stride 2), the latter needed to run TF-trained weights exactly.
        dropout: dropout before the classifier (Keras uses 1e-3).

    Shapes:
        ``forward(x: Tensor[B, 3, H, W]) -> Tensor[B, num_classes]`` with the classifier, else the
        stride-32 feature map ``Tensor[B, C13, ceil(H/32), ceil(W/32)]``. The input is expected
        already normalised (the detector normalises inside its own forward).
    """

    def __init__(
        self,
        alpha: float = 1.0,
        min_depth: int = 8,
        num_classes: int | None = None,
        *,
        activation: str = "relu6",
        padding: str = "torch",
        dropout: float = 1e-3,
    ) -> None:
        super().__init__()
        self.alpha = float(alpha)
        self.min_depth = int(min_depth)
        stem = scaled_channels(STEM_CHANNELS, alpha, min_depth)
        layers: list[nn.Module] = [
            conv_bn_act(3, stem, 3, 2, activation=activation, padding=padding)
        ]
        channels = [stem]
        in_ch = stem
        for out, stride in MOBILENET_V1_BLOCKS:
            out_ch = scaled_channels(out, alpha, min_depth)
            layers.append(
                DepthwiseSeparable(in_ch, out_ch, stride, activation=activation, padding=padding)
            )
            channels.append(out_ch)
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        #: Output channels of ``features[i]`` (TF ``Conv2d_i``), i = 0..13.
        self.channels: tuple[int, ...] = tuple(channels)
        self.num_classes = num_classes
        if num_classes is not None:
            self.classifier = nn.Sequential(
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(1),
                nn.Dropout(dropout),
                nn.Linear(in_ch, num_classes),
            )
        else:
            self.classifier = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal convolutions (see :func:`init_conv`), unit BN, small-normal classifier (torchvision style)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                init_conv(m)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor, indices: tuple[int, ...] = (13,)) -> list[Tensor]:
        """Run the layers and return the outputs of ``features[i]`` for each ``i`` in ``indices``.

        Args:
            x: ``Tensor[B, 3, H, W]``, normalised.
            indices: TF layer numbers to return (e.g. ``(11, 13)`` for SSD: strides 16 and 32).

        Returns:
            The requested feature maps, in ``indices`` order.
        """
        wanted = set(indices)
        last = max(indices)
        out: dict[int, Tensor] = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in wanted:
                out[i] = x
            if i == last:
                break
        return [out[i] for i in indices]

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        if self.classifier is not None:
            x = self.classifier(x)
        return x


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (BN running statistics excluded)."""
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def count_mult_adds(module: nn.Module, inputs: Tensor) -> int:
    """Multiply-adds of one forward pass, counted by ``torch.utils.flop_counter`` (FLOPs / 2).

    Only the forward pass is counted (the counter overcounts depthwise backward passes).
    """
    from torch.utils.flop_counter import FlopCounterMode

    was_training = module.training
    module.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        module(inputs)
    module.train(was_training)
    return counter.get_total_flops() // 2
