"""The export formats and what each one supports.

:data:`FORMATS` is the single table that the CLI, the API and the docs read. A request is checked
against it by :func:`check_request` before any model is loaded, so an unsupported combination
(``format=tflite dynamic_batch=true``, ``int8=true`` without calibration images, a format whose
runtime is not installed) fails at once with a message that says what to change.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "FORMATS",
    "STAGES",
    "ExportError",
    "FormatCapabilities",
    "check_request",
    "format_table",
]

#: Where the exported graph ends: raw head outputs, decoded boxes and scores, or NMS detections.
STAGES = ("raw", "decoded", "nms")


class ExportError(RuntimeError):
    """An export request that cannot be carried out, or an artifact that failed verification."""


@dataclass(frozen=True)
class FormatCapabilities:
    """One row of the format table.

    Attributes:
        name: the ``format=`` value.
        suffix: file extension of the artifact.
        runtime: the runtime the export is verified in.
        decode: the graph can end after box decoding (``decode=true``).
        nms: NMS can be part of the graph (``nms=true``).
        int8: post-training int8 quantization with calibration images.
        dynamic_batch: the batch dimension can be left free.
        implemented: whether this version of the package can write the format.
        requires: Python modules the export needs (import names).
        install: what to install to get them.
        notes: one line for the table.
    """

    name: str
    suffix: str
    runtime: str
    decode: bool
    nms: bool
    int8: bool
    dynamic_batch: bool
    implemented: bool
    requires: tuple[str, ...]
    install: str
    notes: str = ""

    def missing_modules(self) -> list[str]:
        return [m for m in self.requires if importlib.util.find_spec(m) is None]


FORMATS: dict[str, FormatCapabilities] = {
    "onnx": FormatCapabilities(
        name="onnx",
        suffix=".onnx",
        runtime="onnxruntime",
        decode=True,
        nms=True,
        int8=True,
        dynamic_batch=True,
        implemented=True,
        requires=("onnx", "onnxruntime", "onnxscript"),
        install="pip install 'detector[export]'  (onnx, onnxruntime, onnxscript)",
        notes="torch.onnx dynamo exporter; NMS as ONNX NonMaxSuppression; int8 = ORT static QDQ",
    ),
    "tflite": FormatCapabilities(
        name="tflite",
        suffix=".tflite",
        runtime="LiteRT interpreter",
        decode=True,
        nms=False,
        int8=True,
        dynamic_batch=False,
        implemented=True,
        requires=("litert_torch", "ai_edge_litert"),
        install="pip install 'detector[export]'  (litert-torch, ai-edge-litert)",
        notes="litert-torch conversion (NCHW input, named outputs); int8 = PT2E static "
        "quantization of the network; verified in the ai-edge-litert interpreter",
    ),
    "executorch": FormatCapabilities(
        name="executorch",
        suffix=".pte",
        runtime="ExecuTorch (XNNPACK)",
        decode=True,
        nms=False,
        int8=False,
        dynamic_batch=False,
        implemented=True,
        requires=("executorch",),
        install="pip install executorch",
        notes="torch.export + XNNPACK partitioner; verified in the ExecuTorch Python runtime",
    ),
    "coreml": FormatCapabilities(
        name="coreml",
        suffix=".mlpackage",
        runtime="Core ML (macOS only)",
        decode=True,
        nms=False,
        int8=False,
        dynamic_batch=False,
        implemented=True,
        requires=("coremltools",),
        install="pip install coremltools",
        notes="coremltools from torch.export (ML Program); on Linux the spec is checked, the "
        "numerical check needs macOS",
    ),
}


def _yes(flag: bool) -> str:
    return "yes" if flag else "-"


def format_table() -> str:
    """The capability table as aligned plain text (printed by ``export.py --help`` and errors)."""
    header = ("format", "file", "decode", "nms", "int8", "dyn.batch", "status", "needs")
    rows = [header]
    for f in FORMATS.values():
        status = "ready" if f.implemented else "not yet"
        rows.append(
            (
                f.name,
                f.suffix,
                _yes(f.decode),
                _yes(f.nms),
                _yes(f.int8),
                _yes(f.dynamic_batch),
                status,
                ", ".join(f.requires),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def check_request(
    format: str,
    *,
    decode: bool = False,
    nms: bool = False,
    int8: bool = False,
    dynamic_batch: bool = False,
    calibration: str | Path | None = None,
) -> FormatCapabilities:
    """Check an export request against :data:`FORMATS`, before any work is done.

    Args:
        format: a key of :data:`FORMATS`.
        decode, nms, int8, dynamic_batch: the requested options.
        calibration: calibration images for int8 (a folder, an image list file, or
            ``"synthetic"`` for generated images).

    Returns:
        The format's row of the table.

    Raises:
        ExportError: unknown format, an option the format does not support, a format not
            available in this version or without its runtime installed, or int8 without usable
            calibration images.
    """
    spec = FORMATS.get(format)
    if spec is None:
        raise ExportError(
            f"unknown export format {format!r}; choose one of {sorted(FORMATS)}\n{format_table()}"
        )
    wanted = {"decode": decode, "nms": nms, "int8": int8, "dynamic_batch": dynamic_batch}
    unsupported = [opt for opt, on in wanted.items() if on and not getattr(spec, opt)]
    if unsupported:
        opts = ", ".join(f"{o}=true" for o in unsupported)
        raise ExportError(
            f"format={format} does not support {opts}; supported combinations:\n{format_table()}"
        )
    if not spec.implemented:
        raise ExportError(
            f"format={format} is not available yet in this version of detector "
            f"({spec.notes}; it will need: {spec.install}). Available now: "
            f"{sorted(n for n, f in FORMATS.items() if f.implemented)}"
        )
    missing = spec.missing_modules()
    if missing:
        raise ExportError(
            f"format={format} needs the Python packages {missing}, which are not installed; "
            f"install them with: {spec.install}"
        )
    if int8 and (calibration is None or str(calibration) == ""):
        raise ExportError(
            "int8=true needs calibration images: calibration=<image folder or list file> "
            "(or calibration=synthetic for generated images, for smoke tests only)"
        )
    named = calibration not in (None, "") and str(calibration) != "synthetic"
    if named and not Path(calibration).exists():
        raise ExportError(f"calibration={calibration}: no such file or folder")
    return spec
