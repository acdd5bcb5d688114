"""COCO bbox mAP evaluator (pycocotools protocol) for model runs and for results files.

Ground truth comes either from the original COCO annotation file (``ann_file``) together with
``label_to_category_id`` (contiguous model labels ``1..C`` to the file's category ids), or from
dataset ``records`` (see :func:`coco_gt_from_records`). Detections are evaluated with the
category ids of the ground truth and written back with them.

The numbers are those of pycocotools' ``COCOeval`` (``iouType="bbox"``); with
``backend="pycocotools"`` they are computed by pycocotools itself, with ``backend="faster"`` by
faster-coco-eval's C++ kernel, with ``backend="hotcoco"`` by hotcoco's Rust ``COCOeval`` (see
:mod:`detector.evaluation.coco_engine`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detector import fastjson
from detector.evaluation.base import Evaluator
from detector.evaluation.coco_engine import (
    COCO_STAT_KEYS,
    IOU_THRS,
    MAX_DETS,
    REC_THRS,
    CocoEvalOutput,
    per_class_ap,
    resolve_backend,
    run_coco_bbox,
)
from detector.evaluation.detections import Detections, ResultsFileError, gc_paused
from detector.evaluation.registry import register

__all__ = ["COCO_PROTOCOL", "CocoEvaluator", "coco_gt_from_records"]

COCO_PROTOCOL = (
    "COCO bbox (pycocotools COCOeval, iouType=bbox): AP averaged over IoU 0.50:0.05:0.95 and "
    "101 recall points, areas small<32^2<=medium<96^2<=large, maxDets 1/10/100; crowd regions "
    "ignored"
)


def _is_int_id(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def coco_gt_from_records(
    records: Sequence[Mapping[str, Any]],
    class_names: Sequence[str],
    label_to_category_id: Mapping[int, int] | None = None,
) -> tuple[dict[str, Any], list[Any]]:
    """Build an in-memory COCO ground truth from dataset records.

    Each record is ``{"image_id", "file_name", "width", "height", "boxes" [M,4] pixel xyxy,
    "labels" [M] in 1..C, "ignore" [M] bool}``. Boxes become ``bbox = [x1, y1, x2 - x1, y2 - y1]``
    with ``area = w * h`` (records carry no segmentation area); ``ignore`` becomes ``iscrowd=1``,
    which pycocotools treats as "matching it neither helps nor hurts". Integer image ids are kept;
    when any id is not an int (e.g. VOC file stems) all images get ids ``1..N`` in record order.

    Args:
        records: the per-image records.
        class_names: the ``C`` class names, label ``k`` is ``class_names[k - 1]``.
        label_to_category_id: category id of every label; default: the label itself.

    Returns:
        ``(gt, original_ids)``: the COCO instances dict and, per image in ``gt["images"]``
        order, the record's own image id.
    """
    num_classes = len(class_names)
    lut = _label_lut(label_to_category_id, num_classes)
    original_ids = [r["image_id"] for r in records]
    keep_ids = all(_is_int_id(i) for i in original_ids) and len(set(original_ids)) == len(
        original_ids
    )
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    ann_id = 1
    for pos, rec in enumerate(records):
        image_id = int(rec["image_id"]) if keep_ids else pos + 1
        images.append(
            {
                "id": image_id,
                "file_name": str(rec.get("file_name", "")),
                "width": int(rec.get("width", 0)),
                "height": int(rec.get("height", 0)),
            }
        )
        boxes = np.asarray(rec["boxes"], dtype=np.float64).reshape(-1, 4)
        labels = np.asarray(rec["labels"], dtype=np.int64).reshape(-1)
        ignore = rec.get("ignore")
        ignore = (
            np.zeros(len(labels), bool) if ignore is None else np.asarray(ignore, bool).reshape(-1)
        )
        if not (len(boxes) == len(labels) == len(ignore)):
            raise ValueError(f"record {rec['image_id']!r}: boxes, labels and ignore disagree")
        if len(labels) and (labels.min() < 1 or labels.max() > num_classes):
            raise ValueError(f"record {rec['image_id']!r}: labels must lie in 1..{num_classes}")
        xywh = boxes.copy()
        xywh[:, 2:] -= xywh[:, :2]
        for box, label, crowd in zip(xywh.tolist(), labels.tolist(), ignore.tolist()):
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": int(lut[label]),
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": int(crowd),
                }
            )
            ann_id += 1
    categories = [
        {"id": int(lut[k]), "name": str(class_names[k - 1])} for k in range(1, num_classes + 1)
    ]
    return {"images": images, "annotations": annotations, "categories": categories}, original_ids


def _label_lut(label_to_category_id: Mapping[int, int] | None, num_classes: int) -> np.ndarray:
    """``lut[label] = category id`` for labels ``1..C`` (``lut[0]`` unused)."""
    lut = np.zeros(num_classes + 1, dtype=np.int64)
    if label_to_category_id is None:
        lut[1:] = np.arange(1, num_classes + 1)
        return lut
    labels = sorted(int(k) for k in label_to_category_id)
    if labels != list(range(1, num_classes + 1)):
        raise ValueError(
            f"label_to_category_id must map exactly the labels 1..{num_classes}, got keys "
            f"{labels[:5]}{'...' if len(labels) > 5 else ''}"
        )
    for label, cat in label_to_category_id.items():
        lut[int(label)] = int(cat)
    if len(set(lut[1:].tolist())) != num_classes:
        raise ValueError("label_to_category_id maps two labels to the same category id")
    return lut


class CocoEvaluator(Evaluator):
    """COCO bbox mAP with pycocotools' protocol.

    Args:
        class_names: the ``C`` object class names (no background); label ``k`` is
            ``class_names[k - 1]``. With ``ann_file`` it may be ``None``: the file's category
            names, in ascending category id order, are used.
        ann_file: a COCO instances annotation file (ground truth form (a)).
        records: dataset records (ground truth form (b), see :func:`coco_gt_from_records`).
        label_to_category_id: contiguous label -> category id. Default: with ``ann_file`` the
            file's categories in ascending id order get labels ``1..C``; with records the
            category id is the label.
        backend: ``"auto"`` (hotcoco, else faster-coco-eval, when installed), ``"pycocotools"``,
            ``"faster"`` or ``"hotcoco"``.
        strict: raise instead of dropping (with a counted warning) detections with NaN/inf
            values or negative sizes.

    ``evaluate()`` returns the 12 pycocotools numbers under ``AP, AP50, AP75, APs, APm, APl,
    AR1, AR10, AR100, ARs, ARm, ARl`` (pycocotools' -1 where a number is undefined, e.g. no
    small objects), per-class ``AP/<name>`` and ``AP50/<name>`` (NaN for classes without ground
    truth), counters, ``protocol`` and ``backend``.
    """

    kind = "coco"
    display_name = "COCO"
    unused_options = frozenset({"gt_dir", "source", "metric"})

    def __init__(
        self,
        class_names: Sequence[str] | None = None,
        *,
        ann_file: str | Path | None = None,
        records: Sequence[Mapping[str, Any]] | None = None,
        label_to_category_id: Mapping[int, int] | None = None,
        backend: str = "auto",
        strict: bool = False,
    ) -> None:
        if (ann_file is None) == (records is None):
            raise ValueError("give exactly one of ann_file and records")
        resolve_backend(backend)  # unknown names and missing packages fail here, not later
        self.backend = backend
        self.strict = strict
        if ann_file is not None:
            self.gt_source = str(ann_file)
            gt = _load_annotation_file(ann_file)
            if not isinstance(gt, dict) or "images" not in gt or "categories" not in gt:
                raise ValueError(f"{ann_file} is not a COCO instances file (images/categories)")
            gt.setdefault("annotations", [])
            file_cats = sorted(int(c["id"]) for c in gt["categories"])
            if label_to_category_id is None:
                if class_names is not None and len(class_names) != len(file_cats):
                    raise ValueError(
                        f"{len(class_names)} class names but {len(file_cats)} categories in "
                        f"{ann_file}; pass label_to_category_id to say which label is which"
                    )
                label_to_category_id = {k + 1: c for k, c in enumerate(file_cats)}
            if class_names is None:
                names = {int(c["id"]): str(c.get("name", c["id"])) for c in gt["categories"]}
                class_names = [names[label_to_category_id[k]] for k in sorted(label_to_category_id)]
            self.lut = _label_lut(label_to_category_id, len(class_names))
            missing = sorted(set(self.lut[1:].tolist()) - set(file_cats))
            if missing:
                raise ValueError(
                    f"category ids {missing} of label_to_category_id are not in {ann_file}"
                )
            original_ids = [img["id"] for img in gt["images"]]
        else:
            if class_names is None:
                raise ValueError("class_names is required with records")
            self.gt_source = "records"
            gt, original_ids = coco_gt_from_records(records, class_names, label_to_category_id)
            self.lut = _label_lut(label_to_category_id, len(class_names))
        self._init_evaluator(original_ids, class_names, strict=strict)
        self.gt = gt
        self.original_image_ids = self.image_ids
        self.coco_image_ids = np.array([int(img["id"]) for img in gt["images"]], dtype=np.int64)
        self.category_id_to_label = {int(c): k for k, c in enumerate(self.lut.tolist()) if k}
        self.category_names = {int(c["id"]): str(c.get("name", c["id"])) for c in gt["categories"]}
        for cat, label in self.category_id_to_label.items():
            self.category_names[cat] = self.class_names[label - 1]
        self.last_output: CocoEvalOutput | None = None

    @property
    def protocol(self) -> str:
        """Human-readable name of what :meth:`evaluate` computes."""
        return COCO_PROTOCOL

    # -- shared by model runs and results files --------------------------------------------------

    def _score(
        self, dets: Detections, image_mask: np.ndarray, counters: dict[str, Any], source: str
    ) -> dict[str, Any]:
        """pycocotools' metrics; the ground truth is cut to the images of ``image_mask`` (as
        ``params.imgIds`` would) when some are left out."""
        t0 = time.perf_counter()
        gt = self.gt
        if not image_mask.all():
            kept_ids = set(self.coco_image_ids[image_mask].tolist())
            gt = {
                **self.gt,
                "images": [img for img in self.gt["images"] if int(img["id"]) in kept_ids],
                "annotations": [
                    a for a in self.gt["annotations"] if int(a["image_id"]) in kept_ids
                ],
            }
        image_ids = self.coco_image_ids[dets.image_index]
        category_ids = self.lut[dets.labels]
        xywh = dets.get_xywh()
        convert_s = time.perf_counter() - t0
        out = run_coco_bbox(gt, image_ids, category_ids, xywh, dets.scores, backend=self.backend)
        self.last_output = out
        metrics: dict[str, Any] = {"protocol": COCO_PROTOCOL, "backend": out.backend}
        for key, value in zip(COCO_STAT_KEYS, out.stats.tolist()):
            metrics[key] = value
        metrics["primary_metric"] = "AP"
        ap = per_class_ap(out.precision)
        ap50 = per_class_ap(out.precision, 0.5)
        for k, cat in enumerate(out.cat_ids):
            name = self.category_names.get(cat, str(cat))
            metrics[f"AP/{name}"] = float(ap[k])
            metrics[f"AP50/{name}"] = float(ap50[k])
        anns = gt["annotations"]
        n_crowd = sum(1 for a in anns if a.get("iscrowd", 0))
        metrics.update(
            {
                "num_images": len(gt["images"]),
                "num_gt": len(anns) - n_crowd,
                "num_gt_crowd": n_crowd,
                "num_detections": len(dets),
                **counters,
                "time_convert_s": convert_s,
                "time_engine_s": out.engine_seconds,
                **{f"time_engine_{k}_s": v for k, v in out.details.items()},
            }
        )
        return metrics

    # -- outputs ---------------------------------------------------------------------------------

    def category_ids(self, labels: np.ndarray) -> np.ndarray:
        """The ground truth's category ids of labels ``1..C``."""
        return self.lut[labels]

    def pr_curves(self, iou: float = 0.5) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per-class interpolated precision at pycocotools' 101 recall points (area all, 100 dets).

        Classes without ground truth are left out. Call after :meth:`evaluate`.
        """
        out = self.last_output
        if out is None:
            raise RuntimeError("call evaluate() first")
        t = int(np.where(np.isclose(IOU_THRS, iou))[0][0])
        m = MAX_DETS.index(100)
        curves = {}
        for k, cat in enumerate(out.cat_ids):
            prec = out.precision[t, :, k, 0, m]
            if np.all(prec == -1):
                continue
            curves[self.category_names.get(cat, str(cat))] = (REC_THRS.copy(), prec.copy())
        return curves

    def summary(self) -> str:
        """The 12-line summary in pycocotools' print format (after :meth:`evaluate`)."""
        if self.last_output is None:
            raise RuntimeError("call evaluate() first")
        return self.last_output.summary

    @property
    def pr_title(self) -> str:
        """Title of the precision/recall figure."""
        return "COCO precision/recall at IoU 0.50 (101-point interpolated)"

    # -- results files ---------------------------------------------------------------------------

    def image_lookup(self) -> dict[Any, int]:
        """Image id in a results file -> position in the ground truth.

        The ground truth's own image ids; with records also their ``str`` form and the stem of
        their ``file_name`` (the VOC-layout convention), where these are unambiguous.
        """
        lookup: dict[Any, int] = {}
        for pos, image_id in enumerate(self.original_image_ids):
            lookup[image_id.item() if hasattr(image_id, "item") else image_id] = pos
        if self.gt_source == "records":
            for pos, image_id in enumerate(self.original_image_ids):
                lookup.setdefault(str(image_id), pos)
            for pos, img in enumerate(self.gt["images"]):
                if img.get("file_name"):
                    lookup.setdefault(Path(img["file_name"]).stem, pos)
        return lookup

    def category_lookup(self) -> dict[Any, int]:
        """Category id of a results file -> label ``1..C``."""
        return dict(self.category_id_to_label)


def _load_annotation_file(ann_file: str | Path) -> Any:
    """Parse a COCO annotation file; one clear error naming the file when it is not JSON."""
    try:
        with gc_paused():
            return fastjson.load_file(ann_file)
    except RecursionError:
        raise ResultsFileError(f"annotation file {ann_file} is nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError (binary files)
        raise ResultsFileError(f"annotation file {ann_file} is not valid JSON: {e}") from None


register("coco", CocoEvaluator.from_options)
