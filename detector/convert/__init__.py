"""Converters from other frameworks' MobileNet-SSD files to ordinary detector checkpoints.

``python -m detector.convert tflite path=<detect.tflite> [labels=<labels.txt>] out=<ckpt.pt>``
converts a TF Object Detection API ``ssd_mobilenet_v1`` TFLite model (float or quantised; see
:mod:`detector.convert.tflite_ssd`). The checkpoint loads with
:func:`detector.engine.checkpoint.load_detector` and works wherever a trained checkpoint does.
"""

from .common import folded_conv_bn_state, read_label_file, save_converted
from .tflite_ssd import (
    TFLiteConversion,
    convert_tflite,
    convert_tflite_file,
    emulate_tflite_uint8,
    tflite_anchors_xyxy,
)

__all__ = [
    "TFLiteConversion",
    "convert_tflite",
    "convert_tflite_file",
    "emulate_tflite_uint8",
    "folded_conv_bn_state",
    "read_label_file",
    "save_converted",
    "tflite_anchors_xyxy",
]
