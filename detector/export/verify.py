"""Built-in verification: run an artifact in its own runtime and compare it with PyTorch.

Two numbers make the verdict:

* the largest absolute difference of the raw outputs (``box_deltas``, ``class_logits``) between
  the artifact and the PyTorch model on the same preprocessed images (every exported graph keeps
  those tensors by name, so they are read from the artifact itself);
* the fraction of PyTorch detections (score >= ``min_score``) that the artifact reproduces: same
  class and IoU >= ``iou``. PyTorch detections come from
  :func:`detector.postprocess.postprocess_detections`; the artifact's are read with the NumPy
  post-processing driven by the sidecar alone (:mod:`detector.export.numpy_post`), which checks
  the sidecar as well.

An fp32 export passes when the agreement reaches ``min_agreement`` (99%) and the raw difference
stays within ``raw_tolerance`` times the output scale; int8 exports are reported, not failed
(unless an int8 threshold is given).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..postprocess import postprocess_detections
from .images import preprocess
from .numpy_post import box_iou, detections_from_outputs
from .wrapper import RAW_NAMES

__all__ = ["Verdict", "match_detections", "verify_artifact"]


@dataclass
class Verdict:
    """Outcome of :func:`verify_artifact` (also stored in the sidecar)."""

    precision: str
    runtime: str
    num_images: int
    image_source: str
    max_abs_diff: dict[str, float]
    output_scale: dict[str, float]
    num_reference: int
    num_matched: int
    agreement: float | None
    min_score: float
    iou: float
    min_agreement: float | None
    raw_tolerance: float | None
    passed: bool
    failures: list[str] = field(default_factory=list)
    #: Matched fraction with the loose criterion (same class, IoU >= 0.5), for context.
    agreement_iou50: float | None = None
    #: Checks that passed besides the numbers (e.g. a Core ML spec check on Linux).
    checks: list[str] = field(default_factory=list)
    #: What this verdict could not check, and why.
    note: str = ""
    #: COCO mAP of PyTorch vs the artifact (``detector.export.accuracy.MapComparison.to_dict``).
    map_change: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        diffs = ", ".join(
            f"{k} {v:.3g} (scale {self.output_scale.get(k, float('nan')):.3g})"
            for k, v in self.max_abs_diff.items()
        )
        diffs = diffs or "not compared"
        if self.num_images == 0:
            agree = "not compared (no runtime)"
        elif self.agreement is None:
            agree = f"no PyTorch detections with score >= {self.min_score} on these images"
        else:
            agree = (
                f"{self.num_matched}/{self.num_reference} = {100 * self.agreement:.1f}% of PyTorch "
                f"detections (score >= {self.min_score}) matched (same class, IoU >= {self.iou})"
            )
            if self.agreement_iou50 is not None:
                agree += f"; {100 * self.agreement_iou50:.1f}% at IoU >= 0.5"
        status = "PASS" if self.passed else "FAIL"
        if self.precision == "int8" and self.min_agreement is None and self.passed:
            status = "REPORT (int8: agreement is reported, not enforced)"
            limit = (self.map_change or {}).get("max_drop")
            if limit is not None:
                status = f"PASS (COCO mAP loss within {limit:g} points; agreement reported)"
        lines = [
            f"verification [{self.precision}, {self.runtime}, {self.num_images} images from "
            f"{self.image_source}]: {status}",
            f"  max abs diff vs PyTorch: {diffs}",
            f"  detections: {agree}",
        ]
        if self.map_change is not None:
            m = self.map_change
            parts = [
                f"{k} {100 * m['reference'][k]:.2f} -> {100 * m['artifact'][k]:.2f} "
                f"({m['change_points'][k]:+.2f} points)"
                for k in m["reference"]
            ]
            lines.append(
                f"  COCO accuracy (PyTorch fp32 -> {self.precision} artifact, {m['num_images']} "
                f"images of {m['source']}): {'; '.join(parts)}"
            )
        if self.checks:
            lines.append(f"  checked: {'; '.join(self.checks)}")
        if self.note:
            lines.append(f"  note: {self.note}")
        lines += [f"  FAILED: {f}" for f in self.failures]
        return "\n".join(lines)


def match_detections(
    reference: Sequence[Mapping[str, Any]],
    candidate: Sequence[Mapping[str, Any]],
    *,
    min_score: float = 0.3,
    iou: float = 0.9,
) -> tuple[int, int]:
    """Count reference detections (score >= ``min_score``) matched by a candidate detection of the
    same class with IoU >= ``iou`` (greedy by reference score, one candidate per reference).

    Returns:
        ``(matched, total)`` over all images.
    """
    matched = total = 0
    for ref, cand in zip(reference, candidate):
        r_scores = np.asarray(ref["scores"], dtype=np.float64)
        r_boxes = np.asarray(ref["boxes"], dtype=np.float64).reshape(-1, 4)
        r_labels = np.asarray(ref["labels"]).reshape(-1)
        c_boxes = np.asarray(cand["boxes"], dtype=np.float64).reshape(-1, 4)
        c_labels = np.asarray(cand["labels"]).reshape(-1)
        used = np.zeros(len(c_labels), dtype=bool)
        ious = box_iou(r_boxes, c_boxes) if len(c_labels) else np.zeros((len(r_labels), 0))
        for i in np.argsort(-r_scores, kind="stable"):
            if r_scores[i] < min_score:
                continue
            total += 1
            ok = (c_labels == r_labels[i]) & ~used
            if not ok.any():
                continue
            row = np.where(ok, ious[i], -1.0)
            j = int(row.argmax())
            if row[j] >= iou:
                used[j] = True
                matched += 1
    return matched, total


def reference_detections(
    model, deltas: torch.Tensor, logits: torch.Tensor, sizes, post: Mapping[str, Any]
) -> list[dict[str, torch.Tensor]]:
    """PyTorch's detections from the model's raw outputs with a sidecar's ``postprocess``
    settings: what an exported artifact is compared with.

    Args:
        sizes: ``(H, W)`` of each original image.
        post: ``score_thresh``, ``nms_thresh``, ``topk_candidates``, ``max_detections``,
            ``clip_boxes``.
    """
    return postprocess_detections(
        deltas,
        logits,
        model.anchors,
        sizes,
        score_fn=model.score_fn,
        score_thresh=post["score_thresh"],
        nms_thresh=post["nms_thresh"],
        topk_candidates=post["topk_candidates"],
        max_detections=post["max_detections"],
        clip_boxes=post["clip_boxes"],
    )


def _to_numpy(det: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in det.items()}


def verify_artifact(
    run: Callable[[np.ndarray], Mapping[str, np.ndarray]],
    sidecar: Mapping[str, Any],
    model: torch.nn.Module,
    images: Sequence[np.ndarray],
    *,
    precision: str = "fp32",
    runtime: str = "onnxruntime",
    image_source: str = "generated images",
    min_score: float = 0.3,
    iou: float = 0.9,
    min_agreement: float | None = 0.99,
    raw_tolerance: float | None = 1e-3,
    batch_size: int = 1,
) -> Verdict:
    """Compare an artifact with the PyTorch model on ``images``.

    Args:
        run: the artifact in its runtime: ``float32 [N, 3, H, W]`` -> outputs by name, including
            ``box_deltas`` and ``class_logits`` (see ``OnnxRunner(raw_outputs=True)``).
        sidecar: the artifact's sidecar (stage, anchors, score and NMS settings).
        model: the PyTorch :class:`~detector.models.SSD` it was exported from.
        images: RGB ``uint8`` images of any size.
        precision: ``"fp32"`` or ``"int8"`` (only labels the report).
        min_score, iou: detection matching criteria.
        min_agreement: fail below this matched fraction (None: report only).
        raw_tolerance: fail when a raw max abs diff exceeds this times ``max(1, max |output|)``
            (None: report only).
        batch_size: images per call of ``run`` (1 for fixed-batch graphs).

    Returns:
        The :class:`Verdict`.
    """
    image_size = tuple(sidecar["input"]["height_width"])
    sizes = [(int(im.shape[0]), int(im.shape[1])) for im in images]
    post = sidecar["postprocess"]
    diffs: dict[str, float] = {}
    scales: dict[str, float] = {}
    ref_dets: list[dict[str, np.ndarray]] = []
    art_dets: list[dict[str, np.ndarray]] = []
    model = model.eval()
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        chunk_sizes = sizes[start : start + batch_size]
        x = preprocess(chunk, image_size)
        with torch.no_grad():
            deltas, logits = model(torch.from_numpy(x))
        ref = {"box_deltas": deltas.numpy(), "class_logits": logits.numpy()}
        out = run(x)
        for name in RAW_NAMES:
            if name in out:
                d = float(np.abs(out[name].astype(np.float64) - ref[name]).max())
                diffs[name] = max(diffs.get(name, 0.0), d)
                scales[name] = max(scales.get(name, 0.0), float(np.abs(ref[name]).max()))
        dets = reference_detections(model, deltas, logits, chunk_sizes, post)
        ref_dets += [_to_numpy(d) for d in dets]
        art_dets += detections_from_outputs(out, sidecar, chunk_sizes)
    matched, total = match_detections(ref_dets, art_dets, min_score=min_score, iou=iou)
    agreement = matched / total if total else None
    loose, _ = match_detections(ref_dets, art_dets, min_score=min_score, iou=0.5)
    failures = []
    if min_agreement is not None and agreement is not None and agreement < min_agreement:
        failures.append(
            f"only {100 * agreement:.1f}% of PyTorch detections reproduced "
            f"(need {100 * min_agreement:.0f}%)"
        )
    if raw_tolerance is not None:
        for name, d in diffs.items():
            limit = raw_tolerance * max(1.0, scales[name])
            if not d <= limit:
                failures.append(f"{name} differs from PyTorch by {d:.3g} (> {limit:.3g})")
    if not diffs:
        failures.append("the artifact does not expose box_deltas/class_logits to compare")
    return Verdict(
        precision=precision,
        runtime=runtime,
        num_images=len(images),
        image_source=image_source,
        max_abs_diff=diffs,
        output_scale=scales,
        num_reference=total,
        num_matched=matched,
        agreement=agreement,
        min_score=min_score,
        iou=iou,
        min_agreement=min_agreement,
        raw_tolerance=raw_tolerance,
        passed=not failures,
        failures=failures,
        agreement_iou50=loose / total if total else None,
    )
