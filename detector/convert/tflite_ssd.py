"""TF Object Detection API ``ssd_mobilenet_v1`` TFLite models -> our :class:`~detector.models.SSD`.

The TFLite file (e.g. ``coco_ssd_mobilenet_v1_1.0_quant_2018_06_29/detect.tflite``) holds every
layer as a ``CONV_2D`` / ``DEPTHWISE_CONV_2D`` operator with BatchNorm folded into the weights and a
bias. Each operator is mapped to one of our modules **by the TF scope in its tensor names**:

===================================================================  ================================
TF scope (tensor name contains)                                      our module
===================================================================  ================================
``MobilenetV1/Conv2d_0/``                                            ``features.backbone.features.0``
``MobilenetV1/Conv2d_<i>_depthwise/`` / ``_pointwise/``              ``features.backbone.features.<i>.depthwise`` / ``.pointwise``
``Conv2d_13_pointwise_1_Conv2d_<j+2>_1x1_<d>``                       ``features.extras.<j>.reduce``
``Conv2d_13_pointwise_2_Conv2d_<j+2>_3x3_s2_<d>``                    ``features.extras.<j>.down``
``BoxPredictor_<l>/BoxEncodingPredictor``                            ``head.box_predictors.<l>``
``BoxPredictor_<l>/ClassPredictor``                                  ``head.class_predictors.<l>``
===================================================================  ================================

Layouts: TFLite convolution weights are ``OHWI`` (depthwise ``1HWO``), ours ``OIHW``
(depthwise ``O1HW``). The box predictor gives ``(ty, tx, th, tw)`` per anchor, ours
``(dx, dy, dw, dh)``: its output channels are permuted. Quantised weights are dequantised
(``scale * (q - zero_point)``); folded biases go into identity BatchNorms
(:func:`~detector.convert.common.folded_conv_bn_state`).

The model configuration is read off the file, not assumed: width multiplier from the channel
counts (the "1.0" COCO quantised model is in fact ``alpha = 0.75``), input size from the input
tensor, classes and anchors per cell from the predictors, activation from the fused activations,
score function from the ``LOGISTIC``/``SOFTMAX`` operator. The TFLite anchors and box-coder scales
of ``TFLite_Detection_PostProcess`` are checked against ours.

Preprocessing of the result: RGB resized to the input size, ``[0, 1]``; the model normalises with
``mean = std = 0.5`` (TF's ``x / 127.5 - 1``). The quantised TFLite input is ``(q - 128) / 128``,
which differs from that by less than 0.8 %.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..box_ops import BoxCoder
from ..models import SSD, ssd_mobilenet_v1
from ..models.layers import scaled_channels
from ..models.mobilenet_v1 import MOBILENET_V1_BLOCKS, STEM_CHANNELS
from .common import folded_conv_bn_state, read_label_file, save_converted, sha256_of
from .tflite_reader import TFLiteGraph, TFLiteOp, read_tflite

__all__ = ["TFLiteConversion", "convert_tflite", "convert_tflite_file", "map_tflite_layers"]

CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")
POSTPROCESS_OP = "TFLite_Detection_PostProcess"
TF_EXTRA_DEPTHS = (512, 256, 256, 128)
TF_EXTRA_MIN_DEPTH = 16
# Our anchors are exact; the TFLite ones are stored with 8-bit quantisation (step ~0.0065).
ANCHOR_TOLERANCE = 0.01

_PATTERNS: tuple[tuple[re.Pattern[str], Any], ...] = (
    (
        re.compile(r"Conv2d_13_pointwise_1_Conv2d_(\d+)_1x1_\d+"),
        lambda m: f"features.extras.{int(m.group(1)) - 2}.reduce",
    ),
    (
        re.compile(r"Conv2d_13_pointwise_2_Conv2d_(\d+)_3x3_s2_\d+"),
        lambda m: f"features.extras.{int(m.group(1)) - 2}.down",
    ),
    (
        re.compile(r"BoxPredictor_(\d+)/BoxEncodingPredictor(?:/|$)"),
        lambda m: f"head.box_predictors.{int(m.group(1))}",
    ),
    (
        re.compile(r"BoxPredictor_(\d+)/ClassPredictor(?:/|$)"),
        lambda m: f"head.class_predictors.{int(m.group(1))}",
    ),
    (
        re.compile(r"MobilenetV1/Conv2d_(\d+)(?:_(depthwise|pointwise))?(?:/|$)"),
        lambda m: (
            f"features.backbone.features.{int(m.group(1))}"
            + (f".{m.group(2)}" if m.group(2) else "")
        ),
    ),
)


@dataclass
class TFLiteConversion:
    """Result of :func:`convert_tflite`: the model (eval mode), class names and a report."""

    model: SSD
    classes: list[str]
    report: dict[str, Any] = field(default_factory=dict)


def _target_of(names: list[str]) -> str | None:
    for name in names:
        for pattern, target in _PATTERNS:
            m = pattern.search(name)
            if m:
                return target(m)
    return None


def _op_names(graph: TFLiteGraph, op: TFLiteOp) -> list[str]:
    """Names that identify a convolution: its weight, the weight's source, output and bias."""
    names = [graph.tensors[op.inputs[1]].name]
    producer = graph.producer(op.inputs[1])
    if producer is not None and producer.inputs:
        names.append(graph.tensors[producer.inputs[0]].name)
    names.append(graph.tensors[op.outputs[0]].name)
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        names.append(graph.tensors[op.inputs[2]].name)
    return names


def map_tflite_layers(graph: TFLiteGraph) -> dict[str, TFLiteOp]:
    """Map every convolution of the graph to our module path, by tensor name.

    Raises:
        ValueError: a convolution whose names match no known TF scope, or two convolutions for
            the same module.
    """
    mapping: dict[str, TFLiteOp] = {}
    unknown = []
    for op in graph.ops:
        if op.opcode not in CONV_OPS:
            continue
        names = _op_names(graph, op)
        target = _target_of(names)
        if target is None:
            unknown.append(names[0])
            continue
        if target in mapping:
            raise ValueError(
                f"two convolutions map to {target}: {_op_names(graph, mapping[target])[0]!r} "
                f"and {names[0]!r}"
            )
        mapping[target] = op
    if unknown:
        raise ValueError(
            f"{len(unknown)} convolution(s) of the TFLite model match no TF OD API "
            f"ssd_mobilenet_v1 scope, e.g. {unknown[:3]}"
        )
    return mapping


def _require(mapping: dict[str, TFLiteOp], target: str) -> TFLiteOp:
    if target not in mapping:
        raise ValueError(
            f"the TFLite model has no layer for {target} (not an ssd_mobilenet_v1 graph?)"
        )
    return mapping[target]


def _out_channels(graph: TFLiteGraph, op: TFLiteOp) -> int:
    shape = graph.tensors[op.inputs[1]].shape
    return int(shape[3] if op.opcode == "DEPTHWISE_CONV_2D" else shape[0])


def _infer_alpha(graph: TFLiteGraph, mapping: dict[str, TFLiteOp], min_depth: int) -> float:
    """Width multiplier reproducing every backbone and extra-layer channel count."""
    found = [_out_channels(graph, _require(mapping, "features.backbone.features.0"))]
    found += [
        _out_channels(graph, _require(mapping, f"features.backbone.features.{i}.pointwise"))
        for i in range(1, len(MOBILENET_V1_BLOCKS) + 1)
    ]
    extras = []
    for j in range(len(TF_EXTRA_DEPTHS)):
        extras.append(_out_channels(graph, _require(mapping, f"features.extras.{j}.reduce")))
        extras.append(_out_channels(graph, _require(mapping, f"features.extras.{j}.down")))
    nominal = [STEM_CHANNELS] + [c for c, _ in MOBILENET_V1_BLOCKS]
    last = found[-1]
    candidates = [last / nominal[-1], (last + 0.5) / nominal[-1], found[0] / nominal[0]]
    candidates += [round(last / nominal[-1], k) for k in (2, 3, 4)]
    for alpha in candidates:
        backbone = [scaled_channels(c, alpha, min_depth) for c in nominal]
        extra = []
        for d in TF_EXTRA_DEPTHS:
            extra.append(scaled_channels(d // 2, alpha, TF_EXTRA_MIN_DEPTH))
            extra.append(scaled_channels(d, alpha, TF_EXTRA_MIN_DEPTH))
        if backbone == found and extra == extras:
            return float(alpha)
    raise ValueError(
        f"no width multiplier reproduces the channel counts of the TFLite model "
        f"(backbone {found}, extra layers {extras})"
    )


def _activation(graph: TFLiteGraph, op: TFLiteOp) -> str:
    fused = op.options.get("activation", "NONE")
    if fused != "NONE":
        return fused
    follow = graph.consumers(op.outputs[0])
    if len(follow) == 1 and follow[0].opcode in ("RELU6", "RELU"):
        return follow[0].opcode
    # Old uint8 models (TOCO) drop a ReLU6 that the output range already does: the activation
    # is quantised to exactly [0, 6] (zero point at the lowest code).
    out = graph.tensors[op.outputs[0]]
    if out.quantized and out.scale.size == 1 and out.dtype in ("uint8", "int8"):
        lowest = 0 if out.dtype == "uint8" else -128
        zero = int(out.zero_point[0]) if out.zero_point.size else 0
        top = float(out.scale[0]) * 255
        if zero == lowest and abs(top - 6.0) < 0.05 and out.name.endswith("Relu6"):
            return "RELU6"
    return "NONE"


def _torch_weight(graph: TFLiteGraph, op: TFLiteOp) -> torch.Tensor:
    w = graph.constant(op.inputs[1])
    if op.opcode == "DEPTHWISE_CONV_2D":
        if op.options.get("depth_multiplier", 1) not in (0, 1) or w.shape[0] != 1:
            raise ValueError("depthwise convolutions with a depth multiplier are not supported")
        w = w.transpose(3, 0, 1, 2)  # 1HWO -> O1HW
    else:
        w = w.transpose(0, 3, 1, 2)  # OHWI -> OIHW
    return torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))


def _torch_bias(graph: TFLiteGraph, op: TFLiteOp, channels: int) -> torch.Tensor:
    if len(op.inputs) < 3 or op.inputs[2] < 0:
        return torch.zeros(channels)
    return torch.from_numpy(np.ascontiguousarray(graph.constant(op.inputs[2]), dtype=np.float32))


def _check_geometry(target: str, op: TFLiteOp, conv: nn.Conv2d) -> None:
    depthwise = conv.groups > 1
    if depthwise != (op.opcode == "DEPTHWISE_CONV_2D"):
        raise ValueError(f"{target}: TFLite has {op.opcode}, our layer has groups={conv.groups}")
    stride = tuple(op.options.get("stride", (1, 1)))
    if stride != tuple(conv.stride):
        raise ValueError(f"{target}: TFLite stride {stride}, ours {tuple(conv.stride)}")
    if tuple(op.options.get("dilation", (1, 1))) != (1, 1):
        raise ValueError(f"{target}: dilated convolutions are not supported")
    padding = op.options.get("padding", "SAME")
    if padding != "SAME" and conv.kernel_size != (1, 1):
        raise ValueError(f"{target}: TFLite padding {padding}; only 'SAME' maps onto padding='tf'")


def _box_permutation(num_anchors: int) -> list[int]:
    """Output-channel order taking TF ``(ty, tx, th, tw)`` per anchor to ``(dx, dy, dw, dh)``."""
    return [4 * a + c for a in range(num_anchors) for c in (1, 0, 3, 2)]


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def convert_tflite(
    path: str | Path, labels: str | Path | None = None, *, min_depth: int = 8
) -> TFLiteConversion:
    """Build our SSD with the weights of a TF OD API ``ssd_mobilenet_v1`` TFLite model.

    Args:
        path: the ``.tflite`` file (float or uint8/int8 quantised).
        labels: optional label file (one name per line, a leading ``???`` background line is
            dropped, see :func:`~detector.convert.common.read_label_file`).
        min_depth: backbone channel floor used when inferring the width multiplier.

    Returns:
        :class:`TFLiteConversion` with the model in eval mode, the class names and a report
        (configuration found, layers converted, anchor agreement, post-processing options).

    Raises:
        ValueError: the file is not an ``ssd_mobilenet_v1`` detector this converter understands.
    """
    path = Path(path)
    graph = read_tflite(path)
    mapping = map_tflite_layers(graph)

    # ------------------------------------------------------------ configuration from the file
    in_tensor = graph.tensors[graph.inputs[0]]
    if len(in_tensor.shape) != 4 or in_tensor.shape[3] != 3:
        raise ValueError(f"expected an NHWC RGB input, got shape {in_tensor.shape}")
    image_size = (int(in_tensor.shape[1]), int(in_tensor.shape[2]))
    alpha = _infer_alpha(graph, mapping, min_depth)

    levels = sorted(
        int(t.rsplit(".", 1)[1]) for t in mapping if t.startswith("head.box_predictors.")
    )
    if levels != list(range(len(levels))) or not levels:
        raise ValueError(f"box predictors for levels {levels}; expected 0..L-1")
    anchors_per_cell, class_slots, kernels = [], set(), set()
    for level in levels:
        box = _require(mapping, f"head.box_predictors.{level}")
        cls = _require(mapping, f"head.class_predictors.{level}")
        n_box, n_cls = _out_channels(graph, box), _out_channels(graph, cls)
        if n_box % 4:
            raise ValueError(f"BoxPredictor_{level}: {n_box} outputs, not a multiple of 4")
        k = n_box // 4
        anchors_per_cell.append(k)
        if n_cls % k:
            raise ValueError(f"BoxPredictor_{level}: {n_cls} class outputs for {k} anchors")
        class_slots.add(n_cls // k)
        for op in (box, cls):
            shape = graph.tensors[op.inputs[1]].shape
            kernels.add((int(shape[1]), int(shape[2])))
    if len(class_slots) != 1 or len(kernels) != 1:
        raise ValueError(f"predictors disagree: class slots {class_slots}, kernels {kernels}")
    num_classes = class_slots.pop() - 1
    kh, kw = kernels.pop()
    if kh != kw:
        raise ValueError(f"non-square predictor kernels {kh}x{kw} are not supported")

    feature_acts = {
        _activation(graph, op) for t, op in mapping.items() if not t.startswith("head.")
    }
    if feature_acts == {"RELU6"}:
        activation = "relu6"
    elif feature_acts == {"RELU"}:
        activation = "relu"
    else:
        raise ValueError(f"unsupported activations in the feature extractor: {feature_acts}")
    opcodes = {op.opcode for op in graph.ops}
    score_fn = "softmax" if "SOFTMAX" in opcodes and "LOGISTIC" not in opcodes else "sigmoid"

    model = ssd_mobilenet_v1(
        num_classes,
        alpha=alpha,
        min_depth=min_depth,
        image_size=image_size,
        head="ssd",
        head_kernel_size=kh,
        anchors="tf",
        activation=activation,
        padding="tf",
        extra_depths=TF_EXTRA_DEPTHS,
        extra_min_depth=TF_EXTRA_MIN_DEPTH,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        score_fn=score_fn,
    )
    ours_per_cell = [m.out_channels // 4 for m in model.head.box_predictors]
    if ours_per_cell != anchors_per_cell:
        raise ValueError(
            f"anchors per cell differ: TFLite {anchors_per_cell}, tf anchor preset {ours_per_cell}"
        )

    # ------------------------------------------------------------ weights
    state = model.state_dict()
    predictors = ("head.box_predictors.", "head.class_predictors.")
    expected = {
        name
        for name, module in model.named_modules()
        if (isinstance(module, nn.Sequential) and hasattr(module, "conv") and hasattr(module, "bn"))
        or (name.startswith(predictors) and isinstance(module, nn.Conv2d))
    }
    missing = sorted(expected - set(mapping))
    extra = sorted(set(mapping) - expected)
    if missing or extra:
        raise ValueError(f"layer mismatch: missing in TFLite {missing[:5]}, unexpected {extra[:5]}")

    for target, op in mapping.items():
        module = model.get_submodule(target)
        conv = module if isinstance(module, nn.Conv2d) else module.conv
        _check_geometry(target, op, conv)
        weight = _torch_weight(graph, op)
        if weight.shape != conv.weight.shape:
            raise ValueError(
                f"{target}: TFLite weight {tuple(weight.shape)} (as OIHW), ours "
                f"{tuple(conv.weight.shape)}"
            )
        bias = _torch_bias(graph, op, weight.shape[0])
        if isinstance(module, nn.Conv2d):
            if target.startswith("head.box_predictors."):
                perm = _box_permutation(weight.shape[0] // 4)
                weight, bias = weight[perm], bias[perm]
            state[f"{target}.weight"] = weight
            state[f"{target}.bias"] = bias
        else:
            state.update(folded_conv_bn_state(target, module.bn, weight, bias))
    model.load_state_dict(state, strict=True)
    model.eval()

    # ------------------------------------------------------------ checks against the file
    report: dict[str, Any] = {
        "alpha": alpha,
        "image_size": list(image_size),
        "num_classes": num_classes,
        "activation": activation,
        "score_fn": score_fn,
        "head_kernel_size": kh,
        "layers_converted": len(mapping),
        "quantized_weights": any(graph.tensors[op.inputs[1]].quantized for op in mapping.values()),
    }
    if in_tensor.quantized:
        report["input_quantization"] = {
            "scale": float(in_tensor.scale[0]),
            "zero_point": int(in_tensor.zero_point[0]) if in_tensor.zero_point.size else 0,
        }
    post = [op for op in graph.ops if op.opcode == POSTPROCESS_OP]
    if post:
        options = _plain(post[0].options)
        report["postprocess"] = options
        scales = tuple(
            float(options.get(k, d))
            for k, d in (("x_scale", 10.0), ("y_scale", 10.0), ("w_scale", 5.0), ("h_scale", 5.0))
        )
        if scales != BoxCoder().weights:
            raise ValueError(
                f"TFLite box coder scales (x, y, w, h) = {scales}; our BoxCoder uses "
                f"{BoxCoder().weights}"
            )
        if "num_classes" in options and int(options["num_classes"]) != num_classes:
            raise ValueError(
                f"post-processing says {options['num_classes']} classes, predictors {num_classes}"
            )
        if len(post[0].inputs) >= 3:
            theirs = graph.constant(post[0].inputs[2]).astype(np.float64)  # (cy, cx, h, w)
            a = model.anchors.double().numpy()  # xyxy
            ours = np.stack(
                (
                    (a[:, 1] + a[:, 3]) / 2,
                    (a[:, 0] + a[:, 2]) / 2,
                    a[:, 3] - a[:, 1],
                    a[:, 2] - a[:, 0],
                ),
                axis=1,
            )
            if theirs.shape != ours.shape:
                raise ValueError(f"TFLite anchors {theirs.shape}, ours {ours.shape}")
            diff = float(np.abs(theirs - ours).max())
            report["anchors_max_abs_diff"] = diff
            if diff > ANCHOR_TOLERANCE:
                raise ValueError(f"TFLite anchors differ from ours by up to {diff:.4f}")
    classes = read_label_file(labels, num_classes)
    return TFLiteConversion(model=model, classes=classes, report=report)


def convert_tflite_file(
    path: str | Path, out: str | Path, labels: str | Path | None = None
) -> dict[str, Any]:
    """Convert ``path`` and write the checkpoint ``out``; returns the conversion report."""
    result = convert_tflite(path, labels)
    source = {
        "format": "tflite",
        "file": Path(path).name,
        "sha256": sha256_of(path),
        "labels": Path(labels).name if labels else None,
        "report": _plain(result.report),
    }
    # TF Object Detection API label maps number their classes from 1: class slot k (0-based,
    # after the background) is category id k + 1 -- for the COCO models the COCO category id,
    # with '???' at the unused ids.
    class_ids = list(range(1, len(result.classes) + 1))
    save_converted(result.model, result.classes, out, source, class_ids=class_ids)
    return {**result.report, "out": str(out), "classes": len(result.classes)}


# ----------------------------------------------------------------------------- uint8 emulation


def tflite_anchors_xyxy(graph: TFLiteGraph) -> torch.Tensor:
    """The anchors stored in the file's ``TFLite_Detection_PostProcess`` operator.

    Quantised models keep them as uint8 constants (step ``0.0065`` for the COCO model, up to
    one input pixel off the exact anchors); the file's own detections were decoded with these.

    Returns:
        ``Tensor[A, 4]`` normalised xyxy, float32, in head-output order.

    Raises:
        ValueError: the graph has no post-processing operator with an anchors input.
    """
    post = [op for op in graph.ops if op.opcode == POSTPROCESS_OP]
    if not post or len(post[0].inputs) < 3:
        raise ValueError("the TFLite graph has no TFLite_Detection_PostProcess anchors input")
    cy, cx, h, w = torch.from_numpy(graph.constant(post[0].inputs[2]).astype(np.float32)).T
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=1)


def emulate_tflite_uint8(model: SSD, graph: TFLiteGraph) -> list[Any]:
    """Make a converted model compute as the quantised TFLite file does (in place).

    Every mapped layer's output is rounded to the file's uint8 grid (its output tensor's scale
    and zero point, clamped to ``[0, 255]``), and the input normalisation becomes the quantised
    input's ``(q - 128) / 128``. Weights are already the file's dequantised values, so the raw
    outputs then agree with the TFLite interpreter to a few uint8 codes. This is for checking a
    conversion against the file's own detections, or reproducing them exactly; for fine-tuning
    and export use the plain float model.

    Args:
        model: the model returned by :func:`convert_tflite` for ``graph``.
        graph: the parsed TFLite file (:func:`~detector.convert.tflite_reader.read_tflite`).

    Returns:
        The forward-hook handles; ``handle.remove()`` on each undoes the rounding (the
        normalisation change stays).

    Raises:
        ValueError: the file is not quantised (a layer output without uint8 quantisation).
    """
    handles = []
    for target, op in map_tflite_layers(graph).items():
        out = graph.tensors[op.outputs[0]]
        if out.scale.size != 1 or out.dtype != "uint8":
            raise ValueError(
                f"{target}: output tensor {out.name!r} is not per-tensor uint8 ({out.dtype})"
            )
        scale, zero = float(out.scale[0]), int(out.zero_point[0])

        def hook(_m: nn.Module, _i: Any, y: torch.Tensor, s: float = scale, z: int = zero):
            return (torch.clamp(torch.round(y / s) + z, 0, 255) - z) * s

        handles.append(model.get_submodule(target).register_forward_hook(hook))
    model.mean.fill_(128 / 255)
    model.std.fill_(128 / 255)
    return handles
