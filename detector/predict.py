"""Inference on images, folders, videos and cameras: what ``detect.py`` runs.

Two backends give the same detections: a training checkpoint (PyTorch, through
:func:`detector.postprocess.postprocess_detections`) or an exported ONNX model with its sidecar
(:mod:`detector.runtime`, no PyTorch). Both resize the whole image to the model input, feed RGB
``[0, 1]`` floats and map the boxes back to original-image pixels.

Outputs in ``out_dir``: annotated images (same file names), annotated videos (``<stem>.mp4``,
``mp4v``), and ``detections.json`` in the COCO results format with file names.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional  # noqa: UP035

import cv2
import numpy as np

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "DetectSchema",
    "class_color",
    "draw_detections",
    "load_predictor",
    "register_detect_schema",
    "run_detect",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")

Predictor = Callable[[np.ndarray], dict[str, Any]]


@dataclass
class DetectSchema:
    """Typed Hydra schema of ``detect.py`` (``conf/detect.yaml`` builds on it).

    Attributes:
        checkpoint: training checkpoint (PyTorch backend); exclusive with ``model``.
        model: exported ``.onnx`` or ``.tflite`` with its sidecar ``.json`` next to it
            (torch-free backend).
        source: image file, image folder, video file, or a camera index such as ``0``.
        score_thresh: detections shown and saved must score strictly above this.
        nms_thresh: IoU threshold of the per-class NMS.
        topk_candidates: candidates per class before NMS.
        max_detections: detections kept per image.
        classes: keep only these class names (null: all).
        image_size: ``[H, W]`` model input override (checkpoints only; null: the model's).
        use_ema: take the EMA weights of a checkpoint when present.
        save: write annotated images/videos.
        progress: show a progress bar over folders and videos.
        max_frames: stop a video/camera after this many frames (0: no limit).
        line_width: box line width in pixels (0: from the image size).
    """

    checkpoint: Optional[str] = None  # noqa: UP045
    model: Optional[str] = None  # noqa: UP045
    source: Optional[str] = None  # noqa: UP045
    score_thresh: float = 0.3
    nms_thresh: float = 0.45
    topk_candidates: int = 400
    max_detections: int = 100
    classes: Optional[List[str]] = None  # noqa: UP006, UP045
    image_size: Optional[List[int]] = None  # noqa: UP006, UP045
    use_ema: bool = True
    save: bool = True
    progress: bool = True
    max_frames: int = 0
    line_width: int = 0


def register_detect_schema() -> None:
    """Register ``detect_schema`` in Hydra's ConfigStore (called by ``detect.py``)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="detect_schema", node=DetectSchema)


# ------------------------------------------------------------------------------------ backends
def _torch_predictor(spec: DetectSchema) -> tuple[Predictor, list[str]]:
    import torch

    from .engine.checkpoint import load_detector
    from .models import ModelConfig, build_ssd
    from .postprocess import postprocess_detections
    from .runtime import preprocess_image

    model, classes = load_detector(spec.checkpoint, use_ema=spec.use_ema)
    if spec.image_size is not None and tuple(spec.image_size) != tuple(model.image_size):
        config = ModelConfig.from_dict(
            {**model.config.to_dict(), "image_size": [int(v) for v in spec.image_size]}
        )
        resized = build_ssd(config)
        resized.load_state_dict(model.state_dict())
        model = resized.eval()
    if not classes:
        classes = [f"class{i}" for i in range(1, model.num_classes + 1)]

    @torch.no_grad()
    def predict(image_rgb: np.ndarray) -> dict[str, Any]:
        x = torch.from_numpy(preprocess_image(image_rgb, tuple(model.image_size)))
        deltas, logits = model(x)
        det = postprocess_detections(
            deltas,
            logits,
            model.anchors,
            [image_rgb.shape[:2]],
            score_fn=model.score_fn,
            score_thresh=spec.score_thresh,
            nms_thresh=spec.nms_thresh,
            topk_candidates=spec.topk_candidates,
            max_detections=spec.max_detections,
        )[0]
        return {k: v.numpy() for k, v in det.items()}

    return predict, list(classes)


def _onnx_predictor(spec: DetectSchema) -> tuple[Predictor, list[str]]:
    """An exported model (``.onnx``, ``.tflite``) in its torch-free runtime."""
    from .runtime import load_detector

    det = load_detector(
        spec.model,
        score_thresh=spec.score_thresh,
        nms_thresh=spec.nms_thresh,
        topk_candidates=spec.topk_candidates,
        max_detections=spec.max_detections,
    )
    if spec.image_size is not None and tuple(spec.image_size) != det.input_size:
        raise ValueError(
            f"image_size={list(spec.image_size)}: {spec.model} was exported at "
            f"{list(det.input_size)}; re-export it (export.py image_size=...) or use checkpoint="
        )
    if det.stage == "nms" and spec.score_thresh < det.sidecar["postprocess"]["score_thresh"]:
        print(
            f"detect.py: note: {spec.model} applies score_thresh="
            f"{det.sidecar['postprocess']['score_thresh']} inside the graph",
            file=sys.stderr,
        )
    return det, list(det.class_names)


def load_predictor(spec: DetectSchema) -> tuple[Predictor, list[str]]:
    """The predictor of ``spec`` (checkpoint or ONNX model) and its class names.

    The predictor maps an RGB ``uint8`` image to ``boxes`` (pixel xyxy), ``scores`` and
    ``labels`` (``1..C``) numpy arrays.

    Raises:
        ValueError: neither or both of ``checkpoint``/``model`` given, or bad settings.
        FileNotFoundError: the model file is missing.
    """
    if (spec.checkpoint is None) == (spec.model is None):
        raise ValueError(
            "give exactly one of checkpoint=<.pt> or model=<exported .onnx or .tflite>"
        )
    if spec.image_size is not None and (
        len(spec.image_size) != 2 or min(int(v) for v in spec.image_size) < 32
    ):
        raise ValueError(f"image_size must be [H, W] with sides >= 32, got {spec.image_size}")
    if not 0.0 <= spec.score_thresh < 1.0 or not 0.0 <= spec.nms_thresh <= 1.0:
        raise ValueError("score_thresh must be in [0, 1) and nms_thresh in [0, 1]")
    if spec.max_detections < 1 or spec.topk_candidates < 1:
        raise ValueError("max_detections and topk_candidates must be >= 1")
    if spec.checkpoint is not None:
        from .builtin_weights import resolve_checkpoint

        resolve_checkpoint(spec.checkpoint)  # a file or a built-in name (else lists the names)
        return _torch_predictor(spec)
    if Path(spec.model).suffix.lower() not in (".onnx", ".tflite"):
        raise ValueError(f"model={spec.model}: expected an exported .onnx or .tflite file")
    return _onnx_predictor(spec)


# ------------------------------------------------------------------------------------- sources
@dataclass
class _Source:
    kind: str  # image | folder | video | camera
    paths: list[Path] = field(default_factory=list)
    camera: int = 0


def _resolve_source(source: str | None) -> _Source:
    if source is None or str(source).strip() == "":
        raise ValueError("source=<image | folder | video file | camera index> is required")
    text = str(source).strip()
    if text.isdigit() and not Path(text).exists():
        return _Source("camera", camera=int(text))
    path = Path(text)
    if not path.exists():
        raise FileNotFoundError(f"source={path}: no such file or folder")
    if path.is_dir():
        images = sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not images:
            raise FileNotFoundError(
                f"source={path}: folder has no images ({', '.join(IMAGE_EXTENSIONS)})"
            )
        return _Source("folder", paths=images)
    suffix = path.suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        return _Source("video", paths=[path])
    if suffix in IMAGE_EXTENSIONS:
        return _Source("image", paths=[path])
    raise ValueError(
        f"source={path}: unknown file type {suffix or '(none)'} (images: "
        f"{', '.join(IMAGE_EXTENSIONS)}; videos: {', '.join(VIDEO_EXTENSIONS)})"
    )


def _read_rgb(path: Path) -> np.ndarray:
    data = np.fromfile(str(path), dtype=np.uint8) if path.is_file() else None
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data is not None and data.size else None
    if bgr is None:
        raise ValueError(f"{path}: cannot read image (corrupt or unsupported format)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _open_capture(src: _Source) -> tuple[Any, str]:
    if src.kind == "camera":
        cap = cv2.VideoCapture(src.camera)
        name = f"camera{src.camera}"
        if not cap.isOpened():
            cap.release()
            raise ValueError(f"source={src.camera}: camera {src.camera} cannot be opened")
    else:
        cap = cv2.VideoCapture(str(src.paths[0]))
        name = src.paths[0].name
        if not cap.isOpened():
            cap.release()
            raise ValueError(f"source={src.paths[0]}: video cannot be opened")
    return cap, name


# ------------------------------------------------------------------------------------- drawing
def class_color(label: int) -> tuple[int, int, int]:
    """A stable, distinct RGB colour for a 1-based class label (golden-ratio hue steps)."""
    hue = int((label * 0.618033988749895 % 1.0) * 180)
    hsv = np.uint8([[[hue, 200, 255]]])
    r, g, b = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


def draw_detections(
    image_rgb: np.ndarray, det: dict[str, Any], class_names: list[str], line_width: int = 0
) -> np.ndarray:
    """A copy of ``image_rgb`` with labelled boxes (``"name 0.87"``), one colour per class."""
    out = np.ascontiguousarray(image_rgb.copy())
    h, w = out.shape[:2]
    lw = line_width or max(1, round((h + w) / 600))
    font_scale = max(0.35, lw / 3)
    for box, score, label in zip(det["boxes"], det["scores"], det["labels"], strict=True):
        color = class_color(int(label))
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, lw, cv2.LINE_AA)
        text = f"{_name(class_names, int(label))} {float(score):.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        ty = y1 - 2 if y1 - th - base - 2 >= 0 else y1 + th + base + 2
        cv2.rectangle(out, (x1, ty - th - base), (x1 + tw + 2, ty + 1), color, -1)
        cv2.putText(
            out, text, (x1 + 1, ty - base + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
            (0, 0, 0), 1, cv2.LINE_AA,
        )  # fmt: skip
    return out


def _name(class_names: list[str], label: int) -> str:
    return class_names[label - 1] if 1 <= label <= len(class_names) else f"class{label}"


def _summary(det: dict[str, Any], class_names: list[str]) -> str:
    counts = Counter(_name(class_names, int(lab)) for lab in det["labels"])
    if not counts:
        return "no detections"
    return ", ".join(f"{n} {name}" for name, n in sorted(counts.items(), key=lambda t: -t[1]))


# ---------------------------------------------------------------------------------------- main
def _filter(det: dict[str, Any], keep_labels: set[int] | None) -> dict[str, Any]:
    if keep_labels is None:
        return det
    mask = np.isin(np.asarray(det["labels"]), sorted(keep_labels))
    return {k: np.asarray(det[k])[mask] for k in ("boxes", "scores", "labels")}


def _results(det: dict[str, Any], file_name: str, image_id: int, frame: int | None) -> list[dict]:
    rows = []
    for box, score, label in zip(det["boxes"], det["scores"], det["labels"], strict=True):
        x1, y1, x2, y2 = (float(v) for v in box)
        row: dict[str, Any] = {
            "file_name": file_name,
            "image_id": image_id,
            "category_id": int(label),
            "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
            "score": round(float(score), 5),
        }
        if frame is not None:
            row["frame"] = frame
        rows.append(row)
    return rows


def run_detect(
    spec: DetectSchema, out_dir: str | Path, *, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Detect objects in ``spec.source`` and write the results into ``out_dir``.

    Args:
        spec: the composed ``detect.py`` settings.
        out_dir: output folder (the Hydra run directory).
        log: where the per-image summaries go (default: ``tqdm.write``).

    Returns:
        ``{"detections": COCO result rows, "detections_path": Path, "saved": [Path],
        "num_images": int}``.

    Raises:
        FileNotFoundError: the source, model or an image is missing, or a folder is empty.
        ValueError: bad settings, an unreadable image, or a video/camera that cannot be opened.
    """
    from tqdm import tqdm

    src = _resolve_source(spec.source)  # check the source before loading the model
    predict, class_names = load_predictor(spec)
    keep_labels = None
    if spec.classes:
        unknown = [c for c in spec.classes if c not in class_names]
        if unknown:
            raise ValueError(
                f"classes={list(spec.classes)}: unknown {unknown}; known {class_names}"
            )
        keep_labels = {class_names.index(c) + 1 for c in spec.classes}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    say = log if log is not None else tqdm.write
    rows: list[dict] = []
    saved: list[Path] = []
    image_id = 0

    def infer(image_rgb: np.ndarray) -> tuple[dict[str, Any], float]:
        start = time.perf_counter()
        det = _filter(predict(image_rgb), keep_labels)
        return det, (time.perf_counter() - start) * 1000.0

    if src.kind in ("image", "folder"):
        root = src.paths[0].parent if src.kind == "image" else Path(spec.source)
        bar = tqdm(
            src.paths, desc="detect", disable=not spec.progress or src.kind == "image",
            dynamic_ncols=True,
        )  # fmt: skip
        for path in bar:
            image = _read_rgb(path)
            det, ms = infer(image)
            image_id += 1
            rel = path.relative_to(root).as_posix()
            rows.extend(_results(det, rel, image_id, None))
            say(f"{rel}: {_summary(det, class_names)} ({ms:.0f} ms)")
            if spec.save:
                target = out_dir / rel.replace("/", "__")
                drawn = draw_detections(image, det, class_names, spec.line_width)
                if not cv2.imwrite(str(target), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR)):
                    target = target.with_suffix(".jpg")
                    cv2.imwrite(str(target), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
                saved.append(target)
    else:
        cap, name = _open_capture(src)
        writer = None
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if src.kind == "video" else 0
        if spec.max_frames > 0:
            total = min(total, spec.max_frames) if total > 0 else spec.max_frames
        bar = tqdm(total=total or None, desc=name, disable=not spec.progress, dynamic_ncols=True)
        totals: Counter[str] = Counter()
        elapsed, frame = 0.0, 0
        try:
            while spec.max_frames <= 0 or frame < spec.max_frames:
                ok, bgr = cap.read()
                if not ok:
                    break
                image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                det, ms = infer(image)
                elapsed += ms
                image_id += 1
                rows.extend(_results(det, name, image_id, frame))
                totals.update(_name(class_names, int(lab)) for lab in det["labels"])
                if spec.save:
                    if writer is None:
                        fps = cap.get(cv2.CAP_PROP_FPS)
                        fps = fps if fps and fps > 0 else 25.0
                        target = out_dir / f"{Path(name).stem}.mp4"
                        writer = cv2.VideoWriter(
                            str(target), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                            (image.shape[1], image.shape[0]),
                        )  # fmt: skip
                        saved.append(target)
                    drawn = draw_detections(image, det, class_names, spec.line_width)
                    writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
                frame += 1
                bar.update(1)
        finally:
            bar.close()
            cap.release()
            if writer is not None:
                writer.release()
        if frame == 0:
            raise ValueError(f"source={spec.source}: no frames could be read")
        found = ", ".join(f"{n} {k}" for k, n in totals.most_common()) or "no detections"
        say(f"{name}: {frame} frames, {found} ({elapsed / frame:.0f} ms/frame)")
    det_path = out_dir / "detections.json"
    det_path.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return {"detections": rows, "detections_path": det_path, "saved": saved, "num_images": image_id}
