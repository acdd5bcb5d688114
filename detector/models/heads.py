"""SSD feature pyramid (extra layers) and box/class predictors.

* :class:`SSDFeatureExtractor` follows the TF Object Detection API ``ssd_mobilenet_v1`` feature
  extractor: the stride-16 output of ``Conv2d_11_pointwise``, the stride-32 output of
  ``Conv2d_13_pointwise``, then extra layers, each a 1x1 conv to ``d/2`` and a 3x3 stride-2 conv
  to ``d`` (``d = 512, 256, 256, 128``, scaled by ``alpha`` with a floor of 16). With
  ``depthwise_extras`` the 3x3 convolutions are depthwise-separable (SSDLite).
* :class:`SSDHead` holds one box and one class predictor per level: plain convolutions (``"ssd"``,
  1x1 as in the TF config or 3x3) or depthwise-separable ones (``"ssdlite"``: 3x3 depthwise + BN
  + activation, then 1x1).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from .layers import conv_bn_act, init_conv, make_conv, run_tiny_map_fp32, scaled_channels
from .mobilenet_v1 import MobileNetV1

__all__ = ["HEAD_TYPES", "SSDFeatureExtractor", "SSDHead"]

HEAD_TYPES = ("ssd", "ssdlite")


class SSDFeatureExtractor(nn.Module):
    """MobileNetV1 plus SSD extra layers; returns six feature maps, finest first.

    Args:
        backbone: a :class:`MobileNetV1` without classifier.
        extra_depths: output channels of the extra layers before scaling by ``alpha``.
        extra_min_depth: channel floor of the extra layers (16 in the TF config).
        depthwise_extras: use depthwise-separable 3x3 stride-2 convolutions (SSDLite).
        activation, padding: as for the backbone.
        source_layers: backbone layers (TF ``Conv2d_i`` numbers) used as the first feature maps.
    """

    def __init__(
        self,
        backbone: MobileNetV1,
        extra_depths: tuple[int, ...] = (512, 256, 256, 128),
        *,
        extra_min_depth: int = 16,
        depthwise_extras: bool = False,
        activation: str = "relu6",
        padding: str = "torch",
        source_layers: tuple[int, ...] = (11, 13),
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.source_layers = tuple(source_layers)
        alpha = backbone.alpha
        in_ch = backbone.channels[self.source_layers[-1]]
        out_channels = [backbone.channels[i] for i in self.source_layers]
        extras = []
        for depth in extra_depths:
            mid = scaled_channels(depth // 2, alpha, extra_min_depth)
            out = scaled_channels(depth, alpha, extra_min_depth)
            reduce = conv_bn_act(in_ch, mid, 1, activation=activation, padding=padding)
            if depthwise_extras:
                down = nn.Sequential(
                    OrderedDict(
                        depthwise=conv_bn_act(
                            mid, mid, 3, 2, groups=mid, activation=activation, padding=padding
                        ),
                        pointwise=conv_bn_act(mid, out, 1, activation=activation, padding=padding),
                    )
                )
            else:
                down = conv_bn_act(mid, out, 3, 2, activation=activation, padding=padding)
            extras.append(nn.Sequential(OrderedDict(reduce=reduce, down=down)))
            out_channels.append(out)
            in_ch = out
        self.extras = nn.ModuleList(extras)
        #: Channels of each returned feature map.
        self.out_channels: tuple[int, ...] = tuple(out_channels)
        for m in self.extras.modules():
            if isinstance(m, nn.Conv2d):
                init_conv(m)

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = self.backbone.forward_features(x, self.source_layers)
        y = feats[-1]
        for layer in self.extras:
            y = run_tiny_map_fp32(layer, y)
            feats.append(y)
        return feats


class SSDHead(nn.Module):
    """Box and class predictors over every feature level.

    Args:
        in_channels: channels of each feature map.
        num_anchors: anchors per location for each level.
        num_classes: object classes; the class predictor outputs ``num_classes + 1`` (background 0).
        head_type: ``"ssd"`` (plain convolution of ``kernel_size``) or ``"ssdlite"``.
        kernel_size: predictor kernel for ``"ssd"`` (1 in the TF OD API config, 3 in Caffe-SSD
            VGG); ignored by ``"ssdlite"``.

    Shapes:
        ``forward(features) -> (box_deltas Tensor[B, A, 4], class_logits Tensor[B, A, C + 1])``,
        anchors ordered level by level, then row-major over ``(y, x)``, then anchor slot.
    """

    def __init__(
        self,
        in_channels: tuple[int, ...],
        num_anchors: list[int],
        num_classes: int,
        *,
        head_type: str = "ssd",
        kernel_size: int = 1,
        activation: str = "relu6",
        padding: str = "torch",
    ) -> None:
        super().__init__()
        if head_type not in HEAD_TYPES:
            raise ValueError(f"unknown head {head_type!r}; choose one of {HEAD_TYPES}")
        if len(in_channels) != len(num_anchors):
            raise ValueError(
                f"{len(in_channels)} feature maps but anchors for {len(num_anchors)} levels"
            )
        self.num_classes = num_classes
        self.box_predictors = nn.ModuleList()
        self.class_predictors = nn.ModuleList()
        for ch, k in zip(in_channels, num_anchors):
            for outputs, holder in (
                (4, self.box_predictors),
                (num_classes + 1, self.class_predictors),
            ):
                holder.append(
                    _predictor(ch, k * outputs, head_type, kernel_size, activation, padding)
                )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m.bias is not None:  # the predictors
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)
                else:
                    init_conv(m)

    @staticmethod
    def _flatten(x: Tensor, per_anchor: int) -> Tensor:
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, per_anchor)

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        boxes = [
            self._flatten(run_tiny_map_fp32(p, f), 4) for p, f in zip(self.box_predictors, features)
        ]
        logits = [
            self._flatten(run_tiny_map_fp32(p, f), self.num_classes + 1)
            for p, f in zip(self.class_predictors, features)
        ]
        return torch.cat(boxes, dim=1), torch.cat(logits, dim=1)


def _predictor(
    in_ch: int, out_ch: int, head_type: str, kernel_size: int, activation: str, padding: str
) -> nn.Module:
    if head_type == "ssd":
        return make_conv(in_ch, out_ch, kernel_size, bias=True, padding=padding)
    return nn.Sequential(
        OrderedDict(
            depthwise=conv_bn_act(
                in_ch, in_ch, 3, groups=in_ch, activation=activation, padding=padding
            ),
            pointwise=make_conv(in_ch, out_ch, 1, bias=True, padding=padding),
        )
    )
