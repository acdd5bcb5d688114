"""ExecuTorch export: raw and decoded parity with PyTorch in the ExecuTorch Python runtime, the
export.py entry point (.pte + sidecar + verdict) and early errors for unsupported options."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("executorch")

from export_common import CLASSES, POST, assert_fails_before_work, tiny_model

from detector.engine.checkpoint import save_checkpoint
from detector.export import (
    ExportOptions,
    ExportWrapper,
    export_model,
    read_sidecar,
)
from detector.export.executorch_format import ExecuTorchRunner, export_executorch
from detector.export.images import generated_images, preprocess

REPO = Path(__file__).resolve().parents[1]
SIZE = (128, 128)


def _tiny_model(seed: int = 0):
    return tiny_model(SIZE, seed=seed)


@pytest.fixture(scope="module")
def model():
    return _tiny_model()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return preprocess(generated_images(3, seed=7, size=(96, 160)), SIZE)


def test_raw_outputs_match_pytorch(model, images, tmp_path) -> None:
    facts = export_executorch(model, tmp_path / "raw.pte", stage="raw")
    assert facts["backend"] == "XNNPACK" and facts["outputs"] == ["box_deltas", "class_logits"]
    out = ExecuTorchRunner(tmp_path / "raw.pte", stage="raw")(images)
    with torch.no_grad():
        deltas, logits = model(torch.from_numpy(images))
    assert out["box_deltas"].shape == tuple(deltas.shape)
    assert out["class_logits"].shape == tuple(logits.shape)
    np.testing.assert_allclose(out["box_deltas"], deltas.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(out["class_logits"], logits.numpy(), atol=1e-4, rtol=0)


def test_decoded_export_passes_verification(model, images, tmp_path) -> None:
    options = ExportOptions(format="executorch", decode=True, num_verify_images=3, **POST)
    result = export_model(model, CLASSES, tmp_path, options, name="dec", log=None)
    assert result.model_path.name == "dec.pte" and result.passed
    verdict = result.verdicts[0]
    assert verdict.runtime == "ExecuTorch (XNNPACK)" and verdict.num_reference > 0
    assert verdict.agreement >= 0.99
    assert max(verdict.max_abs_diff.values()) < 1e-4
    sidecar = read_sidecar(result.sidecar_path)
    assert sidecar["stage"] == "decoded" and sidecar["format"] == "executorch"
    out = ExecuTorchRunner(result.model_path, stage="decoded")(images)
    with torch.no_grad():
        boxes, scores = ExportWrapper(model, decode=True, **POST)(torch.from_numpy(images))
    np.testing.assert_allclose(out["boxes"], boxes.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(out["scores"], scores.numpy(), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nms": True}, "does not support nms=true"),
        ({"int8": True, "calibration": "synthetic"}, "does not support int8=true"),
        ({"dynamic_batch": True}, "does not support dynamic_batch=true"),
    ],
)
def test_unsupported_options_fail_before_work(kwargs, message, tmp_path, monkeypatch) -> None:
    options = ExportOptions(format="executorch", **kwargs)
    assert_fails_before_work(options, message, tmp_path, monkeypatch)


def test_export_py_writes_pte_and_sidecar(tmp_path) -> None:
    model = _tiny_model()
    checkpoint = tmp_path / "ckpt" / "tiny.pt"
    checkpoint.parent.mkdir()
    save_checkpoint(
        {"model": model.state_dict(), "model_config": model.config.to_dict(), "classes": CLASSES},
        checkpoint,
    )
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    cmd = [
        sys.executable, str(REPO / "export.py"), f"checkpoint={checkpoint}",
        "format=executorch", "num_verify_images=3", f"hydra.run.dir={out}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "tiny.pte").is_file()
    sidecar = json.loads((out / "tiny.json").read_text())
    assert sidecar["classes"] == CLASSES and sidecar["stage"] == "raw"
    assert sidecar["format"] == "executorch"
    assert sidecar["verification"][0]["passed"] is True
    assert "verification [fp32, ExecuTorch (XNNPACK), 3 images" in proc.stdout
    assert "PASS" in proc.stdout
