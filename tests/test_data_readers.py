"""Readers on small generated files (COCO, VOC, image+XML folders, WIDER FACE) and the real
raccoon dataset: counts of images and boxes match the files, and every sample has the common form.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
from test_data_helpers import coco_ann, write_coco, write_image, write_voc_image

from detector.data import (
    CocoDetection,
    DataWarning,
    FolderDetection,
    Sample,
    VOCDetection,
    WiderFace,
    build_dataset,
    parse_voc_xml,
    ratio_split,
    read_split_list,
)


def check_sample(s: Sample, num_classes: int) -> None:
    assert s.image.dtype == np.uint8 and s.image.ndim == 3 and s.image.shape[2] == 3
    assert s.boxes.dtype == np.float32 and s.boxes.shape == (len(s.labels), 4)
    assert s.labels.dtype == np.int64
    if len(s.labels):
        assert s.labels.min() >= 1 and s.labels.max() <= num_classes
        h, w = s.image.shape[:2]
        assert np.all(s.boxes[:, 2] > s.boxes[:, 0]) and np.all(s.boxes[:, 3] > s.boxes[:, 1])
        assert (
            s.boxes.min() >= 0
            and np.all(s.boxes[:, [0, 2]] <= w)
            and np.all(s.boxes[:, [1, 3]] <= h)
        )
    assert s.orig_size == s.image.shape[:2]


# ----------------------------------------------------------------------------------------- COCO


@pytest.fixture
def coco_file(tmp_path: Path) -> Path:
    images = [
        {"id": 10, "file_name": "a.jpg", "width": 64, "height": 48},
        {"id": 11, "file_name": "b.jpg", "width": 40, "height": 40},
        {"id": 12, "file_name": "c.png", "width": 32, "height": 50},  # no annotations
        {"id": 13, "file_name": "d.jpg", "width": 30, "height": 30},  # crowd only
    ]
    cats = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}, {"id": 90, "name": "toaster"}]
    anns = [
        coco_ann(1, 10, 3, [1, 2, 10, 20]),
        coco_ann(2, 10, 90, [5.5, 6.5, 30, 20]),
        coco_ann(3, 10, 7, [0, 0, 64, 48], crowd=1),
        coco_ann(4, 11, 7, [10, 10, 5, 5]),
        coco_ann(5, 13, 3, [2, 2, 10, 10], crowd=1),
    ]
    return write_coco(tmp_path / "coco", images, anns, cats)


def test_coco_counts_mapping_and_crowd(coco_file: Path) -> None:
    ds = CocoDetection(coco_file)
    assert ds.classes == ["cat", "dog", "toaster"]  # sorted by category id 3, 7, 90
    assert ds.label_to_category_id == {1: 3, 2: 7, 3: 90}
    assert ds.category_ids([1, 3]) == [3, 90]
    assert ds.ann_file == coco_file
    assert len(ds) == 4 and ds.num_boxes() == 5 and ds.num_boxes(train_only=True) == 3
    recs = {r["image_id"]: r for r in ds.records()}
    assert set(recs) == {10, 11, 12, 13}
    r = recs[10]
    assert r["file_name"] == "a.jpg" and (r["width"], r["height"]) == (64, 48)
    np.testing.assert_allclose(r["boxes"], [[1, 2, 11, 22], [5.5, 6.5, 35.5, 26.5], [0, 0, 64, 48]])
    assert r["labels"].tolist() == [1, 3, 2] and r["ignore"].tolist() == [False, False, True]
    assert (
        r["boxes"].dtype == np.float32
        and r["labels"].dtype == np.int64
        and r["ignore"].dtype == bool
    )
    s = ds[0]
    check_sample(s, 3)
    assert s.image_id == 10 and s.image.shape == (48, 64, 3)
    assert s.labels.tolist() == [1, 3]  # the crowd box is not trained on
    assert s.classes == ("cat", "dog", "toaster")
    assert len(ds[2].labels) == 0 and len(ds[3].labels) == 0


def test_coco_drop_empty(coco_file: Path) -> None:
    ds = CocoDetection(coco_file, drop_empty=True)
    assert [r["image_id"] for r in ds.records()] == [10, 11]


def test_coco_pycocotools_index_and_factory(coco_file: Path) -> None:
    ds = build_dataset("coco", "val", ann_file=coco_file)
    assert isinstance(ds, CocoDetection)
    assert sorted(ds.coco.getImgIds()) == [10, 11, 12, 13]
    assert len(ds.coco.getAnnIds()) == 5


def test_coco_standard_layout(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    write_image(root / "val2017" / "x.jpg", 20, 20)
    write_coco(
        root / "annotations",
        [{"id": 1, "file_name": "x.jpg", "width": 20, "height": 20}],
        [coco_ann(1, 1, 1, [1, 1, 5, 5])],
        [{"id": 1, "name": "thing"}],
        make_files=False,
        name="instances_val2017.json",
    )
    ds = build_dataset("coco", "val", root=root)
    assert len(ds) == 1 and ds.num_boxes() == 1


# ------------------------------------------------------------------------------------------ VOC


def _voc_year(root: Path, year: str, stems_objects: dict, sets: dict) -> None:
    base = root / f"VOC{year}"
    for k, (stem, objects) in enumerate(stems_objects.items()):
        write_voc_image(base / "JPEGImages", base / "Annotations", stem, (60, 40), objects, seed=k)
    main = base / "ImageSets" / "Main"
    main.mkdir(parents=True, exist_ok=True)
    for name, stems in sets.items():
        (main / f"{name}.txt").write_text("\n".join(stems) + "\n")


@pytest.fixture
def vocdevkit(tmp_path: Path) -> Path:
    root = tmp_path / "VOCdevkit"
    _voc_year(
        root,
        "2007",
        {
            "000001": [("dog", (10, 5, 30, 25), False), ("person", (0, 0, 60, 40), True)],
            "000002": [("car", (1, 1, 20, 20), False)],
            "000003": [("cat", (5, 5, 15, 15), False)],
        },
        {"trainval": ["000001", "000002"], "test": ["000003"]},
    )
    _voc_year(
        root,
        "2012",
        {"2008_000001": [("bird", (2, 3, 12, 13), False), ("bird", (20, 3, 40, 30), False)]},
        {"trainval": ["2008_000001"]},
    )
    return root


def test_voc_07_12_union_and_difficult(vocdevkit: Path) -> None:
    ds = VOCDetection(vocdevkit, "trainval", "07+12")
    assert len(ds.classes) == 20 and ds.classes[0] == "aeroplane"
    assert len(ds) == 3 and ds.num_boxes() == 5 and ds.num_boxes(train_only=True) == 4
    recs = {r["image_id"]: r for r in ds.records()}
    assert set(recs) == {"VOC2007/000001", "VOC2007/000002", "VOC2012/2008_000001"}
    r = recs["VOC2007/000001"]
    np.testing.assert_allclose(r["boxes"], [[10, 5, 30, 25], [0, 0, 60, 40]])
    assert r["ignore"].tolist() == [False, True]
    assert [ds.classes[k - 1] for k in r["labels"]] == ["dog", "person"]
    s = ds[0]
    check_sample(s, 20)
    assert [ds.classes[k - 1] for k in s.labels] == ["dog"]  # difficult left out of training
    keep = VOCDetection(vocdevkit, "trainval", "2007", keep_difficult=True)
    assert len(keep) == 2 and len(keep[0].labels) == 2
    test = build_dataset("voc", "test", root=vocdevkit, years=["2007"])
    assert len(test) == 1 and test.num_boxes() == 1


def test_voc_xml_roundtrip_coordinates(tmp_path: Path) -> None:
    write_voc_image(
        tmp_path,
        tmp_path,
        "img",
        (50, 30),
        [("a", (0, 0, 50, 30), False), ("b", (3.5, 4, 9, 10.25), True)],
    )
    ann = parse_voc_xml(tmp_path / "img.xml")
    assert (ann.width, ann.height, ann.filename) == (50, 30, "img.jpg")
    assert ann.objects[0].box == (0, 0, 50, 30) and ann.objects[1].box == (3.5, 4, 9, 10.25)
    assert ann.objects[1].difficult and not ann.objects[0].difficult
    # VOC files store 1-based inclusive pixel indices
    text = (tmp_path / "img.xml").read_text()
    assert "<xmin>1</xmin>" in text and "<xmax>50</xmax>" in text


# --------------------------------------------------------------------------------------- folder


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "shapes"
    objs = {
        "img0": [("zebra", (1, 1, 20, 20), False)],
        "img1": [("apple", (5, 5, 25, 25), False), ("zebra", (30, 10, 40, 30), False)],
        "img2": [("apple", (0, 0, 10, 10), True)],
        "img3": [],
        "img4": [("mango", (2, 2, 8, 8), False)],
    }
    for k, (stem, o) in enumerate(objs.items()):
        write_voc_image(
            root / "images",
            root / "annotations",
            stem,
            (48, 36),
            o,
            seed=k,
            ext=".png" if k == 1 else ".jpg",
        )
    return root


def test_folder_discovered_classes_and_counts(folder: Path) -> None:
    ds = FolderDetection(folder)
    assert ds.classes == ["apple", "mango", "zebra"]
    assert len(ds) == 5 and ds.num_boxes() == 5 and ds.num_boxes(train_only=True) == 4
    for i in range(len(ds)):
        check_sample(ds[i], 3)
    recs = {r["image_id"]: r for r in ds.records()}
    assert recs["img1"]["file_name"] == "img1.png"
    assert recs["img2"]["ignore"].tolist() == [True]


def test_folder_labels_file_and_split_lists(folder: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("# my classes\nzebra\napple\nmango\n\n")
    (tmp_path / "train.txt").write_text("img0\nimg1.png\nimg2\n")
    with (tmp_path / "val.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax"])
        w.writerow(["img3.jpg", 48, 36, "", "", "", "", ""])
        w.writerow(["img4.jpg", 48, 36, "mango", 3, 3, 8, 8])
        w.writerow(["img4.jpg", 48, 36, "mango", 3, 3, 8, 8])
    train = build_dataset(
        "folder",
        "train",
        root=folder,
        labels_file=labels,
        split_files={"train": tmp_path / "train.txt", "val": tmp_path / "val.csv"},
    )
    val = build_dataset(
        "folder",
        "val",
        root=folder,
        labels_file=labels,
        split_files={"train": tmp_path / "train.txt", "val": tmp_path / "val.csv"},
    )
    assert train.classes == val.classes == ["zebra", "apple", "mango"]
    assert [r["image_id"] for r in train.records()] == ["img0", "img1", "img2"]
    assert [r["image_id"] for r in val.records()] == ["img3", "img4"]
    assert train.records()[0]["labels"].tolist() == [1]


def test_folder_seeded_ratio_split(folder: Path) -> None:
    parts = {s: FolderDetection(folder, s, val_fraction=0.4, seed=3) for s in ("train", "val")}
    ids = {s: [r["image_id"] for r in d.records()] for s, d in parts.items()}
    assert len(ids["val"]) == 2 and len(ids["train"]) == 3
    assert sorted(ids["train"] + ids["val"]) == [f"img{k}" for k in range(5)]
    again = FolderDetection(folder, "val", val_fraction=0.4, seed=3)
    assert [r["image_id"] for r in again.records()] == ids["val"]
    assert ratio_split(["c", "a", "b"], "all", val_fraction=0.5) == ["a", "b", "c"]
    other = {
        tuple(ratio_split([f"s{k}" for k in range(20)], "val", val_fraction=0.25, seed=s))
        for s in range(5)
    }
    assert len(other) > 1  # the seed matters


def test_folder_same_dir_layout(tmp_path: Path) -> None:
    write_voc_image(tmp_path / "d", tmp_path / "d", "x", (20, 20), [("a", (1, 1, 5, 5), False)])
    ds = FolderDetection(tmp_path / "d")
    assert len(ds) == 1 and ds.classes == ["a"]


# ----------------------------------------------------------------------------------- WIDER FACE


@pytest.fixture
def wider(tmp_path: Path) -> Path:
    root = tmp_path / "WIDER"
    img = root / "WIDER_val" / "images"
    write_image(img / "0--Parade" / "a.jpg", 80, 60)
    write_image(img / "0--Parade" / "b.jpg", 50, 50)
    write_image(img / "1--Handshaking" / "c.jpg", 40, 30)
    gt = root / "wider_face_split" / "wider_face_val_bbx_gt.txt"
    gt.parent.mkdir(parents=True)
    gt.write_text(
        "0--Parade/a.jpg\n3\n"
        "10 10 20 25 0 0 0 0 0 0 \n"
        "40 5 4 4 2 0 0 0 1 0 \n"
        "50 20 15 15 0 0 0 1 0 0 \n"
        "0--Parade/b.jpg\n0\n0 0 0 0 0 0 0 0 0 0 \n"
        "1--Handshaking/c.jpg\n1\n5 5 8 9 0 0 0 0 0 0 \n"
    )
    return root


def test_widerface_invalid_and_min_size(wider: Path) -> None:
    ds = WiderFace(wider, "val")
    assert ds.classes == ["face"]
    assert len(ds) == 3 and ds.num_boxes() == 4 and ds.num_boxes(train_only=True) == 3
    r = ds.records()[0]
    assert r["image_id"] == r["file_name"] == "0--Parade/a.jpg" and (r["width"], r["height"]) == (
        80,
        60,
    )
    np.testing.assert_allclose(r["boxes"][0], [10, 10, 30, 35])
    assert r["ignore"].tolist() == [False, False, True]  # invalid flag honoured
    assert len(ds[1].labels) == 0
    check_sample(ds[0], 1)
    with pytest.warns(DataWarning, match=r"1 flagged invalid, 1 smaller than 6 px, of 4 faces"):
        big = build_dataset("widerface", "val", root=wider, min_face_size=6)
    assert big.num_boxes() == 4 and big.num_boxes(train_only=True) == 2
    assert big.records()[0]["ignore"].tolist() == [False, True, True]
    assert big.num_filtered == {"invalid": 1, "small": 1, "blur": 0}


# ------------------------------------------------------------------------------ raccoon (real)


def _csv_boxes(path: Path) -> dict[str, list[list[float]]]:
    out: dict[str, list[list[float]]] = {}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            box = [float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax")]
            out.setdefault(Path(row["filename"]).stem, []).append(
                [box[0] - 1, box[1] - 1, box[2], box[3]]
            )
    return out


def test_raccoon_dataset(shared_data: Path) -> None:
    root = shared_data / "datasets" / "raccoon_dataset"
    if not (root / "annotations").is_dir():
        pytest.skip("raccoon dataset not present")
    n_xml = len(list((root / "annotations").glob("*.xml")))
    n_obj = sum(p.read_text().count("<object>") for p in (root / "annotations").glob("*.xml"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # a clean dataset: nothing to repair
        ds = FolderDetection(root)
    assert ds.classes == ["raccoon"]
    assert len(ds) == n_xml == 200 and ds.num_boxes() == n_obj == 217
    check_sample(ds[0], 1)

    splits = {"train": root / "data" / "train_labels.csv", "val": root / "data" / "test_labels.csv"}
    for split, csv_file in splits.items():
        part = build_dataset("folder", split, root=root, split_files=splits)
        expected = _csv_boxes(csv_file)
        assert len(part) == len(expected) == len(read_split_list(csv_file))
        assert part.num_boxes() == sum(len(v) for v in expected.values())
        for rec in part.records():  # the CSV boxes are the XML boxes
            got = sorted(rec["boxes"].tolist())
            assert got == sorted(expected[rec["image_id"]])
    assert (
        len(build_dataset("folder", "train", root=root, split_files=splits)),
        len(build_dataset("folder", "val", root=root, split_files=splits)),
    ) == (160, 40)
