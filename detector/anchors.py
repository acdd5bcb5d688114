"""SSD anchor (prior box) generation from the real feature-map shapes.

The model runs a dummy forward pass, collects the ``(H, W)`` of every feature map that feeds a
detection head and hands them to :meth:`AnchorGenerator.generate`. Nothing here assumes a
feature-map size: the same settings give 1917 anchors at 300x300, 2034 at 320x320 and 5118 at
512x512 for the MobileNet-SSD backbone.

Two anchor styles are supported with one flat settings schema (:class:`AnchorConfig`):

* ``"tf"``: the TF Object Detection API ``ssd_anchor_generator`` (``MultipleGridAnchorGenerator``)
  as configured in ``ssd_mobilenet_v1_coco``: linearly spaced scales, one box per aspect ratio,
  an extra "interpolated" box at ``sqrt(s_i * s_{i+1})`` appended **last**, and a reduced
  3-box first layer.
* ``"caffe"``: Caffe-SSD ``PriorBox`` as used by chuanqi305's MobileNet-SSD: per cell the
  ``min_size`` square, the ``sqrt(min_size * max_size)`` square (second), then one box per
  aspect ratio and its flip.

Conventions:

* Output anchors are ``Tensor[A, 4]`` float32, normalised ``xyxy`` (``x`` divided by the input
  width, ``y`` by the input height). They are not clipped unless ``clip=True`` and may reach
  outside ``[0, 1]``.
* Anchor order is level by level (in the order of ``feature_shapes``), then row-major over the
  cells (``y`` then ``x``), then the slot inside the cell. This is the order of an NCHW head output
  permuted to NHWC and flattened.
* Anchor sizes (TF scales, Caffe ``min_sizes``/``max_sizes``) are fractions of the **shorter input
  side**, so an aspect-ratio-1 anchor is square in pixels for any input, including non-square
  ones (TF's ``MultipleGridAnchorGenerator`` does the same with ``min_im_shape``). For a
  non-square input the normalised width and height of such a box therefore differ.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import Tensor

__all__ = [
    "ANCHOR_PRESETS",
    "ANCHOR_STYLES",
    "AnchorConfig",
    "AnchorGenerator",
    "build_anchor_generator",
    "load_anchor_presets",
]

ANCHOR_STYLES = ("tf", "caffe")

# Tolerance used to drop duplicate aspect ratios (Caffe PriorBox does the same).
_RATIO_EPS = 1e-6


@dataclass
class AnchorConfig:
    """Anchor settings for both styles in one flat, Hydra-friendly schema.

    Only ``str``/``float``/``int``/``bool`` and ``tuple[float, ...]``/``tuple[int, ...]`` fields:
    this dataclass is also the Hydra schema of the ``anchors`` group (``conf/anchors/*.yaml``;
    OmegaConf hands tuples over as lists, which are turned back into tuples; not frozen, since
    Hydra composes into the schema's fields). Fields of the other
    style are ignored.
    The defaults of the TF fields are ``ssd_mobilenet_v1_coco``'s and those of the Caffe fields are
    chuanqi305 MobileNet-SSD's (``ANCHOR_PRESETS["tf"]`` / ``["caffe"]`` differ only in ``style``).

    Attributes:
        style: ``"tf"`` (TF Object Detection API ``ssd_anchor_generator``) or ``"caffe"``
            (Caffe-SSD ``PriorBox``).
        min_scale: TF: scale of the first layer, as a fraction of the shorter input side.
        max_scale: TF: scale of the last layer. Layer ``i`` of ``L`` has scale
            ``min_scale + (max_scale - min_scale) * i / (L - 1)``; a scale of ``1.0`` follows the
            last layer (used only by the interpolated box).
        aspect_ratios: TF: aspect ratios (``w / h``) of the boxes of every layer but a reduced
            first layer, one box of the layer's scale each, in this order.
        interpolated_scale_aspect_ratio: TF: aspect ratio of the extra box of scale
            ``sqrt(s_i * s_{i+1})`` appended last in every layer (but a reduced first layer);
            ``<= 0`` disables that box.
        reduce_boxes_in_lowest_layer: TF: the first layer gets only the three boxes
            ``[(0.1, 1.0), (min_scale, 2.0), (min_scale, 0.5)]`` as ``(scale, ratio)``.
        min_sizes: Caffe: flat tuple of ``min_size`` values, fractions of the shorter input side
            (``60 px / 300 px = 0.2``), so they work at any input size. Each produces a square
            box; layers own consecutive runs of it (see ``sizes_per_layer``).
        max_sizes: Caffe: ``max_size`` paired with each entry of ``min_sizes`` (same length, or
            empty for none); ``0`` means no ``max_size`` for that entry. A non-zero value adds the
            square ``sqrt(min_size * max_size)`` right after the ``min_size`` square.
        sizes_per_layer: Caffe: how many consecutive entries of ``min_sizes`` each layer owns.
            Empty means one per layer (so ``len(min_sizes)`` layers).
        caffe_aspect_ratios: Caffe: flat tuple of aspect ratios (``w / h``, besides the implicit
            1), layers own consecutive runs of it (see ``caffe_aspect_ratio_counts``). Every
            ratio adds ``w = min_size * sqrt(r), h = min_size / sqrt(r)`` after the squares of
            each ``min_size``; ratios equal to 1 or repeated are skipped, as in Caffe.
        caffe_aspect_ratio_counts: Caffe: how many consecutive entries of
            ``caffe_aspect_ratios`` each layer owns. Empty means every layer uses all of them.
        flip: Caffe: also add ``1 / r`` right after each ratio ``r``.
        steps: Caffe: optional per-layer stride in input pixels (Caffe ``step``): cell centres
            are ``(x + offset) * step``. Empty (the default) uses ``input_size / feature_size``
            per axis as a float, i.e. the cells tile the input exactly.
        offset: Caffe: centre offset inside a cell, in cells (``0.5`` = cell centre). TF always
            uses the cell centre.
        clip: Caffe: clip the anchors to ``[0, 1]`` (xyxy). TF anchors are never clipped.
    """

    style: str = "tf"
    # --- TF Object Detection API ssd_anchor_generator -------------------------------------
    min_scale: float = 0.2
    max_scale: float = 0.95
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)
    interpolated_scale_aspect_ratio: float = 1.0
    reduce_boxes_in_lowest_layer: bool = True
    # --- Caffe-SSD PriorBox -----------------------------------------------------------------
    min_sizes: tuple[float, ...] = (0.2, 0.35, 0.5, 0.65, 0.8, 0.95)
    max_sizes: tuple[float, ...] = (0.0, 0.5, 0.65, 0.8, 0.95, 1.0)
    sizes_per_layer: tuple[int, ...] = ()
    caffe_aspect_ratios: tuple[float, ...] = (2.0, 2.0, 3.0, 2.0, 3.0, 2.0, 3.0, 2.0, 3.0, 2.0, 3.0)
    caffe_aspect_ratio_counts: tuple[int, ...] = (1, 2, 2, 2, 2, 2)
    flip: bool = True
    steps: tuple[float, ...] = ()
    offset: float = 0.5
    clip: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):  # lists (from YAML / Hydra) become tuples: a hashable value type
            value = getattr(self, f.name)
            if isinstance(value, list) or (
                isinstance(value, Sequence) and not isinstance(value, (str, tuple))
            ):
                setattr(self, f.name, tuple(value))
        if self.style not in ANCHOR_STYLES:
            raise ValueError(
                f"unknown anchor style {self.style!r}; expected one of {ANCHOR_STYLES}"
            )
        if self.style == "tf":
            if not self.aspect_ratios:
                raise ValueError("tf anchors need at least one aspect ratio")
            if any(r <= 0 for r in self.aspect_ratios):
                raise ValueError(f"aspect ratios must be positive, got {self.aspect_ratios}")
            return
        if not self.min_sizes:
            raise ValueError("caffe anchors need at least one min_size")
        if any(s <= 0 for s in self.min_sizes):
            raise ValueError(f"min_sizes must be positive, got {self.min_sizes}")
        if self.max_sizes and len(self.max_sizes) != len(self.min_sizes):
            raise ValueError(
                f"max_sizes must pair with min_sizes ({len(self.max_sizes)} vs {len(self.min_sizes)})"
            )
        if self.sizes_per_layer and (
            sum(self.sizes_per_layer) != len(self.min_sizes) or min(self.sizes_per_layer) < 1
        ):
            raise ValueError(
                f"sizes_per_layer {self.sizes_per_layer} must be positive and sum to "
                f"len(min_sizes) = {len(self.min_sizes)}"
            )
        if any(r <= 0 for r in self.caffe_aspect_ratios):
            raise ValueError(f"aspect ratios must be positive, got {self.caffe_aspect_ratios}")
        counts = self.caffe_aspect_ratio_counts
        if counts and (sum(counts) != len(self.caffe_aspect_ratios) or min(counts) < 0):
            raise ValueError(
                f"caffe_aspect_ratio_counts {counts} must be >= 0 and sum to "
                f"len(caffe_aspect_ratios) = {len(self.caffe_aspect_ratios)}"
            )
        layers = len(self.sizes_per_layer) if self.sizes_per_layer else len(self.min_sizes)
        if counts and len(counts) != layers:
            raise ValueError(
                f"caffe_aspect_ratio_counts has {len(counts)} layers, min_sizes has {layers}"
            )
        if self.steps and len(self.steps) != layers:
            raise ValueError(f"steps has {len(self.steps)} layers, min_sizes has {layers}")

    @property
    def num_layers(self) -> int | None:
        """Number of feature levels the settings are written for (``None`` = any, TF style)."""
        if self.style == "tf":
            return None
        return len(self.sizes_per_layer) if self.sizes_per_layer else len(self.min_sizes)


def load_anchor_presets(folder: str | Path | None = None) -> dict[str, AnchorConfig]:
    """The anchor presets: one :class:`AnchorConfig` per YAML file of ``conf/anchors/``.

    The YAML files (shipped inside the package) are the only place the presets are written:
    ``tf`` (TF OD API ``ssd_mobilenet_v1_coco``), ``caffe`` (chuanqi305 MobileNet-SSD) and
    ``face`` (Ultra-Light's face boxes).
    """
    import yaml

    folder = Path(folder) if folder is not None else Path(__file__).parent / "conf" / "anchors"
    presets: dict[str, AnchorConfig] = {}
    for path in sorted(folder.glob("*.yaml")):
        values = yaml.safe_load(path.read_text()) or {}
        values.pop("defaults", None)
        presets[path.stem] = AnchorConfig(**values)
    return presets


#: Preset name -> settings, read from ``detector/conf/anchors/*.yaml``.
ANCHOR_PRESETS: dict[str, AnchorConfig] = load_anchor_presets()


class AnchorGenerator:
    """Generate SSD anchors for a list of feature-map shapes.

    Args:
        settings: the anchor settings (see :class:`AnchorConfig` and :data:`ANCHOR_PRESETS`).

    Example:
        >>> gen = AnchorGenerator(ANCHOR_PRESETS["tf"])
        >>> shapes = [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
        >>> gen.generate(shapes, (300, 300)).shape
        torch.Size([1917, 4])
    """

    def __init__(self, settings: AnchorConfig) -> None:
        if not isinstance(settings, AnchorConfig):
            raise TypeError(f"expected AnchorConfig, got {type(settings).__name__}")
        self.settings = settings

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings!r})"

    def num_anchors_per_location(self, num_levels: int) -> list[int]:
        """Number of anchors per feature-map cell of each level.

        Args:
            num_levels: number of feature maps (detection heads).

        Returns:
            ``num_levels`` integers, e.g. ``[3, 6, 6, 6, 6, 6]`` for both 6-level presets.

        Raises:
            ValueError: if the settings describe a fixed number of levels (Caffe style) that
                differs from ``num_levels``.
        """
        return [len(level) for level in self._box_specs(num_levels)]

    def generate(
        self,
        feature_shapes: Sequence[tuple[int, int]],
        image_size: tuple[int, int],
        *,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Anchors for the given feature maps.

        Args:
            feature_shapes: ``(H, W)`` of each feature map, in head order (as measured by a
                forward pass of the model, not taken from a config).
            image_size: ``(H, W)`` of the model input in pixels.
            device: device of the returned tensor (CPU by default).

        Returns:
            ``Tensor[A, 4]`` float32 anchors, normalised ``xyxy``, with
            ``A = sum(H_l * W_l * k_l)`` and ``k_l = num_anchors_per_location(L)[l]``; ordered by
            level, then cell (row-major), then slot.
        """
        img_h, img_w = (float(v) for v in image_size)
        if img_h <= 0 or img_w <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        shapes = [(int(h), int(w)) for h, w in feature_shapes]
        if not shapes or any(h < 1 or w < 1 for h, w in shapes):
            raise ValueError(
                f"feature_shapes must be non-empty positive (H, W) pairs, got {shapes}"
            )
        s = self.settings
        specs = self._box_specs(len(shapes))
        short = min(img_h, img_w)
        per_level = []
        for level, ((fh, fw), boxes) in enumerate(zip(shapes, specs)):
            # Cell centres, normalised. Default stride: the cells tile the input exactly.
            if s.style == "caffe" and s.steps:
                step_y, step_x = s.steps[level] / img_h, s.steps[level] / img_w
            else:
                step_y, step_x = 1.0 / fh, 1.0 / fw
            offset = s.offset if s.style == "caffe" else 0.5
            cy = (torch.arange(fh, dtype=torch.float64) + offset) * step_y
            cx = (torch.arange(fw, dtype=torch.float64) + offset) * step_x
            # Box sizes: fractions of the shorter side -> pixels -> normalised per axis.
            wh = torch.tensor(boxes, dtype=torch.float64)  # [k, 2] (w, h) fractions
            half_w = 0.5 * wh[:, 0] * short / img_w
            half_h = 0.5 * wh[:, 1] * short / img_h
            cy_g = cy.view(fh, 1, 1).expand(fh, fw, len(boxes))
            cx_g = cx.view(1, fw, 1).expand(fh, fw, len(boxes))
            anchors = torch.stack(
                (cx_g - half_w, cy_g - half_h, cx_g + half_w, cy_g + half_h), dim=-1
            )
            per_level.append(anchors.reshape(-1, 4))
        out = torch.cat(per_level, dim=0)
        if s.style == "caffe" and s.clip:
            out = out.clamp(0.0, 1.0)
        return out.to(dtype=torch.float32, device=device)

    # ------------------------------------------------------------------------------------------
    def _box_specs(self, num_levels: int) -> list[list[tuple[float, float]]]:
        """Per level, the ``(w, h)`` of each slot as fractions of the shorter input side."""
        if num_levels < 1:
            raise ValueError(f"num_levels must be >= 1, got {num_levels}")
        if self.settings.style == "tf":
            return self._tf_specs(num_levels)
        return self._caffe_specs(num_levels)

    def _tf_specs(self, num_levels: int) -> list[list[tuple[float, float]]]:
        s = self.settings
        if num_levels == 1:
            scales = [s.min_scale]
        else:
            scales = [
                s.min_scale + (s.max_scale - s.min_scale) * i / (num_levels - 1)
                for i in range(num_levels)
            ]
        scales.append(1.0)
        specs = []
        for i in range(num_levels):
            if i == 0 and s.reduce_boxes_in_lowest_layer:
                scale_ratio = [(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)]
            else:
                scale_ratio = [(scales[i], r) for r in s.aspect_ratios]
                if s.interpolated_scale_aspect_ratio > 0.0:
                    scale_ratio.append(
                        (math.sqrt(scales[i] * scales[i + 1]), s.interpolated_scale_aspect_ratio)
                    )
            specs.append([_box_wh(scale, r) for scale, r in scale_ratio])
        return specs

    def _caffe_specs(self, num_levels: int) -> list[list[tuple[float, float]]]:
        s = self.settings
        if s.num_layers != num_levels:
            raise ValueError(
                f"caffe anchor settings describe {s.num_layers} feature levels, the model has "
                f"{num_levels}"
            )
        sizes_per_layer = s.sizes_per_layer or (1,) * num_levels
        counts = s.caffe_aspect_ratio_counts
        specs = []
        size_start = ratio_start = 0
        for level in range(num_levels):
            n_sizes = sizes_per_layer[level]
            if counts:
                layer_ratios = s.caffe_aspect_ratios[ratio_start : ratio_start + counts[level]]
                ratio_start += counts[level]
            else:
                layer_ratios = s.caffe_aspect_ratios
            ratios = _expand_ratios(layer_ratios, s.flip)
            boxes = []
            for k in range(size_start, size_start + n_sizes):
                min_size = s.min_sizes[k]
                boxes.append((min_size, min_size))
                max_size = s.max_sizes[k] if s.max_sizes else 0.0
                if max_size > 0:
                    side = math.sqrt(min_size * max_size)
                    boxes.append((side, side))
                boxes.extend(_box_wh(min_size, r) for r in ratios)
            size_start += n_sizes
            specs.append(boxes)
        return specs


def _box_wh(scale: float, ratio: float) -> tuple[float, float]:
    """``(w, h)`` of a box of the given scale and aspect ratio ``w / h``."""
    root = math.sqrt(ratio)
    return scale * root, scale / root


def _expand_ratios(ratios: Sequence[float], flip: bool) -> list[float]:
    """Caffe PriorBox ratio list without the implicit 1: ``[r1, 1/r1, r2, 1/r2, ...]``."""
    out: list[float] = []
    for r in ratios:
        for value in (r, 1.0 / r) if flip else (r,):
            if abs(value - 1.0) < _RATIO_EPS or any(abs(value - o) < _RATIO_EPS for o in out):
                continue
            out.append(value)
    return out


def build_anchor_generator(anchors: str | AnchorConfig | Mapping[str, object]) -> AnchorGenerator:
    """Build an :class:`AnchorGenerator` from a preset name, settings, or a plain mapping.

    Args:
        anchors: a key of :data:`ANCHOR_PRESETS` (``"tf"``, ``"caffe"``, ``"face"``), an
            :class:`AnchorConfig`, or a mapping of its fields (e.g. a Hydra/OmegaConf node
            converted to a dict; lists are turned into tuples).

    Returns:
        The anchor generator.

    Raises:
        ValueError: unknown preset name (the message lists the presets) or invalid settings.
        TypeError: unsupported argument type.
    """
    if isinstance(anchors, AnchorConfig):
        return AnchorGenerator(anchors)
    if isinstance(anchors, str):
        if anchors not in ANCHOR_PRESETS:
            raise ValueError(
                f"unknown anchor preset {anchors!r}; available presets: {sorted(ANCHOR_PRESETS)}"
            )
        return AnchorGenerator(ANCHOR_PRESETS[anchors])
    if isinstance(anchors, Mapping):
        known = {f.name for f in fields(AnchorConfig)}
        unknown = set(anchors) - known
        if unknown:
            raise ValueError(f"unknown anchor settings fields: {sorted(unknown)}")
        values = {
            k: tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else v
            for k, v in anchors.items()
        }
        return AnchorGenerator(AnchorConfig(**values))  # type: ignore[arg-type]
    raise TypeError(f"expected a preset name or AnchorConfig, got {type(anchors).__name__}")
