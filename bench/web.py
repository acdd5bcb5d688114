"""The face model in the browser (onnxruntime-web, WASM) against native ONNX Runtime, one run.

    python bench/web.py                       # face preset, WASM with 2 threads, 200 frames
    python bench/web.py --checkpoint face     # the built-in face weights (when present)
    python bench/web.py --checkpoint best.pt --threads 2 --frames 300 --out web.json

The model is exported with ``format=web`` (ONNX, decode + NMS in the graph; Ultra-Light's demo
settings: score > 0.7, NMS IoU 0.3, best 200) and served with ``python -m detector.web serve``'s
server; headless Chromium (``detector/web/browser.mjs``) loads the page with
``?backend=wasm&threads=N``, opens the benchmark photo with the file input and runs the page's
own per-frame path ``--frames`` times on it: read the canvas pixels, preprocess (resize, /255),
``session.run``, filter and draw the boxes. Native is :class:`detector.runtime.Detector` (ONNX
Runtime, ``N`` intra-op threads) on the same ``.onnx`` file and the same RGB image: resize,
``run``, post-processing. Both are warmed up first (the page 60 frames: V8 tiers the WASM code
up while it runs; native 20); the figures are medians.

Without ``--checkpoint`` (and without ``detector/weights/face.pt``) the face preset
(``conf/experiment/face.yaml``) runs with random weights, its background logit shifted so that
``--load`` anchors score above 0.7 on the photo (a trained-like NMS load, as bench/face.py does):
latency does not depend on the weights otherwise.

Image: ``face_ultralight_slim320/images/1.jpg`` of ``../shared/data`` resized to 640x480 (a camera
frame), or ``--image``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_name

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
FACE_WEIGHTS = REPO / "detector" / "weights" / "face.pt"
POST = {"score_thresh": 0.7, "nms_thresh": 0.3, "topk_candidates": 200, "max_detections": 200}


def _image(path: str | None) -> np.ndarray:
    import cv2
    from face import ULTRALIGHT_DIR

    src = Path(path) if path else ULTRALIGHT_DIR / "images" / "1.jpg"
    bgr = cv2.imread(str(src))
    if bgr is None:
        raise SystemExit(f"cannot read image {src}")
    if not path:
        bgr = cv2.resize(bgr, (640, 480), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _checkpoint(args: argparse.Namespace, image: np.ndarray, tmp: Path) -> tuple[str, str]:
    """(checkpoint or built-in name, description)."""
    if args.checkpoint:
        return args.checkpoint, args.checkpoint
    if FACE_WEIGHTS.is_file():
        return "face", "detector/weights/face.pt"
    from face import _match_load, face_model_config

    from detector.engine.checkpoint import save_checkpoint

    model, source = face_model_config(None)
    _, load = _match_load(model, image, args.load)
    path = tmp / "face_random.pt"
    save_checkpoint(
        {"model": model.state_dict(), "model_config": model.config.to_dict(), "classes": ["face"]},
        path,
    )
    return str(path), f"{source}, random weights ({load} anchors > 0.7)"


def _native(model: Path, image: np.ndarray, threads: int, frames: int) -> dict[str, float]:
    from detector.runtime import Detector, preprocess_image

    det = Detector.load(model, threads=threads)
    x = preprocess_image(image, det.input_size)
    name = det.session.get_inputs()[0].name
    for _ in range(20):
        det(image)
    e2e, net = [], []
    for _ in range(frames):
        t0 = time.perf_counter()
        det(image)
        e2e.append((time.perf_counter() - t0) * 1e3)
    for _ in range(frames):
        t0 = time.perf_counter()
        det.session.run(None, {name: x})
        net.append((time.perf_counter() - t0) * 1e3)
    return {
        "end_to_end": statistics.median(e2e),
        "network": statistics.median(net),
        "detections": len(det(image)["scores"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="checkpoint or built-in name (default: face preset)")
    parser.add_argument("--image", help="benchmark image (default: a 640x480 face photo)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument(
        "--load", type=int, default=20, help="random weights: anchors above 0.7 on the photo"
    )
    parser.add_argument("--out", help="also write the figures as JSON here")
    args = parser.parse_args(argv)

    import cv2

    from detector.export import ExportOptions
    from detector.web import export_web
    from detector.web.browser import run_browser, served

    image = _image(args.image)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        checkpoint, source = _checkpoint(args, image, tmp)
        app = export_web(checkpoint, tmp / "app", ExportOptions(verify=False, **POST), log=None)
        model = app / json.loads((app / "detector-web.json").read_text())["model"]
        photo = tmp / "frame.png"
        cv2.imwrite(str(photo), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        with served(app) as url:
            out = run_browser(
                f"{url}?backend=wasm&threads={args.threads}&threshold=0.7",
                [
                    {"do": "ready"},
                    {"do": "file", "path": str(photo)},
                    {"do": "benchmark", "n": 60},
                    {"do": "benchmark", "n": args.frames},
                ],
                timeout_s=1200,
            )
        ready, shown, _, bench = out["results"]
        if ready["state"] != "ready" or shown["state"] != "ready":
            raise SystemExit(f"the page failed: {ready['error'] or shown['error']}")
        frames = bench["perFrame"]
        browser = {
            key: statistics.median([f[key] for f in frames])
            for key in ("total", "preprocess", "inference", "draw")
        }
        native = _native(model, image, args.threads, args.frames)

    figures = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu_name(),
        "model": source,
        "image": f"{image.shape[1]}x{image.shape[0]}",
        "threads": args.threads,
        "frames": args.frames,
        "ort_web": ready["ortVersion"],
        "browser_backend": ready["backend"],
        "browser_threads": ready["threads"],
        "cross_origin_isolated": ready["crossOriginIsolated"],
        "browser_ms": browser,
        "native_ms": native,
        "ratio_network": browser["inference"] / native["network"],
        "ratio_end_to_end": browser["total"] / native["end_to_end"],
        "browser_detections": len(bench["last"]["detections"]),
    }
    print(f"{figures['date']} · {figures['cpu']} · {source}")
    print(
        f"onnxruntime-web {figures['ort_web']} WASM, {ready['threads']} threads "
        f"(cross-origin isolated: {ready['crossOriginIsolated']}); "
        f"image {figures['image']}; median of {args.frames} frames"
    )
    print(f"{'':28}{'browser':>10}{'native':>10}{'ratio':>8}")
    print(
        f"{'network (session.run)':28}{browser['inference']:>10.2f}{native['network']:>10.2f}"
        f"{figures['ratio_network']:>8.2f}"
    )
    print(
        f"{'end to end (per frame)':28}{browser['total']:>10.2f}{native['end_to_end']:>10.2f}"
        f"{figures['ratio_end_to_end']:>8.2f}"
    )
    print(
        f"browser: preprocess {browser['preprocess']:.2f} ms (canvas read + resize), "
        f"draw {browser['draw']:.2f} ms; detections {figures['browser_detections']} "
        f"(native {native['detections']})"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
