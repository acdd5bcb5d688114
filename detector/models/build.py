"""Builders: typed arguments in, :class:`SSD` out.

:func:`ssd_mobilenet_v1` is the explicit builder (in the spirit of torchvision's
``ssdlite320_mobilenet_v3_large``); :class:`ModelConfig` is the same set of arguments as a plain
dataclass, which checkpoints store (``dataclasses.asdict``) and :func:`build_ssd` rebuilds from.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..anchors import ANCHOR_PRESETS, AnchorConfig, build_anchor_generator
from .heads import HEAD_TYPES, SSDFeatureExtractor, SSDHead
from .layers import ACTIVATIONS, PADDINGS
from .mobilenet_v1 import MobileNetV1
from .ssd import SSD

__all__ = [
    "SCORE_FNS",
    "ModelConfig",
    "build_ssd",
    "check_model_size",
    "estimate_model_size",
    "ssd_mobilenet_v1",
    "with_image_size",
]

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
    anchors: AnchorConfig = field(default_factory=lambda: ANCHOR_PRESETS["tf"])
    activation: str = "relu6"
    padding: str = "torch"
    extra_depths: tuple[int, ...] = (512, 256, 256, 128)
    extra_min_depth: int = 16
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    score_fn: str = "softmax"
    source_layers: tuple[int, ...] = (11, 13)

    def __post_init__(self) -> None:
        # Types first (a checkpoint's config is untrusted input), then values, then the size
        # estimate: nothing is allocated for a config that fails here.
        self.num_classes = _int_field("num_classes", self.num_classes, 1, MAX_CLASSES)
        self.alpha = _real_field("alpha", self.alpha, above=0.0)
        self.min_depth = _int_field("min_depth", self.min_depth, 1, MAX_CHANNELS)
        self.image_size = tuple(_int_list("image_size", self.image_size, 32, MAX_IMAGE_SIDE, 2))
        self.head_kernel_size = _int_field("head_kernel_size", self.head_kernel_size, 1, 7)
        self.extra_depths = tuple(_int_list("extra_depths", self.extra_depths, 1, MAX_CHANNELS))
        self.extra_min_depth = _int_field("extra_min_depth", self.extra_min_depth, 1, MAX_CHANNELS)
        self.source_layers = tuple(_int_list("source_layers", self.source_layers, 0, 13))
        if (
            not self.source_layers
            or list(self.source_layers) != sorted(set(self.source_layers))
            or not 0 <= self.source_layers[0] <= self.source_layers[-1] <= 13
        ):
            raise ValueError(
                f"source_layers must be increasing backbone layer numbers in 0..13, "
                f"got {self.source_layers}"
            )
        self.mean = tuple(_real_field("mean", v) for v in _sequence("mean", self.mean, 3))
        self.std = tuple(_real_field("std", v, above=0.0) for v in _sequence("std", self.std, 3))
        if isinstance(self.anchors, str):
            self.anchors = _anchor_settings(self.anchors)
        elif isinstance(self.anchors, dict):
            try:
                self.anchors = AnchorConfig(**self.anchors)
            except TypeError as exc:  # unknown or missing keys
                raise ValueError(f"anchors: {exc}") from None
        elif not isinstance(self.anchors, AnchorConfig):
            raise ValueError(
                f"anchors must be a preset name or anchor settings, got "
                f"{type(self.anchors).__name__}"
            )
        _check_choice("head", self.head, HEAD_TYPES)
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("padding", self.padding, PADDINGS)
        _check_choice("score_fn", self.score_fn, SCORE_FNS)
        check_model_size(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists, numbers, strings), safe for ``torch.load(weights_only=True)``."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        if not isinstance(data, dict):
            raise ValueError(f"a model config must be a dict, got {type(data).__name__}")
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
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {choices}")


# Limits of what a config may ask for. They are far above every published MobileNet-SSD (alpha 1 at
# 300x300: 6.8 M parameters, about 40 MB of activations per image) and far below what makes a
# process get killed for memory, so a typo (alpha=100) or a crafted checkpoint (30000x30000 input,
# 1e9 classes) is refused before a single tensor is allocated.
MAX_CLASSES = 100_000
MAX_CHANNELS = 1 << 16
MAX_IMAGE_SIDE = 8192
MAX_PARAMETERS = 250_000_000  # 1 GB of fp32 weights (training holds about 4x that)
MAX_ACTIVATION_BYTES = 4 << 30  # fp32 feature maps of one image in the forward pass

# Where each field comes from in the training config (for messages).
_CONFIG_KEYS = {
    "alpha": "backbone.alpha",
    "min_depth": "backbone.min_depth",
    "activation": "backbone.activation",
    "padding": "backbone.padding",
    "head": "head.type",
    "head_kernel_size": "head.kernel_size",
    "extra_depths": "head.extra_depths",
    "extra_min_depth": "head.extra_min_depth",
    "source_layers": "head.source_layers",
    "score_fn": "head.score_fn",
}


def _key(name: str) -> str:
    alias = _CONFIG_KEYS.get(name)
    return f"{name} ({alias})" if alias else name


def _int_field(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f"{_key(name)} must be an integer in [{low}, {high}], got {value!r} "
            f"({type(value).__name__})"
        )
    if not low <= value <= high:
        raise ValueError(f"{_key(name)} must be an integer in [{low}, {high}], got {value}")
    return int(value)


def _real_field(name: str, value: Any, *, above: float | None = None) -> float:
    allowed = "a finite number" + (f" > {above:g}" if above is not None else "")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{_key(name)} must be {allowed}, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value) or (above is not None and value <= above):
        raise ValueError(f"{_key(name)} must be {allowed}, got {value}")
    return value


def _sequence(name: str, value: Any, length: int | None = None) -> list[Any]:
    if not isinstance(value, (list, tuple)) or (length is not None and len(value) != length):
        what = f"{length} values" if length is not None else "a list"
        raise ValueError(f"{_key(name)} must be {what}, got {value!r}")
    return list(value)


def _int_list(name: str, value: Any, low: int, high: int, length: int | None = None) -> list[int]:
    return [_int_field(name, v, low, high) for v in _sequence(name, value, length)]


def _channels(c: int, alpha: float, floor: int) -> int:
    return max(floor, int(c * alpha))  # models.layers.scaled_channels, without building anything


def estimate_model_size(config: ModelConfig) -> dict[str, int]:
    """Parameters and forward activations of one image (fp32 bytes) from the channel rule alone.

    Counts convolution weights (and BN parameters) of the backbone, the extra layers and the
    predictors, and every feature map the forward pass produces at ``config.image_size``; nothing is
    allocated. Close to exact for the parameters (within the biases), an order of magnitude for the
    activations (what the training step keeps for the backward pass, per image).
    """
    from .mobilenet_v1 import MOBILENET_V1_BLOCKS, STEM_CHANNELS

    h, w = config.image_size
    alpha = config.alpha
    c = _channels(STEM_CHANNELS, alpha, config.min_depth)
    h, w = -(-h // 2), -(-w // 2)
    params = 27 * c + 2 * c
    acts = 3 * config.image_size[0] * config.image_size[1] + 2 * c * h * w
    level_channels, level_cells = [], []
    layer_out = [(c, h * w)]
    for out, stride in MOBILENET_V1_BLOCKS:
        o = _channels(out, alpha, config.min_depth)
        h, w = -(-h // stride), -(-w // stride)
        params += 9 * c + 2 * c + c * o + 2 * o
        acts += 2 * (c + o) * h * w
        layer_out.append((o, h * w))
        c = o
    for i in config.source_layers:
        level_channels.append(layer_out[i][0])
        level_cells.append(layer_out[i][1])
    in_ch = layer_out[config.source_layers[-1]][0]
    for depth in config.extra_depths:
        mid = _channels(depth // 2, alpha, config.extra_min_depth)
        out = _channels(depth, alpha, config.extra_min_depth)
        h, w = max(1, -(-h // 2)), max(1, -(-w // 2))
        down = 9 * mid + mid * out if config.head == "ssdlite" else 9 * mid * out
        params += in_ch * mid + down + 2 * (mid + out)
        acts += 2 * (mid + out) * h * w
        level_channels.append(out)
        level_cells.append(h * w)
        in_ch = out
    per_loc = 6  # the most anchors per location of the presets; a bound, not the exact count
    k2 = config.head_kernel_size**2 if config.head == "ssd" else 1
    for ch, cells in zip(level_channels, level_cells):
        outputs = per_loc * (4 + config.num_classes + 1)
        params += ch * outputs * k2 + outputs + (9 * ch if config.head == "ssdlite" else 0)
        acts += cells * outputs
    return {"parameters": int(params), "activation_bytes": int(4 * acts)}


def check_model_size(config: ModelConfig) -> None:
    """Refuse configs whose model would not fit (see :data:`MAX_PARAMETERS`)."""
    size = estimate_model_size(config)
    what = (
        f"alpha {config.alpha:g}, {config.image_size[0]}x{config.image_size[1]} input, "
        f"{config.num_classes} classes"
    )
    if size["parameters"] > MAX_PARAMETERS:
        raise ValueError(
            f"the model ({what}) would have about {size['parameters'] / 1e6:,.0f} M parameters "
            f"({size['parameters'] * 4 / 1e9:,.1f} GB in fp32); the limit is "
            f"{MAX_PARAMETERS / 1e6:,.0f} M: lower backbone.alpha (usually 0.25..1.4), the "
            f"number of classes or head.extra_depths"
        )
    if size["activation_bytes"] > MAX_ACTIVATION_BYTES:
        raise ValueError(
            f"the model ({what}) would need about {size['activation_bytes'] / 2**30:,.1f} GiB of "
            f"feature maps per image; the limit is {MAX_ACTIVATION_BYTES / 2**30:g} GiB: lower "
            f"image_size or backbone.alpha"
        )


def _anchor_settings(anchors: str | AnchorConfig) -> AnchorConfig:
    if isinstance(anchors, AnchorConfig):
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
    anchors: str | AnchorConfig = "tf",
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
