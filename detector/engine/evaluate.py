"""Batched inference over a loader and the evaluator that fits a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from ..config import PostprocessSchema
from ..postprocess import postprocess_detections

__all__ = [
    "evaluate_checkpoint",
    "evaluate_detections_file",
    "evaluator_for",
    "run_inference",
]


@torch.no_grad()
def run_inference(
    model: nn.Module,
    loader,
    post: PostprocessSchema,
    device: torch.device,
    *,
    progress: bool = False,
) -> tuple[list[Any], list[dict[str, Any]]]:
    """Predict every image of ``loader``; boxes are mapped back to original-image pixels.

    Returns:
        ``(image_ids, predictions)`` with one dict per image: ``boxes`` float32 ``[K, 4]`` pixel
        xyxy in the original image, ``scores`` ``[K]``, ``labels`` int64 ``[K]`` in ``1..C``
        (numpy arrays, cheap to gather across ranks).
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
        image_ids.extend(batch["image_ids"])
        predictions.extend({k: v.cpu().numpy() for k, v in d.items()} for d in dets)
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


def evaluate_checkpoint(spec, out_dir: str | Path) -> dict[str, Any]:
    """``eval.py checkpoint=...``: batched inference on a dataset split, metrics and report.

    Args:
        spec: an :class:`~detector.config.EvalSchema`.
        out_dir: run directory for ``metrics.json``, ``detections.json``, the per-class table and
            the precision/recall plot.
    """
    from ..data import build_dataset
    from ..evaluation import write_report
    from ..models import ModelConfig, build_ssd
    from .checkpoint import load_detector
    from .class_subset import DatasetClassModel, restrict_to_dataset
    from .data import dataset_options, make_val_loader, split_name
    from .distributed import DistInfo
    from .train import resolve_device

    out_dir = Path(out_dir)
    device = resolve_device(spec.device)
    model, _classes = load_detector(spec.checkpoint, use_ema=spec.use_ema)
    if spec.image_size is not None and tuple(spec.image_size) != model.image_size:
        config = ModelConfig.from_dict(
            {**model.config.to_dict(), "image_size": list(spec.image_size)}
        )
        resized = build_ssd(config)
        resized.load_state_dict(model.state_dict())
        model = resized.eval()
    split = split_name(spec.dataset, "val") if spec.split == "val" else spec.split
    dataset = build_dataset(spec.dataset.kind, split, **dataset_options(spec.dataset, "val"))
    # Model classes -> dataset labels, by category id or name; other classes dropped and counted.
    model, class_map = restrict_to_dataset(model, spec.checkpoint, dataset, spec.postprocess)
    if class_map is not None and not class_map.identity:
        print(f"classes: {class_map.summary()}")
    loader = make_val_loader(
        dataset, model.image_size, spec.batch_size, spec.num_workers, DistInfo()
    )
    # The evaluator first: bad ground truth (e.g. a missing subset file) fails before inference.
    evaluator = evaluator_for(dataset, spec.metric or spec.dataset.eval, **_backend(spec))
    model.to(device)
    image_ids, predictions = run_inference(model, loader, spec.postprocess, device, progress=True)
    evaluator.process(image_ids, predictions)
    metrics = evaluator.evaluate()
    if isinstance(model, DatasetClassModel):
        metrics.update(model.report())
        print(f"{metrics['num_dropped_detections']} detections of classes the dataset lacks "
              "were dropped (metrics.json: dropped_detections/<class>)")  # fmt: skip
    metrics["checkpoint"] = str(spec.checkpoint)
    write_report(metrics, out_dir, **evaluator.report_artifacts())
    return metrics


def evaluate_detections_file(spec, out_dir: str | Path) -> dict[str, Any]:
    """``eval.py detections=...``: score a COCO-format results file, no model and no images."""
    from ..data import build_dataset
    from ..evaluation import evaluate_results_file
    from .coco_results import results_by_image_id
    from .data import dataset_options, split_name

    kind = spec.metric or spec.dataset.eval
    ann_file = spec.dataset.ann_file
    if kind == "widerface":  # the official .mat files need no dataset; plain AP its records
        from ..evaluation import build_evaluator

        if spec.dataset.eval_gt_dir is not None:
            evaluator = build_evaluator(kind, gt_dir=spec.dataset.eval_gt_dir)
        else:
            options = dataset_options(spec.dataset, "val")
            dataset = build_dataset(spec.dataset.kind, split_name(spec.dataset, "val"), **options)
            evaluator = evaluator_for(dataset, kind)
        return evaluator.evaluate_results_file(spec.detections, out_dir=out_dir)
    if kind == "coco" and ann_file is not None:
        detections = results_by_image_id(spec.detections, ann_file, out_dir)  # file_name keys
        return evaluate_results_file(
            detections, ann_file=ann_file, kind="coco", backend=spec.backend, out_dir=out_dir
        )
    options = dataset_options(spec.dataset, "val")
    if spec.dataset.kind in ("coco", "synthetic"):
        options["check_files"] = False  # a results file needs annotations, not images
    dataset = build_dataset(spec.dataset.kind, split_name(spec.dataset, "val"), **options)
    extra = _backend(spec) if kind == "coco" else {}
    if kind == "coco" and getattr(dataset, "ann_file", None) is not None:
        return evaluate_results_file(
            results_by_image_id(spec.detections, dataset.ann_file, out_dir),  # file_name keys
            ann_file=dataset.ann_file,
            label_to_category_id=dataset.label_to_category_id,
            kind="coco",
            out_dir=out_dir,
            **extra,
        )
    return evaluate_results_file(
        spec.detections,
        records=dataset.records(),
        class_names=list(dataset.classes),
        kind=kind,
        out_dir=out_dir,
        **extra,
    )


def _backend(spec) -> dict[str, Any]:
    return {"backend": spec.backend} if (spec.metric or spec.dataset.eval) == "coco" else {}
