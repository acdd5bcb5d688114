"""detector.runtime: the torch-free ONNX runtime matches the PyTorch post-processing, also in a
process where importing torch fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from export_common import assert_same_detections

from detector.engine.checkpoint import load_detector, save_checkpoint
from detector.export import ExportOptions, export_checkpoint
from detector.export.images import generated_images
from detector.models import ssd_mobilenet_v1
from detector.postprocess import postprocess_detections
from detector.runtime import Detector, preprocess_image, read_sidecar_file

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["circle", "square", "triangle"]
POST = {"score_thresh": 0.05, "nms_thresh": 0.45, "topk_candidates": 100, "max_detections": 50}

BLOCK_TORCH = """
import importlib.abc, json, sys
import numpy as np, cv2

class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch.") or name.startswith("torchvision"):
            raise ImportError("torch is blocked in this test")
        return None

sys.meta_path.insert(0, _NoTorch())
from detector.runtime import Detector
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
det = Detector.load(sys.argv[1])
image = cv2.cvtColor(cv2.imread(sys.argv[2]), cv2.COLOR_BGR2RGB)
out = det(image)
print(json.dumps({k: np.asarray(v).tolist() for k, v in out.items()}))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A tiny checkpoint (sharpened class predictors: confident detections), its raw ONNX
    export, and an image file with a different aspect ratio than the model."""
    import cv2

    tmp = tmp_path_factory.mktemp("runtime")
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
    options = ExportOptions(verify=False, exporter="torchscript", **POST)
    onnx_path = export_checkpoint(ckpt, tmp / "export", options, log=None).model_path
    image = generated_images(1, seed=3, size=(96, 160))[0]
    image_path = tmp / "sample.png"
    cv2.imwrite(str(image_path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return ckpt, onnx_path, image_path


def _torch_reference(ckpt: Path, image: np.ndarray) -> dict[str, np.ndarray]:
    model, _ = load_detector(ckpt)
    with torch.no_grad():
        deltas, logits = model(torch.from_numpy(preprocess_image(image, model.image_size)))
    det = postprocess_detections(
        deltas, logits, model.anchors, [image.shape[:2]], score_fn=model.score_fn, **POST
    )[0]
    return {k: v.numpy() for k, v in det.items()}


def _read(path: Path) -> np.ndarray:
    import cv2

    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_runtime_matches_pytorch(exported) -> None:
    ckpt, onnx_path, image_path = exported
    image = _read(image_path)
    det = Detector.load(onnx_path)
    assert det.input_size == (128, 128) and det.stage == "raw"
    out = det(image)
    assert set(out) == {"boxes", "scores", "labels", "class_names"}
    assert out["class_names"] == [CLASSES[i - 1] for i in out["labels"]]
    # boxes are in original-image pixels (160 wide, 96 high)
    assert out["boxes"][:, [0, 2]].max() <= 160 and out["boxes"][:, [1, 3]].max() <= 96
    assert_same_detections(out, _torch_reference(ckpt, image))


def test_runtime_without_torch(exported) -> None:
    ckpt, onnx_path, image_path = exported
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH, str(onnx_path), str(image_path)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert_same_detections(out, _torch_reference(ckpt, _read(image_path)))


def test_overrides_and_errors(exported, tmp_path) -> None:
    _, onnx_path, image_path = exported
    image = _read(image_path)
    det = Detector.load(onnx_path, score_thresh=0.5, max_detections=3)
    out = det(image)
    assert len(out["scores"]) <= 3 and (out["scores"] > 0.5).all()
    with pytest.raises(FileNotFoundError, match=r"missing\.onnx"):
        Detector.load(tmp_path / "missing.onnx")
    lonely = tmp_path / "lonely.onnx"
    lonely.write_bytes(onnx_path.read_bytes())
    with pytest.raises(FileNotFoundError, match=r"lonely\.json"):
        Detector.load(lonely)
    (tmp_path / "lonely.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=r"lonely\.json"):
        read_sidecar_file(lonely)
    with pytest.raises(ValueError, match="RGB image"):
        det(image[..., 0])


@pytest.mark.parametrize("stage", ["decode", "nms"])
def test_runtime_graph_stages(exported, tmp_path, stage: str) -> None:
    """Graphs that end after decoding or after NMS give the same detections as PyTorch."""
    ckpt, _, image_path = exported
    options = ExportOptions(verify=False, exporter="torchscript", **{stage: True}, **POST)
    onnx_path = export_checkpoint(ckpt, tmp_path, options, log=None).model_path
    image = _read(image_path)
    det = Detector.load(onnx_path)
    assert det.stage == ("decoded" if stage == "decode" else "nms")
    assert_same_detections(det(image), _torch_reference(ckpt, image))
