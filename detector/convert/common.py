"""Helpers shared by the converters: folded convolutions, label files, checkpoint writing."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..engine.checkpoint import save_checkpoint
from ..models import SSD

__all__ = ["folded_conv_bn_state", "read_label_file", "save_converted", "sha256_of"]


def folded_conv_bn_state(
    prefix: str, bn: nn.BatchNorm2d, weight: Tensor, bias: Tensor
) -> dict[str, Tensor]:
    """State-dict entries that make ``conv -> bn`` compute ``conv(x, weight) + bias``.

    Deployed models (TFLite, Caffe with merged BN) fold BatchNorm into the convolution. Our layers
    keep a BatchNorm after every bias-free convolution, so the folded bias goes into an affine
    identity BatchNorm: ``running_mean = 0``, ``running_var = 1``,
    ``gamma = sqrt(1 + eps)``, ``beta = bias``. In eval mode ``bn(y) = y + bias``; in training
    mode the layer starts from the folded weights with ordinary batch statistics.

    Args:
        prefix: module path of the ``conv_bn_act`` block (``"features.backbone.features.0"``);
            the entries are ``{prefix}.conv.weight`` and ``{prefix}.bn.*``.
        bn: the block's BatchNorm (for ``eps`` and the channel count).
        weight: conv weight in PyTorch layout ``[O, I/groups, kH, kW]``.
        bias: folded bias ``[O]``.
    """
    channels = bn.num_features
    if bias.shape != (channels,):
        raise ValueError(f"{prefix}: bias of shape {tuple(bias.shape)}, expected ({channels},)")
    var = torch.ones(channels)
    return {
        f"{prefix}.conv.weight": weight.float(),
        f"{prefix}.bn.weight": torch.sqrt(var + bn.eps),
        f"{prefix}.bn.bias": bias.float(),
        f"{prefix}.bn.running_mean": torch.zeros(channels),
        f"{prefix}.bn.running_var": var,
        f"{prefix}.bn.num_batches_tracked": torch.tensor(0, dtype=torch.long),
    }


def read_label_file(path: str | Path | None, num_classes: int) -> list[str]:
    """Class names (background excluded, ``names[label - 1]`` names label ``label``).

    Accepts one name per line with either exactly ``num_classes`` lines, or ``num_classes + 1``
    lines whose first is a background placeholder (TFLite label maps start with ``???``; also
    ``background``/``__background__``). Placeholder names inside the list (``???`` for unused
    COCO ids) are kept so that label indices stay aligned with the model's class slots. Without a
    file, the names are ``class_1 .. class_N``.
    """
    if path is None:
        return [f"class_{i}" for i in range(1, num_classes + 1)]
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: label file not found")
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    names = [line.strip() for line in lines]
    if len(names) == num_classes + 1 and names[0].lower() in (
        "???",
        "background",
        "__background__",
        "bg",
    ):
        names = names[1:]
    if len(names) != num_classes:
        raise ValueError(
            f"{path}: {len(names)} labels, but the model has {num_classes} classes "
            f"(give {num_classes} names, or {num_classes + 1} with a background line first)"
        )
    return names


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_converted(
    model: SSD,
    classes: list[str],
    out: str | Path,
    source: dict[str, Any],
    class_ids: list[int] | None = None,
) -> Path:
    """Write an ordinary detector checkpoint (loadable by ``load_detector``, ``train.py init=``).

    ``source`` (plain values only) is stored under ``"converted_from"`` for provenance.
    ``class_ids`` (one category id per class, e.g. the COCO ids of a TF label map) go under
    ``"class_ids"``; evaluation and fine-tuning match classes by them (:mod:`detector.classes`).
    """
    if len(classes) != model.num_classes:
        raise ValueError(f"{len(classes)} class names for a {model.num_classes}-class model")
    payload = {
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "model_config": model.config.to_dict(),
        "classes": list(classes),
        "converted_from": source,
    }
    if class_ids is not None:
        if len(class_ids) != len(classes):
            raise ValueError(f"{len(class_ids)} class ids for {len(classes)} classes")
        payload["class_ids"] = [int(i) for i in class_ids]
    return save_checkpoint(payload, out)
