"""End-to-end CPU latency of the detector in each runtime, against torchvision's SSDLite.

    python bench/latency.py                       # alpha 1.0 and 0.5 at 300x300, 2 threads
    python bench/latency.py --iters 30 --alphas 1.0 --candidates 0

Prints one table. Every row is measured end to end on one RGB ``uint8`` image (480x640 by default,
or ``--image``), batch 1:

* ours: preprocess (resize to 300x300, scale to [0, 1]) + network + decode + NMS, in PyTorch
  eager (:func:`detector.postprocess.postprocess_detections`), with ``torch.compile`` on the
  network (pre/post-processing stay eager: NMS is data dependent), and in ONNX Runtime fp32 and
  int8 (static QDQ) with NMS inside the graph (``export nms=true``; their decode + NMS share is
  one minus the time of the graph's network part, extracted into its own session and timed in
  alternating blocks at set-up, over the whole graph's);
* reference: ``torchvision.models.detection.ssdlite320_mobilenet_v3_large`` called on the image
  tensor (its own resize to 320x320, normalisation, network and post-processing).

Each row runs in its own process (ONNX Runtime and PyTorch thread pools in one process slow each
other down 2-3x) with ``--threads`` intra-op threads. After set-up and warm-up, the rows are timed
in blocks of ``--iters`` consecutive calls, one row at a time, for ``--rounds`` rounds; the table
gives the median of each row's least-disturbed block (on a shared machine, load from other
processes only ever adds time) and, in parentheses, the median of all its calls.

Post-processing load: randomly initialised detectors score every class about equally, so tens of
thousands of candidates pass the score threshold and NMS dominates, unlike a trained model. By
default the background logit bias of every model (ours and the reference) is raised until about
``--candidates`` candidates per image survive the score threshold and per-class top-k (bisection
on the benchmark image), giving all models the same, trained-like NMS load; ``--candidates 0``
keeps the raw initialisation. ``--checkpoint`` benchmarks trained weights instead (alpha taken
from the checkpoint, no bias change).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import WorkerProcess, block_stats, cpu_name

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


# ----------------------------------------------------------------------------- shared helpers
def _image(args: argparse.Namespace) -> np.ndarray:
    from detector.export.images import generated_images, read_rgb

    if args.image:
        return read_rgb(args.image)
    return generated_images(1, seed=3, size=(480, 640))[0]


def _final_class_convs(module) -> list:
    """The last conv of each class predictor (ours: SSDHead; torchvision: SSDLite head)."""
    from torch import nn

    preds = (
        module.head.class_predictors
        if hasattr(module.head, "class_predictors")
        else module.head.classification_head.module_list
    )
    convs = []
    for p in preds:
        last = [m for m in p.modules() if isinstance(m, nn.Conv2d)][-1]
        convs.append(last)
    return convs


def _shift_background(model, shift: float, columns: int) -> None:
    """Add ``shift`` to the background logit bias of every anchor slot (channels a * K + c)."""
    import torch

    with torch.no_grad():
        for conv in _final_class_convs(model):
            conv.bias[0::columns] += shift


def _candidates(logits, shift: float, score_fn: str, thresh: float, topk: int) -> float:
    """Mean candidates per image surviving threshold + per-class top-k after the shift."""
    lg = logits.clone()
    lg[..., 0] += shift
    scores = lg.softmax(-1)[..., 1:] if score_fn == "softmax" else lg.sigmoid()[..., 1:]
    return float((scores > thresh).sum(1).clamp(max=topk).sum(1).float().mean())


def _calibrate_shift(logits, target: float, score_fn: str, thresh: float, topk: int) -> float:
    lo, hi = 0.0, 40.0
    if _candidates(logits, 0.0, score_fn, thresh, topk) <= target:
        return 0.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if _candidates(logits, mid, score_fn, thresh, topk) > target:
            lo = mid
        else:
            hi = mid
    return hi


def _recalibrate_bn(forward, model, batch) -> None:
    """Re-estimate BatchNorm statistics on ``batch`` (one pass, cumulative average).

    A randomly initialised torchvision MobileNetV3 collapses its activations to ~1e-14 in eval
    mode, so every class scores the same; with statistics measured on real inputs each layer is
    normalised and the scores vary with the image, as in a trained model. Speed is unaffected.
    """
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        forward(batch)
    model.eval()
    for bn in bns:
        bn.momentum = 0.1


def _tv_logits(model, image_t):
    import torch

    with torch.no_grad():
        images, _ = model.transform([image_t])
        feats = list(model.backbone(images.tensors).values())
        return model.head(feats)["cls_logits"]


# ----------------------------------------------------------------------------------- workers
def _time(fn, warmup: int, iters: int, post: list[float] | None = None) -> list[float]:
    """Call ``fn`` ``iters`` times; ms per call. ``fn`` may return its decode + NMS seconds,
    collected (in ms) into ``post``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        post_s = fn()
        times.append((time.perf_counter() - t0) * 1000.0)
        if post is not None and post_s is not None:
            post.append(post_s * 1000.0)
    return times


def _graph_post_share(path: str, x: np.ndarray, spec: dict[str, Any], rounds: int = 12) -> float:
    """Share of decode + NMS in the ONNX Runtime call of an NMS graph.

    It cannot be timed from outside one graph, so the network part (``images`` to
    ``box_deltas``/``class_logits``, which the joined graph keeps under those names) is
    extracted into a second session, and the two are timed in alternating blocks of calls:
    share = 1 - network time / whole-graph time. (ONNX Runtime's node profiler adds a fixed
    cost per node and overstates the many small post-processing nodes.)
    """
    import onnx
    import onnxruntime as ort
    from onnx.utils import Extractor

    options = ort.SessionOptions()
    options.intra_op_num_threads = spec["threads"]
    net = Extractor(onnx.load(path)).extract_model(["images"], ["box_deltas", "class_logits"])
    sessions = [
        ort.InferenceSession(net.SerializeToString(), options, providers=["CPUExecutionProvider"]),
        ort.InferenceSession(path, options, providers=["CPUExecutionProvider"]),
    ]
    medians: list[list[float]] = [[], []]
    for r in range(rounds + 1):
        for i, session in enumerate(sessions):
            times = []
            for _ in range(max(spec["iters"], 30)):
                t0 = time.perf_counter()
                session.run(None, {"images": x})
                times.append(time.perf_counter() - t0)
            if r:  # the first round warms up
                medians[i].append(statistics.median(times))
    return max(0.0, 1.0 - min(medians[0]) / min(medians[1]))


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure one row in this process (started by the parent with ``--worker``)."""
    import torch

    torch.set_num_threads(spec["threads"])
    torch.set_num_interop_threads(1)
    image = np.load(spec["image"])
    h0, w0 = image.shape[:2]
    engine = spec["engine"]
    dets: list[int] = []
    fixed_post_share = None  # decode + NMS share measured once at set-up (in-graph NMS)

    if engine == "torchvision":
        from torchvision.models.detection import ssdlite320_mobilenet_v3_large

        model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=91)
        model.load_state_dict(torch.load(spec["weights"], weights_only=True))
        model.eval()

        def run() -> None:
            with torch.inference_mode():
                t = torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)
                out = model([t])[0]
            dets.append(len(out["scores"]))

    elif engine == "torchvision_network":
        from torchvision.models.detection import ssdlite320_mobilenet_v3_large

        model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=91)
        model.load_state_dict(torch.load(spec["weights"], weights_only=True))
        model.eval()

        def run() -> None:  # transform + backbone + head; no decoding, no NMS
            with torch.inference_mode():
                t = torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)
                batch, _ = model.transform([t])
                model.head(list(model.backbone(batch.tensors).values()))

    elif engine in ("eager", "compile"):
        from detector.engine.checkpoint import load_detector
        from detector.export.images import preprocess
        from detector.postprocess import postprocess_detections

        model, _ = load_detector(spec["checkpoint"])
        net = torch.compile(model) if engine == "compile" else model

        def run() -> float:
            with torch.inference_mode():
                x = torch.from_numpy(preprocess([image], model.image_size))
                deltas, logits = net(x)
                t_post = time.perf_counter()
                out = postprocess_detections(
                    deltas,
                    logits,
                    model.anchors,
                    [(h0, w0)],
                    score_fn=model.score_fn,
                    **spec["post"],
                )[0]
                post_s = time.perf_counter() - t_post
            dets.append(len(out["scores"]))
            return post_s

    elif engine in ("onnx_fp32", "onnx_int8"):
        from detector.export.images import preprocess
        from detector.export.onnx_runner import OnnxRunner

        runner = OnnxRunner(spec["onnx"], threads=spec["threads"])
        size = tuple(spec["image_size"])
        scale = np.array([w0, h0, w0, h0], dtype=np.float32)
        fixed_post_share = _graph_post_share(spec["onnx"], preprocess([image], size), spec)

        def run() -> None:
            out = runner(preprocess([image], size))
            n = int(out["count"][0])
            _boxes = out["boxes"][0, :n] * scale
            dets.append(n)

    elif engine in ("onnx_numpy", "executorch", "tflite"):
        # A raw graph in its runtime, then the torch-free NumPy decode + NMS of detector.runtime
        # (what a device without PyTorch runs).
        from detector.export.images import preprocess
        from detector.export.sidecar import read_sidecar
        from detector.runtime.numpy_ops import detections_from_outputs

        artifact = Path(spec["artifact"])
        sidecar = read_sidecar(artifact.with_suffix(".json"))
        size = tuple(spec["image_size"])
        if engine == "onnx_numpy":
            from detector.export.onnx_runner import OnnxRunner

            runner = OnnxRunner(artifact, threads=spec["threads"])
        elif engine == "executorch":
            from detector.export.executorch_format import ExecuTorchRunner

            runner = ExecuTorchRunner(artifact, stage="raw")
        else:
            from detector.export import FORMATS, ExportOptions

            runner = FORMATS["tflite"].runner(artifact, ExportOptions(format="tflite"))

        def run() -> float:
            out = runner(preprocess([image], size))
            t_post = time.perf_counter()
            det = detections_from_outputs(out, sidecar, [(h0, w0)])[0]
            post_s = time.perf_counter() - t_post
            dets.append(len(det["scores"]))
            return post_s

    else:
        raise ValueError(f"unknown engine {engine}")

    t0 = time.perf_counter()
    run()  # first call (torch.compile compiles here)
    first_ms = (time.perf_counter() - t0) * 1000.0
    _time(run, spec["warmup"], 0)
    ready = {"ready": True, "first": first_ms, "post_share": fixed_post_share}
    print(json.dumps(ready), flush=True)
    # Blocks on request: "run N" times N calls; "quit" ends.
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        dets.clear()
        post: list[float] = []
        times = _time(run, 0, int(cmd[1]), post)
        out = {"times": times, "post": post, "dets": float(np.mean(dets)) if dets else 0.0}
        print(json.dumps(out), flush=True)
    return {}


class _Worker(WorkerProcess):
    """A row's measuring process: set up once, then runs timed blocks on request."""

    def __init__(self, spec: dict[str, Any], threads: int) -> None:
        super().__init__(__file__, spec, threads)
        self.blocks: list[list[float]] = []
        self.post: list[float] = []
        self.dets = float("nan")
        ready = self.read()
        self.first = ready.get("first", float("nan")) if ready else float("nan")
        self.fixed_post_share = ready.get("post_share") if ready else None

    def block(self, iters: int) -> None:
        out = self.request(f"run {iters}")
        if out:
            self.blocks.append(out["times"])
            self.post += out.get("post", [])
            self.dets = out["dets"]

    def result(self) -> dict[str, Any]:
        if self.error or not self.blocks:
            return {"error": [self.error or "no measurement"]}
        every = [t for b in self.blocks for t in b]
        post_share = sum(self.post) / sum(every) if self.post else self.fixed_post_share
        return {
            "post_share": post_share,
            **block_stats(self.blocks),
            "p90": float(np.percentile(every, 90)),
            "first": self.first,
            "dets": self.dets,
        }


# ------------------------------------------------------------------------------------ parent
def _prepare(args: argparse.Namespace, tmp: Path) -> tuple[list[dict], dict, dict[str, Any]]:
    """Build the models (bias-shifted), save them, export ONNX fp32/int8; return worker specs."""
    import torch
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    from detector.engine.checkpoint import load_detector, save_checkpoint
    from detector.export import FORMATS, ExportOptions, export_model
    from detector.export.images import generated_images, preprocess
    from detector.models import ssd_mobilenet_v1

    torch.set_num_threads(args.threads)
    image = _image(args)
    np.save(tmp / "image.npy", image)
    info: dict[str, Any] = {"image": f"{image.shape[0]}x{image.shape[1]}", "loads": {}}
    post = {"score_thresh": args.score_thresh, "max_detections": args.max_detections}
    common = {
        "post": post,
        "image": str(tmp / "image.npy"),
        "threads": args.threads,
        "warmup": args.warmup,
        "iters": args.iters,
    }

    # Reference: torchvision SSDLite (random init, same background-bias treatment).
    torch.manual_seed(0)
    tv = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=91).eval()
    image_t = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
    calib_images = generated_images(4, seed=11, size=image.shape[:2])
    if args.candidates > 0:
        tv_batch, _ = tv.transform(
            [torch.from_numpy(im).permute(2, 0, 1).float() / 255.0 for im in calib_images]
        )
        _recalibrate_bn(lambda b: tv.head(list(tv.backbone(b).values())), tv, tv_batch.tensors)
        logits = _tv_logits(tv, image_t)
        shift = _calibrate_shift(logits, args.candidates, "softmax", tv.score_thresh, 300)
        _shift_background(tv, shift, 91)
    info["loads"]["torchvision"] = _candidates(
        _tv_logits(tv, image_t), 0.0, "softmax", tv.score_thresh, 300
    )
    torch.save(tv.state_dict(), tmp / "tv.pt")
    ref = {**common, "engine": "torchvision", "weights": str(tmp / "tv.pt")}
    ref_net = {**common, "engine": "torchvision_network", "weights": str(tmp / "tv.pt")}

    rows: list[dict] = []
    models = []
    if args.checkpoint:
        model, classes = load_detector(args.checkpoint)
        models.append((f"ckpt a{model.config.alpha:g}", model, classes))
    else:
        for alpha in args.alphas:
            torch.manual_seed(0)
            model = ssd_mobilenet_v1(args.num_classes, alpha=alpha, image_size=(args.size,) * 2)
            model.eval()
            classes = [f"c{i}" for i in range(1, args.num_classes + 1)]
            if args.candidates > 0:
                batch = torch.from_numpy(preprocess(calib_images, model.image_size))
                _recalibrate_bn(model, model, batch)
                x = torch.from_numpy(preprocess([image], model.image_size))
                with torch.no_grad():
                    _, logits = model(x)
                shift = _calibrate_shift(
                    logits, args.candidates, model.score_fn, args.score_thresh, 400
                )
                _shift_background(model, shift, args.num_classes + 1)
            models.append((f"alpha {alpha:g}", model, classes))

    calibration = args.calibration
    if calibration is None:
        calibration = str(SHARED / "datasets") if (SHARED / "datasets").is_dir() else "synthetic"
    for label, model, classes in models:
        key = label.replace(" ", "_")
        ckpt = tmp / f"{key}.pt"
        save_checkpoint(
            {
                "model": model.state_dict(),
                "model_config": model.config.to_dict(),
                "classes": classes,
            },
            ckpt,
        )
        x = torch.from_numpy(preprocess([image], model.image_size))
        with torch.no_grad():
            _, logits = model(x)
        info["loads"][label] = _candidates(logits, 0.0, model.score_fn, args.score_thresh, 400)
        onnx_files = {}
        for precision in ("fp32", "int8"):
            options = ExportOptions(
                **post,
                nms=True,
                int8=precision == "int8",
                calibration=calibration if precision == "int8" else None,
                num_calibration_images=args.calibration_images,
                verify=False,
            )
            result = export_model(
                model, classes, tmp / key / precision, options, name=key, strict=False, log=None
            )
            onnx_files[precision] = str(result.model_path)
        raw_files = {}
        for engine, fmt in (
            ("onnx_numpy", "onnx"),
            ("executorch", "executorch"),
            ("tflite", "tflite"),
        ):
            if engine not in args.engines:
                continue
            if not FORMATS[fmt].implemented or FORMATS[fmt].missing_modules():
                info.setdefault("skipped", []).append(f"{engine} ({fmt} export not available)")
                continue
            options = ExportOptions(format=fmt, verify=False, **post)
            result = export_model(
                model, classes, tmp / key / engine, options, name=key, strict=False, log=None
            )
            raw_files[engine] = str(result.model_path)
        size = list(model.image_size)
        for engine in args.engines:
            spec = {**common, "engine": engine, "label": label, "image_size": size}
            if engine in ("eager", "compile"):
                spec["checkpoint"] = str(ckpt)
            elif engine in ("onnx_fp32", "onnx_int8"):
                spec["onnx"] = onnx_files[engine.split("_")[1]]
            elif engine in raw_files:
                spec["artifact"] = raw_files[engine]
            else:
                continue
            rows.append(spec)
    info["calibration"] = calibration
    return rows, [ref, ref_net], info


ENGINE_NAMES = {
    "eager": "PyTorch eager",
    "compile": "torch.compile (network)",
    "onnx_fp32": "ONNX Runtime fp32, NMS in graph",
    "onnx_int8": "ONNX Runtime int8 QDQ, NMS in graph",
    "onnx_numpy": "ONNX Runtime fp32 + NumPy NMS",
    "executorch": "ExecuTorch XNNPACK + NumPy NMS",
    "tflite": "TFLite (LiteRT) + NumPy NMS",
}


def _fmt(res: dict[str, Any], ref_ms: float | None) -> tuple[str, str]:
    if "error" in res:
        return ("error: " + " ".join(res["error"]))[:40], ""
    ms = f"{res['best']:.1f} ({res['median']:.1f})"
    if res.get("post_share") is not None:
        ms += f" {100 * res['post_share']:.0f}%"
    ratio = f"{res['best'] / ref_ms:.2f}x" if ref_ms else ""
    return ms, ratio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--alphas", type=float, nargs="+", default=[1.0, 0.5])
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--num-classes", type=int, default=90)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=20, help="timed calls per block")
    parser.add_argument("--rounds", type=int, default=5, help="blocks per row, interleaved")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--candidates", type=float, default=300.0)
    parser.add_argument("--image", type=str, default=None)
    parser.add_argument("--checkpoint", type=str, default=None)
    parser.add_argument(
        "--score-thresh",
        type=float,
        default=0.01,
        help="our post-processing score threshold (0.01: evaluation default; detect.py uses 0.3)",
    )
    parser.add_argument("--max-detections", type=int, default=200, help="ours (detect.py: 100)")
    parser.add_argument("--calibration", type=str, default=None)
    parser.add_argument("--calibration-images", type=int, default=32)
    parser.add_argument(
        "--engines", nargs="+", default=list(ENGINE_NAMES), choices=list(ENGINE_NAMES)
    )
    parser.add_argument("--worker", type=str, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        worker(json.loads(args.worker))
        return 0

    import torch

    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="detector_bench_") as tmp_name:
        tmp = Path(tmp_name)
        print("preparing models and ONNX exports...", file=sys.stderr, flush=True)
        rows, refs, info = _prepare(args, tmp)
        specs = [*refs, *rows]
        workers: list[_Worker] = []
        try:
            for spec in specs:
                name = spec.get("label", "reference") + " " + spec["engine"]
                print(f"starting {name}...", file=sys.stderr, flush=True)
                workers.append(_Worker(spec, args.threads))
            for r in range(args.rounds):
                print(f"round {r + 1}/{args.rounds}...", file=sys.stderr, flush=True)
                for w in workers:
                    w.block(args.iters)
        finally:
            for w in workers:
                w.close()
        ref_res = workers[0].result()
        ref_ms = ref_res.get("best")
        net_res = workers[1].result()
        results = {
            (spec["label"], spec["engine"]): w.result() for spec, w in zip(rows, workers[2:])
        }

    labels = list(dict.fromkeys(s["label"] for s in rows))
    col = 22
    print()
    print(
        f"End-to-end latency, batch 1, {args.threads} threads, {info['image']} RGB uint8 image in, "
        f"detections out. ms = median of the least-disturbed block of {args.iters} calls "
        f"(median of all {args.rounds * args.iters} calls); {args.rounds} rounds of blocks, rows "
        f"interleaved block by block, one process per row, {args.warmup} warm-up calls; "
        "x ref = ms / reference ms; a trailing % is the share of decode + NMS in the call."
    )
    print(
        f"machine: {os.cpu_count()} CPUs, 1-min load average {load_start:.1f} at start, "
        f"{os.getloadavg()[0]:.1f} at end (other processes share these CPUs)"
    )
    print(
        f"torch {torch.__version__}, CPU: {cpu_name()}; ours: {args.size}x{args.size}, "
        f"{args.num_classes} classes, score_thresh {args.score_thresh:g}, top-k 400, NMS 0.45, "
        f"{args.max_detections} dets"
    )
    header = f"{'engine':<38}" + "".join(
        f"| {lab + ' ms (all)':<{col}}| {'x ref':<7}" for lab in labels
    )
    print(header)
    print("-" * len(header))
    engines = [e for e in args.engines if any((lab, e) in results for lab in labels)]
    for engine in engines:
        line = f"{ENGINE_NAMES[engine]:<38}"
        for lab in labels:
            ms, ratio = _fmt(results.get((lab, engine), {"error": ["not run"]}), ref_ms)
            line += f"| {ms:<{col}}| {ratio:<7}"
        print(line)
    ref_text, _ = _fmt(ref_res, None)
    line = f"{'torchvision ssdlite320 (reference)':<38}"
    for _ in labels:
        line += f"| {ref_text:<{col}}| {'1.00x':<7}"
    print(line)
    net_text, net_ratio = _fmt(net_res, ref_ms)
    line = f"{'torchvision ssdlite320 network only':<38}"
    for _ in labels:
        line += f"| {net_text:<{col}}| {net_ratio:<7}"
    print(line)
    print()
    _print_goals(results, labels, net_res.get("best"))
    if info.get("skipped"):
        print("skipped: " + ", ".join(info["skipped"]))
    print(
        "reference: torchvision ssdlite320_mobilenet_v3_large, eager, end to end (its own 320x320 "
        "resize and normalisation, score_thresh 0.001, top-k 300, NMS 0.55, 300 dets)"
    )
    loads = ", ".join(f"{k}: {v:.0f}" for k, v in info["loads"].items())
    dets = ", ".join(
        f"{lab}: {results.get((lab, engines[0]), {}).get('dets', float('nan')):.0f}"
        for lab in labels
    )
    print(
        f"NMS load (candidates per image after threshold + per-class top-k): {loads}; "
        f"detections per image: {dets}, reference {ref_res.get('dets', float('nan')):.0f}"
    )
    first = ", ".join(
        f"{lab}: {results[(lab, 'compile')]['first'] / 1000:.0f} s"
        for lab in labels
        if "compile" in args.engines and "first" in results[(lab, "compile")]
    )
    if first:
        print(f"torch.compile first call (compilation): {first}")
    print(
        f"int8 calibration: {info['calibration']} ({args.calibration_images} images); "
        f"total bench time {time.perf_counter() - started:.0f} s"
    )
    return 0


def _print_goals(results: dict, labels: list[str], net_ms: float | None) -> None:
    """The issue's speed goals, as ratios of rows measured in this run."""

    def best(lab: str, engine: str) -> float | None:
        return results.get((lab, engine), {}).get("best")

    for lab in labels:
        parts = []
        onnx = best(lab, "onnx_fp32") or best(lab, "onnx_numpy")
        if onnx and net_ms:
            parts.append(
                f"ONNX fp32 end to end is {net_ms / onnx:.2f}x faster than torchvision "
                "ssdlite320's network alone (goal >= 2x)"
            )
        int8, fp32 = best(lab, "onnx_int8"), best(lab, "onnx_fp32")
        if int8 and fp32:
            parts.append(f"int8 is {fp32 / int8:.2f}x faster than fp32 (goal >= 1.8x)")
        shares = [
            f"{ENGINE_NAMES[e]} {100 * results[(lab, e)]['post_share']:.0f}%"
            for e in ENGINE_NAMES
            if results.get((lab, e), {}).get("post_share") is not None
        ]
        if shares:
            parts.append("decode + NMS share " + ", ".join(shares) + " (goal <= 20%)")
        print(f"{lab}: " + "; ".join(parts))


if __name__ == "__main__":
    sys.exit(main())
