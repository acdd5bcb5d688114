"""Run :file:`browser.mjs` (headless Chromium through playwright-core) on a served web app.

Used by ``tests/test_web.py`` and ``bench/web.py``. Needs Node.js, ``npm ci --prefix
detector/web`` (playwright-core) and a Chromium (``$CHROMIUM``, else ``chromium`` /
``chromium-browser`` / ``google-chrome`` on the PATH).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .export import PACKAGE_DIR
from .serve import make_server, url_of

__all__ = ["BrowserUnavailable", "find_chromium", "missing_tools", "run_browser", "served"]

DRIVER = PACKAGE_DIR / "browser.mjs"


class BrowserUnavailable(RuntimeError):
    """Node, playwright-core or Chromium is not installed."""


def find_chromium() -> str | None:
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def missing_tools() -> list[str]:
    """What :func:`run_browser` lacks here (empty: it can run)."""
    missing = []
    if shutil.which("node") is None:
        missing.append("node (apt-get install nodejs)")
    if not (PACKAGE_DIR / "node_modules" / "playwright-core").is_dir():
        missing.append(f"playwright-core (npm ci --prefix {PACKAGE_DIR})")
    if find_chromium() is None:
        missing.append("chromium (apt-get install chromium)")
    return missing


@contextlib.contextmanager
def served(folder: str | Path) -> Iterator[str]:
    """Serve ``folder`` on a free localhost port in a thread; yields the URL."""
    server = make_server(folder, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield url_of(server)
    finally:
        server.shutdown()
        server.server_close()


def run_browser(
    url: str,
    steps: list[dict[str, Any]],
    *,
    fake_video: str | Path | None = None,
    fake_device: bool = False,
    grant_camera: bool = False,
    timeout_s: float = 300.0,
) -> dict[str, Any]:
    """Open ``url`` in headless Chromium and run ``steps`` (see browser.mjs).

    Args:
        fake_video: a ``.y4m``/``.mjpeg`` file the fake camera plays (implies ``fake_device``).
        fake_device: give the browser Chromium's fake camera (a test pattern without a file);
            without it headless Chromium has no camera at all.
        grant_camera: allow the camera for the page (otherwise the request is denied).

    Returns:
        ``{"results": [one per step], "logs": [console lines]}``.
    """
    missing = missing_tools()
    if missing:
        raise BrowserUnavailable("cannot drive a browser: missing " + ", ".join(missing))
    job = {
        "url": url,
        "executable": find_chromium(),
        "fakeVideo": str(fake_video) if fake_video else ("" if fake_device else None),
        "grantCamera": grant_camera,
        "timeoutMs": int(timeout_s * 1000 * 0.8),
        "steps": steps,
    }
    proc = subprocess.run(
        ["node", str(DRIVER)],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        cwd=PACKAGE_DIR,
        timeout=timeout_s,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"browser driver failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
