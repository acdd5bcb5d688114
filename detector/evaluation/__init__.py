"""Detection evaluation: COCO mAP (pycocotools protocol), PASCAL VOC AP, WIDER FACE AP.

Public API:

* :class:`Evaluator` -- the base class (``reset`` / ``process`` / ``evaluate``, ``state`` /
  ``load_state`` for distributed runs, ``evaluate_detections``, ``evaluate_results_file``,
  ``results``, ``report_artifacts`` ...) of :class:`CocoEvaluator`, :class:`VOCEvaluator` and
  :class:`WiderFaceEvaluator`; :func:`build_evaluator` makes one by its registered name
  (:data:`EVALUATORS`).
* :func:`evaluate_results_file` -- score a results file (COCO-format JSON, or a WIDER FACE
  ``.txt`` folder) by evaluator name; no model and no images.
* :func:`write_report`, :func:`plot_pr_curves` -- run outputs.

The evaluator modules are imported here, which fills the registry.
"""

from __future__ import annotations

from detector.evaluation.base import Evaluator
from detector.evaluation.coco import COCO_PROTOCOL, CocoEvaluator, coco_gt_from_records
from detector.evaluation.coco_engine import COCO_STAT_KEYS, resolve_backend, run_coco_bbox
from detector.evaluation.detections import (
    Detections,
    EvaluationWarning,
    ResultsFileError,
    merge_states,
)
from detector.evaluation.registry import EVALUATORS, build_evaluator, evaluate_results_file
from detector.evaluation.report import format_per_class_table, plot_pr_curves, write_report
from detector.evaluation.results import (
    detections_from_results,
    load_detections_file,
    load_results_file,
    load_wider_txt_folder,
    write_results_file,
)
from detector.evaluation.voc import VOCEvaluator, voc_ap
from detector.evaluation.widerface import WiderFaceEvaluator, WiderGroundTruthError

__all__ = [
    "COCO_PROTOCOL",
    "COCO_STAT_KEYS",
    "EVALUATORS",
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
    "load_detections_file",
    "load_results_file",
    "load_wider_txt_folder",
    "merge_states",
    "plot_pr_curves",
    "resolve_backend",
    "run_coco_bbox",
    "voc_ap",
    "write_report",
    "write_results_file",
]
