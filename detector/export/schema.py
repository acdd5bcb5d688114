"""Typed Hydra schema of ``export.py`` (registered in the ConfigStore by ``export.py``).

``conf/export.yaml`` builds on :class:`ExportSchema`; ``conf/format/*.yaml`` on
:class:`FormatSchema`, so a misspelt key fails when the config is composed.
:func:`options_from_hydra` turns the composed config into plain :class:`ExportOptions`.
"""

from dataclasses import dataclass, field
from typing import Any, List, Optional  # noqa: UP035

from ..postprocess_settings import PostprocessSettings
from .api import ExportOptions
from .formats import ExportError

__all__ = ["ExportSchema", "FormatSchema", "options_from_hydra", "register_export_schemas"]


@dataclass
class FormatSchema:
    """One export format and its format-specific settings (unused ones are ignored)."""

    name: str = "onnx"  # onnx | tflite | executorch | coreml
    opset: int = 18  # ONNX opset
    exporter: str = "auto"  # ONNX: auto (dynamo, TorchScript fallback) | dynamo | torchscript
    # int8 post-training quantization (ONNX Runtime static QDQ)
    per_channel: bool = True
    activation_type: str = "uint8"  # uint8 | int8
    weight_type: str = "int8"  # uint8 | int8
    calibrate_method: str = "minmax"  # minmax | entropy | percentile
    quant_op_types: Optional[List[str]] = None  # None: every op ONNX Runtime quantizes
    quant_format: str = "qdq"  # ONNX int8: qdq | qoperator
    # ONNX int8: node groups kept float: first_conv | predictors | outputs | node names
    quant_exclude: List[str] = field(default_factory=lambda: ["outputs"])
    activation_symmetric: bool = False  # ONNX int8: symmetric activation ranges
    compute_precision: str = "float32"  # Core ML: float32 | float16


@dataclass
class ExportSchema:
    format: FormatSchema = field(default_factory=FormatSchema)
    postprocess: PostprocessSettings = field(default_factory=PostprocessSettings)
    checkpoint: Optional[str] = None  # required: best.pt / last.pt / converted model
    use_ema: bool = True  # take the EMA weights when the checkpoint has them
    image_size: Optional[List[int]] = None  # [H, W]; null = the checkpoint's
    decode: bool = False  # end the graph after decoding (boxes + scores)
    nms: bool = False  # end the graph after NMS (padded boxes/scores/labels/count)
    clip_boxes: bool = True
    int8: bool = False
    calibration: Optional[str] = None  # image folder / list file / "synthetic"
    num_calibration_images: int = 100
    dynamic_batch: bool = False
    name: Optional[str] = None  # artifact base name; null = checkpoint stem
    verify: bool = True
    verify_images: Optional[str] = None  # null = unused calibration images, else generated
    num_verify_images: int = 8
    min_agreement: float = 0.99  # fp32 fails below this detection agreement
    int8_min_agreement: Optional[float] = None  # null = int8 agreement reported only
    map_annotations: Optional[str] = None  # int8 mAP ground truth (COCO JSON); null = auto
    num_map_images: int = 0  # images for the int8 mAP check; 0 = all
    int8_max_map_drop: Optional[float] = None  # fail when int8 loses more mAP points
    threads: int = 0  # runtime threads for verification (0 = default)


def register_export_schemas() -> None:
    """Register ``export_schema`` and the ``format`` group schema (and the shared ``postprocess``
    group of :func:`detector.config.register_schemas`) in Hydra's ConfigStore."""
    from hydra.core.config_store import ConfigStore

    from ..config import register_schemas

    register_schemas()
    cs = ConfigStore.instance()
    cs.store(name="export_schema", node=ExportSchema)
    cs.store(group="format", name="format_schema", node=FormatSchema)


def options_from_hydra(cfg: Any) -> tuple[str, ExportOptions, bool]:
    """``(checkpoint, options, use_ema)`` from a composed ``export`` config."""
    from omegaconf import OmegaConf

    spec = OmegaConf.to_object(cfg)
    if not isinstance(spec, ExportSchema):
        raise TypeError(f"expected a config built on export_schema, got {type(spec).__name__}")
    if not spec.checkpoint:
        raise ExportError("checkpoint=<path to a detector checkpoint> is required")
    fmt, post = spec.format, spec.postprocess
    options = ExportOptions(
        format=fmt.name,
        image_size=tuple(spec.image_size) if spec.image_size is not None else None,
        decode=spec.decode,
        nms=spec.nms,
        int8=spec.int8,
        calibration=spec.calibration,
        num_calibration_images=spec.num_calibration_images,
        dynamic_batch=spec.dynamic_batch,
        name=spec.name,
        score_thresh=post.score_thresh,
        nms_thresh=post.nms_thresh,
        topk_candidates=post.topk_candidates,
        max_detections=post.max_detections,
        clip_boxes=spec.clip_boxes,
        opset=fmt.opset,
        exporter=fmt.exporter,
        per_channel=fmt.per_channel,
        activation_type=fmt.activation_type,
        weight_type=fmt.weight_type,
        calibrate_method=fmt.calibrate_method,
        quant_op_types=tuple(fmt.quant_op_types) if fmt.quant_op_types else None,
        quant_format=fmt.quant_format,
        quant_exclude=tuple(fmt.quant_exclude),
        activation_symmetric=fmt.activation_symmetric,
        compute_precision=fmt.compute_precision,
        verify=spec.verify,
        verify_images=spec.verify_images,
        num_verify_images=spec.num_verify_images,
        min_agreement=spec.min_agreement,
        int8_min_agreement=spec.int8_min_agreement,
        map_annotations=spec.map_annotations,
        num_map_images=spec.num_map_images,
        int8_max_map_drop=spec.int8_max_map_drop,
        threads=spec.threads,
    )
    if options.image_size is not None and len(options.image_size) != 2:
        raise ExportError(f"image_size must be [H, W], got {list(options.image_size)}")
    return spec.checkpoint, options, spec.use_ema
