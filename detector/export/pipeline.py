"""Export a model: check the request, write the artifact and its sidecar, verify.

:func:`export_checkpoint` is what ``detector export`` / ``export.py`` calls;
:func:`export_model` takes a model already in memory. Both check the request against the format
registry first (no work is done for an unsupported combination), then:

1. rebuild the model at ``image_size`` when asked (weights do not depend on the input size; the
   anchors are regenerated);
2. write ``<name><suffix>`` through the format's registry entry (:mod:`detector.export.registry`),
   int8 with calibration images when asked (:func:`~detector.export.images.pick_images`);
3. write ``<name>.json`` (:mod:`detector.export.sidecar`);
4. run the artifact in its runtime on sample images and compare with PyTorch
   (:mod:`detector.export.verify`, :mod:`detector.export.accuracy` for the int8 mAP change); the
   verdict is printed and stored in the sidecar. An fp32 artifact that does not match raises
   :class:`ExportError` (files are left for inspection).
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..models import SSD, with_image_size
from .accuracy import compare_map, map_ground_truth
from .config import ExportConfig
from .errors import ExportError
from .images import image_batches, pick_images
from .registry import ExportJob
from .sidecar import build_sidecar, write_sidecar
from .verify import Verdict, verify_artifact

__all__ = ["ExportResult", "export_checkpoint", "export_model", "with_image_size"]


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


def export_model(
    model: SSD,
    classes: list[str],
    out_dir: str | Path,
    config: ExportConfig | None = None,
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
        config: what to export (None: ONNX, raw outputs, fp32, fixed batch 1).
        name: base file name when ``config.name`` is None.
        strict: raise :class:`ExportError` when an enforced verification fails.
        log: progress printer (None: silent).
        eval_dataset: ground truth (a :class:`~detector.data.DetectionDataset` of the model's
            classes) for the int8 COCO mAP check; None: ``config.map_annotations`` or the
            annotations next to ``config.verify_images``, if any.

    Returns:
        The :class:`ExportResult`.
    """
    config = config or ExportConfig()
    fmt = config.check()
    say = log or (lambda _msg: None)
    if config.image_size is not None:
        model = with_image_size(model, tuple(config.image_size))
    model = model.eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = config.name or name
    model_path = out_dir / f"{base}{fmt.suffix}"
    sidecar_path = out_dir / f"{base}.json"
    fp32_path = out_dir / f"{base}_fp32{fmt.suffix}" if config.int8 else None

    calibration_images, verify_images, verify_source = pick_images(config)
    calibration = None
    if calibration_images is not None:
        calibration = list(image_batches(calibration_images, model.image_size))
    h, w = model.image_size
    say(
        f"exporting {fmt.name} ({config.stage} outputs, {'int8' if config.int8 else 'fp32'}, "
        f"{'dynamic' if config.dynamic_batch else 'fixed'} batch, input {h}x{w}, "
        f"{model.num_anchors} anchors, {model.num_classes} classes) -> {model_path}"
    )
    facts = fmt.export(ExportJob(model, model_path, config, calibration, fp32_path))
    if calibration is not None:
        facts.setdefault("quantization", {})["calibration"] = {
            "source": str(config.calibration),
            "num_images": len(calibration),
        }
    sidecar = build_sidecar(
        model,
        classes,
        file=model_path.name,
        format=fmt.name,
        stage=config.stage,
        postprocess=config.postprocess_settings(),
        dynamic_batch=config.dynamic_batch,
        export_facts=facts,
    )
    verdicts: list[Verdict] = []
    if config.verify:
        checks = [(model_path, "int8" if config.int8 else "fp32")]
        if fp32_path is not None:
            checks.insert(0, (fp32_path, "fp32"))
        ground_truth, gt_source = (None, "")
        if config.int8:
            ground_truth, gt_source = map_ground_truth(config, eval_dataset)
        for path, precision in checks:
            if fmt.static_check is not None:
                static = fmt.static_check(path, sidecar, model, precision)
                if static is not None:
                    say(f"{path.name}: {static.summary()}")
                    verdicts.append(static)
                    continue
            run = fmt.runner(path, config)
            is_int8 = precision == "int8"
            verdict = verify_artifact(
                run,
                sidecar,
                model,
                verify_images,
                precision=precision,
                runtime=fmt.runtime,
                image_source=verify_source,
                min_score=config.match_score,
                iou=config.match_iou,
                min_agreement=config.int8_min_agreement if is_int8 else config.min_agreement,
                raw_tolerance=None if is_int8 else config.raw_tolerance,
                batch_size=fmt.batch_size(config),
            )
            if is_int8 and ground_truth is not None:
                comparison = compare_map(
                    run,
                    sidecar,
                    model,
                    ground_truth,
                    source=gt_source,
                    max_images=config.num_map_images,
                    batch_size=fmt.batch_size(config),
                    max_drop=config.int8_max_map_drop,
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
    config: ExportConfig | None = None,
    *,
    use_ema: bool | None = None,
    strict: bool = True,
    log: Callable[[str], None] | None = print,
) -> ExportResult:
    """Load a training checkpoint and export it (see :func:`export_model`).

    The request is checked before the checkpoint is read. ``use_ema`` (None: ``config.use_ema``)
    takes the EMA weights when the checkpoint has them.
    """
    from ..engine.checkpoint import CheckpointError, load_detector

    config = config or ExportConfig()
    config.check()
    from ..builtin_weights import available_checkpoints, resolve_checkpoint

    try:  # a file, or a built-in name such as "face"
        checkpoint = resolve_checkpoint(checkpoint)
    except FileNotFoundError:
        raise ExportError(
            f"checkpoint={checkpoint}: file not found, and not a built-in checkpoint name; "
            f"built-in checkpoints:\n{available_checkpoints()}"
        ) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the safe unpickler's notes on foreign pickles
            model, classes = load_detector(
                checkpoint, use_ema=config.use_ema if use_ema is None else use_ema
            )
    except CheckpointError as exc:
        raise ExportError(_unreadable(checkpoint, exc)) from exc
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:  # read, but does not build
        raise ExportError(_unloadable(checkpoint, exc)) from exc
    return export_model(
        model, classes, out_dir, config, name=checkpoint.stem, strict=strict, log=log
    )


def _unreadable(path: Path, exc: Exception) -> str:
    """One line saying why ``path`` is not a checkpoint we can export (no torch advice to load it
    unsafely: a detector checkpoint never needs ``weights_only=False``)."""
    cause = exc.__cause__
    if path.is_file() and path.stat().st_size == 0:
        why = "empty file (0 bytes)"
    elif cause is None:  # read, but not a detector checkpoint (or a newer format)
        return f"checkpoint={path}: {str(exc).removeprefix(f'{path}: ')}"
    elif isinstance(cause, pickle.UnpicklingError) and _holds_objects(path, cause):
        why = (
            "refused: the file holds Python objects other than tensors and plain containers, "
            "which a detector checkpoint never does (nothing in it was run)"
        )
    elif isinstance(cause, (EOFError, RuntimeError)):
        why = "truncated or corrupt file (not a complete PyTorch checkpoint)"
    else:
        why = "not a PyTorch checkpoint"
    return f"checkpoint={path}: cannot read it: {why}"


def _unloadable(path: Path, exc: Exception) -> str:
    """One line for a checkpoint that was read but does not build a detector."""
    if "state_dict" in str(exc):
        why = "its weights do not fit the model its model_config describes"
    else:
        lines = str(exc).strip().splitlines()
        why = f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return f"checkpoint={path}: not a detector checkpoint this version can load ({why})"


def _holds_objects(path: Path, error: Exception) -> bool:
    """Whether the safe unpickler refused ``path`` for what it holds (a class or function to load,
    or a raw pickle) rather than for not being a pickle at all."""
    with path.open("rb") as f:
        head = f.read(4)
    return "GLOBAL" in str(error) or head[:1] == pickle.PROTO or head == b"PK\x03\x04"
