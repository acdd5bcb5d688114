"""Serve an exported web app folder locally, cross-origin isolated.

Multi-threaded WASM needs ``SharedArrayBuffer``, which browsers only give to cross-origin isolated
pages: every response carries ``Cross-Origin-Opener-Policy: same-origin`` and
``Cross-Origin-Embedder-Policy: require-corp``. Cameras need a secure context; ``localhost`` /
``127.0.0.1`` counts as one.
"""

from __future__ import annotations

import functools
import http.server
import threading
import webbrowser
from pathlib import Path
from typing import ClassVar

from .export import APP_CONFIG

__all__ = ["IsolatedHandler", "check_folder", "make_server", "serve"]


class IsolatedHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with COOP/COEP/CORP headers and the right types for ``.mjs``/``.wasm``."""

    extensions_map: ClassVar[dict[str, str]] = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
        ".js": "text/javascript",
        ".wasm": "application/wasm",
        ".json": "application/json",
        ".onnx": "application/octet-stream",
    }

    def end_headers(self) -> None:
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:
        if getattr(self.server, "verbose", False):
            super().log_message(format, *args)


def check_folder(folder: str | Path) -> Path:
    """``folder`` if it looks like a ``format=web`` export.

    Raises:
        FileNotFoundError: no such folder, or no ``index.html`` in it (a missing model file is
            reported by the page itself).
    """
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder (write one with export.py format=web)")
    if not (path / "index.html").is_file():
        raise FileNotFoundError(
            f"{path}: not a web app folder (no index.html; write one with "
            "`python export.py checkpoint=<checkpoint> format=web`)"
        )
    if not (path / APP_CONFIG).is_file():  # the page says so too, and which file
        print(
            f"warning: {path / APP_CONFIG} is missing: the page will report an incomplete "
            "model folder"
        )
    return path


def make_server(
    folder: str | Path, host: str = "127.0.0.1", port: int = 8000, verbose: bool = False
) -> http.server.ThreadingHTTPServer:
    """A server for ``folder`` (``port=0``: any free port; see ``server.server_address``)."""
    path = check_folder(folder)
    handler = functools.partial(IsolatedHandler, directory=str(path.resolve()))
    server = http.server.ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    server.verbose = verbose  # type: ignore[attr-defined]
    return server


def url_of(server: http.server.ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::") else host
    return f"http://{shown}:{port}/"


def serve(
    folder: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    open_browser: bool = False,
    verbose: bool = False,
) -> None:
    """Serve ``folder`` until interrupted; prints the URL, opens it with ``open_browser``."""
    server = make_server(folder, host, port, verbose)
    url = url_of(server)
    print(f"serving {Path(folder).resolve()} at {url} (cross-origin isolated; Ctrl+C stops)")
    if open_browser:
        threading.Timer(0.3, webbrowser.open, args=(url,)).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
