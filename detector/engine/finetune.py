"""``train.py init=<checkpoint>``: start a fine-tune from another detector checkpoint.

Every tensor whose name and shape match is copied. The class predictors are copied *by class*:
the checkpoint's classes are matched with the new dataset's (:func:`detector.classes.match_classes`,
by COCO category id where both have ids, else by name) and, for each anchor of each predictor
layer, the output rows of the shared classes and of the background are copied to their new
positions; only the rows of classes the checkpoint does not have keep their fresh initialisation.
Fine-tuning the COCO model to ``person, car, dog`` therefore starts from a working detector.

The returned log text says which classes were kept and which are new, and names every tensor that
was not loaded with the reason (absent from the checkpoint, or its shape there and here, with the
model settings that differ, e.g. ``alpha 1.0 -> 0.75``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..classes import ClassMap, ClassSpec, class_spec_of_checkpoint, match_classes
from .checkpoint import load_checkpoint

__all__ = ["init_from_checkpoint", "transfer_class_rows"]

_CLASS_PREDICTOR = re.compile(r"^head\.class_predictors\.\d+\.(weight|bias)$")


def transfer_class_rows(
    source: Tensor, target: Tensor, class_map: ClassMap, num_source: int, num_target: int
) -> Tensor | None:
    """``target`` with the rows of shared classes (and background) taken from ``source``.

    Both are class-predictor tensors whose first dimension is ``anchors * (classes + 1)``
    (anchor-major, background first, as :class:`~detector.models.heads.SSDHead` lays them out).
    ``None`` when the layouts do not fit (another anchor count or input depth).
    """
    if source.shape[1:] != target.shape[1:]:
        return None
    if source.shape[0] % (num_source + 1) or target.shape[0] % (num_target + 1):
        return None
    anchors = source.shape[0] // (num_source + 1)
    if target.shape[0] // (num_target + 1) != anchors:
        return None
    out = target.detach().clone()
    src = source.reshape(anchors, num_source + 1, *source.shape[1:])
    dst = out.view(anchors, num_target + 1, *target.shape[1:])
    pairs = [(0, 0), *class_map.model_to_data.items()]
    src_idx = torch.tensor([m for m, _ in pairs])
    dst_idx = torch.tensor([d for _, d in pairs])
    dst[:, dst_idx] = src[:, src_idx].to(dst.dtype)
    return out


def _config_diff(theirs: dict[str, Any] | None, ours: dict[str, Any]) -> str:
    if not theirs:
        return ""
    diffs = [
        f"{k} {theirs[k]} -> {ours[k]}"
        for k in sorted(ours)
        if k in theirs and k not in ("num_classes",) and theirs[k] != ours[k]
    ]
    return "; model settings differ: " + ", ".join(diffs) if diffs else ""


def init_from_checkpoint(model: nn.Module, path: str | Path, classes: ClassSpec) -> str:
    """Load what fits of checkpoint ``path`` into ``model`` (classes ``classes``); the log text.

    Raises:
        CheckpointError: the checkpoint is missing or unreadable.
    """
    ckpt = load_checkpoint(path)
    source: dict[str, Tensor] = ckpt.get("ema") or ckpt["model"]
    own = model.state_dict()
    src_spec = class_spec_of_checkpoint(ckpt)
    num_source = int((ckpt.get("model_config") or {}).get("num_classes", 0)) or (
        len(src_spec.names) if src_spec else 0
    )
    class_map: ClassMap | None = None
    class_note = ""
    if src_spec is not None:
        try:
            class_map = match_classes(src_spec, classes)
        except ValueError as exc:
            class_note = f"class predictors initialised fresh: {exc}"
    loaded: dict[str, Tensor] = {}
    skipped: dict[str, str] = {}
    for name, tensor in own.items():
        if name not in source:
            skipped[name] = "not in the checkpoint"
            continue
        src = source[name]
        if _CLASS_PREDICTOR.match(name) and class_map is not None and not class_map.identity:
            rows = transfer_class_rows(src, tensor, class_map, num_source, len(classes.names))
            if rows is None:
                skipped[name] = (
                    f"class rows do not fit: {list(src.shape)} there, {list(tensor.shape)} here"
                )
            else:
                loaded[name] = rows
            continue
        if (
            _CLASS_PREDICTOR.match(name)
            and src_spec is None
            and class_map is None
            and (num_source != len(classes.names))
        ):
            skipped[name] = "the checkpoint names no classes"
            continue
        if _CLASS_PREDICTOR.match(name) and class_note:
            skipped[name] = "no class in common"
            continue
        if src.shape != tensor.shape:
            skipped[name] = f"shape {list(src.shape)} there, {list(tensor.shape)} here"
            continue
        loaded[name] = src
    model.load_state_dict(loaded, strict=False)

    lines = [f"init from {path}: {len(loaded)}/{len(own)} tensors loaded"]
    if class_map is not None:
        kept = [classes.describe(d) for d in sorted(class_map.model_to_data.values())]
        new = [classes.describe(d) for d in class_map.missing]
        how = "same classes" if class_map.identity else f"rows copied, matched by {class_map.by}"
        predictors = [k for k in own if _CLASS_PREDICTOR.match(k)]
        lost = [k for k in predictors if k in skipped]
        if lost:  # the rows could not go anywhere: say so rather than claim the classes were kept
            lines.append(
                f"  classes shared with the checkpoint (matched by {class_map.by}): "
                + ", ".join(kept)
                + f"; NOT kept: {len(lost)} of {len(predictors)} class predictor tensors do "
                "not fit (listed below)"
            )
            new = [classes.describe(d) for d in range(1, len(classes.names) + 1)]
        else:
            lines.append(
                f"  classes kept from the checkpoint ({how}): {len(kept)} of "
                f"{len(classes.names)}: " + ", ".join(kept)
            )
        lines.append("  classes initialised fresh: " + (", ".join(new) if new else "none"))
        if class_map.renamed:
            lines.append(
                "  same id, other name: "
                + ", ".join(f"{a!r} -> {b!r}" for a, b in class_map.renamed)
            )
    elif class_note:
        lines.append("  " + class_note)
    if skipped:
        backbone = [k for k in skipped if not k.startswith("head.")]
        head = len(skipped) - len(backbone)
        warn = "WARNING: " if backbone else ""
        lines.append(
            f"  {warn}re-initialised {len(skipped)} tensors ({len(backbone)} outside the head, "
            f"{head} in the head)"
            + _config_diff(ckpt.get("model_config"), _model_config(model))
            + ":"
        )
        lines.extend(f"    {k}: {why}" for k, why in skipped.items())
    unused = [k for k in source if k not in own]
    if unused:
        lines.append(f"  {len(unused)} checkpoint tensors have no place here: {', '.join(unused[:8])}"
                     + (" ..." if len(unused) > 8 else ""))  # fmt: skip
    return "\n".join(lines)


def _model_config(model: nn.Module) -> dict[str, Any]:
    config = getattr(model, "config", None)
    return config.to_dict() if config is not None else {}
