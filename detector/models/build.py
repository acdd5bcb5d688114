"""Builders: typed arguments in, :class:`SSD` out.

:func:`ssd_mobilenet_v1` is the explicit builder (in the spirit of torchvision's
``ssdlite320_mobilenet_v3_large``); :class:`ModelConfig` is the same set of arguments as a plain
dataclass, which checkpoints store (``dataclasses.asdict``) and :func:`build_ssd` rebuilds from.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from ..anchors import ANCHOR_PRESETS, AnchorSettings, build_anchor_generator
from .heads import HEAD_TYPES, SSDFeatureExtractor, SSDHead
from .layers import ACTIVATIONS, PADDINGS
from .mobilenet_v1 import MobileNetV1
from .ssd import SSD

__all__ = ["SCORE_FNS", "ModelConfig", "build_ssd", "ssd_mobilenet_v1", "with_image_size"]

SCORE_FNS = ("softmax", "sigmoid")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a detector (no weights).

    Attributes:
        num_classes: object classes, background excluded (VOC 20, COCO 80 or 90, faces 1).
        alpha: MobileNet width multiplier.
        min_depth: channel floor of the backbone.
        image_size: model input ``(H, W)``; any size (anchors follow the real feature maps).
        head: ``"ssd"`` (plain conv predictors, SSD extra layers) or ``"ssdlite"``
            (depthwise-separable predictors and extra layers).
        head_kernel_size: predictor kernel for ``"ssd"`` (1 as in the TF OD API, or 3).
        anchors: resolved anchor settings (see :mod:`detector.anchors`).
        activation: ``"relu6"`` or ``"relu"``.
        padding: ``"torch"`` or ``"tf"`` (TF ``"SAME"``).
        extra_depths: channels of the extra layers before ``alpha`` scaling (one feature map
            each; four in the TF config).
        extra_min_depth: channel floor of the extra layers.
        source_layers: backbone layers (TF ``Conv2d_i`` numbers, 0 = stem, 1..13 = blocks) whose
            outputs are the first feature maps; ``(11, 13)`` (strides 16 and 32) as in the TF
            config, ``(5, 11, 13)`` adds the stride-8 map for small objects such as faces.
        mean, std: input normalisation (applied inside the model to ``[0, 1]`` RGB).
        score_fn: ``"softmax"`` or ``"sigmoid"``.
    """

    num_classes: int = 20
    alpha: float = 1.0
    min_depth: int = 8
    image_size: tuple[int, int] = (300, 300)
    head: str = "ssd"
    head_kernel_size: int = 1
    anchors: AnchorSettings = field(default_factory=lambda: ANCHOR_PRESETS["tf"])
    activation: str = "relu6"
    padding: str = "torch"
    extra_depths: tuple[int, ...] = (512, 256, 256, 128)
    extra_min_depth: int = 16
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    score_fn: str = "softmax"
    source_layers: tuple[int, ...] = (11, 13)

    def __post_init__(self) -> None:
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        self.extra_depths = tuple(int(d) for d in self.extra_depths)
        self.source_layers = tuple(int(i) for i in self.source_layers)
        if (
            not self.source_layers
            or list(self.source_layers) != sorted(set(self.source_layers))
            or not 0 <= self.source_layers[0] <= self.source_layers[-1] <= 13
        ):
            raise ValueError(
                f"source_layers must be increasing backbone layer numbers in 0..13, "
                f"got {self.source_layers}"
            )
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        if isinstance(self.anchors, str):
            self.anchors = _anchor_settings(self.anchors)
        elif isinstance(self.anchors, dict):
            self.anchors = AnchorSettings(**self.anchors)
        _check_choice("head", self.head, HEAD_TYPES)
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("padding", self.padding, PADDINGS)
        _check_choice("score_fn", self.score_fn, SCORE_FNS)
        if self.num_classes < 1:
            raise ValueError(
                f"num_classes must be >= 1 (background excluded), got {self.num_classes}"
            )
        if self.alpha <= 0:
            raise ValueError(f"alpha must be positive, got {self.alpha}")
        if min(self.image_size) < 32:
            raise ValueError(f"image_size {self.image_size} is too small (need >= 32 px per side)")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists, numbers, strings), safe for ``torch.load(weights_only=True)``."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**data)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {choices}")


def _anchor_settings(anchors: str | AnchorSettings) -> AnchorSettings:
    if isinstance(anchors, AnchorSettings):
        return anchors
    if anchors not in ANCHOR_PRESETS:
        raise ValueError(
            f"unknown anchor preset {anchors!r}; choose one of {sorted(ANCHOR_PRESETS)}"
        )
    return ANCHOR_PRESETS[anchors]


def build_ssd(config: ModelConfig) -> SSD:
    """Build an SSD-MobileNetV1 from a :class:`ModelConfig` (random initialisation)."""
    backbone = MobileNetV1(
        config.alpha,
        config.min_depth,
        activation=config.activation,
        padding=config.padding,
    )
    features = SSDFeatureExtractor(
        backbone,
        config.extra_depths,
        extra_min_depth=config.extra_min_depth,
        depthwise_extras=config.head == "ssdlite",
        activation=config.activation,
        padding=config.padding,
        source_layers=config.source_layers,
    )
    # Feature-map shapes come from a dummy forward pass, never from the config.
    with torch.no_grad():
        was_training = features.training
        features.eval()
        maps = features(torch.zeros(1, 3, *config.image_size))
        features.train(was_training)
    shapes = [(int(m.shape[-2]), int(m.shape[-1])) for m in maps]
    generator = build_anchor_generator(config.anchors)
    expected = generator.settings.num_layers
    if expected is not None and expected != len(shapes):
        raise ValueError(
            f"the anchor settings describe {expected} feature levels but the model has "
            f"{len(shapes)} ({len(config.source_layers)} backbone layers {config.source_layers} "
            f"+ {len(config.extra_depths)} extra layers); change head.source_layers or "
            f"head.extra_depths to match"
        )
    anchors = generator.generate(shapes, config.image_size)
    head = SSDHead(
        features.out_channels,
        generator.num_anchors_per_location(len(shapes)),
        config.num_classes,
        head_type=config.head,
        kernel_size=config.head_kernel_size,
        activation=config.activation,
        padding=config.padding,
    )
    model = SSD(
        features,
        head,
        anchors,
        config.image_size,
        mean=config.mean,
        std=config.std,
        score_fn=config.score_fn,
    )
    model.config = config
    model.feature_shapes = shapes
    return model


def ssd_mobilenet_v1(
    num_classes: int,
    *,
    alpha: float = 1.0,
    min_depth: int = 8,
    image_size: tuple[int, int] = (300, 300),
    head: str = "ssd",
    head_kernel_size: int = 1,
    anchors: str | AnchorSettings = "tf",
    activation: str = "relu6",
    padding: str = "torch",
    extra_depths: tuple[int, ...] = (512, 256, 256, 128),
    extra_min_depth: int = 16,
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
    std: tuple[float, float, float] = (0.5, 0.5, 0.5),
    score_fn: str = "softmax",
    source_layers: tuple[int, ...] = (11, 13),
) -> SSD:
    """SSD with a MobileNetV1 backbone, as the TF Object Detection API's ``ssd_mobilenet_v1``.

    Args:
        num_classes: object classes, background excluded.
        alpha: width multiplier of the backbone and the extra layers.
        min_depth: backbone channel floor.
        image_size: input ``(H, W)``; any size.
        head: ``"ssd"`` or ``"ssdlite"``.
        head_kernel_size: predictor kernel for ``"ssd"`` (1 = TF OD API config, 3 = Caffe style).
        anchors: preset name (``"tf"``, ``"caffe"``, ``"face"``) or explicit settings.
        activation: ``"relu6"`` or ``"relu"``.
        padding: ``"torch"`` or ``"tf"``.
        extra_depths: extra-layer channels before ``alpha`` scaling.
        extra_min_depth: extra-layer channel floor (16 as in the TF config).
        mean, std: normalisation of the ``[0, 1]`` RGB input (0.5/0.5 = TF's ``x/127.5 - 1``).
        score_fn: ``"softmax"`` (SSD) or ``"sigmoid"`` (TF OD API models).
        source_layers: backbone layers feeding the first feature maps (``(11, 13)`` as TF;
            ``(5, 11, 13)`` adds stride 8). Levels = ``len(source_layers) + len(extra_depths)``.

    Returns:
        An :class:`SSD` whose ``forward`` gives ``(box_deltas [B, A, 4], class_logits
        [B, A, num_classes + 1])`` and whose ``anchors`` buffer is ``[A, 4]`` normalised xyxy.
    """
    config = ModelConfig(
        num_classes=num_classes,
        alpha=alpha,
        min_depth=min_depth,
        image_size=tuple(image_size),
        head=head,
        head_kernel_size=head_kernel_size,
        anchors=_anchor_settings(anchors),
        activation=activation,
        padding=padding,
        extra_depths=tuple(extra_depths),
        extra_min_depth=extra_min_depth,
        mean=tuple(mean),
        std=tuple(std),
        score_fn=score_fn,
        source_layers=tuple(source_layers),
    )
    return build_ssd(config)


def with_image_size(model: SSD, image_size: tuple[int, int] | list[int]) -> SSD:
    """The same weights at another input size ``(H, W)``: the model is rebuilt (its anchors
    follow the new feature maps) and the weights, which do not depend on the input size, are
    loaded strictly. Returns ``model`` itself when the size is already ``image_size``."""
    size = (int(image_size[0]), int(image_size[1]))
    if size == tuple(model.image_size):
        return model
    config = ModelConfig.from_dict({**model.config.to_dict(), "image_size": list(size)})
    resized = build_ssd(config)
    resized.load_state_dict(model.state_dict(), strict=True)
    return resized.train(model.training)
