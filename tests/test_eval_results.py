"""Bad results files: a clear error or a counted warning, never a silent drop."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from detector.evaluation import (
    COCO_STAT_KEYS,
    CocoEvaluator,
    EvaluationWarning,
    ResultsFileError,
    evaluate_results_file,
)
from detector.evaluation.synthetic import make_synthetic_coco


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    gt, res = make_synthetic_coco(12, 10, num_categories=4, seed=7)
    gt_path = tmp / "gt.json"
    gt_path.write_text(json.dumps(gt))
    return tmp, gt_path, res


def write(tmp: Path, name: str, content) -> Path:
    path = tmp / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def evaluate(path, gt_path, **kw):
    return evaluate_results_file(path, ann_file=gt_path, backend=kw.pop("backend", "faster"), **kw)


def test_empty_file_is_an_error(files):
    tmp, gt_path, _ = files
    for content in ("", "  \n"):
        with pytest.raises(ResultsFileError, match="is empty"):
            evaluate(write(tmp, "empty.json", content), gt_path)


def test_empty_list_is_a_counted_warning(files):
    tmp, gt_path, _ = files
    for backend in ("pycocotools", "faster", "hotcoco"):
        with pytest.warns(EvaluationWarning, match="no detections"):
            m = evaluate(write(tmp, "none.json", []), gt_path, backend=backend)
        assert m["num_detections"] == 0 and m["num_empty_results_files"] == 1
        assert m["AP"] == 0.0


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "not valid JSON"),
        ('{"image_id": 1}', "must hold a JSON list"),
        ([{"image_id": 1, "category_id": 1, "score": 0.5}], r"entry 0 is not a detection"),
        ([1, 2], r"entry 0 is not a detection"),
        (
            [{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3], "score": 0.5}],
            r"entry 0 has bbox=\[1, 2, 3\]",
        ),
        (
            [{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": "0.5"}],
            r"entry 0 has score='0.5'",
        ),
        (
            [{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": None}],
            r"entry 0 has score=None",
        ),
    ],
)
def test_malformed_files_are_errors(files, content, match):
    tmp, gt_path, _ = files
    with pytest.raises(ResultsFileError, match=match):
        evaluate(write(tmp, "malformed.json", content), gt_path)


def test_unknown_image_id_is_an_error(files):
    tmp, gt_path, res = files
    bad = [dict(r) for r in res]
    bad[5]["image_id"] = 99999
    bad[9]["image_id"] = 99999
    with pytest.raises(
        ResultsFileError, match=r"2 of \d+ detections have image ids .*99999.*entry 5"
    ):
        evaluate(write(tmp, "unknown_image.json", bad), gt_path)


def test_unknown_category_id_is_an_error(files):
    tmp, gt_path, res = files
    bad = [dict(r) for r in res]
    bad[3]["category_id"] = 2  # the synthetic ids are 1, 3, 5, 7
    with pytest.raises(
        ResultsFileError, match=r"1 of \d+ detections have category ids .*\[2\].*entry 3"
    ):
        evaluate(write(tmp, "unknown_cat.json", bad), gt_path)


def test_invalid_numbers_are_dropped_with_counted_warning(files):
    tmp, gt_path, res = files
    bad = [dict(r) for r in res]
    bad[0]["bbox"] = [10, 10, -5, 20]  # negative width
    bad[1]["bbox"] = [10, 10, 5, -0.5]  # negative height
    bad[2]["score"] = float("nan")
    bad[3]["bbox"] = [float("inf"), 1, 2, 3]
    path = write(tmp, "invalid.json", bad)  # json writes NaN/Infinity, which json.loads accepts
    with pytest.warns(EvaluationWarning, match=r"4 of \d+ detections cannot be evaluated"):
        m = evaluate(path, gt_path)
    assert m["num_invalid_dropped"] == 4
    assert m["num_invalid_negative_size"] == 2
    assert m["num_invalid_non_finite_score"] == 1
    assert m["num_invalid_non_finite_box"] == 1
    assert m["num_detections"] == len(res) - 4
    # the numbers are those of the file without the four entries
    clean = evaluate(write(tmp, "clean.json", bad[4:]), gt_path, backend="pycocotools")
    for k in COCO_STAT_KEYS:
        assert m[k] == pytest.approx(clean[k], abs=1e-9)
    with pytest.raises(ResultsFileError, match="cannot be evaluated"):
        evaluate(path, gt_path, strict=True)


def test_invalid_model_predictions_are_counted(files):
    _, gt_path, _ = files
    ev = CocoEvaluator(None, ann_file=gt_path)
    boxes = np.array([[0, 0, 10, 10], [5, 5, 1, 1], [np.nan, 0, 1, 1]], dtype=np.float32)
    ev.process([1], [{"boxes": boxes, "scores": np.ones(3), "labels": np.ones(3, int)}])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = ev.evaluate()
    assert any(issubclass(w.category, EvaluationWarning) for w in caught)
    assert m["num_invalid_dropped"] == 2 and m["num_detections"] == 1


def test_wrong_kind_or_missing_inputs(files):
    tmp, gt_path, res = files
    path = write(tmp, "ok.json", res)
    with pytest.raises(ValueError, match="unknown kind"):
        evaluate_results_file(path, ann_file=gt_path, kind="lvis")
    with pytest.raises(ValueError, match="needs records and class_names"):
        evaluate_results_file(path, ann_file=gt_path, kind="voc")
    with pytest.raises(ValueError, match="exactly one of ann_file and records"):
        evaluate_results_file(path, kind="coco")


def test_records_results_may_name_images_by_file_stem(tmp_path):
    records = [
        {
            "image_id": 10 + i,
            "file_name": f"photos/{name}.jpg",
            "width": 50,
            "height": 50,
            "boxes": np.array([[5, 5, 25, 25]], np.float32),
            "labels": np.array([1]),
            "ignore": np.array([False]),
        }
        for i, name in enumerate(["cat_001", "cat_002"])
    ]
    by_id = [{"image_id": 10, "category_id": 1, "bbox": [5, 5, 20, 20], "score": 0.9}]
    by_stem = [{"image_id": "cat_001", "category_id": 1, "bbox": [5, 5, 20, 20], "score": 0.9}]
    results = []
    for kind in ("coco", "voc"):
        for content in (by_id, by_stem):
            m = evaluate_results_file(
                write(tmp_path, "r.json", content), records=records, class_names=["cat"], kind=kind
            )
            results.append(m["AP" if kind == "coco" else "mAP"])
    assert results[0] == results[1] and results[2] == results[3]
    assert results[2] == pytest.approx(0.5)  # kind="voc": area AP, recall 1/2 at precision 1


# ------------------------------------------------------------ files that are not results lists
def test_deeply_nested_file_is_one_clear_error(files):
    tmp, gt_path, _ = files
    path = write(tmp, "deep.json", "[" * 100_000 + "]" * 100_000)
    with pytest.raises(ResultsFileError) as info:
        evaluate(path, gt_path)
    message = str(info.value)
    assert str(path) in message and "nested too deeply" in message and "\n" not in message
    assert not isinstance(info.value.__cause__, RecursionError)


def test_binary_file_is_one_clear_error(files):
    tmp, gt_path, _ = files
    for name, content in (
        ("zipped.json", b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(range(256)) * 4),
        ("latin1.json", b'[{"image_id": "caf\xe9"}]'),
    ):
        path = tmp / name
        path.write_bytes(content)
        with pytest.raises(ResultsFileError) as info:
            evaluate(path, gt_path)
        message = str(info.value)
        assert str(path) in message and "\n" not in message, message


def test_missing_file_is_named(files):
    tmp, gt_path, _ = files
    with pytest.raises(ResultsFileError, match=r"nope\.json not found"):
        evaluate(tmp / "nope.json", gt_path)


# ------------------------------------------------------------- VOC XML ground truth, no images
def _voc_devkit(root: Path, objects: dict[str, list[tuple[str, list[int], int]]]) -> Path:
    """A VOC2007 layout with XML annotations and an image set, but no JPEG files."""
    year = root / "VOC2007"
    (year / "Annotations").mkdir(parents=True)
    (year / "ImageSets" / "Main").mkdir(parents=True)
    (year / "ImageSets" / "Main" / "val.txt").write_text("\n".join(objects) + "\n")
    for stem, objs in objects.items():
        xml = "".join(
            f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>"
            f"<xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax>"
            "</bndbox></object>"
            for name, b, difficult in objs
        )
        (year / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename><size><width>100</width>"
            f"<height>100</height><depth>3</depth></size>{xml}</annotation>"
        )
    return root


def test_voc_results_file_needs_no_images(tmp_path: Path) -> None:
    from detector.data import build_dataset
    from detector.engine.evaluate import evaluate_results_on

    root = _voc_devkit(
        tmp_path / "VOCdevkit",
        {
            "a": [("dog", [1, 1, 10, 10], 0)],
            "b": [("dog", [1, 1, 10, 10], 0), ("dog", [50, 50, 60, 60], 1)],
        },
    )
    dataset = build_dataset(
        "voc", "val", root=root, years="2007", classes=["cat", "dog"], check_files=False
    )
    rows = [
        {"image_id": "a", "category_id": 2, "bbox": [1, 1, 9, 9], "score": 0.9},
        {"image_id": "b", "category_id": 2, "bbox": [70, 70, 9, 9], "score": 0.8},
        {"image_id": "b", "category_id": 2, "bbox": [50, 50, 10, 10], "score": 0.7},  # difficult
    ]
    path = write(tmp_path, "voc.json", rows)
    m = evaluate_results_on(path, tmp_path / "out", metric="voc07", dataset=dataset)
    # devkit: 2 non-difficult boxes, TP then FP (the detection on the difficult box is ignored):
    # precision 1 up to recall 0.5 -> 6 of the 11 points
    assert m["AP/dog"] == pytest.approx(6 / 11, abs=1e-12)
    assert m["num_gt_difficult"] == 1 and np.isnan(m["AP/cat"])
    assert (tmp_path / "out" / "metrics.json").is_file()
