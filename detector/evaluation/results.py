"""Reading, checking and evaluating COCO-format results files.

A results file is the standard COCO results list::

    [{"image_id": 42, "category_id": 18, "bbox": [x, y, w, h], "score": 0.93}, ...]

For VOC-layout datasets the same format is used with ``image_id`` = the image file stem (or the
record's image id) and ``category_id`` = the 1-based index of the class in the dataset's class
list.

Nothing is dropped silently:

* an empty or unparsable file, a file that is not a list, entries lacking a key or holding
  non-numeric values, image ids or category ids absent from the ground truth: a
  :class:`ResultsFileError` that names the first offending entry and how many there are;
* ``[]`` (no detections at all): evaluated (every AP is 0) with an :class:`EvaluationWarning`;
* boxes with negative width/height, NaN/inf coordinates or scores: dropped with an
  :class:`EvaluationWarning` and counted in ``metrics["num_invalid_*"]``, or an error with
  ``strict=True``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detector import fastjson
from detector.evaluation.detections import Detections, ResultsFileError, gc_paused

__all__ = [
    "detections_from_results",
    "load_detections_file",
    "load_results_file",
    "load_wider_txt_folder",
    "write_results_file",
]

_KEYS = ("image_id", "category_id", "bbox", "score")


def load_results_file(path: str | Path) -> list[Any]:
    """Parse a results file, with clear errors for empty, malformed or non-list content."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as e:
        raise ResultsFileError(f"cannot read results file {path}: {e}") from e
    if not text.strip():
        raise ResultsFileError(
            f"results file {path} is empty ({len(text)} bytes); a run without detections is "
            "written as []"
        )
    if b"\x00" in text[:4096]:
        raise ResultsFileError(
            f"results file {path} is binary, not JSON text (a NUL byte in its first 4 KiB); "
            "expected a JSON list of detections"
        )
    try:
        with gc_paused():
            data = fastjson.loads(text)
    except RecursionError:
        raise ResultsFileError(
            f"results file {path} is nested too deeply to be a results list (a detection is "
            "an object holding a list of 4 numbers)"
        ) from None
    except UnicodeDecodeError as e:
        raise ResultsFileError(f"results file {path} is not UTF-8 JSON text: {e}") from None
    except ValueError as e:  # json.JSONDecodeError and anything else the parser rejects
        raise ResultsFileError(f"results file {path} is not valid JSON: {e}") from None
    if not isinstance(data, list):
        raise ResultsFileError(
            f"results file {path} must hold a JSON list of detections, got {type(data).__name__}"
        )
    return data


def write_results_file(results: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write a COCO results list (compact JSON, full float precision)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(list(results), f, separators=(",", ":"))
    return path


def _first_bad(entries: Sequence[Any], check) -> tuple[int, Any]:
    for i, entry in enumerate(entries):
        if not check(entry):
            return i, entry
    return -1, None  # pragma: no cover - only called when something is bad


def _numeric_array(
    values: list[Any], what: str, source: str, shape_tail: tuple[int, ...] = ()
) -> np.ndarray:
    """``np.array(values)`` that must come out as plain int/float numbers of the given shape."""
    try:
        arr = np.array(values)
    except ValueError:  # ragged nesting
        arr = None
    ok = arr is not None and arr.dtype.kind in "iuf" and arr.shape == (len(values), *shape_tail)
    if ok:
        return arr

    def good(v: Any) -> bool:
        if shape_tail:
            return (
                isinstance(v, (list, tuple))
                and len(v) == shape_tail[0]
                and all(_is_number(x) for x in v)
            )
        return _is_number(v)

    i, bad = _first_bad(values, good)
    expected = f"a list of {shape_tail[0]} numbers" if shape_tail else "a number"
    raise ResultsFileError(f"{source}: entry {i} has {what}={bad!r}; expected {expected}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _map_ids(values: list[Any], lookup: Mapping[Any, int]) -> np.ndarray:
    """Positions of ``values`` in ``lookup`` (-1 where unknown); vectorised for int ids."""
    n = len(values)
    int_keys = [k for k in lookup if isinstance(k, int) and not isinstance(k, bool)]
    if n and len(int_keys) == len(lookup):
        arr = np.array(values)
        if arr.dtype.kind in "iu" and arr.shape == (n,):
            keys = np.array(sorted(int_keys), dtype=np.int64)
            pos = np.array([lookup[k] for k in keys.tolist()], dtype=np.int64)
            idx = np.searchsorted(keys, arr)
            idx_c = np.minimum(idx, len(keys) - 1)
            found = (idx < len(keys)) & (keys[idx_c] == arr)
            return np.where(found, pos[idx_c], -1)
    return np.fromiter(
        (lookup.get(v, -1) if isinstance(v, (int, str)) else -1 for v in values), np.int64, n
    )


def detections_from_results(
    entries: Sequence[Any],
    *,
    image_lookup: Mapping[Any, int],
    category_lookup: Mapping[Any, int],
    source: str = "results",
) -> Detections:
    """Check a parsed COCO results list and convert it to :class:`Detections` (file order kept).

    Args:
        entries: the parsed results list.
        image_lookup: image id as written in the file -> position in the ground truth.
        category_lookup: category id as written in the file -> label ``1..C``.
        source: name used in error messages.

    Raises:
        ResultsFileError: malformed entries, unknown image ids or unknown category ids.
    """
    n = len(entries)
    if n == 0:
        return Detections.empty()
    try:
        columns = {key: [e[key] for e in entries] for key in _KEYS}
    except (KeyError, TypeError, IndexError):
        i, bad = _first_bad(
            entries, lambda e: isinstance(e, Mapping) and all(k in e for k in _KEYS)
        )
        raise ResultsFileError(
            f"{source}: entry {i} is not a detection with keys {list(_KEYS)}: {bad!r:.200}"
        ) from None
    xywh = _numeric_array(columns["bbox"], "bbox", source, (4,)).astype(np.float64)
    scores = _numeric_array(columns["score"], "score", source).astype(np.float64)

    image_index = _map_ids(columns["image_id"], image_lookup)
    _check_known(
        columns["image_id"], image_index, "image id", source, len(set(image_lookup.values()))
    )
    labels = _map_ids(columns["category_id"], category_lookup)
    _check_known(columns["category_id"], labels, "category id", source, len(category_lookup))

    boxes = xywh.copy()
    boxes[:, 2:] += boxes[:, :2]
    return Detections(image_index, labels, boxes, scores, xywh)


def _check_known(
    values: list[Any], positions: np.ndarray, what: str, source: str, known: int
) -> None:
    unknown = np.flatnonzero(positions < 0)
    if unknown.size == 0:
        return
    examples = []
    for i in unknown.tolist():
        if values[i] not in examples:
            examples.append(values[i])
        if len(examples) == 5:
            break
    raise ResultsFileError(
        f"{source}: {unknown.size} of {len(values)} detections have {what}s that are not in the "
        f"ground truth ({known} known), e.g. {examples} (first at entry {int(unknown[0])}); "
        "is this the right annotation file / class list?"
    )


def load_wider_txt_folder(folder: str | Path) -> list[dict[str, Any]]:
    """Read the WIDER FACE prediction folder that face detectors write for ``eval_tools``.

    The layout is ``<folder>/<event>/<image name>.txt``, each file holding the image name on
    its first line, the number of faces on the second and then one ``x y w h score`` line per
    face (pixels, the official ``read_pred.m`` format).

    Returns:
        A COCO-format results list: ``image_id`` ``"<event>/<image name>.jpg"`` (the file's
        event folder and stem, the form WIDER FACE ground truth uses), ``category_id`` 1.

    Raises:
        ResultsFileError: no ``.txt`` file, or a file whose count or lines are malformed (named,
            with the line number).
    """
    folder = Path(folder)
    files = sorted(folder.rglob("*.txt"))
    if not files:
        raise ResultsFileError(
            f"{folder}: no .txt prediction files (expected <event>/<image>.txt, the WIDER FACE "
            "eval_tools layout, or a COCO-format results .json file)"
        )
    entries: list[dict[str, Any]] = []
    for path in files:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ResultsFileError(f"cannot read WIDER FACE prediction file {path}: {e}") from None
        rel = path.relative_to(folder)
        event = rel.parent.as_posix() if rel.parent != Path(".") else ""
        image_id = f"{event}/{path.stem}.jpg" if event else f"{path.stem}.jpg"
        if len(lines) < 2:
            raise ResultsFileError(
                f"{path}: expected the image name, the number of faces and one 'x y w h score' "
                f"line per face; got {len(lines)} line(s)"
            )
        try:
            count = int(float(lines[1].strip() or "0"))
        except ValueError:
            raise ResultsFileError(
                f"{path}, line 2: expected the number of faces, got {lines[1]!r:.80}"
            ) from None
        rows = [line for line in lines[2:] if line.strip()]
        if count < 0 or len(rows) < count:
            raise ResultsFileError(
                f"{path}: line 2 announces {count} face(s) but {len(rows)} line(s) follow"
            )
        for k, line in enumerate(rows[:count]):
            fields = line.split()
            try:
                x, y, w, h, score = (float(v) for v in fields[:5])
            except ValueError:
                x = None
            if x is None or len(fields) < 5:
                raise ResultsFileError(
                    f"{path}, line {k + 3}: expected 'x y w h score', got {line!r:.80}"
                )
            entries.append(
                {"image_id": image_id, "category_id": 1, "bbox": [x, y, w, h], "score": score}
            )
    return entries


def load_detections_file(path: str | Path) -> list[Any]:
    """A COCO-format results list from a ``.json`` results file or a WIDER FACE ``.txt`` folder.

    Raises:
        ResultsFileError: the path does not exist, or its content cannot be read (named).
    """
    path = Path(path)
    if path.is_dir():
        return load_wider_txt_folder(path)
    if not path.exists():
        raise ResultsFileError(f"results file {path} not found")
    return load_results_file(path)
