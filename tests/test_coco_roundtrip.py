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
