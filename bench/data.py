"""Throughput of the ``ssd`` training pipeline against the equivalent torchvision.transforms.v2 one.

Both pipelines read the same JPEG files and run on one CPU core (one thread for torch, OpenCV and
OpenMP): ours decodes with OpenCV and augments with the albumentations ``ssd`` preset; torchvision
decodes with ``torchvision.io.decode_jpeg`` and runs ``RandomPhotometricDistort``,
``RandomZoomOut``, ``RandomIoUCrop``, ``RandomHorizontalFlip``, ``Resize`` and
``SanitizeBoundingBoxes`` (the torchvision detection reference's SSD recipe). The same settings
are used on both sides: photometric changes with probability 0.5 each including the channel
permutation, zoom-out up to 4x with probability 0.5 on a (127, 127, 127) canvas, the SSD
minimum-IoU crop, flip with probability 0.5, output 300x300.

Images: the raccoon dataset from the shared assets when present (real photos with boxes), else a
freshly generated synthetic set. Usage::

    python bench/data.py [--images 200] [--repeats 3] [--size 300] [--source auto|raccoon|synthetic]
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"  # one core: set before numpy / torch / OpenCV load
os.environ["MKL_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"

import argparse
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from detector.data import (  # noqa: E402
    FolderDetection,
    Sample,
    build_transforms,
    generate_synthetic,
    load_image,
    ssd_train,
)


def _shared_data() -> Path:
    env = os.environ.get("DETECTOR_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def load_items(
    source: str, limit: int, tmp: Path
) -> tuple[str, list[tuple[Path, np.ndarray, np.ndarray]]]:
    """``(description, [(jpeg path, boxes, labels)])`` for the benchmark."""
    raccoon = _shared_data() / "datasets" / "raccoon_dataset"
    if source in {"auto", "raccoon"} and (raccoon / "annotations").is_dir():
        ds = FolderDetection(raccoon)
        desc = "raccoon dataset (real JPEG photos)"
    elif source == "raccoon":
        raise SystemExit(f"raccoon dataset not found under {raccoon}")
    else:
        info = generate_synthetic(tmp / "synthetic", num_train=limit, num_val=0, seed=0)
        ds = FolderDetection(info["root"] / "train", classes=info["classes"])
        desc = "synthetic shapes (generated JPEGs)"
    items = [(e.path, e.boxes[e.train], e.labels[e.train]) for e in ds.entries][:limit]
    sizes = [load_image(p).shape[:2] for p, _, _ in items[:50]]
    mean_px = np.mean([h * w for h, w in sizes])
    return f"{desc}, {len(items)} images, mean {mean_px / 1e3:.0f} kpx", items


def ours_decode(items: list) -> Callable[[int], object]:
    return lambda i: load_image(items[i][0])


def ours_pipeline(items: list, size: int, preset: str) -> Callable[[int], object]:
    if preset == "ssd":
        transform = ssd_train((size, size), p_channel_shuffle=0.5, seed=0)
    else:
        transform = build_transforms(preset, (size, size), train=preset != "none", seed=0)

    def run(i: int) -> Sample:
        path, boxes, labels = items[i]
        sample = Sample(load_image(path), boxes, labels, i)
        return transform(sample)

    return run


def tv_decode(items: list) -> Callable[[int], object]:
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    return lambda i: decode_jpeg(read_file(str(items[i][0])), mode=ImageReadMode.RGB)


def tv_pipeline(items: list, size: int) -> Callable[[int], object]:
    from torchvision import tv_tensors
    from torchvision.io import ImageReadMode, decode_jpeg, read_file
    from torchvision.transforms import v2

    transform = v2.Compose(
        [
            v2.RandomPhotometricDistort(p=0.5),
            v2.RandomZoomOut(
                fill={tv_tensors.Image: (127, 127, 127), "others": 0}, side_range=(1.0, 4.0), p=0.5
            ),
            v2.RandomIoUCrop(),
            v2.RandomHorizontalFlip(p=0.5),
            v2.Resize((size, size)),
            v2.SanitizeBoundingBoxes(),
        ]
    )

    def run(i: int) -> object:
        path, boxes, labels = items[i]
        image = tv_tensors.Image(decode_jpeg(read_file(str(path)), mode=ImageReadMode.RGB))
        target = {
            "boxes": tv_tensors.BoundingBoxes(
                torch.from_numpy(boxes), format="XYXY", canvas_size=tuple(image.shape[-2:])
            ),
            "labels": torch.from_numpy(labels),
        }
        return transform(image, target)

    return run


def measure(fns: list[Callable[[int], object]], n: int, repeats: int) -> list[float]:
    """Median images/s of each pipeline over ``repeats`` passes of ``n`` images.

    The passes are interleaved (pipeline 1, 2, ..., then again) so that a change in machine load
    affects every pipeline alike. Each pipeline gets a short warm-up first.
    """
    for fn in fns:
        for i in range(min(5, n)):
            fn(i)
    rates: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            start = time.perf_counter()
            for i in range(n):
                fn(i)
            rates[k].append(n / (time.perf_counter() - start))
    return [statistics.median(r) for r in rates]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="images per pass")
    parser.add_argument("--repeats", type=int, default=3, help="passes (the median is reported)")
    parser.add_argument("--size", type=int, default=300, help="output side in pixels")
    parser.add_argument("--source", default="auto", choices=["auto", "raccoon", "synthetic"])
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    cv2.setNumThreads(1)
    torch.manual_seed(0)
    warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")

    import albumentations
    import torchvision

    with tempfile.TemporaryDirectory() as tmp:
        desc, items = load_items(args.source, args.images, Path(tmp))
        n = len(items)
        rows = [
            ("decode only: OpenCV (ours)", ours_decode(items)),
            ("decode only: torchvision.io.decode_jpeg", tv_decode(items)),
            ("`none` (decode + resize, evaluation)", ours_pipeline(items, args.size, "none")),
            ("`ssdlite` (decode + crop, flip, resize)", ours_pipeline(items, args.size, "ssdlite")),
            ("**`ssd` (albumentations, ours)**", ours_pipeline(items, args.size, "ssd")),
            ("**torchvision.transforms.v2 equivalent**", tv_pipeline(items, args.size)),
        ]
        rates = measure([fn for _, fn in rows], n, args.repeats)
        results = [(name, rate) for (name, _), rate in zip(rows, rates, strict=True)]

    ours = results[4][1]
    theirs = results[5][1]
    print(f"Data pipeline throughput, one CPU core, {args.size}x{args.size} output")
    print(f"images: {desc}; median of {args.repeats} interleaved passes")
    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, albumentations "
        f"{albumentations.__version__}, OpenCV {cv2.__version__}, numpy {np.__version__}; "
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}"
    )
    print()
    print("| pipeline | images/s | ms/image |")
    print("| --- | ---: | ---: |")
    for name, rate in results:
        print(f"| {name} | {rate:.0f} | {1000 / rate:.2f} |")
    print()
    print(
        f"`ssd` vs torchvision v2: {ours / theirs:.2f}x the throughput ({'faster' if ours >= theirs else 'slower'})"
    )


if __name__ == "__main__":
    main()
