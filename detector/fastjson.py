"""JSON parsing with orjson when it is installed, the standard library otherwise.

COCO annotation and results files are tens of megabytes; ``orjson`` parses them about three
times faster than :mod:`json` and gives the same Python objects (same floats, correctly rounded).
It is stricter in one way that matters here: it rejects the non-standard ``NaN``/``Infinity``
literals that Python's :func:`json.dump` writes, so on any orjson error the text is parsed again
with :mod:`json`, which either accepts it (and the caller's checks report the NaN) or raises the
usual :class:`json.JSONDecodeError` with line and column.
"""

from __future__ import annotations

import json
from typing import Any

try:  # optional speed-up
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

__all__ = ["load_file", "loads"]


def loads(data: bytes | str) -> Any:
    """Parse JSON text; same result and errors as :func:`json.loads`, faster with orjson."""
    if _orjson is not None:
        try:
            return _orjson.loads(data)
        except _orjson.JSONDecodeError:
            pass  # NaN/Infinity literals, or a real error that json reports with its position
    if isinstance(data, bytes):
        data = data.decode("utf-8")
    return json.loads(data)


def load_file(path: Any) -> Any:
    """Read and parse a JSON file (see :func:`loads`)."""
    with open(path, "rb") as f:
        return loads(f.read())
