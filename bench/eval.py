"""COCO evaluation speed: plain pycocotools against ``evaluate_results_file`` with each backend.

A synthetic COCO ground truth (default 5000 images, 80 categories, about 6 objects per image with
crowd regions and empty images) and a results file with 100 detections per image are written to
a temporary folder; then, on the same files, end to end, each in a fresh Python process (so that
no run inherits another's heap or imports; the time is measured inside that process):

* ``plain pycocotools``: ``COCO(gt)``, ``loadRes(results)``, ``COCOeval`` evaluate / accumulate /
  summarize, as pycocotools' README does it;
* ``plain faster-coco-eval``: the same with faster-coco-eval's ``COCO`` / ``COCOeval_faster``
  (for reference);
* ``plain hotcoco``: the same with hotcoco's ``COCO`` / ``load_res`` / ``COCOeval`` (Rust; it
  parses both JSON files itself);
* ``ours (backend)``: ``evaluate_results_file(results, ann_file=gt, backend=..., out_dir=...)``,
  which also checks the file, and writes metrics.json, the per-class tables, the PR-curve PNG and
  the summary.

For our runs the time is split into JSON parsing (the ``json`` module, for the annotation and the
results file), our own Python (checking/converting the detections, preparing the engine inputs,
writing the report) and the engine library itself (pycocotools, or faster-coco-eval's C++
kernel, hotcoco's Rust evaluator). Every run's 12 numbers are compared with plain pycocotools. Usage::

    python bench/eval.py [--images 5000] [--dets 100] [--categories 80] [--skip-plain]

The plain pycocotools run takes about a minute at the default size.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from detector.evaluation import COCO_STAT_KEYS, evaluate_results_file  # noqa: E402
from detector.evaluation.coco_engine import faster_available, hotcoco_available  # noqa: E402
from detector.evaluation.synthetic import make_synthetic_coco  # noqa: E402


def plain_pycocotools(gt_path: Path, res_path: Path) -> tuple[float, np.ndarray]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        dt = gt.loadRes(str(res_path))
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return time.perf_counter() - start, np.asarray(ev.stats)


def plain_faster(gt_path: Path, res_path: Path) -> tuple[float, np.ndarray]:
    from faster_coco_eval import COCO, COCOeval_faster

    def quiet(*_a, **_k):
        return None

    start = time.perf_counter()
    gt = COCO(str(gt_path), print_function=quiet)
    dt = gt.loadRes(str(res_path))
    ev = COCOeval_faster(gt, dt, "bbox", print_function=quiet)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return time.perf_counter() - start, np.asarray(ev.stats[:12])


def plain_hotcoco(gt_path: Path, res_path: Path) -> tuple[float, np.ndarray]:
    from hotcoco import COCO, COCOeval

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        dt = gt.load_res(str(res_path))
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return time.perf_counter() - start, np.asarray(ev.stats[:12])


def ours(gt_path: Path, res_path: Path, backend: str, out_dir: Path) -> tuple[float, dict]:
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the synthetic file is clean: any warning is a bug
        metrics = evaluate_results_file(
            res_path, ann_file=gt_path, backend=backend, out_dir=out_dir
        )
    return time.perf_counter() - start, metrics


def split_ours(metrics: dict) -> dict[str, float]:
    """JSON parsing / our Python / engine library, from the timings the run reports."""
    parse = metrics["time_gt_s"] + metrics["time_parse_s"]  # json.load of both files
    engine = metrics["time_engine_s"]
    ours_in_engine = sum(metrics.get(f"time_engine_{k}_s", 0.0) for k in ENGINE_PREP)
    library = engine - ours_in_engine
    total = metrics["time_total_s"]
    return {"total": total, "json": parse, "ours": total - parse - library, "library": library}


ENGINE_PREP = ("prepare_refs", "append_refs", "iou")


VARIANTS = {
    "plain-pycocotools": "plain pycocotools",
    "plain-faster": "plain faster-coco-eval",
    "plain-hotcoco": "plain hotcoco",
    "ours-faster": "ours (faster)",
    "ours-hotcoco": "ours (hotcoco)",
    "ours-pycocotools": "ours (pycocotools)",
}


def worker(variant: str, gt_path: Path, res_path: Path, out_dir: Path) -> None:
    """Run one variant and print its result as the last line of JSON."""
    metrics = None
    if variant == "plain-pycocotools":
        seconds, stats = plain_pycocotools(gt_path, res_path)
    elif variant == "plain-faster":
        seconds, stats = plain_faster(gt_path, res_path)
    elif variant == "plain-hotcoco":
        seconds, stats = plain_hotcoco(gt_path, res_path)
    else:
        seconds, metrics = ours(gt_path, res_path, variant.split("-", 1)[1], out_dir)
        stats = np.array([metrics[k] for k in COCO_STAT_KEYS])
    timings = (
        None if metrics is None else {k: v for k, v in metrics.items() if k.startswith("time_")}
    )
    print(json.dumps({"seconds": seconds, "stats": stats.tolist(), "timings": timings}))


def run_variant(variant: str, gt_path: Path, res_path: Path, out_dir: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", variant, "--gt", str(gt_path)]
    cmd += ["--res", str(res_path), "--out", str(out_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--dets", type=int, default=100, help="detections per image")
    parser.add_argument("--categories", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-plain", action="store_true", help="skip plain pycocotools")
    parser.add_argument("--worker", choices=list(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--gt", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--res", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.gt, args.res, args.out)
        return

    print(f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cpus")
    versions = {
        "pycocotools": _version("pycocotools"),
        "faster-coco-eval": _version("faster-coco-eval"),
        "hotcoco": _version("hotcoco"),
    }
    print("versions:", ", ".join(f"{k} {v}" for k, v in versions.items()))
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        gt, res = make_synthetic_coco(
            args.images,
            args.dets,
            num_categories=args.categories,
            max_gts_per_image=14,
            seed=args.seed,
        )
        gt_path, res_path = tmp / "instances.json", tmp / "results.json"
        gt_path.write_text(json.dumps(gt))
        res_path.write_text(json.dumps(res))
        print(
            f"data: {len(gt['images'])} images, {len(gt['categories'])} categories, "
            f"{len(gt['annotations'])} annotations "
            f"({sum(a['iscrowd'] for a in gt['annotations'])} crowd), {len(res)} detections; "
            f"results file {res_path.stat().st_size / 1e6:.1f} MB "
            f"(generated in {time.perf_counter() - t0:.1f} s)"
        )
        del gt, res

        variants = [] if args.skip_plain else ["plain-pycocotools"]
        if faster_available():
            variants += ["plain-faster", "ours-faster"]
        if hotcoco_available():
            variants += ["plain-hotcoco", "ours-hotcoco"]
        variants += ["ours-pycocotools"]
        rows: list[tuple[str, float, dict | None, np.ndarray]] = []
        for variant in variants:
            out = run_variant(variant, gt_path, res_path, tmp / f"report_{variant}")
            rows.append((VARIANTS[variant], out["seconds"], out["timings"], np.array(out["stats"])))
            print(f"  {VARIANTS[variant]}: {out['seconds']:.2f} s", flush=True)
        reference = rows[0][3] if not args.skip_plain else rows[-1][3]

        base = rows[0][1] if not args.skip_plain else None
        print()
        header = (
            "| run | total s | speed-up vs plain pycocotools | JSON parse s | our Python s "
            "| engine library s | our Python share | our Python + JSON share | max abs diff vs pycocotools |"
        )
        print(header)
        print("|" + "|".join(["---", *["---:"] * 8]) + "|")
        for name, seconds, metrics, stats in rows:
            speed = f"{base / seconds:.1f}x" if base else "-"
            diff = f"{np.max(np.abs(stats - reference)):.1e}"
            if metrics is None:
                print(f"| {name} | {seconds:.2f} | {speed} | - | - | - | - | - | {diff} |")
                continue
            split = split_ours(metrics)
            print(
                f"| {name} | {seconds:.2f} | {speed} | {split['json']:.2f} | {split['ours']:.2f} "
                f"| {split['library']:.2f} | {100 * split['ours'] / seconds:.1f}% "
                f"| {100 * (split['ours'] + split['json']) / seconds:.1f}% | {diff} |"
            )
        for name, _, metrics, _ in rows:
            if metrics is not None:
                detail = ", ".join(
                    f"{k.removeprefix('time_').removesuffix('_s')} {v:.2f}"
                    for k, v in metrics.items()
                )
                print(f"\n{name} timings (s): {detail}")
        print(
            "\nour Python = checking/converting the detections, preparing the engine inputs "
            "(faster: grouping, IoU, annotation refs), writing metrics.json/tables/PNG (PR "
            "curves drawn with OpenCV); JSON parse = json.load of the annotation and results "
            "files; engine library = pycocotools' COCO/loadRes/COCOeval, faster-coco-eval's "
            "C++ kernel or hotcoco's load_res/COCOeval."
        )


def _version(dist: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    main()
