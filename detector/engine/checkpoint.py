"""Checkpoints: written atomically, loadable with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors and plain containers only::

    {"format_version": 1, "model": state_dict, "model_config": {...}, "classes": [...],
     "optimizer": ..., "scheduler": ..., "scaler": ..., "ema": ..., "epoch": int, "step": int,
     "rng": {...}, "train_config": {...}, "metrics": {...}}

No live objects are pickled (no DictConfig, no numpy arrays), so loading never executes code.
"""

from __future__ import annotations

import errno
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models import SSD, ModelConfig, build_ssd

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "capture_rng_state",
    "load_checkpoint",
    "load_detector",
    "remove_stale_temporaries",
    "restore_rng_state",
    "save_checkpoint",
    "strip_checkpoint",
]

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or not one of ours."""


def remove_stale_temporaries(folder: str | Path, name: str | None = None) -> list[Path]:
    """Delete the temporary files that interrupted :func:`save_checkpoint` calls left in ``folder``
    (``.<name>.*.tmp``, up to a checkpoint's size each; every ``*.pt`` when ``name`` is None).

    A process killed while writing cannot remove its own temporary file; the next save or the next
    run in the folder does. Returns the files removed.
    """
    folder = Path(folder)
    pattern = f".{name}.*.tmp" if name else ".*.pt.*.tmp"
    removed = []
    if folder.is_dir():
        for tmp in folder.glob(pattern):
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:  # another process removed it, or read-only: nothing to do
                pass
    return removed


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """Write ``payload`` to ``path`` atomically (temporary file in the same folder, fsync, rename).

    An interrupted write never leaves a truncated ``path`` behind: readers see the old file or the
    new one. Temporary files of earlier interrupted writes to ``path`` are removed first.

    Raises:
        CheckpointError: the file could not be written (disk full, permissions ...); ``path`` is
            unchanged and the temporary file is removed.
    """
    path = Path(path)
    payload = {"format_version": FORMAT_VERSION, **payload}
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path.parent, path.name)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise CheckpointError(_write_failure(path, exc)) from exc
        raise
    return path


def _write_failure(path: Path, exc: OSError) -> str:
    reason = (
        "no space left on device"
        if exc.errno == errno.ENOSPC
        else (exc.strerror or str(exc) or type(exc).__name__)
    )
    if path.is_file():
        kept = f"the previous {path.name} is intact (the partial file was removed)"
    else:
        kept = "no partial file was left behind"
    return f"cannot write {path}: {reason}; {kept}. Free space or choose another folder and rerun"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint (a file, or a built-in name such as ``face``:
    :mod:`detector.builtin_weights`) with ``weights_only=True`` and check that it is a detector
    checkpoint.

    The stored model config is validated (types, sizes, counts; see :class:`ModelConfig`) before
    anything is built, so a crafted or damaged checkpoint is refused in one line by every command
    that reads checkpoints (eval, detect, export, ``resume=``, ``init=``).
    """
    from ..builtin_weights import resolve_checkpoint

    try:
        path = resolve_checkpoint(path)
    except FileNotFoundError as exc:
        raise CheckpointError(str(exc)) from None
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes), not a checkpoint")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt, truncated, not a torch file or holding objects
        raise CheckpointError(
            f"{path}: cannot read checkpoint ({_load_failure(exc, size)})"
        ) from exc  # the cause is kept for callers that classify it; one-line errors omit it
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_config" not in ckpt:
        raise CheckpointError(f"{path}: not a detector checkpoint (no 'model'/'model_config')")
    version = ckpt.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{path}: format_version must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {ckpt['format_version']} is newer than this version "
            f"of detector understands ({FORMAT_VERSION})"
        )
    _check_contents(path, ckpt)
    return ckpt


def _load_failure(exc: Exception, size: int) -> str:
    """torch's reason, without its advice to load with ``weights_only=False`` (never safe here)."""
    text = str(exc).strip()
    if "weights_only" in text or "Weights only load failed" in text:
        return (
            "it holds Python objects other than tensors and plain containers, which are never "
            "loaded (weights_only=True); only checkpoints written by detector can be read"
        )
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else f"{type(exc).__name__}, {size} bytes"


def _check_contents(path: Path, ckpt: dict[str, Any]) -> None:
    """Types and sizes of what commands use, before anything is built from them."""
    try:
        config = ModelConfig.from_dict(ckpt["model_config"])
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: invalid model_config: {exc}") from None
    for key in ("model", "ema"):
        state = ckpt.get(key)
        if state is None and key == "ema":
            continue
        if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
        ):
            raise CheckpointError(f"{path}: '{key}' must map parameter names to tensors")
    classes = ckpt.get("classes")
    if classes is not None:
        if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes):
            raise CheckpointError(f"{path}: 'classes' must be a list of names")
        if classes and len(classes) != config.num_classes:
            raise CheckpointError(
                f"{path}: {len(classes)} class names for a model of {config.num_classes} classes"
            )
    for key in ("epoch", "step", "batch_in_epoch"):
        value = ckpt.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CheckpointError(f"{path}: '{key}' must be a non-negative integer, got {value!r}")


def load_detector(
    path: str | Path, *, use_ema: bool = True, map_location: str | torch.device = "cpu"
) -> tuple[SSD, list[str]]:
    """Rebuild the detector stored in a checkpoint.

    Args:
        path: checkpoint file (``best.pt``/``last.pt`` or a converted model).
        use_ema: take the EMA weights when the checkpoint has them.

    Returns:
        ``(model in eval mode, class names)``.
    """
    ckpt = load_checkpoint(path, map_location)
    model = build_ssd(ModelConfig.from_dict(ckpt["model_config"]))
    state = ckpt["ema"] if use_ema and ckpt.get("ema") is not None else ckpt["model"]
    model.load_state_dict(state, strict=True)
    return model.eval(), list(ckpt.get("classes", []))


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as tensors and plain containers."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": _to_lists(random.getstate()),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    random.setstate(_to_tuples(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_to_lists(v) for v in value]
    return value


def _to_tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_to_tuples(v) for v in value)
    return value


def strip_checkpoint(
    source: str | Path, target: str | Path, *, use_ema: bool = True, note: str = ""
) -> Path:
    """Write a small inference checkpoint from a training one (``last.pt``/``best.pt``).

    Keeps ``format_version``, ``model`` (the EMA weights when ``use_ema`` and present),
    ``model_config``, ``classes``, the step count and the metrics of the run's last evaluation
    (``metrics``), plus ``note`` (e.g. the command that
    trained it); drops the optimizer, scheduler, EMA copy, RNG state and training config. The
    result loads wherever a checkpoint does (``torch.load(weights_only=True)``).

    Raises:
        CheckpointError: ``source`` is not a detector checkpoint.
    """
    ckpt = load_checkpoint(source)
    ema = ckpt.get("ema") if use_ema else None
    state = ema if ema is not None else ckpt["model"]
    history = ckpt.get("history") or []
    last = history[-1] if history and isinstance(history[-1], dict) else {}
    payload = {
        "model": {k: v.detach().clone().contiguous() for k, v in state.items()},
        "model_config": ckpt["model_config"],
        "classes": list(ckpt.get("classes", [])),
        "class_ids": ckpt.get("class_ids"),
        "metrics": {
            k: float(v) for k, v in last.items() if isinstance(v, (int, float)) and k != "epoch"
        },
        "step": int(ckpt.get("step", 0)),
        "weights": "ema" if ema is not None else "model",
        "note": note,
    }
    return save_checkpoint(payload, target)
