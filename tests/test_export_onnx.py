"""ONNX export: raw parity, in-graph NMS vs the reference post-processing, dynamic batch, the
sidecar (torch-free decoding), early errors, the export.py entry point and int8."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from export_common import CLASSES, POST, assert_fails_before_work, tiny_model
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from detector.engine.checkpoint import save_checkpoint
from detector.export import (
    ExportError,
    ExportOptions,
    ExportWrapper,
    check_request,
    detections_from_outputs,
    export_checkpoint,
    export_model,
    format_table,
    match_detections,
    read_sidecar,
    verify_artifact,
)
from detector.export.images import generated_images, preprocess
from detector.export.onnx_runner import OnnxRunner
from detector.export.schema import options_from_hydra, register_export_schemas
from detector.postprocess import postprocess_detections

REPO = Path(__file__).resolve().parents[1]
SIZE = (128, 128)


def _tiny_model(score_fn: str = "softmax", seed: int = 0):
    return tiny_model(SIZE, score_fn=score_fn, seed=seed)


def _reference(model, images: np.ndarray, sizes, **post):
    with torch.no_grad():
        deltas, logits = model(torch.from_numpy(images))
    dets = postprocess_detections(
        deltas, logits, model.anchors, sizes, score_fn=model.score_fn, **post
    )
    return deltas.numpy(), logits.numpy(), [{k: v.numpy() for k, v in d.items()} for d in dets]


@pytest.fixture(scope="module")
def model():
    return _tiny_model()


@pytest.fixture(scope="module")
def images():
    imgs = generated_images(3, seed=7, size=(96, 160))  # not the model's aspect ratio
    return imgs, preprocess(imgs, SIZE), [im.shape[:2] for im in imgs]


@pytest.fixture(scope="module")
def raw_export(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("raw")
    result = export_model(model, CLASSES, out, ExportOptions(**POST), name="tiny", log=None)
    return result


@pytest.fixture(scope="module")
def nms_export(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("nms")
    options = ExportOptions(nms=True, dynamic_batch=True, **POST)
    return export_model(model, CLASSES, out, options, name="tiny_nms", log=None)


# --------------------------------------------------------------------------------------- raw
def test_raw_outputs_match_pytorch(model, images, raw_export) -> None:
    _, x, _ = images
    assert raw_export.model_path.is_file() and raw_export.sidecar_path.is_file()
    runner = OnnxRunner(raw_export.model_path)
    assert runner.output_names == ["box_deltas", "class_logits"]
    assert runner.fixed_batch == 1
    with torch.no_grad():
        deltas, logits = model(torch.from_numpy(x))
    out = runner(x)  # fixed batch 1: run in chunks
    np.testing.assert_allclose(out["box_deltas"], deltas.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(out["class_logits"], logits.numpy(), atol=1e-4, rtol=0)
    verdict = raw_export.verdicts[0]
    assert verdict.passed and verdict.precision == "fp32"
    assert verdict.num_reference > 0 and verdict.agreement == 1.0


def test_raw_graph_is_clean(raw_export) -> None:
    import onnx

    proto = onnx.load(str(raw_export.model_path))
    ops = {n.op_type for n in proto.graph.node}
    assert "BatchNormalization" not in ops  # folded before export
    assert ops <= {"Conv", "Clip", "Transpose", "Reshape", "Concat", "Sub", "Div"}, ops
    assert [i.name for i in proto.graph.input] == ["images"]


def test_sidecar_alone_decodes_raw_outputs(model, images, raw_export) -> None:
    """A torch-free runtime with only the sidecar reproduces postprocess_detections."""
    _, x, sizes = images
    sidecar = read_sidecar(raw_export.sidecar_path)
    assert sidecar["stage"] == "raw" and sidecar["classes"] == CLASSES
    assert sidecar["input"]["layout"] == "NCHW" and sidecar["input"]["value_range"] == [0.0, 1.0]
    assert len(sidecar["decode"]["anchors"]) == model.num_anchors
    assert sidecar["decode"]["box_coder"]["weights"] == [10.0, 10.0, 5.0, 5.0]
    np.testing.assert_array_equal(
        np.asarray(sidecar["decode"]["anchors"], np.float32), model.anchors.numpy()
    )
    assert sidecar["verification"][0]["passed"] is True
    out = OnnxRunner(raw_export.model_path)(x)
    mine = detections_from_outputs(out, sidecar, sizes)
    *_, ref = _reference(model, x, sizes, **POST)
    for a, b in zip(mine, ref):
        assert len(a["scores"]) == len(b["scores"])
        np.testing.assert_array_equal(a["labels"], b["labels"])
        np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-5)
        np.testing.assert_allclose(a["boxes"], b["boxes"], atol=1e-2)


# --------------------------------------------------------------------------------------- NMS
def test_nms_in_graph_matches_postprocess(model, images, nms_export) -> None:
    _, x, sizes = images
    runner = OnnxRunner(nms_export.model_path)
    assert runner.output_names == ["boxes", "scores", "labels", "count"]
    out = runner(x)
    assert out["boxes"].shape == (3, POST["max_detections"], 4)
    assert out["labels"].dtype == np.int64 and out["count"].shape == (3,)
    sidecar = read_sidecar(nms_export.sidecar_path)
    assert sidecar["stage"] == "nms" and "decode" not in sidecar
    assert sidecar["postprocess"]["applied_in_graph"] is True
    mine = detections_from_outputs(out, sidecar, sizes)
    *_, ref = _reference(model, x, sizes, **POST)
    matched, total = match_detections(ref, mine, min_score=0.3, iou=0.9)
    assert total > 10
    assert matched >= 0.99 * total
    # Same number of detections, and valid rows come first by decreasing score, padding after.
    for i, det in enumerate(ref):
        n = int(out["count"][i])
        assert n == len(det["scores"])
        assert np.all(np.diff(out["scores"][i, :n]) <= 1e-7)
        assert np.all(out["labels"][i, n:] == 0) and np.all(out["scores"][i, n:] == 0)
        assert set(out["labels"][i, :n].tolist()) <= {1, 2, 3}


def test_dynamic_batch_one_and_three(images, nms_export) -> None:
    _, x, _ = images
    runner = OnnxRunner(nms_export.model_path)
    assert runner.fixed_batch is None
    both = runner(x)
    for i in range(3):
        single = runner(x[i : i + 1])
        for name in ("boxes", "scores", "labels", "count"):
            np.testing.assert_allclose(single[name][0], both[name][i], atol=1e-5)


def _assert_equals_reference(
    out: dict,
    ref: list,
    sizes,
    *,
    score_atol: float,
    box_atol: float | None = None,
    require_detections: bool = False,
) -> None:
    """Padded ``boxes/scores/labels/count`` equal the reference detections of every image: same
    count (and at least one with ``require_detections``) and labels, scores within
    ``score_atol``, pixel boxes within ``box_atol`` (not compared when None)."""
    for i, det in enumerate(ref):
        n = int(out["count"][i])
        assert n == len(det["scores"])
        assert n > 0 or not require_detections
        np.testing.assert_array_equal(np.asarray(out["labels"][i, :n]), det["labels"])
        np.testing.assert_allclose(np.asarray(out["scores"][i, :n]), det["scores"], atol=score_atol)
        if box_atol is not None:
            h, w = sizes[i]
            scale = np.array([w, h, w, h], np.float32)
            boxes = np.asarray(out["boxes"][i, :n]) * scale
            np.testing.assert_allclose(boxes, det["boxes"], atol=box_atol)


def _eager_nms(model, x: np.ndarray, post: dict) -> dict:
    with torch.no_grad():
        outputs = ExportWrapper(model, nms=True, **post)(torch.from_numpy(x))
    return {k: v.numpy() for k, v in zip(("boxes", "scores", "labels", "count"), outputs)}


def test_wrapper_matches_reference_in_eager(model, images) -> None:
    """The module an artifact reproduces equals postprocess_detections in PyTorch itself."""
    _, x, sizes = images
    *_, ref = _reference(model, x, sizes, **POST)
    _assert_equals_reference(_eager_nms(model, x, POST), ref, sizes, score_atol=1e-6, box_atol=1e-3)


@pytest.mark.parametrize("topk", [1, 4, 30])
def test_wrapper_matches_reference_when_classes_exceed_topk(model, images, topk) -> None:
    """More candidates per class than ``topk_candidates``: the graph zeroes the scores below
    each crowded class's k-th best before one NMS over all classes; the result must be the
    reference's NMS over the top-k alone."""
    _, x, sizes = images
    post = {**POST, "score_thresh": 0.01, "topk_candidates": topk, "max_detections": 40}
    with torch.no_grad():
        _, logits = model(torch.from_numpy(x))
    per_class = (logits.softmax(-1)[..., 1:] > post["score_thresh"]).sum(1)
    assert int(per_class.min()) > topk  # every class is crowded: the top-k cut matters
    *_, ref = _reference(model, x, sizes, **post)
    _assert_equals_reference(
        _eager_nms(model, x, post), ref, sizes, score_atol=1e-6, box_atol=1e-3,
        require_detections=True,
    )  # fmt: skip


def test_onnx_graph_matches_reference_when_classes_exceed_topk(model, images, tmp_path) -> None:
    """The top-k cut of crowded classes inside ONNX Runtime (dynamic shapes, batch 3)."""
    _, x, sizes = images
    post = {**POST, "score_thresh": 0.01, "topk_candidates": 4, "max_detections": 40}
    options = ExportOptions(nms=True, dynamic_batch=True, verify=False, **post)
    result = export_model(model, CLASSES, tmp_path, options, name="crowded", log=None)
    out = OnnxRunner(result.model_path)(x)
    *_, ref = _reference(model, x, sizes, **post)
    _assert_equals_reference(out, ref, sizes, score_atol=1e-5, require_detections=True)


@pytest.mark.parametrize("max_per_class", [1, 3, 1000])
def test_eager_nms_op_equals_onnxruntime_nonmaxsuppression(max_per_class) -> None:
    """``onnx_nms`` (used in eager mode and by torch.export) against ONNX Runtime's own
    multi-class ``NonMaxSuppression`` kernel on shared boxes."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from detector.export.wrapper import onnx_nms

    gen = torch.Generator().manual_seed(0)
    b, c, k = 2, 5, 60
    xy = torch.rand(b, k, 2, generator=gen) * 0.8
    wh = torch.rand(b, k, 2, generator=gen) * 0.3 + 0.02
    boxes = torch.cat((xy, xy + wh), dim=2)
    scores = torch.rand(b, c, k, generator=gen)
    iou, thresh = 0.4, 0.3
    graph = helper.make_graph(
        [
            helper.make_node(
                "NonMaxSuppression", ["boxes", "scores", "max", "iou", "thresh"], ["selected"]
            )
        ],
        "nms",
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [b, k, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [b, c, k]),
        ],
        [helper.make_tensor_value_info("selected", TensorProto.INT64, [None, 3])],
        initializer=[
            helper.make_tensor("max", TensorProto.INT64, [1], [max_per_class]),
            helper.make_tensor("iou", TensorProto.FLOAT, [1], [iou]),
            helper.make_tensor("thresh", TensorProto.FLOAT, [1], [thresh]),
        ],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(proto)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"boxes": boxes.numpy(), "scores": scores.numpy()})
    mine = onnx_nms(boxes, scores, max_per_class, iou, thresh).numpy()
    assert len(expected) == b * c if max_per_class == 1 else len(expected) > 2 * b * c
    np.testing.assert_array_equal(mine, expected)


def test_decoded_stage_sigmoid(tmp_path) -> None:
    model = _tiny_model("sigmoid", seed=1)
    options = ExportOptions(decode=True, num_verify_images=3, **POST)
    result = export_model(model, CLASSES, tmp_path, options, name="dec", log=None)
    assert result.passed
    sidecar = result.sidecar
    assert sidecar["stage"] == "decoded" and sidecar["scores"]["score_fn"] == "sigmoid"
    x = preprocess(generated_images(1, seed=3), SIZE)
    out = OnnxRunner(result.model_path)(x)
    wrapper = ExportWrapper(model, decode=True, **POST)
    with torch.no_grad():
        boxes, scores = wrapper(torch.from_numpy(x))
    np.testing.assert_allclose(out["boxes"], boxes.numpy(), atol=1e-5)
    np.testing.assert_allclose(out["scores"], scores.numpy(), atol=1e-5)


def test_image_size_override_and_torchscript_exporter(model, tmp_path) -> None:
    options = ExportOptions(
        image_size=(160, 128), nms=True, exporter="torchscript", num_verify_images=3, **POST
    )
    result = export_model(model, CLASSES, tmp_path, options, name="ts", log=None)
    assert result.passed
    assert result.sidecar["export"]["exporter"] == "torchscript"
    assert result.sidecar["input"]["shape"] == [1, 3, 160, 128]
    assert result.sidecar["model"]["image_size"] == [160, 128]


# ------------------------------------------------------------------------------ verification
def test_verification_catches_a_wrong_artifact(model, images, raw_export) -> None:
    imgs, _, _ = images
    runner = OnnxRunner(raw_export.model_path, raw_outputs=True)
    other = _tiny_model(seed=5)  # same architecture, other weights
    verdict = verify_artifact(runner, raw_export.sidecar, other, imgs)
    assert not verdict.passed
    assert any("differs from PyTorch" in f for f in verdict.failures)
    assert "FAIL" in verdict.summary()


def test_export_fails_loudly_when_verification_fails(model, tmp_path, monkeypatch) -> None:
    import dataclasses

    from detector.export import FORMATS

    def broken_runner(path, options):
        inner = OnnxRunner(path, raw_outputs=True)

        def run(x):
            out = dict(inner(x))
            out["box_deltas"] = out["box_deltas"] + 0.5
            return out

        return run

    entry = FORMATS["onnx"]
    monkeypatch.setitem(
        FORMATS, "onnx", dataclasses.replace(entry, runner=broken_runner, batch_size=lambda c: 1)
    )
    with pytest.raises(ExportError, match="verification FAILED"):
        export_model(model, CLASSES, tmp_path, ExportOptions(num_verify_images=2, **POST), log=None)
    assert (tmp_path / "model.onnx").is_file()  # left for inspection
    assert read_sidecar(tmp_path / "model.json")["verification"][0]["passed"] is False


# ---------------------------------------------------------------------------- early errors
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"format": "savedmodel"}, "unknown export format"),
        ({"format": "tflite", "dynamic_batch": True}, "does not support dynamic_batch=true"),
        ({"format": "executorch", "nms": True}, "does not support nms=true"),
        ({"format": "coreml", "nms": True}, "does not support nms=true"),
        ({"map_annotations": "/no/such.json"}, "no such file or folder"),
        ({"int8": True, "calibration": "synthetic", "quant_format": "qdqx"}, "quant_format"),
        ({"format": "coreml", "compute_precision": "int4"}, "compute_precision"),
        ({"int8": True}, "needs calibration images"),
        ({"int8": True, "calibration": "/no/such/folder"}, "no such file or folder"),
    ],
)
def test_unsupported_requests_fail_before_work(kwargs, message, tmp_path, monkeypatch) -> None:
    assert_fails_before_work(ExportOptions(**kwargs), message, tmp_path, monkeypatch)


def test_format_table_lists_every_format() -> None:
    table = format_table()
    for name in ("onnx", "tflite", "executorch", "coreml"):
        assert name in table
    assert check_request("onnx", nms=True, dynamic_batch=True).name == "onnx"


def test_every_registered_format_has_a_config_and_back() -> None:
    from detector.export import FORMATS

    yamls = sorted(f.stem for f in (REPO / "detector" / "conf" / "format").glob("*.yaml"))
    # format=web is the ONNX format (nms) wrapped in the web app by detector.web, not an entry
    assert sorted(FORMATS) == [name for name in yamls if name != "web"]
    for name, fmt in FORMATS.items():
        assert fmt.name == name and fmt.stages[0] == "raw"


def test_flat_options_build_the_one_config() -> None:
    from detector.export import ExportConfig, FormatConfig
    from detector.postprocess_config import PostprocessConfig

    flat = ExportOptions(
        format="tflite", opset=17, score_thresh=0.3, quant_exclude=("first_conv",), verify=False
    )
    nested = ExportConfig(
        format=FormatConfig(name="tflite", opset=17, quant_exclude=["first_conv"]),
        postprocess=PostprocessConfig(score_thresh=0.3),
        verify=False,
    )
    assert flat == nested
    with pytest.raises(ExportError, match="unknown export options"):
        ExportOptions(nmss=True)


def test_import_detector_export_is_cheap() -> None:
    code = "import sys, detector.export; assert 'torch' not in sys.modules, 'torch imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_missing_checkpoint_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ExportError, match=r"checkpoint=.*not found"):
        export_checkpoint(tmp_path / "nope.pt", tmp_path, ExportOptions(), log=None)


class _RunsCode:
    """Unpickling this runs ``os.system``: what a hostile ``.pt`` carries."""

    def __reduce__(self):
        return (os.system, ("echo PWNED",))


def _bad_checkpoints(folder: Path) -> dict[str, str]:
    """Bad ``.pt`` files and the reason their one-line error gives."""
    import pickle

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.pt").write_bytes(b"")
    torch.save({"weights": torch.zeros(3)}, folder / "other.pt")
    data = (folder / "other.pt").read_bytes()
    (folder / "truncated.pt").write_bytes(data[: len(data) // 2])
    (folder / "text.pt").write_text("not a checkpoint\n")
    torch.save({"model": _RunsCode(), "model_config": {}}, folder / "hostile.pt")
    (folder / "hostile_pickle.pt").write_bytes(pickle.dumps(_RunsCode()))
    save_checkpoint({"model": {}, "model_config": {}}, folder / "no_weights.pt")
    return {
        "no_weights.pt": "weights do not fit",
        "empty.pt": "empty file",
        "other.pt": "not a detector checkpoint",
        "truncated.pt": "truncated or corrupt",
        "text.pt": "not a PyTorch checkpoint",
        "hostile.pt": "refused",
        "hostile_pickle.pt": "refused",
    }


def test_bad_checkpoints_are_one_clear_line(tmp_path, capfd) -> None:
    for name, reason in _bad_checkpoints(tmp_path / "bad").items():
        path = tmp_path / "bad" / name
        with pytest.raises(ExportError) as info:
            export_checkpoint(path, tmp_path / "out", ExportOptions(), log=None)
        message = str(info.value)
        assert message.startswith(f"checkpoint={path}: ") and reason in message, message
        assert "\n" not in message and "weights_only" not in message, message
    assert "PWNED" not in capfd.readouterr().out  # nothing in the hostile files ran
    assert not (tmp_path / "out").exists()


def test_export_py_reports_a_bad_checkpoint_in_one_line(tmp_path) -> None:
    _bad_checkpoints(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("hostile.pt", "truncated.pt"):
        cmd = [sys.executable, str(REPO / "export.py"), f"checkpoint={name}", "hydra.run.dir=out"]
        proc = subprocess.run(
            cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"export.py: error: checkpoint={name}: ")
        assert "Traceback" not in proc.stderr and "weights_only" not in proc.stderr
        assert "PWNED" not in proc.stdout


# ------------------------------------------------------------------------------- export.py
@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    model = _tiny_model()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(
        {"model": model.state_dict(), "model_config": model.config.to_dict(), "classes": CLASSES},
        path,
    )
    return path


def _compose(overrides: list[str]):
    register_export_schemas()
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "detector" / "conf")):
        cfg = compose("export", overrides=overrides)
        with open_dict(cfg):
            cfg.pop("hydra", None)
        return cfg


def test_hydra_config_maps_to_options(tiny_checkpoint) -> None:
    cfg = _compose(
        [
            f"checkpoint={tiny_checkpoint}",
            "nms=true",
            "dynamic_batch=true",
            "image_size=[160,160]",
            "postprocess.score_thresh=0.3",
            "format.opset=17",
        ]
    )
    checkpoint, options, use_ema = options_from_hydra(cfg)
    assert checkpoint == str(tiny_checkpoint) and use_ema
    assert options.format.name == "onnx" and options.nms and options.dynamic_batch
    assert options.image_size == (160, 160) and options.postprocess.score_thresh == 0.3
    assert options.format.opset == 17 and options.stage == "nms"
    with pytest.raises(Exception, match="nmss"):
        _compose([f"checkpoint={tiny_checkpoint}", "nmss=true"])  # typo fails at composition
    _, options, _ = options_from_hydra(_compose([f"checkpoint={tiny_checkpoint}", "format=tflite"]))
    assert options.format.name == "tflite" and options.format.per_channel
    with pytest.raises(ExportError, match="does not support nms=true"):
        options_from_hydra(
            _compose([f"checkpoint={tiny_checkpoint}", "format=tflite", "nms=true"])
        )[1].check()


def test_export_py_writes_model_and_sidecar(tiny_checkpoint, tmp_path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, str(REPO / "export.py"), f"checkpoint={tiny_checkpoint}",
        "num_verify_images=3", f"hydra.run.dir={tmp_path}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "tiny.onnx").is_file()
    sidecar = json.loads((tmp_path / "tiny.json").read_text())
    assert sidecar["classes"] == CLASSES and sidecar["stage"] == "raw"
    assert sidecar["verification"][0]["passed"] is True
    assert "verification [fp32, onnxruntime, 3 images" in proc.stdout
    assert "PASS" in proc.stdout and "max abs diff vs PyTorch" in proc.stdout
    assert "% of PyTorch detections" in proc.stdout


def test_export_py_rejects_unsupported_format(tiny_checkpoint, tmp_path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, str(REPO / "export.py"), f"checkpoint={tiny_checkpoint}",
        "format=tflite", "dynamic_batch=true", f"hydra.run.dir={tmp_path}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "does not support dynamic_batch=true" in proc.stderr
    assert not list(tmp_path.glob("*.tflite"))


# ------------------------------------------------------------------------------------ int8
def test_int8_export_reports_agreement(model, tmp_path) -> None:
    start = time.perf_counter()
    options = ExportOptions(
        nms=True, int8=True, calibration="synthetic", num_calibration_images=8,
        num_verify_images=4, **POST,
    )  # fmt: skip
    lines: list[str] = []
    result = export_model(model, CLASSES, tmp_path, options, name="q", log=lines.append)
    elapsed = time.perf_counter() - start
    assert result.model_path.name == "q.onnx" and result.fp32_path.name == "q_fp32.onnx"
    fp32, int8 = result.verdicts
    assert fp32.precision == "fp32" and fp32.passed
    assert int8.precision == "int8" and int8.agreement is not None
    assert int8.max_abs_diff["class_logits"] > 0  # really quantized
    assert any("REPORT (int8" in line for line in lines)
    import onnx

    ops = {n.op_type for n in onnx.load(str(result.model_path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "NonMaxSuppression"} <= ops
    quant = result.sidecar["export"]["quantization"]
    assert quant["format"] == "QDQ" and quant["calibration"]["num_images"] == 8
    assert quant["exclude"] == ["outputs"]  # the default: the head's tail stays float
    graph = onnx.load(str(result.model_path)).graph
    producers = {o: n.op_type for n in graph.node for o in n.output}
    concat = [n for n in graph.node if n.op_type == "Concat"][:2]  # box_deltas, class_logits
    assert all(producers[i] == "Reshape" for n in concat for i in n.input)
    assert elapsed < 60, f"int8 export took {elapsed:.0f} s"


# --------------------------------------------------------------------- int8 accuracy (mAP)
class _Oracle(torch.nn.Module):
    """Raw outputs that decode to the ground truth of a dataset's images, taken in dataset order
    (one image per call): for every box the best-overlapping free anchor gets the box's exact
    deltas and a confident logit for its class; ``shift`` moves every box right by that fraction
    of its width (a worse detector with known damage)."""

    def __init__(self, model, records, *, shift: float = 0.0) -> None:
        super().__init__()
        from detector.box_ops import BoxCoder

        self.anchors, self.score_fn = model.anchors, "softmax"
        self.num_classes, self.coder = model.num_classes, BoxCoder()
        self.records, self.shift, self.calls = list(records), shift, 0

    def forward(self, images: torch.Tensor):
        from torchvision.ops import box_iou

        rec = self.records[self.calls]
        self.calls += 1
        a = self.anchors.shape[0]
        deltas = torch.zeros(1, a, 4)
        logits = torch.zeros(1, a, self.num_classes + 1)
        logits[0, :, 0] = 8.0
        scale = torch.tensor([rec["width"], rec["height"]] * 2, dtype=torch.float32)
        boxes = torch.as_tensor(rec["boxes"], dtype=torch.float32) / scale
        boxes[:, [0, 2]] += self.shift * (boxes[:, 2] - boxes[:, 0]).unsqueeze(1)
        ious = box_iou(boxes, self.anchors) if len(boxes) else torch.zeros(0, a)
        for i, label in enumerate(torch.as_tensor(rec["labels"]).tolist()):
            j = int(ious[i].argmax())
            ious[:, j] = -1.0
            deltas[0, j] = self.coder.encode(boxes[i : i + 1], self.anchors[j : j + 1])[0]
            logits[0, j, 0], logits[0, j, label] = 0.0, 8.0
        return deltas, logits


@pytest.fixture(scope="module")
def small_val(tmp_path_factory):
    """A 12-image synthetic validation split with the tiny model's classes."""
    from detector.data.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("synth")
    info = generate_synthetic(
        root, num_train=1, num_val=12, seed=3, classes=tuple(CLASSES), image_size=(96, 160)
    )
    return info["splits"]["val"]


def test_compare_map_matches_pycocotools(model, small_val, tmp_path) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from detector.export.accuracy import compare_map, load_eval_dataset
    from detector.export.sidecar import build_sidecar

    dataset = load_eval_dataset(small_val["ann_file"])
    records = dataset.records()
    sidecar = build_sidecar(
        model,
        CLASSES,
        file="x",
        format="onnx",
        stage="raw",
        postprocess={**POST, "clip_boxes": True},
    )
    artifact = _Oracle(model, records, shift=0.2)
    seen: list[dict[str, np.ndarray]] = []

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        deltas, logits = artifact(torch.from_numpy(x))
        out = {"box_deltas": deltas.numpy(), "class_logits": logits.numpy()}
        rec = records[artifact.calls - 1]
        seen.extend(detections_from_outputs(out, sidecar, [(rec["height"], rec["width"])]))
        return out

    result = compare_map(run, sidecar, _Oracle(model, records), dataset, source="val", max_drop=1.5)
    assert result.num_images == 12 and result.num_boxes == sum(len(r["labels"]) for r in records)
    assert result.reference["mAP"] > 0.95  # the oracle is the ground truth
    assert result.artifact["mAP"] < result.reference["mAP"] - 0.1  # shifted boxes
    for k in ("mAP", "mAP50"):
        want = 100 * (result.artifact[k] - result.reference[k])
        assert result.change_points[k] == pytest.approx(want, abs=1e-3)
    assert not result.passed and "COCO mAP drops by" in result.failures[0]

    gt = COCO(str(small_val["ann_file"]))
    dets = [
        {"image_id": int(r["image_id"]), "category_id": int(lab), "score": float(s),
         "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
        for r, d in zip(records, seen)
        for b, s, lab in zip(d["boxes"], d["scores"], d["labels"])
    ]  # fmt: skip
    ev = COCOeval(gt, gt.loadRes(dets), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert result.artifact["mAP"] == pytest.approx(ev.stats[0], abs=1e-6)
    assert result.artifact["mAP50"] == pytest.approx(ev.stats[1], abs=1e-6)


def test_int8_export_reports_map_change(model, small_val, tmp_path) -> None:
    options = ExportOptions(
        int8=True, calibration="synthetic", num_calibration_images=4,
        verify_images=str(small_val["image_dir"]), num_verify_images=4,
        int8_max_map_drop=100.0, quant_exclude=("first_conv",), **POST,
    )  # fmt: skip
    lines: list[str] = []
    result = export_model(model, CLASSES, tmp_path, options, name="q", log=lines.append)
    fp32, int8 = result.verdicts
    assert fp32.map_change is None and int8.map_change is not None
    change = int8.map_change
    assert change["num_images"] == 12 and change["source"].endswith("annotations.json")
    assert set(change["change_points"]) == {"mAP", "mAP50"}
    assert change["max_drop"] == 100.0 and change["passed"]
    stored = read_sidecar(result.sidecar_path)["verification"][1]["map_change"]
    assert stored["change_points"] == change["change_points"]
    assert any("COCO accuracy (PyTorch fp32 -> int8 artifact" in line for line in lines)
    quant = result.sidecar["export"]["quantization"]
    assert quant["exclude"] == ["first_conv"] and quant["format"] == "QDQ"


def test_quantization_options_shape_the_graph(model) -> None:
    import onnx

    from detector.export import QuantizationConfig
    from detector.export.onnx_format import export_graph
    from detector.export.onnx_quantize import excluded_nodes, quantize_onnx
    from detector.export.wrapper import RAW_NAMES, fold_batchnorm

    net, _ = export_graph(
        fold_batchnorm(_tiny_model()), (torch.rand(1, 3, *SIZE),), ["images"], list(RAW_NAMES)
    )
    convs = [n.name for n in net.graph.node if n.op_type == "Conv"]
    assert excluded_nodes(net, ["first_conv"]) == [convs[0]]
    predictors = excluded_nodes(net, ["predictors"])
    outputs = excluded_nodes(net, ["outputs"])
    assert len(set(predictors) & set(convs)) == 12  # 6 levels x (box, class)
    assert not set(outputs) & set(convs) and set(outputs) < set(predictors)
    with pytest.raises(ExportError, match="neither a group"):
        excluded_nodes(net, ["no_such_node"])

    calibration = [preprocess([im], SIZE) for im in generated_images(2, seed=1)]
    q = quantize_onnx(net, calibration, QuantizationConfig(quant_exclude=["first_conv"]))
    first = next(n for n in q.graph.node if n.op_type == "Conv")
    producers = {o: n.op_type for n in q.graph.node for o in n.output}
    assert first.name == convs[0] and producers.get(first.input[1]) is None  # float weight
    later = [n for n in q.graph.node if n.op_type == "Conv"][1]
    assert producers[later.input[1]] == "DequantizeLinear"
    qop = quantize_onnx(
        net, calibration, QuantizationConfig(quant_format="qoperator", quant_exclude=[])
    )
    ops = {n.op_type for n in qop.graph.node}
    assert "QLinearConv" in ops and "Conv" not in ops
    with pytest.raises(ExportError, match="unknown quant_format"):
        quantize_onnx(net, calibration, QuantizationConfig(quant_format="qdqx"))
    assert isinstance(q, onnx.ModelProto)
