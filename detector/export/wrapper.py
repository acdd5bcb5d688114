"""Export wrappers: the SSD network plus the part of post-processing that goes in the graph.

* :class:`Postprocess` maps raw head outputs to decoded boxes and scores (``stage="decoded"``) or
  to fixed-size padded detections (``stage="nms"``). It uses only tensor ops and one custom op,
  :func:`onnx_nms`, which runs ONNX ``NonMaxSuppression`` semantics in eager mode and becomes that
  ONNX operator when exported.
* :class:`ExportWrapper` is ``model`` followed by :class:`Postprocess` (or nothing, ``raw``): the
  single module whose outputs an exported artifact must reproduce.

The in-graph NMS reproduces :func:`detector.postprocess.postprocess_detections` exactly (up to
score ties): per class the ``topk_candidates`` best anchors, candidates scoring strictly above
``score_thresh``, class-wise NMS, then the ``max_detections`` best over all classes. In the graph
that is one multi-class ``NonMaxSuppression`` over the shared decoded boxes (scores
``[B, C, A]``), after zeroing, in the rare classes with more than ``topk_candidates`` candidates,
the scores below their k-th best: no per-class top-k over every anchor and no gather of
``C * k`` candidate boxes, which made decode + NMS cost more than the int8 network. Boxes stay
normalised to the model input (``[0, 1]`` xyxy, clipped when ``clip_boxes``); multiply by the
original ``(W, H, W, H)`` to get pixels, as the reference does before clipping (IoU and clipping
commute with that scaling).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms

from ..box_ops import BoxCoder
from ..models import SSD
from .config import STAGES
from .errors import ExportError

__all__ = ["ExportWrapper", "Postprocess", "fold_batchnorm", "onnx_nms", "output_names"]


@torch.library.custom_op("detector_export::nms", mutates_args=())
def onnx_nms(
    boxes: Tensor,
    scores: Tensor,
    max_output_per_class: int,
    iou_threshold: float,
    score_threshold: float,
) -> Tensor:
    """ONNX ``NonMaxSuppression`` (``center_point_box=0``) in eager PyTorch.

    Args:
        boxes: ``Tensor[B, K, 4]`` xyxy boxes of ``B`` images.
        scores: ``Tensor[B, C, K]`` the score of every box for each of ``C`` classes; each
            ``(image, class)`` pair is an independent NMS problem over that image's boxes.
        max_output_per_class: keep at most this many boxes per problem.
        iou_threshold: suppress boxes overlapping a kept one by more than this.
        score_threshold: consider boxes scoring strictly above this.

    Returns:
        ``Tensor[S, 3]`` int64 ``(image, class, box)`` triples, problem by problem, by
        decreasing score within a problem.
    """
    b, k = boxes.shape[0], boxes.shape[1]
    c = scores.shape[1]
    flat_scores = scores.reshape(-1)  # index (image * C + class) * K + box
    cand = (flat_scores > score_threshold).nonzero().squeeze(1)
    problem = torch.div(cand, k, rounding_mode="floor")
    image = torch.div(problem, c, rounding_mode="floor")
    cand_boxes = boxes.reshape(-1, 4)[image * k + cand % k]
    kept = cand[batched_nms(cand_boxes, flat_scores[cand], problem, iou_threshold)]
    kept_problem = torch.div(kept, k, rounding_mode="floor")
    # Group by problem keeping the score order, then cap each problem's count.
    order = torch.sort(kept_problem, stable=True).indices
    kept, kept_problem = kept[order], kept_problem[order]
    counts = torch.bincount(kept_problem, minlength=b * c)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(kept.numel(), device=boxes.device) - starts[kept_problem]
    capped = rank < max_output_per_class
    kept, kept_problem = kept[capped], kept_problem[capped]
    triples = (torch.div(kept_problem, c, rounding_mode="floor"), kept_problem % c, kept % k)
    return torch.stack(triples, dim=1).to(torch.int64)


@onnx_nms.register_fake
def _onnx_nms_fake(boxes, scores, max_output_per_class, iou_threshold, score_threshold):
    num = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((num, 3), dtype=torch.int64)


class Postprocess(nn.Module):
    """Raw SSD outputs to decoded boxes/scores or to padded NMS detections.

    Args:
        anchors: ``Tensor[A, 4]`` normalised xyxy anchors.
        stage: ``"decoded"`` or ``"nms"``.
        score_fn: ``"softmax"`` or ``"sigmoid"``.
        box_coder: delta coder (``BoxCoder()`` if None).
        score_thresh, nms_thresh, topk_candidates, max_detections, clip_boxes: as
            :func:`detector.postprocess.postprocess_detections`.

    Shapes:
        ``forward(box_deltas [B, A, 4], class_logits [B, A, C + 1])`` returns

        * ``decoded``: ``boxes [B, A, 4]`` normalised xyxy, ``scores [B, A, C + 1]`` (column 0 is
          the background);
        * ``nms``: ``boxes [B, M, 4]`` normalised xyxy, ``scores [B, M]``, ``labels [B, M]`` int64
          in ``1..C``, ``count [B]`` int64, with ``M = min(max_detections, C * topk)``; rows past
          ``count`` are padding (zeros, label 0), valid rows come first by decreasing score.
    """

    def __init__(
        self,
        anchors: Tensor,
        *,
        stage: str = "nms",
        score_fn: str = "softmax",
        box_coder: BoxCoder | None = None,
        score_thresh: float = 0.01,
        nms_thresh: float = 0.45,
        topk_candidates: int = 400,
        max_detections: int = 200,
        clip_boxes: bool = True,
    ) -> None:
        super().__init__()
        if stage not in ("decoded", "nms"):
            raise ValueError(f"Postprocess stage must be 'decoded' or 'nms', got {stage!r}")
        if score_fn not in ("softmax", "sigmoid"):
            raise ValueError(f"unknown score_fn {score_fn!r}")
        if topk_candidates < 1 or max_detections < 1:
            raise ValueError("topk_candidates and max_detections must be >= 1")
        if not 0.0 <= score_thresh < 1.0:
            raise ValueError(f"score_thresh must be in [0, 1), got {score_thresh}")
        self.stage = stage
        self.score_fn = score_fn
        self.box_coder = box_coder if box_coder is not None else BoxCoder()
        self.score_thresh = float(score_thresh)
        self.nms_thresh = float(nms_thresh)
        self.topk_candidates = int(topk_candidates)
        self.max_detections = int(max_detections)
        self.clip_boxes = bool(clip_boxes)
        self.register_buffer("anchors", anchors.detach().to(torch.float32).clone())

    def decode(self, box_deltas: Tensor, class_logits: Tensor) -> tuple[Tensor, Tensor]:
        boxes = self.box_coder.decode(box_deltas, self.anchors)
        if self.clip_boxes:
            boxes = boxes.clamp(0.0, 1.0)
        if self.score_fn == "softmax":
            scores = class_logits.softmax(dim=-1)
        else:
            scores = class_logits.sigmoid()
        return boxes, scores

    def forward(self, box_deltas: Tensor, class_logits: Tensor) -> tuple[Tensor, ...]:
        boxes, scores = self.decode(box_deltas, class_logits)
        if self.stage == "decoded":
            return boxes, scores
        batch, num_anchors, num_cols = scores.shape
        num_classes = num_cols - 1
        k = min(self.topk_candidates, num_anchors)
        per_class = min(k, self.max_detections)
        # Transpose, then drop the background row: a contiguous slice, cheaper than a strided one.
        class_scores = scores.transpose(1, 2)[:, 1:]  # [B, C, A]
        problem_scores = class_scores.reshape(batch * num_classes, num_anchors)
        if k < num_anchors:
            problem_scores = self._keep_topk(problem_scores, k)
        # One NMS problem per (image, class) over all the image's boxes, which share the
        # decoded boxes: no per-class gather of candidate boxes.
        selected = onnx_nms(
            boxes,
            problem_scores.reshape(batch, num_classes, num_anchors),
            per_class,
            self.nms_thresh,
            self.score_thresh,
        )
        image, cls, anchor = selected[:, 0], selected[:, 1], selected[:, 2]
        problem = image * num_classes + cls
        sel_scores = problem_scores.reshape(-1).index_select(0, problem * num_anchors + anchor)
        # The max_detections best over all classes, per image: [B, S] table of the selected
        # scores (-1 where a row belongs to another image), padded by M columns of -1.
        m = min(self.max_detections, num_classes * k)
        mine = image.unsqueeze(0) == torch.arange(batch, device=image.device).unsqueeze(1)
        table = torch.where(mine, sel_scores.unsqueeze(0), torch.full_like(sel_scores, -1.0))
        table = torch.cat((table, table.new_full((batch, m), -1.0)), dim=1)
        det_scores, pos = table.topk(m, dim=1)
        valid = det_scores > -0.5
        pad = anchor.new_zeros(m)
        pos = pos.reshape(-1)
        flat_box = torch.cat((image * num_anchors + anchor, pad)).index_select(0, pos)
        det_boxes = boxes.reshape(-1, 4).index_select(0, flat_box).reshape(batch, m, 4)
        labels = torch.cat((cls + 1, pad)).index_select(0, pos).reshape(batch, m)
        det_boxes = torch.where(valid.unsqueeze(-1), det_boxes, torch.zeros_like(det_boxes))
        det_scores = torch.where(valid, det_scores, torch.zeros_like(det_scores))
        labels = torch.where(valid, labels, torch.zeros_like(labels))
        count = valid.to(torch.int64).sum(dim=1)
        return det_boxes, det_scores, labels, count

    def _keep_topk(self, problem_scores: Tensor, k: int) -> Tensor:
        """Zero every score outside its class's ``k`` best (zero never passes the threshold).

        Only classes with more than ``k`` candidates above the threshold need it (usually none
        at a deployment threshold), so the top-k runs on those rows alone instead of over every
        class and anchor.

        Args:
            problem_scores: ``Tensor[B * C, A]`` scores per (image, class).
        """
        # Scores lie in [0, 1] and the threshold in [0, 1), so ceil(score - threshold) is 1 above
        # it and 0 otherwise: a count in two cheap float ops (ONNX Runtime sums a cast bool
        # tensor several times slower).
        above = torch.ceil(problem_scores - self.score_thresh).sum(dim=1)
        crowded = (above > k).nonzero().squeeze(1)
        rows = problem_scores.index_select(0, crowded)
        kth = rows.topk(k, dim=1, sorted=False).values.min(dim=1).values
        # Per (image, class) the lowest score kept: 0 (any score) or the k-th best.
        cut = torch.zeros_like(problem_scores[:, 0]).scatter(0, crowded, kth)
        # Zero scores never pass the (non-negative, strict) score threshold.
        return problem_scores * (problem_scores >= cut.unsqueeze(1)).to(problem_scores.dtype)


def output_names(stage: str) -> list[str]:
    """Names of the graph outputs of each stage."""
    if stage == "raw":
        return ["box_deltas", "class_logits"]
    if stage == "decoded":
        return ["boxes", "scores"]
    if stage == "nms":
        return ["boxes", "scores", "labels", "count"]
    raise ValueError(f"unknown stage {stage!r}; choose one of {STAGES}")


#: The raw head outputs, by name, in ``SSD.forward`` order.
RAW_NAMES = ("box_deltas", "class_logits")


def program_output_names(stage: str, format_name: str) -> list[str]:
    """Outputs of a fixed-graph program (ExecuTorch, TFLite, Core ML) of ``stage``, in order.

    A ``decoded`` program also returns the raw head outputs after ``boxes`` and ``scores``, so
    verification can compare them with PyTorch; such formats have no ``nms`` stage.

    Raises:
        ExportError: a stage the format cannot end with.
    """
    if stage == "raw":
        return list(RAW_NAMES)
    if stage == "decoded":
        return [*output_names("decoded"), *RAW_NAMES]
    raise ExportError(f"format={format_name} does not support stage {stage!r}")


class DecodedWithRaw(nn.Module):
    """``ExportWrapper`` with decoding that also returns the raw head outputs
    (:func:`program_output_names` order)."""

    def __init__(self, wrapper: ExportWrapper) -> None:
        super().__init__()
        self.wrapper = wrapper

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        box_deltas, class_logits = self.wrapper.model(images)
        boxes, scores = self.wrapper.post(box_deltas, class_logits)
        return boxes, scores, box_deltas, class_logits


def program_module(model: SSD, stage: str, post: dict | None = None) -> nn.Module:
    """The module a fixed-graph program (ExecuTorch, Core ML) of ``stage`` is exported from:
    outputs in :func:`program_output_names` order (BatchNorm folded, eval mode)."""
    wrapper = ExportWrapper(model, decode=stage == "decoded", **(post or {})).eval()
    return wrapper if stage == "raw" else DecodedWithRaw(wrapper).eval()


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every ``conv -> bn`` pair of :func:`detector.models.layers.conv_bn_act` in place.

    The module must be in eval mode; each BatchNorm becomes ``nn.Identity`` and its conv gains
    the folded bias. Outputs are unchanged up to float rounding (~1e-6 relative).
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if module.training:
        raise ValueError("fold_batchnorm needs a module in eval mode")
    for sub in module.modules():
        conv, bn = getattr(sub, "conv", None), getattr(sub, "bn", None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            sub.conv = fuse_conv_bn_eval(conv, bn)
            sub.bn = nn.Identity()
    return module


class ExportWrapper(nn.Module):
    """``model`` plus in-graph post-processing: what an exported artifact computes.

    Args:
        model: the trained :class:`SSD` (copied; the original is left untouched).
        decode: end the graph after decoding: ``boxes [B, A, 4]``, ``scores [B, A, C + 1]``.
        nms: end the graph after NMS (implies ``decode``): padded ``boxes, scores, labels,
            count`` (see :class:`Postprocess`).
        fold_bn: fold BatchNorm into the convolutions (cleaner graph, same outputs).
        **post: ``score_thresh``, ``nms_thresh``, ``topk_candidates``, ``max_detections``,
            ``clip_boxes``, ``box_coder`` for :class:`Postprocess`.

    With neither ``decode`` nor ``nms`` the outputs are the model's own ``(box_deltas,
    class_logits)``.
    """

    def __init__(
        self, model: SSD, *, decode: bool = False, nms: bool = False, fold_bn: bool = True, **post
    ) -> None:
        super().__init__()
        net = copy.deepcopy(model).eval()
        if fold_bn:
            fold_batchnorm(net)
        self.model = net
        self.stage = "nms" if nms else "decoded" if decode else "raw"
        self.post = (
            None
            if self.stage == "raw"
            else Postprocess(model.anchors, stage=self.stage, score_fn=model.score_fn, **post)
        )

    @property
    def output_names(self) -> list[str]:
        return output_names(self.stage)

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        box_deltas, class_logits = self.model(images)
        if self.post is None:
            return box_deltas, class_logits
        return self.post(box_deltas, class_logits)
