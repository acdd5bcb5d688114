"""Augmentation presets built with albumentations.

Presets are plain Python functions returning a :class:`DetectionTransform` (a callable
``Sample -> Sample``); :func:`build_transforms` picks one by name for the config system:

* ``ssd``: the SSD paper's training augmentation: photometric distortion (brightness, contrast,
  saturation, hue, each with probability 0.5, contrast first or last), zoom-out ("expand") onto a
  canvas filled with the mean colour, the minimum-IoU random crop sampler, horizontal flip, resize.
* ``ssdlite``: minimum-IoU crop and flip, then resize (torchvision's SSDlite recipe).
* ``none``: resize only (evaluation; also what ``train=False`` gives for every preset).

The model input size comes from the model config and resizing is always the last step, so every
output image is exactly ``image_size``. Boxes are pixel xyxy throughout; the one
:func:`bbox_params` function sets how albumentations clips them to the image, drops boxes with too
little area left visible, and keeps labels aligned.
"""

from __future__ import annotations

import inspect
import os
import random
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network call on import

import albumentations as A
import cv2
import numpy as np
from albumentations.augmentations.crops.transforms import BaseCrop

from detector.data.base import Sample

__all__ = [
    "PRESETS",
    "DetectionTransform",
    "MinIoURandomCrop",
    "ZoomOut",
    "bbox_params",
    "build_transforms",
    "eval_transform",
    "photometric_distort",
    "ssd_train",
    "ssdlite_train",
]

#: SSD's crop sampler: the minimum IoU a crop must have with some box (1.0 = keep the image).
SSD_IOU_OPTIONS: tuple[float, ...] = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)


def bbox_params(*, min_visibility: float = 0.0, min_size: float = 1.0) -> A.BboxParams:
    """The albumentations box handling used by every preset (the only place it is built).

    Boxes are pixel xyxy (``pascal_voc``) with their labels in the ``labels`` field. Input boxes
    are clipped to the image and degenerate ones dropped; after each spatial step, boxes with less
    than ``min_visibility`` of their area left inside the image, or narrower or lower than
    ``min_size`` pixels, are dropped together with their labels, and the rest clipped.

    Args:
        min_visibility: smallest visible share of a box's area to keep it (0 keeps any sliver).
        min_size: smallest width and height in pixels.
    """
    return A.BboxParams(
        format="pascal_voc",
        label_fields=["labels"],
        min_visibility=min_visibility,
        min_width=min_size,
        min_height=min_size,
        clip=True,
        filter_invalid_bboxes=True,
    )


class ZoomOut(A.DualTransform):
    """SSD "expand": place the image at a random spot of a canvas up to ``max_scale`` times larger.

    The canvas is filled with ``fill`` (the dataset mean, so the padding looks neutral after
    normalisation). Together with the final resize this creates small objects.

    Args:
        max_scale: largest canvas side relative to the image side (the scale is uniform in
            ``[1, max_scale]``, the same for both sides).
        fill: canvas colour (RGB).
        p: probability.
    """

    class InitSchema(A.DualTransform.InitSchema):
        max_scale: float
        fill: tuple[float, ...]

    def __init__(
        self, max_scale: float = 4.0, fill: Sequence[float] = (127, 127, 127), p: float = 0.5
    ):
        super().__init__(p=p)
        if max_scale < 1:
            raise ValueError(f"max_scale must be >= 1, got {max_scale}")
        self.max_scale = float(max_scale)
        self.fill = tuple(float(v) for v in fill)

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        h, w = params["shape"][:2]
        scale = self.py_random.uniform(1.0, self.max_scale)
        ch, cw = round(h * scale), round(w * scale)
        left = self.py_random.randint(0, cw - w)
        top = self.py_random.randint(0, ch - h)
        return {"canvas": (ch, cw), "offset": (left, top)}

    def apply(
        self, img: np.ndarray, canvas: tuple[int, int], offset: tuple[int, int], **params: Any
    ) -> np.ndarray:
        h, w = img.shape[:2]
        left, top = offset
        channels = img.shape[2] if img.ndim == 3 else 1
        value = [self.fill[min(c, len(self.fill) - 1)] for c in range(channels)]
        if channels > 4:  # beyond what OpenCV border filling supports
            out = np.empty((canvas[0], canvas[1], channels), dtype=img.dtype)
            out[...] = np.asarray(value, dtype=img.dtype)
            out[top : top + h, left : left + w] = img
            return out
        # one pass writing border and copy (much faster than filling, then pasting)
        return cv2.copyMakeBorder(
            img,
            top,
            canvas[0] - h - top,
            left,
            canvas[1] - w - left,
            cv2.BORDER_CONSTANT,
            value=value,
        ).reshape(canvas[0], canvas[1], *img.shape[2:])

    def apply_to_mask(
        self, mask: np.ndarray, canvas: tuple[int, int], offset: tuple[int, int], **params: Any
    ) -> np.ndarray:
        out = np.zeros((canvas[0], canvas[1], *mask.shape[2:]), dtype=mask.dtype)
        left, top = offset
        out[top : top + mask.shape[0], left : left + mask.shape[1]] = mask
        return out

    def apply_to_bboxes(
        self, bboxes: np.ndarray, canvas: tuple[int, int], offset: tuple[int, int], **params: Any
    ) -> np.ndarray:
        if not bboxes.size:
            return bboxes
        h, w = params["shape"][:2]
        ch, cw = canvas
        left, top = offset
        out = bboxes.copy()
        out[:, [0, 2]] = (bboxes[:, [0, 2]] * w + left) / cw
        out[:, [1, 3]] = (bboxes[:, [1, 3]] * h + top) / ch
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("max_scale", "fill")


class MinIoURandomCrop(BaseCrop):
    """SSD's random crop sampler (as in the SSD paper and torchvision's ``RandomIoUCrop``).

    Each call draws a minimum IoU from ``iou_options`` (``>= 1`` keeps the whole image), then up
    to ``trials`` crops with sides ``[min_scale, max_scale]`` of the image's and aspect ratio in
    ``aspect_range``. A crop is accepted when the centre of at least one box lies inside it and
    one of those boxes overlaps the crop with at least the drawn IoU. Boxes whose centre falls
    outside the crop are dropped, the others clipped to it. After ``max_draws`` failed draws the
    image is kept whole. Images without boxes get a plain random crop of the same scale range.

    Args:
        min_scale: smallest crop side relative to the image side.
        max_scale: largest crop side relative to the image side.
        aspect_range: allowed crop width/height ratios.
        iou_options: minimum IoU choices.
        trials: crops tried per draw.
        max_draws: draws before giving up.
        p: probability.
    """

    class InitSchema(BaseCrop.InitSchema):
        min_scale: float
        max_scale: float
        aspect_range: tuple[float, float]
        iou_options: tuple[float, ...]
        trials: int
        max_draws: int

    def __init__(
        self,
        min_scale: float = 0.3,
        max_scale: float = 1.0,
        aspect_range: tuple[float, float] = (0.5, 2.0),
        iou_options: Sequence[float] = SSD_IOU_OPTIONS,
        trials: int = 40,
        max_draws: int = 50,
        p: float = 1.0,
    ):
        super().__init__(p=p)
        self.min_scale = float(min_scale)
        self.max_scale = float(max_scale)
        self.aspect_range = (float(aspect_range[0]), float(aspect_range[1]))
        self.iou_options = tuple(float(v) for v in iou_options)
        self.trials = int(trials)
        self.max_draws = int(max_draws)

    def _random_windows(self, h: int, w: int) -> np.ndarray:
        """Up to ``trials`` candidate windows ``[K, 4]`` (x0, y0, x1, y1) with valid shape."""
        r = self.random_generator.random((self.trials, 4))
        span = self.max_scale - self.min_scale
        cw = (w * (self.min_scale + span * r[:, 0])).astype(np.int64)
        ch = (h * (self.min_scale + span * r[:, 1])).astype(np.int64)
        ratio = cw / np.maximum(ch, 1)
        ok = (
            (cw >= 1)
            & (ch >= 1)
            & (ratio >= self.aspect_range[0])
            & (ratio <= self.aspect_range[1])
        )
        left = ((w - cw) * r[:, 2]).astype(np.int64)
        top = ((h - ch) * r[:, 3]).astype(np.int64)
        return np.stack([left, top, left + cw, top + ch], axis=1)[ok]

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        h, w = params["shape"][:2]
        whole = (0, 0, w, h)
        bboxes = data.get("bboxes")
        boxes = (
            np.zeros((0, 4))
            if bboxes is None or len(bboxes) == 0
            else np.asarray(bboxes, dtype=np.float64)[:, :4] * [w, h, w, h]
        )
        cx = (boxes[:, 0] + boxes[:, 2]) / 2
        cy = (boxes[:, 1] + boxes[:, 3]) / 2
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        for _ in range(self.max_draws):
            min_iou = self.py_random.choice(self.iou_options)
            if min_iou >= 1.0:
                return {"crop_coords": whole}
            wins = self._random_windows(h, w)
            if len(wins) == 0:
                continue
            if len(boxes) == 0:
                return {"crop_coords": tuple(int(v) for v in wins[0])}
            x0, y0, x1, y1 = (wins[:, k : k + 1] for k in range(4))  # [K, 1] against [N] boxes
            inside = (cx > x0) & (cx < x1) & (cy > y0) & (cy < y1)
            iw = np.clip(np.minimum(boxes[:, 2], x1) - np.maximum(boxes[:, 0], x0), 0, None)
            ih = np.clip(np.minimum(boxes[:, 3], y1) - np.maximum(boxes[:, 1], y0), 0, None)
            inter = iw * ih
            iou = inter / np.maximum(area + (x1 - x0) * (y1 - y0) - inter, 1e-9)
            good = np.flatnonzero((np.where(inside, iou, -1.0) >= min_iou).any(axis=1))
            if len(good):
                return {"crop_coords": tuple(int(v) for v in wins[good[0]])}
        return {"crop_coords": whole}

    def apply_to_bboxes(
        self, bboxes: np.ndarray, crop_coords: tuple[int, int, int, int], **params: Any
    ) -> np.ndarray:
        if bboxes.size:
            h, w = params["shape"][:2]
            x0, y0, x1, y1 = crop_coords
            cx = (bboxes[:, 0] + bboxes[:, 2]) * (w / 2)
            cy = (bboxes[:, 1] + bboxes[:, 3]) * (h / 2)
            bboxes = bboxes[(cx > x0) & (cx < x1) & (cy > y0) & (cy < y1)]
        return super().apply_to_bboxes(bboxes, crop_coords=crop_coords, **params)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("min_scale", "max_scale", "aspect_range", "iou_options", "trials", "max_draws")


def _jitter(p: float, **factors: tuple[float, float]) -> A.ColorJitter:
    """A ColorJitter that changes only the given component(s) (identity factors are no-ops)."""
    args: dict[str, tuple[float, float]] = {
        "brightness": (1.0, 1.0),
        "contrast": (1.0, 1.0),
        "saturation": (1.0, 1.0),
        "hue": (0.0, 0.0),
    }
    args.update(factors)
    return A.ColorJitter(**args, p=p)


def photometric_distort(
    *,
    brightness: float = 0.125,
    contrast: float = 0.5,
    saturation: float = 0.5,
    hue: float = 0.05,
    p: float = 0.5,
    p_channel_shuffle: float = 0.0,
) -> A.BaseCompose:
    """SSD photometric distortion (same ranges as torchvision's ``RandomPhotometricDistort``).

    Brightness, contrast, saturation and hue each change with probability ``p`` by a factor drawn
    from ``1 +/- amount`` (hue: a shift of ``+/- hue`` turns). Contrast comes first or last with
    equal probability, as in the SSD paper. Optionally the colour channels are permuted (SSD's
    Caffe recipe leaves that off; torchvision's default has it on with probability 0.5).

    Args:
        brightness: relative brightness change.
        contrast: relative contrast change.
        saturation: relative saturation change.
        hue: hue shift in turns (``0.05`` = 18 degrees).
        p: probability of each of the four changes.
        p_channel_shuffle: probability of a random channel permutation.
    """

    def contrast_step() -> A.ColorJitter:
        return _jitter(p, contrast=(1 - contrast, 1 + contrast))

    def colour_steps() -> list[A.ColorJitter]:
        return [
            _jitter(p, saturation=(1 - saturation, 1 + saturation)),
            _jitter(p, hue=(-hue, hue)),
        ]

    steps: list[Any] = [
        _jitter(p, brightness=(1 - brightness, 1 + brightness)),
        A.OneOf(
            [
                A.Sequential([contrast_step(), *colour_steps()], p=1.0),
                A.Sequential([*colour_steps(), contrast_step()], p=1.0),
            ],
            p=1.0,
        ),
    ]
    if p_channel_shuffle > 0:
        steps.append(A.ChannelShuffle(p=p_channel_shuffle))
    return A.Sequential(steps, p=1.0)


class DetectionTransform:
    """Callable ``Sample -> Sample`` around an albumentations ``Compose``.

    The output image is ``uint8 [H, W, 3]`` of the configured size; boxes are pixel xyxy in the
    output image (``float32 [N, 4]``), labels stay aligned (``int64 [N]``), ``orig_size`` and the
    other sample fields are kept.

    Attributes:
        compose: the albumentations pipeline.
        image_size: output ``(H, W)``.
        name: preset name.
    """

    def __init__(
        self, compose: A.Compose, image_size: tuple[int, int], name: str, seed: int | None = None
    ) -> None:
        self.compose = compose
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.name = name
        self.set_seed(seed)

    def __call__(self, sample: Sample) -> Sample:
        out = self.compose(image=sample.image, bboxes=sample.boxes, labels=sample.labels)
        boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
        labels = np.asarray(out["labels"], dtype=np.int64).reshape(-1)
        image = out["image"]
        h, w = image.shape[:2]
        if len(boxes):  # albumentations already clips and filters; this is a cheap guarantee
            np.clip(boxes[:, 0::2], 0, w, out=boxes[:, 0::2])
            np.clip(boxes[:, 1::2], 0, h, out=boxes[:, 1::2])
            ok = (
                (boxes[:, 2] > boxes[:, 0])
                & (boxes[:, 3] > boxes[:, 1])
                & np.isfinite(boxes).all(1)
            )
            if not ok.all():
                boxes, labels = boxes[ok], labels[ok]
        return sample.replace(image=np.ascontiguousarray(image), boxes=boxes, labels=labels)

    def set_seed(self, seed: int | None) -> None:
        """Reseed the pipeline (see :class:`detector.data.SeededTransformDataset`); ``None``: fresh entropy.

        All steps share one ``numpy`` and one ``random`` generator. (albumentations'
        ``Compose.set_random_seed`` instead gives every step its own generator with the same
        seed, which makes their random decisions identical: with it, a flip would always come
        with a zoom-out.) Cheap enough to call per sample.
        """
        self.compose.set_random_state(np.random.default_rng(seed), random.Random(seed))

    def __repr__(self) -> str:
        return f"DetectionTransform(name={self.name!r}, image_size={self.image_size}, compose={self.compose!r})"


def _compose(
    transforms: list[Any],
    image_size: tuple[int, int],
    *,
    min_visibility: float,
    min_size: float,
) -> A.Compose:
    h, w = image_size
    return A.Compose(
        [*transforms, A.Resize(height=h, width=w, interpolation=cv2.INTER_LINEAR)],
        bbox_params=bbox_params(min_visibility=min_visibility, min_size=min_size),
        strict=False,
    )


def ssd_train(
    image_size: tuple[int, int],
    *,
    mean_fill: Sequence[int] = (127, 127, 127),
    p_flip: float = 0.5,
    p_photometric: float = 0.5,
    p_channel_shuffle: float = 0.0,
    p_zoom_out: float = 0.5,
    max_zoom_out: float = 4.0,
    min_crop_scale: float = 0.3,
    min_visibility: float = 0.0,
    min_size: float = 1.0,
    seed: int | None = None,
) -> DetectionTransform:
    """The SSD training pipeline: distort, zoom out, min-IoU crop, flip, resize.

    Args:
        image_size: model input ``(H, W)``.
        mean_fill: zoom-out canvas colour (RGB), normally the dataset mean.
        p_flip: horizontal flip probability.
        p_photometric: probability of each photometric change (0 disables them).
        p_channel_shuffle: probability of a channel permutation.
        p_zoom_out: zoom-out probability.
        max_zoom_out: largest zoom-out factor.
        min_crop_scale: smallest crop side relative to the image side.
        min_visibility: see :func:`bbox_params`.
        min_size: see :func:`bbox_params`.
        seed: seed of the pipeline's generators (``None``: fresh entropy).
    """
    steps: list[Any] = []
    if p_photometric > 0 or p_channel_shuffle > 0:
        steps.append(photometric_distort(p=p_photometric, p_channel_shuffle=p_channel_shuffle))
    if p_zoom_out > 0 and max_zoom_out > 1:
        steps.append(ZoomOut(max_scale=max_zoom_out, fill=mean_fill, p=p_zoom_out))
    steps.append(MinIoURandomCrop(min_scale=min_crop_scale))
    if p_flip > 0:
        steps.append(A.HorizontalFlip(p=p_flip))
    compose = _compose(steps, image_size, min_visibility=min_visibility, min_size=min_size)
    return DetectionTransform(compose, image_size, "ssd", seed)


def ssdlite_train(
    image_size: tuple[int, int],
    *,
    p_flip: float = 0.5,
    min_crop_scale: float = 0.3,
    min_visibility: float = 0.0,
    min_size: float = 1.0,
    seed: int | None = None,
) -> DetectionTransform:
    """The SSDlite training pipeline: min-IoU crop, flip, resize.

    Args:
        image_size: model input ``(H, W)``.
        p_flip: horizontal flip probability.
        min_crop_scale: smallest crop side relative to the image side.
        min_visibility: see :func:`bbox_params`.
        min_size: see :func:`bbox_params`.
        seed: seed of the pipeline's generators.
    """
    steps: list[Any] = [MinIoURandomCrop(min_scale=min_crop_scale)]
    if p_flip > 0:
        steps.append(A.HorizontalFlip(p=p_flip))
    compose = _compose(steps, image_size, min_visibility=min_visibility, min_size=min_size)
    return DetectionTransform(compose, image_size, "ssdlite", seed)


def eval_transform(
    image_size: tuple[int, int], *, seed: int | None = None, **_: Any
) -> DetectionTransform:
    """Resize only (evaluation). Predictions map back to the original image by the size ratio.

    Args:
        image_size: model input ``(H, W)``.
        seed: accepted for a uniform signature (the pipeline is deterministic).
    """
    compose = _compose([], image_size, min_visibility=0.0, min_size=0.0)
    return DetectionTransform(compose, image_size, "none", seed)


PRESETS = {"ssd": ssd_train, "ssdlite": ssdlite_train, "none": eval_transform}


def build_transforms(
    preset: str,
    image_size: Sequence[int] | int,
    *,
    train: bool,
    mean_fill: Sequence[int] = (127, 127, 127),
    p_flip: float = 0.5,
    min_visibility: float = 0.0,
    min_size: float = 1.0,
    seed: int | None = None,
    **knobs: Any,
) -> DetectionTransform:
    """Build a preset by name (the entry point for the config group).

    Args:
        preset: ``"ssd"``, ``"ssdlite"`` or ``"none"``.
        image_size: model input ``(H, W)`` (an int means square).
        train: training pipeline; ``False`` always gives the resize-only evaluation pipeline.
        mean_fill: zoom-out canvas colour (``ssd``).
        p_flip: horizontal flip probability.
        min_visibility: smallest visible share of a box to keep it after a crop.
        min_size: smallest box side in pixels.
        seed: pipeline seed.
        **knobs: further keyword arguments of the preset functions (e.g. ``max_zoom_out``,
            ``p_zoom_out``, ``p_photometric``, ``min_crop_scale``). Options that some preset
            takes but the chosen one does not (``max_zoom_out`` for ``ssdlite``) are ignored, so
            one config schema serves every preset.

    Raises:
        ValueError: unknown preset, bad size, or an option no preset takes.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r} (choose from {sorted(PRESETS)})")
    size = (
        (int(image_size), int(image_size))
        if isinstance(image_size, int)
        else tuple(int(v) for v in image_size)
    )
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"image_size must be (H, W), got {image_size!r}")
    known = {name for fn in PRESETS.values() for name in inspect.signature(fn).parameters}
    unknown = sorted(set(knobs) - known)
    if unknown:
        raise ValueError(
            f"unknown augmentation option(s) {unknown} (known: {sorted(known - {'image_size'})})"
        )
    if not train or preset == "none":
        return eval_transform(size, seed=seed)
    options = {
        "mean_fill": mean_fill,
        "p_flip": p_flip,
        "min_visibility": min_visibility,
        "min_size": min_size,
        "seed": seed,
        **knobs,
    }
    # a config group carries every knob; a preset takes those that apply to it
    fn = PRESETS[preset]
    accepted = inspect.signature(fn).parameters
    return fn(size, **{k: v for k, v in options.items() if k in accepted})
