"""Bad input: every problem gets a message naming the file and the problem, expected box problems
are repaired or skipped with one counted warning, and nothing crashes mid-epoch or yields NaN.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from test_data_helpers import coco_ann, write_coco, write_image, write_voc_image

from detector.data import (
    CocoDetection,
    DatasetError,
    DataWarning,
    FolderDetection,
    SeededTransformDataset,
    VOCDetection,
    WiderFace,
    build_transforms,
    collate_detection,
    load_image,
    read_labels_file,
)

CATS = [{"id": 1, "name": "thing"}]


def one_image_coco(tmp_path: Path, anns: list[dict], **kw) -> Path:
    return write_coco(
        tmp_path / "c",
        [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30}],
        anns,
        CATS,
        **kw,
    )


# ---------------------------------------------------------------------------------- images


def test_missing_and_corrupt_image_messages(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"nope\.jpg: image file not found"):
        load_image(tmp_path / "nope.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(DatasetError, match=r"bad\.jpg: corrupt or unsupported image"):
        load_image(bad)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"empty\.png: image file is empty"):
        load_image(tmp_path / "empty.png")


def test_grey_and_alpha_images_become_rgb(tmp_path: Path) -> None:
    import cv2

    cv2.imwrite(str(tmp_path / "g.png"), np.full((5, 7), 9, np.uint8))
    cv2.imwrite(str(tmp_path / "a.png"), np.full((5, 7, 4), 9, np.uint8))
    for name in ("g.png", "a.png"):
        img = load_image(tmp_path / name)
        assert img.shape == (5, 7, 3) and img.dtype == np.uint8


def test_corrupt_image_mid_epoch_is_skipped_with_warning(tmp_path: Path) -> None:
    images = [{"id": k, "file_name": f"{k}.jpg", "width": 20, "height": 20} for k in range(3)]
    ann_file = write_coco(
        tmp_path / "c", images, [coco_ann(k + 1, k, 1, [1, 1, 5, 5]) for k in range(3)], CATS
    )
    (tmp_path / "c" / "images" / "1.jpg").write_bytes(b"garbage")
    ds = CocoDetection(ann_file)
    with pytest.warns(DataWarning, match=r"1\.jpg: corrupt or unsupported image.*skipped"):
        s = ds[1]
    assert s.image_id == 2  # the next readable image
    assert ds.issues.counts["image skipped: unreadable"] == 1
    # a whole epoch through a transform and the collate function does not crash
    loaded = SeededTransformDataset(ds, build_transforms("ssd", (32, 32), train=True), seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        batch = collate_detection([loaded[i] for i in range(len(loaded))])
    assert batch["images"].shape == (3, 3, 32, 32)
    with pytest.raises(DatasetError, match="1 unreadable image"):
        ds.verify()
    with pytest.raises(DatasetError, match=r"1\.jpg: corrupt"):
        CocoDetection(ann_file, strict=True)[1]


def test_all_images_unreadable_is_an_error(tmp_path: Path) -> None:
    ann_file = one_image_coco(tmp_path, [coco_ann(1, 1, 1, [1, 1, 5, 5])])
    (tmp_path / "c" / "images" / "a.jpg").write_bytes(b"garbage")
    ds = CocoDetection(ann_file)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with pytest.raises(DatasetError, match="none of the 1 images could be read"):
            ds[0]


def test_coco_annotation_pointing_at_missing_image_file(tmp_path: Path) -> None:
    ann_file = write_coco(
        tmp_path / "c",
        [
            {"id": 1, "file_name": "a.jpg", "width": 40, "height": 30},
            {"id": 2, "file_name": "gone.jpg", "width": 9, "height": 9},
        ],
        [coco_ann(1, 2, 1, [1, 1, 5, 5])],
        CATS,
        make_files=False,
    )
    write_image(tmp_path / "c" / "images" / "a.jpg", 40, 30)
    with pytest.raises(
        DatasetError,
        match=r"1 annotated image\(s\) not found:\n  .*gone\.jpg \(referenced by .*annotations\.json image id 2\)",
    ):
        CocoDetection(ann_file)


def test_xml_pointing_at_missing_image(tmp_path: Path) -> None:
    write_voc_image(
        tmp_path / "images", tmp_path / "annotations", "ok", (20, 20), [("a", (1, 1, 5, 5), False)]
    )
    write_voc_image(
        tmp_path / "images",
        tmp_path / "annotations",
        "lost",
        (20, 20),
        [("a", (1, 1, 5, 5), False)],
    )
    (tmp_path / "images" / "lost.jpg").unlink()
    with pytest.raises(
        DatasetError, match=r"annotations/lost\.xml \(no image lost\.\* or 'lost\.jpg'"
    ):
        FolderDetection(tmp_path)


def test_voc_list_pointing_at_missing_image(tmp_path: Path) -> None:
    base = tmp_path / "VOC2007"
    write_voc_image(
        base / "JPEGImages",
        base / "Annotations",
        "000001",
        (20, 20),
        [("dog", (1, 1, 5, 5), False)],
    )
    (base / "ImageSets" / "Main").mkdir(parents=True)
    (base / "ImageSets" / "Main" / "val.txt").write_text("000001\n000002\n")
    with pytest.raises(DatasetError, match=r"JPEGImages/000002\.jpg \(referenced by .*val\.txt\)"):
        VOCDetection(tmp_path, "val", "2007")
    with pytest.raises(DatasetError, match=r"ImageSets/Main/train\.txt: image set not found"):
        VOCDetection(tmp_path, "train", "2007")


def test_wider_missing_image(tmp_path: Path) -> None:
    gt = tmp_path / "wider_face_split" / "wider_face_train_bbx_gt.txt"
    gt.parent.mkdir(parents=True)
    gt.write_text("0--Parade/a.jpg\n1\n1 1 5 5 0 0 0 0 0 0\n")
    with pytest.raises(DatasetError, match=r"0--Parade/a\.jpg \(referenced by"):
        WiderFace(tmp_path, "train")


# ------------------------------------------------------------------------- files that do not parse


def test_json_that_does_not_parse(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [1, 2,')
    with pytest.raises(DatasetError, match=r"bad\.json: not valid JSON \(.*line 1"):
        CocoDetection(bad)
    with pytest.raises(DatasetError, match=r"missing\.json: annotation file not found"):
        CocoDetection(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("[]", "top level is not a JSON object"),
        ('{"images": [], "categories": []}', "missing or non-list 'annotations'"),
        (
            '{"images": [{"id": 1}], "annotations": [], "categories": []}',
            r"images\[0\] needs 'id' and 'file_name'",
        ),
        (
            '{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 1, "category_id": 1, "bbox": [1, 2]}], "categories": [{"id": 1, "name": "x"}]}',
            r"annotations\[0\] \(id None\): bbox \[1, 2\] is not 4 numbers",
        ),
        (
            '{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"id": 5, "image_id": 2, "category_id": 1, "bbox": [1, 2, 3, 4]}], "categories": [{"id": 1, "name": "x"}]}',
            r"annotations\[0\] \(id 5\) points at image_id 2, which is not in 'images'",
        ),
        (
            '{"images": [{"id": 1, "file_name": "a"}, {"id": 1, "file_name": "b"}], "annotations": [], "categories": []}',
            r"images\[1\]: duplicate image id 1",
        ),
    ],
)
def test_malformed_coco_structure(tmp_path: Path, data: str, message: str) -> None:
    f = tmp_path / "x.json"
    f.write_text(data)
    with pytest.raises(DatasetError, match=rf"x\.json: {message}"):
        CocoDetection(f, check_files=False)


def test_xml_that_does_not_parse(tmp_path: Path) -> None:
    write_voc_image(
        tmp_path / "images", tmp_path / "annotations", "a", (20, 20), [("a", (1, 1, 5, 5), False)]
    )
    (tmp_path / "annotations" / "a.xml").write_text("<annotation><object><name>a</name>")
    with pytest.raises(DatasetError, match=r"a\.xml: XML does not parse \(.*line 1"):
        FolderDetection(tmp_path)


def test_xml_with_bad_fields(tmp_path: Path) -> None:
    write_voc_image(
        tmp_path / "images", tmp_path / "annotations", "a", (20, 20), [("a", (1, 1, 5, 5), False)]
    )
    xml = tmp_path / "annotations" / "a.xml"
    xml.write_text(xml.read_text().replace("<xmax>5</xmax>", "<xmax>five</xmax>"))
    with pytest.raises(
        DatasetError, match=r"a\.xml: object 0 \(a\) has a missing or non-numeric <xmax>: 'five'"
    ):
        FolderDetection(tmp_path)
    xml.write_text("<root/>")
    with pytest.raises(DatasetError, match=r"a\.xml: not a VOC annotation \(root element <root>\)"):
        FolderDetection(tmp_path)


def test_wider_gt_that_does_not_parse(tmp_path: Path) -> None:
    gt = tmp_path / "wider_face_val_bbx_gt.txt"
    gt.write_text("a.jpg\nthree\n")
    with pytest.raises(
        DatasetError, match=r"wider_face_val_bbx_gt\.txt:2: face count 'three' is not an integer"
    ):
        WiderFace(tmp_path, "val")
    gt.write_text("a.jpg\n2\n1 1 5 5 0 0 0 0 0 0\n")
    with pytest.raises(DatasetError, match=r":4: file ends inside the faces of 'a\.jpg'"):
        WiderFace(tmp_path, "val")


# ------------------------------------------------------------------------------------- boxes


def test_bad_boxes_are_counted_and_summarised_once(tmp_path: Path) -> None:
    anns = [
        coco_ann(1, 1, 1, [5, 5, 10, 10]),  # fine
        coco_ann(2, 1, 1, [5, 5, 0, 10]),  # zero area
        coco_ann(3, 1, 1, [5, 5, -4, 10]),  # inverted
        coco_ann(4, 1, 1, [100, 100, 5, 5]),  # outside the 40x30 image
        coco_ann(5, 1, 1, [30, 20, 20, 20]),  # partly outside: clipped
        coco_ann(6, 1, 1, [-0.5, 0, 10, 30.5]),  # within the 1 px tolerance: clipped silently
    ]
    ann_file = one_image_coco(tmp_path, anns)
    with pytest.warns(DataWarning) as record:
        ds = CocoDetection(ann_file)
    assert len(record) == 1  # one summary, not one warning per box
    text = str(record[0].message)
    assert "4 annotation problem(s) repaired or skipped" in text
    assert "box skipped: zero area: 1" in text and "box skipped: inverted: 1" in text
    assert (
        "box skipped: outside the image: 1" in text
        and "box clipped: partly outside the image: 1" in text
    )
    assert "annotations.json image 1 (a.jpg): box 2 [5, 5, 1, 15] is inverted" in text
    assert ds.issues.counts == {
        "box skipped: zero area": 1,
        "box skipped: inverted": 1,
        "box skipped: outside the image": 1,
        "box clipped: partly outside the image": 1,
    }
    r = ds.records()[0]
    np.testing.assert_allclose(r["boxes"], [[5, 5, 15, 15], [30, 20, 40, 30], [0, 0, 9.5, 30]])
    s = ds[0]
    assert np.isfinite(s.boxes).all() and len(s.boxes) == 3


def test_strict_mode_raises_with_the_message(tmp_path: Path) -> None:
    ann_file = one_image_coco(tmp_path, [coco_ann(1, 1, 1, [5, 5, -4, 10])])
    with pytest.raises(DatasetError, match=r"a\.jpg\): box 0 \[5, 5, 1, 15\] is inverted .*strict"):
        CocoDetection(ann_file, strict=True)


def test_nan_boxes_in_xml_are_skipped(tmp_path: Path) -> None:
    write_voc_image(
        tmp_path / "images",
        tmp_path / "annotations",
        "a",
        (20, 20),
        [("a", (1, 1, 5, 5), False), ("a", (2, 2, 9, 9), False)],
    )
    xml = tmp_path / "annotations" / "a.xml"
    xml.write_text(xml.read_text().replace("<xmax>9</xmax>", "<xmax>nan</xmax>"))
    with pytest.warns(
        DataWarning, match=r"a\.xml: box 1 \[2, 2, nan, 9\] has a non-finite coordinate"
    ):
        ds = FolderDetection(tmp_path)
    s = ds[0]
    assert len(s.boxes) == 1 and np.isfinite(s.boxes).all()


def test_image_size_differs_from_annotation(tmp_path: Path) -> None:
    # the annotation says 40x30, the file is 20x15: boxes are clipped to the real image
    ann_file = write_coco(
        tmp_path / "c",
        [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30}],
        [coco_ann(1, 1, 1, [2, 2, 30, 20])],
        CATS,
        make_files=False,
    )
    write_image(tmp_path / "c" / "images" / "a.jpg", 20, 15)
    ds = CocoDetection(ann_file)
    with pytest.warns(
        DataWarning,
        match=r"a\.jpg: decoded image is 20x15 but annotated as 40x30; 1 box\(es\) clipped, 0 dropped",
    ):
        s = ds[0]
    np.testing.assert_allclose(s.boxes, [[2, 2, 20, 15]])


# ---------------------------------------------------------------------------- classes, emptiness


def test_unknown_class_name(tmp_path: Path) -> None:
    write_voc_image(
        tmp_path / "images",
        tmp_path / "annotations",
        "a",
        (20, 20),
        [("cat", (1, 1, 5, 5), False), ("dgo", (2, 2, 6, 6), False)],
    )
    with pytest.raises(
        DatasetError, match=r"a\.xml: object 1 has unknown class name 'dgo' \(known: cat, dog\)"
    ):
        FolderDetection(tmp_path, classes=["cat", "dog"])
    with pytest.warns(DataWarning, match=r"object skipped: unknown class: 1"):
        ds = FolderDetection(tmp_path, classes=["cat", "dog"], skip_unknown_classes=True)
    assert ds.num_boxes() == 1


def test_unknown_coco_category(tmp_path: Path) -> None:
    ann_file = one_image_coco(
        tmp_path, [coco_ann(1, 1, 1, [1, 1, 5, 5]), coco_ann(7, 1, 4, [1, 1, 5, 5])]
    )
    with pytest.raises(
        DatasetError,
        match=r"annotations\[1\] \(id 7\) has category_id 4, which is not in 'categories'",
    ):
        CocoDetection(ann_file)
    with pytest.warns(DataWarning, match="annotation skipped: unknown category: 1"):
        assert CocoDetection(ann_file, skip_unknown_categories=True).num_boxes() == 1


def test_dataset_that_would_train_on_nothing(tmp_path: Path) -> None:
    no_cats = write_coco(
        tmp_path / "n", [{"id": 1, "file_name": "a.jpg", "width": 9, "height": 9}], [], []
    )
    with pytest.raises(DatasetError, match="no classes"):
        CocoDetection(no_cats)
    no_images = write_coco(tmp_path / "e", [], [], CATS)
    with pytest.raises(DatasetError, match="zero usable images"):
        CocoDetection(no_images)
    all_bad = one_image_coco(
        tmp_path / "bad", [coco_ann(1, 1, 1, [5, 5, -4, 10]), coco_ann(2, 1, 1, [9, 9, 0, 0])]
    )
    with pytest.raises(
        DatasetError, match=r"(?s)1 images but zero usable boxes.*2 problem\(s\) found.*inverted"
    ):
        CocoDetection(all_bad)
    only_empty = one_image_coco(tmp_path, [])
    with pytest.raises(DatasetError, match="zero usable boxes"):
        CocoDetection(only_empty)
    with pytest.raises(DatasetError, match="zero usable images"):
        CocoDetection(only_empty, drop_empty=True)
    write_voc_image(tmp_path / "f" / "images", tmp_path / "f" / "annotations", "a", (20, 20), [])
    with pytest.raises(DatasetError, match="no class names found"):
        FolderDetection(tmp_path / "f")
    (tmp_path / "g").mkdir()
    with pytest.raises(DatasetError, match=r"no \.xml annotation files found"):
        FolderDetection(tmp_path / "g")


def test_labels_file_problems(tmp_path: Path) -> None:
    f = tmp_path / "labels.txt"
    f.write_text("# nothing\n\n")
    with pytest.raises(DatasetError, match=r"labels\.txt: labels file lists no class names"):
        read_labels_file(f)
    f.write_text("a\nb\na\n")
    with pytest.raises(DatasetError, match=r"repeats class names \['a'\]"):
        read_labels_file(f)
    with pytest.raises(DatasetError, match=r"nope\.txt: labels file not found"):
        read_labels_file(tmp_path / "nope.txt")


def test_split_list_naming_unknown_images(tmp_path: Path) -> None:
    write_voc_image(
        tmp_path / "images", tmp_path / "annotations", "a", (20, 20), [("x", (1, 1, 5, 5), False)]
    )
    (tmp_path / "train.txt").write_text("a\nb\n")
    with pytest.raises(
        DatasetError, match=r"train\.txt: 1 listed image\(s\) have no annotated image .*\['b'\]"
    ):
        FolderDetection(tmp_path, "train", split_file=tmp_path / "train.txt")
