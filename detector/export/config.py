# ruff: noqa: UP006, UP035, UP045 - OmegaConf reads typing.List / Optional annotations
"""What an export does, as one typed dataclass: :class:`ExportConfig`.

The same classes are the Hydra schema of ``detector export`` / ``export.py`` (``conf/export.yaml``
builds on :class:`ExportConfig`, ``conf/format/*.yaml`` on :class:`FormatConfig`; see
:mod:`detector.export.schema`) and the options of :func:`~detector.export.export_model`. An
export is a format, post-processing, quantization and verification:

=====================  ==============================  ==========================================
part                   type                            on the command line
=====================  ==============================  ==========================================
format                 :class:`FormatConfig`           ``format=onnx format.opset=17``
int8 settings          :class:`QuantizationConfig`     ``format.quant_exclude=[first_conv]``
                       (a base of ``FormatConfig``:    (``int8=true calibration=<images>``
                       they are the format's)          switch it on)
post-processing        ``PostprocessConfig``         ``postprocess.score_thresh=0.3``
                                                       ``postprocess.clip_boxes=false``
verification           :class:`VerificationConfig`     ``verify_images=<dir> num_verify_images=3``
                       (a base of ``ExportConfig``)
the graph and request  :class:`ExportConfig`           ``nms=true dynamic_batch=true``
=====================  ==============================  ==========================================

The int8 and verification settings are bases rather than nested fields so that every key keeps
the spelling users type (``format.quant_exclude=...``, ``verify_images=...``); a function that
needs only one part takes that type (``quantize_onnx(..., settings: QuantizationConfig)``).

:func:`ExportOptions` builds an :class:`ExportConfig` from the flat keyword names of the command
line (``ExportOptions(format="tflite", decode=True, score_thresh=0.3, opset=17)``).
"""

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional

from ..postprocess_config import PostprocessConfig
from .errors import ExportError

if TYPE_CHECKING:
    from .registry import ExportFormat

__all__ = [
    "QUANT_FORMATS",
    "STAGES",
    "ExportConfig",
    "ExportOptions",
    "FormatConfig",
    "QuantizationConfig",
    "VerificationConfig",
    "options_from_dict",
]

#: Where the exported graph ends: raw head outputs, decoded boxes and scores, or NMS detections.
STAGES = ("raw", "decoded", "nms")
#: ``quant_format`` values and ONNX Runtime's names for them.
QUANT_FORMATS = {"qdq": "QDQ", "qoperator": "QOperator"}
PRECISIONS = ("float32", "float16")


@dataclass
class QuantizationConfig:
    """Post-training int8 settings (used when ``int8=true``).

    Attributes:
        per_channel: per-output-channel weight scales (ONNX and TFLite).
        activation_type, weight_type: ONNX: ``"uint8"`` or ``"int8"`` (U8S8 is ONNX Runtime's
            recommendation for x86 CPUs).
        calibrate_method: ONNX: ``"minmax"``, ``"entropy"`` or ``"percentile"``.
        quant_op_types: ONNX: operator types to quantize (None: every one ONNX Runtime can).
        quant_format: ONNX: ``"qdq"`` (QuantizeLinear/DequantizeLinear pairs) or
            ``"qoperator"`` (QLinearConv & co.).
        quant_exclude: ONNX: node groups kept float: ``first_conv``, ``predictors``, ``outputs``
            (the head's transposes, reshapes and concatenations, so each predictor keeps its own
            output scale; the default) or node names
            (:func:`detector.export.onnx_quantize.excluded_nodes`).
        activation_symmetric: ONNX: symmetric activation ranges.
    """

    per_channel: bool = True
    activation_type: str = "uint8"
    weight_type: str = "int8"
    calibrate_method: str = "minmax"
    quant_op_types: Optional[List[str]] = None
    quant_format: str = "qdq"
    quant_exclude: List[str] = field(default_factory=lambda: ["outputs"])
    activation_symmetric: bool = False

    def __post_init__(self) -> None:
        self.quant_exclude = list(self.quant_exclude)
        if self.quant_op_types is not None:
            self.quant_op_types = list(self.quant_op_types)


@dataclass
class FormatConfig(QuantizationConfig):
    """One export format (a key of :data:`detector.export.FORMATS`) and its settings; settings a
    format does not use are ignored.

    Attributes:
        name: ``onnx``, ``tflite``, ``executorch``, ``coreml`` (``format=<name>``).
        opset, exporter: ONNX opset and exporter (``auto``: dynamo with a TorchScript fallback,
            ``dynamo``, ``torchscript``).
        compute_precision: Core ML program precision, ``float32`` or ``float16``.
    """

    name: str = "onnx"
    opset: int = 18
    exporter: str = "auto"
    compute_precision: str = "float32"


@dataclass
class VerificationConfig:
    """How the written artifact is checked against PyTorch.

    Attributes:
        verify: run the artifact in its runtime and compare.
        verify_images: image folder or list file (None: calibration images not used for
            calibration, else generated images).
        num_verify_images: images used.
        min_agreement: fp32 exports fail below this fraction of matched detections.
        int8_min_agreement: int8 exports fail below this (None: reported only).
        map_annotations: ground truth for the int8 COCO mAP check: a COCO JSON or a folder with
            ``annotations.json`` (None: the one next to ``verify_images``, if any).
        num_map_images: images of ``map_annotations`` evaluated (0: all).
        int8_max_map_drop: int8 exports fail when COCO mAP drops by more points (None: report).
        raw_tolerance: fp32 exports fail when raw outputs differ by more than this times
            ``max(1, max |output|)``.
        match_score, match_iou: detections compared (score >= match_score) and the IoU a match
            needs.
        threads: runtime threads (0: the runtime's default).
    """

    verify: bool = True
    verify_images: Optional[str] = None
    num_verify_images: int = 8
    min_agreement: float = 0.99
    int8_min_agreement: Optional[float] = None
    map_annotations: Optional[str] = None
    num_map_images: int = 0
    int8_max_map_drop: Optional[float] = None
    raw_tolerance: float = 1e-3
    match_score: float = 0.3
    match_iou: float = 0.9
    threads: int = 0


@dataclass
class ExportConfig(VerificationConfig):
    """Everything an export needs besides the model (``detector export`` and the library).

    Attributes:
        format: the format and its settings (int8 settings included).
        postprocess: score/NMS thresholds and sizes (in the graph for ``nms``, recorded in the
            sidecar otherwise); ``clip_boxes`` clips decoded boxes to the image.
        checkpoint, use_ema: the checkpoint to export and whether to take its EMA weights (the
            command line; :func:`~detector.export.export_checkpoint` takes the path as argument).
        image_size: ``[H, W]`` to export at (None: the checkpoint's).
        decode: end the graph after box decoding (boxes + scores).
        nms: end the graph after NMS (fixed-size padded detections); implies ``decode``.
        dynamic_batch: leave the batch dimension free.
        int8: post-training int8 quantization over ``calibration`` images.
        calibration: image folder, image list file, or ``"synthetic"`` (generated images).
        num_calibration_images: images used for calibration.
        name: artifact base name (None: the checkpoint's stem, ``"model"`` for in-memory models).
        (verification: see :class:`VerificationConfig`.)
    """

    format: FormatConfig = field(default_factory=FormatConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    checkpoint: Optional[str] = None
    use_ema: bool = True
    image_size: Optional[List[int]] = None
    decode: bool = False
    nms: bool = False
    dynamic_batch: bool = False
    int8: bool = False
    calibration: Optional[str] = None
    num_calibration_images: int = 100
    name: Optional[str] = None

    def __post_init__(self) -> None:
        if self.image_size is not None:
            self.image_size = tuple(int(v) for v in self.image_size)  # type: ignore[assignment]

    @property
    def stage(self) -> str:
        """Where the graph ends: ``raw``, ``decoded`` or ``nms``."""
        return "nms" if self.nms else "decoded" if self.decode else "raw"

    def postprocess_settings(self) -> dict[str, Any]:
        """``score_thresh``, ``nms_thresh``, ``topk_candidates``, ``max_detections``,
        ``clip_boxes`` as a dict (the sidecar's ``postprocess``)."""
        return dataclasses.asdict(self.postprocess)

    def check(self) -> "ExportFormat":
        """Validate the request (format registry, values, files) without doing any work.

        Returns:
            The format's registry entry.
        """
        from .registry import check_request

        fmt = check_request(
            self.format.name,
            decode=self.decode and not self.nms,
            nms=self.nms,
            int8=self.int8,
            dynamic_batch=self.dynamic_batch,
            calibration=self.calibration,
        )
        post = self.postprocess
        if self.image_size is not None:
            size = tuple(int(v) for v in self.image_size)
            if len(size) != 2 or min(size) < 32:
                raise ExportError(
                    f"image_size must be [H, W] with sides >= 32, got {list(self.image_size)}"
                )
        try:
            post.check()
        except ValueError as exc:
            raise ExportError(str(exc)) from exc
        if self.int8 and self.num_calibration_images < 1:
            raise ExportError("num_calibration_images must be >= 1")
        if self.verify and self.num_verify_images < 1:
            raise ExportError("num_verify_images must be >= 1 (or verify=false)")
        if (
            self.verify_images not in (None, "", "synthetic")
            and not Path(self.verify_images).exists()
        ):
            raise ExportError(f"verify_images={self.verify_images}: no such file or folder")
        if self.map_annotations not in (None, "") and not Path(self.map_annotations).exists():
            raise ExportError(f"map_annotations={self.map_annotations}: no such file or folder")
        if self.num_map_images < 0:
            raise ExportError("num_map_images must be >= 0 (0: all images)")
        if self.format.quant_format not in QUANT_FORMATS:
            raise ExportError(
                f"quant_format must be qdq or qoperator, got {self.format.quant_format!r}"
            )
        if self.format.compute_precision not in PRECISIONS:
            raise ExportError(
                "compute_precision must be float32 or float16, got "
                f"{self.format.compute_precision!r}"
            )
        if self.name is not None and (not self.name or "/" in self.name or "\\" in self.name):
            raise ExportError(f"name must be a plain file name, got {self.name!r}")
        return fmt


def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def options_from_dict(values: Mapping[str, Any]) -> ExportConfig:
    """An :class:`ExportConfig` from flat keys, each spelt as its command-line leaf: ``format``
    (the format's name), the :class:`FormatConfig` settings (``opset``, ``quant_exclude``, ...),
    the post-processing settings (``score_thresh``, ...) and the :class:`ExportConfig` fields.
    Nested values (``format=FormatConfig(...)``, ``postprocess={...}``) are taken as well.

    Raises:
        ExportError: an unknown key.
    """
    top = set(_field_names(ExportConfig))
    fmt_keys = set(_field_names(FormatConfig)) - {"name"}
    post_keys = set(_field_names(PostprocessConfig))
    unknown = sorted(set(values) - top - fmt_keys - post_keys)
    if unknown:
        raise ExportError(f"unknown export options {unknown}")
    data = {k: v for k, v in values.items() if k in top and k not in ("format", "postprocess")}
    fmt = values.get("format")
    if isinstance(fmt, FormatConfig):
        fmt = dataclasses.asdict(fmt)
    elif isinstance(fmt, Mapping):
        fmt = dict(fmt)
    else:
        fmt = {} if fmt is None else {"name": fmt}
    fmt.update({k: v for k, v in values.items() if k in fmt_keys})
    post = values.get("postprocess") or {}
    post = dataclasses.asdict(post) if isinstance(post, PostprocessConfig) else dict(post)
    post.update({k: v for k, v in values.items() if k in post_keys})
    return ExportConfig(format=FormatConfig(**fmt), postprocess=PostprocessConfig(**post), **data)


def ExportOptions(**values: Any) -> ExportConfig:  # the name callers already use
    """``ExportOptions(format="tflite", decode=True, score_thresh=0.3)``: an :class:`ExportConfig`
    from flat keywords (see :func:`options_from_dict`)."""
    return options_from_dict(values)
