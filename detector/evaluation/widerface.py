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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detector.evaluation.base import Evaluator
from detector.evaluation.detections import Detections, EvaluationWarning, ResultsFileError
from detector.evaluation.registry import register
from detector.evaluation.voc import voc_ap
from detector.evaluation.widerface_gt import (
    SUBSET_FILES,
    SUBSETS,
    VAL_MAT,
    WiderGroundTruth,
    WiderGroundTruthError,
    load_wider_ground_truth,
)
from detector.evaluation.widerface_match import match_faces, score_outcomes, threshold_pr_counts

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


class WiderFaceEvaluator(Evaluator):
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
    display_name = "WIDER FACE"
    unused_options = frozenset({"ann_file", "label_to_category_id", "backend", "metric"})

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
        if len(list(class_names)) != 1:
            raise ValueError(
                f"WIDER FACE evaluation is for one class (faces), got {list(class_names)}"
            )
        if num_thresholds < 1:
            raise ValueError(f"num_thresholds must be >= 1, got {num_thresholds}")
        self.iou_threshold = float(iou_threshold)
        self.num_thresholds = int(num_thresholds)
        self.curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if gt_dir is not None:
            self.ground_truth: WiderGroundTruth | None = load_wider_ground_truth(gt_dir, subsets)
            self.subsets = tuple(subsets)
            self.source = str(Path(gt_dir) / VAL_MAT)
            image_ids: list[Any] = self.ground_truth.image_keys
            self.gt_xywh = self.ground_truth.boxes
            self.kept = {s: self._kept_mask(self.ground_truth.keep[s]) for s in self.subsets}
        else:
            if records is None:
                raise ValueError("WIDER FACE evaluation needs records (plain AP) or gt_dir")
            self.ground_truth = None
            self.subsets = ()
            self.source = str(source) if source is not None else "the ground-truth records"
            image_ids = [r["image_id"] for r in records]
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
        self._init_evaluator(image_ids, class_names, strict=strict)
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

    # -- Evaluator hooks -------------------------------------------------------------------------

    def _coverage_counters(self, counters: dict[str, Any]) -> None:
        """Count the images with predictions; warn when some (not all, not none) have none."""
        processed = self._store.num_images_with_predictions
        counters["num_images_with_predictions"] = processed
        expected = len(self.image_ids) - len(self._store.skipped)
        if 0 < processed < expected:
            warnings.warn(
                f"{expected - processed} of the {expected} images of {self.source} got no "
                "predictions; their faces count as missed",
                EvaluationWarning,
                stacklevel=3,
            )

    def _score(
        self, dets: Detections, image_mask: np.ndarray, counters: dict[str, Any], source: str
    ) -> dict[str, Any]:
        """AP per subset (or plain AP) over the images of ``image_mask`` (the faces of the
        others are not counted); see the module docstring.

        Keys: ``mAP`` (mean subset AP, or the plain AP), ``AP`` (plain AP only), per subset
        (``all`` for plain AP) ``AP/<s>``, ``num_faces/<s>``, ``num_tp/<s>``, ``num_fp/<s>``,
        ``recall/<s>`` (with every detection); counters; ``protocol``.
        """
        t0 = time.perf_counter()
        if len(dets) and np.any(dets.labels != 1):
            raise ResultsFileError(f"{source}: face detections must have label 1")
        mask = image_mask
        face_in_scored = np.repeat(mask, [len(b) for b in self.gt_xywh])
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
        num_images = int(mask.sum())
        if self.ground_truth is not None:
            no_face = np.array([len(b) == 0 for b in self.gt_xywh], dtype=bool)
            skipped = no_face[image_index] if len(dets) else np.zeros(0, bool)
            norm = self._normalise(scores, counters)
            for subset in self.subsets:
                kept = self.kept[subset] & face_in_scored
                proposal, recall = score_outcomes(face, matched, kept)
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
            kept = self.kept["all"] & face_in_scored
            proposal, recall = score_outcomes(face, matched, kept)
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
            counters["num_gt_ignored"] = int((~kept & face_in_scored).sum())
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

    def canonical_image_id(self, image_id: Any) -> Any:
        """The ground-truth image id; with ``gt_dir`` also from the short forms (see
        :meth:`image_lookup`).

        Raises:
            ResultsFileError: an image id that is not in the ground truth (naming its file).
        """
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

    def category_ids(self, labels: np.ndarray) -> np.ndarray:
        """Faces are written with ``category_id`` 1."""
        return np.ones(len(labels), dtype=np.int64)

    def pr_curves(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per subset (``all`` for plain AP) (recall, precision) of the last evaluation."""
        return dict(self.curves)

    @property
    def pr_title(self) -> str:
        """Title of the precision/recall figure."""
        return f"WIDER FACE precision/recall at IoU {self.iou_threshold:g}"


register("widerface", WiderFaceEvaluator.from_options)
