"""The official WIDER FACE validation ground truth: the ``.mat`` files of ``eval_tools``.

``ground_truth/wider_face_val.mat`` holds ``event_list``, ``file_list`` and ``face_bbx_list`` (per
image ``[N, 4]`` ``x y w h`` faces, *all* faces, invalid ones included); each subset file
``wider_{easy,medium,hard}_val.mat`` holds ``gt_list``, per image the 1-based indices of the faces
that belong to the subset. :func:`load_wider_ground_truth` reads them into one entry per image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "SUBSETS",
    "SUBSET_FILES",
    "VAL_MAT",
    "WiderGroundTruth",
    "WiderGroundTruthError",
    "load_wider_ground_truth",
]

#: The official subsets, in the order their APs are reported.
SUBSETS: tuple[str, ...] = ("easy", "medium", "hard")
#: File of every validation face (``event_list``, ``file_list``, ``face_bbx_list``).
VAL_MAT = "wider_face_val.mat"
#: File of each subset's keep lists (``gt_list``).
SUBSET_FILES: dict[str, str] = {s: f"wider_{s}_val.mat" for s in SUBSETS}


class WiderGroundTruthError(ValueError):
    """A WIDER FACE ground-truth ``.mat`` file lacks a field or is not in the official layout."""


@dataclass
class WiderGroundTruth:
    """The official validation ground truth, flattened to one entry per image.

    Attributes:
        events: ``[I]`` event folder of each image (``"0--Parade"``).
        names: ``[I]`` file name without extension (``"0_Parade_marchingband_1_465"``).
        boxes: ``[I]`` float64 ``[N_i, 4]`` faces as ``[x, y, w, h]`` pixels, as stored.
        keep: subset name -> ``[I]`` int64 ``[K_i]`` 0-based indices of the subset's faces.
        source: the folder the files were read from (named in messages).
    """

    events: list[str]
    names: list[str]
    boxes: list[np.ndarray]
    keep: dict[str, list[np.ndarray]]
    source: Path

    @property
    def image_keys(self) -> list[str]:
        """``"event/name.jpg"`` per image: the image path relative to ``WIDER_val/images``."""
        return [f"{e}/{n}.jpg" for e, n in zip(self.events, self.names)]


def _mat_str(value: Any, what: str, path: Path) -> str:
    """Unwrap the nested object/char arrays ``scipy.io.loadmat`` makes of a MATLAB string."""
    for _ in range(8):
        if isinstance(value, str):
            return value
        arr = np.asarray(value)
        if arr.dtype.kind == "U" and arr.size == 1:
            return str(arr.reshape(-1)[0])
        if arr.size != 1:
            break
        value = arr.reshape(-1)[0]
    raise WiderGroundTruthError(f"{path}: {what} is not a string ({value!r:.80})")


def _cells(value: Any, what: str, path: Path) -> list[Any]:
    """The elements of a MATLAB cell array (an ``[n, 1]`` or ``[1, n]`` object array)."""
    arr = np.asarray(value)
    if arr.dtype != object:
        raise WiderGroundTruthError(f"{path}: {what} is not a cell array (dtype {arr.dtype})")
    return list(arr.reshape(-1))


def _load_mat(path: Path, keys: Sequence[str]) -> dict[str, Any]:
    from scipy.io import loadmat

    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: WIDER FACE ground-truth file not found (the official eval_tools "
            f"ground_truth/ folder holds {VAL_MAT} and {', '.join(SUBSET_FILES.values())})"
        )
    try:
        mat = loadmat(str(path))
    except Exception as exc:  # scipy raises several types for files that are not .mat
        raise WiderGroundTruthError(f"{path}: cannot read as a MATLAB .mat file ({exc})") from None
    missing = [k for k in keys if k not in mat]
    if missing:
        raise WiderGroundTruthError(
            f"{path}: missing {missing} (has {sorted(k for k in mat if not k.startswith('__'))})"
        )
    return mat


def load_wider_ground_truth(
    gt_dir: str | Path, subsets: Sequence[str] = SUBSETS
) -> WiderGroundTruth:
    """Read ``wider_face_val.mat`` and the subset files of the official ``eval_tools``.

    Args:
        gt_dir: folder with ``wider_face_val.mat`` and ``wider_<subset>_val.mat``.
        subsets: which subset files to read (names of :data:`SUBSETS`).

    Returns:
        The ground truth with one entry per image, in the files' event / image order.

    Raises:
        FileNotFoundError: a file is missing (named).
        WiderGroundTruthError: a file lacks a field, or its lists disagree in length with
            ``wider_face_val.mat`` (named, with the event), or a keep index is out of range.
    """
    gt_dir = Path(gt_dir)
    unknown = [s for s in subsets if s not in SUBSET_FILES]
    if unknown:
        raise ValueError(f"unknown WIDER FACE subset(s) {unknown}; choose from {list(SUBSETS)}")
    val_path = gt_dir / VAL_MAT
    mat = _load_mat(val_path, ("event_list", "file_list", "face_bbx_list"))
    event_cells = _cells(mat["event_list"], "event_list", val_path)
    file_cells = _cells(mat["file_list"], "file_list", val_path)
    box_cells = _cells(mat["face_bbx_list"], "face_bbx_list", val_path)
    if not len(event_cells) == len(file_cells) == len(box_cells):
        raise WiderGroundTruthError(
            f"{val_path}: event_list ({len(event_cells)}), file_list ({len(file_cells)}) and "
            f"face_bbx_list ({len(box_cells)}) have different lengths"
        )
    events: list[str] = []
    names: list[str] = []
    boxes: list[np.ndarray] = []
    per_event: list[int] = []
    for i, (ev, files, faces) in enumerate(zip(event_cells, file_cells, box_cells)):
        event = _mat_str(ev, f"event_list[{i}]", val_path)
        files = _cells(files, f"file_list of event {event!r}", val_path)
        faces = _cells(faces, f"face_bbx_list of event {event!r}", val_path)
        if len(files) != len(faces):
            raise WiderGroundTruthError(
                f"{val_path}: event {event!r} has {len(files)} files but {len(faces)} face lists"
            )
        per_event.append(len(files))
        for j, (f, b) in enumerate(zip(files, faces)):
            names.append(_mat_str(f, f"file_list of event {event!r}, image {j}", val_path))
            events.append(event)
            arr = np.asarray(b, dtype=np.float64)
            if arr.size == 0:
                arr = arr.reshape(0, 4)
            if arr.ndim != 2 or arr.shape[1] < 4:
                raise WiderGroundTruthError(
                    f"{val_path}: faces of {event}/{names[-1]} must be [N, 4] x y w h, got "
                    f"shape {arr.shape}"
                )
            boxes.append(arr[:, :4].copy())
    keep: dict[str, list[np.ndarray]] = {}
    for subset in subsets:
        path = gt_dir / SUBSET_FILES[subset]
        sub = _load_mat(path, ("gt_list",))
        sub_events = _cells(sub["gt_list"], "gt_list", path)
        if len(sub_events) != len(per_event):
            raise WiderGroundTruthError(
                f"{path}: gt_list has {len(sub_events)} events but {VAL_MAT} has {len(per_event)}"
            )
        lists: list[np.ndarray] = []
        pos = 0
        for i, (cell, n) in enumerate(zip(sub_events, per_event)):
            images = _cells(cell, f"gt_list[{i}]", path)
            if len(images) != n:
                raise WiderGroundTruthError(
                    f"{path}: event {events[pos] if n else i!r} has {len(images)} keep lists but "
                    f"{n} images in {VAL_MAT}"
                )
            for j, idx in enumerate(images):
                k = np.asarray(idx, dtype=np.float64).reshape(-1)
                num_faces = len(boxes[pos + j])
                if k.size and (np.any(k != np.round(k)) or k.min() < 1 or k.max() > num_faces):
                    raise WiderGroundTruthError(
                        f"{path}: keep list of {events[pos + j]}/{names[pos + j]} must hold "
                        f"1-based face indices in 1..{num_faces}, got {k.tolist()[:10]}"
                    )
                lists.append(k.astype(np.int64) - 1)
            pos += n
        keep[subset] = lists
    return WiderGroundTruth(events, names, boxes, keep, gt_dir)
