"""Our face model against the Ultra-Light face detector (Slim-320): size, mult-adds, CPU latency.

    python bench/face.py                          # the shipped face model (checkpoint=face)
    python bench/face.py --checkpoint outputs/face/<run>/best.pt
    python bench/face.py --checkpoint none        # random weights: size and speed only
    python bench/face.py --quick                  # few iterations (smoke test, figures meaningless)

The reference is Ultra-Light-Fast-Generic-Face-Detector-1MB, Slim-320 (input 320x240), from
``../shared/data/face_ultralight_slim320`` (``slim-320.prototxt`` + ``slim-320.caffemodel``). OpenCV
5 no longer reads Caffe models, so this script converts the two files into an equivalent ONNX graph
(:func:`ultralight_onnx`: a small reader for the prototxt text and the caffemodel's protobuf wire
format, one ONNX node per Caffe layer; no Caffe or ``caffe_pb2`` needed) and runs that in OpenCV's
DNN module; with an OpenCV that still has ``readNetFromCaffe`` the Caffe files are read directly.
``tests/test_face_reference.py`` checks the converted graph's raw outputs against OpenCV 4.11's
(``opencv_raw_outputs.npz``).

Our model is the shipped face detector (the built-in checkpoint ``face``,
``detector/weights/face.pt``, trained by ``experiment=face_mask``) or ``--checkpoint``; with
``--checkpoint none``, the face preset with random weights: ``conf/experiment/face.yaml`` when it
exists, else :data:`FACE_MODEL` (SSDLite MobileNetV1 alpha 0.25 at 240x320, 4 levels from
Conv2d_5/11/13 plus one extra layer, ``face`` anchors: 4420, as Ultra-Light's priors); size and
speed do not depend on the weights.

Accuracy (trained weights only), both models run by ONNX Runtime on the same images, each with its
own preprocessing at 320x240, and the same NumPy decode and NMS (IoU 0.3, Ultra-Light's):

* on the held-out split of ``face_mask`` (``../shared/data/datasets/face_mask``, or ``--data``): the
  ``val`` split of ``experiment=face_mask`` (seeded 20%, never trained on), three mask states
  merged into ``face``. AP at IoU 0.5 by the project's VOC evaluator (all-point area, difficult
  boxes ignored) over detections scoring > 0.01; recall and precision of the detections scoring
  > 0.7 (the demo threshold);
* on Ultra-Light's four photos (``images/*.jpg``, no ground truth): how many of the 117 faces
  Ultra-Light finds there (``opencv_reference_faces.json``, OpenCV 4.11 on its Caffe model, score
  > 0.7) are also found by each model at score > 0.7 (IoU >= 0.5, one-to-one, greedy by the
  reference's score).

Columns:

* parameters; fp32 weights in MB (parameters x 4 bytes, 1 MB = 1e6 bytes) and the file sizes;
* mult-adds of one forward pass: ours by ``torch.utils.flop_counter`` (FLOPs / 2), Ultra-Light
  counted from the prototxt layer shapes here (:func:`ultralight_mult_adds`, convolutions only,
  bias adds not counted, the same convention as the flop counter); OpenCV's
  ``Net.getFLOPS / 2`` is printed next to it for comparison;
* CPU latency (ms), batch 1, ``--threads`` threads. Network rows take a preprocessed blob;
  end-to-end rows take a 480x640 RGB ``uint8`` face photo (``images/1.jpg`` resized, or
  ``--image``) and return pixel boxes: resize + normalise, network, decode + NMS (both models with
  the same NumPy decode and NMS from :mod:`detector.runtime.numpy_ops`, score > 0.7, NMS IoU 0.3,
  top 200 candidates, as Ultra-Light's demo).

Measurement as ``bench/latency.py``: each row runs in its own process (ONNX Runtime, OpenCV and
PyTorch thread pools in one process disturb each other), set up and warmed up once, then timed in
blocks of ``--iters`` consecutive calls, one row after the other, for ``--rounds`` rounds; the
table gives the median of each row's least-disturbed block (load from other processes only ever
adds time) and, in parentheses, the median of all its calls. Ratios are ms / Ultra-Light's ms in
OpenCV DNN (network rows against its network row, end-to-end rows against its end-to-end row).

NMS load: a randomly initialised face model scores anchors arbitrarily; its background logit bias
is shifted so that as many anchors pass the 0.7 threshold on the benchmark image as for Ultra-Light
(a trained-like NMS load). ``--checkpoint`` keeps the trained weights as they are.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import WorkerProcess, block_stats, cpu_name

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DETECTOR_SHARED_DATA") or REPO.parent / "shared" / "data")
ULTRALIGHT_DIR = SHARED / "face_ultralight_slim320"
FACE_YAML = REPO / "detector" / "conf" / "experiment" / "face.yaml"

# Our face model when conf/experiment/face.yaml does not exist (the one place these are written).
FACE_MODEL: dict[str, Any] = {
    "num_classes": 1,
    "alpha": 0.25,
    "image_size": (240, 320),
    "head": "ssdlite",
    "anchors": "face",
    "source_layers": (5, 11, 13),
    "extra_depths": (256,),
}

# Ultra-Light's input and post-processing (its OpenCV demo): resize to 320x240 (W x H), RGB,
# (x - 127) / 128; variances 0.1 / 0.2; score > 0.7, greedy NMS IoU 0.3 over the best 200.
ULTRALIGHT_SIZE = (240, 320)  # (H, W)
ULTRALIGHT_MEAN = 127.0
ULTRALIGHT_SCALE = 1.0 / 128.0
SCORE_THRESH = 0.7
NMS_THRESH = 0.3
TOPK = 200


# ============================================================================ Caffe -> ONNX
def read_prototxt(path: str | Path) -> list[dict[str, Any]]:
    """The ``layer { ... }`` blocks of a Caffe prototxt as nested dicts.

    Every key maps to a list of its values (fields may repeat); nested messages are dicts.
    Only what deploy prototxts use: ``key: value`` (numbers, identifiers, quoted strings),
    ``key { ... }`` blocks and ``#`` comments.
    """
    text = re.sub(r"#[^\n]*", "", Path(path).read_text(encoding="utf-8"))
    tokens = re.findall(r'"[^"]*"|[{}:]|[^\s{}:"]+', text)
    root: dict[str, list] = {}
    stack = [root]
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == "}":
            stack.pop()
            i += 1
            continue
        if i + 1 < len(tokens) and tokens[i + 1] == ":" and tokens[i + 2] != "{":
            value: Any = tokens[i + 2]
            if value.startswith('"'):
                value = value[1:-1]
            else:
                # numbers become int/float; identifiers (enums, true/false) stay strings
                if re.fullmatch(r"[-+]?\d+", value):
                    value = int(value)
                elif re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", value):
                    value = float(value)
            stack[-1].setdefault(tok, []).append(value)
            i += 3
            continue
        j = i + 1 + (tokens[i + 1] == ":")  # "key {" or "key: {"
        if tokens[j] != "{":
            raise ValueError(f"{path}: cannot parse near {tokens[i : j + 1]}")
        child: dict[str, list] = {}
        stack[-1].setdefault(tok, []).append(child)
        stack.append(child)
        i = j + 1
    if len(stack) != 1:
        raise ValueError(f"{path}: unbalanced braces")
    return root.get("layer", [])


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes):
    """``(field number, wire type, value)`` of one protobuf message (wire format)."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


def _blob(buf: bytes) -> np.ndarray:
    """A Caffe ``BlobProto``: shape (field 7, ``BlobShape.dim`` = 1) or the legacy
    num/channels/height/width (1-4), float data (5) or double data (8), packed or not."""
    data: list[np.ndarray] = []
    dims: list[int] = []
    legacy = {}
    for field, wire, value in _fields(buf):
        if field == 5:
            data.append(np.frombuffer(value, "<f4") if wire in (2, 5) else np.empty(0, "<f4"))
        elif field == 8:
            data.append(np.frombuffer(value, "<f8").astype(np.float32))
        elif field == 7:
            for f, w, v in _fields(value):
                if f == 1 and w == 2:
                    pos = 0
                    while pos < len(v):
                        d, pos = _varint(v, pos)
                        dims.append(d)
                elif f == 1:
                    dims.append(v)
        elif field in (1, 2, 3, 4) and wire == 0:
            legacy[field] = value
    array = np.concatenate(data) if data else np.empty(0, np.float32)
    if not dims and legacy:
        dims = [legacy.get(k, 1) for k in (1, 2, 3, 4)]
    return array.reshape(dims) if dims else array


def read_caffemodel(path: str | Path) -> dict[str, list[np.ndarray]]:
    """The weight blobs of every layer of a binary ``.caffemodel``, by layer name.

    ``NetParameter.layer`` is field 100 (``LayerParameter``: name 1, blobs 7); the legacy
    ``layers`` field 2 (``V1LayerParameter``: name 4, blobs 6) is read too.
    """
    buf = Path(path).read_bytes()
    out: dict[str, list[np.ndarray]] = {}
    for field, wire, value in _fields(buf):
        if wire != 2 or field not in (100, 2):
            continue
        name_field, blob_field = (1, 7) if field == 100 else (4, 6)
        name, blobs = None, []
        for f, w, v in _fields(value):
            if f == name_field and w == 2:
                name = v.decode("utf-8")
            elif f == blob_field and w == 2:
                blobs.append(_blob(v))
        if name is not None and blobs:
            out[name] = blobs
    return out


def _one(params: dict[str, list], key: str, default: Any) -> Any:
    return params.get(key, [default])[0]


def _conv_geometry(p: dict[str, list]) -> dict[str, Any]:
    """Kernel, stride, pad, dilation (each ``(h, w)``), group and outputs of a
    ``convolution_param``."""

    def pair(name: str, default: int) -> tuple[int, int]:
        if f"{name}_h" in p or f"{name}_w" in p:
            return (_one(p, f"{name}_h", default), _one(p, f"{name}_w", default))
        v = _one(p, name if name != "kernel" else "kernel_size", default)
        return (v, v)

    return {
        "kernel": pair("kernel", 1),
        "stride": pair("stride", 1),
        "pad": pair("pad", 0),
        "dilation": (_one(p, "dilation", 1),) * 2,
        "group": _one(p, "group", 1),
        "num_output": _one(p, "num_output", 0),
        "bias": str(_one(p, "bias_term", "true")).lower() != "false",
    }


def ultralight_onnx(prototxt: str | Path, caffemodel: str | Path, opset: int = 13):
    """An ``onnx.ModelProto`` computing what the Caffe net computes.

    Supports the layer types of Ultra-Light's deploy prototxts: Input, Convolution, ReLU,
    Permute, Reshape, Concat, Softmax. Outputs keep the Caffe top names (``boxes``, ``scores``).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    layers = read_prototxt(prototxt)
    weights = read_caffemodel(caffemodel)
    nodes, inits, inputs = [], [], []
    produced: set[str] = set()
    for layer in layers:
        name, kind = _one(layer, "name", ""), _one(layer, "type", "")
        bottoms, tops = layer.get("bottom", []), layer.get("top", [])
        if kind == "Input":
            shape = [int(d) for d in layer["input_param"][0]["shape"][0]["dim"]]
            inputs.append(helper.make_tensor_value_info(tops[0], TensorProto.FLOAT, shape))
        elif kind == "Convolution":
            g = _conv_geometry(layer["convolution_param"][0])
            blobs = weights[name]
            w = blobs[0].astype(np.float32)
            inits.append(numpy_helper.from_array(w, f"{name}.weight"))
            conv_in = [bottoms[0], f"{name}.weight"]
            if g["bias"] and len(blobs) > 1:
                inits.append(numpy_helper.from_array(blobs[1].reshape(-1), f"{name}.bias"))
                conv_in.append(f"{name}.bias")
            (ph, pw) = g["pad"]
            nodes.append(
                helper.make_node(
                    "Conv",
                    conv_in,
                    [tops[0]],
                    name=name,
                    kernel_shape=list(g["kernel"]),
                    strides=list(g["stride"]),
                    pads=[ph, pw, ph, pw],
                    dilations=list(g["dilation"]),
                    group=g["group"],
                )
            )
        elif kind == "ReLU":
            nodes.append(helper.make_node("Relu", bottoms[:1], tops[:1], name=name))
        elif kind == "Permute":
            order = [int(v) for v in layer["permute_param"][0]["order"]]
            nodes.append(
                helper.make_node("Transpose", bottoms[:1], tops[:1], name=name, perm=order)
            )
        elif kind == "Reshape":
            dims = [int(v) for v in layer["reshape_param"][0]["shape"][0]["dim"]]
            inits.append(numpy_helper.from_array(np.array(dims, np.int64), f"{name}.shape"))
            nodes.append(
                helper.make_node("Reshape", [bottoms[0], f"{name}.shape"], tops[:1], name=name)
            )
        elif kind == "Concat":
            axis = int(_one(layer.get("concat_param", [{}])[0], "axis", 1))
            nodes.append(helper.make_node("Concat", bottoms, tops[:1], name=name, axis=axis))
        elif kind == "Softmax":
            axis = int(_one(layer.get("softmax_param", [{}])[0], "axis", 1))
            nodes.append(helper.make_node("Softmax", bottoms[:1], tops[:1], name=name, axis=axis))
        else:
            raise ValueError(f"layer {name!r}: unsupported Caffe layer type {kind!r}")
        produced.update(tops)
    consumed = {b for layer in layers for b in layer.get("bottom", [])}
    out_names = [t for layer in layers for t in layer.get("top", []) if t not in consumed]
    shapes = ultralight_counts(prototxt, caffemodel)["output_shapes"]
    outputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, list(shapes[n])) for n in out_names
    ]
    graph = helper.make_graph(nodes, "ultralight", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def ultralight_counts(prototxt: str | Path, caffemodel: str | Path) -> dict[str, int]:
    """Parameters (every weight blob) and mult-adds of one forward pass, counted here from the
    prototxt layer definitions with the input shape they declare.

    Mult-adds: each convolution output element costs ``(C_in / group) * k_h * k_w``
    multiply-adds (bias adds not counted, as ``torch.utils.flop_counter``); ReLU, Permute,
    Reshape, Concat and Softmax cost none.
    """
    layers = read_prototxt(prototxt)
    weights = read_caffemodel(caffemodel)
    shapes: dict[str, tuple[int, ...]] = {}
    madds = 0
    for layer in layers:
        kind = _one(layer, "type", "")
        bottoms, tops = layer.get("bottom", []), layer.get("top", [])
        if kind == "Input":
            shapes[tops[0]] = tuple(int(d) for d in layer["input_param"][0]["shape"][0]["dim"])
        elif kind == "Convolution":
            g = _conv_geometry(layer["convolution_param"][0])
            n, c, h, w = shapes[bottoms[0]]
            (kh, kw), (sh, sw), (ph, pw) = g["kernel"], g["stride"], g["pad"]
            dh, dw = g["dilation"]
            oh = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
            ow = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
            co = g["num_output"]
            madds += n * co * oh * ow * (c // g["group"]) * kh * kw
            shapes[tops[0]] = (n, co, oh, ow)
        elif kind == "Permute":
            order = [int(v) for v in layer["permute_param"][0]["order"]]
            shapes[tops[0]] = tuple(shapes[bottoms[0]][k] for k in order)
        elif kind == "Reshape":
            dims = [int(v) for v in layer["reshape_param"][0]["shape"][0]["dim"]]
            total = int(np.prod(shapes[bottoms[0]]))
            known = int(np.prod([d for d in dims if d > 0]))
            shapes[tops[0]] = tuple(d if d > 0 else total // known for d in dims)
        elif kind == "Concat":
            axis = int(_one(layer.get("concat_param", [{}])[0], "axis", 1))
            first = list(shapes[bottoms[0]])
            first[axis] = sum(shapes[b][axis] for b in bottoms)
            shapes[tops[0]] = tuple(first)
        else:  # ReLU, Softmax: shape unchanged
            shapes[tops[0]] = shapes[bottoms[0]]
    params = sum(int(b.size) for blobs in weights.values() for b in blobs)
    return {"parameters": params, "mult_adds": madds, "output_shapes": shapes}


def ultralight_priors(image_size: tuple[int, int] = ULTRALIGHT_SIZE) -> np.ndarray:
    """Ultra-Light's priors as its demo builds them, clamped to ``[0, 1]`` in ``cx, cy, w, h``
    form, returned as normalised ``xyxy`` ``[4420, 4]`` (used to decode its outputs here)."""
    h, w = image_size
    min_boxes = ((10, 16, 24), (32, 48), (64, 96), (128, 192, 256))
    rows = []
    for stride, sizes in zip((8, 16, 32, 64), min_boxes):
        fh, fw = -(-h // stride), -(-w // stride)
        for j in range(fh):
            for i in range(fw):
                for s in sizes:
                    rows.append(((i + 0.5) * stride / w, (j + 0.5) * stride / h, s / w, s / h))
    p = np.clip(np.asarray(rows, dtype=np.float64), 0.0, 1.0)
    xyxy = np.concatenate([p[:, :2] - p[:, 2:] / 2, p[:, :2] + p[:, 2:] / 2], axis=1)
    return xyxy.astype(np.float32)


# ================================================================================== models
def face_model_config(checkpoint: str | None = None):
    """``(model, source)``: the face model (random weights, eval mode) from
    ``conf/experiment/face.yaml`` if it exists, else :data:`FACE_MODEL`; or a checkpoint."""
    import torch

    if checkpoint:
        from detector.engine.checkpoint import load_detector

        model, _ = load_detector(checkpoint)
        return model.eval(), checkpoint
    torch.manual_seed(0)
    if FACE_YAML.is_file():
        from detector.config import model_config_from
        from detector.models import build_ssd
        from detector.summary import compose_config

        spec = compose_config(["experiment=face"])
        return build_ssd(model_config_from(spec, 1)).eval(), "conf/experiment/face.yaml"
    from detector.models import ssd_mobilenet_v1

    settings = dict(FACE_MODEL)
    return ssd_mobilenet_v1(settings.pop("num_classes"), **settings).eval(), "bench/face.py"


def _shift_background(model, shift: float) -> None:
    """Add ``shift`` to the background logit bias of every anchor slot of every level."""
    import torch
    from torch import nn

    columns = model.num_classes + 1
    with torch.no_grad():
        for predictor in model.head.class_predictors:
            conv = [m for m in predictor.modules() if isinstance(m, nn.Conv2d)][-1]
            conv.bias[0::columns] += shift


def _count_above(logits, shift: float) -> int:
    lg = logits.clone()
    lg[..., 0] += shift
    return int((lg.softmax(-1)[..., 1:] > SCORE_THRESH).sum())


def _match_load(model, image_rgb: np.ndarray, target: int) -> tuple[float, int]:
    """Shift the background bias so that about ``target`` anchors score above the threshold."""
    import torch

    from detector.export.images import preprocess

    x = torch.from_numpy(preprocess([image_rgb], model.image_size))
    with torch.no_grad():
        _, logits = model(x)
    lo, hi = -40.0, 40.0  # count decreases with the shift
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if _count_above(logits, mid) > target:
            lo = mid
        else:
            hi = mid
    _shift_background(model, hi)
    with torch.no_grad():
        _, logits = model(x)
    return hi, _count_above(logits, 0.0)


# ================================================================================== workers
def _post(deltas, scores, anchors, weights, size_hw) -> int:
    """Decode + NMS (NumPy, :mod:`detector.runtime.numpy_ops`); number of faces."""
    from detector.runtime.numpy_ops import class_nms, decode_deltas

    h0, w0 = size_hw
    boxes = decode_deltas(deltas.reshape(-1, 4), anchors, weights, 100.0)
    boxes *= np.array([w0, h0, w0, h0], dtype=np.float32)
    b, _, _ = class_nms(
        boxes,
        scores.reshape(-1, 2)[:, 1:],
        score_thresh=SCORE_THRESH,
        nms_thresh=NMS_THRESH,
        topk_candidates=TOPK,
        max_detections=TOPK,
    )
    return len(b)


def worker(spec: dict[str, Any]) -> None:
    """One row (model x runtime) in this process; times blocks on request from the parent."""
    import cv2

    threads = spec["threads"]
    cv2.setNumThreads(threads)
    image = np.load(spec["image"])
    h0, w0 = image.shape[:2]
    anchors = np.load(spec["anchors"])
    ours = spec["model"] == "ours"
    runtime = spec["runtime"]
    weights = (10.0, 10.0, 5.0, 5.0)
    height, width = ULTRALIGHT_SIZE

    if ours:

        def prep() -> np.ndarray:
            rgb = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
            return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0

    else:

        def prep() -> np.ndarray:
            return cv2.dnn.blobFromImage(
                image, ULTRALIGHT_SCALE, (width, height), (ULTRALIGHT_MEAN,) * 3, swapRB=False
            )

    if runtime == "torch":
        import torch

        from detector.engine.checkpoint import load_detector

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)
        model, _ = load_detector(spec["checkpoint"])
        model.eval()

        def net(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            with torch.inference_mode():
                d, lg = model(torch.from_numpy(x))
            return d.numpy(), lg.numpy()

    elif runtime == "ort":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        sess = ort.InferenceSession(spec["onnx"], opts, providers=["CPUExecutionProvider"])
        in_name = sess.get_inputs()[0].name
        out_names = spec["outputs"]

        def net(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            a, b = sess.run(out_names, {in_name: x})
            return a, b

    elif runtime == "opencv":
        cvnet = cv2.dnn.readNetFromONNX(spec["onnx"])
        out_names = spec["outputs"]

        def net(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            cvnet.setInput(x)
            a, b = cvnet.forward(out_names)
            return a, b

    else:
        raise ValueError(f"unknown runtime {runtime}")

    blob = prep()
    faces: list[int] = []

    def run_net() -> None:
        net(blob)

    def run_e2e() -> None:
        a, b = net(prep())
        if ours:  # (box_deltas, class_logits)
            e = np.exp(b - b.max(-1, keepdims=True))
            faces.append(_post(a, e / e.sum(-1, keepdims=True), anchors, weights, (h0, w0)))
        else:  # (boxes, scores) in the converted graph's output order
            faces.append(_post(a, b, anchors, weights, (h0, w0)))

    fns = {"net": run_net, "e2e": run_e2e}
    for _ in range(spec["warmup"]):
        run_net()
        run_e2e()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        fn, times = fns[cmd[1]], []
        faces.clear()
        for _ in range(int(cmd[2])):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000.0)
        print(json.dumps({"times": times, "faces": faces[-1] if faces else None}), flush=True)


class _Worker(WorkerProcess):
    """A row's measuring process: set up once, then timed blocks of calls on request."""

    def __init__(self, spec: dict[str, Any], threads: int) -> None:
        super().__init__(__file__, spec, threads)
        self.blocks: dict[str, list[list[float]]] = {"net": [], "e2e": []}
        self.faces: int | None = None

    def wait_ready(self) -> None:
        self.read()

    def block(self, kind: str, iters: int) -> None:
        out = self.request(f"run {kind} {iters}")
        if out:
            self.blocks[kind].append(out["times"])
            if out["faces"] is not None:
                self.faces = out["faces"]

    def result(self, kind: str) -> dict[str, float] | None:
        blocks = self.blocks[kind]
        if self.error or not blocks:
            return None
        return block_stats(blocks)


# =================================================================================== parent
ROWS = (
    ("ours", "torch", "PyTorch eager"),
    ("ours", "ort", "ONNX Runtime"),
    ("ours", "opencv", "OpenCV DNN"),
    ("ultralight", "opencv", "OpenCV DNN (reference)"),
    ("ultralight", "ort", "ONNX Runtime"),
)


def _benchmark_image(args: argparse.Namespace) -> np.ndarray:
    import cv2

    path = Path(args.image) if args.image else ULTRALIGHT_DIR / "images" / "1.jpg"
    bgr = cv2.imread(str(path))
    if bgr is None:
        raise SystemExit(f"cannot read image {path}")
    if not args.image:
        bgr = cv2.resize(bgr, (640, 480), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _opencv_flops(onnx_path: Path) -> tuple[float | None, str]:
    """OpenCV's ``Net.getFLOPS`` for a 1x3x240x320 input, or why it is unavailable."""
    import cv2

    try:
        net = cv2.dnn.readNetFromONNX(str(onnx_path))
        shape = cv2.MatShape([1, 3, *ULTRALIGHT_SIZE]) if hasattr(cv2, "MatShape") else None
        if shape is not None:
            flops = net.getFLOPS([shape], [cv2.CV_32F])
        else:
            flops = net.getFLOPS((1, 3, *ULTRALIGHT_SIZE))
        return float(flops), ""
    except Exception as exc:  # reported in the table's notes
        first = str(exc).strip().splitlines()
        return None, (first[-1] if first else type(exc).__name__)[:120]


def _prepare(args: argparse.Namespace, tmp: Path) -> tuple[list[dict], dict[str, Any]]:
    import cv2
    import torch

    from detector.engine.checkpoint import save_checkpoint
    from detector.export import ExportOptions, export_model
    from detector.models import count_mult_adds, count_parameters

    torch.set_num_threads(args.threads)
    image = _benchmark_image(args)
    np.save(tmp / "image.npy", image)
    info: dict[str, Any] = {"image": f"{image.shape[0]}x{image.shape[1]}"}

    # Ultra-Light: convert, count, and measure its NMS load on the benchmark image.
    proto, weights = ULTRALIGHT_DIR / "slim-320.prototxt", ULTRALIGHT_DIR / "slim-320.caffemodel"
    ul_onnx = tmp / "slim-320.onnx"
    ul_onnx.write_bytes(ultralight_onnx(proto, weights).SerializeToString())
    counts = ultralight_counts(proto, weights)
    cv_flops, cv_flops_error = _opencv_flops(ul_onnx)
    np.save(tmp / "ul_priors.npy", ultralight_priors())
    net = cv2.dnn.readNetFromONNX(str(ul_onnx))
    h, w = ULTRALIGHT_SIZE
    net.setInput(cv2.dnn.blobFromImage(image, ULTRALIGHT_SCALE, (w, h), (ULTRALIGHT_MEAN,) * 3))
    _, ul_scores = net.forward(["boxes", "scores"])
    ul_load = int((ul_scores.reshape(-1, 2)[:, 1] > SCORE_THRESH).sum())
    info["ultralight"] = {
        "parameters": counts["parameters"],
        "mult_adds": counts["mult_adds"],
        "opencv_flops": cv_flops,
        "opencv_flops_error": cv_flops_error,
        "files": {"caffemodel": weights.stat().st_size, "ONNX": ul_onnx.stat().st_size},
        "load": ul_load,
    }

    # Ours: build (or load), match the NMS load, save, export raw ONNX.
    model, source = face_model_config(args.checkpoint)
    if tuple(model.image_size) != ULTRALIGHT_SIZE:
        print(f"note: our model's input is {model.image_size}", file=sys.stderr)
    if args.checkpoint:
        shift, load = 0.0, None
    else:
        shift, load = _match_load(model, image, ul_load)
    ckpt = tmp / "ours.pt"
    save_checkpoint(
        {"model": model.state_dict(), "model_config": model.config.to_dict(), "classes": ["face"]},
        ckpt,
    )
    result = export_model(
        model,
        ["face"],
        tmp / "ours",
        ExportOptions(verify=False, exporter=args.exporter),
        name="face",
        strict=False,
        log=None,
    )
    np.save(tmp / "ours_anchors.npy", model.anchors.numpy())
    hh, ww = model.image_size
    info["ours"] = {
        "source": source,
        "parameters": count_parameters(model),
        "mult_adds": count_mult_adds(model, torch.zeros(1, 3, hh, ww)),
        "files": {"ONNX": result.model_path.stat().st_size, "checkpoint": ckpt.stat().st_size},
        "load": load,
        "shift": shift,
        "anchors": model.num_anchors,
        "config": model.config,
    }

    common = {
        "image": str(tmp / "image.npy"),
        "threads": args.threads,
        "warmup": args.warmup,
    }
    specs = []
    for who, runtime, _ in ROWS:
        spec = {**common, "model": who, "runtime": runtime}
        if who == "ours":
            spec.update(
                anchors=str(tmp / "ours_anchors.npy"),
                checkpoint=str(ckpt),
                onnx=str(result.model_path),
                outputs=["box_deltas", "class_logits"],
            )
        else:
            spec.update(
                anchors=str(tmp / "ul_priors.npy"),
                onnx=str(ul_onnx),
                outputs=["boxes", "scores"],
            )
        specs.append(spec)
    return specs, info


# ================================================================================= accuracy
AP_SCORE_THRESH = 0.01  # detections kept for AP (the whole ranking matters)
AP_TOPK = 1000
AP_MAX_DETECTIONS = 200


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of ``[N, 4]`` and ``[M, 4]`` pixel xyxy boxes (continuous, no +1): ``[N, M]``."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def count_found(reference: np.ndarray, found: np.ndarray, iou_threshold: float = 0.5) -> int:
    """How many ``reference`` boxes (``[N, 4]``, in priority order) have their own match among
    ``found`` (``[M, 4]``) at IoU >= ``iou_threshold`` (greedy, each found box used once)."""
    if not len(reference) or not len(found):
        return 0
    iou = _iou(reference, found)
    used = np.zeros(len(found), bool)
    n = 0
    for row in iou:
        row = np.where(used, -1.0, row)
        j = int(row.argmax())
        if row[j] >= iou_threshold:
            used[j] = True
            n += 1
    return n


class _OnnxFace:
    """One face model in ONNX Runtime: RGB ``uint8`` image -> pixel boxes and face scores."""

    def __init__(self, who: str, onnx_path: Path, anchors: np.ndarray, threads: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        self.ours = who == "ours"
        self.outputs = ["box_deltas", "class_logits"] if self.ours else ["boxes", "scores"]
        self.anchors = anchors

    def __call__(
        self, image: np.ndarray, score_thresh: float, topk: int, max_det: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Boxes ``float32 [K, 4]`` (pixel xyxy of ``image``) and scores ``[K]``."""
        import cv2

        from detector.runtime.numpy_ops import class_nms, decode_deltas

        h0, w0 = image.shape[:2]
        height, width = ULTRALIGHT_SIZE
        if self.ours:
            rgb = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
            x = np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0
        else:
            x = cv2.dnn.blobFromImage(
                image, ULTRALIGHT_SCALE, (width, height), (ULTRALIGHT_MEAN,) * 3, swapRB=False
            )
        a, b = self.sess.run(self.outputs, {self.sess.get_inputs()[0].name: x})
        if self.ours:
            e = np.exp(b - b.max(-1, keepdims=True))
            b = e / e.sum(-1, keepdims=True)
        boxes = decode_deltas(a.reshape(-1, 4), self.anchors, (10.0, 10.0, 5.0, 5.0), 100.0)
        boxes *= np.array([w0, h0, w0, h0], dtype=np.float32)
        boxes, scores, _ = class_nms(
            boxes,
            b.reshape(-1, 2)[:, 1:],
            score_thresh=score_thresh,
            nms_thresh=NMS_THRESH,
            topk_candidates=topk,
            max_detections=max_det,
        )
        return boxes, scores


def held_out_split(data_root: Path):
    """The ``val`` split of ``experiment=face_mask`` read from ``data_root``: the images the
    shipped model was not trained on."""
    from detector.data import dataset_from_config
    from detector.summary import compose_config

    spec = compose_config(["experiment=face_mask", f"dataset.root={data_root}"])
    return dataset_from_config(spec.dataset, "val")


def accuracy(
    models: dict[str, _OnnxFace], data_root: Path, limit: int | None = None
) -> dict[str, dict[str, Any]]:
    """AP50, recall and precision at score > 0.7 on the held-out split of ``face_mask``, and the
    reference faces of Ultra-Light's photos found, per model (see the module docstring)."""
    from detector.data import load_image
    from detector.evaluation.voc import VOCEvaluator

    dataset = held_out_split(data_root)
    records = dataset.records()[:limit] if limit else dataset.records()
    entries = dataset.entries[: len(records)]
    reference = json.loads((ULTRALIGHT_DIR / "opencv_reference_faces.json").read_text())["images"]
    out: dict[str, dict[str, Any]] = {}
    images = [load_image(e.path) for e in entries]
    for who, model in models.items():
        ap = VOCEvaluator(["face"], records, metric="voc", use_07_plus_one=False)
        demo = VOCEvaluator(["face"], records, metric="voc", use_07_plus_one=False)
        kept = 0
        for rec, image in zip(records, images):
            boxes, scores = model(image, AP_SCORE_THRESH, AP_TOPK, AP_MAX_DETECTIONS)
            labels = np.ones(len(scores), np.int64)
            ap.process([rec["image_id"]], [{"boxes": boxes, "scores": scores, "labels": labels}])
            sel = scores > SCORE_THRESH
            kept += int(sel.sum())
            demo.process(
                [rec["image_id"]],
                [{"boxes": boxes[sel], "scores": scores[sel], "labels": labels[sel]}],
            )
        m_ap, m_demo = ap.evaluate(), demo.evaluate()
        num_gt = int(m_ap["num_gt/face"])
        tp = int(m_demo["num_tp/face"])
        found, total = 0, 0
        for name, ref in sorted(reference.items()):
            image = load_image(ULTRALIGHT_DIR / "images" / name)
            ref_boxes = np.array([f["box_px_xyxy"] for f in ref["faces"]], np.float32)
            order = np.argsort([-f["score"] for f in ref["faces"]], kind="stable")
            boxes, _ = model(image, SCORE_THRESH, TOPK, TOPK)
            found += count_found(ref_boxes[order].reshape(-1, 4), boxes)
            total += len(ref_boxes)
        out[who] = {
            "images": len(records),
            "faces": num_gt,
            "AP50": float(m_ap["AP/face"]),
            "recall": tp / max(num_gt, 1),
            "precision": tp / max(kept, 1),
            "detections": kept,
            "reference_found": found,
            "reference_total": total,
        }
    return out


def _ms(res: dict[str, float] | None) -> str:
    return f"{res['best']:.2f} ({res['median']:.2f})" if res else "n/a"


def _ratio(res: dict[str, float] | None, ref: dict[str, float] | None) -> str:
    return f"{res['best'] / ref['best']:.2f}x" if res and ref else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=50, help="timed calls per block")
    parser.add_argument("--rounds", type=int, default=5, help="blocks per row and kind")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--image", type=str, default=None, help="benchmark image (any size)")
    parser.add_argument(
        "--checkpoint",
        type=str,
        default="face",
        help="trained face model: a file or a built-in name (default: the shipped 'face'); "
        "'none': random weights, no accuracy",
    )
    parser.add_argument(
        "--data",
        type=str,
        default=str(SHARED / "datasets" / "face_mask"),
        help="face_mask folder (its held-out split is scored)",
    )
    parser.add_argument(
        "--exporter",
        default="auto",
        choices=["auto", "dynamo", "torchscript"],
        help="ONNX exporter for our model (detector.export)",
    )
    parser.add_argument("--quick", action="store_true", help="few iterations (smoke test)")
    parser.add_argument("--worker", type=str, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        worker(json.loads(args.worker))
        return 0
    if args.checkpoint.lower() in ("none", "null", ""):
        args.checkpoint = None
    if args.quick:
        args.iters, args.rounds, args.warmup = 3, 2, 1
        if args.exporter == "auto":
            args.exporter = "torchscript"  # the faster exporter; the graph is the same network
    if not (ULTRALIGHT_DIR / "slim-320.caffemodel").is_file():
        print(f"Ultra-Light Slim-320 not found in {ULTRALIGHT_DIR}", file=sys.stderr)
        return 2

    import cv2
    import onnxruntime
    import torch

    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="detector_face_bench_") as tmp_name:
        tmp = Path(tmp_name)
        print("preparing models and ONNX files...", file=sys.stderr, flush=True)
        specs, info = _prepare(args, tmp)
        scores = None
        if args.checkpoint and Path(args.data).is_dir():
            print("scoring both models on the held-out face_mask split...", file=sys.stderr)
            onnx_models = {
                who: _OnnxFace(who, Path(spec["onnx"]), np.load(spec["anchors"]), args.threads)
                for who, spec in (("ours", specs[1]), ("ultralight", specs[4]))
            }
            scores = accuracy(onnx_models, Path(args.data), limit=20 if args.quick else None)
        workers: list[_Worker] = []
        try:
            for spec in specs:  # set-up runs in parallel; timing is one row at a time
                workers.append(_Worker(spec, args.threads))
            for w in workers:
                w.wait_ready()
            for r in range(args.rounds):
                print(f"round {r + 1}/{args.rounds}...", file=sys.stderr, flush=True)
                for kind in ("net", "e2e"):
                    for w in workers:
                        w.block(kind, args.iters)
        finally:
            for w in workers:
                w.close()

    ref = {kind: workers[3].result(kind) for kind in ("net", "e2e")}
    ours, ul = info["ours"], info["ultralight"]
    cfg = ours["config"]
    sizes = {
        "ours": (
            ours["parameters"],
            ours["mult_adds"],
            f"ONNX {ours['files']['ONNX'] / 1e6:.2f}",
        ),
        "ultralight": (
            ul["parameters"],
            ul["mult_adds"],
            f"caffemodel {ul['files']['caffemodel'] / 1e6:.2f}, ONNX {ul['files']['ONNX'] / 1e6:.2f}",
        ),
    }
    names = {
        "ours": f"ours: SSDLite-MobileNetV1 a{cfg.alpha:g}",
        "ultralight": "Ultra-Light Slim-320",
    }
    print()
    print(
        f"Face detectors, batch 1, {args.threads} threads, input 240x320 (H x W). ms = median of "
        f"the least-disturbed block of {args.iters} calls (median of all "
        f"{args.rounds * args.iters}); {args.rounds} rounds, rows interleaved block by block, "
        f"one process per row, {args.warmup} warm-up calls. x UL = ms / Ultra-Light's ms in "
        "OpenCV DNN."
    )
    print(
        f"machine: {os.cpu_count()} CPUs, {cpu_name()}; 1-min load average {load_start:.1f} at "
        f"start, {os.getloadavg()[0]:.1f} at end; torch {torch.__version__}, onnxruntime "
        f"{onnxruntime.__version__}, OpenCV {cv2.__version__}"
        + ("  [--quick: figures meaningless]" if args.quick else "")
    )
    header = (
        f"{'model':<34}| {'runtime':<23}| {'params':>8} | {'fp32 MB':>7} | {'files MB':<27}| "
        f"{'mult-adds':>9} | {'network ms (all)':<17}| {'x UL':>6} | {'end to end ms (all)':<20}"
        f"| {'x UL':>6}"
    )
    print(header)
    print("-" * len(header))
    for (who, _runtime, label), w in zip(ROWS, workers):
        params, madds, files = sizes[who]
        net, e2e = w.result("net"), w.result("e2e")
        if w.error:
            label = f"{label} ({w.error})"[:23]
        print(
            f"{names[who]:<34}| {label:<23}| {params / 1e6:>7.3f}M | {params * 4 / 1e6:>7.2f} | "
            f"{files:<27}| {madds / 1e9:>8.4f}G | {_ms(net):<17}| {_ratio(net, ref['net']):>6} | "
            f"{_ms(e2e):<20}| {_ratio(e2e, ref['e2e']):>6}"
        )
    flops_note = (
        f"{ul['opencv_flops'] / 2e9:.4f}G"
        if ul["opencv_flops"]
        else f"unavailable ({ul['opencv_flops_error']})"
    )
    print(
        "mult-adds: ours torch.utils.flop_counter (FLOPs / 2); Ultra-Light counted from the "
        f"prototxt layer shapes (convolutions, bias adds excluded); OpenCV getFLOPS / 2: {flops_note}"
    )
    print(
        f"ours: {ours['source']}, {ours['anchors']} anchors; fp32 MB = params x 4 bytes; "
        f"ONNX files: ours exported by detector.export (exporter {args.exporter}), Ultra-Light "
        "converted from the caffemodel by this script"
    )
    load = (
        f"background bias shifted by {ours['shift']:+.2f} so that {ours['load']} anchors score "
        f"> {SCORE_THRESH} (Ultra-Light: {ul['load']})"
        if ours["load"] is not None
        else "trained weights"
    )
    faces = ", ".join(
        f"{names[who].split(':')[0]} {rt}: {w.faces}" for (who, rt, _), w in zip(ROWS, workers)
    )
    print(
        f"end to end: {info['image']} RGB uint8 image -> resize + normalise -> network -> NumPy "
        f"decode + NMS (score > {SCORE_THRESH}, IoU {NMS_THRESH}, top {TOPK}) -> pixel boxes; "
        f"ours: {load}; faces per image: {faces}"
    )
    if scores is not None:
        first = scores["ours"]
        print()
        print(
            f"Accuracy, {time.strftime('%Y-%m-%d', time.gmtime())}: held-out face_mask split "
            f"({first['images']} images, {first['faces']} faces, never trained on; {args.data}); "
            "both models in ONNX Runtime at 320x240, same decode and NMS (IoU "
            f"{NMS_THRESH}). AP50 = VOC all-point AP at IoU 0.5 over detections > "
            f"{AP_SCORE_THRESH}; recall/precision of detections > {SCORE_THRESH}; reference "
            f"faces = Ultra-Light's {first['reference_total']} OpenCV-reference faces on its 4 "
            f"photos also found at > {SCORE_THRESH}"
            + ("  [--quick: first 20 images only]" if args.quick else "")
        )
        head = (
            f"{'model':<34}: {'AP50':>6} | {'recall':>6} | {'precision':>9} | "
            f"{'reference faces found':>21}"
        )
        print(head)
        print("-" * len(head))
        for who in ("ours", "ultralight"):
            r = scores[who]
            print(
                f"{names[who]:<34}: {r['AP50']:>6.3f} | {r['recall']:>6.3f} | "
                f"{r['precision']:>9.3f} | "
                f"{r['reference_found']:>3d} / {r['reference_total']:<3d} "
                f"({r['reference_found'] / max(r['reference_total'], 1):.0%})"
            )
    print(f"total bench time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
