"""WIDER FACE evaluation: AP on the easy / medium / hard subsets (official protocol) or plain AP.

**Subset AP (official protocol)**, when the ground-truth folder of the official ``eval_tools``
(``ground_truth/``: ``wider_face_val.mat`` and ``wider_{easy,medium,hard}_val.mat``) is given.
It follows the MATLAB ``eval_tools`` (``evaluation.m``, ``norm_score.m``, ``read_pred.m``) and
its widely used Python port, step by step:

1. The ground truth is read from ``wider_face_val.mat`` (``event_list``, ``file_list``,
   ``face_bbx_list``: per image ``[N, 4]`` ``x y w h`` faces, *all* faces, invalid ones
   included); a subset file's ``gt_list`` gives, per image, the 1-based indices of the faces that
   belong to the subset. Faces outside the subset are "ignored": a detection matched to one is
   neither a true nor a false positive.
2. Scores are min-max normalised over the whole dataset: ``(s - min) / (max - min)`` with the
   minimum and maximum over every detection of every image. (When all scores are equal the
   reference divides by zero and scores nothing; here every detection then gets score 1, with
   an :class:`~detector.evaluation.base.EvaluationWarning`.)
3. Per image, detections are taken in descending score order (stable: ties keep their input
   order, as MATLAB's ``sort``). Each takes the face of highest IoU (the first on ties); IoU uses
   the ``+1`` inclusive-pixel convention on ``[x, y, x + w, y + h]`` boxes. If that IoU is
   ``>= 0.5``: on an ignored face the detection is not a proposal; on a subset face not yet
   recalled it recalls the face (true positive); on a face already recalled it is a false
   positive. Below 0.5 it is a false positive. There is no fall-back to the second-best face.
4. Images without any face in ``wider_face_val.mat`` or without any detection are skipped: their
   detections count for nothing (not even as false positives), their subset faces still count
   as missed.
5. For ``t = 1..1000`` the threshold is ``1 - t / 1000``; summed over images, the detections
   scoring ``>=`` the threshold give the proposals (true and false positives) and the recalled
   faces. Precision is recalled / proposals, recall is recalled / the number of subset faces.
   (Where there is no proposal yet the reference's precision is 0/0; those points have recall 0
   and do not change the area, here they are 0.)
6. AP is the VOC2010+ area under the precision envelope of those 1000 points
   (:func:`detector.evaluation.voc.voc_ap`).

**Plain AP**, when no subset files are given: the VOC2010+ area AP at IoU ``>= 0.5`` over the
dataset records with exact ranking (every detection is a point of the curve, no thresholds).
Faces flagged ``ignore`` in the records (WIDER ``invalid``, smaller than the reader's
``min_face_size``, blurrier than its ``max_blur``) are ignored as above; detections on images
without faces are false positives. Matching is the same as step 3 (``+1`` convention), so for one
class this equals :class:`~detector.evaluation.voc.VOCEvaluator` with ``metric="voc"``.

Predictions follow :mod:`detector.evaluation.base`: pixel ``xyxy`` in the original image, where
``x2 = x + w`` (continuous coordinates, the same numbers as the ``x y w h`` of a WIDER
prediction file), label 1 (``"face"``).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detector.evaluation.base import (
    Detections,
    EvaluationWarning,
    PredictionStore,
    ResultsFileError,
    drop_invalid,
)
from detector.evaluation.voc import voc_ap, voc_iou

__all__ = [
    "SUBSETS",
    "SUBSET_FILES",
    "VAL_MAT",
    "WiderFaceEvaluator",
    "WiderGroundTruth",
    "WiderGroundTruthError",
    "load_wider_ground_truth",
    "match_faces",
    "threshold_pr_counts",
]

#: The official subsets, in the order their APs are reported.
SUBSETS: tuple[str, ...] = ("easy", "medium", "hard")
#: File of every validation face (``event_list``, ``file_list``, ``face_bbx_list``).
VAL_MAT = "wider_face_val.mat"
#: File of each subset's keep lists (``gt_list``).
SUBSET_FILES: dict[str, str] = {s: f"wider_{s}_val.mat" for s in SUBSETS}


class WiderGroundTruthError(ValueError):
    """A WIDER FACE ground-truth ``.mat`` file lacks a field or is not in the official layout."""


@dataclass
class WiderGroundTruth:
    """The official validation ground truth, flattened to one entry per image.

    Attributes:
        events: ``[I]`` event folder of each image (``"0--Parade"``).
        names: ``[I]`` file name without extension (``"0_Parade_marchingband_1_465"``).
        boxes: ``[I]`` float64 ``[N_i, 4]`` faces as ``[x, y, w, h]`` pixels, as stored.
        keep: subset name -> ``[I]`` int64 ``[K_i]`` 0-based indices of the subset's faces.
        source: the folder the files were read from (named in messages).
    """

    events: list[str]
    names: list[str]
    boxes: list[np.ndarray]
    keep: dict[str, list[np.ndarray]]
    source: Path

    @property
    def image_keys(self) -> list[str]:
        """``"event/name.jpg"`` per image: the image path relative to ``WIDER_val/images``."""
        return [f"{e}/{n}.jpg" for e, n in zip(self.events, self.names)]


def _mat_str(value: Any, what: str, path: Path) -> str:
    """Unwrap the nested object/char arrays ``scipy.io.loadmat`` makes of a MATLAB string."""
    for _ in range(8):
        if isinstance(value, str):
            return value
        arr = np.asarray(value)
        if arr.dtype.kind == "U" and arr.size == 1:
            return str(arr.reshape(-1)[0])
        if arr.size != 1:
            break
        value = arr.reshape(-1)[0]
    raise WiderGroundTruthError(f"{path}: {what} is not a string ({value!r:.80})")


def _cells(value: Any, what: str, path: Path) -> list[Any]:
    """The elements of a MATLAB cell array (an ``[n, 1]`` or ``[1, n]`` object array)."""
    arr = np.asarray(value)
    if arr.dtype != object:
        raise WiderGroundTruthError(f"{path}: {what} is not a cell array (dtype {arr.dtype})")
    return list(arr.reshape(-1))


def _load_mat(path: Path, keys: Sequence[str]) -> dict[str, Any]:
    from scipy.io import loadmat

    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: WIDER FACE ground-truth file not found (the official eval_tools "
            f"ground_truth/ folder holds {VAL_MAT} and {', '.join(SUBSET_FILES.values())})"
        )
    try:
        mat = loadmat(str(path))
    except Exception as exc:  # scipy raises several types for files that are not .mat
        raise WiderGroundTruthError(f"{path}: cannot read as a MATLAB .mat file ({exc})") from None
    missing = [k for k in keys if k not in mat]
    if missing:
        raise WiderGroundTruthError(
            f"{path}: missing {missing} (has {sorted(k for k in mat if not k.startswith('__'))})"
        )
    return mat


def load_wider_ground_truth(
    gt_dir: str | Path, subsets: Sequence[str] = SUBSETS
) -> WiderGroundTruth:
    """Read ``wider_face_val.mat`` and the subset files of the official ``eval_tools``.

    Args:
        gt_dir: folder with ``wider_face_val.mat`` and ``wider_<subset>_val.mat``.
        subsets: which subset files to read (names of :data:`SUBSETS`).

    Returns:
        The ground truth with one entry per image, in the files' event / image order.

    Raises:
        FileNotFoundError: a file is missing (named).
        WiderGroundTruthError: a file lacks a field, or its lists disagree in length with
            ``wider_face_val.mat`` (named, with the event), or a keep index is out of range.
    """
    gt_dir = Path(gt_dir)
    unknown = [s for s in subsets if s not in SUBSET_FILES]
    if unknown:
        raise ValueError(f"unknown WIDER FACE subset(s) {unknown}; choose from {list(SUBSETS)}")
    val_path = gt_dir / VAL_MAT
    mat = _load_mat(val_path, ("event_list", "file_list", "face_bbx_list"))
    event_cells = _cells(mat["event_list"], "event_list", val_path)
    file_cells = _cells(mat["file_list"], "file_list", val_path)
    box_cells = _cells(mat["face_bbx_list"], "face_bbx_list", val_path)
    if not len(event_cells) == len(file_cells) == len(box_cells):
        raise WiderGroundTruthError(
            f"{val_path}: event_list ({len(event_cells)}), file_list ({len(file_cells)}) and "
            f"face_bbx_list ({len(box_cells)}) have different lengths"
        )
    events: list[str] = []
    names: list[str] = []
    boxes: list[np.ndarray] = []
    per_event: list[int] = []
    for i, (ev, files, faces) in enumerate(zip(event_cells, file_cells, box_cells)):
        event = _mat_str(ev, f"event_list[{i}]", val_path)
        files = _cells(files, f"file_list of event {event!r}", val_path)
        faces = _cells(faces, f"face_bbx_list of event {event!r}", val_path)
        if len(files) != len(faces):
            raise WiderGroundTruthError(
                f"{val_path}: event {event!r} has {len(files)} files but {len(faces)} face lists"
            )
        per_event.append(len(files))
        for j, (f, b) in enumerate(zip(files, faces)):
            names.append(_mat_str(f, f"file_list of event {event!r}, image {j}", val_path))
            events.append(event)
            arr = np.asarray(b, dtype=np.float64)
            if arr.size == 0:
                arr = arr.reshape(0, 4)
            if arr.ndim != 2 or arr.shape[1] < 4:
                raise WiderGroundTruthError(
                    f"{val_path}: faces of {event}/{names[-1]} must be [N, 4] x y w h, got "
                    f"shape {arr.shape}"
                )
            boxes.append(arr[:, :4].copy())
    keep: dict[str, list[np.ndarray]] = {}
    for subset in subsets:
        path = gt_dir / SUBSET_FILES[subset]
        sub = _load_mat(path, ("gt_list",))
        sub_events = _cells(sub["gt_list"], "gt_list", path)
        if len(sub_events) != len(per_event):
            raise WiderGroundTruthError(
                f"{path}: gt_list has {len(sub_events)} events but {VAL_MAT} has {len(per_event)}"
            )
        lists: list[np.ndarray] = []
        pos = 0
        for i, (cell, n) in enumerate(zip(sub_events, per_event)):
            images = _cells(cell, f"gt_list[{i}]", path)
            if len(images) != n:
                raise WiderGroundTruthError(
                    f"{path}: event {events[pos] if n else i!r} has {len(images)} keep lists but "
                    f"{n} images in {VAL_MAT}"
                )
            for j, idx in enumerate(images):
                k = np.asarray(idx, dtype=np.float64).reshape(-1)
                num_faces = len(boxes[pos + j])
                if k.size and (np.any(k != np.round(k)) or k.min() < 1 or k.max() > num_faces):
                    raise WiderGroundTruthError(
                        f"{path}: keep list of {events[pos + j]}/{names[pos + j]} must hold "
                        f"1-based face indices in 1..{num_faces}, got {k.tolist()[:10]}"
                    )
                lists.append(k.astype(np.int64) - 1)
            pos += n
        keep[subset] = lists
    return WiderGroundTruth(events, names, boxes, keep, gt_dir)


def _iou_plus_one(dt: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU matrix ``[K, N]`` of ``xyxy`` boxes with the ``+1`` inclusive-pixel convention.

    The devkit's element-wise IoU (:func:`~detector.evaluation.voc.voc_iou`) over every pair;
    non-overlapping pairs (intersection width or height ``<= 0``) get 0, as in the reference.
    """
    k, n = len(dt), len(gt)
    pairs = voc_iou(np.repeat(dt, n, axis=0), np.tile(gt, (k, 1)), plus_one=True)
    return np.maximum(pairs.reshape(k, n), 0.0)


def match_faces(
    image_index: np.ndarray,
    boxes_xyxy: np.ndarray,
    gt_boxes_xyxy: Sequence[np.ndarray],
    *,
    iou_threshold: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Best face of each detection, image by image (step 3 of the module docstring).

    Args:
        image_index: ``[D]`` int64 image of each detection, detections already in the order
            they are matched (by image, descending score within an image).
        boxes_xyxy: ``[D, 4]`` float64 pixel ``[x1, y1, x2, y2]`` (``x2 = x + w``).
        gt_boxes_xyxy: per image float64 ``[N_i, 4]`` faces as pixel ``xyxy``.
        iou_threshold: minimum IoU of a match (``>=``).

    Returns:
        ``(face, matched)``: ``face`` ``[D]`` int64 index of the best face into the
        concatenation of ``gt_boxes_xyxy`` (-1 for images without faces), ``matched`` ``[D]``
        bool, the best IoU reaches ``iou_threshold``.
    """
    d = len(image_index)
    face = np.full(d, -1, dtype=np.int64)
    matched = np.zeros(d, dtype=bool)
    if d == 0:
        return face, matched
    offsets = np.concatenate(([0], np.cumsum([len(g) for g in gt_boxes_xyxy])))
    starts = np.flatnonzero(np.r_[True, image_index[1:] != image_index[:-1]])
    ends = np.r_[starts[1:], d]
    for lo, hi in zip(starts.tolist(), ends.tolist()):
        img = int(image_index[lo])
        gt = gt_boxes_xyxy[img]
        if len(gt) == 0:
            continue
        iou = _iou_plus_one(boxes_xyxy[lo:hi], gt)
        best = np.argmax(iou, axis=1)  # the first maximum, as MATLAB's max / numpy's argmax
        face[lo:hi] = best + offsets[img]
        matched[lo:hi] = iou[np.arange(hi - lo), best] >= iou_threshold
    return face, matched


def _score_outcomes(
    face: np.ndarray, matched: np.ndarray, kept_face: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(proposal, recall)`` per detection, detections in matching order.

    ``proposal``: counts as a true or false positive (not matched to an ignored face);
    ``recall``: the first detection to recall a kept face (a true positive).
    """
    safe = np.maximum(face, 0)
    on_kept = matched & (face >= 0) & kept_face[safe]
    proposal = ~(matched & (face >= 0) & ~kept_face[safe])
    recall = np.zeros(len(face), dtype=bool)
    hits = np.flatnonzero(on_kept)
    _, first = np.unique(face[hits], return_index=True)
    recall[hits[first]] = True
    return proposal, recall


def threshold_pr_counts(
    scores: np.ndarray, proposal: np.ndarray, recall: np.ndarray, num_thresholds: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """Proposals and recalled faces at the reference's score thresholds (step 5).

    Args:
        scores: ``[D]`` float64 normalised scores in ``[0, 1]``.
        proposal: ``[D]`` bool, the detection is a true or false positive.
        recall: ``[D]`` bool, the detection recalls a face (a subset of ``proposal``).
        num_thresholds: ``T``; threshold ``t = 1..T`` is ``1 - t / T``.

    Returns:
        ``(proposals [T], recalled [T])`` int64 counts of detections scoring ``>=`` each
        threshold, thresholds in the reference's order (decreasing).
    """
    thresholds = 1.0 - np.arange(1, num_thresholds + 1, dtype=np.float64) / num_thresholds
    # Detection d passes thresholds t >= first[d]; thresholds decrease, so count those above.
    passed = np.searchsorted(thresholds[::-1], scores, side="right")  # how many are <= score
    first = num_thresholds - passed
    props = np.bincount(first[proposal], minlength=num_thresholds + 1)[:num_thresholds]
    recs = np.bincount(first[recall], minlength=num_thresholds + 1)[:num_thresholds]
    return np.cumsum(props), np.cumsum(recs)


class WiderFaceEvaluator:
    """WIDER FACE AP: easy / medium / hard by the official protocol, or plain AP.

    Args:
        class_names: the class names; must be one class (``["face"]``).
        records: dataset records (:meth:`~detector.data.base.DetectionDataset.records`), for
            plain AP; with ``gt_dir`` they are not needed (the ``.mat`` files are the ground
            truth).
        gt_dir: the official ``eval_tools`` ground-truth folder (``wider_face_val.mat`` and
            ``wider_{easy,medium,hard}_val.mat``); ``None`` for plain AP.
        subsets: the subsets to evaluate with ``gt_dir``.
        iou_threshold: minimum IoU of a true positive (``>=``).
        num_thresholds: score thresholds of the subset protocol (1000 in the reference).
        strict: raise instead of dropping (with a counted warning) detections with NaN/inf
            values or negative sizes.
        source: the records' annotation file, named in messages about unknown images.

    Raises:
        ValueError: not one class, or neither ``records`` nor ``gt_dir``.
        FileNotFoundError, WiderGroundTruthError: see :func:`load_wider_ground_truth`.
    """

    kind = "widerface"

    def __init__(
        self,
        class_names: Sequence[str] = ("face",),
        records: Sequence[Mapping[str, Any]] | None = None,
        *,
        gt_dir: str | Path | None = None,
        subsets: Sequence[str] = SUBSETS,
        iou_threshold: float = 0.5,
        num_thresholds: int = 1000,
        strict: bool = False,
        source: str | Path | None = None,
    ) -> None:
        self.class_names = list(class_names)
        if len(self.class_names) != 1:
            raise ValueError(
                f"WIDER FACE evaluation is for one class (faces), got {self.class_names}"
            )
        if num_thresholds < 1:
            raise ValueError(f"num_thresholds must be >= 1, got {num_thresholds}")
        self.iou_threshold = float(iou_threshold)
        self.num_thresholds = int(num_thresholds)
        self.strict = strict
        self.curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.last_detections: Detections | None = None
        if gt_dir is not None:
            self.ground_truth: WiderGroundTruth | None = load_wider_ground_truth(gt_dir, subsets)
            self.subsets = tuple(subsets)
            self.source = str(Path(gt_dir) / VAL_MAT)
            self.image_ids: list[Any] = self.ground_truth.image_keys
            self.gt_xywh = self.ground_truth.boxes
            self.kept = {s: self._kept_mask(self.ground_truth.keep[s]) for s in self.subsets}
        else:
            if records is None:
                raise ValueError("WIDER FACE evaluation needs records (plain AP) or gt_dir")
            self.ground_truth = None
            self.subsets = ()
            self.source = str(source) if source is not None else "the ground-truth records"
            self.image_ids = [r["image_id"] for r in records]
            self.gt_xywh = []
            ignore = []
            for rec in records:
                b = np.asarray(rec["boxes"], dtype=np.float64).reshape(-1, 4)
                labels = np.asarray(rec["labels"]).reshape(-1)
                if len(labels) and not np.all(labels == 1):
                    raise ValueError(f"record {rec['image_id']!r}: face labels must all be 1")
                flags = rec.get("ignore")
                flags = np.zeros(len(b), bool) if flags is None else np.asarray(flags, bool)
                if flags.shape != (len(b),):
                    raise ValueError(f"record {rec['image_id']!r}: boxes and ignore disagree")
                xywh = b.copy()
                xywh[:, 2:] -= xywh[:, :2]
                self.gt_xywh.append(xywh)
                ignore.append(flags)
            self.kept = {"all": ~np.concatenate(ignore) if ignore else np.zeros(0, bool)}
        self.gt_xyxy = [
            np.concatenate([b[:, :2], b[:, :2] + b[:, 2:4]], axis=1) for b in self.gt_xywh
        ]
        self._store = PredictionStore(self.image_ids, 1)
        self._lookup = self.image_lookup()

    def _kept_mask(self, keep_lists: list[np.ndarray]) -> np.ndarray:
        """Flat bool mask over every face of every image: in the subset's keep list."""
        sizes = [len(b) for b in self.gt_xywh]
        mask = np.zeros(int(sum(sizes)), dtype=bool)
        offset = 0
        for n, k in zip(sizes, keep_lists):
            mask[offset + k] = True
            offset += n
        return mask

    @property
    def protocol(self) -> str:
        """Human-readable name of what :meth:`evaluate` computes."""
        if self.ground_truth is not None:
            return (
                f"WIDER FACE official protocol (eval_tools): AP at IoU>={self.iou_threshold:g} on "
                f"{'/'.join(self.subsets)} from {self.ground_truth.source}; scores min-max "
                f"normalised over the dataset, {self.num_thresholds} score thresholds, faces "
                'outside a subset ignored, "+1" pixel IoU, VOC area AP; mAP = mean over subsets'
            )
        return (
            f"WIDER FACE plain AP (no subset files): VOC2010+ area AP at "
            f'IoU>={self.iou_threshold:g} over all faces, exact ranking, "+1" pixel IoU, '
            "ignored faces (invalid / small / blurred) neither true nor false positives"
        )

    # -- Evaluator protocol ---------------------------------------------------------------------

    def reset(self) -> None:
        """Forget all processed predictions."""
        self._store.reset()

    def process(self, image_ids: Sequence[Any], predictions: Sequence[Mapping[str, Any]]) -> None:
        """Store a batch of predictions (original-image pixel xyxy, label 1).

        Image ids may be the dataset's (``"event/name.jpg"``) or, with ``gt_dir``, also
        ``"event/name"``, ``"name.jpg"`` or ``"name"``.

        Raises:
            ResultsFileError: an image id that is not in the ground truth (naming its file).
        """
        self._store.add([self._canonical(i) for i in image_ids], predictions)

    def state(self) -> list[Any]:
        """Picklable per-image predictions (see :mod:`detector.evaluation.base`)."""
        return self._store.state()

    def load_state(self, state: Iterable[Any]) -> None:
        """Add per-image predictions from :meth:`state` (e.g. gathered from other ranks)."""
        self._store.load_state(state)

    def evaluate(self) -> dict[str, Any]:
        """AP per subset (or plain AP) over all processed predictions; see the module docstring.

        Keys: ``mAP`` (mean subset AP, or the plain AP), ``AP`` (plain AP only), per subset
        (``all`` for plain AP) ``AP/<s>``, ``num_faces/<s>``, ``num_tp/<s>``, ``num_fp/<s>``,
        ``recall/<s>`` (with every detection); counters; ``protocol``.
        """
        counters: dict[str, Any] = {"num_duplicate_images": self._store.num_duplicate_images}
        self._store.warn_duplicates()
        processed = self._store.num_images_with_predictions
        counters["num_images_with_predictions"] = processed
        if 0 < processed < len(self.image_ids):
            warnings.warn(
                f"{len(self.image_ids) - processed} of the {len(self.image_ids)} images of "
                f"{self.source} got no predictions; their faces count as missed",
                EvaluationWarning,
                stacklevel=2,
            )
        dets = self._store.detections()
        if not len(dets):
            warnings.warn(
                "WIDER FACE evaluation without any detection", EvaluationWarning, stacklevel=2
            )
        return self.evaluate_detections(dets, counters=counters, source="predictions")

    def evaluate_detections(
        self,
        dets: Detections,
        *,
        counters: dict[str, Any] | None = None,
        source: str = "detections",
    ) -> dict[str, Any]:
        """Evaluate flat detections (``image_index`` into :attr:`image_ids`, label 1)."""
        counters = dict(counters or {})
        t0 = time.perf_counter()
        dets = drop_invalid(dets, strict=self.strict, source=source, counters=counters)
        if len(dets) and np.any(dets.labels != 1):
            raise ResultsFileError(f"{source}: face detections must have label 1")
        self.last_detections = dets
        # Matching order: by image, descending score within an image, ties in input order.
        order = np.lexsort((-dets.scores, dets.image_index))
        image_index = dets.image_index[order]
        scores = dets.scores[order]
        face, matched = match_faces(
            image_index, dets.boxes[order], self.gt_xyxy, iou_threshold=self.iou_threshold
        )
        metrics: dict[str, Any] = {
            "protocol": self.protocol,
            "backend": "detector.evaluation.widerface",
            "primary_metric": "mAP",
            "mAP": float("nan"),
        }
        self.curves = {}
        rows: dict[str, dict[str, Any]] = {}
        num_images = len(self.image_ids)
        if self.ground_truth is not None:
            no_face = np.array([len(b) == 0 for b in self.gt_xywh], dtype=bool)
            skipped = no_face[image_index] if len(dets) else np.zeros(0, bool)
            norm = self._normalise(scores, counters)
            for subset in self.subsets:
                kept = self.kept[subset]
                proposal, recall = _score_outcomes(face, matched, kept)
                proposal &= ~skipped
                props, recs = threshold_pr_counts(norm, proposal, recall, self.num_thresholds)
                num_faces = int(kept.sum())
                precision = np.divide(
                    recs, props, out=np.zeros(len(props)), where=props > 0, dtype=np.float64
                )
                rec_curve = recs / num_faces if num_faces else np.zeros(len(recs))
                ap = voc_ap(rec_curve, precision, use_07_metric=False) if num_faces else np.nan
                self.curves[subset] = (rec_curve, precision)
                rows[subset] = {
                    "AP": float(ap),
                    "num_faces": num_faces,
                    "num_tp": int(recs[-1]),
                    "num_fp": int(props[-1] - recs[-1]),
                    "recall": float(recs[-1] / num_faces) if num_faces else float("nan"),
                }
            counters["num_detections_on_images_without_faces"] = int(skipped.sum())
            aps = [rows[s]["AP"] for s in self.subsets if not np.isnan(rows[s]["AP"])]
            if aps:
                metrics["mAP"] = float(np.mean(aps))
        else:
            kept = self.kept["all"]
            proposal, recall = _score_outcomes(face, matched, kept)
            # One ranking over the dataset: descending score, ties in the store's order (image,
            # then input order), as the VOC evaluator; ignored detections leave the curve.
            rank = np.lexsort((order, -scores))
            counted = rank[proposal[rank]]
            tp = np.cumsum(recall[counted]).astype(np.float64)
            fp = np.cumsum(~recall[counted]).astype(np.float64)
            num_faces = int(kept.sum())
            ap = float("nan")
            rec_curve = tp / num_faces if num_faces else np.zeros(len(tp))
            precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
            if num_faces:
                ap = voc_ap(rec_curve, precision, use_07_metric=False)
            self.curves["all"] = (rec_curve, precision)
            n_tp = int(recall.sum())
            rows["all"] = {
                "AP": float(ap),
                "num_faces": num_faces,
                "num_tp": n_tp,
                "num_fp": int(proposal.sum()) - n_tp,
                "recall": n_tp / num_faces if num_faces else float("nan"),
            }
            metrics["mAP"] = metrics["AP"] = float(ap)
            counters["num_gt_ignored"] = int((~kept).sum())
        for column in ("AP", "num_faces", "num_tp", "num_fp", "recall"):
            for name, row in rows.items():
                metrics[f"{column}/{name}"] = row[column]
        metrics.update(
            {
                "num_images": num_images,
                "num_images_without_detections": num_images - len(np.unique(dets.image_index)),
                "num_detections": len(dets),
                **counters,
                "time_engine_s": time.perf_counter() - t0,
            }
        )
        return metrics

    def _normalise(self, scores: np.ndarray, counters: dict[str, Any]) -> np.ndarray:
        """Min-max normalised scores (step 2); the range goes into ``counters``."""
        if not len(scores):
            return scores.astype(np.float64)
        lo, hi = float(scores.min()), float(scores.max())
        counters["score_min"], counters["score_max"] = lo, hi
        if hi == lo:
            warnings.warn(
                f"all {len(scores)} detections have the score {lo:g}: the min-max normalisation "
                "of the reference divides by zero; every detection is scored 1 instead",
                EvaluationWarning,
                stacklevel=3,
            )
            return np.ones(len(scores))
        return (scores.astype(np.float64) - lo) / (hi - lo)

    # -- image ids ---------------------------------------------------------------------------------

    def image_lookup(self) -> dict[Any, int]:
        """Image id -> position. Record ids (and their str); with ``gt_dir`` ``"event/name.jpg"``,
        ``"event/name"``, ``"name.jpg"`` and ``"name"`` (short forms only where unambiguous)."""
        lookup: dict[Any, int] = {}
        for pos, image_id in enumerate(self.image_ids):
            key = image_id.item() if hasattr(image_id, "item") else image_id
            lookup[key] = pos
            lookup.setdefault(str(key), pos)
        if self.ground_truth is not None:
            short: dict[str, list[int]] = {}
            for pos, (event, name) in enumerate(
                zip(self.ground_truth.events, self.ground_truth.names)
            ):
                lookup.setdefault(f"{event}/{name}", pos)
                for alias in (name, f"{name}.jpg"):
                    short.setdefault(alias, []).append(pos)
            for alias, positions in short.items():
                if len(positions) == 1:
                    lookup.setdefault(alias, positions[0])
        return lookup

    def category_lookup(self) -> dict[Any, int]:
        """Category id in a results file -> label: only ``1`` (faces)."""
        return {1: 1}

    def _canonical(self, image_id: Any) -> Any:
        key = image_id.item() if hasattr(image_id, "item") else image_id
        pos = self._lookup.get(key)
        if pos is None and not isinstance(key, str):
            pos = self._lookup.get(str(key))
        if pos is None:
            examples = [str(i) for i in self.image_ids[:3]]
            raise ResultsFileError(
                f"image id {image_id!r} is not in {self.source} ({len(self.image_ids)} images, "
                f"e.g. {examples}); are these predictions for the WIDER FACE validation split?"
            )
        return self.image_ids[pos]

    # -- outputs -----------------------------------------------------------------------------------

    def results(self) -> list[dict[str, Any]]:
        """The last evaluated detections as a COCO-format results list.

        ``image_id`` is the image id (``"event/name.jpg"``), ``category_id`` 1, ``bbox``
        ``[x, y, w, h]`` pixels, ``score`` as predicted (not normalised).
        """
        dets = self.last_detections
        if dets is None:
            dets = drop_invalid(
                self._store.detections(), strict=self.strict, source="predictions", counters={}
            )
        ids = [self.image_ids[i] for i in dets.image_index.tolist()]
        ids = [i.item() if hasattr(i, "item") else i for i in ids]
        return [
            {"image_id": i, "category_id": 1, "bbox": b, "score": s}
            for i, b, s in zip(ids, dets.get_xywh().tolist(), dets.scores.tolist())
        ]

    def pr_curves(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per subset (``all`` for plain AP) (recall, precision) of the last evaluation."""
        return dict(self.curves)

    def report_artifacts(self, *, with_results: bool = True) -> dict[str, Any]:
        """Keyword arguments for :func:`detector.evaluation.report.write_report`."""
        return {
            "pr_curves": self.pr_curves(),
            "summary": None,
            "results": self.results() if with_results else None,
            "pr_title": f"WIDER FACE precision/recall at IoU {self.iou_threshold:g}",
        }

    def evaluate_results_file(
        self, results_json: str | Path, *, out_dir: str | Path | None = None
    ) -> dict[str, Any]:
        """Evaluate a COCO-format results file (``image_id`` as accepted by :meth:`process`,
        ``category_id`` 1) and, with ``out_dir``, write the report there.

        Raises:
            ResultsFileError: unreadable file, malformed entries or unknown image ids.
        """
        from detector.evaluation.report import write_report
        from detector.evaluation.results import detections_from_results, load_results_file

        source = str(results_json)
        entries = load_results_file(results_json)
        dets = detections_from_results(
            entries,
            image_lookup=self._lookup,
            category_lookup=self.category_lookup(),
            source=source,
        )
        metrics = self.evaluate_detections(dets, source=source)
        metrics["results_file"] = source
        if out_dir is not None:
            write_report(metrics, out_dir, **self.report_artifacts(with_results=False))
        return metrics
