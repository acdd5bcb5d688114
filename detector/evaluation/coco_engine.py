"""COCO bbox evaluation engines: pycocotools (the reference) and faster-coco-eval.

Both engines take the ground truth as a COCO instances ``dict`` and the detections as flat
arrays, and return the accumulated ``precision``/``recall`` arrays and the 12 summary numbers of
``COCOeval.summarize()``.

* ``"pycocotools"`` builds ``pycocotools.coco.COCO`` objects exactly as ``COCO(ann_file)`` and
  ``loadRes(results_file)`` would (the same Python numbers in the same order) and runs the stock
  ``COCOeval``. Its ``stats`` are what pycocotools prints for the same files.
* ``"hotcoco"`` hands the ground-truth dict and the detection arrays (no Python dict per
  detection) to hotcoco, a Rust re-implementation of ``COCOeval`` that takes columns and
  returns pycocotools' ``precision``/``recall`` arrays.
* ``"faster"`` runs the C++ matching and accumulation of faster-coco-eval. The per-image work in
  Python that its ``COCOeval_faster.evaluate`` does (``loadRes``, indexing, one ``computeIoU``
  call per image/category pair, a dict over all image/category pairs) is replaced by a
  vectorised preparation here: the boxes are grouped with numpy, IoUs are computed for all pairs
  at once with the same floating-point operations as pycocotools' ``bbIou``, and the C++ kernel
  ``COCOevalEvaluateAccumulate`` receives the same inputs it gets from ``COCOeval_faster``. If
  that kernel is not available (another faster-coco-eval release), the stock
  ``COCOeval_faster`` pipeline is used instead. The summary numbers are computed from the
  accumulated arrays with pycocotools' ``summarize`` rule.

The faster and hotcoco engines agree with pycocotools to floating-point rounding (faster's
precision is ``tp / (tp + fp)`` where pycocotools divides by ``tp + fp + eps``; tests check
1e-6). ``"auto"`` picks the fastest one installed: hotcoco, then faster-coco-eval, then
pycocotools.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.metadata
import io
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detector.evaluation.detections import EvaluationWarning, gc_paused

__all__ = [
    "AREA_RANGES",
    "BACKENDS",
    "COCO_STAT_KEYS",
    "CocoEvalOutput",
    "bbox_iou_coco",
    "format_coco_summary",
    "resolve_backend",
    "run_coco_bbox",
    "summarize_coco",
]

BACKENDS = ("auto", "pycocotools", "faster", "hotcoco")

#: Keys of the 12 numbers of ``COCOeval.stats``, in order.
COCO_STAT_KEYS = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)  # fmt: skip

#: pycocotools' area ranges (label, [lo, hi]); a box is in a range when lo <= area <= hi.
AREA_RANGES = (
    ("all", (0.0, 1e5**2)),
    ("small", (0.0, 32.0**2)),
    ("medium", (32.0**2, 96.0**2)),
    ("large", (96.0**2, 1e5**2)),
)
MAX_DETS = (1, 10, 100)
# As in pycocotools: np.arange would put the points slightly off their decimal values.
IOU_THRS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)


@dataclass
class CocoEvalOutput:
    """What a COCO engine returns.

    Attributes:
        stats: the 12 numbers of ``COCOeval.stats`` (see :data:`COCO_STAT_KEYS`).
        precision: ``[T=10, R=101, K, A=4, M=3]`` interpolated precision (-1: no ground truth).
        recall: ``[T, K, A, M]`` final recall (-1: no ground truth).
        cat_ids: the ``K`` category ids (sorted) indexing ``precision``/``recall``.
        backend: engine name and version, e.g. ``"pycocotools 2.0.11"``.
        summary: the 12-line summary in pycocotools' print format.
        engine_seconds: wall time spent in the engine (building its inputs included).
    """

    stats: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    cat_ids: list[int]
    backend: str
    summary: str
    engine_seconds: float = 0.0
    details: dict[str, float] = field(default_factory=dict)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - vendored copies
        return "unknown"


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def faster_available() -> bool:
    """Whether faster-coco-eval can be imported."""
    return _importable("faster_coco_eval")


def hotcoco_available() -> bool:
    """Whether hotcoco can be imported."""
    return _importable("hotcoco")


_PACKAGES = {
    "faster": ("faster-coco-eval", faster_available),
    "hotcoco": ("hotcoco", hotcoco_available),
}


def resolve_backend(backend: str) -> str:
    """Map ``"auto"`` to the fastest installed engine: ``"hotcoco"``, ``"faster"``, else
    ``"pycocotools"``.

    Raises:
        ValueError: unknown backend name.
        ImportError: ``"faster"`` or ``"hotcoco"`` requested but its package is not installed.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown COCO backend {backend!r}; choose one of {BACKENDS}")
    if backend == "auto":
        for name in ("hotcoco", "faster"):
            if _PACKAGES[name][1]():
                return name
        return "pycocotools"
    if backend in _PACKAGES and not _PACKAGES[backend][1]():
        raise ImportError(f"backend={backend!r} needs the {_PACKAGES[backend][0]} package")
    return backend


def run_coco_bbox(
    gt: dict[str, Any],
    image_ids: np.ndarray,
    category_ids: np.ndarray,
    xywh: np.ndarray,
    scores: np.ndarray,
    *,
    backend: str = "auto",
) -> CocoEvalOutput:
    """Run COCO bbox evaluation.

    Args:
        gt: COCO instances dict (``images``, ``annotations``, ``categories``); it is not modified.
        image_ids: ``[N]`` int image id of every detection (must be in ``gt``).
        category_ids: ``[N]`` int category id of every detection (must be in ``gt``).
        xywh: ``[N, 4]`` float64 boxes ``[x, y, w, h]``.
        scores: ``[N]`` float64 scores.
        backend: ``"auto"``, ``"pycocotools"``, ``"faster"`` or ``"hotcoco"``. When ``"auto"``
            picks hotcoco and hotcoco rejects the input, faster-coco-eval (else pycocotools)
            evaluates it, with an :class:`EvaluationWarning`.

    Returns:
        The accumulated arrays and summary numbers.
    """
    requested, backend = backend, resolve_backend(backend)
    start = time.perf_counter()
    with gc_paused():
        if backend == "pycocotools":
            out = _run_pycocotools(gt, image_ids, category_ids, xywh, scores)
        elif backend == "hotcoco":
            try:
                out = _run_hotcoco(gt, image_ids, category_ids, xywh, scores)
            except (ValueError, TypeError, RuntimeError) as exc:
                if requested != "auto":
                    raise
                # "auto" picked hotcoco: an input it rejects still gets the reference numbers.
                fallback = "faster" if faster_available() else "pycocotools"
                warnings.warn(
                    f"hotcoco could not evaluate this input ({type(exc).__name__}: {exc}); "
                    f"using backend {fallback!r} instead",
                    EvaluationWarning,
                    stacklevel=3,
                )
                run = _run_faster if fallback == "faster" else _run_pycocotools
                out = run(gt, image_ids, category_ids, xywh, scores)
        else:
            out = _run_faster(gt, image_ids, category_ids, xywh, scores)
    out.engine_seconds = time.perf_counter() - start
    return out


def _result_dicts(
    image_ids: np.ndarray, category_ids: np.ndarray, xywh: np.ndarray, scores: np.ndarray
) -> list[dict[str, Any]]:
    """COCO results dicts holding the same Python numbers as a parsed results file."""
    return [
        {"image_id": i, "category_id": c, "bbox": b, "score": s}
        for i, c, b, s in zip(
            np.asarray(image_ids).tolist(),
            np.asarray(category_ids).tolist(),
            np.asarray(xywh, dtype=np.float64).tolist(),
            np.asarray(scores, dtype=np.float64).tolist(),
        )
    ]


def _gt_copy(gt: dict[str, Any]) -> dict[str, Any]:
    """Copy deep enough that the engines' in-place edits (``ignore`` keys) do not leak out."""
    out = dict(gt)
    out["annotations"] = [dict(a) for a in gt.get("annotations", [])]
    out["images"] = list(gt.get("images", []))
    out["categories"] = list(gt.get("categories", []))
    return out


def _run_pycocotools(gt, image_ids, category_ids, xywh, scores) -> CocoEvalOutput:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):
        coco_gt = COCO()
        coco_gt.dataset = _gt_copy(gt)
        coco_gt.createIndex()
        anns = _result_dicts(image_ids, category_ids, xywh, scores)
        if anns:
            coco_dt = coco_gt.loadRes(anns)
        else:  # loadRes cannot take an empty list
            coco_dt = COCO()
            coco_dt.dataset = {
                "images": list(coco_gt.dataset["images"]),
                "categories": copy.deepcopy(coco_gt.dataset["categories"]),
                "annotations": [],
            }
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        evaluator.summarize()
    return CocoEvalOutput(
        stats=np.asarray(evaluator.stats, dtype=np.float64),
        precision=evaluator.eval["precision"],
        recall=evaluator.eval["recall"],
        cat_ids=[int(c) for c in evaluator.params.catIds],
        backend=f"pycocotools {_version('pycocotools')}",
        summary=summary.getvalue(),
    )


# ----------------------------------------------------------------------------- hotcoco


def _run_hotcoco(gt, image_ids, category_ids, xywh, scores) -> CocoEvalOutput:
    """hotcoco's ``COCOeval`` over the detections as one ``[N, 7]`` array.

    ``load_res`` of an array follows pycocotools' ``loadNumpyAnnotations`` + ``loadRes``:
    annotation ids ``1..N`` in array order, area ``w * h``, no crowd.
    """
    import hotcoco

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):
        coco_gt = hotcoco.COCO(gt)  # copied into Rust; the dict is not modified
        columns = np.empty((len(scores), 7), dtype=np.float64)
        columns[:, 0] = image_ids
        columns[:, 1:5] = xywh
        columns[:, 5] = scores
        columns[:, 6] = category_ids
        coco_dt = coco_gt.load_res(columns)
        timings["load"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        evaluator = hotcoco.COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        timings["evaluate"] = time.perf_counter() - t0
    precision = np.asarray(evaluator.eval["precision"], dtype=np.float64)
    recall = np.asarray(evaluator.eval["recall"], dtype=np.float64)
    return _output(
        precision,
        recall,
        [int(c) for c in evaluator.params.catIds],
        f"hotcoco {_version('hotcoco')}",
        details=timings,
    )


# ----------------------------------------------------------------------------- faster-coco-eval


class _Params:
    """The attributes faster-coco-eval's C++ kernel reads from ``COCOeval.params``."""

    def __init__(self, img_ids: list[int], cat_ids: list[int]) -> None:
        self.imgIds = img_ids
        self.catIds = cat_ids
        self.iouThrs = IOU_THRS.copy()
        self.recThrs = REC_THRS.copy()
        self.maxDets = list(MAX_DETS)
        self.areaRng = [list(r) for _, r in AREA_RANGES]
        self.areaRngLbl = [name for name, _ in AREA_RANGES]
        self.useCats = 1
        self.iouType = "bbox"


def _faster_kernel():
    """faster-coco-eval's C++ ``COCOevalEvaluateAccumulate`` and ``Dataset``, or ``None``."""
    try:
        import faster_coco_eval.faster_eval_api_cpp as cpp
    except ImportError:  # pragma: no cover - depends on the installed release
        return None
    kernel = getattr(cpp, "COCOevalEvaluateAccumulate", None)
    dataset = getattr(cpp, "Dataset", None)
    if kernel is None or dataset is None or not hasattr(dataset(), "append_ref"):
        return None  # pragma: no cover
    return cpp


def _run_faster(gt, image_ids, category_ids, xywh, scores) -> CocoEvalOutput:
    cpp = _faster_kernel()
    if cpp is None:  # pragma: no cover - depends on the installed release
        return _run_faster_stock(gt, image_ids, category_ids, xywh, scores)
    return _run_faster_kernel(cpp, gt, image_ids, category_ids, xywh, scores)


def _run_faster_stock(gt, image_ids, category_ids, xywh, scores) -> CocoEvalOutput:
    """faster-coco-eval through its public ``COCO``/``COCOeval_faster`` API."""
    from faster_coco_eval import COCO, COCOeval_faster

    def quiet(*_args: Any, **_kwargs: Any) -> None:
        return None

    coco_gt = COCO(_gt_copy(gt), print_function=quiet)
    anns = _result_dicts(image_ids, category_ids, xywh, scores)
    coco_dt = coco_gt.loadRes(anns)
    evaluator = COCOeval_faster(coco_gt, coco_dt, "bbox", print_function=quiet)
    evaluator.evaluate()
    evaluator.accumulate()
    precision, recall = evaluator.eval["precision"], evaluator.eval["recall"]
    cat_ids = [int(c) for c in evaluator.params.catIds]
    return _output(
        precision,
        recall,
        cat_ids,
        f"faster-coco-eval {_version('faster-coco-eval')} (COCOeval_faster)",
    )


def _group(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stable grouping of int64 keys: ``(order, unique_keys, starts, counts)``."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    if sorted_keys.size == 0:
        empty = np.zeros(0, np.int64)
        return order, empty, empty, empty
    boundary = np.flatnonzero(np.diff(sorted_keys)) + 1
    starts = np.concatenate([[0], boundary]).astype(np.int64)
    counts = np.diff(np.concatenate([starts, [sorted_keys.size]])).astype(np.int64)
    return order, sorted_keys[starts], starts, counts


def bbox_iou_coco(dt: np.ndarray, gt: np.ndarray, gt_crowd: np.ndarray) -> np.ndarray:
    """Element-wise COCO IoU of paired ``xywh`` boxes, bit-identical to pycocotools' ``bbIou``.

    Crowd ground truth divides the intersection by the detection's area only.

    Args:
        dt: ``[P, 4]`` detection boxes.
        gt: ``[P, 4]`` ground-truth boxes.
        gt_crowd: ``[P]`` bool, whether the ground truth is a crowd region.

    Returns:
        ``[P]`` IoU (0 where the boxes do not overlap).
    """
    dx, dy, dw, dh = dt.T
    gx, gy, gw, gh = gt.T
    w = np.minimum(dw + dx, gw + gx) - np.maximum(dx, gx)
    h = np.minimum(dh + dy, gh + gy) - np.maximum(dy, gy)
    inter = w * h
    da = dw * dh
    union = np.where(gt_crowd, da, (da + gw * gh) - inter)
    overlap = (w > 0) & (h > 0)
    out = np.zeros(w.shape, dtype=np.float64)
    np.divide(inter, union, out=out, where=overlap)
    return out


def _run_faster_kernel(cpp, gt, image_ids, category_ids, xywh, scores) -> CocoEvalOutput:
    """Vectorised preparation + faster-coco-eval's C++ matching/accumulation kernel."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    img_ids = sorted({int(img["id"]) for img in gt.get("images", [])})
    cat_ids = sorted({int(cat["id"]) for cat in gt.get("categories", [])})
    img_pos = {v: i for i, v in enumerate(img_ids)}
    cat_pos = {v: i for i, v in enumerate(cat_ids)}
    n_cat = len(cat_ids)
    max_det = MAX_DETS[-1]

    # Ground truth restricted to known images and categories, as getAnnIds(imgIds, catIds) does.
    anns = gt.get("annotations", [])
    g_img = np.fromiter((img_pos.get(int(a["image_id"]), -1) for a in anns), np.int64, len(anns))
    g_cat = np.fromiter((cat_pos.get(int(a["category_id"]), -1) for a in anns), np.int64, len(anns))
    g_keep = np.flatnonzero((g_img >= 0) & (g_cat >= 0))
    g_box = np.array([anns[i]["bbox"] for i in g_keep], dtype=np.float64).reshape(-1, 4)
    g_crowd = np.array([bool(anns[i].get("iscrowd", 0)) for i in g_keep], dtype=bool)
    g_pair = g_img[g_keep] * n_cat + g_cat[g_keep]
    gt_refs = [
        {
            "id": anns[i]["id"],
            "area": anns[i]["area"],
            "iscrowd": int(c),
            "ignore": int(c),  # pycocotools: ignore = iscrowd, whatever the file says
        }
        for i, c in zip(g_keep.tolist(), g_crowd.tolist())
    ]

    d_img = np.asarray(image_ids, dtype=np.int64)
    d_cat = np.asarray(category_ids, dtype=np.int64)
    d_box = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)
    d_score = np.asarray(scores, dtype=np.float64)
    n_det = d_score.shape[0]
    img_lookup = np.asarray(img_ids, dtype=np.int64)
    cat_lookup = np.asarray(cat_ids, dtype=np.int64)
    d_img_pos = np.searchsorted(img_lookup, d_img)
    d_cat_pos = np.searchsorted(cat_lookup, d_cat)
    if n_det and (
        np.any(d_img_pos >= len(img_ids))
        or np.any(img_lookup[np.minimum(d_img_pos, len(img_ids) - 1)] != d_img)
        or np.any(d_cat_pos >= n_cat)
        or np.any(cat_lookup[np.minimum(d_cat_pos, n_cat - 1)] != d_cat)
    ):
        raise ValueError(
            "detections refer to image or category ids that are not in the ground truth"
        )
    d_pair = d_img_pos * n_cat + d_cat_pos
    # Annotation ids as loadRes assigns them: 1-based position in the results list.
    d_area = (d_box[:, 2] * d_box[:, 3]).tolist()
    dt_refs = [
        {"id": k, "score": s, "area": a}  # iscrowd absent = 0
        for k, s, a in zip(range(1, n_det + 1), d_score.tolist(), d_area)
    ]
    timings["prepare_refs"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    gt_ds, dt_ds = cpp.Dataset(), cpp.Dataset()
    g_pair_img, g_pair_cat = np.divmod(g_pair, n_cat)
    img_arr, cat_arr = np.asarray(img_ids, dtype=np.int64), np.asarray(cat_ids, dtype=np.int64)
    deque(
        map(gt_ds.append_ref, img_arr[g_pair_img].tolist(), cat_arr[g_pair_cat].tolist(), gt_refs),
        0,
    )
    deque(map(dt_ds.append_ref, d_img.tolist(), d_cat.tolist(), dt_refs), 0)
    timings["append_refs"] = time.perf_counter() - t0

    # IoU matrices for every image/category pair with both detections and ground truth: rows are
    # the detections sorted by descending score (stable), cut at max_det; columns the ground
    # truth in file order -- the layout of COCOeval.computeIoU.
    t0 = time.perf_counter()
    d_order = np.lexsort((-d_score, d_pair))
    d_sorted_pair = d_pair[d_order]
    _, d_keys, d_starts, d_counts = _group(d_sorted_pair)
    g_order, g_keys, g_starts, g_counts = _group(g_pair)
    common, d_sel, g_sel = np.intersect1d(d_keys, g_keys, assume_unique=True, return_indices=True)
    rows = np.minimum(d_counts[d_sel], max_det)
    cols = g_counts[g_sel]
    sizes = rows * cols
    total = int(sizes.sum())
    pair_of_elem = np.repeat(np.arange(common.size), sizes)
    elem_start = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    local = np.arange(total, dtype=np.int64) - elem_start[pair_of_elem]
    r_local, c_local = np.divmod(local, cols[pair_of_elem]) if total else (local, local)
    det_idx = d_order[d_starts[d_sel][pair_of_elem] + r_local]
    gt_idx = g_order[g_starts[g_sel][pair_of_elem] + c_local]
    iou = bbox_iou_coco(d_box[det_idx], g_box[gt_idx], g_crowd[gt_idx])
    flat = iou.tolist()
    pair_ious: dict[int, list[list[float]]] = {}
    for key, start, r, c in zip(common.tolist(), elem_start.tolist(), rows.tolist(), cols.tolist()):
        pair_ious[key] = [flat[start + j * c : start + (j + 1) * c] for j in range(r)]
    timings["iou"] = time.perf_counter() - t0

    # One call over the whole image x category grid. (One call per category over just the
    # images that have something of it is slower: every call copies the datasets.)
    t0 = time.perf_counter()
    grid: list[list[Any]] = [[[]] * n_cat for _ in range(len(img_ids))]
    for key, matrix in pair_ious.items():
        i, k = divmod(key, n_cat)
        grid[i][k] = matrix
    params = _Params(img_ids, cat_ids)
    result = cpp.COCOevalEvaluateAccumulate(params, grid, gt_ds, dt_ds, img_ids, cat_ids, True)
    precision = np.asarray(result["precision"], dtype=np.float64)
    recall = np.asarray(result["recall"], dtype=np.float64)
    timings["kernel"] = time.perf_counter() - t0
    return _output(
        precision,
        recall,
        cat_ids,
        f"faster-coco-eval {_version('faster-coco-eval')} (C++ kernel)",
        details=timings,
    )


# ----------------------------------------------------------------------------- summary


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return -1.0 if valid.size == 0 else float(np.mean(valid))


def _output(
    precision: np.ndarray,
    recall: np.ndarray,
    cat_ids: list[int],
    backend: str,
    details: dict[str, float] | None = None,
) -> CocoEvalOutput:
    """A :class:`CocoEvalOutput` from an engine's accumulated arrays (stats and summary ours)."""
    stats = summarize_coco(precision, recall)
    return CocoEvalOutput(
        stats=stats,
        precision=precision,
        recall=recall,
        cat_ids=cat_ids,
        backend=backend,
        summary=format_coco_summary(stats),
        details=dict(details or {}),
    )


def summarize_coco(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """The 12 numbers of pycocotools' ``COCOeval.summarize()`` (bbox, default parameters).

    Args:
        precision: ``[T, R, K, A, M]`` accumulated precision.
        recall: ``[T, K, A, M]`` accumulated recall.

    Returns:
        ``[12]`` float64 in :data:`COCO_STAT_KEYS` order (-1 where there is nothing to average).
    """
    t50 = np.where(IOU_THRS == 0.5)[0]
    t75 = np.where(IOU_THRS == 0.75)[0]
    m100 = MAX_DETS.index(100)

    def ap(t=None, a=0, m=m100):
        s = precision if t is None else precision[t]
        return _mean_valid(s[:, :, :, a, m])

    def ar(a=0, m=m100):
        return _mean_valid(recall[:, :, a, m])

    stats = [
        ap(), ap(t50), ap(t75), ap(a=1), ap(a=2), ap(a=3),
        ar(m=0), ar(m=1), ar(m=2), ar(a=1), ar(a=2), ar(a=3),
    ]  # fmt: skip
    return np.array(stats, dtype=np.float64)


def format_coco_summary(stats: np.ndarray) -> str:
    """The 12 summary lines in the format ``COCOeval.summarize()`` prints."""
    lines = []
    row = " {:<18} {} @[ IoU={:<9} | area={:>6s} | maxDets={:>3d} ] = {:0.3f}"
    specs = [
        (1, "0.50:0.95", "all", 100), (1, "0.50", "all", 100), (1, "0.75", "all", 100),
        (1, "0.50:0.95", "small", 100), (1, "0.50:0.95", "medium", 100),
        (1, "0.50:0.95", "large", 100), (0, "0.50:0.95", "all", 1), (0, "0.50:0.95", "all", 10),
        (0, "0.50:0.95", "all", 100), (0, "0.50:0.95", "small", 100),
        (0, "0.50:0.95", "medium", 100), (0, "0.50:0.95", "large", 100),
    ]  # fmt: skip
    for value, (is_ap, iou, area, max_det) in zip(stats, specs):
        title = "Average Precision" if is_ap else "Average Recall"
        kind = "(AP)" if is_ap else "(AR)"
        lines.append(row.format(title, kind, iou, area, max_det, float(value)))
    return "\n".join(lines) + "\n"


def per_class_ap(precision: np.ndarray, iou: float | None = None) -> np.ndarray:
    """``[K]`` AP per category (IoU .50:.95 or one IoU, area all, 100 dets); NaN without gt."""
    s = precision[:, :, :, 0, MAX_DETS.index(100)]
    if iou is not None:
        s = s[np.where(np.isclose(IOU_THRS, iou))[0]]
    out = np.full(s.shape[2], np.nan)
    for k in range(s.shape[2]):
        v = s[:, :, k]
        v = v[v > -1]
        if v.size:
            out[k] = float(np.mean(v))
    return out
