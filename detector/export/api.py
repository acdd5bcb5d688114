"""Export a trained detector: check the request, write the artifact and its sidecar, verify.

:func:`export_checkpoint` is what ``export.py`` calls; :func:`export_model` takes a model already
in memory. Both check the request against the format table first (no work is done for an
unsupported combination), then:

1. rebuild the model at ``image_size`` when asked (weights do not depend on the input size; the
   anchors are regenerated);
2. write ``<name><suffix>`` through the format's backend (ONNX: see
   :mod:`detector.export.onnx_format`), int8 with calibration images when asked;
3. write ``<name>.json`` (:mod:`detector.export.sidecar`);
4. run the artifact in its runtime on sample images and compare with PyTorch
   (:mod:`detector.export.verify`); the verdict is printed and stored in the sidecar. An fp32
   artifact that does not match raises :class:`ExportError` (files are left for inspection).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..models import SSD, ModelConfig, build_ssd
from .accuracy import compare_map, find_annotations, load_eval_dataset
from .formats import ExportError, FormatCapabilities, check_request
from .images import generated_images, image_batches, list_images, read_rgb
from .sidecar import build_sidecar, write_sidecar
from .verify import Verdict, verify_artifact
from .wrapper import Postprocess

__all__ = [
    "ExportOptions",
    "ExportResult",
    "export_checkpoint",
    "export_model",
    "options_from_dict",
    "with_image_size",
]

Runner = Callable[[np.ndarray], Mapping[str, np.ndarray]]


@dataclass
class ExportOptions:
    """Everything an export needs besides the model (the CLI maps onto this).

    Attributes:
        format: a key of :data:`detector.export.FORMATS`.
        image_size: ``(H, W)`` to export at (None: the checkpoint's).
        decode: end the graph after box decoding (boxes + scores).
        nms: end the graph after NMS (fixed-size padded detections); implies ``decode``.
        int8: post-training int8 quantization over ``calibration`` images.
        calibration: image folder, image list file, or ``"synthetic"`` (generated images).
        num_calibration_images: images used for calibration.
        dynamic_batch: leave the batch dimension free.
        name: artifact base name (None: the checkpoint's stem, ``"model"`` for in-memory models).
        score_thresh, nms_thresh, topk_candidates, max_detections, clip_boxes: post-processing
            (in the graph for ``nms``, recorded in the sidecar otherwise).
        opset, exporter: ONNX opset and exporter (``auto``/``dynamo``/``torchscript``).
        per_channel, activation_type, weight_type, calibrate_method, quant_op_types: int8
            quantization settings (ONNX Runtime).
        quant_format, quant_exclude, activation_symmetric: ONNX int8: ``"qdq"`` or
            ``"qoperator"``; node groups kept float (``first_conv``, ``predictors``,
            ``outputs``, or node names, see :func:`detector.export.onnx_format.excluded_nodes`;
            default ``outputs``: the head's transposes, reshapes and concatenations, so each
            predictor keeps its own output scale); symmetric activation ranges.
        compute_precision: Core ML program precision (``float32`` or ``float16``).
        verify: run the built-in verification.
        verify_images: images for verification (None: calibration images not used for
            calibration, else generated images).
        num_verify_images: images used for verification.
        min_agreement: fp32 exports fail below this fraction of matched detections.
        int8_min_agreement: int8 exports fail below this (None: report only).
        map_annotations: ground truth for the int8 accuracy check: a COCO annotation file or a
            folder with ``annotations.json`` (None: the one next to ``verify_images`` if any,
            e.g. ``data_cache/synthetic/val/images``). Int8 exports then report the COCO mAP of
            the fp32 PyTorch model and of the int8 artifact on those images, and the change.
        num_map_images: images of ``map_annotations`` evaluated (0: all).
        int8_max_map_drop: int8 exports fail when COCO mAP drops by more than this many
            points (None: report only).
        raw_tolerance: fp32 exports fail when raw outputs differ by more than this times
            ``max(1, max |output|)``.
        match_score, match_iou: detections compared (score >= match_score) and the IoU a match
            needs.
        threads: runtime threads during verification (0: runtime default).
    """

    format: str = "onnx"
    image_size: tuple[int, int] | None = None
    decode: bool = False
    nms: bool = False
    int8: bool = False
    calibration: str | None = None
    num_calibration_images: int = 100
    dynamic_batch: bool = False
    name: str | None = None
    score_thresh: float = 0.01
    nms_thresh: float = 0.45
    topk_candidates: int = 400
    max_detections: int = 200
    clip_boxes: bool = True
    opset: int = 18
    exporter: str = "auto"
    per_channel: bool = True
    activation_type: str = "uint8"
    weight_type: str = "int8"
    calibrate_method: str = "minmax"
    quant_op_types: tuple[str, ...] | None = None
    quant_format: str = "qdq"
    quant_exclude: tuple[str, ...] = ("outputs",)
    activation_symmetric: bool = False
    compute_precision: str = "float32"
    verify: bool = True
    verify_images: str | None = None
    num_verify_images: int = 8
    min_agreement: float = 0.99
    int8_min_agreement: float | None = None
    map_annotations: str | None = None
    num_map_images: int = 0
    int8_max_map_drop: float | None = None
    raw_tolerance: float = 1e-3
    match_score: float = 0.3
    match_iou: float = 0.9
    threads: int = 0

    @property
    def stage(self) -> str:
        return "nms" if self.nms else "decoded" if self.decode else "raw"

    def postprocess_settings(self) -> dict[str, Any]:
        return {
            "score_thresh": self.score_thresh,
            "nms_thresh": self.nms_thresh,
            "topk_candidates": self.topk_candidates,
            "max_detections": self.max_detections,
            "clip_boxes": self.clip_boxes,
        }

    def check(self) -> FormatCapabilities:
        """Validate the request (format table, values, files) without doing any work."""
        spec = check_request(
            self.format,
            decode=self.decode and not self.nms,
            nms=self.nms,
            int8=self.int8,
            dynamic_batch=self.dynamic_batch,
            calibration=self.calibration,
        )
        if self.image_size is not None:
            size = tuple(int(v) for v in self.image_size)
            if len(size) != 2 or min(size) < 32:
                raise ExportError(
                    f"image_size must be [H, W] with sides >= 32, got {self.image_size}"
                )
        if not 0.0 <= self.nms_thresh <= 1.0 or not 0.0 <= self.score_thresh < 1.0:
            raise ExportError("nms_thresh must be in [0, 1] and score_thresh in [0, 1)")
        if self.topk_candidates < 1 or self.max_detections < 1:
            raise ExportError("topk_candidates and max_detections must be >= 1")
        if self.int8 and self.num_calibration_images < 1:
            raise ExportError("num_calibration_images must be >= 1")
        if self.verify and self.num_verify_images < 1:
            raise ExportError("num_verify_images must be >= 1 (or verify=false)")
        if (
            self.verify_images not in (None, "", "synthetic")
            and not Path(self.verify_images).exists()
        ):
            raise ExportError(f"verify_images={self.verify_images}: no such file or folder")
        if self.map_annotations not in (None, "") and not Path(self.map_annotations).exists():
            raise ExportError(f"map_annotations={self.map_annotations}: no such file or folder")
        if self.num_map_images < 0:
            raise ExportError("num_map_images must be >= 0 (0: all images)")
        if self.quant_format not in ("qdq", "qoperator"):
            raise ExportError(f"quant_format must be qdq or qoperator, got {self.quant_format!r}")
        if self.compute_precision not in ("float32", "float16"):
            raise ExportError(
                f"compute_precision must be float32 or float16, got {self.compute_precision!r}"
            )
        if self.name is not None and (not self.name or "/" in self.name or "\\" in self.name):
            raise ExportError(f"name must be a plain file name, got {self.name!r}")
        return spec


@dataclass
class ExportResult:
    """Files written by an export and the verification verdicts."""

    model_path: Path
    sidecar_path: Path
    sidecar: dict[str, Any]
    verdicts: list[Verdict] = field(default_factory=list)
    fp32_path: Path | None = None

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.verdicts)


# ------------------------------------------------------------------------------ format backends
@dataclass(frozen=True)
class _Backend:
    export: Callable[..., dict[str, Any]]
    runner: Callable[[Path, ExportOptions], Runner]
    batch_size: Callable[[ExportOptions], int]
    #: Verdict without running (a runtime missing on this platform), or None to run the artifact.
    static_check: Callable[[Path, dict[str, Any], SSD, str], Verdict | None] | None = None


def _onnx_export(
    model: SSD,
    path: Path,
    options: ExportOptions,
    calibration: list[np.ndarray] | None,
    fp32_path: Path | None,
) -> dict[str, Any]:
    from .onnx_format import export_onnx

    post = None
    if options.stage != "raw":
        post = Postprocess(
            model.anchors,
            stage=options.stage,
            score_fn=model.score_fn,
            **{k: v for k, v in options.postprocess_settings().items()},
        )
    quant = {
        "per_channel": options.per_channel,
        "activation_type": options.activation_type,
        "weight_type": options.weight_type,
        "calibrate_method": options.calibrate_method,
        "op_types": list(options.quant_op_types) if options.quant_op_types else None,
        "quant_format": options.quant_format,
        "exclude": list(options.quant_exclude),
        "symmetric_activations": options.activation_symmetric,
    }
    return export_onnx(
        model,
        path,
        stage=options.stage,
        post=post,
        dynamic_batch=options.dynamic_batch,
        opset=options.opset,
        exporter=options.exporter,
        calibration=calibration,
        quant=quant,
        fp32_path=fp32_path,
    )


def _onnx_runner(path: Path, options: ExportOptions) -> Runner:
    from .onnx_format import OnnxRunner

    return OnnxRunner(path, threads=options.threads, raw_outputs=True)


def _executorch_export(
    model: SSD,
    path: Path,
    options: ExportOptions,
    calibration: list[np.ndarray] | None,
    fp32_path: Path | None,
) -> dict[str, Any]:
    from .executorch_format import export_executorch

    return export_executorch(model, path, stage=options.stage, post=options.postprocess_settings())


def _executorch_runner(path: Path, options: ExportOptions) -> Runner:
    from .executorch_format import ExecuTorchRunner

    return ExecuTorchRunner(path, stage=options.stage)


def _coreml_export(
    model: SSD,
    path: Path,
    options: ExportOptions,
    calibration: list[np.ndarray] | None,
    fp32_path: Path | None,
) -> dict[str, Any]:
    from .coreml_format import export_coreml

    return export_coreml(
        model,
        path,
        stage=options.stage,
        post=options.postprocess_settings(),
        compute_precision=options.compute_precision,
    )


def _coreml_runner(path: Path, options: ExportOptions) -> Runner:
    from .coreml_format import CoreMLRunner

    return CoreMLRunner(path, stage=options.stage)


def _coreml_static_check(
    path: Path, sidecar: dict[str, Any], model: SSD, precision: str
) -> Verdict | None:
    """The spec check where Core ML cannot run (Linux); None on macOS (run and compare)."""
    from .coreml_format import can_run_coreml, check_coreml_spec, spec_verdict

    if can_run_coreml():
        _, failures, _ = check_coreml_spec(path, sidecar, model=model)
        if failures:
            raise ExportError(f"{path.name}: Core ML spec check failed: {'; '.join(failures)}")
        return None
    return spec_verdict(path, sidecar, model=model, precision=precision)


def _tflite_export(
    model: SSD,
    path: Path,
    options: ExportOptions,
    calibration: list[np.ndarray] | None,
    fp32_path: Path | None,
) -> dict[str, Any]:
    from .tflite_format import export_tflite

    return export_tflite(
        model,
        path,
        stage=options.stage,
        post=options.postprocess_settings(),
        calibration=calibration,
        fp32_path=fp32_path,
        per_channel=options.per_channel,
    )


def _tflite_runner(path: Path, options: ExportOptions) -> Runner:
    from .tflite_format import TFLiteRunner

    return TFLiteRunner(path, stage=options.stage, threads=options.threads)


BACKENDS: dict[str, _Backend] = {
    "onnx": _Backend(
        export=_onnx_export,
        runner=_onnx_runner,
        batch_size=lambda o: 4 if o.dynamic_batch else 1,
    ),
    "executorch": _Backend(
        export=_executorch_export,
        runner=_executorch_runner,
        batch_size=lambda o: 1,
    ),
    "coreml": _Backend(
        export=_coreml_export,
        runner=_coreml_runner,
        batch_size=lambda o: 1,
        static_check=_coreml_static_check,
    ),
    "tflite": _Backend(
        export=_tflite_export,
        runner=_tflite_runner,
        batch_size=lambda o: 1,
    ),
}


# ------------------------------------------------------------------------------------- helpers
def with_image_size(model: SSD, image_size: tuple[int, int]) -> SSD:
    """The same weights at another input size (anchors regenerated for the new feature maps)."""
    size = (int(image_size[0]), int(image_size[1]))
    if size == tuple(model.image_size):
        return model
    config = ModelConfig.from_dict({**model.config.to_dict(), "image_size": list(size)})
    resized = build_ssd(config)
    resized.load_state_dict(model.state_dict(), strict=True)
    return resized.eval()


def _pick_images(options: ExportOptions) -> tuple[list[np.ndarray] | None, list[np.ndarray], str]:
    """Calibration images (or None) and verification images with a label of where they came from.

    Verification uses ``verify_images`` when given; otherwise calibration-folder images that were
    not used for calibration (all of them when the folder is small); otherwise generated images.
    """
    cal_paths: list[Path] = []
    rest: list[Path] = []
    calibration = None
    if options.calibration not in (None, "", "synthetic"):
        all_paths = list_images(options.calibration)
        cal_paths = list_images(options.calibration, options.num_calibration_images)
        chosen = set(cal_paths)
        rest = [p for p in all_paths if p not in chosen]
    if options.int8:
        if options.calibration == "synthetic":
            calibration = generated_images(options.num_calibration_images, seed=1)
        else:
            calibration = [read_rgb(p) for p in cal_paths]
    n = options.num_verify_images
    if options.verify_images not in (None, "", "synthetic"):
        verify = [read_rgb(p) for p in list_images(options.verify_images, n)]
        source = str(options.verify_images)
    elif cal_paths:
        pool = rest if rest else cal_paths
        idx = np.linspace(0, len(pool) - 1, min(n, len(pool))).round().astype(int)
        verify = [read_rgb(pool[i]) for i in sorted(set(idx.tolist()))]
        source = str(options.calibration) + ("" if rest else " (same images as calibration)")
    else:
        verify = generated_images(n, seed=12345)
        source = "generated images"
    return calibration, verify, source


def _map_ground_truth(options: ExportOptions, dataset: Any | None) -> tuple[Any | None, str]:
    """Ground truth for the int8 mAP check: ``dataset``, ``map_annotations``, or the
    ``annotations.json`` next to ``verify_images``; ``(None, "")`` when there is none."""
    if dataset is not None:
        return dataset, getattr(dataset, "name", "the given dataset")
    source = options.map_annotations or find_annotations(options.verify_images)
    if not source:
        return None, ""
    return load_eval_dataset(source), str(source)


# ------------------------------------------------------------------------------------------ API
def export_model(
    model: SSD,
    classes: list[str],
    out_dir: str | Path,
    options: ExportOptions | None = None,
    *,
    name: str = "model",
    strict: bool = True,
    log: Callable[[str], None] | None = print,
    eval_dataset: Any | None = None,
) -> ExportResult:
    """Export ``model`` into ``out_dir`` as ``<name><suffix>`` plus ``<name>.json``.

    Args:
        model: the detector (eval mode).
        classes: class names for the sidecar.
        out_dir: output folder (created).
        options: what to export (defaults: ONNX, raw outputs, fp32, fixed batch 1).
        name: base file name when ``options.name`` is None.
        strict: raise :class:`ExportError` when an enforced verification fails.
        log: progress printer (None: silent).
        eval_dataset: ground truth (a :class:`~detector.data.DetectionDataset` of the model's
            classes) for the int8 COCO mAP check; None: ``options.map_annotations`` or the
            annotations next to ``options.verify_images``, if any.

    Returns:
        The :class:`ExportResult`.
    """
    options = options or ExportOptions()
    spec = options.check()
    say = log or (lambda _msg: None)
    if options.image_size is not None:
        model = with_image_size(model, tuple(options.image_size))
    model = model.eval()
    backend = BACKENDS[spec.name]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = options.name or name
    model_path = out_dir / f"{base}{spec.suffix}"
    sidecar_path = out_dir / f"{base}.json"
    fp32_path = out_dir / f"{base}_fp32{spec.suffix}" if options.int8 else None

    calibration_images, verify_images, verify_source = _pick_images(options)
    calibration = None
    if calibration_images is not None:
        calibration = list(image_batches(calibration_images, model.image_size))
    h, w = model.image_size
    say(
        f"exporting {spec.name} ({options.stage} outputs, {'int8' if options.int8 else 'fp32'}, "
        f"{'dynamic' if options.dynamic_batch else 'fixed'} batch, input {h}x{w}, "
        f"{model.num_anchors} anchors, {model.num_classes} classes) -> {model_path}"
    )
    facts = backend.export(model, model_path, options, calibration, fp32_path)
    if calibration is not None:
        facts.setdefault("quantization", {})["calibration"] = {
            "source": str(options.calibration),
            "num_images": len(calibration),
        }
    sidecar = build_sidecar(
        model,
        classes,
        file=model_path.name,
        format=spec.name,
        stage=options.stage,
        postprocess=options.postprocess_settings(),
        dynamic_batch=options.dynamic_batch,
        export_facts=facts,
    )
    verdicts: list[Verdict] = []
    if options.verify:
        checks = [(model_path, "int8" if options.int8 else "fp32")]
        if fp32_path is not None:
            checks.insert(0, (fp32_path, "fp32"))
        ground_truth, gt_source = (None, "")
        if options.int8:
            ground_truth, gt_source = _map_ground_truth(options, eval_dataset)
        for path, precision in checks:
            if backend.static_check is not None:
                static = backend.static_check(path, sidecar, model, precision)
                if static is not None:
                    say(f"{path.name}: {static.summary()}")
                    verdicts.append(static)
                    continue
            run = backend.runner(path, options)
            is_int8 = precision == "int8"
            verdict = verify_artifact(
                run,
                sidecar,
                model,
                verify_images,
                precision=precision,
                runtime=spec.runtime,
                image_source=verify_source,
                min_score=options.match_score,
                iou=options.match_iou,
                min_agreement=options.int8_min_agreement if is_int8 else options.min_agreement,
                raw_tolerance=None if is_int8 else options.raw_tolerance,
                batch_size=backend.batch_size(options),
            )
            if is_int8 and ground_truth is not None:
                comparison = compare_map(
                    run,
                    sidecar,
                    model,
                    ground_truth,
                    source=gt_source,
                    max_images=options.num_map_images,
                    batch_size=backend.batch_size(options),
                    max_drop=options.int8_max_map_drop,
                )
                verdict.map_change = comparison.to_dict()
                if not comparison.passed:
                    verdict.failures += comparison.failures
                    verdict.passed = False
            say(f"{path.name}: {verdict.summary()}")
            verdicts.append(verdict)
        sidecar["verification"] = [v.to_dict() for v in verdicts]
    write_sidecar(sidecar, sidecar_path)
    say(f"wrote {model_path} and {sidecar_path}")
    result = ExportResult(model_path, sidecar_path, sidecar, verdicts, fp32_path)
    if strict and not result.passed:
        failed = [v for v in verdicts if not v.passed]
        reasons = "; ".join(f"{v.precision}: {', '.join(v.failures)}" for v in failed)
        raise ExportError(
            f"verification FAILED for {model_path.name}: {reasons}. The files were written for "
            "inspection but do not reproduce the PyTorch model."
        )
    return result


def export_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    options: ExportOptions | None = None,
    *,
    use_ema: bool = True,
    strict: bool = True,
    log: Callable[[str], None] | None = print,
) -> ExportResult:
    """Load a training checkpoint and export it (see :func:`export_model`).

    The request is checked before the checkpoint is read.
    """
    from ..engine.checkpoint import load_detector

    options = options or ExportOptions()
    options.check()
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise ExportError(f"checkpoint={checkpoint}: file not found")
    model, classes = load_detector(checkpoint, use_ema=use_ema)
    return export_model(
        model, classes, out_dir, options, name=checkpoint.stem, strict=strict, log=log
    )


def options_from_dict(values: Mapping[str, Any]) -> ExportOptions:
    """:class:`ExportOptions` from a plain mapping; unknown keys are an error."""
    names = {f.name for f in dataclasses.fields(ExportOptions)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ExportError(f"unknown export options {unknown}")
    data = dict(values)
    if data.get("image_size") is not None:
        data["image_size"] = tuple(int(v) for v in data["image_size"])
    if data.get("quant_op_types") is not None:
        data["quant_op_types"] = tuple(data["quant_op_types"])
    if data.get("quant_exclude") is not None:
        data["quant_exclude"] = tuple(data["quant_exclude"])
    return ExportOptions(**data)
