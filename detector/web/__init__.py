"""The detector as an offline web app: the exported ONNX model (NMS in the graph) run by
onnxruntime-web on the camera or on image/video files, in the browser, on the device.

* :func:`export_web` (``python export.py checkpoint=<ckpt> format=web``) writes a static folder:
  ``index.html``, the app's JS/CSS, ``<name>.onnx`` + ``<name>.json`` (sidecar),
  ``detector-web.json`` and the onnxruntime-web files under ``ort/``.
* ``python -m detector.web serve <folder> [--port 8000] [--open]`` serves it with the
  cross-origin isolation headers multi-threaded WASM needs.

The onnxruntime-web files come from npm (``detector/web/package.json`` + lock); see
:func:`find_runtime` for where they are looked up, and ``docs/web.md``.
"""

from __future__ import annotations

from .export import (
    APP_CONFIG,
    RuntimeFiles,
    WebExportError,
    export_web,
    find_runtime,
    pinned_runtime_version,
)

__all__ = [
    "APP_CONFIG",
    "RuntimeFiles",
    "WebExportError",
    "export_web",
    "find_runtime",
    "pinned_runtime_version",
]
