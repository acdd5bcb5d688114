"""The converted real TF COCO model on real photos with a COCO annotation file we write.

Ground truth: the 85 real indoor photos of ``datasets/cartucho_map_sample`` with that sample's own
boxes (independent of both models) for the classes that are COCO categories, in a COCO file that
lists all 80 COCO categories with their official ids (:mod:`coco_assets`). The model has 90
class slots (TF label map, '???' at unused ids).

* acceptance: ``eval.py checkpoint=coco.pt dataset=coco ...`` with eval.py's defaults scores at
  least the pycocotools mAP of the real TFLite interpreter's own detections on the same file, and
  its number is pycocotools' number on the ``detections.json`` it writes;
* a subset file (chair, tv) is scored on those two classes only, with the same per-class APs as
  the 80-category file, and the detections of the other classes are dropped and counted;
* ``detect.py ann_file=...`` -> ``eval.py detections=...`` round trip (real image ids), and
  ``eval.py`` accepting ``file_name``-keyed results.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from coco_assets import (
    COCO_CATEGORIES,
    cartucho_coco_file,
    pycocotools_ap,
    tflite_interpreter_results,
)

pytest.importorskip("cv2")
pytest.importorskip("pycocotools")

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO)}
TFLITE = "ssd_mobilenet_v1_coco_quant_tflite"


def _run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(REPO / script), *args],
        cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def assets(shared_data: Path, tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("coco_rt")
    tflite = shared_data / TFLITE / "detect.tflite"
    ckpt = tmp / "coco.pt"
    subprocess.run(
        [sys.executable, "-m", "detector.convert", "tflite", f"path={tflite}", f"out={ckpt}",
         f"labels={shared_data / TFLITE / 'coco_labels.txt'}"],
        cwd=tmp, env=ENV, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    ann, images = cartucho_coco_file(shared_data, tmp / "instances_cartucho.json")
    return {"tmp": tmp, "ckpt": ckpt, "ann": ann, "images": images, "tflite": tflite}


def _eval(assets: dict[str, Path], ann: Path, name: str, *extra: str) -> dict:
    out = assets["tmp"] / name
    _run(
        "eval.py", f"checkpoint={assets['ckpt']}", "dataset=coco",
        f"dataset.val_ann_file={ann}", f"dataset.val_images={assets['images']}",
        "num_workers=0", "backend=pycocotools", f"hydra.run.dir={out}", *extra, cwd=assets["tmp"],
    )  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["_detections"] = json.loads((out / "detections.json").read_text())
    return metrics


@pytest.fixture(scope="module")
def full_eval(assets) -> dict:
    return _eval(assets, assets["ann"], "eval_defaults")


def test_converted_model_scores_at_least_the_tflite_interpreter(assets, full_eval) -> None:
    tflite_results = tflite_interpreter_results(assets["tflite"], assets["ann"], assets["images"])
    theirs = pycocotools_ap(assets["ann"], tflite_results)
    ours_recomputed = pycocotools_ap(assets["ann"], full_eval["_detections"])
    print(f"cartucho sample, 85 images: ours AP {full_eval['AP']:.4f} AP50 "
          f"{full_eval['AP50']:.4f}; TFLite interpreter AP {theirs['AP']:.4f} "
          f"AP50 {theirs['AP50']:.4f}")  # fmt: skip
    assert full_eval["class_map_by"] == "id" and full_eval["num_shared_classes"] == 80
    # eval.py's figure is pycocotools' figure for the detections it wrote ...
    assert full_eval["AP"] == pytest.approx(ours_recomputed["AP"], abs=1e-9)
    # ... and at least the real TFLite interpreter's mAP on the same file.
    assert theirs["AP"] > 0.05  # the reference itself works on this ground truth
    assert full_eval["AP"] >= theirs["AP"]
    assert full_eval["AP50"] >= theirs["AP50"]
    assert {r["category_id"] for r in full_eval["_detections"]} <= {c for c, _ in COCO_CATEGORIES}


def test_subset_file_scores_only_shared_classes(assets) -> None:
    keep = {62: "chair", 72: "tv"}
    data = json.loads(assets["ann"].read_text())
    data["categories"] = [c for c in data["categories"] if c["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] in keep]
    ann = assets["tmp"] / "instances_chair_tv.json"
    ann.write_text(json.dumps(data))
    big = "postprocess.max_detections=100000"  # no per-image cut: both runs see the same boxes
    sub = _eval(assets, ann, "eval_subset", big)
    full = _eval(assets, assets["ann"], "eval_full_nocut", big)
    assert sub["num_shared_classes"] == 2 and sub["class_map_by"] == "id"
    assert {r["category_id"] for r in sub["_detections"]} == set(keep)
    for name in keep.values():
        assert sub[f"AP/{name}"] == pytest.approx(full[f"AP/{name}"], abs=1e-9)
    # What the subset run dropped is what the full run kept of the other 78 categories, plus
    # what the full run itself dropped (the '???' slots).
    others = sum(1 for r in full["_detections"] if r["category_id"] not in keep)
    assert sub["num_dropped_detections"] == others + full["num_dropped_detections"] > 0
    assert sub["dropped_detections/person"] == sum(
        1 for r in full["_detections"] if r["category_id"] == 1
    )
    assert pycocotools_ap(ann, sub["_detections"])["AP"] == pytest.approx(sub["AP"], abs=1e-9)


def test_no_shared_class_stops_with_one_line(assets) -> None:
    data = json.loads(assets["ann"].read_text())
    data["categories"] = [{"id": 1, "name": "raccoon"}]
    first = data["images"][0]["id"]
    data["annotations"] = [{"id": 1, "image_id": first, "category_id": 1,
                            "bbox": [10, 10, 50, 50], "area": 2500, "iscrowd": 0}]  # fmt: skip
    ann = assets["tmp"] / "instances_raccoon.json"
    ann.write_text(json.dumps(data))
    proc = subprocess.run(
        [sys.executable, str(REPO / "eval.py"), f"checkpoint={assets['ckpt']}", "dataset=coco",
         f"dataset.val_ann_file={ann}", f"dataset.val_images={assets['images']}",
         f"hydra.run.dir={assets['tmp'] / 'eval_raccoon'}"],
        cwd=assets["tmp"], env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "no class in common" in proc.stderr and "raccoon (id 1)" in proc.stderr


# ------------------------------------------------------------------ detect.py -> eval.py round trip
@pytest.fixture(scope="module")
def photo_set(shared_data: Path, assets) -> Path:
    """A COCO file for the shared photos (``images/``) with non-sequential ids; its ground truth
    is the TFLite reference detections with score >= 0.5 (any fixed ground truth will do here:
    the round trip is checked against pycocotools on the same rows)."""
    ref = json.loads((shared_data / TFLITE / "tflite_reference_detections.json").read_text())
    images, annotations = [], []
    for k, (name, entry) in enumerate(sorted(ref["images"].items())):
        image_id = 397133 + 1000 * k
        images.append({"id": image_id, "file_name": name, "width": entry["width"],
                       "height": entry["height"]})  # fmt: skip
        for det in entry["detections"]:
            if det["score"] < 0.5:
                continue
            x1, y1, x2, y2 = det["box_px_xyxy"]
            x1, y1 = max(x1, 0.0), max(y1, 0.0)
            x2, y2 = min(x2, entry["width"]), min(y2, entry["height"])
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id,
                "category_id": det["class_index"] + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
            })  # fmt: skip
    categories = [{"id": cid, "name": name} for cid, name in COCO_CATEGORIES]
    ann = assets["tmp"] / "instances_photos.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations,
                               "categories": categories}))  # fmt: skip
    return ann


def test_detect_then_eval_round_trip(assets, photo_set: Path, shared_data: Path) -> None:
    images = shared_data / "images"
    gt = json.loads(photo_set.read_text())
    ids = {img["file_name"]: img["id"] for img in gt["images"]}
    same = [
        "postprocess.score_thresh=0.01",
        "postprocess.max_detections=200",
        "save=false",
        "progress=false",
    ]
    with_ids = assets["tmp"] / "detect_ids"
    _run("detect.py", f"checkpoint={assets['ckpt']}", f"source={images}",
         f"ann_file={photo_set}", f"hydra.run.dir={with_ids}", *same, cwd=assets["tmp"])  # fmt: skip
    rows = json.loads((with_ids / "detections.json").read_text())
    assert rows and {r["image_id"] for r in rows} == set(ids.values())
    assert all(r["image_id"] == ids[r["file_name"]] for r in rows)
    assert {r["category_id"] for r in rows} <= {c for c, _ in COCO_CATEGORIES}

    plain = assets["tmp"] / "detect_plain"  # no ann_file: images numbered 1, 2, 3, ...
    _run("detect.py", f"checkpoint={assets['ckpt']}", f"source={images}",
         f"hydra.run.dir={plain}", *same, cwd=assets["tmp"])  # fmt: skip
    plain_rows = json.loads((plain / "detections.json").read_text())
    assert {r["image_id"] for r in plain_rows} == set(range(1, len(ids) + 1))

    reference = pycocotools_ap(photo_set, [{k: r[k] for k in ("image_id", "category_id", "bbox",
                                                              "score")} for r in rows])  # fmt: skip
    for name, results in (("eval_rows_ids", with_ids), ("eval_rows_names", plain)):
        out = assets["tmp"] / name
        _run("eval.py", "dataset=coco", f"dataset.val_ann_file={photo_set}",
             f"dataset.val_images={images}", f"detections={results / 'detections.json'}",
             "backend=pycocotools", f"hydra.run.dir={out}", cwd=assets["tmp"])  # fmt: skip
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["AP"] == pytest.approx(reference["AP"], abs=1e-9), name
        assert metrics["num_detections"] == len(rows)

    # eval.py checkpoint=... on the same set (same post-processing) gives the same figure.
    direct = _eval({**assets, "images": images}, photo_set, "eval_photos_ckpt")
    assert direct["AP"] == pytest.approx(reference["AP"], abs=2e-3)
    assert reference["AP"] > 0.5


def test_results_with_unknown_file_names_fail_clearly(assets, photo_set: Path, tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"file_name": "nowhere.jpg", "image_id": 1, "category_id": 1,
                                "bbox": [1, 1, 5, 5], "score": 0.9}]))  # fmt: skip
    proc = subprocess.run(
        [sys.executable, str(REPO / "eval.py"), "dataset=coco",
         f"dataset.val_ann_file={photo_set}", f"detections={bad}",
         f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "nowhere.jpg" in lines[0] and "file_name" in lines[0], proc.stderr
