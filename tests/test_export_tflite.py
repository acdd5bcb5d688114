"""TFLite export (litert-torch) and the torch-free TFLite runtime.

One ``export.py format=tflite`` run (module fixture) gives the raw fp32 artifact that the other
tests share: verification verdict, sidecar, parity of the raw outputs in the LiteRT interpreter,
the torch-free :mod:`detector.runtime` (also in a process where importing torch fails) and
``detect.py model=<.tflite>``, all against the PyTorch model. Decoded outputs, int8 (slow) and
the converted real COCO detector (slow, needs ``../shared``) have their own exports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")

from export_common import (
    CLASSES,
    POST,
    assert_fails_before_work,
    assert_same_detections,
    tiny_model,
)

from detector.engine.checkpoint import save_checkpoint
from detector.export import (
    ExportOptions,
    ExportWrapper,
    export_model,
)
from detector.export.images import generated_images, preprocess
from detector.export.tflite_format import TFLiteRunner
from detector.postprocess import postprocess_detections
from detector.predict import DetectConfig, run_detect
from detector.runtime import TFLiteDetector, iou_matrix, load_detector, preprocess_image

REPO = Path(__file__).resolve().parents[1]
SIZE = (160, 160)
ENV = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO)}

BLOCK_TORCH = """
import importlib.abc, json, sys
import numpy as np, cv2

class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "tensorflow", "litert_torch"):
            raise ImportError(name + " is blocked in this test")
        return None

sys.meta_path.insert(0, _NoTorch())
from detector.runtime import load_detector
det = load_detector(sys.argv[1])
image = cv2.cvtColor(cv2.imread(sys.argv[2]), cv2.COLOR_BGR2RGB)
out = det(image)
assert not any(m.split(".")[0] in ("torch", "tensorflow") for m in sys.modules)
print(type(det).__name__)
print(json.dumps({k: np.asarray(v).tolist() for k, v in out.items()}))
"""


def _tiny_model(seed: int = 0):
    return tiny_model(SIZE, seed=seed)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """``python export.py checkpoint=tiny.pt format=tflite`` (raw, fp32) and a sample image."""
    import cv2

    tmp = tmp_path_factory.mktemp("tflite")
    model = _tiny_model()
    ckpt = tmp / "tiny.pt"
    save_checkpoint(
        {"model": model.state_dict(), "model_config": model.config.to_dict(), "classes": CLASSES},
        ckpt,
    )
    out = tmp / "run"
    overrides = [f"postprocess.{k}={v}" for k, v in POST.items()]
    cmd = [
        sys.executable, str(REPO / "export.py"), f"checkpoint={ckpt}", "format=tflite",
        "num_verify_images=3", f"hydra.run.dir={out}", *overrides,
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp, env=ENV, capture_output=True, text=True, timeout=300)
    image = generated_images(1, seed=3, size=(96, 160))[0]
    image_path = tmp / "sample.png"
    cv2.imwrite(str(image_path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return {"proc": proc, "ckpt": ckpt, "dir": out, "tflite": out / "tiny.tflite",
            "image": image_path, "model": model}  # fmt: skip


def _read(path: Path) -> np.ndarray:
    import cv2

    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _torch_detections(model, image: np.ndarray, **post) -> dict[str, np.ndarray]:
    with torch.no_grad():
        deltas, logits = model(torch.from_numpy(preprocess_image(image, model.image_size)))
    det = postprocess_detections(
        deltas, logits, model.anchors, [image.shape[:2]], score_fn=model.score_fn,
        **{**POST, **post},
    )[0]  # fmt: skip
    return {k: v.numpy() for k, v in det.items()}


# ------------------------------------------------------------------------------- export
def test_export_py_writes_tflite_sidecar_and_verdict(exported) -> None:
    proc = exported["proc"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert exported["tflite"].is_file() and not (exported["dir"] / "tiny_fp32.tflite").exists()
    assert "verification [fp32, LiteRT interpreter, 3 images" in proc.stdout
    assert "PASS" in proc.stdout and "% of PyTorch detections" in proc.stdout
    sidecar = json.loads((exported["dir"] / "tiny.json").read_text())
    assert sidecar["format"] == "tflite" and sidecar["file"] == "tiny.tflite"
    assert sidecar["stage"] == "raw" and sidecar["classes"] == CLASSES
    assert sidecar["input"]["layout"] == "NCHW" and sidecar["input"]["shape"] == [1, 3, *SIZE]
    assert sidecar["export"]["input_layout"] == "NCHW"
    assert sidecar["export"]["outputs"] == ["box_deltas", "class_logits"]
    assert sidecar["export"]["int8"] is False
    assert len(sidecar["decode"]["anchors"]) == exported["model"].num_anchors
    verdict = sidecar["verification"][0]
    assert verdict["passed"] and verdict["runtime"] == "LiteRT interpreter"
    assert verdict["num_reference"] > 0 and verdict["agreement"] >= 0.99
    assert max(verdict["max_abs_diff"].values()) < 1e-4


def test_raw_outputs_match_pytorch(exported) -> None:
    model = exported["model"]
    images = preprocess(generated_images(2, seed=7, size=(120, 200)), SIZE)
    runner = TFLiteRunner(exported["tflite"], stage="raw")
    assert runner.input_shape == (1, 3, *SIZE) and runner.input_name == "images"
    out = runner(images)
    with torch.no_grad():
        deltas, logits = model(torch.from_numpy(images))
    assert out["box_deltas"].shape == tuple(deltas.shape)
    assert out["class_logits"].shape == tuple(logits.shape)
    np.testing.assert_allclose(out["box_deltas"], deltas.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(out["class_logits"], logits.numpy(), atol=1e-4, rtol=0)


def test_decoded_export_passes_verification(tmp_path) -> None:
    model = _tiny_model()
    options = ExportOptions(format="tflite", decode=True, num_verify_images=2, **POST)
    result = export_model(model, CLASSES, tmp_path, options, name="dec", log=None)
    assert result.model_path.name == "dec.tflite" and result.passed
    verdict = result.verdicts[0]
    assert verdict.num_reference > 0 and verdict.agreement >= 0.99
    assert max(verdict.max_abs_diff.values()) < 1e-4
    assert result.sidecar["stage"] == "decoded"
    assert result.sidecar["export"]["outputs"] == ["boxes", "scores", "box_deltas", "class_logits"]
    images = preprocess(generated_images(2, seed=8), SIZE)
    out = TFLiteRunner(result.model_path, stage="decoded")(images)
    with torch.no_grad():
        boxes, scores = ExportWrapper(model, decode=True, **POST)(torch.from_numpy(images))
    np.testing.assert_allclose(out["boxes"], boxes.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(out["scores"], scores.numpy(), atol=1e-4, rtol=0)
    det = TFLiteDetector.load(result.model_path)
    image = generated_images(1, seed=9, size=(100, 140))[0]
    assert_same_detections(det(image), _torch_detections(model, image))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nms": True}, "does not support nms=true"),
        ({"dynamic_batch": True}, "does not support dynamic_batch=true"),
        ({"int8": True}, "needs calibration images"),
    ],
)
def test_unsupported_options_fail_before_work(kwargs, message, tmp_path, monkeypatch) -> None:
    options = ExportOptions(format="tflite", **kwargs)
    assert_fails_before_work(options, message, tmp_path, monkeypatch)


@pytest.mark.slow
def test_int8_export_runs_and_reports(tmp_path) -> None:
    """PT2E int8: the fp32 twin passes, the int8 model runs and its agreement is reported."""
    model = _tiny_model()
    options = ExportOptions(
        format="tflite", int8=True, calibration="synthetic", num_calibration_images=8,
        num_verify_images=4, **POST,
    )  # fmt: skip
    result = export_model(model, CLASSES, tmp_path, options, name="q", log=None)
    fp32, int8 = result.verdicts
    assert fp32.precision == "fp32" and fp32.passed and fp32.agreement >= 0.99
    assert (tmp_path / "q_fp32.tflite").is_file()
    assert int8.precision == "int8" and int8.min_agreement is None and int8.num_reference > 0
    facts = result.sidecar["export"]
    assert facts["int8"] is True and facts["fp32_file"] == "q_fp32.tflite"
    assert facts["quantization"]["num_images_seen"] == 8
    assert result.model_path.stat().st_size < 0.5 * (tmp_path / "q_fp32.tflite").stat().st_size
    # the int8 head keeps every level in range (no clipped concat): raw errors stay well below
    # the output scale and most detections survive
    for name in ("box_deltas", "class_logits"):
        assert int8.max_abs_diff[name] < 0.25 * int8.output_scale[name]
    assert int8.agreement_iou50 >= 0.7
    # the torch-free runtime dequantizes the int8 outputs
    det = TFLiteDetector.load(result.model_path)
    image = generated_images(1, seed=3, size=(96, 160))[0]
    ours = det(image)
    assert len(ours["scores"]) > 0 and ours["boxes"].dtype == np.float32


# ------------------------------------------------------------------------------ runtime
def test_runtime_matches_pytorch(exported) -> None:
    image = _read(exported["image"])
    det = load_detector(exported["tflite"])
    assert isinstance(det, TFLiteDetector)
    assert det.input_size == SIZE and det.stage == "raw"
    out = det(image)
    assert out["class_names"] == [CLASSES[i - 1] for i in out["labels"]]
    assert out["boxes"][:, [0, 2]].max() <= 160 and out["boxes"][:, [1, 3]].max() <= 96
    assert_same_detections(out, _torch_detections(exported["model"], image))
    narrow = TFLiteDetector.load(exported["tflite"], score_thresh=0.5, max_detections=3)(image)
    assert len(narrow["scores"]) <= 3 and (narrow["scores"] > 0.5).all()


def test_runtime_without_torch(exported) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH, str(exported["tflite"]), str(exported["image"])],
        capture_output=True, text=True, env=ENV, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-2] == "TFLiteDetector"
    out = json.loads(lines[-1])
    assert_same_detections(out, _torch_detections(exported["model"], _read(exported["image"])))


def test_runtime_errors(exported, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.tflite"):
        load_detector(tmp_path / "missing.tflite")
    lonely = tmp_path / "lonely.tflite"
    lonely.write_bytes(exported["tflite"].read_bytes())
    with pytest.raises(FileNotFoundError, match=r"lonely\.json"):
        load_detector(lonely)
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"not a flatbuffer" * 8)
    (tmp_path / "garbage.json").write_text((exported["dir"] / "tiny.json").read_text())
    with pytest.raises(ValueError, match="cannot load TFLite model"):
        load_detector(garbage)
    with pytest.raises(ValueError, match=r"unknown exported model type \.pb"):
        load_detector(tmp_path / "model.pb")
    # a sidecar for another input size does not fit the model
    sidecar = json.loads((exported["dir"] / "tiny.json").read_text())
    sidecar["input"]["height_width"] = [128, 128]
    (tmp_path / "lonely.json").write_text(json.dumps(sidecar))
    with pytest.raises(ValueError, match="does not match the sidecar"):
        load_detector(lonely)


def test_detect_py_with_tflite_model(exported, tmp_path) -> None:
    """``detect.py model=<.tflite>`` (no torch in that process) gives the checkpoint's
    detections."""
    image = str(exported["image"])
    cmd = [
        sys.executable, str(REPO / "detect.py"), f"model={exported['tflite']}",
        f"source={image}", "progress=false", f"hydra.run.dir={tmp_path / 'tfl'}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = json.loads((tmp_path / "tfl" / "detections.json").read_text())
    spec = DetectConfig(checkpoint=str(exported["ckpt"]), source=image, progress=False, save=False)
    ref = run_detect(spec, tmp_path / "pt")["detections"]
    assert ref, "the test model should give detections"
    assert [r["category_id"] for r in rows] == [r["category_id"] for r in ref]
    np.testing.assert_allclose([r["score"] for r in rows], [r["score"] for r in ref], atol=1e-4)
    xyxy = [np.array([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in rs)])
            for rs in (rows, ref)]  # fmt: skip
    assert iou_matrix(*xyxy).diagonal().min() >= 0.9


# ----------------------------------------------------------------------- real COCO model
@pytest.mark.slow
def test_real_coco_model_exports_and_matches(shared_data, tmp_path) -> None:
    """The TF OD API COCO detector (converted to our checkpoint) exported to TFLite reproduces
    the PyTorch detections on the real photos."""
    pytest.importorskip("tflite")
    from detector.convert import convert_tflite

    folder = shared_data / "ssd_mobilenet_v1_coco_quant_tflite"
    if not (folder / "detect.tflite").is_file():
        pytest.skip(f"{folder}/detect.tflite not found")
    converted = convert_tflite(folder / "detect.tflite", folder / "coco_labels.txt")
    options = ExportOptions(
        format="tflite", verify_images=str(shared_data / "images"), num_verify_images=13,
        score_thresh=0.3, max_detections=100,
    )  # fmt: skip
    result = export_model(converted.model, converted.classes, tmp_path, options, name="coco")
    verdict = result.verdicts[0]
    assert result.passed and verdict.num_reference >= 20 and verdict.agreement >= 0.99
    # the torch-free runtime on the real photos, against the PyTorch path
    det = load_detector(result.model_path, score_thresh=0.3)
    for path in sorted((shared_data / "images").glob("*.jpg"))[:4]:
        image = _read(path)
        ref = _torch_detections(converted.model, image, score_thresh=0.3, max_detections=100)
        assert_same_detections(det(image), ref, min_score=0.5)
