"""COCO evaluation: our numbers are pycocotools' numbers.

The reference everywhere is pycocotools' own ``COCO(ann_file).loadRes(results_file)`` +
``COCOeval`` run on the same files.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.evaluation import (
    COCO_STAT_KEYS,
    CocoEvaluator,
    EvaluationWarning,
    Evaluator,
    build_evaluator,
    coco_gt_from_records,
    evaluate_results_file,
    merge_states,
    run_coco_bbox,
)
from detector.evaluation.coco_engine import (
    _run_faster_stock,
    bbox_iou_coco,
    format_coco_summary,
    per_class_ap,
    resolve_backend,
)
from detector.evaluation.synthetic import make_synthetic_coco

pytest.importorskip("pycocotools")
faster = pytest.importorskip("faster_coco_eval")


def reference_cocoeval(gt_path: Path, res_path: Path):
    """pycocotools on the files, exactly as its README does it."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        gt = COCO(str(gt_path))
        dt = gt.loadRes(str(res_path))
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev, out.getvalue()


def write_case(tmp_path: Path, gt: dict, res: list, name: str = "case") -> tuple[Path, Path]:
    gt_path = tmp_path / f"{name}_gt.json"
    res_path = tmp_path / f"{name}_res.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(res))
    return gt_path, res_path


def integer_boxes(gt: dict, res: list) -> None:
    """Round every box to whole pixels: many IoUs land exactly on 0.5, 0.75, ... thresholds."""
    for ann in gt["annotations"]:
        ann["bbox"] = [float(round(v)) for v in ann["bbox"]]
        ann["bbox"][2:] = [max(v, 1.0) for v in ann["bbox"][2:]]
    for r in res:
        r["bbox"] = [round(v) for v in r["bbox"]]
        r["bbox"][2:] = [max(v, 1) for v in r["bbox"][2:]]


CASES = {
    "default": {"seed": 0},
    "integer_boxes": {"seed": 1, "integer": True},
    "dense": {"seed": 2, "num_images": 25, "dets_per_image": 60, "max_gts_per_image": 20},
    "many_crowd": {"seed": 3, "crowd_fraction": 0.3, "empty_image_fraction": 0.3},
}


@pytest.fixture(params=list(CASES), scope="module")
def coco_case(request, tmp_path_factory):
    opts = dict(CASES[request.param])
    integer = opts.pop("integer", False)
    kwargs = {"num_images": 40, "dets_per_image": 20, "num_categories": 6, **opts}
    gt, res = make_synthetic_coco(**kwargs)
    if integer:
        integer_boxes(gt, res)
    tmp = tmp_path_factory.mktemp(request.param)
    gt_path, res_path = write_case(tmp, gt, res)
    ref, printed = reference_cocoeval(gt_path, res_path)
    return gt_path, res_path, ref, printed


def test_synthetic_case_covers_the_edge_cases(coco_case):
    gt_path, res_path, _, _ = coco_case
    gt = json.loads(gt_path.read_text())
    res = json.loads(res_path.read_text())
    ann_images = {a["image_id"] for a in gt["annotations"]}
    assert any(img["id"] not in ann_images for img in gt["images"]), "images without gt"
    assert any(a["iscrowd"] for a in gt["annotations"]), "crowd annotations"
    cats = {c["id"] for c in gt["categories"]}
    assert cats - {r["category_id"] for r in res}, "a category without detections"
    assert cats - {a["category_id"] for a in gt["annotations"]}, "a category without gt"


def test_pycocotools_backend_equals_pycocotools(coco_case):
    gt_path, res_path, ref, _ = coco_case
    m = evaluate_results_file(res_path, ann_file=gt_path, backend="pycocotools")
    ours = np.array([m[k] for k in COCO_STAT_KEYS])
    np.testing.assert_allclose(ours, ref.stats, rtol=0, atol=1e-12)
    assert m["backend"].startswith("pycocotools")
    assert "pycocotools COCOeval" in m["protocol"]


@pytest.mark.parametrize(
    ("backend", "name"), [("faster", "faster-coco-eval"), ("hotcoco", "hotcoco")]
)
def test_fast_backends_agree_with_pycocotools(coco_case, backend, name):
    gt_path, res_path, ref, _ = coco_case
    m = evaluate_results_file(res_path, ann_file=gt_path, backend=backend)
    ours = np.array([m[k] for k in COCO_STAT_KEYS])
    np.testing.assert_allclose(ours, ref.stats, rtol=0, atol=1e-6)
    assert m["backend"].startswith(name)


def test_per_class_ap_matches_pycocotools_precision(coco_case):
    gt_path, res_path, ref, _ = coco_case
    names = {c["id"]: c["name"] for c in json.loads(gt_path.read_text())["categories"]}
    expected = per_class_ap(ref.eval["precision"])
    expected50 = per_class_ap(ref.eval["precision"], 0.5)
    for backend in ("pycocotools", "faster", "hotcoco"):
        m = evaluate_results_file(res_path, ann_file=gt_path, backend=backend)
        for k, cat in enumerate(ref.params.catIds):
            for key, exp in (
                (f"AP/{names[cat]}", expected[k]),
                (f"AP50/{names[cat]}", expected50[k]),
            ):
                if np.isnan(exp):
                    assert np.isnan(m[key])
                else:
                    assert m[key] == pytest.approx(exp, abs=1e-9)
    # the category without ground truth has no AP (pycocotools: -1 everywhere)
    assert any(np.isnan(v) for k, v in m.items() if k.startswith("AP/"))


def test_engines_give_the_same_arrays(coco_case):
    gt_path, res_path, ref, printed = coco_case
    gt = json.loads(gt_path.read_text())
    res = json.loads(res_path.read_text())
    args = (
        np.array([r["image_id"] for r in res]),
        np.array([r["category_id"] for r in res]),
        np.array([r["bbox"] for r in res], dtype=np.float64),
        np.array([r["score"] for r in res], dtype=np.float64),
    )
    py = run_coco_bbox(gt, *args, backend="pycocotools")
    kernel = run_coco_bbox(gt, *args, backend="faster")
    stock = _run_faster_stock(gt, *args)
    rust = run_coco_bbox(gt, *args, backend="hotcoco")
    np.testing.assert_array_equal(py.precision, ref.eval["precision"])
    np.testing.assert_array_equal(py.recall, ref.eval["recall"])
    assert rust.cat_ids == py.cat_ids
    for other in (kernel, stock, rust):
        np.testing.assert_allclose(other.precision, py.precision, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(other.recall, py.recall)
    assert py.summary == printed.split("DONE")[-1].split("\n", 1)[1]
    assert format_coco_summary(ref.stats) == py.summary
    assert gt == json.loads(gt_path.read_text()), "the engines must not modify the ground truth"


def test_bbox_iou_is_bit_identical_to_pycocotools():
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(0)
    dt = np.round(rng.uniform(0, 60, (120, 4)), 2)
    gt = rng.integers(0, 60, (90, 4)).astype(np.float64)
    dt[:40] = np.round(dt[:40])
    gt[:, 2:] += 1
    crowd = rng.random(90) < 0.3
    ref = np.array(mask_utils.iou(dt.tolist(), gt.tolist(), crowd.astype(np.uint8).tolist()))
    di, gi = np.meshgrid(np.arange(120), np.arange(90), indexing="ij")
    ours = bbox_iou_coco(dt[di.ravel()], gt[gi.ravel()], crowd[gi.ravel()]).reshape(120, 90)
    np.testing.assert_array_equal(ours, ref)


@st.composite
def tiny_coco(draw):
    n_img = draw(st.integers(1, 4))
    n_cat = draw(st.integers(1, 3))
    coord = st.integers(0, 12)
    size = st.integers(1, 8)
    images = [
        {"id": i + 1, "width": 20, "height": 20, "file_name": f"{i}.jpg"} for i in range(n_img)
    ]
    anns, res = [], []
    for i in range(n_img):
        for _ in range(draw(st.integers(0, 4))):
            x, y, w, h = draw(coord), draw(coord), draw(size), draw(size)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": draw(st.integers(1, n_cat)),
                    "bbox": [x, y, w, h],
                    "area": w * h * draw(st.sampled_from([1.0, 0.5, 40.0, 200.0])),
                    "iscrowd": int(draw(st.integers(0, 5)) == 0),
                }
            )
        for _ in range(draw(st.integers(0, 6))):
            x, y, w, h = draw(coord), draw(coord), draw(size), draw(size)
            res.append(
                {
                    "image_id": i + 1,
                    "category_id": draw(st.integers(1, n_cat)),
                    "bbox": [x, y, w, h],
                    "score": draw(st.sampled_from([0.1, 0.5, 0.5, 0.9, 1.0])),
                }
            )
    cats = [{"id": c + 1, "name": f"c{c + 1}"} for c in range(n_cat)]
    return {"images": images, "annotations": anns, "categories": cats}, res


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=tiny_coco())
def test_tiny_cases_match_pycocotools(case, tmp_path):
    """Small integer boxes, score ties, crowds and area extremes: every backend vs pycocotools."""
    gt, res = case
    if not res:
        return  # pycocotools' loadRes cannot read []; covered by test_empty_results
    gt_path, res_path = write_case(tmp_path, gt, res, "tiny")
    ref, _ = reference_cocoeval(gt_path, res_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EvaluationWarning)
        for backend, tol in (("pycocotools", 1e-12), ("faster", 1e-6), ("hotcoco", 1e-6)):
            m = evaluate_results_file(res_path, ann_file=gt_path, backend=backend)
            ours = np.array([m[k] for k in COCO_STAT_KEYS])
            np.testing.assert_allclose(ours, ref.stats, rtol=0, atol=tol)


def _predictions_from_results(res: list, lut_inv: dict[int, int]):
    """Group a results list per image into predictions (xyxy, contiguous labels)."""
    per_image: dict[int, list] = {}
    for r in res:
        per_image.setdefault(r["image_id"], []).append(r)
    ids, preds = [], []
    for image_id, rows in per_image.items():
        xywh = np.array([r["bbox"] for r in rows], dtype=np.float64)
        boxes = xywh.copy()
        boxes[:, 2:] += boxes[:, :2]
        ids.append(image_id)
        preds.append(
            {
                "boxes": boxes,
                "scores": np.array([r["score"] for r in rows], dtype=np.float64),
                "labels": np.array([lut_inv[r["category_id"]] for r in rows]),
            }
        )
    return ids, preds


def test_model_run_results_file_round_trip(coco_case, tmp_path):
    """process() + evaluate() == evaluating the results file it writes == pycocotools."""
    gt_path, res_path, _, _ = coco_case
    gt = json.loads(gt_path.read_text())
    res = json.loads(res_path.read_text())
    cat_ids = sorted(c["id"] for c in gt["categories"])
    label_to_cat = {k + 1: c for k, c in enumerate(cat_ids)}
    names = [f"name{c}" for c in cat_ids]
    ids, preds = _predictions_from_results(res, {c: k for k, c in label_to_cat.items()})
    ev = CocoEvaluator(names, ann_file=gt_path, label_to_category_id=label_to_cat, backend="faster")
    assert isinstance(ev, Evaluator)
    for start in range(0, len(ids), 7):
        ev.process(ids[start : start + 7], preds[start : start + 7])
    m = ev.evaluate()
    out = tmp_path / "model_run"
    from detector.evaluation import write_report

    written = write_report(m, out, **ev.report_artifacts())
    again = evaluate_results_file(written["detections"], ann_file=gt_path, backend="pycocotools")
    ref, _ = reference_cocoeval(gt_path, written["detections"])
    for k, s in zip(COCO_STAT_KEYS, ref.stats):
        assert again[k] == pytest.approx(s, abs=1e-12)
        assert m[k] == pytest.approx(s, abs=1e-6)
    file_name = f"class_{cat_ids[0]}"  # without class_names the file's category names are used
    assert m[f"AP/{names[0]}"] == pytest.approx(again[f"AP/{file_name}"], abs=1e-9)
    written_res = json.loads(written["detections"].read_text())
    assert {r["category_id"] for r in written_res} <= set(cat_ids), "original category ids"


def test_distributed_state_merge(coco_case):
    gt_path, res_path, _, _ = coco_case
    gt = json.loads(gt_path.read_text())
    res = json.loads(res_path.read_text())
    cat_ids = sorted(c["id"] for c in gt["categories"])
    ids, preds = _predictions_from_results(res, {c: k + 1 for k, c in enumerate(cat_ids)})
    whole = build_evaluator("coco", class_names=None, ann_file=gt_path, backend="pycocotools")
    whole.process(ids, preds)
    expected = whole.evaluate()
    ranks = [CocoEvaluator(None, ann_file=gt_path, backend="pycocotools") for _ in range(2)]
    ranks[0].process(ids[0::2], preds[0::2])
    ranks[1].process(ids[1::2], preds[1::2])
    ranks[1].process(ids[:1], preds[:1])  # padding duplicate, as DistributedSampler makes
    gathered = [r.state() for r in ranks]
    main = ranks[0]
    main.reset()
    main.load_state(merge_states(gathered))
    with pytest.warns(EvaluationWarning, match="1 image\\(s\\) were processed more than once"):
        got = main.evaluate()
    for k in COCO_STAT_KEYS:
        assert got[k] == expected[k]
    assert got["num_duplicate_images"] == 1


def test_coco_gt_from_records_with_string_ids(tmp_path):
    rng = np.random.default_rng(5)
    records = []
    for i in range(12):
        m = int(rng.integers(0, 5))
        xy = rng.uniform(0, 200, (m, 2))
        wh = rng.uniform(5, 150, (m, 2))
        records.append(
            {
                "image_id": f"img_{i:03d}",
                "file_name": f"img_{i:03d}.jpg",
                "width": 400,
                "height": 400,
                "boxes": np.concatenate([xy, xy + wh], 1).astype(np.float32),
                "labels": rng.integers(1, 4, m).astype(np.int64),
                "ignore": rng.random(m) < 0.2,
            }
        )
    names = ["cat", "dog", "bird"]
    gt, original = coco_gt_from_records(records, names, {1: 10, 2: 20, 3: 30})
    assert original == [r["image_id"] for r in records]
    assert [img["id"] for img in gt["images"]] == list(range(1, 13))
    ann = gt["annotations"][0]
    assert ann["area"] == ann["bbox"][2] * ann["bbox"][3]
    assert {c["id"] for c in gt["categories"]} == {10, 20, 30}
    # predictions = ground truth jittered; the evaluator from records == pycocotools on gt dict
    ev = CocoEvaluator(names, records=records, label_to_category_id={1: 10, 2: 20, 3: 30})
    for rec in records:
        boxes = rec["boxes"] + rng.normal(0, 3, rec["boxes"].shape).astype(np.float32)
        ev.process(
            [rec["image_id"]],
            [{"boxes": boxes, "scores": rng.random(len(boxes)), "labels": rec["labels"]}],
        )
    m = ev.evaluate()
    results = ev.results()
    assert results[0]["image_id"].startswith("img_")
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    res_path = tmp_path / "res.json"
    id_map = {r["image_id"]: img["id"] for r, img in zip(records, gt["images"])}
    res_path.write_text(json.dumps([{**r, "image_id": id_map[r["image_id"]]} for r in results]))
    ref, _ = reference_cocoeval(gt_path, res_path)
    np.testing.assert_allclose([m[k] for k in COCO_STAT_KEYS], ref.stats, atol=1e-6)
    # and the results file with the records' own (string) ids evaluates the same
    own_path = tmp_path / "own.json"
    own_path.write_text(json.dumps(results))
    again = evaluate_results_file(
        own_path,
        records=records,
        class_names=names,
        label_to_category_id={1: 10, 2: 20, 3: 30},
        backend="pycocotools",
    )
    np.testing.assert_allclose([again[k] for k in COCO_STAT_KEYS], ref.stats, atol=1e-12)


def test_no_detections_gives_zero_ap_with_warning(coco_case):
    gt_path, _, _, _ = coco_case
    for backend in ("pycocotools", "faster", "hotcoco"):
        ev = CocoEvaluator(None, ann_file=gt_path, backend=backend)
        with pytest.warns(EvaluationWarning, match="without any detection"):
            m = ev.evaluate()
        assert m["AP"] == 0.0 and m["AR100"] == 0.0
        assert m["num_detections"] == 0


def test_backend_resolution(monkeypatch):
    assert resolve_backend("auto") == "hotcoco"  # the fastest installed engine
    assert resolve_backend("pycocotools") == "pycocotools"
    import detector.evaluation.coco_engine as engine

    monkeypatch.setitem(engine._PACKAGES, "hotcoco", ("hotcoco", lambda: False))
    assert resolve_backend("auto") == "faster"
    with pytest.raises(ImportError, match="needs the hotcoco package"):
        resolve_backend("hotcoco")
    with pytest.raises(ValueError, match="unknown COCO backend"):
        resolve_backend("detectron")


def test_auto_falls_back_when_hotcoco_rejects_the_input(coco_case, monkeypatch):
    """``auto`` still gives pycocotools' numbers (with a warning) if hotcoco raises; an explicit
    ``backend="hotcoco"`` raises."""
    import hotcoco

    gt_path, res_path, ref, _ = coco_case

    class Rejecting:
        def __init__(self, *args, **kwargs):
            raise ValueError("unsupported annotation")

    monkeypatch.setattr(hotcoco, "COCO", Rejecting)
    with pytest.warns(EvaluationWarning, match="using backend 'faster' instead"):
        m = evaluate_results_file(res_path, ann_file=gt_path, backend="auto")
    assert m["backend"].startswith("faster-coco-eval")
    np.testing.assert_allclose([m[k] for k in COCO_STAT_KEYS], ref.stats, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="unsupported annotation"):
        evaluate_results_file(res_path, ann_file=gt_path, backend="hotcoco")


def test_process_validates_predictions(coco_case):
    gt_path, _, _, _ = coco_case
    ev = CocoEvaluator(None, ann_file=gt_path)
    good = {"boxes": np.zeros((1, 4)), "scores": np.ones(1), "labels": np.ones(1, int)}
    with pytest.raises(KeyError, match="not in the ground truth"):
        ev.process([987654], [good])
    with pytest.raises(ValueError, match=r"labels must lie in 1\.\.6"):
        ev.process([1], [{**good, "labels": np.zeros(1, int)}])
    with pytest.raises(ValueError, match="disagree"):
        ev.process([1], [{**good, "scores": np.ones(2)}])
    with pytest.raises(ValueError, match="image ids but"):
        ev.process([1, 2], [good])
