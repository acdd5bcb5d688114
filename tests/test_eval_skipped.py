"""Images that were not run (unreadable in the evaluation split) are left out of the scoring.

The reference is pycocotools run on the ground truth of only the images that ran, with the
detections of those images: a skipped image must neither count as missed (its ground truth) nor
be reported as a duplicate.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from detector.evaluation import CocoEvaluator, EvaluationWarning, VOCEvaluator
from detector.evaluation.synthetic import make_synthetic_coco

pytest.importorskip("pycocotools")

STAT_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def pycocotools_stats(gt: dict, results: list[dict], image_ids: set[int]) -> np.ndarray:
    """pycocotools' 12 numbers on ``image_ids`` only (ground truth and detections)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    sub = {
        **gt,
        "images": [i for i in gt["images"] if i["id"] in image_ids],
        "annotations": [a for a in gt["annotations"] if a["image_id"] in image_ids],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = sub
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes([r for r in results if r["image_id"] in image_ids])
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)


def per_image_predictions(evaluator: CocoEvaluator, results: list[dict]) -> dict[int, dict]:
    """The results list as one prediction dict per image (pixel xyxy, labels 1..C)."""
    preds: dict[int, dict] = {
        i: {"boxes": [], "scores": [], "labels": []} for i in evaluator.image_ids
    }
    for r in results:
        x, y, w, h = r["bbox"]
        p = preds[r["image_id"]]
        p["boxes"].append([x, y, x + w, y + h])
        p["scores"].append(r["score"])
        p["labels"].append(evaluator.category_id_to_label[r["category_id"]])
    return {
        i: {
            "boxes": np.asarray(p["boxes"], np.float64).reshape(-1, 4),
            "scores": np.asarray(p["scores"], np.float64),
            "labels": np.asarray(p["labels"], np.int64),
        }
        for i, p in preds.items()
    }


def test_skipped_images_match_pycocotools_on_the_images_that_ran(tmp_path: Path) -> None:
    gt, results = make_synthetic_coco(num_images=30, dets_per_image=12, seed=3)
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    ids = [img["id"] for img in gt["images"]]
    # skip images that have ground truth, so that leaving them in would lower recall
    with_gt = sorted({a["image_id"] for a in gt["annotations"]})
    skipped = set(with_gt[:3])
    ran = set(ids) - skipped
    ev = CocoEvaluator(None, ann_file=gt_path, backend="pycocotools")
    preds = per_image_predictions(ev, results)
    ev.process([i for i in ids if i in ran], [preds[i] for i in ids if i in ran])
    ev.process(sorted(skipped), [{"skipped": "unreadable image"}] * len(skipped))
    with pytest.warns(EvaluationWarning, match="3 of the 30 images were not run") as caught:
        metrics = ev.evaluate()
    assert not any("more than once" in str(w.message) for w in caught)
    expected = pycocotools_stats(gt, results, ran)
    np.testing.assert_allclose([metrics[k] for k in STAT_KEYS], expected, rtol=0, atol=1e-12)
    assert metrics["num_images"] == 27 and metrics["num_images_skipped"] == 3
    assert all(str(i) in metrics["skipped_images"] for i in skipped)
    # Scoring them as if they ran with no detections gives lower recall: the bug this prevents.
    full = pycocotools_stats(gt, results, set(ids) - set())
    assert metrics["AR100"] != pytest.approx(full[8])

    # The same through distributed state: the skip marks travel with state()/load_state().
    rank0 = CocoEvaluator(None, ann_file=gt_path, backend="pycocotools")
    rank1 = CocoEvaluator(None, ann_file=gt_path, backend="pycocotools")
    half = [i for i in ids if i in ran]
    rank0.process(half[:10], [preds[i] for i in half[:10]])
    rank1.process(half[10:], [preds[i] for i in half[10:]])
    rank1.process(sorted(skipped), [{"skipped": "unreadable image"}] * len(skipped))
    rank0.load_state(rank1.state())
    with pytest.warns(EvaluationWarning, match="not run"):
        again = rank0.evaluate()
    assert [again[k] for k in STAT_KEYS] == [metrics[k] for k in STAT_KEYS]


def test_voc_skipped_images_equal_the_records_that_ran() -> None:
    """VOC: skipping an image equals evaluating the records without it (devkit formula: one
    class, 2 ground-truth boxes left, one true and one false positive -> VOC07 AP 6/11)."""
    records = [
        {"image_id": "a", "boxes": [[0, 0, 10, 10]], "labels": [1]},
        {"image_id": "b", "boxes": [[0, 0, 10, 10]], "labels": [1]},
        {"image_id": "c", "boxes": [[20, 20, 40, 40]], "labels": [1]},
    ]
    preds = {
        "a": {"boxes": [[0, 0, 10, 10]], "scores": [0.9], "labels": [1]},
        "b": {"boxes": [[50, 50, 60, 60]], "scores": [0.8], "labels": [1]},
    }
    ev = VOCEvaluator(["thing"], records, metric="voc07")
    ev.process(["a", "b"], [preds["a"], preds["b"]])
    ev.process(["c"], [{"skipped": "unreadable image"}])
    with pytest.warns(EvaluationWarning, match="1 of the 3 images were not run"):
        m = ev.evaluate()
    # recall 0.5 at precision 1, then 0.5 at 0.5: the 11-point AP is 6/11
    assert m["mAP"] == pytest.approx(6 / 11, abs=1e-12)
    assert m["num_gt/thing"] == 2 and m["num_images"] == 2


def test_corrupt_image_in_the_evaluation_split(tmp_path: Path) -> None:
    """End to end: a corrupt validation image is not run, not scored, and reported as such."""
    from detector.data import build_dataset
    from detector.data.base import DataWarning
    from detector.engine.checkpoint import save_checkpoint
    from detector.engine.evaluate import evaluate_checkpoint_on
    from detector.models import ssd_mobilenet_v1
    from detector.postprocess_config import PostprocessConfig

    root = tmp_path / "data"
    dataset = build_dataset("synthetic", "val", root=root, num_train=2, num_val=6, seed=1)
    gt = json.loads(Path(dataset.ann_file).read_text())
    bad = gt["images"][2]
    (Path(dataset.image_dir) / bad["file_name"]).write_bytes(b"\xff\xd8 not a jpeg")
    torch.manual_seed(0)
    model = ssd_mobilenet_v1(len(dataset.classes), alpha=0.25, image_size=(96, 96))
    with torch.no_grad():
        for p in model.head.class_predictors:
            p.weight.mul_(4.0)
    ckpt = save_checkpoint(
        {
            "model": model.state_dict(),
            "model_config": model.config.to_dict(),
            "classes": list(dataset.classes),
        },
        tmp_path / "tiny.pt",
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = evaluate_checkpoint_on(
            ckpt,
            dataset,
            tmp_path / "eval",
            metric="coco",
            postprocess=PostprocessConfig(score_thresh=0.01),
            device="cpu",
            batch_size=4,
            num_workers=0,
            backend="pycocotools",
            progress=False,
        )
    messages = [str(w.message) for w in caught]
    assert any(issubclass(w.category, DataWarning) for w in caught)
    assert not any("more than once" in m for m in messages), messages
    assert any("1 of the 6 images were not run" in m for m in messages), messages
    assert metrics["num_images_skipped"] == 1 and metrics["num_images"] == 5
    assert str(bad["id"]) in metrics["skipped_images"]
    results = json.loads((tmp_path / "eval" / "detections.json").read_text())
    assert results and bad["id"] not in {r["image_id"] for r in results}
    ran = {img["id"] for img in gt["images"]} - {bad["id"]}
    expected = pycocotools_stats(gt, results, ran)
    np.testing.assert_allclose([metrics[k] for k in STAT_KEYS], expected, rtol=0, atol=1e-12)
    # Training's evaluation (sharded inference, gathered predictions) scores the same images.
    from types import SimpleNamespace

    from detector.engine.data import make_val_loader
    from detector.engine.distributed import DistInfo
    from detector.engine.train import evaluate_model

    spec = SimpleNamespace(
        postprocess=PostprocessConfig(score_thresh=0.01), dataset=SimpleNamespace(eval="coco")
    )
    loader = make_val_loader(dataset, (96, 96), 4, 0, DistInfo())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logged = evaluate_model(model, loader, dataset, spec, DistInfo(), torch.device("cpu"))
    assert logged["val/num_images_skipped"] == 1 and logged["val/num_images"] == 5
    assert logged["val/AP50"] == pytest.approx(metrics["AP50"], abs=1e-6)
