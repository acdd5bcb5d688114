"""Core ML export: the converted ML Program checked against its sidecar and the PyTorch weights
(Linux has no Core ML runtime), the export.py entry point, early errors for unsupported options,
and, on macOS only, outputs compared with PyTorch."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision  # noqa: F401  (before coremltools, which imports TensorFlow)

pytest.importorskip("coremltools")

from export_common import CLASSES, POST, assert_fails_before_work, tiny_model

from detector.engine.checkpoint import save_checkpoint
from detector.export import (
    ExportError,
    ExportOptions,
    ExportWrapper,
    export_model,
    read_sidecar,
)
from detector.export.coreml_format import (
    CoreMLRunner,
    can_run_coreml,
    check_coreml_spec,
    coreml_output_names,
)
from detector.export.images import generated_images, preprocess

REPO = Path(__file__).resolve().parents[1]
SIZE = (128, 160)


def _tiny_model(seed: int = 0):
    return tiny_model(SIZE, seed=seed, random_batchnorm=True)


@pytest.fixture(scope="module")
def model():
    return _tiny_model()


@pytest.fixture(scope="module")
def exports(model, tmp_path_factory):
    """One raw and one decoded export of the same model (converted once for the module)."""
    out = tmp_path_factory.mktemp("coreml")
    results = {}
    for stage in ("raw", "decoded"):
        options = ExportOptions(format="coreml", decode=stage == "decoded", **POST)
        results[stage] = export_model(model, CLASSES, out, options, name=stage, log=None)
    return results


@pytest.mark.parametrize("stage", ["raw", "decoded"])
def test_export_writes_mlpackage_and_passes_spec_check(exports, model, stage) -> None:
    result = exports[stage]
    assert result.model_path.name == f"{stage}.mlpackage" and result.model_path.is_dir()
    assert result.passed
    sidecar = read_sidecar(result.sidecar_path)
    assert sidecar["format"] == "coreml" and sidecar["stage"] == stage
    assert sidecar["classes"] == CLASSES
    assert sidecar["export"]["outputs"] == coreml_output_names(stage)
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert sidecar["export"]["num_conv"] == convs
    verdict = sidecar["verification"][0]
    if can_run_coreml():
        assert verdict["num_images"] > 0 and verdict["agreement"] >= 0.99
        return
    assert verdict["passed"] and verdict["num_images"] == 0
    assert "numerical check needs macOS" in verdict["note"]
    checked = " ".join(verdict["checks"])
    assert f"{convs} conv ops" in checked and "conv weights equal PyTorch's" in checked
    assert "input shape [1, 3, 128, 160]" in checked
    if stage == "decoded":
        assert "box decoding (exp) present" in checked and "softmax" in checked


def test_spec_matches_sidecar_names_shapes_dtypes(exports, model) -> None:
    import coremltools as ct

    spec = ct.utils.load_spec(str(exports["decoded"].model_path))
    assert spec.WhichOneof("Type") == "mlProgram"
    assert [i.name for i in spec.description.input] == ["images"]
    assert list(spec.description.input[0].type.multiArrayType.shape) == [1, 3, *SIZE]
    outputs = {o.name: list(o.type.multiArrayType.shape) for o in spec.description.output}
    a, c = model.num_anchors, model.num_classes + 1
    assert outputs == {
        "boxes": [1, a, 4],
        "scores": [1, a, c],
        "box_deltas": [1, a, 4],
        "class_logits": [1, a, c],
    }
    meta = dict(spec.description.metadata.userDefined)
    assert json.loads(meta["detector.outputs"]) == coreml_output_names("decoded")
    assert meta["detector.stage"] == "decoded"


def test_spec_check_fails_on_mismatches(exports, model) -> None:
    path = exports["raw"].model_path
    sidecar = read_sidecar(exports["raw"].sidecar_path)
    passed, failures, ops = check_coreml_spec(path, sidecar, model=model)
    assert any("conv weights equal" in p for p in passed)
    assert not failures and ops["conv"] == sidecar["export"]["num_conv"]

    wrong_size = copy.deepcopy(sidecar)
    wrong_size["input"]["shape"] = [1, 3, 160, 128]
    assert any("input shape" in f for f in check_coreml_spec(path, wrong_size)[1])

    wrong_classes = copy.deepcopy(sidecar)
    wrong_classes["outputs"][1]["shape"][2] += 1
    assert any("class_logits shape" in f for f in check_coreml_spec(path, wrong_classes)[1])

    wrong_stage = copy.deepcopy(sidecar)
    wrong_stage["stage"] = "decoded"
    wrong_stage["outputs"] = read_sidecar(exports["decoded"].sidecar_path)["outputs"]
    assert any(f.startswith("outputs [") for f in check_coreml_spec(path, wrong_stage)[1])

    assert any("conv ops" in f for f in check_coreml_spec(path, sidecar, num_conv=3)[1])

    other = _tiny_model(seed=1)  # same architecture, other weights
    failures = check_coreml_spec(path, sidecar, model=other)[1]
    assert any("conv weights" in f for f in failures)


def test_float16_program_keeps_float32_io(model, tmp_path) -> None:
    options = ExportOptions(format="coreml", decode=True, compute_precision="float16", **POST)
    result = export_model(model, CLASSES, tmp_path, options, name="half", log=None)
    assert result.passed and result.sidecar["export"]["compute_precision"] == "float16"
    passed, failures, ops = check_coreml_spec(result.model_path, result.sidecar, model=model)
    assert not failures and ops["cast"] >= 1  # float32 in, float16 inside, float32 out
    weights = next(p for p in passed if p.startswith("conv weights equal"))
    assert "max diff 0)" not in weights  # really rounded to half precision


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nms": True}, "does not support nms=true"),
        ({"int8": True, "calibration": "synthetic"}, "does not support int8=true"),
        ({"dynamic_batch": True}, "does not support dynamic_batch=true"),
    ],
)
def test_unsupported_options_fail_before_work(kwargs, message, tmp_path, monkeypatch) -> None:
    options = ExportOptions(format="coreml", **kwargs)
    assert_fails_before_work(options, message, tmp_path, monkeypatch)


@pytest.mark.skipif(not can_run_coreml(), reason="optional: Core ML runs only on macOS")
def test_outputs_match_pytorch_on_macos(exports, model) -> None:
    images = preprocess(generated_images(2, seed=7, size=(96, 160)), SIZE)
    out = CoreMLRunner(exports["decoded"].model_path, stage="decoded")(images)
    with torch.no_grad():
        boxes, scores = ExportWrapper(model, decode=True, **POST)(torch.from_numpy(images))
    np.testing.assert_allclose(out["boxes"], boxes.numpy(), atol=1e-3, rtol=0)
    np.testing.assert_allclose(out["scores"], scores.numpy(), atol=1e-3, rtol=0)


@pytest.mark.skipif(can_run_coreml(), reason="checks the Linux behaviour")
def test_runner_refuses_without_core_ml(exports) -> None:
    with pytest.raises(ExportError, match="needs macOS"):
        CoreMLRunner(exports["raw"].model_path)


def test_hydra_format_coreml_maps_to_options(tmp_path) -> None:
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from detector.export.schema import options_from_hydra, register_export_schemas

    register_export_schemas()
    overrides = ["checkpoint=x.pt", "format=coreml", "decode=true"]
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "detector" / "conf")):
        cfg = compose("export", overrides=[*overrides, "format.compute_precision=float16"])
        with open_dict(cfg):
            cfg.pop("hydra", None)
    _, options, _ = options_from_hydra(cfg)
    assert options.format.name == "coreml" and options.stage == "decoded"
    assert options.format.compute_precision == "float16"
    assert options.check().name == "coreml"


@pytest.mark.slow
def test_export_py_writes_mlpackage_and_sidecar(tmp_path) -> None:
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
        "format=coreml", "decode=true", f"hydra.run.dir={out}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "tiny.mlpackage" / "Manifest.json").is_file()
    sidecar = json.loads((out / "tiny.json").read_text())
    assert sidecar["format"] == "coreml" and sidecar["stage"] == "decoded"
    assert sidecar["verification"][0]["passed"] is True
    assert "export OK" in proc.stdout
    if not can_run_coreml():
        assert "numerical check needs macOS" in proc.stdout
