"""A synthetic shapes detection dataset written to disk as COCO JSON and VOC XML.

Every image has a textured, noisy background with low-saturation clutter and 1-6 objects of a few
classes that differ in both shape and colour. Object sizes run from about 3% of the image side to
about 60% (most are medium), objects may be cut by the image border and may partly hide each
other. Boxes are the visible extent of each object's drawn pixels after the border cut (an object
partly hidden by another keeps its full box; placements that would hide more than
``max_occlusion`` of an object are rejected, so no annotated object is mostly hidden).

The output is a deterministic function of the parameters: image ``i`` of a split is drawn from its
own generator seeded with ``(seed, split, i)``. A finished dataset carries ``meta.json`` with a
hash of the parameters; asking again for the same parameters reuses it. Generation happens in a
temporary folder renamed into place at the end, so an interrupted run never looks complete.

Layout::

    root/meta.json
    root/{train,val}/annotations.json      COCO instances (category ids 1..C)
    root/{train,val}/images/000001.jpg
    root/{train,val}/xml/000001.xml        VOC XML (same boxes)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from detector.data.base import DatasetError, DetectionDataset
from detector.data.coco import write_coco_json
from detector.data.registry import DatasetConfig, DatasetKind, register_dataset
from detector.data.voc import write_voc_xml

__all__ = [
    "GENERATOR_VERSION",
    "SYNTHETIC_CLASSES",
    "SyntheticConfig",
    "generate_synthetic",
    "render_image",
]

#: Bumped whenever the drawing changes, so cached datasets are regenerated.
GENERATOR_VERSION = 2

#: Class names and their base colours (RGB): every class differs in shape and hue.
SYNTHETIC_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
_BASE_COLOURS = {
    "circle": (220, 45, 40),  # red
    "square": (40, 170, 60),  # green
    "triangle": (45, 90, 225),  # blue
    "star": (240, 200, 30),  # yellow
    "cross": (190, 55, 205),  # magenta
}
_SPLIT_CODES = {"train": 0, "val": 1}


@dataclass(frozen=True)
class SyntheticConfig:
    """Generator parameters (all of them enter the cache hash).

    Attributes:
        classes: class names, a subset of :data:`SYNTHETIC_CLASSES` (label order).
        image_size: inclusive range of image width and of height (drawn independently, so aspect
            ratios run from ``lo/hi`` to ``hi/lo``).
        objects_per_image: inclusive range of the number of objects placed per image (fewer when
            placement fails).
        size_range: smallest and largest object size as a fraction of ``sqrt(W * H)``.
        medium_min: lower end of the medium sizes (same units).
        small_fraction: share of objects drawn uniformly in the small band ``size_range[0]`` to
            ``medium_min``; the rest are log-uniform from ``medium_min`` to ``size_range[1]``.
        truncate_prob: probability that an object may cross the image border.
        min_visible_in_image: an object cut by the border keeps at least this share of its pixels.
        max_occlusion: the largest share of an earlier object a later one may cover.
        max_box_iou: the largest IoU allowed between two object boxes.
        clutter: inclusive range of background clutter items (lines, blobs) per image.
        noise_sigma: range of the Gaussian pixel noise standard deviation.
        jpeg_quality: range of the JPEG quality.
    """

    classes: tuple[str, ...] = SYNTHETIC_CLASSES
    image_size: tuple[int, int] = (200, 400)
    objects_per_image: tuple[int, int] = (1, 5)
    size_range: tuple[float, float] = (0.03, 0.6)
    medium_min: float = 0.12
    small_fraction: float = 0.05
    truncate_prob: float = 0.2
    min_visible_in_image: float = 0.5
    max_occlusion: float = 0.3
    max_box_iou: float = 0.4
    clutter: tuple[int, int] = (1, 4)
    noise_sigma: tuple[float, float] = (2.0, 6.0)
    jpeg_quality: tuple[int, int] = (75, 95)

    def __post_init__(self) -> None:
        unknown = [c for c in self.classes if c not in _BASE_COLOURS]
        if unknown or not self.classes:
            raise ValueError(
                f"synthetic classes must be a non-empty subset of {SYNTHETIC_CLASSES}, got {unknown}"
            )
        if not 0 < self.size_range[0] < self.size_range[1] <= 1:
            raise ValueError(f"size_range must satisfy 0 < lo < hi <= 1, got {self.size_range}")
        if not 8 <= self.image_size[0] <= self.image_size[1]:
            raise ValueError(f"image_size must satisfy 8 <= lo <= hi, got {self.image_size}")
        if not 0 <= self.objects_per_image[0] <= self.objects_per_image[1]:
            raise ValueError(f"bad objects_per_image {self.objects_per_image}")


# --------------------------------------------------------------------------------------------
# drawing


def _shape_polygons(name: str, size: float, aspect: float, angle: float) -> list[np.ndarray]:
    """Polygons (float ``[K, 2]``, centred on the origin) of a shape of overall size ``size``."""
    r = size / 2.0
    if name == "circle":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        pts = [np.stack([r * aspect * np.cos(t), r / aspect * np.sin(t)], 1)]
    elif name == "square":
        a = r / math.sqrt(aspect)
        b = r * math.sqrt(aspect)
        pts = [np.array([[-b, -a], [b, -a], [b, a], [-b, a]]) * 0.8]
    elif name == "triangle":
        t = np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        pts = [np.stack([r * np.cos(t), r * np.sin(t)], 1) * [aspect, 1.0]]
    elif name == "star":
        t = -np.pi / 2 + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, r, r * 0.42)
        pts = [np.stack([rad * np.cos(t), rad * np.sin(t)], 1)]
    elif name == "cross":
        w = r * 0.34
        pts = [
            np.array([[-r, -w], [r, -w], [r, w], [-r, w]]),
            np.array([[-w, -r], [w, -r], [w, r], [-w, r]]),
        ]
    else:  # pragma: no cover - guarded by SyntheticConfig
        raise ValueError(name)
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return [p @ rot.T for p in pts]


def _render_mask(polys: list[np.ndarray]) -> np.ndarray:
    """Anti-aliased ``uint8`` mask of the polygons, tightly framed with a one-pixel margin."""
    allpts = np.concatenate(polys)
    x0, y0 = np.floor(allpts.min(0)).astype(int) - 1
    x1, y1 = np.ceil(allpts.max(0)).astype(int) + 2
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    shift = 4  # sub-pixel precision for cv2 drawing
    scaled = [np.round((p - [x0, y0]) * (1 << shift)).astype(np.int32) for p in polys]
    for poly in scaled:  # one call per polygon: overlapping parts must stay filled
        cv2.fillPoly(mask, [poly], 255, lineType=cv2.LINE_AA, shift=shift)
    return mask


def _background(rng: np.random.Generator, h: int, w: int, clutter: tuple[int, int]) -> np.ndarray:
    """Low-saturation textured background with clutter, float32 ``[H, W, 3]`` in 0..255."""
    base = rng.uniform(60, 200)
    tint = rng.uniform(-15, 15, size=3)  # low chroma: the objects are the colourful things
    gh, gw = rng.integers(2, 6, size=2)
    field_lo = rng.uniform(-45, 45, size=(gh, gw, 1)) + rng.uniform(-8, 8, size=(gh, gw, 3))
    img = cv2.resize(field_lo.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    img += np.float32(base) + tint.astype(np.float32)
    kind = rng.integers(0, 3)
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    if kind == 0:  # stripes
        theta = rng.uniform(0, np.pi)
        period = rng.uniform(6, 40)
        wave = np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * (2 * np.pi / period))
        img += (rng.uniform(6, 22) * wave)[..., None]
    elif kind == 1:  # blotchy noise
        n = rng.uniform(-1, 1, size=(int(rng.integers(8, 32)), int(rng.integers(8, 32)))).astype(
            np.float32
        )
        img += (rng.uniform(10, 30) * cv2.resize(n, (w, h), interpolation=cv2.INTER_LINEAR))[
            ..., None
        ]
    else:  # checker / tiles
        cell = rng.uniform(8, 40)
        checker = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2) * 2 - 1
        img += (rng.uniform(5, 18) * checker)[..., None]
    for _ in range(int(rng.integers(clutter[0], clutter[1] + 1))):
        grey = float(rng.uniform(30, 225))
        colour = tuple(float(np.clip(grey + rng.uniform(-20, 20), 0, 255)) for _ in range(3))
        if rng.random() < 0.5:
            p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.line(img, p1, p2, colour, int(rng.integers(1, 4)), cv2.LINE_AA)
        else:
            k = int(rng.integers(3, 8))
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            rad = rng.uniform(0.03, 0.15) * math.sqrt(w * h)
            ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            rr = rad * rng.uniform(0.4, 1.0, k)
            pts = np.stack([cx + rr * np.cos(ang), cy + rr * np.sin(ang)], 1).astype(np.int32)
            cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)
    return img


def _object_colour(rng: np.random.Generator, name: str) -> np.ndarray:
    base = np.asarray(_BASE_COLOURS[name], np.float32)
    return np.clip(base * rng.uniform(0.75, 1.1) + rng.uniform(-18, 18, size=3), 0, 255).astype(
        np.float32
    )


def _sample_size(rng: np.random.Generator, cfg: SyntheticConfig, ref: float) -> float:
    lo, hi = cfg.size_range
    mid = min(max(cfg.medium_min, lo), hi)
    if rng.random() < cfg.small_fraction:
        frac = rng.uniform(lo, mid)
    else:
        frac = math.exp(rng.uniform(math.log(mid), math.log(hi)))
    return frac * ref


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    if len(boxes) == 0:
        return np.zeros(0)
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / (area + areas - inter)


@dataclass
class _Placed:
    label: int
    box: np.ndarray  # visible extent after the border cut (pixel edges)
    area: int  # pixels inside the image
    truncated: bool


def render_image(
    rng: np.random.Generator, cfg: SyntheticConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw one image.

    Args:
        rng: the image's random generator.
        cfg: generator parameters.

    Returns:
        ``(image uint8 [H, W, 3] RGB, boxes float32 [N, 4] pixel xyxy, labels int64 [N] in
        1..C, truncated bool [N])``.
    """
    # independent streams: the background, blur and noise do not depend on the objects drawn
    bg_rng, post_rng, rng = rng.spawn(3)
    lo, hi = cfg.image_size
    w, h = int(bg_rng.integers(lo, hi + 1)), int(bg_rng.integers(lo, hi + 1))
    img = _background(bg_rng, h, w, cfg.clutter)
    owner = np.full((h, w), -1, np.int16)
    ref = math.sqrt(w * h)
    placed: list[_Placed] = []
    n_obj = int(rng.integers(cfg.objects_per_image[0], cfg.objects_per_image[1] + 1))
    for _ in range(n_obj):
        label = int(rng.integers(1, len(cfg.classes) + 1))
        name = cfg.classes[label - 1]
        colour = _object_colour(rng, name)
        for _attempt in range(25):
            size = _sample_size(rng, cfg, ref)
            aspect = rng.uniform(0.8, 1.25) if name != "square" else rng.uniform(0.7, 1.45)
            mask = _render_mask(_shape_polygons(name, size, aspect, rng.uniform(0, 2 * np.pi)))
            mh, mw = mask.shape
            truncate = rng.random() < cfg.truncate_prob
            if truncate:
                x = int(rng.integers(-mw // 2, w - mw // 2 + 1))
                y = int(rng.integers(-mh // 2, h - mh // 2 + 1))
            else:
                if mw > w or mh > h:
                    continue
                x = int(rng.integers(0, w - mw + 1))
                y = int(rng.integers(0, h - mh + 1))
            # part of the mask inside the image
            ix0, iy0 = max(x, 0), max(y, 0)
            ix1, iy1 = min(x + mw, w), min(y + mh, h)
            if ix1 - ix0 < 2 or iy1 - iy0 < 2:
                continue
            sub = mask[iy0 - y : iy1 - y, ix0 - x : ix1 - x]
            solid = sub > 127
            total = int((mask > 127).sum())
            inside = int(solid.sum())
            if total == 0 or inside < max(cfg.min_visible_in_image * total, 4):
                continue
            rows = np.flatnonzero(solid.any(1))
            cols = np.flatnonzero(solid.any(0))
            box = np.array(
                [ix0 + cols[0], iy0 + rows[0], ix0 + cols[-1] + 1, iy0 + rows[-1] + 1], np.float32
            )
            if placed and _iou(box, np.stack([p.box for p in placed])).max() > cfg.max_box_iou:
                continue
            # occlusion of earlier objects
            region = owner[iy0:iy1, ix0:ix1]
            covered = region[solid]
            covered = covered[covered >= 0]
            if covered.size:
                lost = np.bincount(covered, minlength=len(placed))
                visible = np.array(
                    [np.count_nonzero(owner == j) for j in range(len(placed))], np.float64
                )
                areas = np.array([p.area for p in placed], np.float64)
                if np.any((visible - lost) < (1 - cfg.max_occlusion) * areas):
                    continue
            # draw: shaded flat colour blended with the anti-aliased mask
            alpha = (sub.astype(np.float32) / 255.0)[..., None]
            sh, sw = sub.shape
            gy = np.linspace(-1, 1, sh, dtype=np.float32)[:, None, None]
            gx = np.linspace(-1, 1, sw, dtype=np.float32)[None, :, None]
            shade = 1.0 + rng.uniform(-0.15, 0.15) * gx + rng.uniform(-0.15, 0.15) * gy
            patch = img[iy0:iy1, ix0:ix1]
            patch *= 1.0 - alpha
            patch += alpha * (colour * shade)
            region[solid] = len(placed)
            placed.append(_Placed(label, box, inside, inside < total))
            break
    if post_rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (3, 3), 0)
    # Gaussian pixel noise from OpenCV's per-thread generator, seeded from this image's generator
    # (several times faster than numpy's for this size); cv2.add saturates into uint8.
    noise = np.empty((h, w, 3), np.float32)
    cv2.setRNGSeed(int(post_rng.integers(0, 2**31 - 1)))
    cv2.randn(noise, 0.0, float(post_rng.uniform(*cfg.noise_sigma)))
    image = cv2.add(img, noise, dtype=cv2.CV_8U)
    boxes = (
        np.stack([p.box for p in placed]).astype(np.float32)
        if placed
        else np.zeros((0, 4), np.float32)
    )
    labels = np.array([p.label for p in placed], np.int64)
    truncated = np.array([p.truncated for p in placed], bool)
    return image, boxes, labels, truncated


# --------------------------------------------------------------------------------------------
# writing and caching


def _params_hash(params: dict[str, Any]) -> str:
    blob = json.dumps(params, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _write_split(
    out: Path, split: str, num: int, seed: int, cfg: SyntheticConfig
) -> dict[str, Any]:
    img_dir, xml_dir = out / split / "images", out / split / "xml"
    img_dir.mkdir(parents=True)
    xml_dir.mkdir(parents=True)
    images, annotations = [], []
    ann_id = 0
    for i in range(num):
        rng = np.random.default_rng([seed, _SPLIT_CODES[split], i])
        image, boxes, labels, truncated = render_image(rng, cfg)
        h, w = image.shape[:2]
        file_name = f"{i + 1:06d}.jpg"
        quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
        ok, buf = cv2.imencode(
            ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
        )
        if not ok:  # pragma: no cover
            raise RuntimeError(f"JPEG encoding failed for {file_name}")
        buf.tofile(img_dir / file_name)
        images.append({"id": i + 1, "file_name": file_name, "width": w, "height": h})
        for box, label in zip(boxes.tolist(), labels.tolist(), strict=True):
            ann_id += 1
            x1, y1, x2, y2 = box
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": i + 1,
                    "category_id": int(label),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
        write_voc_xml(
            xml_dir / f"{i + 1:06d}.xml",
            file_name,
            w,
            h,
            boxes,
            [cfg.classes[k - 1] for k in labels],
            truncated=truncated.tolist(),
        )
    coco = {
        "info": {
            "description": f"detector synthetic shapes ({split})",
            "version": str(GENERATOR_VERSION),
        },
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": k + 1, "name": name, "supercategory": "shape"}
            for k, name in enumerate(cfg.classes)
        ],
    }
    write_coco_json(out / split / "annotations.json", coco)
    return {"images": num, "boxes": ann_id}


def _describe(root: Path, meta: dict[str, Any], reused: bool, seconds: float) -> dict[str, Any]:
    splits = {
        split: {
            "ann_file": root / split / "annotations.json",
            "image_dir": root / split / "images",
            "xml_dir": root / split / "xml",
            **meta["counts"][split],
        }
        for split in ("train", "val")
    }
    return {
        "root": root,
        "classes": list(meta["params"]["config"]["classes"]),
        "hash": meta["hash"],
        "splits": splits,
        "reused": reused,
        "seconds": seconds,
    }


def _read_meta(root: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((root / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or "hash" not in meta:
        return None
    if not all((root / s / "annotations.json").is_file() for s in ("train", "val")):
        return None
    return meta


def generate_synthetic(
    root: str | Path,
    *,
    num_train: int = 2000,
    num_val: int = 200,
    seed: int = 0,
    config: SyntheticConfig | None = None,
    force: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """Write (or reuse) the synthetic dataset under ``root``.

    Args:
        root: output folder. If it holds a complete dataset with the same parameters it is reused
            as is; if it holds a synthetic dataset with other parameters it is replaced.
        num_train: number of training images.
        num_val: number of validation images.
        seed: seed; the data is a deterministic function of all parameters.
        config: generator parameters (default :class:`SyntheticConfig`).
        force: regenerate even when a matching dataset exists.
        **overrides: fields of :class:`SyntheticConfig` to change (e.g. ``objects_per_image=(1,
            3)``).

    Returns:
        ``{"root", "classes", "hash", "reused", "seconds", "splits": {split: {"ann_file",
        "image_dir", "xml_dir", "images", "boxes"}}}``.

    Raises:
        FileExistsError: ``root`` exists, is not empty and is not a synthetic dataset (never
            overwritten).
    """
    root = Path(root)
    cfg = config if config is not None else SyntheticConfig()
    if overrides:
        cfg = SyntheticConfig(
            **{
                **asdict(cfg),
                **{k: (tuple(v) if isinstance(v, list) else v) for k, v in overrides.items()},
            }
        )
    if num_train < 0 or num_val < 0:
        raise ValueError("num_train and num_val must be >= 0")
    params = {
        "version": GENERATOR_VERSION,
        "num_train": int(num_train),
        "num_val": int(num_val),
        "seed": int(seed),
        "config": json.loads(json.dumps(asdict(cfg))),
    }
    digest = _params_hash(params)
    start = time.perf_counter()
    existing = _read_meta(root) if root.is_dir() else None
    if existing is not None and existing["hash"] == digest and not force:
        return _describe(root, existing, reused=True, seconds=time.perf_counter() - start)
    foreign = existing is None and not (root / "meta.json").is_file()
    if root.exists() and foreign and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(
            f"{root} exists and is not a synthetic dataset; refusing to overwrite it"
        )

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        counts = {
            "train": _write_split(tmp, "train", num_train, seed, cfg),
            "val": _write_split(tmp, "val", num_val, seed, cfg),
        }
        meta = {"hash": digest, "params": params, "counts": counts}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        if root.exists():
            trash = root.parent / f".{root.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.replace(root, trash)
            os.replace(tmp, root)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            try:
                os.replace(tmp, root)
            except OSError:
                # another process finished first: use its dataset if it matches
                other = _read_meta(root)
                if other is None or other["hash"] != digest:
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
                return _describe(root, other, reused=True, seconds=time.perf_counter() - start)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return _describe(root, meta, reused=False, seconds=time.perf_counter() - start)


def split_paths(root: str | Path, split: str) -> tuple[Path, Path]:
    """``(annotations.json, images/)`` of one split of a generated dataset."""
    if split not in _SPLIT_CODES:
        raise ValueError(f"synthetic split must be 'train' or 'val', got {split!r}")
    return Path(root) / split / "annotations.json", Path(root) / split / "images"


# ------------------------------------------------------------------------- registry entry
@dataclass
class SyntheticDatasetConfig(DatasetConfig):
    """``dataset=synthetic``: the built-in shapes dataset, generated into ``root`` on first use
    (and reused while its parameters are the same).

    Attributes:
        num_train, num_val: images per split.
        seed: generator seed.
    """

    kind: str = "synthetic"
    root: str = "data_cache/synthetic"
    num_train: int = 2000
    num_val: int = 200
    seed: int = 0
    eval: str = "coco"


def read_synthetic(
    split: str,
    *,
    root: str | Path,
    num_train: int | None = None,
    num_val: int | None = None,
    seed: int | None = None,
    generator: Mapping[str, Any] | None = None,
    reader: str = "coco",
    **options: Any,
) -> DetectionDataset:
    """``root``, ``num_train``, ``num_val``, ``seed``, ``generator`` (a dict of
    :class:`SyntheticConfig` overrides): generates (or reuses) the data and reads the split's
    COCO JSON (``reader="voc"`` reads the XML files instead). With only ``root``, an existing
    dataset there is read as is (else the defaults are generated)."""
    from detector.data.coco import CocoDetection
    from detector.data.folder import FolderDetection

    root = Path(root)
    params = (num_train, num_val, seed, generator)
    if any(v is not None for v in params) or not (root / "meta.json").is_file():
        info = generate_synthetic(
            root,
            num_train=2000 if num_train is None else num_train,
            num_val=200 if num_val is None else num_val,
            seed=0 if seed is None else seed,
            **dict(generator or {}),
        )
        root, classes = info["root"], info["classes"]
    else:  # only the folder given: read what is there, whatever its parameters
        meta = json.loads((root / "meta.json").read_text())
        classes = list(meta["params"]["config"]["classes"])
    ann_file, image_dir = split_paths(root, split)
    if reader == "coco":
        return CocoDetection(ann_file, image_dir, **options)
    if reader == "voc":
        return FolderDetection(
            root / split,
            "all",
            image_dir=image_dir,
            ann_dir=root / split / "xml",
            classes=classes,
            **options,
        )
    raise DatasetError(f"synthetic reader must be 'coco' or 'voc', got {reader!r}")


def _synthetic_options(config: SyntheticDatasetConfig, split: str) -> tuple[str, dict[str, Any]]:
    if config.classes is not None:
        raise DatasetError("dataset.classes is not supported by dataset.kind=synthetic")
    return split, {
        "root": config.root,
        "num_train": config.num_train,
        "num_val": config.num_val,
        "seed": config.seed,
    }


def _generate(config: SyntheticDatasetConfig) -> None:
    if not config.root:
        raise ValueError("dataset.root must name the folder for the synthetic dataset")
    generate_synthetic(
        Path(config.root), num_train=config.num_train, num_val=config.num_val, seed=config.seed
    )


register_dataset(
    DatasetKind(
        "synthetic", SyntheticDatasetConfig, read_synthetic, _synthetic_options, prepare=_generate
    )
)
