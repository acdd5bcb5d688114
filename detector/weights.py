"""Loading pretrained weights into the MobileNetV1 backbone.

Accepted now: a detector checkpoint (its backbone part) or a plain ``state_dict`` of
:class:`detector.models.MobileNetV1` (``.pt``/``.pth``; a classifier head in it is ignored).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .models import MobileNetV1

__all__ = ["load_backbone_weights"]


def load_backbone_weights(backbone: MobileNetV1, path: str | Path) -> str:
    """Copy matching backbone weights from ``path`` into ``backbone``; returns a log line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pretrained backbone weights not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read weights ({exc})") from exc
    if isinstance(state, dict) and "model" in state and "model_config" in state:
        prefix = "features.backbone."
        state = {k[len(prefix) :]: v for k, v in state["model"].items() if k.startswith(prefix)}
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    own = backbone.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in matched]
    if not matched:
        raise ValueError(
            f"{path}: no tensor matches the MobileNetV1(alpha={backbone.alpha}) backbone "
            "(different width multiplier or not MobileNetV1 weights?)"
        )
    if missing:
        raise ValueError(f"{path}: {len(missing)} backbone tensors missing or of another shape, e.g. {missing[:3]}")
    backbone.load_state_dict(matched, strict=False)
    return f"backbone weights loaded from {path} ({len(matched)} tensors)"
