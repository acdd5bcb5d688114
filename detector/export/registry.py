"""The export formats: one registry entry per format, defined beside its implementation.

Each ``detector/export/<name>_format.py`` module ends with ``register(ExportFormat(...))``: what the
format supports (stages, int8, a free batch), what it needs installed, and the functions that write
and run an artifact. The modules are found by that file name and imported on first use of
:data:`FORMATS` (:func:`formats`), so ``import detector.export`` stays cheap; a module imports its
optional packages (``onnx``, ``litert_torch``, ``executorch``, ``coremltools``) only inside its
functions, so those are needed only for the format in use.

Adding a format ``web``: write ``detector/export/web_format.py`` (export function, runner,
``register(ExportFormat(name="web", ...))``) and ``detector/conf/format/web.yaml``
(``defaults: [format_schema]`` and ``name: web``). Nothing else lists the formats.

A request is checked against the registry by :func:`check_request` before any model is loaded,
so an unsupported combination (``format=tflite dynamic_batch=true``, ``int8=true`` without
calibration images, a format whose runtime is not installed) fails at once with a message that
says what to change.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ExportError

if TYPE_CHECKING:
    from ..models import SSD
    from .config import ExportConfig
    from .verify import Verdict

__all__ = [
    "FORMATS",  # noqa: F822 - module __getattr__ (filled on first use)
    "ExportFormat",
    "ExportJob",
    "Runner",
    "check_request",
    "format_table",
    "formats",
    "get_format",
    "register",
]

#: ``runner(images float32 [N, 3, H, W]) -> {output name: array}``.
Runner = Callable[[np.ndarray], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class ExportJob:
    """One artifact to write: what a format's ``export`` function receives.

    Attributes:
        model: the detector (eval mode, at the export size; not to be modified).
        path: the artifact to write.
        config: the whole request.
        calibration: ``float32 [N, 3, H, W]`` calibration batches for int8, else None.
        fp32_path: with int8, where to also write the float artifact (None: not wanted).
    """

    model: SSD
    path: Path
    config: ExportConfig
    calibration: list[np.ndarray] | None = None
    fp32_path: Path | None = None

    def graph_options(self) -> dict[str, Any]:
        """``stage`` and ``post`` (the post-processing settings) of the graph to write, as the
        format export functions take them."""
        return {"stage": self.config.stage, "post": self.config.postprocess_settings()}


def _one(config: ExportConfig) -> int:
    return 1


@dataclass(frozen=True)
class ExportFormat:
    """One export format: its capabilities (a row of :func:`format_table`) and implementation.

    Attributes:
        name: the ``format=`` value.
        suffix: file extension of the artifact.
        runtime: the runtime the export is verified in.
        stages: where its graphs can end (:data:`~detector.export.config.STAGES`): ``raw``, and
            ``decoded`` for ``decode=true`` and ``nms`` for ``nms=true`` where supported.
        requires: Python modules the export needs (import names).
        install: what to install to get them.
        export: ``export(job: ExportJob)`` writes the artifact; returns facts for the sidecar.
        runner: ``runner(path, config)``: the artifact in its runtime, for verification.
        notes: one line for the table.
        int8: post-training int8 quantization with calibration images.
        dynamic_batch: the batch dimension can be left free.
        batch_size: ``batch_size(config)``: the batch verification runs the artifact with.
        static_check: ``static_check(path, sidecar, model, precision)``: a verdict without
            running (a runtime missing on this platform), or None to run the artifact.
        implemented: whether this version of the package can write the format.
    """

    name: str
    suffix: str
    runtime: str
    stages: tuple[str, ...]
    requires: tuple[str, ...]
    install: str
    export: Callable[[ExportJob], dict[str, Any]]
    runner: Callable[[Path, ExportConfig], Runner]
    notes: str = ""
    int8: bool = False
    dynamic_batch: bool = False
    batch_size: Callable[[ExportConfig], int] = _one
    static_check: Callable[[Path, dict[str, Any], SSD, str], Verdict | None] | None = None
    implemented: bool = True

    @property
    def decode(self) -> bool:
        """The graph can end after box decoding (``decode=true``)."""
        return "decoded" in self.stages

    @property
    def nms(self) -> bool:
        """NMS can be part of the graph (``nms=true``)."""
        return "nms" in self.stages

    def missing_modules(self) -> list[str]:
        return [m for m in self.requires if importlib.util.find_spec(m) is None]


#: The registry (read it through :func:`formats` or ``FORMATS``, which import the format modules).
_REGISTERED: dict[str, ExportFormat] = {}
_loaded = False


def register(fmt: ExportFormat) -> ExportFormat:
    """Add ``fmt`` to the registry (a later entry of the same name replaces the earlier one)."""
    _REGISTERED[fmt.name] = fmt
    return fmt


def formats() -> dict[str, ExportFormat]:
    """The registry, after importing every ``detector/export/*_format.py`` module (once)."""
    global _loaded
    if not _loaded:
        _loaded = True
        package = Path(__file__).resolve().parent
        for module in sorted(pkgutil.iter_modules([str(package)]), key=lambda m: m.name):
            if module.name.endswith("_format"):
                importlib.import_module(f"{__package__}.{module.name}")
    return _REGISTERED


def __getattr__(name: str) -> Any:
    # ``FORMATS`` is the registry, filled on first access (PEP 562).
    if name == "FORMATS":
        return formats()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_format(name: str) -> ExportFormat:
    """The registry entry of ``name``.

    Raises:
        ExportError: no such format (the message lists the table).
    """
    fmt = formats().get(name)
    if fmt is None:
        raise ExportError(
            f"unknown export format {name!r}; choose one of {sorted(formats())}\n{format_table()}"
        )
    return fmt


def _yes(flag: bool) -> str:
    return "yes" if flag else "-"


def format_table() -> str:
    """The capability table as aligned plain text (printed by ``export.py --help`` and errors)."""
    header = ("format", "file", "decode", "nms", "int8", "dyn.batch", "status", "needs")
    rows = [header]
    for f in formats().values():
        rows.append(
            (
                f.name,
                f.suffix,
                _yes(f.decode),
                _yes(f.nms),
                _yes(f.int8),
                _yes(f.dynamic_batch),
                "ready" if f.implemented else "not yet",
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
) -> ExportFormat:
    """Check an export request against the registry, before any work is done.

    Args:
        format: a key of :data:`FORMATS`.
        decode, nms, int8, dynamic_batch: the requested options.
        calibration: calibration images for int8 (a folder, an image list file, or
            ``"synthetic"`` for generated images).

    Returns:
        The format's registry entry.

    Raises:
        ExportError: unknown format, an option the format does not support, a format not
            available in this version or without its runtime installed, or int8 without usable
            calibration images.
    """
    spec = get_format(format)
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
            f"{sorted(n for n, f in formats().items() if f.implemented)}"
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
