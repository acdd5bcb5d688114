"""Our ``face`` anchors and box decoding against a real face SSD: Ultra-Light Slim-320.

Assets (``../shared/data/face_ultralight_slim320``, see ``PROVENANCE.md``): the Caffe model
(``slim-320.prototxt`` + ``.caffemodel``), four photos, OpenCV 4.11's raw outputs on them
(``opencv_raw_outputs.npz``: softmax scores ``[4420, 2]`` and undecoded regressions ``[4420, 4]``)
and the faces decoded from those outputs by an independent implementation
(``opencv_reference_faces.json``, score > 0.7, NMS 0.3, Ultra-Light's clamped priors).

1. The network runs in OpenCV's DNN module (``readNetFromCaffe`` where OpenCV still has it; OpenCV
   5 dropped the Caffe importer, so otherwise the Caffe files are converted to ONNX by
   ``bench/face.py`` and read with ``readNetFromONNX``) and its raw outputs must equal OpenCV 4.11's.
2. Those outputs are decoded with OUR code (``face`` anchor preset, :class:`BoxCoder` with weights
   10/10/5/5, torchvision NMS) and every reference face must be found with IoU >= 0.95.
3. The ``face`` anchors are compared with Ultra-Light's prior rule, written out here.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou, nms

from detector.anchors import build_anchor_generator
from detector.box_ops import BoxCoder, xyxy_to_cxcywh
from detector.runtime.numpy_ops import decode_deltas

cv2 = pytest.importorskip("cv2")

REPO = Path(__file__).resolve().parents[1]
FEATURE_SHAPES = [(30, 40), (15, 20), (8, 10), (4, 5)]  # 320x240 at strides 8/16/32/64
IMAGE_SIZE = (240, 320)  # (H, W)
MIN_IOU = 0.95


def _bench_face():
    if "bench_face" in sys.modules:
        return sys.modules["bench_face"]
    spec = importlib.util.spec_from_file_location("bench_face", REPO / "bench" / "face.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_face"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ul_dir(shared_data: Path) -> Path:
    path = shared_data / "face_ultralight_slim320"
    if not (path / "slim-320.caffemodel").is_file():
        pytest.skip(f"Ultra-Light Slim-320 not found in {path}")
    return path


@pytest.fixture(scope="module")
def reference(ul_dir: Path) -> dict:
    return json.loads((ul_dir / "opencv_reference_faces.json").read_text())


@pytest.fixture(scope="module")
def opencv_outputs(ul_dir: Path, reference: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{image name: (scores [4420, 2], regressions [4420, 4])}`` from OpenCV's DNN module, with
    Ultra-Light's preprocessing: resize to 320x240, RGB, (x - 127) / 128."""
    proto, weights = ul_dir / "slim-320.prototxt", ul_dir / "slim-320.caffemodel"
    if hasattr(cv2.dnn, "readNetFromCaffe"):
        net = cv2.dnn.readNetFromCaffe(str(proto), str(weights))
    else:
        onnx_model = _bench_face().ultralight_onnx(proto, weights)
        net = cv2.dnn.readNetFromONNX(np.frombuffer(onnx_model.SerializeToString(), np.uint8))
    out = {}
    for name in reference["images"]:
        bgr = cv2.imread(str(ul_dir / "images" / name))
        assert bgr is not None, name
        rgb = cv2.cvtColor(cv2.resize(bgr, (320, 240)), cv2.COLOR_BGR2RGB)
        net.setInput(cv2.dnn.blobFromImage(rgb, 1.0 / 128.0, (320, 240), (127, 127, 127)))
        scores, regressions = net.forward(["scores", "boxes"])
        out[name] = (scores.reshape(-1, 2), regressions.reshape(-1, 4))
    return out


def _ultralight_priors_cxcywh(clamp: bool) -> np.ndarray:
    """Ultra-Light's prior rule, as documented (in its demo and the reference's meta): per stride
    8/16/32/64 a grid of ceil(320 / s) x ceil(240 / s) cells, row by row, centres
    ((i + 0.5) / (320 / s), (j + 0.5) / (240 / s)), one prior per min box m of the level, size
    (m / 320, m / 240); optionally clamped to [0, 1] in this cx, cy, w, h form."""
    width, height = 320, 240
    min_boxes = [[10, 16, 24], [32, 48], [64, 96], [128, 192, 256]]
    priors = []
    for stride, boxes in zip([8, 16, 32, 64], min_boxes):
        cols, rows = math.ceil(width / stride), math.ceil(height / stride)
        for j in range(rows):
            for i in range(cols):
                for m in boxes:
                    priors.append(
                        [
                            (i + 0.5) / (width / stride),
                            (j + 0.5) / (height / stride),
                            m / width,
                            m / height,
                        ]
                    )
    p = np.asarray(priors, dtype=np.float64)
    return np.clip(p, 0.0, 1.0) if clamp else p


def _our_anchors() -> torch.Tensor:
    return build_anchor_generator("face").generate(FEATURE_SHAPES, IMAGE_SIZE)


# ---------------------------------------------------------------------------------- anchors
def test_face_anchors_equal_ultralight_priors_where_not_clamped() -> None:
    ours = xyxy_to_cxcywh(_our_anchors().double()).numpy()
    clamped = _ultralight_priors_cxcywh(clamp=True)
    raw = _ultralight_priors_cxcywh(clamp=False)
    assert ours.shape == clamped.shape == (4420, 4)
    unclamped = np.all(raw == clamped, axis=1)
    diff = np.abs(ours - clamped)
    print(
        f"\nface anchors vs Ultra-Light priors: {unclamped.sum()} of 4420 unclamped, max diff "
        f"{diff[unclamped].max():.2e}; {(~unclamped).sum()} clamped"
    )
    assert diff[unclamped].max() < 1e-6
    # Clamping touches only the 256 px priors (height 256/240 > 1), one per cell of the last level.
    assert (~unclamped).sum() == 4 * 5
    assert np.abs(ours[~unclamped] - raw[~unclamped]).max() < 1e-6  # ours = the unclamped rule
    assert np.allclose(ours[~unclamped, 3], 256 / 240) and np.all(clamped[~unclamped, 3] == 1.0)


def test_face_model_has_ultralight_feature_maps_and_anchors() -> None:
    bench = _bench_face()
    model, _ = bench.face_model_config()
    assert [tuple(s) for s in model.feature_shapes] == FEATURE_SHAPES
    assert tuple(model.image_size) == IMAGE_SIZE
    assert torch.equal(model.anchors, _our_anchors())


# ---------------------------------------------------------------------- OpenCV raw outputs
def test_opencv_raw_outputs_equal_opencv_411(ul_dir: Path, opencv_outputs: dict) -> None:
    raw = np.load(ul_dir / "opencv_raw_outputs.npz")
    worst = 0.0
    for name, (scores, regressions) in opencv_outputs.items():
        key = name.replace(".", "_")
        ref_scores, ref_boxes = raw[f"{key}__scores"], raw[f"{key}__boxes"]
        np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=1e-4, err_msg=name)
        np.testing.assert_allclose(regressions, ref_boxes, rtol=1e-4, atol=1e-4, err_msg=name)
        worst = max(worst, float(np.abs(regressions - ref_boxes).max()))
    print(f"\nOpenCV {cv2.__version__} vs 4.11 raw outputs: max regression diff {worst:.2e}")


def test_converted_graph_matches_torch_and_counts_mult_adds(ul_dir: Path) -> None:
    """The ONNX graph the benchmark builds, executed node by node with torch ops, gives OpenCV's
    outputs; its convolutions' mult-adds (flop counter / 2) equal the prototxt count."""
    from torch.nn import functional as F
    from torch.utils.flop_counter import FlopCounterMode

    bench = _bench_face()
    proto, weights = ul_dir / "slim-320.prototxt", ul_dir / "slim-320.caffemodel"
    model = bench.ultralight_onnx(proto, weights)
    from onnx import numpy_helper

    values = {
        i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in model.graph.initializer
    }
    bgr = cv2.imread(str(ul_dir / "images" / "2.jpg"))
    blob = cv2.dnn.blobFromImage(bgr, 1 / 128, (320, 240), (127, 127, 127), swapRB=True)
    values[model.graph.input[0].name] = torch.from_numpy(blob)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        for node in model.graph.node:
            attrs = {a.name: a for a in node.attribute}
            x = [values[n] for n in node.input]
            if node.op_type == "Conv":
                pads = list(attrs["pads"].ints)
                y = F.conv2d(
                    x[0],
                    x[1],
                    x[2] if len(x) > 2 else None,
                    stride=tuple(attrs["strides"].ints),
                    padding=(pads[0], pads[1]),
                    groups=attrs["group"].i,
                )
            elif node.op_type == "Relu":
                y = torch.relu(x[0])
            elif node.op_type == "Transpose":
                y = x[0].permute(*attrs["perm"].ints)
            elif node.op_type == "Reshape":
                y = x[0].reshape(*x[1].tolist())
            elif node.op_type == "Concat":
                y = torch.cat(x, dim=attrs["axis"].i)
            elif node.op_type == "Softmax":
                y = torch.softmax(x[0], dim=attrs["axis"].i)
            else:
                raise AssertionError(node.op_type)
            values[node.output[0]] = y
    counts = bench.ultralight_counts(proto, weights)
    assert counter.get_total_flops() // 2 == counts["mult_adds"]
    params = sum(int(t.numel()) for n, t in values.items() if n.endswith((".weight", ".bias")))
    assert params == counts["parameters"]
    raw = np.load(ul_dir / "opencv_raw_outputs.npz")
    np.testing.assert_allclose(values["scores"][0].numpy(), raw["2_jpg__scores"], atol=1e-4)
    np.testing.assert_allclose(
        values["boxes"][0].numpy(), raw["2_jpg__boxes"], atol=1e-4, rtol=1e-4
    )


# ----------------------------------------------------------------- decoding with our code
def _decode_faces(scores: np.ndarray, regressions: np.ndarray, anchors: torch.Tensor, wh):
    meta_thresh, meta_nms = 0.7, 0.3
    boxes = BoxCoder((10.0, 10.0, 5.0, 5.0)).decode(torch.from_numpy(regressions), anchors)
    w, h = wh
    boxes = boxes * torch.tensor([w, h, w, h], dtype=boxes.dtype)
    face = torch.from_numpy(scores[:, 1])
    keep = torch.nonzero(face > meta_thresh).squeeze(1)
    keep = keep[nms(boxes[keep], face[keep], meta_nms)]
    return boxes[keep], face[keep]


def test_our_decoding_finds_every_reference_face(opencv_outputs: dict, reference: dict) -> None:
    meta = reference["meta"]["decode_used_here"]
    assert "score>0.7" in meta and "IoU 0.3" in meta and "0.1" in meta and "0.2" in meta
    anchors = _our_anchors()
    min_iou, total, worst_image, max_px = 1.0, 0, "", 0.0
    for name, (scores, regressions) in opencv_outputs.items():
        entry = reference["images"][name]
        ref = entry["faces"]
        boxes, face_scores = _decode_faces(
            scores, regressions, anchors, (entry["width"], entry["height"])
        )
        # The torch-free runtime decodes identically.
        np_boxes = decode_deltas(regressions, anchors.numpy(), (10, 10, 5, 5), 100.0)
        full = BoxCoder((10.0, 10.0, 5.0, 5.0)).decode(torch.from_numpy(regressions), anchors)
        assert np.abs(np_boxes - full.numpy()).max() < 1e-5
        assert len(boxes) == len(ref), f"{name}: {len(boxes)} faces, reference {len(ref)}"
        ref_boxes = torch.tensor([f["box_px_xyxy"] for f in ref], dtype=torch.float32)
        ref_scores = torch.tensor([f["score"] for f in ref])
        iou = box_iou(ref_boxes, boxes)
        best, idx = iou.max(dim=1)
        assert len(set(idx.tolist())) == len(ref), f"{name}: two reference faces share a box"
        assert torch.allclose(face_scores[idx], ref_scores, atol=6e-4), name
        max_px = max(max_px, float((boxes[idx] - ref_boxes).abs().max()))
        if best.min() < min_iou:
            min_iou, worst_image = float(best.min()), name
        total += len(ref)
        assert best.min() >= MIN_IOU, f"{name}: a reference face matched with IoU {best.min():.4f}"
    print(
        f"\nreference faces found: {total}/{total}, min IoU {min_iou:.4f} ({worst_image}), "
        f"max corner difference {max_px:.3f} px (reference rounded to 0.1 px)"
    )


def test_clamping_is_the_only_prior_difference(opencv_outputs: dict, reference: dict) -> None:
    """Decoding with Ultra-Light's clamped priors instead reproduces the reference to its
    0.1 px rounding: what differs from ours is only the clamping."""
    p = torch.from_numpy(_ultralight_priors_cxcywh(clamp=True)).float()
    clamped = torch.cat([p[:, :2] - p[:, 2:] / 2, p[:, :2] + p[:, 2:] / 2], dim=1)
    for name, (scores, regressions) in opencv_outputs.items():
        entry = reference["images"][name]
        boxes, _ = _decode_faces(scores, regressions, clamped, (entry["width"], entry["height"]))
        ref_boxes = torch.tensor([f["box_px_xyxy"] for f in entry["faces"]])
        assert len(boxes) == len(ref_boxes)
        idx = box_iou(ref_boxes, boxes).argmax(1)
        assert (boxes[idx] - ref_boxes).abs().max() <= 0.051, name
