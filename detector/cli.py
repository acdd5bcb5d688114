"""Shared behaviour of the entry scripts: known problems end with one clear line, not a traceback."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["friendly_errors"]


def _known_errors() -> tuple[type[BaseException], ...]:
    """Errors that deserve one line. ``DatasetError`` and ``ResultsFileError`` are ``ValueError``s;
    the torch-side errors are taken from their modules only if those are loaded, so this never
    imports torch (``detect.py model=<.onnx>`` runs without it)."""
    errors: list[type[BaseException]] = [FileNotFoundError, ValueError]
    for module, name in (
        ("detector.engine.checkpoint", "CheckpointError"),
        ("detector.engine.train", "NonFiniteLossError"),
    ):
        loaded = sys.modules.get(module)
        if loaded is not None:
            errors.append(getattr(loaded, name))
    return tuple(errors)


def friendly_errors(script: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Print ``<script>: error: <message>`` and exit 1 on known errors.

    Set ``DETECTOR_TRACEBACK=1`` to see the full traceback instead.
    """

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except _known_errors() as exc:
                if os.environ.get("DETECTOR_TRACEBACK"):
                    raise
                print(f"{script}: error: {exc}", file=sys.stderr)
                sys.exit(1)

        return inner

    return wrap
