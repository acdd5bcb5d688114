"""ONNX int8: static post-training quantization of the network with ONNX Runtime.

Only the network (``images -> box_deltas, class_logits``) is quantized; box decoding, scores and
NMS stay float (:mod:`detector.export.onnx_format` joins them on afterwards). The settings are a
:class:`~detector.export.config.QuantizationConfig` (``format.*`` on the command line).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .config import QUANT_FORMATS, QuantizationConfig
from .errors import ExportError

__all__ = ["EXCLUDE_GROUPS", "excluded_nodes", "quantization_facts", "quantize_onnx"]

#: Named node groups ``quant_exclude`` keeps in float (see :func:`excluded_nodes`).
EXCLUDE_GROUPS = ("first_conv", "predictors", "outputs")


def quantization_facts(settings: QuantizationConfig) -> dict[str, Any]:
    """The sidecar's ``export.quantization`` record of ``settings`` (its keys are those the
    sidecar has always had: ``op_types``, ``exclude``, ``symmetric_activations``)."""
    s = settings
    return {
        "per_channel": s.per_channel,
        "activation_type": s.activation_type,
        "weight_type": s.weight_type,
        "calibrate_method": s.calibrate_method,
        "op_types": list(s.quant_op_types) if s.quant_op_types else None,
        "quant_format": s.quant_format,
        "exclude": list(s.quant_exclude),
        "symmetric_activations": s.activation_symmetric,
        "format": QUANT_FORMATS.get(str(s.quant_format), str(s.quant_format)),
        "scope": "network only (decode, scores and NMS stay float32)",
    }


class _DropMessages(logging.Filter):
    """Drops log records starting with a given text (ONNX Runtime's pre-processing hint: BatchNorm
    is already folded and shapes are static)."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


class _ImageReader:
    """``onnxruntime.quantization.CalibrationDataReader`` over image batches."""

    def __init__(self, batches: Iterable[np.ndarray], input_name: str = "images") -> None:
        self._batches = iter(batches)
        self._name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self._name: np.ascontiguousarray(batch, np.float32)}

    def __iter__(self):
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def quantize_onnx(
    model,
    calibration: Iterable[np.ndarray],
    settings: QuantizationConfig | None = None,
    *,
    quantize_head: bool = True,
    extra_options: dict[str, Any] | None = None,
):
    """Static int8 quantization of a float ONNX network (ONNX Runtime).

    Args:
        model: ``onnx.ModelProto`` of the network (``images -> box_deltas, class_logits``).
        calibration: ``float32 [N, 3, H, W]`` image batches in ``[0, 1]``.
        settings: the int8 settings (None: the defaults of :class:`QuantizationConfig`):
            ``per_channel`` weight scales, ``activation_type``/``weight_type`` (``"uint8"`` or
            ``"int8"``), ``calibrate_method`` (``"minmax"``, ``"entropy"``, ``"percentile"``),
            ``quant_op_types`` (None: everything ONNX Runtime can), ``quant_format`` (``"qdq"``:
            QuantizeLinear/DequantizeLinear pairs around float ops, fused by ONNX Runtime into
            int8 kernels; ``"qoperator"``: QLinearConv & co. written out), ``quant_exclude``
            (node groups kept float, see :func:`excluded_nodes`) and ``activation_symmetric``
            (ONNX Runtime's ``ActivationSymmetric``).
        quantize_head: quantize the box/class predictor convolutions too (False keeps them and
            everything after them float; the same as ``quant_exclude=["predictors"]``).
        extra_options: more ``quantize_static`` ``extra_options`` (e.g. ``WeightSymmetric``).

    Returns:
        The quantized ``onnx.ModelProto``.
    """
    import tempfile

    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    s = settings or QuantizationConfig()
    for label, value, table in (
        ("activation_type", s.activation_type, types),
        ("weight_type", s.weight_type, types),
        ("calibrate_method", s.calibrate_method, methods),
    ):
        if value not in table:
            raise ExportError(f"unknown {label} {value!r}; choose one of {sorted(table)}")

    class Reader(_ImageReader, CalibrationDataReader):
        pass

    if s.quant_format not in QUANT_FORMATS:
        raise ExportError(
            f"unknown quant_format {s.quant_format!r}; choose one of {sorted(QUANT_FORMATS)}"
        )
    groups = [*s.quant_exclude, *([] if quantize_head else ["predictors"])]
    excluded = excluded_nodes(model, groups) or None
    extra = {"ActivationSymmetric": bool(s.activation_symmetric), **(extra_options or {})}

    root_logger = logging.getLogger()
    hint_filter = _DropMessages("Please consider")
    root_logger.addFilter(hint_filter)
    with tempfile.TemporaryDirectory(prefix="detector_quant_") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(src))
        reader = Reader(calibration, model.graph.input[0].name)
        quantize_static(
            str(src),
            str(dst),
            reader,
            quant_format=getattr(QuantFormat, QUANT_FORMATS[s.quant_format]),
            op_types_to_quantize=list(s.quant_op_types) if s.quant_op_types else None,
            per_channel=s.per_channel,
            activation_type=types[s.activation_type],
            weight_type=types[s.weight_type],
            calibrate_method=methods[s.calibrate_method],
            nodes_to_exclude=excluded,
            extra_options=extra,
        )
        quantized = onnx.load(str(dst))
    root_logger.removeFilter(hint_filter)
    if not any(n.op_type in ("QuantizeLinear", "QLinearConv") for n in quantized.graph.node):
        raise ExportError("int8 quantization produced no quantized nodes")
    return quantized


def excluded_nodes(model, groups: Sequence[str]) -> list[str]:
    """Node names of a network graph that ``groups`` name (see :data:`EXCLUDE_GROUPS`).

    Args:
        model: ``onnx.ModelProto`` of the network.
        groups: ``"first_conv"`` (the stem convolution), ``"predictors"`` (the predictor
            convolutions and every node after them), ``"outputs"`` (the nodes after the predictor
            convolutions: transposes, reshapes, concatenations), or exact node names.

    Raises:
        ExportError: a name that is neither a group nor a node of the graph.
    """
    nodes = {n.name for n in model.graph.node}
    names: set[str] = set()
    for group in groups:
        if group == "first_conv":
            names.update([n.name for n in model.graph.node if n.op_type == "Conv"][:1])
        elif group == "predictors":
            names.update(_head_nodes(model))
        elif group == "outputs":
            names.update(n for n in _head_nodes(model) if n not in _predictor_convs(model))
        elif group in nodes:
            names.add(group)
        else:
            raise ExportError(
                f"quant_exclude: {group!r} is neither a group {EXCLUDE_GROUPS} nor a node name"
            )
    return sorted(names)


def _predictor_convs(model) -> set[str]:
    head = set(_head_nodes(model))
    return {n.name for n in model.graph.node if n.op_type == "Conv" and n.name in head}


def _head_nodes(model) -> list[str]:
    """Names of the predictor convolutions (a Conv feeding the Transpose of the head's flatten)
    and of every node after them."""
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    head = [
        n
        for n in model.graph.node
        if n.op_type == "Conv"
        and any(c.op_type == "Transpose" for c in consumers.get(n.output[0], []))
    ]
    names, stack = set(), list(head)
    while stack:
        node = stack.pop()
        if node.name in names:
            continue
        names.add(node.name)
        for out in node.output:
            stack.extend(consumers.get(out, []))
    return sorted(names)
