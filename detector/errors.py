"""One-line errors for every command: known problems end with ``<command>: error: <message>``
(exit 1) on stderr and in the run folder's log file, not with a traceback.

Set ``DETECTOR_TRACEBACK=1`` to see the traceback. Importing this module imports neither torch nor
Hydra (``detect model=<.onnx>`` runs without torch).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["friendly_errors", "log_to_files"]


def log_to_files(line: str, level: int) -> None:
    """``line`` in the root logger's log files only (the console already shows it)."""
    import logging

    record = logging.makeLogRecord(
        {
            "name": "detector",
            "levelno": level,
            "levelname": logging.getLevelName(level),
            "msg": line,
        }
    )
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def _known_errors() -> tuple[type[BaseException], ...]:
    """Errors that deserve one line. ``DatasetError``, ``ResultsFileError`` and ``ExportError`` are
    ``ValueError``s; the torch-side errors are taken from their modules only if those are loaded,
    so this never imports torch."""
    errors: list[type[BaseException]] = [FileNotFoundError, ValueError]
    for module, name in (
        ("detector.engine.checkpoint", "CheckpointError"),
        ("detector.engine.train", "NonFiniteLossError"),
    ):
        loaded = sys.modules.get(module)
        if loaded is not None:
            errors.append(getattr(loaded, name))
    return tuple(errors)


def _label(command: str) -> str:
    """``eval.py`` when run as a root script (``python eval.py``), else ``command``."""
    script = Path(sys.argv[0]).name if sys.argv else ""
    return script if script.endswith(".py") else command


def friendly_errors(command: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Print ``<command>: error: <message>`` and exit 1 on known errors.

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
                line = f"{_label(command)}: error: {exc}"
                log_to_files(line, 40)  # logging.ERROR
                print(line, file=sys.stderr)
                sys.exit(1)

        return inner

    return wrap
