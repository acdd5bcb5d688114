"""Export trained detectors to deployment formats, with built-in verification.

Entry points: :func:`export_checkpoint` / :func:`export_model` (``export.py`` on the command
line), :data:`FORMATS` (what each format supports), :class:`ExportWrapper` (the module an artifact
reproduces), :func:`detections_from_outputs` (torch-free post-processing driven by the sidecar).

The ONNX-specific parts (:mod:`detector.export.onnx_format`) import ``onnx``/``onnxruntime``
lazily, so this package imports without the ``export`` extra installed.
"""

from .api import (
    ExportOptions,
    ExportResult,
    export_checkpoint,
    export_model,
    options_from_dict,
    with_image_size,
)
from .formats import FORMATS, STAGES, ExportError, FormatCapabilities, check_request, format_table
from .numpy_post import detections_from_outputs
from .sidecar import build_sidecar, read_sidecar, write_sidecar
from .verify import Verdict, match_detections, verify_artifact
from .wrapper import ExportWrapper, Postprocess, fold_batchnorm, output_names

__all__ = [
    "FORMATS",
    "STAGES",
    "ExportError",
    "ExportOptions",
    "ExportResult",
    "ExportWrapper",
    "FormatCapabilities",
    "Postprocess",
    "Verdict",
    "build_sidecar",
    "check_request",
    "detections_from_outputs",
    "export_checkpoint",
    "export_model",
    "fold_batchnorm",
    "format_table",
    "match_detections",
    "options_from_dict",
    "output_names",
    "read_sidecar",
    "verify_artifact",
    "with_image_size",
    "write_sidecar",
]
