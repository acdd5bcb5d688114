"""The built-in face detector: ``checkpoint=face`` resolves to package data and finds real faces.

References: the held-out split of the real ``face_mask`` photos (its annotated faces, scored by the
project's VOC evaluator through ``eval.py``'s code path) and the 117 faces Ultra-Light Slim-320
finds on its four photos (``opencv_reference_faces.json``, OpenCV 4.11 on the original Caffe model).
Thresholds sit below the figures measured when the weights were made (docs/faces.md).
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from detector.builtin_weights import (
    BUILTIN_CHECKPOINTS,
    WEIGHTS_DIR,
    UnknownCheckpointError,
    resolve_checkpoint,
)
from detector.engine.checkpoint import CheckpointError, load_checkpoint, load_detector

REPO = Path(__file__).resolve().parents[1]
FACE = WEIGHTS_DIR / "face.pt"
# measured on the shipped weights (docs/faces.md, 2026-12-04): held-out AP50 0.533 (eval.py
# defaults), 19/117 reference faces at score > 0.05; random weights: AP50 about 0.001, 0 faces
MIN_HELD_OUT_AP50 = 0.45
MIN_REFERENCE_FACES = 12


def test_face_is_package_data_under_detector_weights() -> None:
    assert resolve_checkpoint("face") == FACE and FACE.is_file()
    assert FACE.parent == Path(__import__("detector").__file__).resolve().parent / "weights"
    # [tool.setuptools.package-data] detector = [...] (read as text: Python 3.10 has no tomllib)
    pyproject = (REPO / "pyproject.toml").read_text()
    line = re.search(
        r"^\[tool\.setuptools\.package-data\]\s*\n(?:#.*\n)*detector = (.*)$", pyproject, re.M
    )
    assert line, "no package-data for detector in pyproject.toml"
    patterns = re.findall(r'"([^"]+)"', line.group(1))
    assert any(fnmatch.fnmatch("weights/face.pt", p) for p in patterns)
    assert FACE.stat().st_size < 1_500_000  # about 1 MB: weights only, no optimizer state
    for name, entry in BUILTIN_CHECKPOINTS.items():
        assert (WEIGHTS_DIR / entry["file"]).is_file(), name


def test_face_checkpoint_content() -> None:
    ckpt = torch.load(FACE, map_location="cpu", weights_only=True)
    assert {"format_version", "model", "model_config", "classes"} <= set(ckpt)
    assert not {"optimizer", "scheduler", "ema", "ema_full", "rng"} & set(ckpt)
    assert ckpt["classes"] == ["face"]
    model, classes = load_detector("face")
    assert classes == ["face"]
    assert model.image_size == (240, 320) and model.num_anchors == 4420
    assert model.config.alpha == 0.25 and model.config.head == "ssdlite"


def test_unknown_name_lists_the_built_in_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(UnknownCheckpointError, match=r"fcae: checkpoint not found.*\n  face: "):
        resolve_checkpoint("fcae")
    with pytest.raises(CheckpointError, match=r"built-in checkpoints:\n  face: face detector"):
        load_checkpoint("fcae")
    with pytest.raises(CheckpointError, match=r"missing\.pt: checkpoint not found$"):
        load_checkpoint(tmp_path / "missing.pt")  # a path: one line, no list of names
    # an existing file always wins over a built-in name
    own = tmp_path / "face"
    own.write_bytes(b"x")
    assert resolve_checkpoint(own) == own


def test_train_init_from_face() -> None:
    from detector.classes import ClassSpec
    from detector.config import model_config_from
    from detector.engine.finetune import init_from_checkpoint
    from detector.models import build_ssd
    from detector.summary import compose_config

    spec = compose_config(["experiment=face_mask"])
    model = build_ssd(model_config_from(spec, 1))
    message = init_from_checkpoint(model, "face", ClassSpec(("face",)))
    n = len(model.state_dict())
    assert f"{n}/{n} tensors loaded" in message
    reference = load_detector("face")[0].state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())


def _face_mask(shared_data: Path) -> Path:
    root = shared_data / "datasets" / "face_mask"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    return root


def test_face_eval_on_held_out_split(shared_data: Path, tmp_path: Path) -> None:
    """``eval.py checkpoint=face dataset=face_mask`` (in process): AP50 on the 140 held-out
    photos against their annotated faces."""
    from detector.engine.evaluate import evaluate_checkpoint
    from detector.summary import compose_config

    spec = compose_config(
        [
            "checkpoint=face",
            "dataset=face_mask",
            f"dataset.root={_face_mask(shared_data)}",
            "num_workers=0",
            "device=cpu",
        ],
        config_name="eval",
    )
    metrics = evaluate_checkpoint(spec, tmp_path)
    assert metrics["val/num_gt/face" if "val/num_gt/face" in metrics else "num_gt/face"] == 584
    assert metrics["mAP"] >= MIN_HELD_OUT_AP50, metrics["mAP"]


def test_detect_cli_finds_ultralight_reference_faces(shared_data: Path, tmp_path: Path) -> None:
    """``python detect.py checkpoint=face source=<Ultra-Light's photos>`` from another folder
    (the name resolves to package data, not to a file in the working directory): detections for
    all four photos, counted against the 117 reference faces at score > 0.05 (IoU >= 0.5,
    one-to-one)."""
    sys.path.insert(0, str(REPO / "bench"))
    from face import count_found

    ul = shared_data / "face_ultralight_slim320"
    if not (ul / "opencv_reference_faces.json").is_file():
        pytest.skip("Ultra-Light reference faces not in the shared data")
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "detect.py"),
            "checkpoint=face",
            f"source={ul / 'images'}",
            "postprocess.score_thresh=0.05",
            "postprocess.nms_thresh=0.3",
            "postprocess.max_detections=200",
            "save=false",
            "progress=false",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    detections = json.loads((tmp_path / "run" / "detections.json").read_text())
    reference = json.loads((ul / "opencv_reference_faces.json").read_text())["images"]
    found = total = 0
    for name, ref in sorted(reference.items()):
        ours = [d for d in detections if Path(str(d.get("file_name", ""))).name == name]
        boxes = np.array(
            [[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in ours)], np.float32
        ).reshape(-1, 4)
        ref_boxes = np.array([f["box_px_xyxy"] for f in ref["faces"]], np.float32)
        order = np.argsort([-f["score"] for f in ref["faces"]], kind="stable")
        found += count_found(ref_boxes[order], boxes)
        total += len(ref_boxes)
    assert total == 117
    assert {Path(str(d["file_name"])).name for d in detections} == set(reference)
    # Ultra-Light's photos are crowds of small faces, unlike face_mask: 19/117 (docs/faces.md).
    assert found >= MIN_REFERENCE_FACES, found


def test_export_takes_a_built_in_name(tmp_path: Path) -> None:
    from detector.export import ExportOptions, export_checkpoint

    result = export_checkpoint("face", tmp_path, ExportOptions(num_verify_images=2), log=None)
    assert result.model_path == tmp_path / "face.onnx" and result.passed
    assert result.sidecar["classes"] == ["face"]
