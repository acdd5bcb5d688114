"""``python -m detector.web serve <folder> [--host H] [--port P] [--open]``,
``python -m detector.web export <checkpoint> <folder>`` and
``python -m detector.web vendor`` (copy the npm runtime files into the package for a release)."""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence


def _vendor() -> int:
    from .export import NPM_DIST, VENDOR_DIR, find_runtime

    if not NPM_DIST.is_dir():
        print(
            f"detector.web vendor: error: {NPM_DIST} not found; run `npm ci --prefix "
            f"{NPM_DIST.parents[2]}` first",
            file=sys.stderr,
        )
        return 1
    runtime = find_runtime()
    VENDOR_DIR.mkdir(exist_ok=True)
    for name in runtime.files(webgpu=True):
        shutil.copyfile(runtime.folder / name, VENDOR_DIR / name)
    (VENDOR_DIR / "VERSION").write_text(runtime.version + "\n", encoding="utf-8")
    print(f"onnxruntime-web {runtime.version} copied to {VENDOR_DIR}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m detector.web", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve an exported web app folder (COOP/COEP headers)")
    s.add_argument("folder")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--open", action="store_true", help="open the page in the default browser")
    s.add_argument("--verbose", action="store_true", help="log every request")
    e = sub.add_parser("export", help="export a checkpoint as a web app (as export.py format=web)")
    e.add_argument("checkpoint", help="checkpoint file or built-in name (face)")
    e.add_argument("folder")
    e.add_argument("--threshold", type=float, default=0.5)
    e.add_argument("--no-webgpu", action="store_true", help="ship the WASM runtime only")
    sub.add_parser("vendor", help="copy node_modules' onnxruntime-web files into the package")
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            from .serve import serve

            serve(args.folder, args.host, args.port, args.open, args.verbose)
        elif args.command == "export":
            from .export import export_web

            export_web(
                args.checkpoint, args.folder, threshold=args.threshold, webgpu=not args.no_webgpu
            )
        else:
            return _vendor()
    except (FileNotFoundError, ValueError, OSError) as exc:
        print(f"python -m detector.web {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
