"""Models: the MobileNetV1 backbone and the SSD detector."""

from .build import ModelConfig, build_ssd, ssd_mobilenet_v1, with_image_size
from .mobilenet_v1 import MobileNetV1, count_mult_adds, count_parameters
from .ssd import SSD

__all__ = [
    "SSD",
    "MobileNetV1",
    "ModelConfig",
    "build_ssd",
    "count_mult_adds",
    "count_parameters",
    "ssd_mobilenet_v1",
    "with_image_size",
]
