"""The synthetic dataset: valid COCO that pycocotools loads, the same boxes through the COCO and
the VOC-XML readers, deterministic, cached, written atomically, and boxes that are the visible
extent of each drawn object.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import detector.data.synthetic as synthetic
from detector.data import (
    SYNTHETIC_CLASSES,
    CocoDetection,
    FolderDetection,
    SyntheticConfig,
    build_dataset,
    generate_synthetic,
    load_image,
)
from detector.data.synthetic import render_image


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("synth") / "shapes"
    return generate_synthetic(root, num_train=12, num_val=6, seed=1)


def test_layout_and_pycocotools(small: dict) -> None:
    from pycocotools.coco import COCO

    root = small["root"]
    assert small["classes"] == list(SYNTHETIC_CLASSES) and not small["reused"]
    for split, n in (("train", 12), ("val", 6)):
        info = small["splits"][split]
        assert info["images"] == n
        assert len(list((root / split / "images").glob("*.jpg"))) == n
        assert len(list((root / split / "xml").glob("*.xml"))) == n
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(info["ann_file"]))
        assert len(coco.getImgIds()) == n and len(coco.getAnnIds()) == info["boxes"]
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(SYNTHETIC_CLASSES)
        for img in coco.loadImgs(coco.getImgIds()):
            decoded = load_image(root / split / "images" / img["file_name"])
            assert decoded.shape[:2] == (img["height"], img["width"])
        for ann in coco.loadAnns(coco.getAnnIds()):
            x, y, w, h = ann["bbox"]
            img = coco.imgs[ann["image_id"]]
            assert w > 0 and h > 0 and x >= 0 and y >= 0
            assert x + w <= img["width"] and y + h <= img["height"]
            assert ann["iscrowd"] == 0 and ann["area"] == pytest.approx(w * h)


def test_round_trip_coco_and_voc_readers(small: dict) -> None:
    root = small["root"]
    for split in ("train", "val"):
        coco = CocoDetection(root / split / "annotations.json")
        voc = FolderDetection(root / split, classes=small["classes"])
        assert len(coco) == len(voc) == small["splits"][split]["images"]
        assert coco.num_boxes() == voc.num_boxes() == small["splits"][split]["boxes"]
        by_name = {r["file_name"]: r for r in voc.records()}
        for rc in coco.records():
            rv = by_name[rc["file_name"]]
            assert (rc["width"], rc["height"]) == (rv["width"], rv["height"])
            np.testing.assert_array_equal(rc["boxes"], rv["boxes"])
            np.testing.assert_array_equal(rc["labels"], rv["labels"])
        via_factory = build_dataset("synthetic", split, root=root, reader="voc")
        assert via_factory.num_boxes() == coco.num_boxes()


def test_factory_reads_existing_dataset_without_regenerating(small: dict) -> None:
    root = small["root"]
    before = (root / "meta.json").stat().st_mtime_ns
    ds = build_dataset("synthetic", "val", root=root)  # no parameters: read what is there
    assert isinstance(ds, CocoDetection) and len(ds) == 6
    same = build_dataset("synthetic", "val", root=root, num_train=12, num_val=6, seed=1)
    assert len(same) == 6 and (root / "meta.json").stat().st_mtime_ns == before


def test_deterministic_and_seed_dependent(small: dict, tmp_path: Path) -> None:
    again = generate_synthetic(tmp_path / "again", num_train=12, num_val=6, seed=1)
    other = generate_synthetic(tmp_path / "other", num_train=12, num_val=6, seed=2)
    a, b = small["root"], again["root"]
    assert again["hash"] == small["hash"] != other["hash"]
    for split in ("train", "val"):
        assert (a / split / "annotations.json").read_bytes() == (
            b / split / "annotations.json"
        ).read_bytes()
        for name in ("000001.jpg", "000004.jpg"):
            assert (a / split / "images" / name).read_bytes() == (
                b / split / "images" / name
            ).read_bytes()
    assert (a / "train/annotations.json").read_bytes() != (
        other["root"] / "train/annotations.json"
    ).read_bytes()
    # image i does not depend on how many images are generated
    fewer = generate_synthetic(tmp_path / "fewer", num_train=3, num_val=1, seed=1)
    assert (fewer["root"] / "train/images/000003.jpg").read_bytes() == (
        a / "train/images/000003.jpg"
    ).read_bytes()


def test_cache_reuse_and_regeneration(tmp_path: Path) -> None:
    root = tmp_path / "s"
    first = generate_synthetic(root, num_train=3, num_val=2, seed=0)
    stamp = (root / "train" / "annotations.json").stat().st_mtime_ns
    second = generate_synthetic(root, num_train=3, num_val=2, seed=0)
    assert second["reused"] and second["hash"] == first["hash"]
    assert (root / "train" / "annotations.json").stat().st_mtime_ns == stamp
    changed = generate_synthetic(root, num_train=3, num_val=2, seed=0, objects_per_image=(1, 2))
    assert not changed["reused"] and changed["hash"] != first["hash"]
    meta = json.loads((root / "meta.json").read_text())
    assert meta["params"]["config"]["objects_per_image"] == [1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # no temp or old folder left behind


def test_interrupted_generation_never_looks_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "s"
    real = synthetic._write_split

    def crash_on_val(out: Path, split: str, *args, **kwargs):
        if split == "val":
            raise KeyboardInterrupt
        return real(out, split, *args, **kwargs)

    monkeypatch.setattr(synthetic, "_write_split", crash_on_val)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic(root, num_train=2, num_val=2)
    assert not root.exists() and list(tmp_path.iterdir()) == []
    monkeypatch.setattr(synthetic, "_write_split", real)
    # a stale temp folder of a killed process is ignored
    (tmp_path / f".s.tmp-{os.getpid()}-dead").mkdir()
    info = generate_synthetic(root, num_train=2, num_val=2)
    assert not info["reused"] and (root / "meta.json").is_file()


def test_refuses_to_overwrite_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a synthetic dataset"):
        generate_synthetic(tmp_path / "mine", num_train=1, num_val=1)
    assert (tmp_path / "mine" / "precious.txt").read_text() == "keep me"


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_box_is_the_visible_extent_of_the_drawn_object() -> None:
    """One object per image: the pixels that differ from the same image drawn without the object
    (background, blur and noise come from their own random streams) span the annotated box,
    including objects cut by the border."""
    cfg = SyntheticConfig(objects_per_image=(1, 1), noise_sigma=(0.0, 0.0), truncate_prob=0.5)
    empty_cfg = SyntheticConfig(objects_per_image=(0, 0), noise_sigma=(0.0, 0.0))
    ious, truncated_seen = [], 0
    for i in range(30):
        img, boxes, labels, truncated = render_image(np.random.default_rng([5, i]), cfg)
        bg, *_ = render_image(np.random.default_rng([5, i]), empty_cfg)
        assert len(boxes) == 1 and labels[0] in range(1, 6)
        diff = np.abs(img.astype(int) - bg.astype(int)).sum(2) > 60
        ys, xs = np.nonzero(diff)
        found = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)
        # within the anti-aliased (and sometimes blurred) edge pixel
        assert np.abs(found - boxes[0]).max() <= 2, (i, found, boxes[0])
        ious.append(_iou(found, boxes[0]))
        truncated_seen += bool(truncated[0])
    assert np.median(ious) > 0.97
    assert truncated_seen >= 2


def test_variety_sizes_classes_and_occlusion_limits() -> None:
    cfg = SyntheticConfig()
    sizes, counts, classes, shapes = [], [], Counter(), set()
    truncated = 0
    for i in range(60):
        img, boxes, labels, trunc = render_image(np.random.default_rng([9, i]), cfg)
        h, w = img.shape[:2]
        shapes.add((h, w))
        assert 200 <= h <= 400 and 200 <= w <= 400
        counts.append(len(boxes))
        classes.update(labels.tolist())
        truncated += int(trunc.sum())
        side = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        sizes.extend((side / math.sqrt(w * h)).tolist())
        for a in range(len(boxes)):  # the generator keeps pairwise box IoU <= max_box_iou
            for b in range(a):
                assert _iou(boxes[a], boxes[b]) <= cfg.max_box_iou + 1e-6
    assert set(classes) == {1, 2, 3, 4, 5}
    assert min(counts) >= 1 and max(counts) >= 5 and np.mean(counts) > 2.5
    assert min(sizes) < 0.06 and max(sizes) > 0.4 and 0.08 < float(np.median(sizes)) < 0.3
    assert truncated >= 5 and len(shapes) > 50


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="subset"):
        SyntheticConfig(classes=("circle", "hexagon"))
    with pytest.raises(ValueError, match="size_range"):
        SyntheticConfig(size_range=(0.5, 0.2))
    cfg = SyntheticConfig(classes=("star", "circle"))
    _, _, labels, _ = render_image(np.random.default_rng(0), cfg)
    assert set(labels.tolist()) <= {1, 2}
