"""The web app (``export.py format=web``): preprocessing, serving, and the page in headless Chromium.

Fast tests (default run): the page's preprocessing (``detector/web/app/preprocess.mjs`` run by
Node) against :func:`detector.runtime.preprocess_image` (cv2) bit for bit; the server's headers;
the clear failure without the onnxruntime-web files.

Browser tests (``-m slow``; CI installs Chromium and ``npm ci``): each model is exported with
``format=web``, served, and driven through headless Chromium; the detections the page reports
(``window.detectorWeb``) are compared with :class:`detector.runtime.Detector` on the same images:
same class, IoU >= 0.9, score within 0.01. Bad input (a non-image file, a denied or absent
camera, a folder with files missing) must show a message on the page.

Without Node, playwright-core or Chromium the browser tests are skipped with what is missing,
unless ``DETECTOR_WEB_REQUIRED=1`` (set by ``.ci/run``), where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from export_common import CLASSES, POST, tiny_model

from detector.runtime import Detector, iou_matrix, preprocess_image
from detector.web import APP_CONFIG, WebExportError, export_web, find_runtime
from detector.web import export as web_export
from detector.web.browser import missing_tools, run_browser, served

REPO = Path(__file__).resolve().parents[1]
WEB = REPO / "detector" / "web"
FACE_WEIGHTS = REPO / "detector" / "weights" / "face.pt"
#: score threshold of the page in the comparisons (the tiny model's scores are spread out)
THRESHOLD = {"synthetic": 0.3, "coco": 0.5, "face": 0.1}  # the shipped face model scores low
SCORE_TOL = 0.01
IOU_MIN = 0.9


def _need(tools: list[str]) -> None:
    if tools:
        message = "missing " + ", ".join(tools)
        if os.environ.get("DETECTOR_WEB_REQUIRED"):
            pytest.fail(f"DETECTOR_WEB_REQUIRED is set but the browser test cannot run: {message}")
        pytest.skip(message)


def _need_runtime() -> None:
    try:
        find_runtime()
    except WebExportError as exc:
        _need([str(exc)])


# ---------------------------------------------------------------------------------- preprocess
_PREPROCESS_DRIVER = """
import { preprocess } from %s;
import { readFileSync, writeFileSync } from 'node:fs';
const jobs = JSON.parse(readFileSync(0, 'utf8'));
for (const j of jobs) {
  const rgb = readFileSync(j.src);
  const n = j.sw * j.sh;
  const rgba = new Uint8Array(4 * n);
  for (let i = 0; i < n; i++) {
    rgba[4 * i] = rgb[3 * i]; rgba[4 * i + 1] = rgb[3 * i + 1]; rgba[4 * i + 2] = rgb[3 * i + 2];
    rgba[4 * i + 3] = 255;
  }
  const out = preprocess(rgba, j.sw, j.sh, j.dw, j.dh);
  writeFileSync(j.dst, Buffer.from(out.buffer, out.byteOffset, out.byteLength));
}
"""


def _node_preprocess(images: list[np.ndarray], sizes: list[tuple[int, int]], tmp: Path) -> list:
    jobs = []
    for i, (image, (dh, dw)) in enumerate(zip(images, sizes)):
        src = tmp / f"src{i}.rgb"
        np.ascontiguousarray(image).tofile(src)
        jobs.append(
            {
                "src": str(src),
                "dst": str(tmp / f"dst{i}.f32"),
                "sw": image.shape[1],
                "sh": image.shape[0],
                "dw": dw,
                "dh": dh,
            }
        )
    script = tmp / "driver.mjs"
    module = (WEB / "app" / "preprocess.mjs").as_uri()
    script.write_text(_PREPROCESS_DRIVER % json.dumps(module), encoding="utf-8")
    subprocess.run(
        ["node", str(script)], input=json.dumps(jobs), text=True, check=True, timeout=120
    )
    return [np.fromfile(j["dst"], dtype=np.float32).reshape(1, 3, j["dh"], j["dw"]) for j in jobs]


def test_page_preprocessing_equals_the_python_runtime(tmp_path, shared_data) -> None:
    """preprocess.mjs gives exactly cv2's INTER_LINEAR resize / 255: downscales (including the
    exact 2x halving OpenCV averages), upscales, odd sizes, real photos and random pixels."""
    if shutil.which("node") is None:
        _need(["node"])
    rng = np.random.default_rng(0)
    images, sizes = [], []
    for path, size in [
        (shared_data / "images" / "darknet_dog.jpg", (300, 300)),
        (shared_data / "images" / "voc_000001.jpg", (240, 320)),
        (shared_data / "face_ultralight_slim320" / "images" / "1.jpg", (240, 320)),
    ]:
        images.append(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))
        sizes.append(size)
    for (h, w), size in [
        ((480, 640), (240, 320)),
        ((100, 120), (300, 300)),
        ((333, 517), (217, 301)),
        ((1080, 1920), (240, 320)),
        ((240, 320), (240, 320)),
        ((64, 33), (50, 97)),
    ]:
        images.append(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        sizes.append(size)
    outputs = _node_preprocess(images, sizes, tmp_path)
    for image, size, ours in zip(images, sizes, outputs):
        ref = preprocess_image(image, size)
        assert ours.shape == ref.shape
        diff = np.abs(ours - ref).max() * 255
        assert diff == 0, f"{image.shape} -> {size}: max difference {diff:.3f} grey levels"


def test_page_preprocessing_check_can_fail(tmp_path) -> None:
    """The comparison above detects a one-pixel shift (it is not vacuous)."""
    if shutil.which("node") is None:
        _need(["node"])
    image = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    (ours,) = _node_preprocess([image], [(60, 80)], tmp_path)
    shifted = preprocess_image(np.roll(image, 1, axis=1), (60, 80))
    assert np.abs(ours - shifted).max() > 0


# ---------------------------------------------------------------------------------- serve/export
def _fake_app(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.html").write_text("<!doctype html><title>x</title>", encoding="utf-8")
    (folder / APP_CONFIG).write_text("{}", encoding="utf-8")
    (folder / "x.wasm").write_bytes(b"\0asm")
    (folder / "x.mjs").write_text("export {}", encoding="utf-8")
    return folder


def test_server_sends_cross_origin_isolation_headers(tmp_path) -> None:
    with served(_fake_app(tmp_path / "app")) as url:
        with urllib.request.urlopen(url) as response:
            assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
            assert response.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        with urllib.request.urlopen(url + "x.wasm") as response:
            assert response.headers["Content-Type"] == "application/wasm"
        with urllib.request.urlopen(url + "x.mjs") as response:
            assert response.headers["Content-Type"].startswith("text/javascript")


def test_serve_rejects_a_folder_that_is_not_an_app(tmp_path) -> None:
    from detector.web.__main__ import main

    (tmp_path / "empty").mkdir()
    assert main(["serve", str(tmp_path / "empty")]) == 1
    assert main(["serve", str(tmp_path / "nope")]) == 1


def test_web_export_fails_clearly_without_the_runtime_files(tmp_path, monkeypatch) -> None:
    """No onnxruntime-web files: a message saying how to get them, before any export work."""
    monkeypatch.setenv(web_export.ENV_VAR, str(tmp_path / "no-runtime"))
    monkeypatch.setattr(web_export, "VENDOR_DIR", tmp_path / "no-vendor")
    monkeypatch.setattr(web_export, "NPM_DIST", tmp_path / "no-npm")

    def must_not_export(*args, **kwargs):
        raise AssertionError("exported although the runtime files are missing")

    monkeypatch.setattr("detector.export.export_checkpoint", must_not_export)
    with pytest.raises(WebExportError, match=r"onnxruntime-web.*npm ci"):
        export_web(tmp_path / "x.pt", tmp_path / "out", log=None)
    assert not (tmp_path / "out").exists()


def test_web_export_rejects_a_runtime_of_another_version(tmp_path, monkeypatch) -> None:
    _need_runtime()
    real = find_runtime()
    fake = tmp_path / "ort"
    fake.mkdir()
    for name in real.files():
        (fake / name).write_bytes(b"x")
    (fake / "VERSION").write_text("0.0.1\n")
    monkeypatch.setenv(web_export.ENV_VAR, str(fake))
    monkeypatch.setattr(web_export, "VENDOR_DIR", tmp_path / "no-vendor")
    monkeypatch.setattr(web_export, "NPM_DIST", tmp_path / "no-npm")
    with pytest.raises(WebExportError, match=r"0\.0\.1, the app is pinned to"):
        find_runtime()


# ---------------------------------------------------------------------------------- browser
@pytest.fixture(scope="module")
def browser_ready() -> None:
    _need(missing_tools())
    _need_runtime()


def _export(checkpoint: Path | str, out: Path) -> Path:
    from detector.export import ExportOptions

    options = ExportOptions(verify=False, **POST)
    return export_web(checkpoint, out, options, log=None)


@pytest.fixture(scope="module", params=["synthetic", "coco", "face"])
def web_app(request, tmp_path_factory, browser_ready) -> tuple[str, Path]:
    """(model kind, exported app folder): ``synthetic``, the export tests' tiny model (random
    weights, sharpened class predictors: confident, image-dependent detections); ``coco``, the
    TF OD API SSD-MobileNet v1 COCO model of ``../shared/data`` converted with
    ``detector.convert`` (real detections on real photos); ``face``, the built-in face model."""
    from detector.engine.checkpoint import save_checkpoint

    kind = request.param
    out = tmp_path_factory.mktemp(f"web-{kind}")
    if kind == "synthetic":
        model = tiny_model((240, 320))  # the export tests' synthetic-preset model
        checkpoint = out / "synthetic.pt"
        save_checkpoint(
            {
                "model": model.state_dict(),
                "model_config": model.config.to_dict(),
                "classes": CLASSES,
            },
            checkpoint,
        )
        return kind, _export(checkpoint, out / "app")
    if kind == "coco":
        from detector.convert import convert_tflite_file

        tflite = request.getfixturevalue("shared_data") / "ssd_mobilenet_v1_coco_quant_tflite"
        checkpoint = out / "coco_ssd.pt"
        convert_tflite_file(tflite / "detect.tflite", checkpoint, tflite / "coco_labels.txt")
        return kind, _export(checkpoint, out / "app")
    assert FACE_WEIGHTS.is_file(), "the built-in face weights are package data"
    return kind, _export("face", out / "app")


def _rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _model_file(folder: Path) -> Path:
    return folder / json.loads((folder / APP_CONFIG).read_text())["model"]


def _reference(folder: Path, image_rgb: np.ndarray, threshold: float) -> list[dict]:
    det = Detector.load(_model_file(folder), score_thresh=threshold)(image_rgb)
    return [
        {"label": int(lab), "score": float(s), "box": [float(v) for v in b]}
        for b, s, lab in zip(det["boxes"], det["scores"], det["labels"])
    ]


def assert_same(page: list[dict], ref: list[dict], threshold: float, what: str) -> None:
    """Every detection scoring at least ``threshold + SCORE_TOL`` on one side has a partner on the
    other: same class, IoU >= 0.9, score within 0.01 (detections right at the threshold may fall
    on either side of it)."""
    assert ref, f"{what}: the reference found nothing at {threshold}: the check would be empty"

    def unmatched(a: list[dict], b: list[dict]) -> list[dict]:
        free = list(b)
        missing = []
        for d in a:
            if d["score"] < threshold + SCORE_TOL:
                continue
            best = None
            for j, e in enumerate(free):
                if e["label"] != d["label"] or abs(e["score"] - d["score"]) > SCORE_TOL:
                    continue
                iou = iou_matrix(np.array([d["box"]]), np.array([e["box"]]))[0, 0]
                if iou >= IOU_MIN and (best is None or iou > best[0]):
                    best = (iou, j)
            if best is None:
                missing.append(d)
            else:
                free.pop(best[1])
        return missing

    lost = unmatched(ref, page)
    extra = unmatched(page, ref)
    assert not lost, f"{what}: detections of detector.runtime not found on the page: {lost[:3]}"
    assert not extra, f"{what}: page detections detector.runtime does not give: {extra[:3]}"


def test_detection_comparison_can_fail() -> None:
    """assert_same rejects another class, a shifted box, a score off by 0.02, a missing or an
    extra detection, and an empty reference."""
    ref = [{"label": 1, "score": 0.8, "box": [10.0, 10.0, 110.0, 110.0]}]
    assert_same([dict(ref[0], score=0.805)], ref, 0.3, "ok")
    bad = [
        [dict(ref[0], label=2)],
        [dict(ref[0], box=[20.0, 20.0, 120.0, 120.0])],
        [dict(ref[0], score=0.82)],
        [],
        [*ref, {"label": 1, "score": 0.5, "box": [200.0, 200.0, 260.0, 260.0]}],
    ]
    for page in bad:
        with pytest.raises(AssertionError):
            assert_same(page, ref, 0.3, "bad")
    with pytest.raises(AssertionError, match="found nothing"):
        assert_same([], [], 0.3, "empty")


def _page_url(url: str, kind: str) -> str:
    return f"{url}?backend=wasm&threshold={THRESHOLD[kind]}"


def _images(shared_data: Path, kind: str) -> list[Path]:
    if kind == "face":
        folder = shared_data / "face_ultralight_slim320" / "images"
        return sorted(folder.glob("*.jpg"))
    folder = shared_data / "images"
    names = ["voc_000001.jpg", "darknet_person.jpg", "voc_004545.jpg", "darknet_dog.jpg"]
    return [folder / n for n in names]  # the dog last: the screenshot shows it


def _write_y4m(image_rgb: np.ndarray, path: Path, frames: int = 2) -> None:
    """A YUV 4:2:0 video of ``image_rgb`` for Chromium's fake camera."""
    h, w = (image_rgb.shape[0] // 2) * 2, (image_rgb.shape[1] // 2) * 2
    yuv = cv2.cvtColor(np.ascontiguousarray(image_rgb[:h, :w]), cv2.COLOR_RGB2YUV_I420)
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F30:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            f.write(b"FRAME\n")
            f.write(yuv.tobytes())


@pytest.mark.slow
def test_page_detections_equal_the_python_runtime_on_files(web_app, shared_data, tmp_path) -> None:
    """File input: the detections the page shows equal detector.runtime's on the same JPEGs;
    the page is loaded with WASM and two threads (cross-origin isolated), and a screenshot of
    the page with its boxes is saved."""
    kind, folder = web_app
    threshold = THRESHOLD[kind]
    images = _images(shared_data, kind)
    shot = tmp_path / f"page_{kind}.png"
    steps = [{"do": "ready"}] + [{"do": "file", "path": str(p)} for p in images]
    steps += [
        {"do": "view", "path": str(tmp_path / "view.png")},
        {"do": "screenshot", "path": str(shot)},
    ]
    with served(folder) as url:
        out = run_browser(_page_url(url, kind), steps)
    ready, *results = out["results"][: 1 + len(images)]
    assert ready["state"] == "ready", (ready, out["logs"][-5:])
    assert ready["backend"] == "wasm" and ready["crossOriginIsolated"]
    assert ready["threads"] >= 2 or (os.cpu_count() or 1) < 2
    assert (
        ready["model"]["input"]
        == json.loads((_model_file(folder).with_suffix(".json")).read_text())["input"][
            "height_width"
        ]
    )
    for path, result in zip(images, results):
        assert result["state"] != "error", result["error"]
        assert result["last"]["source"] == path.name
        image = _rgb(path)
        assert [result["last"]["height"], result["last"]["width"]] == list(image.shape[:2])
        assert_same(
            result["last"]["detections"],
            _reference(folder, image, threshold),
            threshold,
            f"{kind}/{path.name}",
        )
    # the last image on the page was decoded to the same pixels as cv2.imread
    view = _rgb(tmp_path / "view.png")
    assert np.abs(view.astype(int) - _rgb(images[-1]).astype(int)).max() <= 1
    assert shot.is_file() and shot.stat().st_size > 10_000
    keep = os.environ.get("DETECTOR_WEB_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(keep) / shot.name)
    print(f"screenshot: {shot}")


@pytest.mark.slow
def test_page_detections_equal_the_python_runtime_on_the_camera(
    web_app, shared_data, tmp_path
) -> None:
    """A fake camera (Chromium's fake-media flags, a Y4M made from a real photo): the detections
    on the frame the page processed equal detector.runtime's on that frame's pixels."""
    kind, folder = web_app
    threshold = THRESHOLD[kind]
    video = tmp_path / "camera.y4m"
    _write_y4m(_rgb(_images(shared_data, kind)[0]), video)
    frame = tmp_path / "frame.png"
    with served(folder) as url:
        out = run_browser(
            _page_url(url, kind),
            [{"do": "ready"}, {"do": "camera", "frames": 3, "snapshot": str(frame)}],
            fake_video=video,
            grant_camera=True,
        )
    result = out["results"][1]
    assert result["state"] != "error", (result["error"], out["logs"][-5:])
    assert result["last"]["source"].startswith("camera")
    pixels = _rgb(frame)
    assert pixels.shape[:2] == (result["last"]["height"], result["last"]["width"])
    assert_same(
        result["last"]["detections"],
        _reference(folder, pixels, threshold),
        threshold,
        f"{kind}/camera",
    )


@pytest.mark.slow
def test_page_detections_equal_the_python_runtime_on_a_video_file(
    web_app, shared_data, tmp_path
) -> None:
    """A video file (VP8 WebM written by OpenCV from a real photo) through the file input: the
    detections on the frame the page processed equal detector.runtime's on its pixels."""
    kind, folder = web_app
    threshold = THRESHOLD[kind]
    image = _rgb(_images(shared_data, kind)[0])
    h, w = (image.shape[0] // 2) * 2, (image.shape[1] // 2) * 2
    video = tmp_path / "clip.webm"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"VP80"), 10, (w, h))
    if not writer.isOpened():
        pytest.skip("this OpenCV cannot write VP8 WebM")
    for _ in range(10):
        writer.write(cv2.cvtColor(np.ascontiguousarray(image[:h, :w]), cv2.COLOR_RGB2BGR))
    writer.release()
    frame = tmp_path / "frame.png"
    with served(folder) as url:
        out = run_browser(
            _page_url(url, kind),
            [
                {"do": "ready"},
                {"do": "video", "path": str(video), "frames": 3, "snapshot": str(frame)},
            ],
        )
    result = out["results"][1]
    assert result["state"] != "error", (result["error"], out["logs"][-5:])
    assert result["last"]["source"] == video.name
    pixels = _rgb(frame)
    assert pixels.shape[:2] == (result["last"]["height"], result["last"]["width"]) == (h, w)
    assert_same(
        result["last"]["detections"],
        _reference(folder, pixels, threshold),
        threshold,
        f"{kind}/video",
    )


@pytest.fixture(scope="module")
def synthetic_app(tmp_path_factory, browser_ready) -> Path:
    from detector.engine.checkpoint import save_checkpoint

    out = tmp_path_factory.mktemp("web-bad")
    model = tiny_model((240, 320))
    save_checkpoint(
        {"model": model.state_dict(), "model_config": model.config.to_dict(), "classes": CLASSES},
        out / "m.pt",
    )
    return _export(out / "m.pt", out / "app")


def _error_shown(result: dict, pattern: str) -> None:
    assert result["state"] == "error", result
    assert result["message"] and pattern in result["message"], result["message"]
    assert not result["canvasBlank"], "the error must be shown on the canvas too"


@pytest.mark.slow
def test_page_bad_inputs_show_a_message(synthetic_app, tmp_path) -> None:
    """A non-image file, a camera denied and a camera absent each put a message on the page."""
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    fake_jpeg = tmp_path / "broken.jpg"
    fake_jpeg.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with served(synthetic_app) as url:
        files = run_browser(
            url,
            [
                {"do": "ready"},
                {"do": "file", "path": str(text)},
                {"do": "file", "path": str(fake_jpeg)},
            ],
        )
        denied = run_browser(
            url, [{"do": "ready"}, {"do": "camera"}], fake_device=True, grant_camera=False
        )
        absent = run_browser(url, [{"do": "ready"}, {"do": "camera"}], grant_camera=True)
    _error_shown(files["results"][1], '"notes.txt" is not an image')
    _error_shown(files["results"][2], '"broken.jpg" is not an image')
    _error_shown(denied["results"][1], "Camera access was denied")
    _error_shown(absent["results"][1], "No camera was found")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("remove", "pattern"),
    [
        ("model", "is missing"),
        ("sidecar", "is missing"),
        ("ort/ort-wasm-simd-threaded.wasm", "ort-wasm-simd-threaded.wasm"),
        (APP_CONFIG, "is missing"),
    ],
)
def test_page_with_files_missing_says_which(synthetic_app, tmp_path, remove, pattern) -> None:
    folder = tmp_path / "app"
    shutil.copytree(synthetic_app, folder)
    config = json.loads((folder / APP_CONFIG).read_text())
    (folder / config.get(remove, remove)).unlink()
    with served(folder) as url:
        out = run_browser(url, [{"do": "ready"}])
    _error_shown(out["results"][0], pattern)
    assert "incomplete" in out["results"][0]["message"]


@pytest.mark.slow
def test_export_py_format_web_writes_the_app(synthetic_app, tmp_path) -> None:
    """``python export.py checkpoint=... format=web`` (the documented command) writes a folder
    the server accepts, with the model ending in NMS and the pinned runtime files."""
    import sys

    checkpoint = synthetic_app.parent / "m.pt"
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "export.py"),
            f"checkpoint={checkpoint}",
            "format=web",
            "verify=false",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    folder = tmp_path / "run" / "web"
    assert "python -m detector.web serve" in run.stdout
    config = json.loads((folder / APP_CONFIG).read_text())
    sidecar = json.loads((folder / config["sidecar"]).read_text())
    assert sidecar["stage"] == "nms" and (folder / config["model"]).is_file()
    assert (folder / "ort" / "VERSION").read_text().strip() == config["ort"]["version"]
    for name in [config["ort"]["wasm"]["bundle"], *config["ort"]["wasm"]["files"]]:
        assert (folder / "ort" / name).stat().st_size > 0
    with served(folder) as url, urllib.request.urlopen(url) as response:
        assert b'src="app.js"' in response.read()
