"""Batched inference over a loader and the evaluator that fits a dataset."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from ..config import PostprocessSchema
from ..postprocess import postprocess_detections

__all__ = ["build_evaluator", "run_inference"]


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


def build_evaluator(dataset, kind: str, **options: Any):
    """The evaluator for ``dataset``: ``coco`` (pycocotools protocol), ``voc07`` or ``voc``.

    COCO-JSON datasets are evaluated against their original annotation file (so the numbers are
    those pycocotools gives for that file); other datasets through their ``records()``.
    """
    classes = list(dataset.classes)
    if kind == "coco":
        from ..evaluation.coco import CocoEvaluator

        ann_file = getattr(dataset, "ann_file", None)
        if ann_file is not None and getattr(dataset, "label_to_category_id", None) is not None:
            return CocoEvaluator(
                classes,
                ann_file=ann_file,
                label_to_category_id=dataset.label_to_category_id,
                **options,
            )
        return CocoEvaluator(classes, records=dataset.records(), **options)
    if kind in ("voc07", "voc"):
        from ..evaluation.voc import VOCEvaluator

        return VOCEvaluator(classes, dataset.records(), metric=kind, **options)
    raise ValueError(f"unknown evaluator {kind!r}; choose coco, voc07 or voc")
