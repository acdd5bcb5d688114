"""Built-in checkpoints shipped inside the package: ``checkpoint=face`` instead of a path.

Each entry of :data:`BUILTIN_CHECKPOINTS` names a small detector checkpoint stored in
``detector/weights/`` (package data, so it is present after a plain ``pip install``; that folder is
a data folder, not a package: ``detector.weights`` is the backbone-weights module
``detector/weights.py``); ``detector/weights/README.md`` states how each was trained. Every loader of the project (``detect.py``, ``eval.py``, ``train.py init=``)
goes through :func:`resolve_checkpoint`, so a name works wherever a checkpoint path does::

    python detect.py checkpoint=face source=0
    python eval.py checkpoint=face dataset=folder dataset.root=<face_mask> ...
    python train.py experiment=face_mask init=face

A real file always wins over a name: ``checkpoint=face`` loads ``./face`` if such a file exists.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "BUILTIN_CHECKPOINTS",
    "WEIGHTS_DIR",
    "UnknownCheckpointError",
    "available_checkpoints",
    "builtin_path",
    "resolve_checkpoint",
]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

#: name -> {"file": file name in this folder, "description": one line}
BUILTIN_CHECKPOINTS: dict[str, dict[str, str]] = {
    "face": {
        "file": "face.pt",
        "description": (
            "face detector, 1 class 'face': SSDLite-MobileNetV1 alpha 0.25 at 320x240 (W x H), "
            "4420 face anchors; trained on the real face_mask photos (experiment=face_mask)"
        ),
    },
}


class UnknownCheckpointError(FileNotFoundError):
    """Neither an existing checkpoint file nor the name of a built-in checkpoint."""


def available_checkpoints() -> str:
    """The built-in names with their descriptions, one per line (for error messages and docs)."""
    return "\n".join(
        f"  {name}: {entry['description']}" for name, entry in BUILTIN_CHECKPOINTS.items()
    )


def builtin_path(name: str) -> Path:
    """File of the built-in checkpoint ``name``.

    Raises:
        UnknownCheckpointError: ``name`` is not built in, or its file is missing from this
            installation (a package built without its data files).
    """
    entry = BUILTIN_CHECKPOINTS.get(name)
    if entry is None:
        raise UnknownCheckpointError(
            f"{name!r} is not a built-in checkpoint; available: {', '.join(BUILTIN_CHECKPOINTS)}"
        )
    path = WEIGHTS_DIR / entry["file"]
    if not path.is_file():
        raise UnknownCheckpointError(
            f"built-in checkpoint {name!r}: {path} is missing from this installation "
            "(the package was built without its weights files)"
        )
    return path


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """An existing checkpoint file as given, else the file of a built-in checkpoint by name.

    Args:
        name_or_path: a checkpoint file (``best.pt``) or a built-in name (``face``).

    Returns:
        Path of the checkpoint file (not loaded or checked here).

    Raises:
        UnknownCheckpointError: not an existing file and not a built-in name; the message lists
            the available names.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = str(name_or_path)
    if name in BUILTIN_CHECKPOINTS:
        return builtin_path(name)
    if path.suffix or len(path.parts) > 1:  # a path, not a name: no list of names
        raise UnknownCheckpointError(f"{path}: checkpoint not found")
    raise UnknownCheckpointError(
        f"{name}: checkpoint not found (no such file, and not a built-in checkpoint name); "
        f"built-in checkpoints:\n{available_checkpoints()}"
    )
