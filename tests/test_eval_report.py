"""Report writers: metrics.json, per-class tables, PR curves, results file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detector.evaluation import (
    CocoEvaluator,
    format_per_class_table,
    plot_pr_curves,
    write_report,
)
from detector.evaluation.synthetic import make_synthetic_coco

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_write_report_coco_model_run(tmp_path):
    gt, res = make_synthetic_coco(10, 8, num_categories=4, seed=11)
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    ev = CocoEvaluator(None, ann_file=gt_path)
    by_image: dict[int, list] = {}
    for r in res:
        by_image.setdefault(r["image_id"], []).append(r)
    lut = {c: k + 1 for k, c in enumerate(sorted(c["id"] for c in gt["categories"]))}
    for image_id, rows in by_image.items():
        xywh = np.array([r["bbox"] for r in rows])
        ev.process(
            [image_id],
            [
                {
                    "boxes": np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1),
                    "scores": np.array([r["score"] for r in rows]),
                    "labels": np.array([lut[r["category_id"]] for r in rows]),
                }
            ],
        )
    metrics = ev.evaluate()
    written = write_report(metrics, tmp_path / "out", **ev.report_artifacts())
    assert set(written) == {
        "metrics",
        "table_md",
        "table_txt",
        "pr_curves",
        "summary",
        "detections",
    }
    loaded = json.loads(written["metrics"].read_text())  # strict JSON: NaN became null
    assert loaded["protocol"] == metrics["protocol"]
    assert loaded["AP"] == pytest.approx(metrics["AP"])
    assert any(v is None for k, v in loaded.items() if k.startswith("AP/"))  # class without gt
    assert written["pr_curves"].read_bytes()[:8] == PNG_MAGIC
    md = written["table_md"].read_text()
    assert md.startswith("Protocol: COCO bbox")
    assert "| class | AP (%) | AP50 (%) |" in md
    assert md.count("\n| class_") == 4
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in (
        written["summary"].read_text()
    )
    dets = json.loads(written["detections"].read_text())
    assert len(dets) == len(res) and set(dets[0]) == {"image_id", "category_id", "bbox", "score"}


def test_text_table_and_plot_standalone(tmp_path):
    metrics = {
        "protocol": "toy",
        "mAP": 0.5,
        "AP/cat": 0.25,
        "AP/dog": float("nan"),
        "num_gt/cat": 3,
        "num_gt/dog": 0,
    }
    txt = format_per_class_table(metrics, markdown=False)
    lines = txt.splitlines()
    assert lines[0] == "Protocol: toy"
    assert "mAP 50.00" in lines[1]
    assert lines[2].split() == ["class", "AP", "(%)", "num_gt"]
    assert lines[4].split() == ["cat", "25.00", "3"]
    assert lines[5].split() == ["dog", "n/a", "0"]
    curves = {f"c{k}": (np.linspace(0, 1, 11), np.linspace(1, 0, 11)) for k in range(45)}
    path = plot_pr_curves(curves, tmp_path / "many.png", title="45 classes")
    assert path.read_bytes()[:8] == PNG_MAGIC
    empty = plot_pr_curves({}, tmp_path / "none.png")
    assert empty.read_bytes()[:8] == PNG_MAGIC
