"""Small building blocks shared by the backbone, the SSD extra layers and the heads."""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ACTIVATIONS",
    "PADDINGS",
    "Conv2dSame",
    "conv_bn_act",
    "init_conv",
    "make_activation",
    "make_conv",
    "run_tiny_map_fp32",
    "scaled_channels",
]

ACTIVATIONS = ("relu6", "relu")
PADDINGS = ("torch", "tf")

# BatchNorm settings of TF-slim MobileNet (epsilon 1e-3) with torchvision SSDLite's momentum.
BN_EPS = 1e-3
BN_MOMENTUM = 0.03


def scaled_channels(channels: int, alpha: float, min_depth: int) -> int:
    """TF-slim width-multiplier rule: ``max(min_depth, int(channels * alpha))``."""
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    return max(int(min_depth), int(channels * alpha))


def init_conv(conv: nn.Conv2d) -> None:
    """Kaiming-normal init; depthwise kernels by fan-in (fan-out would be ``C * 9`` and shrink
    activations layer after layer), others by fan-out as torchvision's MobileNets."""
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels
    nn.init.kaiming_normal_(conv.weight, mode="fan_in" if depthwise else "fan_out")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def run_tiny_map_fp32(module: nn.Module, x: Tensor) -> Tensor:
    """Run ``module`` on ``x``, in float32 when ``x`` is a map smaller than 3x3 under autocast.

    On CPU, oneDNN's bf16 convolution backward intermittently returns non-finite weight
    gradients when the input map is smaller than a 3x3 kernel (seen with torch 2.14: a 3x3
    stride-2 convolution on the 1x1 map of the last SSD extra layer). Such maps cost nothing, so
    they skip autocast. Outside autocast (inference, export) this is a plain call.
    """
    device_type = x.device.type
    if min(x.shape[-2:]) < 3 and torch.is_autocast_enabled(device_type):
        with torch.autocast(device_type, enabled=False):
            return module(x.float())
    return module(x)


def make_activation(name: str) -> nn.Module:
    """``"relu6"`` (MobileNet paper, TF) or ``"relu"`` (Caffe ports such as chuanqi305's)."""
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    if name == "relu":
        return nn.ReLU(inplace=True)
    raise ValueError(f"unknown activation {name!r}; choose one of {ACTIVATIONS}")


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow ``"SAME"`` padding.

    TF pads so that the output is ``ceil(in / stride)``, putting the odd pixel at the bottom/right.
    For a 3x3 stride-2 convolution on an even input this is (0 before, 1 after), where PyTorch's
    symmetric ``padding=1`` gives (1, 1): same output size, shifted sampling grid. Running
    TF-trained weights exactly needs this. Parameter names equal ``nn.Conv2d``'s.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs["padding"] = 0
        super().__init__(*args, **kwargs)

    @staticmethod
    def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
        out = math.ceil(size / stride)
        total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        top, bottom = self._same_pad(h, self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = self._same_pad(w, self.kernel_size[1], self.stride[1], self.dilation[1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def make_conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    *,
    groups: int = 1,
    bias: bool = False,
    padding: str = "torch",
) -> nn.Conv2d:
    """A convolution with PyTorch symmetric (``"torch"``) or TF ``"SAME"`` (``"tf"``) padding."""
    if padding == "torch":
        return nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            kernel_size // 2,
            groups=groups,
            bias=bias,
        )
    if padding == "tf":
        return Conv2dSame(in_channels, out_channels, kernel_size, stride, groups=groups, bias=bias)
    raise ValueError(f"unknown padding {padding!r}; choose one of {PADDINGS}")


def conv_bn_act(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    *,
    groups: int = 1,
    activation: str = "relu6",
    padding: str = "torch",
) -> nn.Sequential:
    """Conv (no bias) + BatchNorm + activation, as every MobileNetV1 layer.

    Submodules are named ``conv``, ``bn`` and ``act`` so state-dict keys read like the TF scopes
    (``.../depthwise/conv.weight``, ``.../depthwise/bn.running_mean``).
    """
    conv = make_conv(in_channels, out_channels, kernel_size, stride, groups=groups, padding=padding)
    return nn.Sequential(
        OrderedDict(
            conv=conv,
            bn=nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM),
            act=make_activation(activation),
        )
    )
