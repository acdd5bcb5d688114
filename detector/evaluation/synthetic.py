"""Synthetic COCO ground truth and detections for tests and benchmarks.

The generated data exercises every branch of the COCO protocol: crowd annotations, images without
annotations, categories without detections, categories without ground truth, boxes in all three
area ranges, duplicate and mislabelled detections and score ties.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["make_synthetic_coco"]


def make_synthetic_coco(
    num_images: int = 50,
    dets_per_image: int = 20,
    *,
    num_categories: int = 8,
    max_gts_per_image: int = 12,
    empty_image_fraction: float = 0.1,
    crowd_fraction: float = 0.05,
    seed: int = 0,
    first_image_id: int = 1,
    category_id_gap: int = 2,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Build a COCO ground-truth dict and a COCO results list.

    Category ids are non-contiguous (``1, 1 + gap, 1 + 2 * gap, ...``) so that code mixing up
    contiguous labels and category ids fails. The last category never receives a detection and the
    second to last has no ground truth at all (but does receive detections).

    Args:
        num_images: number of images.
        dets_per_image: detections per image (exactly this many for every image).
        num_categories: number of categories (at least 3).
        max_gts_per_image: ground-truth boxes per image are drawn from ``0..max_gts_per_image``.
        empty_image_fraction: fraction of images that get no annotation at all.
        crowd_fraction: probability that an annotation is a crowd region.
        seed: random seed; the output is a deterministic function of all arguments.
        first_image_id: id of the first image (ids are consecutive from there).
        category_id_gap: step between consecutive category ids.

    Returns:
        ``(gt, results)``: the ground truth as a COCO instances dict (``images``, ``annotations``,
        ``categories``) and the detections as a list of ``{"image_id", "category_id", "bbox",
        "score"}`` dicts with ``bbox`` in ``[x, y, w, h]``.
    """
    if num_categories < 3:
        raise ValueError("num_categories must be at least 3")
    rng = np.random.default_rng(seed)
    cat_ids = [1 + category_id_gap * k for k in range(num_categories)]
    no_det_cat = cat_ids[-1]
    no_gt_cat = cat_ids[-2]
    gt_cats = np.array([c for c in cat_ids if c != no_gt_cat])
    det_cats = np.array([c for c in cat_ids if c != no_det_cat])

    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    ann_id = 1
    for i in range(num_images):
        image_id = first_image_id + i
        width = int(rng.integers(320, 1025))
        height = int(rng.integers(240, 769))
        images.append(
            {"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": width, "height": height}
        )
        n_gt = (
            0
            if rng.random() < empty_image_fraction
            else int(rng.integers(0, max_gts_per_image + 1))
        )
        gt_boxes = _random_boxes(rng, n_gt, width, height)
        gt_labels = rng.choice(gt_cats, size=n_gt)
        for box, cat in zip(gt_boxes, gt_labels):
            x, y, w, h = (round(float(v), 2) for v in box)
            crowd = int(rng.random() < crowd_fraction)
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": int(cat),
                    "bbox": [x, y, w, h],
                    "area": round(w * h * float(rng.uniform(0.6, 1.0)), 2),
                    "iscrowd": crowd,
                    "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
                }
            )
            ann_id += 1

        # Detections: jittered copies of the ground truth (sometimes relabelled), then clutter.
        n_tp = min(n_gt * 2, dets_per_image)
        dets = np.empty((dets_per_image, 4))
        labels = rng.choice(det_cats, size=dets_per_image)
        if n_tp:
            src = rng.integers(0, n_gt, size=n_tp)
            jitter = rng.normal(0.0, 0.08, size=(n_tp, 4)) * np.repeat(gt_boxes[src, 2:], 2, axis=1)
            dets[:n_tp] = gt_boxes[src] + jitter
            dets[:n_tp, 2:] = np.maximum(dets[:n_tp, 2:], 1.0)
            keep_label = rng.random(n_tp) < 0.85
            labels[:n_tp] = np.where(
                keep_label & (gt_labels[src] != no_det_cat), gt_labels[src], labels[:n_tp]
            )
        dets[n_tp:] = _random_boxes(rng, dets_per_image - n_tp, width, height)
        scores = rng.random(dets_per_image)
        scores[:n_tp] = np.minimum(scores[:n_tp] + 0.3, 1.0)
        scores = np.round(scores, 3)  # three decimals: plenty of exact ties
        for box, cat, score in zip(dets, labels, scores):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(cat),
                    "bbox": [round(float(v), 2) for v in box],
                    "score": float(score),
                }
            )

    categories = [{"id": c, "name": f"class_{c}", "supercategory": "thing"} for c in cat_ids]
    gt = {
        "info": {"description": "synthetic"},
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    return gt, results


def _random_boxes(rng: np.random.Generator, n: int, width: int, height: int) -> np.ndarray:
    """``n`` random xywh boxes inside a ``width x height`` image covering all COCO area ranges."""
    side = np.exp(rng.uniform(np.log(4.0), np.log(0.9 * min(width, height)), size=(n, 1)))
    aspect = np.exp(rng.uniform(-0.7, 0.7, size=(n, 1)))
    wh = np.concatenate([side * aspect, side / aspect], axis=1)
    wh = np.minimum(wh, [width - 1, height - 1])
    xy = rng.uniform(0.0, 1.0, size=(n, 2)) * ([width, height] - wh)
    return np.concatenate([xy, wh], axis=1)
