"""The JSON sidecar written next to every exported model.

It holds what a runtime without PyTorch needs to use the artifact: how to build the input, what
each output means, the classes, and, depending on where the graph ends, the anchors and box-coder
settings (``stage="raw"``) or the score function and NMS settings (``decoded``/``nms``).
:mod:`detector.export.numpy_post` is a reference reader.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

from ..box_ops import BoxCoder
from ..models import SSD

__all__ = ["SIDECAR_VERSION", "build_sidecar", "read_sidecar", "write_sidecar"]

SIDECAR_VERSION = 1


def _version() -> str:
    try:
        return metadata.version("detector")
    except metadata.PackageNotFoundError:
        return "unknown"


def _output_layout(
    stage: str, batch: Any, num_anchors: int, num_classes: int, max_det: int
) -> list[dict]:
    if stage == "raw":
        return [
            {
                "name": "box_deltas",
                "shape": [batch, num_anchors, 4],
                "dtype": "float32",
                "meaning": "box regression (dx, dy, dw, dh) per anchor; decode with 'decode'",
            },
            {
                "name": "class_logits",
                "shape": [batch, num_anchors, num_classes + 1],
                "dtype": "float32",
                "meaning": "class logits per anchor, column 0 = background; apply scores.score_fn",
            },
        ]
    if stage == "decoded":
        return [
            {
                "name": "boxes",
                "shape": [batch, num_anchors, 4],
                "dtype": "float32",
                "meaning": "boxes x1, y1, x2, y2 normalised to [0, 1] of the input; "
                "multiply by the original (W, H, W, H)",
            },
            {
                "name": "scores",
                "shape": [batch, num_anchors, num_classes + 1],
                "dtype": "float32",
                "meaning": "class scores (score_fn applied), column 0 = background, "
                "column c = label c; run per-class NMS with 'postprocess'",
            },
        ]
    return [
        {
            "name": "boxes",
            "shape": [batch, max_det, 4],
            "dtype": "float32",
            "meaning": "detections x1, y1, x2, y2 normalised to [0, 1]; rows >= count are zero "
            "padding; multiply by the original (W, H, W, H)",
        },
        {
            "name": "scores",
            "shape": [batch, max_det],
            "dtype": "float32",
            "meaning": "detection scores, decreasing; 0 in padding rows",
        },
        {
            "name": "labels",
            "shape": [batch, max_det],
            "dtype": "int64",
            "meaning": "class labels 1..C (classes[label - 1]); 0 in padding rows",
        },
        {
            "name": "count",
            "shape": [batch],
            "dtype": "int64",
            "meaning": "number of valid rows per image",
        },
    ]


def build_sidecar(
    model: SSD,
    classes: list[str],
    *,
    file: str,
    format: str,
    stage: str,
    postprocess: dict[str, Any],
    dynamic_batch: bool = False,
    box_coder: BoxCoder | None = None,
    export_facts: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The sidecar dict of an export (the verification verdict is added later).

    Args:
        model: the exported :class:`SSD`.
        classes: class names (label ``c`` is ``classes[c - 1]``); empty when unknown.
        file: artifact file name (relative to the sidecar).
        format: export format.
        stage: ``"raw"``, ``"decoded"`` or ``"nms"``.
        postprocess: ``score_thresh``, ``nms_thresh``, ``topk_candidates``, ``max_detections``,
            ``clip_boxes``: applied in the graph for ``nms``, to apply after it otherwise.
        dynamic_batch: the batch dimension is free.
        export_facts: exporter details (opset, exporter, quantization...).
    """
    coder = box_coder if box_coder is not None else BoxCoder()
    h, w = model.image_size
    num_classes = model.num_classes
    num_anchors = model.num_anchors
    batch: Any = "batch" if dynamic_batch else 1
    k = min(postprocess["topk_candidates"], num_anchors)
    max_det = min(postprocess["max_detections"], num_classes * k)
    config = model.config.to_dict() if getattr(model, "config", None) is not None else {}
    sidecar: dict[str, Any] = {
        "sidecar_version": SIDECAR_VERSION,
        "producer": {"package": "detector", "version": _version()},
        "format": format,
        "file": file,
        "stage": stage,
        "classes": list(classes),
        "num_classes": num_classes,
        "input": {
            "name": "images",
            "shape": [batch, 3, h, w],
            "height_width": [h, w],
            "dtype": "float32",
            "layout": "NCHW",
            "color": "RGB",
            "value_range": [0.0, 1.0],
            "resize": "whole image stretched to (W, H), bilinear, no letterbox",
            "normalization": {
                "inside_graph": True,
                "mean": list(config.get("mean", [0.5, 0.5, 0.5])),
                "std": list(config.get("std", [0.5, 0.5, 0.5])),
                "formula": "(x - mean) / std, applied by the graph to the [0, 1] input",
            },
            "dynamic_batch": dynamic_batch,
        },
        "outputs": _output_layout(stage, batch, num_anchors, num_classes, max_det),
        "scores": {
            "score_fn": model.score_fn,
            "background_index": 0,
            "applied_in_graph": stage != "raw",
        },
        "postprocess": {
            "applied_in_graph": stage == "nms",
            "score_thresh": float(postprocess["score_thresh"]),
            "nms_thresh": float(postprocess["nms_thresh"]),
            "topk_candidates": int(postprocess["topk_candidates"]),
            "max_detections": int(postprocess["max_detections"]),
            "clip_boxes": bool(postprocess["clip_boxes"]),
            "procedure": "per class: the topk_candidates best anchors, keep scores > score_thresh, "
            "greedy NMS (suppress IoU > nms_thresh); then the max_detections best over classes",
        },
        "model": config,
    }
    if stage == "raw":
        sidecar["decode"] = {
            "anchor_format": "x1, y1, x2, y2 normalised to [0, 1] of the input",
            "num_anchors": num_anchors,
            "box_coder": {
                "type": "ssd_center_size",
                "delta_order": ["dx", "dy", "dw", "dh"],
                "weights": list(coder.weights),
                "scale_clamp": coder.scale_clamp,
                "formula": "cx = dx/wx*aw + acx; cy = dy/wy*ah + acy; "
                "w = exp(min(dw/ww, scale_clamp))*aw; h = exp(min(dh/wh, scale_clamp))*ah",
            },
            "anchors": [[float(v) for v in row] for row in model.anchors.tolist()],
        }
    if export_facts:
        sidecar["export"] = dict(export_facts)
    return sidecar


def _dumps(value: Any, level: int = 0) -> str:
    """JSON with dicts indented, lists of numbers/strings on one line, lists of lists one row per
    line (anchors)."""
    pad, inner = " " * level, " " * (level + 2)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{json.dumps(str(k))}: {_dumps(v, level + 2)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, (list, tuple)):
        if all(not isinstance(v, (dict, list, tuple)) for v in value):
            return json.dumps(list(value), separators=(", ", ": "))
        items = [f"{inner}{_dumps(v, level + 2)}" for v in value]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    return json.dumps(value)


def write_sidecar(sidecar: dict[str, Any], path: str | Path) -> Path:
    """Write the sidecar as readable JSON (anchors one compact row per anchor)."""
    path = Path(path)
    path.write_text(_dumps(sidecar) + "\n", encoding="utf-8")
    return path


def read_sidecar(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))
