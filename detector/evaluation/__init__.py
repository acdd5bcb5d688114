"""Detection evaluation: COCO mAP (pycocotools protocol) and PASCAL VOC AP.

Public API:

* :class:`Evaluator` -- the protocol (``reset`` / ``process`` / ``evaluate`` plus ``state`` /
  ``load_state`` for distributed runs) implemented by :class:`CocoEvaluator` and
  :class:`VOCEvaluator`; :func:`build_evaluator` makes one by name.
* :func:`evaluate_results_file` -- evaluate a COCO-format results file.
* :func:`write_report`, :func:`plot_pr_curves` -- run outputs.
"""

from __future__ import annotations

from typing import Any

from detector.evaluation.base import (
    Detections,
    EvaluationWarning,
    Evaluator,
    ResultsFileError,
    merge_states,
)
from detector.evaluation.coco import COCO_PROTOCOL, CocoEvaluator, coco_gt_from_records
from detector.evaluation.coco_engine import COCO_STAT_KEYS, resolve_backend, run_coco_bbox
from detector.evaluation.report import format_per_class_table, plot_pr_curves, write_report
from detector.evaluation.results import (
    detections_from_results,
    evaluate_results_file,
    load_results_file,
    write_results_file,
)
from detector.evaluation.voc import VOCEvaluator, voc_ap
from detector.evaluation.widerface import WiderFaceEvaluator, WiderGroundTruthError

__all__ = [
    "COCO_PROTOCOL",
    "COCO_STAT_KEYS",
    "CocoEvaluator",
    "Detections",
    "EvaluationWarning",
    "Evaluator",
    "ResultsFileError",
    "VOCEvaluator",
    "WiderFaceEvaluator",
    "WiderGroundTruthError",
    "build_evaluator",
    "coco_gt_from_records",
    "detections_from_results",
    "evaluate_results_file",
    "format_per_class_table",
    "load_results_file",
    "merge_states",
    "plot_pr_curves",
    "resolve_backend",
    "run_coco_bbox",
    "voc_ap",
    "write_report",
    "write_results_file",
]


def build_evaluator(kind: str, **kwargs: Any) -> Evaluator:
    """Make an evaluator by name.

    Args:
        kind: ``"coco"``; ``"voc"`` (VOC2010+ all-point AP unless ``metric`` says otherwise)
            or ``"voc07"`` (VOC2007 11-point AP); ``"widerface"`` (WIDER FACE easy / medium /
            hard AP by the official protocol with ``gt_dir``, plain AP without).
        **kwargs: the evaluator's arguments: ``class_names`` plus ``ann_file`` /
            ``label_to_category_id`` / ``records`` / ``backend`` for COCO, ``records`` /
            ``metric`` / ``iou_threshold`` / ``use_07_plus_one`` for VOC, ``records`` /
            ``gt_dir`` / ``source`` for WIDER FACE. Arguments that are
            ``None`` are left out, so a caller can pass the same set for every kind.

    Returns:
        The evaluator.
    """
    kind = kind.lower()
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if kind == "coco":
        class_names = kwargs.pop("class_names", None)
        return CocoEvaluator(class_names, **kwargs)
    if kind in ("voc", "voc07"):
        if kind == "voc07":
            kwargs["metric"] = "voc07"
        kwargs.setdefault("metric", "voc")
        for key in ("ann_file", "label_to_category_id", "backend"):
            kwargs.pop(key, None)
        class_names = kwargs.pop("class_names")
        records = kwargs.pop("records")
        return VOCEvaluator(class_names, records, **kwargs)
    if kind == "widerface":
        for key in ("ann_file", "label_to_category_id", "backend", "metric"):
            kwargs.pop(key, None)
        return WiderFaceEvaluator(kwargs.pop("class_names", ("face",)), **kwargs)
    raise ValueError(f"unknown evaluator kind {kind!r}; choose coco, voc, voc07 or widerface")
