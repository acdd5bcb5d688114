"""Matching a model's classes with a dataset's categories: by COCO category id, else by name.

A model knows its classes as a list of names (``classes[label - 1]`` names label ``label``) and,
where known, one category id per class (``class_ids``: a converted TF Object Detection API model's
label-map index + 1, which is the COCO category id; a model trained on a COCO-format file keeps
that file's ids). A dataset has names and, for COCO-format files, category ids.

:func:`match_classes` pairs them:

* where both sides have ids, by id -- unless the ids evidently mean something else on the two
  sides (fewer than half of the id pairs have the same name, as with a custom COCO file numbered
  ``1..3``), then by name;
* otherwise by name (case-, space- and ``_``/``-``-insensitive; the four Pascal VOC names that
  differ from COCO's, ``aeroplane``, ``motorbike``, ``sofa``, ``tvmonitor``, count as COCO's);
* placeholder names (``???``, empty, ``background``) are unused slots and never match.

The result, a :class:`ClassMap`, says which model label becomes which dataset label, which model
classes the dataset lacks (their detections are dropped and counted) and which dataset classes the
model lacks (new rows when fine-tuning). No shared class at all is a ``ValueError`` naming both
lists.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "PLACEHOLDER_NAMES",
    "SYNONYMS",
    "ClassMap",
    "ClassSpec",
    "checkpoint_class_spec",
    "class_spec_of_checkpoint",
    "dataset_class_spec",
    "is_placeholder",
    "match_classes",
    "normalize_name",
]

PLACEHOLDER_NAMES = frozenset({"???", "", "background", "__background__", "bg", "n/a"})


# Pascal VOC names of COCO categories (the other VOC classes have COCO's names, up to spacing).
SYNONYMS = {"aeroplane": "airplane", "motorbike": "motorcycle", "sofa": "couch", "tvmonitor": "tv"}


def normalize_name(name: str) -> str:
    """``"Traffic_Light"`` -> ``"traffic light"``: lower case, ``_``/``-`` and runs of space as one."""
    return re.sub(r"[\s_\-]+", " ", str(name)).strip().lower()


def _key(name: str) -> str:
    """Matching key: :func:`normalize_name` without spaces, VOC names as COCO's
    (``"diningtable"`` = ``"dining table"``, ``"tvmonitor"`` = ``"tv"``)."""
    key = normalize_name(name).replace(" ", "")
    return SYNONYMS.get(key, key).replace(" ", "")


def is_placeholder(name: str) -> bool:
    """An unused class slot (``???`` in TF label maps, ``background``, empty)."""
    return normalize_name(name) in PLACEHOLDER_NAMES


@dataclass(frozen=True)
class ClassSpec:
    """Class names and, where known, their category ids (same length as the names)."""

    names: tuple[str, ...]
    ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        if self.ids is not None:
            ids = tuple(int(i) for i in self.ids)
            if len(ids) != len(self.names):
                raise ValueError(
                    f"class_ids has {len(ids)} entries for {len(self.names)} classes: {list(ids)}"
                )
            used = [i for i, n in zip(ids, self.names, strict=True) if not is_placeholder(n)]
            if len(set(used)) != len(used):
                dup = sorted({i for i in used if used.count(i) > 1})
                raise ValueError(f"class_ids repeats category ids {dup}: {list(ids)}")
            object.__setattr__(self, "ids", ids)

    def describe(self, label: int) -> str:
        """``"car (id 3)"`` for a 1-based label."""
        name = self.names[label - 1]
        return f"{name} (id {self.ids[label - 1]})" if self.ids is not None else name

    def listing(self) -> list[str]:
        """The used classes, with ids where known (for error messages)."""
        return [
            self.describe(k) for k in range(1, len(self.names) + 1)
            if not is_placeholder(self.names[k - 1])
        ]  # fmt: skip


@dataclass
class ClassMap:
    """A model-to-dataset class correspondence (see :func:`match_classes`).

    Attributes:
        model_to_data: model label ``1..M`` -> dataset label ``1..D`` for the shared classes.
        by: ``"id"`` or ``"name"``: how the classes were matched.
        dropped: model labels the dataset lacks (placeholders excluded).
        missing: dataset labels the model lacks.
        renamed: ``(model name, dataset name)`` of id-matched pairs whose names differ.
    """

    model: ClassSpec
    data: ClassSpec
    model_to_data: dict[int, int]
    by: str
    dropped: list[int] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def identity(self) -> bool:
        """Same classes in the same order: nothing to remap."""
        n = len(self.model.names)
        return n == len(self.data.names) and self.model_to_data == {k: k for k in range(1, n + 1)}

    @property
    def shared_names(self) -> list[str]:
        """Dataset names of the shared classes, in dataset label order."""
        return [self.data.names[d - 1] for d in sorted(self.model_to_data.values())]

    def data_to_model(self) -> dict[int, int]:
        """Dataset label -> model label for the shared classes."""
        return {d: m for m, d in self.model_to_data.items()}

    def summary(self) -> str:
        """One line: how many classes are shared, by what, and what is dropped / new."""
        kept = [self.data.describe(d) for d in sorted(self.model_to_data.values())]
        parts = [f"{len(kept)} shared classes matched by {self.by}: {_short(kept)}"]
        if self.dropped:
            dropped = [self.model.names[m - 1] for m in self.dropped]
            parts.append(f"{len(dropped)} model classes not in the dataset: {_short(dropped)}")
        if self.missing:
            missing = [self.data.names[d - 1] for d in self.missing]
            parts.append(f"{len(missing)} dataset classes not in the model: {_short(missing)}")
        if self.renamed:
            parts.append(
                "same id, other name: " + ", ".join(f"{a!r}={b!r}" for a, b in self.renamed)
            )
        return "; ".join(parts)


def _short(names: Sequence[str], limit: int = 12) -> str:
    text = ", ".join(names[:limit])
    return text + (f", ... (+{len(names) - limit})" if len(names) > limit else "")


def _unnamed(name: str) -> bool:
    """A generated name (``class_7``, ``class7``) that says nothing against an id match."""
    return re.fullmatch(r"class ?\d+", normalize_name(name)) is not None


def _by_name(model: ClassSpec, data: ClassSpec) -> dict[int, int]:
    index: dict[str, int] = {}
    for d, name in enumerate(data.names, start=1):
        if not is_placeholder(name):
            index.setdefault(_key(name), d)
    pairs: dict[int, int] = {}
    taken: set[int] = set()
    for m, name in enumerate(model.names, start=1):
        d = index.get(_key(name)) if not is_placeholder(name) else None
        if d is not None and d not in taken:
            pairs[m] = d
            taken.add(d)
    return pairs


def _by_id(model: ClassSpec, data: ClassSpec) -> tuple[dict[int, int], list[tuple[str, str]]]:
    assert model.ids is not None and data.ids is not None
    index = {
        cid: d for d, (cid, name) in enumerate(zip(data.ids, data.names, strict=True), start=1)
        if not is_placeholder(name)
    }  # fmt: skip
    pairs: dict[int, int] = {}
    renamed: list[tuple[str, str]] = []
    for m, (cid, name) in enumerate(zip(model.ids, model.names, strict=True), start=1):
        if is_placeholder(name) or cid not in index:
            continue
        d = index[cid]
        pairs[m] = d
        if _key(name) != _key(data.names[d - 1]) and not _unnamed(name):
            renamed.append((name, data.names[d - 1]))
    return pairs, renamed


def match_classes(model: ClassSpec, data: ClassSpec) -> ClassMap:
    """Pair a model's classes with a dataset's (see the module docstring).

    Raises:
        ValueError: no class in common; the message lists both sides.
    """
    pairs: dict[int, int] = {}
    by, renamed = "name", []
    same_ids = model.ids is None or data.ids is None or model.ids == data.ids
    if model.names == data.names and same_ids:  # the same list: placeholder slots included
        n = len(model.names)
        by = "id" if model.ids is not None and data.ids is not None else "name"
        return ClassMap(model, data, {k: k for k in range(1, n + 1)}, by)
    if model.ids is not None and data.ids is not None:
        id_pairs, id_renamed = _by_id(model, data)
        # Ids agree with names on most pairs: trust the ids (they survive renamings such as
        # 'tvmonitor' -> 'tv'). Otherwise the two sides number their classes differently.
        if id_pairs and len(id_renamed) * 2 <= len(id_pairs):
            pairs, by, renamed = id_pairs, "id", id_renamed
    if not pairs:
        pairs, by, renamed = _by_name(model, data), "name", []
    if not pairs:
        raise ValueError(
            f"the model's classes {model.listing()} and the dataset's {data.listing()} have no "
            "class in common (matched by category id where both have ids, else by name)"
        )
    matched_data = set(pairs.values())
    dropped = [
        m for m in range(1, len(model.names) + 1)
        if m not in pairs and not is_placeholder(model.names[m - 1])
    ]  # fmt: skip
    missing = [d for d in range(1, len(data.names) + 1) if d not in matched_data]
    return ClassMap(model, data, dict(sorted(pairs.items())), by, dropped, missing, renamed)


# --------------------------------------------------------------------------- where specs come from
def class_spec_of_checkpoint(ckpt: Mapping[str, Any]) -> ClassSpec | None:
    """The classes stored in a loaded checkpoint dict (``classes`` and optional ``class_ids``).

    ``None`` when the checkpoint names no classes. Checkpoints written before ``class_ids``
    existed are matched by name.
    """
    names = list(ckpt.get("classes") or [])
    if not names:
        return None
    ids = ckpt.get("class_ids")
    return ClassSpec(tuple(names), tuple(int(i) for i in ids) if ids else None)


def checkpoint_class_spec(path: str | Path) -> ClassSpec | None:
    """:func:`class_spec_of_checkpoint` of the checkpoint file ``path``."""
    from .engine.checkpoint import load_checkpoint

    return class_spec_of_checkpoint(load_checkpoint(path))


def dataset_class_spec(dataset: Any) -> ClassSpec:
    """A dataset's classes, with ids for COCO-format datasets (``label_to_category_id``)."""
    names = tuple(str(n) for n in dataset.classes)
    lut = getattr(dataset, "label_to_category_id", None)
    ids = None
    if lut:
        ids = tuple(int(lut[k]) for k in range(1, len(names) + 1))
    return ClassSpec(names, ids)
