"""``format=web``: an ONNX export with NMS in the graph, wrapped in the static web app."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

__all__ = [
    "APP_CONFIG",
    "RuntimeFiles",
    "WebExportError",
    "export_web",
    "find_runtime",
    "pinned_runtime_version",
]

PACKAGE_DIR = Path(__file__).resolve().parent
APP_DIR = PACKAGE_DIR / "app"
#: the page's configuration file in an exported folder
APP_CONFIG = "detector-web.json"
#: onnxruntime-web bundles and the WASM files each one loads (names of onnxruntime-web's dist/)
WASM_BUNDLE = ("ort.wasm.min.mjs", ("ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"))
WEBGPU_BUNDLE = (
    "ort.webgpu.min.mjs",
    ("ort-wasm-simd-threaded.asyncify.mjs", "ort-wasm-simd-threaded.asyncify.wasm"),
)
APP_FILES = ("index.html", "app.js", "preprocess.mjs", "style.css")
#: where ``python -m detector.web vendor`` puts the runtime files for a wheel (package data)
VENDOR_DIR = PACKAGE_DIR / "runtime"
NPM_DIST = PACKAGE_DIR / "node_modules" / "onnxruntime-web" / "dist"
ENV_VAR = "DETECTOR_WEB_RUNTIME"


class WebExportError(ValueError):
    """A ``format=web`` request that cannot be written (a ValueError: one line from the CLI).
    Not a subclass of :class:`detector.export.ExportError`, so that serving an app (this
    package without the exporter) never imports torch."""


def pinned_runtime_version() -> str:
    """The onnxruntime-web version pinned in ``detector/web/package.json``."""
    manifest = json.loads((PACKAGE_DIR / "package.json").read_text(encoding="utf-8"))
    return str(manifest["dependencies"]["onnxruntime-web"])


@dataclass(frozen=True)
class RuntimeFiles:
    """A folder with the onnxruntime-web files the page needs, and their version."""

    folder: Path
    version: str

    def files(self, webgpu: bool = True) -> list[str]:
        bundles = [WASM_BUNDLE, WEBGPU_BUNDLE] if webgpu else [WASM_BUNDLE]
        return [name for bundle, extra in bundles for name in (bundle, *extra)]


def _folder_version(folder: Path) -> str | None:
    """Version of the onnxruntime-web files in ``folder`` (npm's package.json one level up, or
    the ``VERSION`` file ``vendor`` writes)."""
    for candidate in (folder / "VERSION", folder.parent / "package.json"):
        if candidate.is_file():
            text = candidate.read_text(encoding="utf-8")
            if candidate.suffix == ".json":
                return str(json.loads(text).get("version"))
            return text.strip()
    return None


def find_runtime(webgpu: bool = True) -> RuntimeFiles:
    """The onnxruntime-web files, looked up in this order:

    1. ``$DETECTOR_WEB_RUNTIME`` (a folder with the files and a ``VERSION`` file);
    2. ``detector/web/runtime/`` (package data of a release, written by
       ``python -m detector.web vendor``);
    3. ``detector/web/node_modules/onnxruntime-web/dist`` (``npm ci --prefix detector/web``).

    The version must equal the one pinned in ``detector/web/package.json``.

    Raises:
        WebExportError: no folder has every file, or the version does not match.
    """
    pinned = pinned_runtime_version()
    candidates: list[Path] = []
    if os.environ.get(ENV_VAR):
        candidates.append(Path(os.environ[ENV_VAR]))
    candidates += [VENDOR_DIR, NPM_DIST]
    problems = []
    needed = RuntimeFiles(Path(), pinned).files(webgpu)
    for folder in candidates:
        if not folder.is_dir():
            problems.append(f"{folder}: no such folder")
            continue
        missing = [name for name in needed if not (folder / name).is_file()]
        if missing:
            problems.append(f"{folder}: missing {', '.join(missing)}")
            continue
        version = _folder_version(folder)
        if version != pinned:
            problems.append(f"{folder}: onnxruntime-web {version}, the app is pinned to {pinned}")
            continue
        return RuntimeFiles(folder, pinned)
    raise WebExportError(
        "format=web needs the onnxruntime-web runtime files, and none were found "
        f"({'; '.join(problems)}). Install them once with Node.js/npm: "
        f"`npm ci --prefix {PACKAGE_DIR}` (or set {ENV_VAR} to a folder with the files and a "
        "VERSION file); see docs/web.md"
    )


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """A checkpoint path, or a built-in name (``face``) when ``detector.weights`` knows it."""
    path = Path(checkpoint)
    if path.is_file():
        return path
    try:
        from .. import weights

        resolver = getattr(weights, "resolve_checkpoint", None)
    except ImportError:  # pragma: no cover - weights imports torch, as the export does
        resolver = None
    if resolver is not None and "/" not in str(checkpoint) and not path.suffix:
        return Path(resolver(str(checkpoint)))
    return path  # export_checkpoint reports a missing file


def _class_colors(num_classes: int) -> dict[str, list[int]]:
    from ..predict import class_color

    return {str(label): list(class_color(label)) for label in range(1, num_classes + 1)}


def _onnx_nms(options: Any) -> Any:
    """``options`` as an ONNX export whose graph ends with NMS. Works with the flat
    ``ExportOptions`` dataclass (``format`` a string) and with an ``ExportConfig`` whose
    ``format`` is a nested config with a ``name``."""
    fmt = options.format
    if isinstance(fmt, str):
        return replace(options, format="onnx", nms=True, decode=False)
    return replace(options, format=replace(fmt, name="onnx"), nms=True, decode=False)


def export_web(
    checkpoint: str | Path,
    out_dir: str | Path,
    options: Any = None,
    *,
    name: str | None = None,
    threshold: float = 0.5,
    webgpu: bool = True,
    use_ema: bool = True,
    log: Callable[[str], None] | None = print,
) -> Path:
    """Export ``checkpoint`` as a static web app in ``out_dir`` (created) and return it.

    Args:
        checkpoint: a training checkpoint, or a built-in name such as ``face``.
        out_dir: the folder to write (``index.html`` ends up directly in it).
        options: :class:`detector.export.ExportOptions` for the ONNX export (format, ``nms``
            and ``decode`` are forced to ``onnx``, true, false; post-processing, image size,
            verification ... are taken from it). None: the defaults.
        name: base name of the model files (default: the checkpoint's stem).
        threshold: the page's initial score threshold (a slider on the page).
        webgpu: also ship the WebGPU bundle (the page falls back to WASM without WebGPU).
        use_ema: take the checkpoint's EMA weights when it has them.
        log: progress printer (None: quiet).

    Raises:
        WebExportError: the onnxruntime-web files are missing (checked before any work) or the
            threshold is out of range.
        ExportError: the ONNX export failed.
    """
    from ..export import ExportOptions, export_checkpoint

    if not 0.0 <= float(threshold) < 1.0:
        raise WebExportError(f"threshold must be in [0, 1), got {threshold}")
    runtime = find_runtime(webgpu)  # before any work: never a page without its runtime
    options = _onnx_nms(options if options is not None else ExportOptions())
    if name is not None:
        options = replace(options, name=name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = export_checkpoint(
        resolve_checkpoint(checkpoint), out, options, use_ema=use_ema, log=log
    )
    for file in APP_FILES:
        shutil.copyfile(APP_DIR / file, out / file)
    ort_dir = out / "ort"
    ort_dir.mkdir(exist_ok=True)
    for file in runtime.files(webgpu):
        shutil.copyfile(runtime.folder / file, ort_dir / file)
    (ort_dir / "VERSION").write_text(runtime.version + "\n", encoding="utf-8")
    sidecar = result.sidecar
    config = {
        "name": result.model_path.stem,
        "model": result.model_path.name,
        "sidecar": result.sidecar_path.name,
        "threshold": float(threshold),
        "colors": _class_colors(int(sidecar["num_classes"])),
        "ort": {
            "version": runtime.version,
            "wasm": {"bundle": WASM_BUNDLE[0], "files": list(WASM_BUNDLE[1])},
            "webgpu": (
                {"bundle": WEBGPU_BUNDLE[0], "files": list(WEBGPU_BUNDLE[1])} if webgpu else None
            ),
        },
    }
    (out / APP_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    if log is not None:
        log(f"web app written to {out} (onnxruntime-web {runtime.version})")
        log(f"serve it with: python -m detector.web serve {out} --open")
    return out


def export_from_hydra(cfg: Any, out_dir: str | Path) -> Path:
    """``export.py ... format=web``: the composed export config to :func:`export_web`; the app
    is written to ``<out_dir>/web``."""
    from ..export.schema import options_from_hydra

    checkpoint, options, use_ema = options_from_hydra(cfg)
    return export_web(checkpoint, Path(out_dir) / "web", options, use_ema=use_ema)
