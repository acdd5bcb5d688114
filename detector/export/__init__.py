"""Export trained detectors to deployment formats, with built-in verification.

Entry points: :func:`export_checkpoint` / :func:`export_model` (``detector export`` on the command
line) taking an :class:`ExportConfig` (format + post-processing + int8 settings + verification;
also the Hydra schema), :data:`FORMATS` (the format registry: what each format supports and its
implementation; :func:`register` adds one), :class:`ExportWrapper` (the module an artifact
reproduces), :func:`detections_from_outputs` (torch-free post-processing driven by the sidecar).

Names are imported on first use (PEP 562), so ``import detector.export`` is cheap; each format's
module imports its optional packages (``onnx``, ``litert_torch``, ``executorch``,
``coremltools``) only when that format is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> submodule that defines it
_NAMES = {
    "ExportConfig": "config",
    "ExportOptions": "config",
    "FormatConfig": "config",
    "QuantizationConfig": "config",
    "STAGES": "config",
    "VerificationConfig": "config",
    "options_from_dict": "config",
    "ExportError": "errors",
    "ExportResult": "pipeline",
    "export_checkpoint": "pipeline",
    "export_model": "pipeline",
    "with_image_size": "pipeline",
    "FORMATS": "registry",
    "ExportFormat": "registry",
    "check_request": "registry",
    "format_table": "registry",
    "register": "registry",
    "detections_from_outputs": "numpy_post",
    "build_sidecar": "sidecar",
    "read_sidecar": "sidecar",
    "write_sidecar": "sidecar",
    "Verdict": "verify",
    "match_detections": "verify",
    "verify_artifact": "verify",
    "ExportWrapper": "wrapper",
    "Postprocess": "wrapper",
    "fold_batchnorm": "wrapper",
    "output_names": "wrapper",
}

__all__ = [
    "FORMATS",
    "STAGES",
    "ExportConfig",
    "ExportError",
    "ExportFormat",
    "ExportOptions",
    "ExportResult",
    "ExportWrapper",
    "FormatConfig",
    "Postprocess",
    "QuantizationConfig",
    "Verdict",
    "VerificationConfig",
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
    "register",
    "verify_artifact",
    "with_image_size",
    "write_sidecar",
]


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_NAMES])


if TYPE_CHECKING:
    from .config import (
        STAGES,
        ExportConfig,
        ExportOptions,
        FormatConfig,
        QuantizationConfig,
        VerificationConfig,
        options_from_dict,
    )
    from .errors import ExportError
    from .numpy_post import detections_from_outputs
    from .pipeline import ExportResult, export_checkpoint, export_model, with_image_size
    from .registry import FORMATS, ExportFormat, check_request, format_table, register
    from .sidecar import build_sidecar, read_sidecar, write_sidecar
    from .verify import Verdict, match_detections, verify_artifact
    from .wrapper import ExportWrapper, Postprocess, fold_batchnorm, output_names
