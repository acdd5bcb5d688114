"""The evaluator registry: evaluator name -> factory, filled by the modules that implement them.

Each evaluator module registers its names when it is imported (``register("coco",
CocoEvaluator.from_options)``); :mod:`detector.evaluation` imports every such module, so the
registry is complete as soon as anything of the package is imported. Adding an evaluator is one
module (a subclass of :class:`~detector.evaluation.base.Evaluator` plus its ``register`` line,
imported by ``detector/evaluation/__init__.py``) and, for the commands, one YAML file.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from detector.evaluation.base import Evaluator

__all__ = ["EVALUATORS", "build_evaluator", "evaluate_results_file", "register"]

#: Evaluator name -> factory taking the common keyword options (see :func:`build_evaluator`).
EVALUATORS: dict[str, Callable[..., Evaluator]] = {}


def register(name: str, factory: Callable[..., Evaluator]) -> None:
    """Add an evaluator under ``name`` (lower case); a name can be registered once."""
    key = name.lower()
    if key in EVALUATORS and EVALUATORS[key] is not factory:
        raise ValueError(f"evaluator {name!r} is already registered")
    EVALUATORS[key] = factory


def build_evaluator(kind: str, **kwargs: Any) -> Evaluator:
    """Make an evaluator by name.

    Args:
        kind: a registered name: ``"coco"``; ``"voc"`` (VOC2010+ all-point AP unless ``metric``
            says otherwise) or ``"voc07"`` (VOC2007 11-point AP); ``"widerface"`` (WIDER FACE
            easy / medium / hard AP by the official protocol with ``gt_dir``, plain AP without).
        **kwargs: the evaluator's arguments: ``class_names`` plus ``ann_file`` /
            ``label_to_category_id`` / ``records`` / ``backend`` for COCO, ``records`` /
            ``metric`` / ``iou_threshold`` / ``use_07_plus_one`` for VOC, ``records`` /
            ``gt_dir`` / ``source`` for WIDER FACE. Arguments that are ``None`` are left out,
            and so are the other evaluators' options, so a caller can pass the same set for
            every kind.

    Returns:
        The evaluator.
    """
    factory = EVALUATORS.get(kind.lower())
    if factory is None:
        raise ValueError(f"unknown evaluator kind {kind!r}; choose {', '.join(EVALUATORS)}")
    return factory(**{k: v for k, v in kwargs.items() if v is not None})


def evaluate_results_file(
    results_json: str | Path,
    *,
    ann_file: str | Path | None = None,
    records: Sequence[Mapping[str, Any]] | None = None,
    class_names: Sequence[str] | None = None,
    kind: str = "coco",
    backend: str = "auto",
    out_dir: str | Path | None = None,
    label_to_category_id: Mapping[int, int] | None = None,
    strict: bool = False,
    **evaluator_kwargs: Any,
) -> dict[str, Any]:
    """Score a results file against a ground truth, by evaluator name.

    Builds the evaluator with :func:`build_evaluator` and calls its
    :meth:`~detector.evaluation.base.Evaluator.evaluate_results_file` (the one results-file
    path of every evaluator).

    Args:
        results_json: a COCO-format results list (``.json``) or a WIDER FACE ``.txt`` folder.
        ann_file: COCO annotation file (``kind="coco"``).
        records: dataset records (COCO from records, VOC, WIDER FACE plain AP).
        class_names: the class names (required with records; VOC category ids index it 1-based).
        kind: ``"coco"``, ``"voc"`` (VOC2010+ all-point AP unless ``metric="voc07"`` is passed),
            ``"voc07"`` (VOC2007 11-point AP) or ``"widerface"``.
        backend: COCO engine, ``"auto"``, ``"pycocotools"``, ``"faster"`` or ``"hotcoco"``.
        out_dir: when given, :func:`~detector.evaluation.report.write_report` writes
            ``metrics.json``, the per-class tables, the PR curves and ``summary.txt`` there.
        label_to_category_id: for COCO, contiguous label -> category id (see
            :class:`~detector.evaluation.coco.CocoEvaluator`).
        strict: raise on invalid numbers instead of dropping them with a counted warning.
        **evaluator_kwargs: passed to the evaluator (e.g. ``metric``, ``use_07_plus_one``,
            ``iou_threshold`` for VOC, ``gt_dir`` for WIDER FACE).

    Returns:
        The evaluator's metrics plus ``results_file`` and the ``time_*_s`` timings.
    """
    t_start = time.perf_counter()
    kind = kind.lower()
    if kind not in EVALUATORS:
        raise ValueError(f"unknown kind {kind!r}; choose {', '.join(EVALUATORS)}")
    if kind in ("voc", "voc07") and (records is None or class_names is None):
        raise ValueError("VOC evaluation needs records and class_names")
    ground_truth = {"ann_file": ann_file, "records": records, "class_names": class_names}
    evaluator = build_evaluator(
        kind,
        label_to_category_id=label_to_category_id,
        backend=backend,
        strict=strict,
        **ground_truth,
        **evaluator_kwargs,
    )
    return evaluator.evaluate_results_file(results_json, out_dir=out_dir, t_start=t_start)
