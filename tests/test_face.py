"""The face preset (``experiment=face``): composition and the 4420-anchor model, the WIDER FACE
reader's filters, and ``train.py`` -> ``eval.py``-style evaluation -> ``detect.py`` ->
``export.py`` on a tiny dataset in the official WIDER FACE layout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io as sio
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from detector.anchors import ANCHOR_PRESETS, AnchorGenerator
from detector.config import (
    EvalConfig,
    TrainConfig,
    from_hydra,
    model_config_from,
    register_schemas,
)
from detector.data import WiderFace, WiderFaceDatasetConfig
from detector.models import build_ssd
from detector.postprocess_config import PostprocessConfig

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "detector" / "conf"
ENV = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO)}
register_schemas()


def _compose(*overrides: str) -> TrainConfig:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("train", overrides=["experiment=face", *overrides], return_hydra_config=True)
        HydraConfig().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
        return from_hydra(cfg)


def test_experiment_builds_the_4420_anchor_face_model() -> None:
    spec = _compose()
    assert spec.name == "face" and spec.image_size == [240, 320]
    assert spec.backbone.alpha == 0.25 and spec.head.type == "ssdlite"
    assert spec.dataset.kind == "widerface" and spec.dataset.eval == "widerface"
    assert spec.dataset.min_face_size == 10.0
    # conf/anchors/face.yaml is the library's preset, and its boxes are Ultra-Light's min boxes
    # (px at 320x240, as fractions of the 240 px side).
    assert spec.anchors == ANCHOR_PRESETS["face"]
    ultra_light_px = [10, 16, 24, 32, 48, 64, 96, 128, 192, 256]
    assert [round(s * 240, 6) for s in spec.anchors.min_sizes] == ultra_light_px
    assert spec.anchors.sizes_per_layer == (3, 2, 2, 3)
    model = build_ssd(model_config_from(spec, num_classes=1)).eval()
    assert model.num_anchors == 4420
    with torch.no_grad():
        deltas, logits = model(torch.rand(1, 3, 240, 320))
    assert deltas.shape == (1, 4420, 4) and logits.shape == (1, 4420, 2)
    # Four levels, strides 8/16/32/64 at 320x240: 40x30, 20x15, 10x8, 5x4 cells, 3/2/2/3 boxes.
    shapes = [(30, 40), (15, 20), (8, 10), (4, 5)]
    expected = AnchorGenerator(ANCHOR_PRESETS["face"]).generate(shapes, (240, 320))
    torch.testing.assert_close(model.anchors, expected)
    first = model.anchors[0] * torch.tensor([320.0, 240.0, 320.0, 240.0])
    torch.testing.assert_close(first, torch.tensor([-1.0, -1.0, 9.0, 9.0]))  # 10 px at (4, 4)


# ------------------------------------------------------------------ tiny WIDER FACE layout
def _draw_face(img: np.ndarray, x: int, y: int, w: int, h: int, rng: np.random.Generator) -> None:
    """A face-like ellipse with two eyes and a mouth."""
    skin = tuple(int(c) for c in rng.integers([90, 120, 170], [140, 180, 230]))  # BGR
    cv2.ellipse(img, (x + w // 2, y + h // 2), (w // 2, h // 2), 0, 0, 360, skin, -1)
    eye = max(1, w // 10)
    for ex in (x + w // 3, x + 2 * w // 3):
        cv2.circle(img, (ex, y + h // 3), eye, (40, 30, 30), -1)
    cv2.ellipse(img, (x + w // 2, y + 2 * h // 3), (w // 5, max(1, h // 10)), 0, 0, 180,
                (40, 40, 120), max(1, w // 20))  # fmt: skip


def _cell(items: list) -> np.ndarray:
    out = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        out[i, 0] = item
    return out


def make_wider_layout(root: Path, num_train: int = 6, num_val: int = 3, seed: int = 0) -> Path:
    """``root/WIDER_{train,val}/images/<event>/<name>.jpg``, the official ground-truth text files
    in ``root/wider_face_split/`` and the eval_tools ``.mat`` files in ``root/ground_truth/``.

    Every image holds 2-4 faces (12-70 px), one of 6 px (under the preset's 10 px) and, in odd
    images, an extra face flagged invalid and one flagged heavy blur.
    """
    rng = np.random.default_rng(seed)
    event = "0--Parade"
    split_dir = root / "wider_face_split"
    split_dir.mkdir(parents=True)
    val_faces: list[tuple[str, list[list[int]]]] = []
    for split, n in (("train", num_train), ("val", num_val)):
        image_dir = root / f"WIDER_{split}" / "images" / event
        image_dir.mkdir(parents=True)
        lines = []
        for i in range(n):
            name = f"0_Parade_marchingband_1_{i}"
            img = np.full((240, 320, 3), rng.integers(40, 200, 3), dtype=np.uint8)
            rows = []
            for _ in range(int(rng.integers(2, 5))):
                s = int(rng.integers(12, 70))
                x, y = int(rng.integers(0, 320 - s)), int(rng.integers(0, 240 - s))
                rows.append([x, y, s, int(s * 1.2) if y + s * 1.2 < 240 else s, 0, 0, 0, 0, 0, 0])
            rows.append([5, 220, 6, 7, 0, 0, 0, 0, 0, 0])  # a tiny face
            if i % 2:
                rows.append([250, 10, 30, 30, 0, 0, 0, 1, 0, 0])  # invalid
                rows.append([10, 10, 20, 24, 2, 0, 0, 0, 0, 0])  # heavy blur
            for x, y, w, h, *_ in rows:
                _draw_face(img, x, y, w, h, rng)
            cv2.imwrite(str(image_dir / f"{name}.jpg"), img)
            lines += [f"{event}/{name}.jpg", str(len(rows))]
            lines += [" ".join(str(v) for v in r) for r in rows]
            if split == "val":
                val_faces.append((name, [r[:4] for r in rows]))
        (split_dir / f"wider_face_{split}_bbx_gt.txt").write_text("\n".join(lines) + "\n")
    # eval_tools ground truth: all faces; easy = faces >= 30 px, medium >= 15, hard = all valid.
    gt = root / "ground_truth"
    gt.mkdir()
    sio.savemat(
        gt / "wider_face_val.mat",
        {
            "event_list": _cell([event]),
            "file_list": _cell([_cell([n for n, _ in val_faces])]),
            "face_bbx_list": _cell([_cell([np.array(f, float) for _, f in val_faces])]),
        },
    )
    for subset, min_side in (("easy", 30), ("medium", 15), ("hard", 0)):
        keep = [
            np.array([k + 1 for k, f in enumerate(faces) if min(f[2:]) >= min_side], float)
            for _, faces in val_faces
        ]
        sio.savemat(
            gt / f"wider_{subset}_val.mat",
            {"gt_list": _cell([_cell([k.reshape(-1, 1) for k in keep])])},
        )
    return root


@pytest.fixture(scope="module")
def wider_root(tmp_path_factory) -> Path:
    return make_wider_layout(tmp_path_factory.mktemp("wider"))


def test_reader_filters_small_invalid_and_blurred_faces(wider_root: Path) -> None:
    ds = WiderFace(wider_root, "train", min_face_size=10.0, max_blur=1)
    # 6 images: one tiny face each, an invalid and a heavy-blur face in the 3 odd ones.
    assert ds.num_filtered == {"invalid": 3, "small": 6, "blur": 3}
    assert ds.num_boxes() - ds.num_boxes(train_only=True) == 12
    for entry in ds.entries:
        sides = np.minimum(*(entry.boxes[:, 2:] - entry.boxes[:, :2]).T)
        assert (sides[entry.train] >= 10).all()
    keep_all = WiderFace(wider_root, "train", min_face_size=10.0)  # max_blur 2 keeps all blurs
    assert keep_all.num_filtered["blur"] == 0
    assert keep_all.num_boxes(train_only=True) == ds.num_boxes(train_only=True) + 3


def _train_args(root: Path) -> list[str]:
    return [
        "trainer=debug", "trainer.batch_size=2", "trainer.eval_batch_size=4",
        f"dataset.root={root}", f"dataset.eval_gt_dir={root / 'ground_truth'}",
    ]  # fmt: skip


def test_train_eval_detect_export(wider_root: Path, tmp_path: Path) -> None:
    """What ``python train.py experiment=face`` runs, for two steps (its validation uses the
    official subset protocol), then ``eval.py``'s evaluation of the checkpoint with and without
    the subset files, ``detect.py`` drawing faces and the ONNX export verified against PyTorch.
    (The command lines themselves: the slow ``test_cli_train_and_export``.)"""
    from detector.engine.evaluate import evaluate_checkpoint
    from detector.engine.plots import read_metrics
    from detector.engine.train import fit
    from detector.predict import DetectConfig, run_detect

    run = tmp_path / "train"
    metrics = fit(_compose(*_train_args(wider_root)), run)
    assert 0.0 <= metrics["val/mAP"] <= 1.0
    ckpt = run / "last.pt"
    logged = read_metrics(run / "metrics.csv")
    assert {"val/AP/easy", "val/AP/medium", "val/AP/hard", "val/mAP"} <= set(logged)

    # eval.py's path, with and without the subset files.
    for gt_dir, key in ((str(wider_root / "ground_truth"), "AP/hard"), (None, "AP/all")):
        dataset = WiderFaceDatasetConfig(
            root=str(wider_root), min_face_size=10.0, eval_gt_dir=gt_dir
        )
        spec = EvalConfig(
            checkpoint=str(ckpt), metric="widerface", num_workers=0, device="cpu", dataset=dataset
        )
        out = tmp_path / f"eval_{key.replace('/', '_')}"
        metrics = evaluate_checkpoint(spec, out)
        saved = json.loads((out / "metrics.json").read_text())
        assert saved["protocol"] == metrics["protocol"]
        assert ("official protocol" in saved["protocol"]) == (gt_dir is not None)
        assert 0.0 <= metrics[key] <= 1.0

    # detect.py draws faces (the barely trained model scores near 0.5; take everything).
    image = next((wider_root / "WIDER_val" / "images").rglob("*.jpg"))
    det = run_detect(
        DetectConfig(checkpoint=str(ckpt), source=str(image), progress=False,
                     postprocess=PostprocessConfig(score_thresh=0.0, max_detections=5)),
        tmp_path / "detect", log=lambda _: None,
    )  # fmt: skip
    assert det["detections"] and all(r["category_id"] == 1 for r in det["detections"])
    drawn = cv2.imread(str(tmp_path / "detect" / image.name))
    assert drawn is not None and drawn.shape == (240, 320, 3)
    assert not np.array_equal(drawn, cv2.imread(str(image)))

    # ONNX export, verified in onnxruntime against PyTorch (raises when they disagree); the
    # TorchScript exporter is the quicker one, the CLI test takes the default.
    pytest.importorskip("onnxruntime")
    from detector.export import ExportOptions, export_checkpoint

    options = ExportOptions(format="onnx", num_verify_images=2, exporter="torchscript")
    result = export_checkpoint(ckpt, tmp_path / "export", options, log=None)
    assert result.model_path == tmp_path / "export" / "last.onnx"
    sidecar = json.loads((tmp_path / "export" / "last.json").read_text())
    assert "face" in json.dumps(sidecar)


@pytest.mark.slow
def test_cli_train_and_export(wider_root: Path, tmp_path: Path) -> None:
    """``python train.py experiment=face ...`` and ``python export.py checkpoint=... format=onnx``
    as a user types them."""
    pytest.importorskip("onnxruntime")
    run = tmp_path / "train"
    done = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "experiment=face", *_train_args(wider_root),
         f"hydra.run.dir={run}"],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "4420 anchors" in done.stdout + done.stderr
    export_dir = tmp_path / "export"
    done = subprocess.run(
        [sys.executable, str(REPO / "export.py"), f"checkpoint={run / 'last.pt'}", "format=onnx",
         "num_verify_images=2", f"hydra.run.dir={export_dir}"],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (export_dir / "last.onnx").is_file() and "export OK" in done.stdout


@pytest.mark.slow
def test_face_model_exports_to_tflite(tmp_path: Path) -> None:
    """The face model (4 levels, 4420 anchors, 320x240) through ``format=tflite``."""
    from detector.engine.checkpoint import save_checkpoint
    from detector.export import ExportOptions, export_checkpoint

    spec = _compose()
    model = build_ssd(model_config_from(spec, num_classes=1)).eval()
    ckpt = tmp_path / "face.pt"
    save_checkpoint(
        {"model": model.state_dict(), "model_config": model.config.to_dict(), "classes": ["face"]},
        ckpt,
    )
    result = export_checkpoint(
        ckpt, tmp_path / "tflite", ExportOptions(format="tflite", num_verify_images=2), log=None
    )
    assert result.model_path.suffix == ".tflite" and result.model_path.is_file()
