"""Inference on images, folders, videos and cameras: what ``detect.py`` runs.

Two backends give the same detections: a training checkpoint (PyTorch, through
:func:`detector.postprocess.postprocess_detections`) or an exported ONNX model with its sidecar
(:mod:`detector.runtime`, no PyTorch). Both resize the whole image to the model input, feed RGB
``[0, 1]`` floats and map the boxes back to original-image pixels.

Outputs in ``out_dir``: annotated images (same file names), annotated videos (``<stem>.mp4``,
``mp4v``), and ``detections.json`` in the COCO results format with file names. With
``ann_file=<COCO instances file>`` its ``image_id``/``category_id`` are that file's, so that
``eval.py detections=...`` scores it against the file (see ``docs/pretrained.md``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional  # noqa: UP035

import cv2
import numpy as np

from .postprocess_config import PostprocessConfig

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "DetectConfig",
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
class DetectConfig:
    """Typed Hydra schema of ``detect.py`` (``conf/detect.yaml`` builds on it).

    Attributes:
        checkpoint: training checkpoint (PyTorch backend); exclusive with ``model``.
        model: exported ``.onnx`` or ``.tflite`` with its sidecar ``.json`` next to it
            (torch-free backend).
        source: image file, image folder, video file, or a camera index such as ``0``.
        postprocess: score threshold (detections shown and saved score strictly above it), NMS
            and detection limits: ``postprocess.score_thresh=0.5`` as in eval and export
            (``conf/postprocess/detect.yaml``: score 0.3, 100 detections).
        device: where a checkpoint runs (``auto``, ``cpu``, ``cuda``, ``cuda:N``); exported
            models run in their CPU runtime.
        classes: keep only these class names (null: all).
        image_size: ``[H, W]`` model input override (checkpoints only; null: the model's).
        use_ema: take the EMA weights of a checkpoint when present.
        save: write annotated images/videos.
        progress: show a progress bar over folders and videos.
        max_frames: stop a video/camera after this many frames (0: no limit).
        line_width: box line width in pixels (0: from the image size).
        ann_file: a COCO annotation file of the source images: ``detections.json`` then has
            their real ``image_id`` and the file's ``category_id`` of each class (matched by
            category id, else by name); detections of classes the file lacks and images it does
            not list are left out of it (counted in the log).
        skip_unreadable: a folder's unreadable images are skipped and counted (false: the first
            one stops the run). ``detections.json`` always holds what was done.
    """

    checkpoint: Optional[str] = None  # noqa: UP045
    model: Optional[str] = None  # noqa: UP045
    source: Optional[str] = None  # noqa: UP045
    postprocess: PostprocessConfig = field(
        default_factory=lambda: PostprocessConfig(score_thresh=0.3, max_detections=100)
    )
    device: str = "auto"
    classes: Optional[List[str]] = None  # noqa: UP006, UP045
    image_size: Optional[List[int]] = None  # noqa: UP006, UP045
    use_ema: bool = True
    save: bool = True
    progress: bool = True
    max_frames: int = 0
    line_width: int = 0
    ann_file: Optional[str] = None  # noqa: UP045
    skip_unreadable: bool = True


def register_detect_schema() -> None:
    """Register ``detect_schema`` in Hydra's ConfigStore (called by ``detect.py``)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name="detect_schema", node=DetectConfig)
    store.store(group="postprocess", name="postprocess_schema", node=PostprocessConfig)


# ------------------------------------------------------------------------------------ backends
def _torch_predictor(spec: DetectConfig) -> tuple[Predictor, list[str]]:
    import torch

    from .engine.checkpoint import load_detector
    from .engine.device import resolve_device
    from .models import with_image_size
    from .postprocess import postprocess_detections
    from .runtime import preprocess_image

    device = resolve_device(spec.device)
    model, classes = load_detector(spec.checkpoint, use_ema=spec.use_ema)
    if spec.image_size is not None:
        model = with_image_size(model, spec.image_size)
    model = model.eval().to(device)
    if not classes:
        classes = [f"class{i}" for i in range(1, model.num_classes + 1)]

    @torch.no_grad()
    def predict(image_rgb: np.ndarray) -> dict[str, Any]:
        x = torch.from_numpy(preprocess_image(image_rgb, tuple(model.image_size))).to(device)
        deltas, logits = model(x)
        det = postprocess_detections(
            deltas,
            logits,
            model.anchors,
            [image_rgb.shape[:2]],
            score_fn=model.score_fn,
            **dataclasses.asdict(spec.postprocess),
        )[0]
        return {k: v.cpu().numpy() for k, v in det.items()}

    return predict, list(classes)


def _onnx_predictor(spec: DetectConfig) -> tuple[Predictor, list[str]]:
    """An exported model (``.onnx``, ``.tflite``) in its torch-free runtime."""
    from .runtime import load_detector

    post = spec.postprocess
    det = load_detector(
        spec.model,
        score_thresh=post.score_thresh,
        nms_thresh=post.nms_thresh,
        topk_candidates=post.topk_candidates,
        max_detections=post.max_detections,
    )
    if spec.image_size is not None and tuple(spec.image_size) != det.input_size:
        raise ValueError(
            f"image_size={list(spec.image_size)}: {spec.model} was exported at "
            f"{list(det.input_size)}; re-export it (export.py image_size=...) or use checkpoint="
        )
    if det.stage == "nms" and post.score_thresh < det.sidecar["postprocess"]["score_thresh"]:
        print(
            f"detect.py: note: {spec.model} applies score_thresh="
            f"{det.sidecar['postprocess']['score_thresh']} inside the graph",
            file=sys.stderr,
        )
    return det, list(det.class_names)


def load_predictor(spec: DetectConfig) -> tuple[Predictor, list[str]]:
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
    spec.postprocess.check()
    if spec.model is not None and spec.device not in ("auto", "cpu"):
        raise ValueError(
            f"device={spec.device} applies to checkpoint=; model={spec.model} runs in its CPU "
            "runtime (use device=auto or cpu)"
        )
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


def _quiet_video_backends() -> None:
    """OpenCV's and FFmpeg's own messages (V4L2 "can't open camera by index", "moov atom not
    found") would precede our one-line error; detect.py says what failed itself."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET, read when FFmpeg opens
    with contextlib.suppress(AttributeError):
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def _open_capture(src: _Source) -> tuple[Any, str]:
    _quiet_video_backends()
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


def _results(
    det: dict[str, Any],
    file_name: str,
    image_id: Any,
    frame: int | None,
    category_ids: dict[int, int],
    dropped: Counter[str] | None = None,
    class_names: list[str] | None = None,
) -> list[dict]:
    """COCO result rows; labels without an entry in ``category_ids`` are counted in ``dropped``."""
    rows = []
    for box, score, label in zip(det["boxes"], det["scores"], det["labels"], strict=True):
        if int(label) not in category_ids:
            if dropped is not None:
                dropped[_name(class_names or [], int(label))] += 1
            continue
        x1, y1, x2, y2 = (float(v) for v in box)
        row: dict[str, Any] = {
            "file_name": file_name,
            "image_id": image_id,
            "category_id": category_ids[int(label)],
            "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
            "score": round(float(score), 5),
        }
        if frame is not None:
            row["frame"] = frame
        rows.append(row)
    return rows


def _model_class_spec(spec: DetectConfig, class_names: list[str]):
    """The model's classes with their category ids where the checkpoint stores them."""
    from .classes import ClassSpec, checkpoint_class_spec

    if spec.checkpoint is not None:
        stored = checkpoint_class_spec(spec.checkpoint)
        if stored is not None and list(stored.names) == list(class_names):
            return stored
    return ClassSpec(tuple(class_names))


class _CocoImages:
    """``ann_file=``: image ids by file name, and the file's category id of each model label."""

    def __init__(self, ann_file: str, model_classes) -> None:
        from .classes import ClassSpec, match_classes
        from .data.coco import load_coco_json

        data = load_coco_json(ann_file)
        self.by_name: dict[str, Any] = {}
        by_base: dict[str, list[Any]] = {}
        for img in data["images"]:
            name = str(img["file_name"]).replace("\\", "/")
            self.by_name[name] = img["id"]
            by_base.setdefault(Path(name).name, []).append(img["id"])
        self.by_base = {k: v[0] for k, v in by_base.items() if len(v) == 1}
        cats = sorted(data["categories"], key=lambda c: c["id"])
        lut = {k + 1: int(c["id"]) for k, c in enumerate(cats)}
        file_classes = ClassSpec(tuple(str(c["name"]) for c in cats), tuple(lut.values()))
        self.class_map = match_classes(model_classes, file_classes)
        self.category_ids = {m: lut[d] for m, d in self.class_map.model_to_data.items()}

    def image_id(self, rel: str) -> Any:
        if rel in self.by_name:
            return self.by_name[rel]
        return self.by_base.get(Path(rel).name)


def run_detect(
    spec: DetectConfig, out_dir: str | Path, *, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Detect objects in ``spec.source`` and write the results into ``out_dir``.

    Args:
        spec: the composed ``detect.py`` settings.
        out_dir: output folder (the Hydra run directory).
        log: where the per-image summaries go (default: ``tqdm.write``).

    Returns:
        ``{"detections": COCO result rows, "detections_path": Path, "saved": [Path],
        "num_images": int, "unreadable": [relative path], "not_in_ann_file": [relative path],
        "num_dropped_detections": int}``.

    Raises:
        FileNotFoundError: the source, model, ``ann_file`` or an image is missing, or a folder
            is empty.
        ValueError: bad settings, an unreadable image (a single image, or any with
            ``skip_unreadable=false``; a folder with no readable image), no class shared with
            ``ann_file``, or a video/camera that cannot be opened.
    """
    from tqdm import tqdm

    src = _resolve_source(spec.source)  # check the source before loading the model
    if spec.ann_file is not None and not Path(spec.ann_file).is_file():
        raise FileNotFoundError(f"ann_file={spec.ann_file}: file not found")
    predict, class_names = load_predictor(spec)
    keep_labels = None
    if spec.classes:
        unknown = [c for c in spec.classes if c not in class_names]
        if unknown:
            raise ValueError(
                f"classes={list(spec.classes)}: unknown {unknown}; known {class_names}"
            )
        keep_labels = {class_names.index(c) + 1 for c in spec.classes}
    model_classes = _model_class_spec(spec, class_names)
    coco = _CocoImages(spec.ann_file, model_classes) if spec.ann_file is not None else None
    if coco is not None:
        category_ids = coco.category_ids
    elif model_classes.ids is not None:
        category_ids = dict(enumerate(model_classes.ids, start=1))
    else:
        category_ids = {k: k for k in range(1, len(class_names) + 1)}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    say = log if log is not None else tqdm.write
    rows: list[dict] = []
    saved: list[Path] = []
    unreadable: list[str] = []
    not_listed: list[str] = []
    dropped: Counter[str] = Counter()
    image_id = 0
    det_path = out_dir / "detections.json"
    if coco is not None:
        say(f"ann_file={spec.ann_file}: {coco.class_map.summary()}")

    def infer(image_rgb: np.ndarray) -> tuple[dict[str, Any], float]:
        start = time.perf_counter()
        det = _filter(predict(image_rgb), keep_labels)
        return det, (time.perf_counter() - start) * 1000.0

    def write_rows() -> None:
        det_path.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")

    if src.kind in ("image", "folder"):
        root = src.paths[0].parent if src.kind == "image" else Path(spec.source)
        bar = tqdm(
            src.paths, desc="detect", disable=not spec.progress or src.kind == "image",
            dynamic_ncols=True,
        )  # fmt: skip
        try:
            for path in bar:
                rel = path.relative_to(root).as_posix()
                try:
                    image = _read_rgb(path)
                except ValueError:
                    if src.kind == "image" or not spec.skip_unreadable:
                        raise
                    unreadable.append(rel)
                    say(f"{rel}: cannot read image (corrupt or unsupported format), skipped")
                    continue
                det, ms = infer(image)
                image_id += 1
                real_id: Any = image_id
                if coco is not None:
                    real_id = coco.image_id(rel)
                    if real_id is None:
                        not_listed.append(rel)
                say(f"{rel}: {_summary(det, class_names)} ({ms:.0f} ms)")
                if real_id is not None:
                    rows.extend(
                        _results(det, rel, real_id, None, category_ids, dropped, class_names)
                    )
                if spec.save:
                    target = out_dir / rel.replace("/", "__")
                    drawn = draw_detections(image, det, class_names, spec.line_width)
                    if not cv2.imwrite(str(target), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR)):
                        target = target.with_suffix(".jpg")
                        cv2.imwrite(str(target), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
                    saved.append(target)
        finally:
            write_rows()  # what was done, even when a later image stops the run
        if unreadable:
            say(f"{len(unreadable)} unreadable images skipped: {', '.join(unreadable[:10])}"
                + (" ..." if len(unreadable) > 10 else ""))  # fmt: skip
        if not_listed:
            say(f"{len(not_listed)} images are not in ann_file={spec.ann_file} and were left out "
                f"of detections.json: {', '.join(not_listed[:10])}"
                + (" ..." if len(not_listed) > 10 else ""))  # fmt: skip
        if image_id == 0:
            raise ValueError(
                f"source={spec.source}: none of the {len(src.paths)} images could be read"
            )
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
                rows.extend(_results(det, name, image_id, frame, category_ids, dropped,
                                     class_names))  # fmt: skip
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
        write_rows()
    if dropped:
        say(f"{sum(dropped.values())} detections of classes not in ann_file={spec.ann_file} "
            f"left out: " + ", ".join(f"{n} {k}" for k, n in dropped.most_common()))  # fmt: skip
    return {
        "detections": rows,
        "detections_path": det_path,
        "saved": saved,
        "num_images": image_id,
        "unreadable": unreadable,
        "not_in_ann_file": not_listed,
        "num_dropped_detections": int(sum(dropped.values())),
    }
