"""PASCAL VOC AP: hand-computed toys, the devkit rules, and Cartucho/mAP on real data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from detector.evaluation import (
    EvaluationWarning,
    Evaluator,
    VOCEvaluator,
    build_evaluator,
    evaluate_results_file,
    voc_ap,
    write_results_file,
)


def record(image_id, boxes, labels, difficult=None):
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    ignore = np.zeros(len(labels), bool) if difficult is None else np.asarray(difficult, bool)
    return {
        "image_id": image_id,
        "file_name": f"{image_id}.jpg",
        "width": 100,
        "height": 100,
        "boxes": boxes,
        "labels": labels,
        "ignore": ignore,
    }


def pred(boxes, scores, labels):
    return {
        "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        "scores": np.asarray(scores, dtype=np.float32),
        "labels": np.asarray(labels, dtype=np.int64),
    }


# Two images, four objects of class 1 (plus a difficult one in image "a").
G1, G2, G3, G4 = [0, 0, 9, 9], [20, 20, 39, 39], [0, 0, 19, 9], [50, 50, 79, 69]
HARD = [60, 0, 79, 19]
TOY_RECORDS = [
    record("a", [G1, G2, HARD], [1, 1, 1], [False, False, True]),
    record("b", [G3, G4], [1, 1]),
]


def toy_predictions():
    """Sorted by score: TP, FP (nothing there), TP, FP (duplicate), TP, plus one on HARD."""
    return (
        ["a", "b"],
        [
            pred([G1, G1, HARD], [0.9, 0.6, 0.95], [1, 1, 1]),
            pred([[80, 80, 99, 99], G3, G4], [0.8, 0.7, 0.5], [1, 1, 1]),
        ],
    )


def test_voc07_eleven_point_toy_by_hand():
    ev = VOCEvaluator(["thing"], TOY_RECORDS, metric="voc07")
    assert isinstance(ev, Evaluator)
    ev.process(*toy_predictions())
    m = ev.evaluate()
    # recall 1/4, 1/4, 2/4, 2/4, 3/4; precision 1, 1/2, 2/3, 2/4, 3/5 (HARD ignored).
    # t = 0, .1, .2 -> 1; t = .3, .4, .5 -> 2/3; t = .6, .7 -> 3/5; t = .8, .9, 1 -> 0.
    expected = (3 * 1 + 3 * (2 / 3) + 2 * (3 / 5)) / 11
    assert m["AP/thing"] == pytest.approx(expected, abs=1e-12)
    assert m["mAP"] == pytest.approx(expected, abs=1e-12)
    assert m["num_gt/thing"] == 4 and m["num_gt_difficult"] == 1
    assert m["num_tp/thing"] == 3 and m["num_fp/thing"] == 2
    assert m["num_ignored_on_difficult"] == 1
    assert "11-point" in m["protocol"] and "+1" in m["protocol"]


def test_voc_area_toy_by_hand():
    ev = build_evaluator("voc", class_names=["thing"], records=TOY_RECORDS)  # kind voc = area
    ev.process(*toy_predictions())
    m = ev.evaluate()
    expected = 0.25 * 1 + 0.25 * (2 / 3) + 0.25 * (3 / 5)
    assert m["AP/thing"] == pytest.approx(expected, abs=1e-12)
    assert "all-point" in m["protocol"]
    ev07 = build_evaluator("voc07", class_names=["thing"], records=TOY_RECORDS)
    ev07.process(*toy_predictions())
    assert ev07.evaluate()["AP/thing"] == pytest.approx(6.2 / 11, abs=1e-12)


def test_voc_ap_function():
    rec = np.array([0.25, 0.25, 0.5, 0.5, 0.75])
    prec = np.array([1, 0.5, 2 / 3, 0.5, 0.6])
    assert voc_ap(rec, prec, use_07_metric=True) == pytest.approx(6.2 / 11)
    assert voc_ap(rec, prec, use_07_metric=False) == pytest.approx(0.25 + 0.25 * 2 / 3 + 0.15)
    assert voc_ap(np.zeros(0), np.zeros(0), use_07_metric=True) == 0.0
    assert voc_ap(np.zeros(0), np.zeros(0), use_07_metric=False) == 0.0


@pytest.mark.parametrize("metric", ["voc07", "voc"])
def test_perfect_predictions_give_ap_one(metric):
    rng = np.random.default_rng(0)
    records = []
    for i in range(8):
        m = int(rng.integers(1, 6))
        xy = rng.integers(0, 200, (m, 2))
        boxes = np.concatenate([xy, xy + rng.integers(5, 80, (m, 2))], 1)
        records.append(record(f"im{i}", boxes, rng.integers(1, 4, m), rng.random(m) < 0.2))
    ev = VOCEvaluator(["a", "b", "c"], records, metric=metric)
    for r in records:  # every box predicted exactly, difficult ones too
        ev.process([r["image_id"]], [pred(r["boxes"], rng.random(len(r["labels"])), r["labels"])])
    m = ev.evaluate()
    for name in ("a", "b", "c"):
        if m[f"num_gt/{name}"]:
            assert m[f"AP/{name}"] == pytest.approx(1.0)
    assert m["mAP"] == pytest.approx(1.0)
    assert m["num_false_positives"] == 0


def test_no_predictions_give_zero():
    ev = VOCEvaluator(["thing"], TOY_RECORDS, metric="voc")
    with pytest.warns(EvaluationWarning, match="without any detection"):
        m = ev.evaluate()
    assert m["AP/thing"] == 0.0 and m["mAP"] == 0.0


def test_difficult_objects_are_ignored():
    only_hard = [record("a", [HARD, G1], [1, 1], [True, False])]
    ev = VOCEvaluator(["thing"], only_hard, metric="voc")
    ev.process(["a"], [pred([HARD, G1], [0.99, 0.5], [1, 1])])
    m = ev.evaluate()
    assert m["AP/thing"] == pytest.approx(1.0)  # the hit on the difficult box is no FP
    assert m["num_gt/thing"] == 1
    # A miss of a difficult box costs no recall either: recall 1 with G1 alone.
    ev.reset()
    ev.process(["a"], [pred([G1], [0.5], [1])])
    assert ev.evaluate()["AP/thing"] == pytest.approx(1.0)


def test_plus_one_pixel_convention():
    # 10x10 px box (inclusive) vs its top half: IoU 50/100 = 0.5 with +1, 36/81 without.
    recs = [record("a", [[0, 0, 9, 9]], [1])]
    half = pred([[0, 0, 9, 4]], [1.0], [1])
    with_plus = VOCEvaluator(["x"], recs, metric="voc", use_07_plus_one=True)
    with_plus.process(["a"], [half])
    assert with_plus.evaluate()["AP/x"] == pytest.approx(1.0)
    without = VOCEvaluator(["x"], recs, metric="voc", use_07_plus_one=False)
    without.process(["a"], [half])
    m = without.evaluate()
    assert m["AP/x"] == 0.0
    assert "no +1" in m["protocol"]


def test_best_box_taken_means_false_positive():
    """VOC rule: a detection whose best box is already matched is FP, no fall-back."""
    ga, gb = [0, 0, 9, 9], [3, 0, 12, 9]
    recs = [record("a", [ga, gb], [1, 1])]
    ev = VOCEvaluator(["x"], recs, metric="voc")
    # second detection: IoU 0.818 with ga (taken) and 0.667 with gb (free) -> FP
    ev.process(["a"], [pred([ga, [1, 0, 10, 9]], [0.9, 0.8], [1, 1])])
    m = ev.evaluate()
    assert (m["num_tp/x"], m["num_fp/x"]) == (1, 1)
    assert m["AP/x"] == pytest.approx(0.5)


def test_class_without_ground_truth_is_not_in_the_map():
    recs = [record("a", [G1], [1])]
    ev = VOCEvaluator(["x", "never"], recs, metric="voc07")
    ev.process(["a"], [pred([G1, G2], [0.9, 0.8], [1, 2])])
    m = ev.evaluate()
    assert math.isnan(m["AP/never"])
    assert m["mAP"] == pytest.approx(1.0)
    assert m["num_classes_in_map"] == 1 and m["num_detections_no_gt_class"] == 1


def test_results_file_round_trip(tmp_path):
    ev = VOCEvaluator(["thing"], TOY_RECORDS, metric="voc07")
    ev.process(*toy_predictions())
    m = ev.evaluate()
    path = write_results_file(ev.results(), tmp_path / "dets.json")
    again = evaluate_results_file(
        path, records=TOY_RECORDS, class_names=["thing"], kind="voc07", out_dir=tmp_path / "rep"
    )
    assert again["AP/thing"] == m["AP/thing"]
    assert (tmp_path / "rep" / "pr_curves.png").is_file()


# ----------------------------------------------------------------------------- real data


def read_cartucho(root: Path):
    """Cartucho/mAP's input/ folder -> (records, class_names, results list).

    ground-truth/<stem>.txt: ``<class> <left> <top> <right> <bottom> [difficult]``;
    detection-results/<stem>.txt: ``<class> <confidence> <left> <top> <right> <bottom>``.
    The class list holds every class of either folder, so no detection is left out: classes
    absent from the ground truth get no AP and stay out of the mAP, as in main.py.
    """
    gt_objects: dict[str, list] = {}
    for f in sorted((root / "input" / "ground-truth").glob("*.txt")):
        objs = []
        for line in f.read_text().splitlines():
            parts = line.split()
            if not parts:
                continue
            difficult = parts[-1] == "difficult"
            if difficult:
                parts = parts[:-1]
            objs.append((" ".join(parts[:-4]), [float(v) for v in parts[-4:]], difficult))
        gt_objects[f.stem] = objs
    det_rows = []
    for f in sorted((root / "input" / "detection-results").glob("*.txt")):
        for line in f.read_text().splitlines():
            parts = line.split()
            if parts:
                left, top, right, bottom = (float(v) for v in parts[-4:])
                det_rows.append(
                    (f.stem, " ".join(parts[:-5]), float(parts[-5]), left, top, right, bottom)
                )
    names = sorted({o[0] for objs in gt_objects.values() for o in objs} | {r[1] for r in det_rows})
    index = {n: k + 1 for k, n in enumerate(names)}
    records = [
        record(
            stem,
            [o[1] for o in objs],
            [index[o[0]] for o in objs],
            [o[2] for o in objs],
        )
        for stem, objs in gt_objects.items()
    ]
    results = [
        {
            "image_id": stem,
            "category_id": index[name],
            "bbox": [left, top, right - left, bottom - top],
            "score": score,
        }
        for stem, name, score, left, top, right, bottom in det_rows
    ]
    return records, names, results


def test_cartucho_sample_matches_reference(shared_data, tmp_path):
    root = shared_data / "datasets" / "cartucho_map_sample"
    ref = json.loads((root / "reference_map_cartucho_main_py.json").read_text())
    records, names, results = read_cartucho(root)
    res_path = tmp_path / "cartucho_results.json"
    res_path.write_text(json.dumps(results))
    # Cartucho/mAP main.py = VOC2010+ all-point AP, IoU >= 0.5, devkit "+1" boxes.
    m = evaluate_results_file(
        res_path,
        records=records,
        class_names=names,
        kind="voc",
        metric="voc",
        use_07_plus_one=True,
        iou_threshold=0.5,
        out_dir=tmp_path / "report",
    )
    assert abs(100 * m["mAP"] - ref["mAP_percent"]) <= 0.005 + 1e-9
    assert m["num_classes_in_map"] == len(ref["ap_percent_per_class"]) == 30
    for name, ap in ref["ap_percent_per_class"].items():
        assert abs(100 * m[f"AP/{name}"] - ap) <= 0.005 + 1e-9, name
    for name, n in ref["num_ground_truth_per_class"].items():
        assert m[f"num_gt/{name}"] == n
    for name, d in ref["detections_per_class"].items():
        assert (m[f"num_tp/{name}"], m[f"num_fp/{name}"]) == (d["tp"], d["fp"]), name
    assert m["num_detections"] == len(results)  # nothing dropped
    assert m["num_detections_no_gt_class"] == 44  # refrigerator 32, oven 4, ... (no gt)
    assert (tmp_path / "report" / "per_class.md").read_text().count("| chair |") == 1
    # The "+1" convention is what makes it match: without it "chair" comes out 53.30, not 53.84.
    plain = evaluate_results_file(
        res_path,
        records=records,
        class_names=names,
        kind="voc",
        metric="voc",
        use_07_plus_one=False,
    )
    assert abs(100 * plain["AP/chair"] - ref["ap_percent_per_class"]["chair"]) > 0.1


def devkit_reference(records, dets, num_classes, *, use_07, plus_one, thr=0.5):
    """Straight port of the devkit loop (VOCevaldet.m + VOCap), one detection at a time."""
    one = 1.0 if plus_one else 0.0
    aps = []
    for c in range(1, num_classes + 1):
        gts = {}
        npos = 0
        for r in records:
            keep = r["labels"] == c
            boxes = r["boxes"][keep].astype(np.float64)
            diff = r["ignore"][keep]
            gts[r["image_id"]] = (boxes, diff, np.zeros(len(boxes), bool))
            npos += int((~diff).sum())
        mine = [d for d in dets if d[1] == c]
        mine.sort(key=lambda d: -d[2])  # stable: ties keep input order
        tp, fp = [], []
        for image_id, _, _, bb in mine:
            boxes, diff, used = gts[image_id]
            ovmax, jmax = -np.inf, -1
            for j, bg in enumerate(boxes):
                iw = min(bb[2], bg[2]) - max(bb[0], bg[0]) + one
                ih = min(bb[3], bg[3]) - max(bb[1], bg[1]) + one
                if iw > 0 and ih > 0:
                    ua = (
                        (bb[2] - bb[0] + one) * (bb[3] - bb[1] + one)
                        + (bg[2] - bg[0] + one) * (bg[3] - bg[1] + one)
                        - iw * ih
                    )
                    ov = iw * ih / ua
                    if ov > ovmax:
                        ovmax, jmax = ov, j
            if ovmax >= thr:
                if diff[jmax]:
                    continue
                if not used[jmax]:
                    used[jmax] = True
                    tp.append(1)
                    fp.append(0)
                else:
                    tp.append(0)
                    fp.append(1)
            else:
                tp.append(0)
                fp.append(1)
        if npos == 0:
            aps.append(float("nan"))
            continue
        ctp, cfp = np.cumsum(tp, dtype=float), np.cumsum(fp, dtype=float)
        rec = ctp / npos
        prec = ctp / np.maximum(ctp + cfp, np.finfo(float).eps)
        aps.append(voc_ap(rec, prec, use_07_metric=use_07))
    return np.array(aps)


@pytest.mark.parametrize("plus_one", [True, False])
def test_vectorised_matching_equals_devkit_loop(plus_one):
    rng = np.random.default_rng(3)
    records, dets = [], []
    for i in range(30):
        m = int(rng.integers(0, 7))
        xy = rng.integers(0, 60, (m, 2))
        boxes = np.concatenate([xy, xy + rng.integers(2, 30, (m, 2))], 1)
        rec = record(f"im{i}", boxes, rng.integers(1, 4, m), rng.random(m) < 0.25)
        records.append(rec)
        for _ in range(int(rng.integers(0, 12))):
            if m and rng.random() < 0.6:  # near a ground-truth box
                bb = boxes[rng.integers(0, m)] + rng.integers(-4, 5, 4)
                bb[2:] = np.maximum(bb[2:], bb[:2])  # jittered, but never negative in size
            else:
                x, y = rng.integers(0, 60, 2)
                bb = np.array([x, y, x + rng.integers(2, 30), y + rng.integers(2, 30)])
            score = float(rng.choice([0.3, 0.5, 0.5, 0.7, rng.random()]))  # with ties
            dets.append((f"im{i}", int(rng.integers(1, 5)), score, bb.astype(np.float64)))
    names = ["a", "b", "c", "d"]  # "d" never in the ground truth
    for metric in ("voc07", "voc"):
        ev = VOCEvaluator(names, records, metric=metric, use_07_plus_one=plus_one)
        for r in records:  # dets are listed image by image, so the input order is the same
            mine = [d for d in dets if d[0] == r["image_id"]]
            if mine:
                ev.process(
                    [r["image_id"]],
                    [pred([d[3] for d in mine], [d[2] for d in mine], [d[1] for d in mine])],
                )
        m = ev.evaluate()
        expected = devkit_reference(records, dets, 4, use_07=metric == "voc07", plus_one=plus_one)
        for k, name in enumerate(names):
            if np.isnan(expected[k]):
                assert math.isnan(m[f"AP/{name}"])
            else:
                assert m[f"AP/{name}"] == pytest.approx(expected[k], abs=1e-12), (metric, name)
