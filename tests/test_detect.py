"""detect.py / detector.predict: checkpoint and ONNX give the same detections, outputs in the run
directory, filters, videos, and one-line errors for bad sources."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from detector.engine.checkpoint import save_checkpoint
from detector.export import ExportOptions, export_checkpoint
from detector.export.images import generated_images
from detector.models import ssd_mobilenet_v1
from detector.postprocess_config import PostprocessConfig
from detector.predict import DetectConfig, class_color, run_detect
from detector.runtime import iou_matrix

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["circle", "square", "triangle"]
ENV = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    """Tiny checkpoint with sharpened class predictors (confident detections), its ONNX export
    and a folder of two images."""
    tmp = tmp_path_factory.mktemp("detect")
    torch.manual_seed(0)
    model = ssd_mobilenet_v1(len(CLASSES), alpha=0.25, image_size=(128, 128))
    with torch.no_grad():
        for p in model.head.class_predictors:
            p.weight.mul_(4.0)
    ckpt = tmp / "tiny.pt"
    save_checkpoint(
        {"model": model.state_dict(), "model_config": model.config.to_dict(), "classes": CLASSES},
        ckpt,
    )
    options = ExportOptions(verify=False, exporter="torchscript")
    onnx_path = export_checkpoint(ckpt, tmp / "export", options, log=None).model_path
    images = tmp / "images"
    images.mkdir()
    for i, img in enumerate(generated_images(2, seed=5, size=(96, 160))):
        cv2.imwrite(str(images / f"img{i}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return {"tmp": tmp, "ckpt": ckpt, "onnx": onnx_path, "images": images}


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "detect.py"), *args],
        cwd=cwd, env=ENV, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _by_image(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["file_name"], []).append(r)
    return out


def _xyxy(rows: list[dict]) -> np.ndarray:
    return np.array([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in rows)])


def test_checkpoint_and_onnx_agree(setup, tmp_path) -> None:
    source = str(setup["images"] / "img0.png")
    common = {"source": source, "progress": False}
    a = run_detect(DetectConfig(checkpoint=str(setup["ckpt"]), **common), tmp_path / "pt")
    b = run_detect(DetectConfig(model=str(setup["onnx"]), **common), tmp_path / "onnx")
    ra = [r for r in a["detections"] if r["score"] >= 0.3]
    rb = [r for r in b["detections"] if r["score"] >= 0.3]
    assert ra, "the test model should give detections"
    assert [r["category_id"] for r in ra] == [r["category_id"] for r in rb]
    assert iou_matrix(_xyxy(ra), _xyxy(rb)).diagonal().min() >= 0.9
    for result, out in ((a, tmp_path / "pt"), (b, tmp_path / "onnx")):
        assert result["detections_path"] == out / "detections.json"
        assert json.loads((out / "detections.json").read_text()) == result["detections"]
        saved = cv2.imread(str(out / "img0.png"))
        assert saved is not None and saved.shape == (96, 160, 3)


def test_results_format_and_filters(setup, tmp_path) -> None:
    spec = DetectConfig(
        checkpoint=str(setup["ckpt"]), source=str(setup["images"]), progress=False,
        classes=["square"], save=False,
        postprocess=PostprocessConfig(score_thresh=0.2, max_detections=4),
    )  # fmt: skip
    lines: list[str] = []
    rows = run_detect(spec, tmp_path, log=lines.append)["detections"]
    assert {r["file_name"] for r in rows} <= {"img0.png", "img1.png"}
    assert rows and all(r["category_id"] == 2 and r["score"] > 0.2 for r in rows)
    for group in _by_image(rows).values():
        assert len(group) <= 4 and len({r["image_id"] for r in group}) == 1
    assert all(len(r["bbox"]) == 4 and r["bbox"][2] >= 0 for r in rows)
    assert len(lines) == 2 and lines[0].startswith("img0.png: ") and "square" in lines[0]
    assert lines[0].endswith(" ms)")
    assert not (tmp_path / "img0.png").exists()
    assert class_color(2) == class_color(2) and class_color(1) != class_color(2)
    with pytest.raises(ValueError, match="unknown"):
        run_detect(
            DetectConfig(checkpoint=str(setup["ckpt"]), source=str(setup["images"]),
                         classes=["dog"]), tmp_path,
        )  # fmt: skip


def test_image_size_override(setup, tmp_path) -> None:
    source = str(setup["images"] / "img1.png")
    spec = DetectConfig(
        checkpoint=str(setup["ckpt"]), source=source, image_size=[96, 96], progress=False
    )
    rows = run_detect(spec, tmp_path)["detections"]
    assert all(r["bbox"][0] + r["bbox"][2] <= 160.01 for r in rows)
    with pytest.raises(ValueError, match="exported at"):
        run_detect(
            DetectConfig(model=str(setup["onnx"]), source=source, image_size=[96, 96]), tmp_path
        )


def test_video_source(setup, tmp_path) -> None:
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (160, 96))
    for img in generated_images(3, seed=2, size=(96, 160)):
        writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    writer.release()
    out = tmp_path / "out"
    result = run_detect(
        DetectConfig(model=str(setup["onnx"]), source=str(video), progress=False), out
    )
    assert result["num_images"] == 3
    assert {r["frame"] for r in result["detections"]} <= {0, 1, 2}
    cap = cv2.VideoCapture(str(out / "clip.mp4"))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    cap.release()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    with pytest.raises(ValueError, match=r"broken\.mp4"):
        run_detect(DetectConfig(model=str(setup["onnx"]), source=str(broken)), out)
    with pytest.raises(ValueError, match="camera 97"):
        run_detect(DetectConfig(model=str(setup["onnx"]), source="97"), out)


def test_cli_onnx_folder(setup, tmp_path) -> None:
    run_dir = tmp_path / "run"
    proc = _run(
        f"model={setup['onnx']}", f"source={setup['images']}", f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "img0.png: " in proc.stdout and "img1.png: " in proc.stdout
    rows = json.loads((run_dir / "detections.json").read_text())
    assert set(rows[0]) == {"file_name", "image_id", "category_id", "bbox", "score"}
    assert (run_dir / "img0.png").is_file() and (run_dir / "img1.png").is_file()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("missing.jpg", "missing.jpg: no such file"),
        ("empty", "empty: folder has no images"),
        ("bad.png", "bad.png: cannot read image"),
    ],
)
def test_cli_clear_errors(setup, tmp_path, source: str, message: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.png").write_bytes(b"not a png")
    proc = _run(
        f"checkpoint={setup['ckpt']}", f"source={tmp_path / source}",
        f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("detect.py: error: "), proc.stderr
    assert message in lines[0]
    assert "Traceback" not in proc.stderr


def test_cli_model_and_checkpoint_are_exclusive(setup, tmp_path) -> None:
    proc = _run(f"source={setup['images']}", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "detect.py: error: give exactly one of checkpoint=<.pt> or "
        "model=<exported .onnx or .tflite>"
    )


def test_unreadable_images_in_a_folder_are_skipped_and_counted(setup, tmp_path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("img0.png", "img1.png"):
        (folder / name).write_bytes((setup["images"] / name).read_bytes())
    (folder / "zz_bad.png").write_bytes(b"not a png")
    common = {"checkpoint": str(setup["ckpt"]), "source": str(folder), "progress": False,
              "save": False}  # fmt: skip
    lines: list[str] = []
    result = run_detect(DetectConfig(**common), tmp_path / "skip", log=lines.append)
    assert result["unreadable"] == ["zz_bad.png"] and result["num_images"] == 2
    assert any(line.startswith("1 unreadable images skipped: zz_bad.png") for line in lines)
    written = json.loads((tmp_path / "skip" / "detections.json").read_text())
    assert written == result["detections"] and {r["file_name"] for r in written} <= {
        "img0.png",
        "img1.png",
    }
    # skip_unreadable=false: the bad image stops the run, what was done is still written.
    with pytest.raises(ValueError, match=r"zz_bad\.png: cannot read image"):
        run_detect(DetectConfig(**common, skip_unreadable=False), tmp_path / "stop")
    assert json.loads((tmp_path / "stop" / "detections.json").read_text()) == written
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "bad.png").write_bytes(b"x")
    with pytest.raises(ValueError, match="none of the 1 images could be read"):
        run_detect(DetectConfig(**{**common, "source": str(only_bad)}), tmp_path / "none")


def test_ann_file_gives_real_image_and_category_ids(setup, tmp_path) -> None:
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps({
        "images": [{"id": 42, "file_name": "img0.png", "width": 160, "height": 96}],
        "annotations": [],
        "categories": [{"id": 7, "name": "square"}, {"id": 9, "name": "star"}],
    }))  # fmt: skip
    common = {"checkpoint": str(setup["ckpt"]), "source": str(setup["images"]),
              "progress": False, "save": False, "postprocess": PostprocessConfig(score_thresh=0.05)}  # fmt: skip
    plain = run_detect(DetectConfig(**common), tmp_path / "plain")["detections"]
    lines: list[str] = []
    result = run_detect(
        DetectConfig(**common, ann_file=str(ann)), tmp_path / "ids", log=lines.append
    )
    rows = result["detections"]
    expected = [r for r in plain if r["file_name"] == "img0.png" and r["category_id"] == 2]
    assert expected and [(r["bbox"], r["score"]) for r in rows] == [
        (r["bbox"], r["score"]) for r in expected
    ]
    assert all(r["image_id"] == 42 and r["category_id"] == 7 for r in rows)
    assert result["not_in_ann_file"] == ["img1.png"]
    others = sum(1 for r in plain if r["file_name"] == "img0.png" and r["category_id"] != 2)
    assert result["num_dropped_detections"] == others > 0
    assert any("1 shared classes matched by name: square" in line for line in lines)
    ann.write_text(json.dumps({"images": [], "annotations": [],
                               "categories": [{"id": 1, "name": "star"}]}))  # fmt: skip
    with pytest.raises(ValueError, match="no class in common"):
        run_detect(DetectConfig(**common, ann_file=str(ann)), tmp_path / "none")
    with pytest.raises(FileNotFoundError, match=r"ann_file=.*missing\.json: file not found"):
        run_detect(DetectConfig(**common, ann_file=str(tmp_path / "missing.json")), tmp_path)


@pytest.mark.parametrize(
    ("source", "message"),
    [("bad.mp4", "bad.mp4: video cannot be opened"), ("7", "camera 7 cannot be opened")],
)
def test_video_backend_noise_does_not_precede_the_error(setup, tmp_path, source, message) -> None:
    """FFmpeg ("moov atom not found") and V4L2 warnings used to come before our error line."""
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    proc = _run(
        f"checkpoint={setup['ckpt']}", f"source={source}", "hydra.run.dir=out", cwd=tmp_path
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
