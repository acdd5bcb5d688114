"""The face model in the browser (onnxruntime-web, WASM) against native ONNX Runtime, one run.

    python bench/web.py                       # face preset, WASM with 2 threads
    python bench/web.py --checkpoint face     # the built-in face weights (when present)
    python bench/web.py --checkpoint best.pt --threads 2 --rounds 3 --frames 100 --out web.json

The model is exported with ``format=web`` (ONNX, decode + NMS in the graph; Ultra-Light's demo
settings: score > 0.7, NMS IoU 0.3, best 200) and served with ``python -m detector.web serve``'s
server; headless Chromium (``detector/web/browser.mjs``) loads the page with
``?backend=wasm&threads=N``, opens the benchmark photo with the file input and runs the page's
own per-frame path on it: read the canvas pixels, preprocess (resize, /255), ``session.run``,
filter and draw the boxes. Native is :class:`detector.runtime.Detector` (ONNX
Runtime, ``N`` intra-op threads) on the same ``.onnx`` file and the same RGB image: resize,
``run``, post-processing. Both are warmed up first (the page 60 frames: V8 tiers the WASM code
up while it runs; native 20). The two sides alternate ``--rounds`` times, ``--frames`` frames per
block (a fresh browser each round); as in ``bench/latency.py`` the table gives the median of
each side's least-disturbed block (load from other processes only ever adds time) and, in
parentheses, the median of all its frames.

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
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import block_stats, cpu_name

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


class _Native:
    """detector.runtime on the same model and image (loaded and warmed up once)."""

    def __init__(self, model: Path, image: np.ndarray, threads: int) -> None:
        from detector.runtime import Detector, preprocess_image

        self.det = Detector.load(model, threads=threads)
        self.image = image
        self.x = preprocess_image(image, self.det.input_size)
        self.name = self.det.session.get_inputs()[0].name
        for _ in range(20):
            self.det(image)
        self.detections = len(self.det(image)["scores"])

    def block(self, frames: int) -> tuple[list[float], list[float]]:
        """Per-frame ms: end to end (RGB image to pixel boxes), then the network alone."""
        e2e, net = [], []
        for _ in range(frames):
            t0 = time.perf_counter()
            self.det(self.image)
            e2e.append((time.perf_counter() - t0) * 1e3)
        for _ in range(frames):
            t0 = time.perf_counter()
            self.det.session.run(None, {self.name: self.x})
            net.append((time.perf_counter() - t0) * 1e3)
        return e2e, net


def _browser_block(url: str, photo: Path, threads: int, frames: int) -> dict:
    from detector.web.browser import run_browser

    out = run_browser(
        f"{url}?backend=wasm&threads={threads}&threshold=0.7",
        [
            {"do": "ready"},
            {"do": "file", "path": str(photo)},
            {"do": "benchmark", "n": 60},  # warm-up: V8 tiers the WASM code up meanwhile
            {"do": "benchmark", "n": frames},
        ],
        timeout_s=1200,
    )
    ready, shown, _, bench = out["results"]
    if ready["state"] != "ready" or shown["state"] != "ready":
        raise SystemExit(f"the page failed: {ready['error'] or shown['error']}")
    return {"ready": ready, "frames": bench["perFrame"], "last": bench["last"]}


def _fmt(stats: dict[str, float]) -> str:
    return f"{stats['best']:.2f} ({stats['median']:.2f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="checkpoint or built-in name (default: face preset)")
    parser.add_argument("--image", help="benchmark image (default: a 640x480 face photo)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=100, help="frames per block")
    parser.add_argument("--rounds", type=int, default=3, help="blocks per side, alternating")
    parser.add_argument(
        "--load", type=int, default=20, help="random weights: anchors above 0.7 on the photo"
    )
    parser.add_argument("--out", help="also write the figures as JSON here")
    args = parser.parse_args(argv)

    import cv2

    from detector.export import ExportOptions
    from detector.web import export_web
    from detector.web.browser import served

    image = _image(args.image)
    load_before = os.getloadavg()[0]
    blocks: dict[str, list[list[float]]] = {
        k: [] for k in ("total", "preprocess", "inference", "draw", "native_e2e", "native_net")
    }
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        checkpoint, source = _checkpoint(args, image, tmp)
        app = export_web(checkpoint, tmp / "app", ExportOptions(verify=False, **POST), log=None)
        model = app / json.loads((app / "detector-web.json").read_text())["model"]
        photo = tmp / "frame.png"
        cv2.imwrite(str(photo), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        native = _Native(model, image, args.threads)
        with served(app) as url:
            for _ in range(args.rounds):  # alternate, so that both sides see the same load
                page = _browser_block(url, photo, args.threads, args.frames)
                for key in ("total", "preprocess", "inference", "draw"):
                    blocks[key].append([f[key] for f in page["frames"]])
                e2e, net = native.block(args.frames)
                blocks["native_e2e"].append(e2e)
                blocks["native_net"].append(net)
    stats = {key: block_stats(b) for key, b in blocks.items()}
    ready = page["ready"]
    figures = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "model": source,
        "image": f"{image.shape[1]}x{image.shape[0]}",
        "threads": args.threads,
        "frames_per_block": args.frames,
        "rounds": args.rounds,
        "ort_web": ready["ortVersion"],
        "browser_backend": ready["backend"],
        "browser_threads": ready["threads"],
        "cross_origin_isolated": ready["crossOriginIsolated"],
        "ms": stats,
        "ratio_network": stats["inference"]["best"] / stats["native_net"]["best"],
        "ratio_end_to_end": stats["total"]["best"] / stats["native_e2e"]["best"],
        "browser_detections": len(page["last"]["detections"]),
        "native_detections": native.detections,
    }
    print(
        f"{figures['date']} · {figures['cpu']}, {figures['cores']} cores, load average "
        f"{figures['load_average'][0]} -> {figures['load_average'][1]} · {source}"
    )
    print(
        f"onnxruntime-web {figures['ort_web']} WASM, {ready['threads']} threads "
        f"(cross-origin isolated: {ready['crossOriginIsolated']}) vs native ONNX Runtime, "
        f"{args.threads} threads; image {figures['image']}; {args.rounds} x {args.frames} frames"
    )
    print("ms per frame: median of the least-disturbed block (median of all frames)")
    print(f"{'':26}{'browser':>16}{'native':>16}{'ratio':>7}")
    print(
        f"{'network (session.run)':26}{_fmt(stats['inference']):>16}"
        f"{_fmt(stats['native_net']):>16}{figures['ratio_network']:>7.2f}"
    )
    print(
        f"{'end to end (per frame)':26}{_fmt(stats['total']):>16}"
        f"{_fmt(stats['native_e2e']):>16}{figures['ratio_end_to_end']:>7.2f}"
    )
    print(
        f"browser: canvas read + preprocess {_fmt(stats['preprocess'])} ms, draw "
        f"{_fmt(stats['draw'])} ms; detections {figures['browser_detections']} "
        f"(native {figures['native_detections']})"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
