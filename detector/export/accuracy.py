"""Accuracy of an exported artifact as a COCO mAP change against the PyTorch model.

Detection agreement (:mod:`detector.export.verify`) says how many PyTorch detections an artifact
reproduces; for int8 exports what matters is how much detection quality is lost. With ground
truth at hand (a COCO annotation file, e.g. the synthetic dataset's ``val/annotations.json``, or
any :class:`~detector.data.DetectionDataset`) :func:`compare_map` runs the fp32 PyTorch model and
the artifact on the same preprocessed images, scores both with :class:`~detector.evaluation.
CocoEvaluator` (pycocotools protocol) and reports the change in points (100 x mAP).

Both sides see identical inputs (the export preprocessing of :mod:`detector.export.images`) and
identical post-processing settings (the sidecar's), so the change measures the artifact alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import VerificationConfig
from .errors import ExportError
from .images import IMAGE_EXTENSIONS, preprocess, read_rgb
from .numpy_post import detections_from_outputs
from .verify import reference_detections

__all__ = [
    "MapComparison",
    "compare_map",
    "find_annotations",
    "load_eval_dataset",
    "map_ground_truth",
]

#: Metrics compared, as (key in the report, key of CocoEvaluator.evaluate()).
METRICS = (("mAP", "AP"), ("mAP50", "AP50"))


@dataclass
class MapComparison:
    """COCO mAP of the PyTorch model and of the artifact on the same images.

    Attributes:
        source: where the ground truth came from.
        num_images: images evaluated.
        num_boxes: ground-truth boxes on those images.
        reference: ``{"mAP", "mAP50"}`` of the fp32 PyTorch model (fractions in ``[0, 1]``).
        artifact: the same for the artifact.
        change_points: ``artifact - reference`` in points (100 x mAP); negative is a loss.
        max_drop: fail when the mAP loss in points exceeds this (None: report only).
        passed: whether ``max_drop`` holds.
        failures: why not.
    """

    source: str
    num_images: int
    num_boxes: int
    reference: dict[str, float]
    artifact: dict[str, float]
    change_points: dict[str, float]
    max_drop: float | None = None
    passed: bool = True
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        parts = [
            f"{k} {100 * self.reference[k]:.2f} -> {100 * self.artifact[k]:.2f} "
            f"({self.change_points[k]:+.2f} points)"
            for k in self.reference
        ]
        limit = "" if self.max_drop is None else f", allowed loss {self.max_drop:g} points"
        return (
            f"COCO {'; '.join(parts)} on {self.num_images} images ({self.num_boxes} boxes) of "
            f"{self.source}{limit}"
        )


def find_annotations(images: str | Path | None) -> Path | None:
    """A COCO annotation file that belongs to an image folder, if there is one.

    Looks for ``annotations.json`` in the folder and in its parent (the synthetic dataset's
    ``<split>/images`` + ``<split>/annotations.json`` layout).

    Args:
        images: an image folder (anything else gives None).
    """
    if images in (None, "", "synthetic"):
        return None
    folder = Path(images)
    if not folder.is_dir():
        return None
    for candidate in (folder / "annotations.json", folder.parent / "annotations.json"):
        if candidate.is_file():
            return candidate
    return None


def load_eval_dataset(source: str | Path):
    """The ground truth named by ``source``: a COCO instances JSON, or a folder holding
    ``annotations.json`` (images in ``images/`` next to it, else beside it).

    Returns:
        A :class:`~detector.data.CocoDetection`.

    Raises:
        ExportError: no annotation file there, or it cannot be read.
    """
    from ..data import CocoDetection
    from ..data.base import DatasetError

    path = Path(source)
    if path.is_dir():
        found = find_annotations(path)
        if found is None:
            raise ExportError(f"map_annotations={source}: no annotations.json in that folder")
        path = found
    if not path.is_file() or path.suffix.lower() in IMAGE_EXTENSIONS:
        raise ExportError(f"map_annotations={source}: not a COCO annotation file")
    try:
        return CocoDetection(path)
    except DatasetError as exc:
        raise ExportError(f"map_annotations={source}: {exc}") from exc


def _pick(entries: Sequence[Any], limit: int | None) -> list[Any]:
    if not limit or limit <= 0 or len(entries) <= limit:
        return list(entries)
    idx = np.linspace(0, len(entries) - 1, limit).round().astype(int)
    return [entries[i] for i in sorted(set(idx.tolist()))]


def compare_map(
    run: Callable[[np.ndarray], Mapping[str, np.ndarray]],
    sidecar: Mapping[str, Any],
    model: torch.nn.Module,
    dataset: Any,
    *,
    source: str = "dataset",
    max_images: int | None = None,
    batch_size: int = 1,
    max_drop: float | None = None,
    backend: str = "auto",
) -> MapComparison:
    """COCO mAP and mAP@0.5 of ``model`` (PyTorch, fp32) and of the artifact ``run`` on
    ``dataset``.

    Args:
        run: the artifact in its runtime (``float32 [N, 3, H, W]`` -> outputs by name).
        sidecar: the artifact's sidecar (stage, anchors, post-processing settings).
        model: the PyTorch :class:`~detector.models.SSD` it was exported from.
        dataset: a :class:`~detector.data.DetectionDataset` (``entries``, ``classes``,
            ``records()``) whose classes are the model's.
        source: label for the report.
        max_images: evaluate at most this many images, spread over the dataset (None/0: all).
        batch_size: images per call of ``run`` (1 for fixed-batch graphs).
        max_drop: fail when the mAP loss exceeds this many points (None: report only).
        backend: COCO evaluation backend (see :class:`~detector.evaluation.CocoEvaluator`).

    Returns:
        The :class:`MapComparison`.

    Raises:
        ExportError: the dataset's class count differs from the model's.
    """
    from ..evaluation import CocoEvaluator

    if len(dataset.classes) != model.num_classes:
        raise ExportError(
            f"{source}: {len(dataset.classes)} classes but the model has {model.num_classes}; "
            "mAP needs ground truth of the model's classes"
        )
    keep = _pick(list(range(len(dataset.entries))), max_images)
    all_records = dataset.records()
    records = [all_records[i] for i in keep]
    paths = [dataset.entries[i].path for i in keep]
    image_size = tuple(sidecar["input"]["height_width"])
    post = sidecar["postprocess"]
    evaluators = {
        side: CocoEvaluator(list(dataset.classes), records=records, backend=backend)
        for side in ("reference", "artifact")
    }
    model = model.eval()
    step = max(1, int(batch_size))
    for start in range(0, len(paths), step):
        images = [read_rgb(p) for p in paths[start : start + step]]
        ids = [r["image_id"] for r in records[start : start + step]]
        sizes = [(int(im.shape[0]), int(im.shape[1])) for im in images]
        x = preprocess(images, image_size)
        with torch.no_grad():
            deltas, logits = model(torch.from_numpy(x))
        ref = reference_detections(model, deltas, logits, sizes, post)
        evaluators["reference"].process(ids, ref)
        evaluators["artifact"].process(ids, detections_from_outputs(run(x), sidecar, sizes))
    scores = {side: ev.evaluate() for side, ev in evaluators.items()}
    reference = {name: float(scores["reference"][key]) for name, key in METRICS}
    artifact = {name: float(scores["artifact"][key]) for name, key in METRICS}
    change = {k: round(100 * (artifact[k] - reference[k]), 4) for k in reference}
    failures = []
    if max_drop is not None and -change["mAP"] > max_drop:
        failures.append(
            f"COCO mAP drops by {-change['mAP']:.2f} points (allowed {max_drop:g}) on {source}"
        )
    return MapComparison(
        source=source,
        num_images=len(records),
        num_boxes=int(sum(len(r["labels"]) for r in records)),
        reference=reference,
        artifact=artifact,
        change_points=change,
        max_drop=max_drop,
        passed=not failures,
        failures=failures,
    )


def map_ground_truth(config: VerificationConfig, dataset: Any | None) -> tuple[Any | None, str]:
    """Ground truth for the int8 mAP check: ``dataset``, ``map_annotations``, or the
    ``annotations.json`` next to ``verify_images``; ``(None, "")`` when there is none."""
    if dataset is not None:
        return dataset, getattr(dataset, "name", "the given dataset")
    source = config.map_annotations or find_annotations(config.verify_images)
    if not source:
        return None, ""
    return load_eval_dataset(source), str(source)
