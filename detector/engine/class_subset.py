"""Evaluating a model on a dataset whose classes differ from the model's.

:func:`restrict_to_dataset` wraps a model so that its class logits come out indexed by the
*dataset's* labels (matched with :func:`detector.classes.match_classes`): a 90-id COCO model on an
80-category COCO file, or on a ``person, car`` subset, is scored on the shared categories only.
The restriction happens before the post-processing, so detections of classes the dataset lacks
never take one of the ``max_detections`` places of a shared class. They are still post-processed
on the side (same settings) to be counted for the report.

Scores are exact for both score functions: sigmoid logits are selected as they are; for softmax
models the probabilities over *all* the model's columns are computed first, selected, and handed
on as ``log(p / (1 - p))`` with ``score_fn = "sigmoid"`` (``sigmoid`` of that is ``p`` again).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..classes import ClassMap, class_spec_of_checkpoint, dataset_class_spec, match_classes
from ..postprocess import postprocess_detections

__all__ = ["DatasetClassModel", "restrict_to_dataset"]

_NEG = -1.0e4  # sigmoid(-1e4) == 0: a dataset class the model does not have never scores


class DatasetClassModel(nn.Module):
    """``inner`` with class logits re-indexed to the dataset's labels ``0..D`` (see module doc).

    Attributes:
        dropped_counts: detections of the model's other classes seen so far, by model name.
    """

    def __init__(self, inner: nn.Module, class_map: ClassMap, post: Any) -> None:
        super().__init__()
        self.inner = inner
        self.class_map = class_map
        self.post = post
        num_data = len(class_map.data.names)
        index = torch.zeros(num_data + 1, dtype=torch.long)
        valid = torch.zeros(num_data + 1, dtype=torch.bool)
        for m, d in class_map.model_to_data.items():
            index[d], valid[d] = m, True
        self.register_buffer("index", index, persistent=False)
        self.register_buffer("valid", valid, persistent=False)
        others = [m for m in range(1, inner.num_classes + 1) if m not in class_map.model_to_data]
        self.other_labels = others
        self.register_buffer(
            "other_index", torch.tensor([0, *others], dtype=torch.long), persistent=False
        )
        self.inner_score_fn = inner.score_fn
        self.score_fn = "sigmoid"
        self.num_classes = num_data
        self.dropped_counts: Counter[str] = Counter()

    @property
    def anchors(self) -> Tensor:
        return self.inner.anchors

    @property
    def image_size(self) -> tuple[int, int]:
        return self.inner.image_size

    def _as_sigmoid_logits(self, logits: Tensor, index: Tensor) -> Tensor:
        logits = logits.float()
        if self.inner_score_fn == "sigmoid":
            return logits[..., index]
        p = logits.softmax(dim=-1)[..., index].clamp(1e-12, 1.0 - 1e-7)
        return torch.log(p) - torch.log1p(-p)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        deltas, logits = self.inner(images)
        out = self._as_sigmoid_logits(logits, self.index)
        out = torch.where(self.valid, out, torch.full_like(out, _NEG))
        if self.other_labels:
            self._count_others(deltas, logits)
        return deltas, out

    @torch.no_grad()
    def _count_others(self, deltas: Tensor, logits: Tensor) -> None:
        other = self._as_sigmoid_logits(logits, self.other_index)
        dets = postprocess_detections(
            deltas.float(),
            other,
            self.inner.anchors,
            [tuple(int(v) for v in self.inner.image_size)] * deltas.shape[0],
            score_fn="sigmoid",
            score_thresh=self.post.score_thresh,
            nms_thresh=self.post.nms_thresh,
            topk_candidates=self.post.topk_candidates,
            max_detections=self.post.max_detections,
        )
        names = self.class_map.model.names
        for det in dets:
            for k in det["labels"].tolist():
                self.dropped_counts[names[self.other_labels[k - 1] - 1]] += 1

    def report(self) -> dict[str, Any]:
        """Metrics entries: the class map and the dropped detections, total and per class."""
        out: dict[str, Any] = {
            "class_map": self.class_map.summary(),
            "class_map_by": self.class_map.by,
            "num_shared_classes": len(self.class_map.model_to_data),
            "num_dropped_detections": int(sum(self.dropped_counts.values())),
        }
        for name, n in sorted(self.dropped_counts.items(), key=lambda t: (-t[1], t[0])):
            out[f"dropped_detections/{name}"] = int(n)
        return out


def restrict_to_dataset(
    model: nn.Module, checkpoint: str | Path, dataset: Any, post: Any
) -> tuple[nn.Module, ClassMap | None]:
    """``model`` as it should be evaluated on ``dataset``.

    The same model when the checkpoint names no classes (labels are taken as the dataset's) or
    its classes are the dataset's in the same order; else a :class:`DatasetClassModel`.

    Raises:
        ValueError: no class in common (both lists named), or a checkpoint without class names
            whose class count differs from the dataset's.
    """
    from .checkpoint import load_checkpoint

    spec = class_spec_of_checkpoint(load_checkpoint(checkpoint))
    if spec is None:
        if model.num_classes != len(dataset.classes):
            raise ValueError(
                f"{checkpoint} stores no class names and has {model.num_classes} classes, but the "
                f"dataset has {len(dataset.classes)}: {list(dataset.classes)}"
            )
        return model, None
    class_map = match_classes(spec, dataset_class_spec(dataset))
    if class_map.identity:
        return model, class_map
    return DatasetClassModel(model, class_map, post), class_map
