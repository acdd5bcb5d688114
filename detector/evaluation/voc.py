"""PASCAL VOC detection AP (per class at one IoU threshold, and their mean).

The matching follows the VOC devkit (``VOCevaldet.m``): the detections of a class are sorted by
descending score (stable, so ties keep their input order); each is compared with every ground
truth box of that class in its image, *difficult ones included*, and takes the one with the
highest IoU (the first on ties). If that IoU is ``>= iou_threshold``: on a difficult box the
detection is ignored (neither true nor false positive); on a box not yet taken it is a true
positive; on a box already taken it is a false positive (there is no fall-back to the second
best box). Below the threshold it is a false positive. Recall is over the non-difficult boxes.

Two AP forms:

* ``metric="voc07"``: the VOC2007 11-point AP, the mean over ``t`` in ``0, 0.1, ..., 1`` of the
  highest precision at recall ``>= t`` (``t`` as ``np.arange(0, 1.1, 0.1)``, as in the
  py-faster-rcnn / Detectron ``voc_eval`` port of the devkit).
* ``metric="voc"``: the VOC2010+ all-point AP, the area under the precision envelope
  (precision made non-increasing from the right, summed where recall changes).

Box convention (``use_07_plus_one``): the devkit counts pixels inclusively, a box
``[x1, y1, x2, y2]`` is ``x2 - x1 + 1`` wide, and so are intersections; boxes that only touch
(``x2 == x1'``) overlap by one pixel. This "+1" convention is on by default for both metrics
because every devkit release and its ports (py-faster-rcnn, Detectron, Cartucho/mAP) use it
with integer VOC coordinates. ``use_07_plus_one=False`` measures boxes as continuous
coordinates (``w = x2 - x1``) like COCO.

Classes without any non-difficult ground truth have no defined AP: they are reported as NaN
and left out of ``mAP`` (the devkit would divide by zero); their detections are counted in
``num_detections_no_gt_class``.

Reproducing Cartucho/mAP (``main.py``): ``metric="voc"``, ``use_07_plus_one=True``,
``iou_threshold=0.5``, class list = the classes of its ground-truth files; its mAP is then the
mean over the same classes (see ``tests/test_eval_voc.py``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detector.evaluation.base import Evaluator
from detector.evaluation.detections import Detections
from detector.evaluation.registry import register

__all__ = ["VOCEvaluator", "match_voc", "voc_ap", "voc_iou"]


def voc_ap(recall: np.ndarray, precision: np.ndarray, *, use_07_metric: bool) -> float:
    """AP of one precision/recall curve (points in detection order).

    Args:
        recall: ``[N]`` cumulative recall after each detection.
        precision: ``[N]`` cumulative precision after each detection.
        use_07_metric: VOC2007 11-point AP instead of the VOC2010+ area.

    Returns:
        The AP in ``[0, 1]`` (0 for an empty curve).
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            above = recall >= t
            p = float(np.max(precision[above])) if np.any(above) else 0.0
            ap += p / 11.0
        return ap
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def voc_iou(dt: np.ndarray, gt: np.ndarray, *, plus_one: bool) -> np.ndarray:
    """Element-wise IoU of paired ``xyxy`` boxes, ``-inf`` where they do not overlap.

    The operations are ordered as in the devkit (``iw * ih / ua`` with
    ``ua = area_dt + area_gt - iw * ih``), so the values are those of the reference code.
    """
    one = 1.0 if plus_one else 0.0
    iw = (np.minimum(dt[:, 2], gt[:, 2]) - np.maximum(dt[:, 0], gt[:, 0])) + one
    ih = (np.minimum(dt[:, 3], gt[:, 3]) - np.maximum(dt[:, 1], gt[:, 1])) + one
    ua = (
        ((dt[:, 2] - dt[:, 0]) + one) * ((dt[:, 3] - dt[:, 1]) + one)
        + ((gt[:, 2] - gt[:, 0]) + one) * ((gt[:, 3] - gt[:, 1]) + one)
    ) - iw * ih
    out = np.full(iw.shape, -np.inf)
    overlap = (iw > 0) & (ih > 0)
    np.divide(iw * ih, ua, out=out, where=overlap)
    return out


def match_voc(
    dets: Detections,
    gt_image: np.ndarray,
    gt_labels: np.ndarray,
    gt_boxes: np.ndarray,
    gt_difficult: np.ndarray,
    *,
    iou_threshold: float,
    plus_one: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Devkit matching of all detections at once.

    Args:
        dets: detections (``image_index``, ``labels``, ``boxes`` xyxy, ``scores``).
        gt_image, gt_labels, gt_boxes, gt_difficult: the ground-truth boxes, flat.
        iou_threshold: minimum IoU of a match.
        plus_one: the devkit's inclusive-pixel convention.

    Returns:
        ``(order, tp, fp)``: ``order`` sorts the detections by label, then descending score
        (stable); ``tp``/``fp`` are bool per detection in that order (both false: ignored, i.e.
        matched to a difficult box).
    """
    n = len(dets)
    order = np.lexsort((-dets.scores, dets.labels))
    if n == 0:
        return order, np.zeros(0, bool), np.zeros(0, bool)
    d_img = dets.image_index[order]
    d_lab = dets.labels[order]
    d_box = dets.boxes[order]
    # Group the ground truth by (image, label); each detection meets its group's boxes.
    span = int(max(d_lab.max(initial=0), gt_labels.max(initial=0))) + 1
    g_key = gt_image.astype(np.int64) * span + gt_labels
    d_key = d_img.astype(np.int64) * span + d_lab
    g_order = np.argsort(g_key, kind="stable")
    g_sorted = g_key[g_order]
    first = np.searchsorted(g_sorted, d_key, side="left")
    count = np.searchsorted(g_sorted, d_key, side="right") - first
    total = int(count.sum())
    det_of_pair = np.repeat(np.arange(n), count)
    pair_start = np.concatenate(([0], np.cumsum(count)[:-1])).astype(np.int64)
    gt_of_pair = g_order[first[det_of_pair] + (np.arange(total) - pair_start[det_of_pair])]
    iou = voc_iou(d_box[det_of_pair], gt_boxes[gt_of_pair], plus_one=plus_one)
    # Best ground truth per detection: highest IoU, first on ties (as `if ov > ovmax`).
    ovmax = np.full(n, -np.inf)
    np.maximum.at(ovmax, det_of_pair, iou)
    # A detection's pairs are contiguous and in ground-truth order: keep its first maximum.
    cand = np.flatnonzero(iou == ovmax[det_of_pair])
    cand_det, first_cand = np.unique(det_of_pair[cand], return_index=True)
    best_pair = np.full(n, 0, dtype=np.int64)
    best_pair[cand_det] = cand[first_cand]
    matched = ovmax >= iou_threshold
    jmax = np.where(matched, gt_of_pair[best_pair] if total else -1, -1)
    difficult = np.zeros(n, dtype=bool)
    difficult[matched] = gt_difficult[jmax[matched]]
    # Among detections hitting the same non-difficult box, only the first (highest score) counts.
    hit = matched & ~difficult
    tp = np.zeros(n, dtype=bool)
    hit_idx = np.flatnonzero(hit)
    _, first_hit = np.unique(jmax[hit_idx], return_index=True)
    tp[hit_idx[first_hit]] = True
    fp = ~tp & ~(matched & difficult)
    return order, tp, fp


class VOCEvaluator(Evaluator):
    """PASCAL VOC AP per class and mAP (see the module docstring for the exact rules).

    Args:
        class_names: the ``C`` class names; label ``k`` is ``class_names[k - 1]``.
        records: the dataset records (``"ignore"`` marks difficult boxes).
        metric: ``"voc07"`` (11-point) or ``"voc"`` (VOC2010+ all-point area).
        iou_threshold: minimum IoU of a true positive (``>=``).
        use_07_plus_one: the devkit's "+1" inclusive-pixel box convention (default on).
        strict: raise instead of dropping (with a counted warning) detections with NaN/inf
            values or negative sizes.
    """

    kind = "voc"
    display_name = "VOC"
    unused_options = frozenset({"ann_file", "label_to_category_id", "backend", "gt_dir", "source"})

    def __init__(
        self,
        class_names: Sequence[str],
        records: Sequence[Mapping[str, Any]],
        *,
        metric: str = "voc07",
        iou_threshold: float = 0.5,
        use_07_plus_one: bool = True,
        strict: bool = False,
    ) -> None:
        if metric not in ("voc07", "voc"):
            raise ValueError(f"metric must be 'voc07' or 'voc', got {metric!r}")
        self.records = list(records)
        self._init_evaluator([r["image_id"] for r in self.records], class_names, strict=strict)
        self.original_image_ids = self.image_ids
        self.metric = metric
        self.iou_threshold = float(iou_threshold)
        self.use_07_plus_one = bool(use_07_plus_one)
        gi, gl, gb, gd = [], [], [], []
        for pos, rec in enumerate(self.records):
            boxes = np.asarray(rec["boxes"], dtype=np.float64).reshape(-1, 4)
            labels = np.asarray(rec["labels"], dtype=np.int64).reshape(-1)
            ignore = rec.get("ignore")
            ignore = (
                np.zeros(len(labels), bool)
                if ignore is None
                else np.asarray(ignore, dtype=bool).reshape(-1)
            )
            if not (len(boxes) == len(labels) == len(ignore)):
                raise ValueError(f"record {rec['image_id']!r}: boxes, labels and ignore disagree")
            if len(labels) and (labels.min() < 1 or labels.max() > self.num_classes):
                raise ValueError(
                    f"record {rec['image_id']!r}: labels must lie in 1..{self.num_classes}"
                )
            gi.append(np.full(len(labels), pos, dtype=np.int64))
            gl.append(labels)
            gb.append(boxes)
            gd.append(ignore)
        self.gt_image = np.concatenate(gi) if gi else np.zeros(0, np.int64)
        self.gt_labels = np.concatenate(gl) if gl else np.zeros(0, np.int64)
        self.gt_boxes = np.concatenate(gb) if gb else np.zeros((0, 4))
        self.gt_difficult = np.concatenate(gd) if gd else np.zeros(0, bool)
        self.num_gt = np.bincount(
            self.gt_labels[~self.gt_difficult], minlength=self.num_classes + 1
        )[1:]
        self.num_difficult = np.bincount(
            self.gt_labels[self.gt_difficult], minlength=self.num_classes + 1
        )[1:]
        self.curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def protocol(self) -> str:
        """Human-readable name of what :meth:`evaluate` computes."""
        form = "VOC2007 11-point AP" if self.metric == "voc07" else "VOC2010+ all-point (area) AP"
        box = 'devkit "+1" pixel convention' if self.use_07_plus_one else "continuous boxes (no +1)"
        return (
            f"PASCAL VOC {form} at IoU>={self.iou_threshold:g}, {box}, difficult objects "
            "ignored, mAP over classes with ground truth"
        )

    def _score(
        self, dets: Detections, image_mask: np.ndarray, counters: dict[str, Any], source: str
    ) -> dict[str, Any]:
        """AP per class and mAP over the records of ``image_mask``.

        Keys: ``mAP``, per class ``AP/<name>``, ``num_gt/<name>`` (non-difficult),
        ``num_tp/<name>``, ``num_fp/<name>``; counters; ``protocol``.
        """
        t0 = time.perf_counter()
        mask = image_mask
        gt_keep = mask[self.gt_image]
        gt_labels, gt_difficult = self.gt_labels[gt_keep], self.gt_difficult[gt_keep]
        num_gt = np.bincount(gt_labels[~gt_difficult], minlength=self.num_classes + 1)[1:]
        num_difficult = np.bincount(gt_labels[gt_difficult], minlength=self.num_classes + 1)[1:]
        order, tp, fp = match_voc(
            dets,
            self.gt_image[gt_keep],
            gt_labels,
            self.gt_boxes[gt_keep],
            gt_difficult,
            iou_threshold=self.iou_threshold,
            plus_one=self.use_07_plus_one,
        )
        labels_sorted = dets.labels[order]
        metrics: dict[str, Any] = {
            "protocol": self.protocol,
            "backend": "detector.evaluation.voc",
            "primary_metric": "mAP",
            "mAP": float("nan"),
        }
        aps = np.full(self.num_classes, np.nan)
        self.curves = {}
        bounds = np.searchsorted(labels_sorted, np.arange(1, self.num_classes + 2))
        n_no_gt = 0
        n_tp = np.zeros(self.num_classes, dtype=np.int64)
        n_fp = np.zeros(self.num_classes, dtype=np.int64)
        for k in range(self.num_classes):
            lo, hi = bounds[k], bounds[k + 1]
            keep = tp[lo:hi] | fp[lo:hi]  # drop detections ignored on difficult boxes
            ctp = np.cumsum(tp[lo:hi][keep]).astype(np.float64)
            cfp = np.cumsum(fp[lo:hi][keep]).astype(np.float64)
            n_tp[k] = int(tp[lo:hi].sum())
            n_fp[k] = int(fp[lo:hi].sum())
            npos = int(num_gt[k])
            if npos == 0:
                n_no_gt += hi - lo
                continue
            rec = ctp / npos
            prec = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
            aps[k] = voc_ap(rec, prec, use_07_metric=self.metric == "voc07")
            self.curves[self.class_names[k]] = (rec, prec)
        valid = ~np.isnan(aps)
        if valid.any():
            metrics["mAP"] = float(np.mean(aps[valid]))
        for k, name in enumerate(self.class_names):
            metrics[f"AP/{name}"] = float(aps[k])
        for column, values in (("num_gt", num_gt), ("num_tp", n_tp), ("num_fp", n_fp)):
            for k, name in enumerate(self.class_names):
                metrics[f"{column}/{name}"] = int(values[k])
        metrics.update(
            {
                "num_images": int(mask.sum()),
                "num_classes_in_map": int(valid.sum()),
                "num_gt": int(num_gt.sum()),
                "num_gt_difficult": int(num_difficult.sum()),
                "num_detections": len(dets),
                "num_true_positives": int(tp.sum()),
                "num_false_positives": int(fp.sum()),
                "num_ignored_on_difficult": int(len(dets) - tp.sum() - fp.sum()),
                "num_detections_no_gt_class": int(n_no_gt),
                **counters,
                "time_engine_s": time.perf_counter() - t0,
            }
        )
        return metrics

    # -- outputs ---------------------------------------------------------------------------------

    def pr_curves(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per-class raw (recall, precision) after each detection, from the last evaluation."""
        return dict(self.curves)

    @property
    def pr_title(self) -> str:
        """Title of the precision/recall figure."""
        return f"VOC precision/recall at IoU {self.iou_threshold:g}"

    def image_lookup(self) -> dict[Any, int]:
        """Image id in a results file -> record position: the record id, its str, or file stem."""
        lookup: dict[Any, int] = {}
        stems: dict[str, int] = {}
        for pos, rec in enumerate(self.records):
            image_id = rec["image_id"]
            image_id = image_id.item() if hasattr(image_id, "item") else image_id
            lookup[image_id] = pos
            name = rec.get("file_name")
            if name:
                stems.setdefault(Path(str(name)).stem, pos)
        for pos, image_id in enumerate(self.original_image_ids):
            lookup.setdefault(str(image_id), pos)
        for stem, pos in stems.items():
            lookup.setdefault(stem, pos)
        return lookup

    def category_lookup(self) -> dict[Any, int]:
        """Category id in a results file (1-based class index) -> label."""
        return {k: k for k in range(1, self.num_classes + 1)}


def _build_voc(**options: Any) -> VOCEvaluator:
    """``voc``: the VOC2010+ all-point AP unless ``metric`` says otherwise."""
    options.setdefault("metric", "voc")
    return VOCEvaluator.from_options(**options)


def _build_voc07(**options: Any) -> VOCEvaluator:
    """``voc07``: the VOC2007 11-point AP."""
    return VOCEvaluator.from_options(**{**options, "metric": "voc07"})


register("voc", _build_voc)
register("voc07", _build_voc07)
