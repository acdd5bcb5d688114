"""Batched inference over a loader, the evaluator that fits a dataset, and the ``eval`` command.

Library functions take plain typed arguments (:func:`evaluate_checkpoint_on`,
:func:`evaluate_results_on`); :func:`evaluate_checkpoint` and :func:`evaluate_detections_file` are
the ``eval`` command's adapters from its spec.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from ..postprocess import postprocess_detections
from ..postprocess_config import PostprocessConfig
from .device import resolve_device

__all__ = [
    "evaluate_checkpoint",
    "evaluate_checkpoint_on",
    "evaluate_detections_file",
    "evaluate_results_on",
    "evaluator_for",
    "run_inference",
]

#: Why an image that the data loader replaced by the next readable one is left out.
UNREADABLE = "unreadable image: could not be decoded, see the DataWarning naming its file"


@torch.no_grad()
def run_inference(
    model: nn.Module,
    loader,
    post: PostprocessConfig,
    device: torch.device,
    *,
    progress: bool = False,
) -> tuple[list[Any], list[dict[str, Any]]]:
    """Predict every image of ``loader``; boxes are mapped back to original-image pixels.

    An image the dataset could not decode is replaced there by the next readable one (so an
    epoch never stops half way); such a stand-in (``batch["stands_in_for"]``) is not a
    prediction for the image asked for: it is dropped, and the unreadable image gets
    ``{"skipped": reason}`` instead, so that evaluators leave it out of the scoring.

    Returns:
        ``(image_ids, predictions)`` with one dict per image: ``boxes`` float32 ``[K, 4]`` pixel
        xyxy in the original image, ``scores`` ``[K]``, ``labels`` int64 ``[K]`` in ``1..C``
        (numpy arrays, cheap to gather across ranks), or ``{"skipped": reason}``.
    """
    was_training = model.training
    model.eval()
    core = getattr(model, "module", model)
    anchors, score_fn = core.anchors, core.score_fn
    image_ids: list[Any] = []
    predictions: list[dict[str, Any]] = []
    for batch in tqdm(loader, desc="eval", disable=not progress, dynamic_ncols=True):
        images = batch["images"].to(device)
        deltas, logits = model(images)
        dets = postprocess_detections(
            deltas.float(),
            logits.float(),
            anchors,
            [tuple(s) for s in batch["orig_sizes"]],
            score_fn=score_fn,
            score_thresh=post.score_thresh,
            nms_thresh=post.nms_thresh,
            topk_candidates=post.topk_candidates,
            max_detections=post.max_detections,
        )
        stand_ins = batch.get("stands_in_for") or [None] * len(dets)
        for image_id, replaced, d in zip(batch["image_ids"], stand_ins, dets):
            if replaced is not None:
                image_ids.append(replaced)
                predictions.append({"skipped": UNREADABLE})
            else:
                image_ids.append(image_id)
                predictions.append({k: v.cpu().numpy() for k, v in d.items()})
    model.train(was_training)
    return image_ids, predictions


def evaluator_for(dataset, kind: str, **options: Any):
    """The evaluator of ``kind`` (``coco``, ``voc07``, ``voc`` or ``widerface``) for ``dataset``.

    COCO-JSON datasets are scored against their original annotation file (so the numbers are
    those pycocotools gives for that file); other datasets through their ``records()``. WIDER FACE
    takes the official subset files from the dataset's ``eval_gt_dir`` when it has one. The
    evaluator itself comes from :func:`detector.evaluation.build_evaluator`.
    """
    from ..evaluation import build_evaluator

    ground_truth: dict[str, Any]
    ann_file = getattr(dataset, "ann_file", None)
    label_to_category_id = getattr(dataset, "label_to_category_id", None)
    if kind == "coco" and ann_file is not None and label_to_category_id is not None:
        ground_truth = {"ann_file": ann_file, "label_to_category_id": label_to_category_id}
    else:
        ground_truth = {"records": dataset.records()}
    if kind == "widerface":
        options.setdefault("gt_dir", getattr(dataset, "eval_gt_dir", None))
        options.setdefault("source", str(ann_file) if ann_file is not None else None)
    return build_evaluator(kind, class_names=list(dataset.classes), **ground_truth, **options)


def evaluate_checkpoint_on(
    checkpoint: str | Path,
    dataset,
    out_dir: str | Path,
    *,
    metric: str,
    postprocess: PostprocessConfig,
    device: str = "auto",
    batch_size: int = 32,
    num_workers: int = 2,
    backend: str = "auto",
    use_ema: bool = True,
    image_size: Sequence[int] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Batched inference of a checkpoint on ``dataset``, metrics and report in ``out_dir``.

    Args:
        checkpoint: a training checkpoint (``best.pt``, ``last.pt``).
        dataset: a detection dataset (the images are run, its ground truth scored).
        out_dir: run directory for ``metrics.json``, ``detections.json``, the per-class table
            and the precision/recall plot.
        metric: evaluator name (``coco``, ``voc``, ``voc07``, ``widerface``).
        postprocess: score threshold, NMS and detection limits.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1`` ...
        batch_size, num_workers: the loader's.
        backend: COCO engine (``auto``, ``pycocotools``, ``faster``, ``hotcoco``).
        use_ema: evaluate the EMA weights when the checkpoint has them.
        image_size: model input ``[H, W]``; default the checkpoint's.

    Images that could not be decoded are not scored (ground truth included); the metrics say
    how many (``num_images_skipped``) and which (``skipped_images``).
    """
    from ..evaluation import write_report
    from ..models import with_image_size
    from .checkpoint import load_detector
    from .class_subset import DatasetClassModel, restrict_to_dataset
    from .data import make_val_loader
    from .distributed import DistInfo

    torch_device = resolve_device(device)
    model, _classes = load_detector(checkpoint, use_ema=use_ema)
    if image_size is not None:
        model = with_image_size(model, image_size)
    # The one place where the model's classes meet the dataset's: matched by COCO category id or
    # name; the model's other classes are dropped before post-processing and counted.
    model, class_map = restrict_to_dataset(model, checkpoint, dataset, postprocess)
    if class_map is not None and not class_map.identity:
        print(f"classes: {class_map.summary()}")
    loader = make_val_loader(dataset, model.image_size, batch_size, num_workers, DistInfo())
    # The evaluator first: bad ground truth (e.g. a missing subset file) fails before inference.
    evaluator = evaluator_for(dataset, metric, **({"backend": backend} if metric == "coco" else {}))
    model.to(torch_device)
    image_ids, predictions = run_inference(
        model, loader, postprocess, torch_device, progress=progress
    )
    evaluator.process(image_ids, predictions)
    metrics = evaluator.evaluate()
    if isinstance(model, DatasetClassModel):
        metrics.update(model.report())
        print(
            f"{metrics['num_dropped_detections']} detections of classes the dataset lacks were "
            "dropped (metrics.json: dropped_detections/<class>)"
        )
    metrics["checkpoint"] = str(checkpoint)
    write_report(metrics, out_dir, **evaluator.report_artifacts())
    return metrics


def evaluate_checkpoint(spec, out_dir: str | Path) -> dict[str, Any]:
    """``eval checkpoint=...``: :func:`evaluate_checkpoint_on` with an
    :class:`~detector.config.EvalConfig`."""
    from ..data import dataset_from_config

    reader_split = None if spec.split == "val" else spec.split
    dataset = dataset_from_config(spec.dataset, "val", reader_split=reader_split)
    return evaluate_checkpoint_on(
        spec.checkpoint,
        dataset,
        out_dir,
        metric=spec.metric or spec.dataset.eval,
        postprocess=spec.postprocess,
        device=spec.device,
        batch_size=spec.batch_size,
        num_workers=spec.num_workers,
        backend=spec.backend,
        use_ema=spec.use_ema,
        image_size=spec.image_size,
    )


def evaluate_results_on(
    results: str | Path,
    out_dir: str | Path | None,
    *,
    metric: str,
    ann_file: str | Path | None = None,
    gt_dir: str | Path | None = None,
    dataset=None,
    backend: str = "auto",
) -> dict[str, Any]:
    """Score a results file against ground truth alone: no model, no image files.

    The ground truth is the first that applies: ``gt_dir`` (WIDER FACE ``eval_tools``
    ``.mat`` files), ``ann_file`` (a COCO annotation file, ``metric="coco"``), else
    ``dataset`` (built without image checks: its annotation files suffice).

    Args:
        results: a COCO-format results ``.json`` or a folder of WIDER FACE ``.txt`` files.
        out_dir: where to write the report (``None``: nothing written).
        metric: evaluator name.
    """
    from ..evaluation import build_evaluator
    from .coco_results import results_by_image_id

    if metric == "coco" and out_dir is not None:  # rows keyed by file_name get the file's ids
        coco_file = ann_file if ann_file is not None else getattr(dataset, "ann_file", None)
        if coco_file is not None:
            results = results_by_image_id(results, coco_file, out_dir)
    if metric == "widerface" and gt_dir is not None:
        evaluator = build_evaluator(metric, gt_dir=gt_dir)
    elif metric == "coco" and ann_file is not None:
        evaluator = build_evaluator(metric, ann_file=ann_file, backend=backend)
    elif dataset is not None:
        evaluator = evaluator_for(
            dataset, metric, **({"backend": backend} if metric == "coco" else {})
        )
    else:
        raise ValueError(f"{metric} scoring of {results} needs a ground truth: give a dataset")
    return evaluator.evaluate_results_file(results, out_dir=out_dir)


def evaluate_detections_file(spec, out_dir: str | Path) -> dict[str, Any]:
    """``eval detections=...``: :func:`evaluate_results_on` with an
    :class:`~detector.config.EvalConfig`; no model and no images."""
    from ..data import dataset_from_config

    metric = spec.metric or spec.dataset.eval
    cfg = spec.dataset
    ann_file = getattr(cfg, "ann_file", None)
    gt_dir = getattr(cfg, "eval_gt_dir", None) if metric == "widerface" else None
    dataset = None
    if gt_dir is None and not (metric == "coco" and ann_file is not None):
        options = {}
        if cfg.kind in ("coco", "synthetic", "voc", "widerface"):
            options["check_files"] = False  # a results file needs annotations, not images
        dataset = dataset_from_config(cfg, "val", **options)
    return evaluate_results_on(
        spec.detections,
        out_dir,
        metric=metric,
        ann_file=ann_file,
        gt_dir=gt_dir,
        dataset=dataset,
        backend=spec.backend,
    )
