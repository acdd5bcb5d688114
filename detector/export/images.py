"""Sample images for calibration and verification, and the preprocessing every runtime uses.

Preprocessing (recorded in the sidecar): decode to RGB ``uint8``, resize the whole image to the
model input ``(W, H)`` with bilinear interpolation (no letterbox, aspect ratio not kept, as the
evaluation transform), scale to ``float32`` in ``[0, 1]``, lay out ``NCHW``. Mean/std
normalisation is inside the graph.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .errors import ExportError

if TYPE_CHECKING:
    from .config import ExportConfig

__all__ = [
    "IMAGE_EXTENSIONS",
    "generated_images",
    "image_batches",
    "list_images",
    "load_images",
    "pick_images",
    "preprocess",
    "read_rgb",
    "sample_images",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def list_images(source: str | Path, limit: int | None = None) -> list[Path]:
    """Image files of ``source``: a folder (searched recursively, sorted) or a text file listing
    one image path per line (relative paths are relative to the list file).

    Raises:
        ExportError: ``source`` does not exist or holds no images.
    """
    source = Path(source)
    if source.is_dir():
        paths = sorted(
            p for p in source.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
        )
    elif source.is_file() and source.suffix.lower() in IMAGE_EXTENSIONS:
        paths = [source]
    elif source.is_file():
        paths = []
        for line in source.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                p = Path(line)
                paths.append(p if p.is_absolute() else source.parent / p)
    else:
        raise ExportError(f"{source}: no such image folder or list file")
    if not paths:
        raise ExportError(f"{source}: no images found ({', '.join(IMAGE_EXTENSIONS)})")
    if limit is not None and limit > 0 and len(paths) > limit:
        # Spread the picks over the whole (sorted) list rather than taking the first ones.
        idx = np.linspace(0, len(paths) - 1, limit).round().astype(int)
        paths = [paths[i] for i in sorted(set(idx.tolist()))]
    return paths


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to RGB ``uint8 [H, W, 3]``."""
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ExportError(f"{path}: cannot decode image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def load_images(source: str | Path, limit: int | None = None) -> list[np.ndarray]:
    return [read_rgb(p) for p in list_images(source, limit)]


def generated_images(
    count: int, *, seed: int = 0, size: tuple[int, int] = (240, 320)
) -> list[np.ndarray]:
    """Deterministic synthetic photos-like images (smooth background, filled shapes, noise).

    Used when no image folder is given: enough structure for the network to respond like it does
    to real images, which uniform noise does not give.
    """
    rng = np.random.default_rng(seed)
    h, w = size
    images = []
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(count):
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        t = (xx / w * rng.uniform(-1, 1) + yy / h * rng.uniform(-1, 1)) * 0.5 + 0.5
        img = (c0 * t[..., None] + c1 * (1 - t[..., None])).astype(np.uint8)
        for _ in range(int(rng.integers(2, 7))):
            color = tuple(int(v) for v in rng.integers(0, 256, 3))
            x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
            x1 = int(min(w - 1, x0 + rng.integers(16, w // 2)))
            y1 = int(min(h - 1, y0 + rng.integers(16, h // 2)))
            if rng.random() < 0.5:
                cv2.rectangle(img, (x0, y0), (x1, y1), color, -1)
            else:
                center = ((x0 + x1) // 2, (y0 + y1) // 2)
                cv2.ellipse(img, center, ((x1 - x0) // 2, (y1 - y0) // 2), 0, 0, 360, color, -1)
        noise = rng.normal(0, 6, img.shape)
        images.append(np.clip(img + noise, 0, 255).astype(np.uint8))
    return images


def sample_images(source: str | Path | None, count: int, *, seed: int = 0) -> list[np.ndarray]:
    """``count`` images from ``source`` (folder or list file), or generated ones when ``source``
    is None or ``"synthetic"``."""
    if source is None or str(source) in ("", "synthetic"):
        return generated_images(count, seed=seed)
    return load_images(source, count)


def preprocess(images: Sequence[np.ndarray], image_size: tuple[int, int]) -> np.ndarray:
    """RGB ``uint8 [H, W, 3]`` images to the model input ``float32 [N, 3, H, W]`` in ``[0, 1]``."""
    h, w = image_size
    out = np.empty((len(images), 3, h, w), dtype=np.float32)
    for i, img in enumerate(images):
        resized = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
        out[i] = resized.transpose(2, 0, 1).astype(np.float32) * (1.0 / 255.0)
    return out


def image_batches(
    images: Sequence[np.ndarray], image_size: tuple[int, int], batch: int = 1
) -> Iterator[np.ndarray]:
    """Preprocessed batches of ``batch`` images (the last one may be smaller)."""
    for i in range(0, len(images), batch):
        yield preprocess(images[i : i + batch], image_size)


def pick_images(config: ExportConfig) -> tuple[list[np.ndarray] | None, list[np.ndarray], str]:
    """Calibration images (or None, without ``int8``) and verification images, with a label of
    where the verification images came from.

    Verification uses ``verify_images`` when given; otherwise calibration-folder images that were
    not used for calibration (all of them when the folder is small); otherwise generated images.
    """
    cal_paths: list[Path] = []
    rest: list[Path] = []
    calibration = None
    if config.calibration not in (None, "", "synthetic"):
        all_paths = list_images(config.calibration)
        cal_paths = list_images(config.calibration, config.num_calibration_images)
        chosen = set(cal_paths)
        rest = [p for p in all_paths if p not in chosen]
    if config.int8:
        if config.calibration == "synthetic":
            calibration = generated_images(config.num_calibration_images, seed=1)
        else:
            calibration = [read_rgb(p) for p in cal_paths]
    n = config.num_verify_images
    if config.verify_images not in (None, "", "synthetic"):
        verify = [read_rgb(p) for p in list_images(config.verify_images, n)]
        source = str(config.verify_images)
    elif cal_paths:
        pool = rest if rest else cal_paths
        idx = np.linspace(0, len(pool) - 1, min(n, len(pool))).round().astype(int)
        verify = [read_rgb(pool[i]) for i in sorted(set(idx.tolist()))]
        source = str(config.calibration) + ("" if rest else " (same images as calibration)")
    else:
        verify = generated_images(n, seed=12345)
        source = "generated images"
    return calibration, verify, source
