"""Device selection shared by training, evaluation and detection (the ``device=`` option)."""

from __future__ import annotations

import re

import torch

__all__ = ["DEVICE_PATTERN", "check_device_name", "resolve_device"]

#: What ``device=`` accepts: ``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N``.
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_device_name(name: str) -> None:
    """Raise ``ValueError`` for a ``device=`` value that is not a device name (no torch work)."""
    if not DEVICE_PATTERN.fullmatch(str(name)):
        raise ValueError(f"device={name}: choose auto, cpu, cuda, cuda:N or mps")


def resolve_device(name: str) -> torch.device:
    """The ``torch.device`` for a ``device=`` option.

    Args:
        name: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``,
            ``"mps"``.

    Raises:
        ValueError: not a device name, or CUDA asked for where it is not available (one line,
            naming the value and what to use instead).
    """
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={name}: CUDA is not available on this machine (torch {torch.__version__}); "
            "use device=cpu or auto"
        )
    return device
