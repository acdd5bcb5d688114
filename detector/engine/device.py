"""Device selection shared by training, evaluation and the other commands."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(name: str) -> torch.device:
    """The ``torch.device`` for a device option.

    Args:
        name: ``"auto"`` (CUDA when available, else CPU) or any ``torch.device`` string
            (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``).

    Raises:
        RuntimeError: a CUDA device was asked for but CUDA is not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={name} but CUDA is not available")
    return device
