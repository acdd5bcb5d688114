"""Reading, checking and evaluating COCO-format results files.

A results file is the standard COCO results list::

    [{"image_id": 42, "category_id": 18, "bbox": [x, y, w, h], "score": 0.93}, ...]

For VOC-layout datasets the same format is used with ``image_id`` = the image file stem (or the
record's image id) and ``category_id`` = the 1-based index of the class in the dataset's class
list.

Nothing is dropped silently:

* an empty or unparsable file, a file that is not a list, entries lacking a key or holding
  non-numeric values, image ids or category ids absent from the ground truth: a
  :class:`ResultsFileError` that names the first offending entry and how many there are;
* ``[]`` (no detections at all): evaluated (every AP is 0) with an :class:`EvaluationWarning`;
* boxes with negative width/height, NaN/inf coordinates or scores: dropped with an
  :class:`EvaluationWarning` and counted in ``metrics["num_invalid_*"]``, or an error with
  ``strict=True``.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detector import fastjson
from detector.evaluation.base import Detections, EvaluationWarning, ResultsFileError, gc_paused

__all__ = [
    "detections_from_results",
    "evaluate_results_file",
    "load_results_file",
    "write_results_file",
]

_KEYS = ("image_id", "category_id", "bbox", "score")


def load_results_file(path: str | Path) -> list[Any]:
    """Parse a results file, with clear errors for empty, malformed or non-list content."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as e:
        raise ResultsFileError(f"cannot read results file {path}: {e}") from e
    if not text.strip():
        raise ResultsFileError(
            f"results file {path} is empty ({len(text)} bytes); a run without detections is "
            "written as []"
        )
    try:
        with gc_paused():
            data = fastjson.loads(text)
    except json.JSONDecodeError as e:
        raise ResultsFileError(f"results file {path} is not valid JSON: {e}") from e
    if not isinstance(data, list):
        raise ResultsFileError(
            f"results file {path} must hold a JSON list of detections, got {type(data).__name__}"
        )
    return data


def write_results_file(results: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write a COCO results list (compact JSON, full float precision)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(list(results), f, separators=(",", ":"))
    return path


def _first_bad(entries: Sequence[Any], check) -> tuple[int, Any]:
    for i, entry in enumerate(entries):
        if not check(entry):
            return i, entry
    return -1, None  # pragma: no cover - only called when something is bad


def _numeric_array(
    values: list[Any], what: str, source: str, shape_tail: tuple[int, ...] = ()
) -> np.ndarray:
    """``np.array(values)`` that must come out as plain int/float numbers of the given shape."""
    try:
        arr = np.array(values)
    except ValueError:  # ragged nesting
        arr = None
    ok = arr is not None and arr.dtype.kind in "iuf" and arr.shape == (len(values), *shape_tail)
    if ok:
        return arr

    def good(v: Any) -> bool:
        if shape_tail:
            return (
                isinstance(v, (list, tuple))
                and len(v) == shape_tail[0]
                and all(_is_number(x) for x in v)
            )
        return _is_number(v)

    i, bad = _first_bad(values, good)
    expected = f"a list of {shape_tail[0]} numbers" if shape_tail else "a number"
    raise ResultsFileError(f"{source}: entry {i} has {what}={bad!r}; expected {expected}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _map_ids(values: list[Any], lookup: Mapping[Any, int]) -> np.ndarray:
    """Positions of ``values`` in ``lookup`` (-1 where unknown); vectorised for int ids."""
    n = len(values)
    int_keys = [k for k in lookup if isinstance(k, int) and not isinstance(k, bool)]
    if n and len(int_keys) == len(lookup):
        arr = np.array(values)
        if arr.dtype.kind in "iu" and arr.shape == (n,):
            keys = np.array(sorted(int_keys), dtype=np.int64)
            pos = np.array([lookup[k] for k in keys.tolist()], dtype=np.int64)
            idx = np.searchsorted(keys, arr)
            idx_c = np.minimum(idx, len(keys) - 1)
            found = (idx < len(keys)) & (keys[idx_c] == arr)
            return np.where(found, pos[idx_c], -1)
    return np.fromiter(
        (lookup.get(v, -1) if isinstance(v, (int, str)) else -1 for v in values), np.int64, n
    )


def detections_from_results(
    entries: Sequence[Any],
    *,
    image_lookup: Mapping[Any, int],
    category_lookup: Mapping[Any, int],
    source: str = "results",
) -> Detections:
    """Check a parsed COCO results list and convert it to :class:`Detections` (file order kept).

    Args:
        entries: the parsed results list.
        image_lookup: image id as written in the file -> position in the ground truth.
        category_lookup: category id as written in the file -> label ``1..C``.
        source: name used in error messages.

    Raises:
        ResultsFileError: malformed entries, unknown image ids or unknown category ids.
    """
    n = len(entries)
    if n == 0:
        return Detections.empty()
    try:
        columns = {key: [e[key] for e in entries] for key in _KEYS}
    except (KeyError, TypeError, IndexError):
        i, bad = _first_bad(
            entries, lambda e: isinstance(e, Mapping) and all(k in e for k in _KEYS)
        )
        raise ResultsFileError(
            f"{source}: entry {i} is not a detection with keys {list(_KEYS)}: {bad!r:.200}"
        ) from None
    xywh = _numeric_array(columns["bbox"], "bbox", source, (4,)).astype(np.float64)
    scores = _numeric_array(columns["score"], "score", source).astype(np.float64)

    image_index = _map_ids(columns["image_id"], image_lookup)
    _check_known(
        columns["image_id"], image_index, "image id", source, len(set(image_lookup.values()))
    )
    labels = _map_ids(columns["category_id"], category_lookup)
    _check_known(columns["category_id"], labels, "category id", source, len(category_lookup))

    boxes = xywh.copy()
    boxes[:, 2:] += boxes[:, :2]
    return Detections(image_index, labels, boxes, scores, xywh)


def _check_known(
    values: list[Any], positions: np.ndarray, what: str, source: str, known: int
) -> None:
    unknown = np.flatnonzero(positions < 0)
    if unknown.size == 0:
        return
    examples = []
    for i in unknown.tolist():
        if values[i] not in examples:
            examples.append(values[i])
        if len(examples) == 5:
            break
    raise ResultsFileError(
        f"{source}: {unknown.size} of {len(values)} detections have {what}s that are not in the "
        f"ground truth ({known} known), e.g. {examples} (first at entry {int(unknown[0])}); "
        "is this the right annotation file / class list?"
    )


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
    """Evaluate a COCO-format results file against a ground truth.

    Args:
        results_json: the results file (see the module docstring).
        ann_file: COCO annotation file (``kind="coco"``).
        records: dataset records (COCO from records, or VOC).
        class_names: the class names (required with records; VOC category ids index it 1-based).
        kind: ``"coco"``, ``"voc"`` (VOC2010+ all-point AP unless ``metric="voc07"`` is
            passed) or ``"voc07"`` (VOC2007 11-point AP).
        backend: COCO engine, ``"auto"``, ``"pycocotools"`` or ``"faster"``.
        out_dir: when given, :func:`~detector.evaluation.report.write_report` writes
            ``metrics.json``, the per-class tables, the PR curves and ``summary.txt`` there.
        label_to_category_id: for COCO, contiguous label -> category id (see
            :class:`~detector.evaluation.coco.CocoEvaluator`).
        strict: raise on invalid numbers instead of dropping them with a counted warning.
        **evaluator_kwargs: passed to the evaluator (e.g. ``metric``, ``use_07_plus_one``,
            ``iou_threshold`` for VOC).

    Returns:
        The evaluator's metrics plus ``results_file``, ``time_load_s``, ``time_write_s`` and
        ``time_total_s``.
    """
    from detector.evaluation import build_evaluator
    from detector.evaluation.report import write_report

    t_start = time.perf_counter()
    kind = kind.lower()
    if kind == "voc07":
        kind = "voc"
        evaluator_kwargs.setdefault("metric", "voc07")
    if kind == "coco":
        evaluator = build_evaluator(
            "coco",
            class_names=class_names,
            ann_file=ann_file,
            records=records,
            label_to_category_id=label_to_category_id,
            backend=backend,
            strict=strict,
            **evaluator_kwargs,
        )
    elif kind == "voc":
        if records is None or class_names is None:
            raise ValueError("VOC evaluation needs records and class_names")
        evaluator = build_evaluator(
            "voc", class_names=class_names, records=records, strict=strict, **evaluator_kwargs
        )
    else:
        raise ValueError(f"unknown kind {kind!r}; choose coco, voc or voc07")
    t_gt = time.perf_counter()

    source = str(results_json)
    entries = load_results_file(results_json)
    counters: dict[str, Any] = {}
    if not entries:
        warnings.warn(
            f"{source} holds no detections ([]); every AP will be 0",
            EvaluationWarning,
            stacklevel=2,
        )
        counters["num_empty_results_files"] = 1
    t_parse = time.perf_counter()
    with gc_paused():
        dets = detections_from_results(
            entries,
            image_lookup=evaluator.image_lookup(),
            category_lookup=evaluator.category_lookup(),
            source=source,
        )
        del entries
    t_load = time.perf_counter()
    metrics = evaluator.evaluate_detections(dets, counters=counters, source=source)
    t_eval = time.perf_counter()
    metrics["results_file"] = source
    if out_dir is not None:
        write_report(metrics, out_dir, **evaluator.report_artifacts(with_results=False))
    t_end = time.perf_counter()
    metrics.update(
        {
            "time_gt_s": t_gt - t_start,
            "time_parse_s": t_parse - t_gt,
            "time_check_s": t_load - t_parse,
            "time_load_s": t_load - t_gt,
            "time_eval_s": t_eval - t_load,
            "time_write_s": t_end - t_eval,
            "time_total_s": t_end - t_start,
        }
    )
    if out_dir is not None:  # metrics.json again, now with the timings
        write_report(metrics, out_dir, metrics_only=True)
    return metrics
