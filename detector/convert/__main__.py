"""``python -m detector.convert <format> key=value ...``: write a detector checkpoint.

Formats::

    tflite path=<model.tflite> out=<checkpoint.pt> [labels=<labels.txt>]
        TF Object Detection API ssd_mobilenet_v1 TFLite model (float or uint8/int8 quantised).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any


def _tflite(args: dict[str, str]) -> dict[str, Any]:
    from .tflite_ssd import convert_tflite_file

    return convert_tflite_file(args["path"], args["out"], args.get("labels"))


# format -> (converter, required keys, optional keys)
CONVERTERS: dict[str, tuple[Callable[[dict[str, str]], dict[str, Any]], set[str], set[str]]] = {
    "tflite": (_tflite, {"path", "out"}, {"labels"}),
}


def _usage() -> str:
    return (__doc__ or "").strip()


def parse_args(argv: Sequence[str]) -> tuple[str, dict[str, str]]:
    """``[format, key=value, ...]`` -> ``(format, {key: value})``; raises ``SystemExit`` on errors."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        raise SystemExit(_usage())
    fmt, rest = argv[0], argv[1:]
    if fmt not in CONVERTERS:
        raise SystemExit(
            f"unknown format {fmt!r}; choose one of {sorted(CONVERTERS)}\n\n{_usage()}"
        )
    _, required, optional = CONVERTERS[fmt]
    args: dict[str, str] = {}
    for item in rest:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"expected key=value, got {item!r}\n\n{_usage()}")
        if key not in required | optional:
            raise SystemExit(
                f"unknown option {key!r} for {fmt}; accepted: {sorted(required | optional)}"
            )
        args[key] = value
    missing = sorted(required - set(args))
    if missing:
        raise SystemExit(f"{fmt}: missing {', '.join(k + '=...' for k in missing)}\n\n{_usage()}")
    return fmt, args


def main(argv: Sequence[str] | None = None) -> int:
    fmt, args = parse_args(list(sys.argv[1:] if argv is None else argv))
    converter = CONVERTERS[fmt][0]
    try:
        report = converter(args)
    except (FileNotFoundError, ValueError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2, default=str))
    print(f"wrote {args['out']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
