"""The typed train and eval configs: one dataclass per concept, used by Hydra and the library.

Each dataclass is both the Hydra schema of its group (registered in the ConfigStore and named in
the ``conf/`` defaults lists, so a misspelt key fails when the config is composed) and what the
library takes: :func:`from_hydra` turns a composed ``DictConfig`` into these plain dataclasses with
``OmegaConf.to_object``; no ``DictConfig`` travels past the entry points and nothing read from a
checkpoint is ever instantiated. The other concepts' configs live with their code:
:class:`~detector.anchors.AnchorConfig`, :class:`~detector.postprocess_config.PostprocessConfig`,
one config per dataset kind next to its reader (:mod:`detector.data.registry`),
:class:`~detector.export.ExportConfig`, :class:`~detector.predict.DetectConfig`.

One schema per group (OmegaConf cannot hold unions of structured configs; a dataset option's own
schema takes the place of the :class:`~detector.data.DatasetConfig` base). Fields use
``Optional[...]`` and ``List[...]`` from ``typing`` because OmegaConf reads those annotations.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Any, List, Optional  # noqa: UP035 - OmegaConf reads typing generics

from .anchors import AnchorConfig
from .data import DATASETS, DatasetConfig
from .models.build import ModelConfig
from .postprocess_config import PostprocessConfig

__all__ = [
    "AugmentConfig",
    "BackboneConfig",
    "EvalConfig",
    "HeadConfig",
    "OptimizerConfig",
    "SchedulerConfig",
    "TrainConfig",
    "TrainerConfig",
    "from_hydra",
    "model_config_from",
    "register_schemas",
    "to_plain",
]


# --------------------------------------------------------------------------- schemas (Hydra side)
@dataclass
class BackboneConfig:
    name: str = "mobilenet_v1"
    alpha: float = 1.0  # width multiplier α (Howard et al. 2017); TF calls it depth_multiplier
    min_depth: int = 8
    activation: str = "relu6"
    padding: str = "torch"  # "tf" for TF "SAME" padding (TF-trained weights)
    pretrained: Optional[str] = None  # ImageNet backbone weights file
    frozen_stages: int = 0  # freeze features[0..frozen_stages-1] (TF Conv2d_0..)


@dataclass
class HeadConfig:
    type: str = "ssd"  # "ssd" | "ssdlite"
    kernel_size: int = 1
    extra_depths: List[int] = field(default_factory=lambda: [512, 256, 256, 128])
    extra_min_depth: int = 16
    # backbone layers feeding the first feature maps (TF Conv2d_i numbers): 11, 13 = strides 16, 32
    source_layers: List[int] = field(default_factory=lambda: [11, 13])
    score_fn: str = "softmax"  # "softmax" | "sigmoid"
    loss: str = "softmax"  # "softmax" (hard negative mining) | "focal"
    neg_pos_ratio: float = 3.0
    iou_threshold: float = 0.5
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0


@dataclass
class AugmentConfig:
    preset: str = "ssd"  # ssd | ssdlite | none
    p_flip: float = 0.5
    mean_fill: List[int] = field(default_factory=lambda: [127, 127, 127])
    max_zoom_out: float = 4.0
    p_zoom_out: float = 0.5
    p_photometric: float = 0.5


@dataclass
class OptimizerConfig:
    name: str = "sgd"  # sgd | rmsprop | adamw
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    rmsprop_alpha: float = 0.9  # RMSProp decay (TF recipe 0.9)
    eps: float = 1e-8
    no_decay_norm_bias: bool = True  # no weight decay on BN parameters and biases


@dataclass
class SchedulerConfig:
    name: str = "cosine"  # cosine | multistep | constant
    warmup_epochs: float = 1.0
    warmup_factor: float = 0.001
    milestones: List[float] = field(default_factory=lambda: [0.67, 0.89])  # fractions of training
    gamma: float = 0.1
    min_lr_ratio: float = 0.0


@dataclass
class TrainerConfig:
    epochs: int = 20
    batch_size: int = 32
    num_workers: int = 2
    amp: str = "auto"  # auto | none | bf16 | fp16 (auto: bf16 on CPU, fp16 on CUDA)
    channels_last: bool = True
    ema: bool = True
    ema_decay: float = 0.9998
    ema_warmup_steps: float = 2000.0  # decay ramps up as decay * (1 - exp(-updates / this))
    grad_clip: float = 10.0  # max gradient norm; 0 disables
    eval_every: int = 1  # epochs
    max_steps: int = 0  # stop after this many optimizer steps (0 = no limit; debug runs)
    checkpoint_every: int = 0  # also write last.pt every N steps (0 = at epoch ends only)
    log_every: int = 20  # steps
    threads: int = 0  # torch CPU threads (0 = torch's default)
    eval_batch_size: int = 64
    plots: bool = True


@dataclass
class TrainConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    # The group option's own schema (CocoDatasetConfig, ...) takes this base's place when the
    # config is composed (OmegaConf merges a subclass into its base, never across siblings).
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    image_size: List[int] = field(default_factory=lambda: [300, 300])  # (H, W)
    device: str = "auto"  # auto | cpu | cuda | cuda:N (the same key in every command)
    mean: List[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: List[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    seed: int = 0
    resume: Optional[str] = None  # checkpoint to resume exactly (last.pt)
    init: Optional[str] = None  # detector checkpoint to fine-tune from
    name: str = "run"


@dataclass
class EvalConfig:
    """``eval.py``: a checkpoint on a dataset's validation split, or a results file."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    checkpoint: Optional[str] = None  # evaluate this model ...
    detections: Optional[str] = None  # ... or this COCO-format results file
    metric: Optional[str] = None  # coco | voc07 | voc | widerface (default: dataset.eval)
    backend: str = "auto"  # COCO backend: auto | pycocotools | faster | hotcoco
    split: str = "val"
    batch_size: int = 32
    num_workers: int = 2
    device: str = "auto"
    use_ema: bool = True
    image_size: Optional[List[int]] = None  # default: the checkpoint's input size
    name: str = "eval"


def register_schemas() -> None:
    """Register the schemas so ``conf/`` files can name them in their defaults lists."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="eval_schema", node=EvalConfig)
    for group, node in (
        ("backbone", BackboneConfig),
        ("head", HeadConfig),
        ("anchors", AnchorConfig),
        ("augment", AugmentConfig),
        ("optimizer", OptimizerConfig),
        ("scheduler", SchedulerConfig),
        ("trainer", TrainerConfig),
        ("postprocess", PostprocessConfig),
    ):
        cs.store(group=group, name=f"{group}_schema", node=node)
    for kind in DATASETS.values():  # conf/dataset/<option>.yaml names its kind's schema
        cs.store(group="dataset", name=f"{kind.name}_schema", node=kind.config)


# ------------------------------------------------------------------------ plain side (library)
def from_hydra(cfg: Any) -> TrainConfig | EvalConfig:
    """Turn a composed Hydra config into the typed :class:`TrainConfig` dataclasses.

    ``OmegaConf.to_object`` validates every value against the schema and returns plain dataclass
    instances (lists, not ListConfig), which is all the library ever sees.
    """
    from omegaconf import OmegaConf

    spec = OmegaConf.to_object(cfg)
    if isinstance(spec, EvalConfig):
        return spec
    if not isinstance(spec, TrainConfig):
        raise TypeError(f"expected a config built on train_schema, got {type(spec).__name__}")
    if len(spec.image_size) != 2 or min(spec.image_size) < 32:
        raise ValueError(f"image_size must be [H, W] with sides >= 32, got {spec.image_size}")
    return spec


def to_plain(obj: Any) -> Any:
    """Dataclasses as nested plain dicts and lists (safe for ``torch.load(weights_only=True)``)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_plain(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def model_config_from(spec: TrainConfig, num_classes: int) -> ModelConfig:
    """The :class:`ModelConfig` described by a train/eval spec, for ``num_classes`` classes."""
    backbone, head = spec.backbone, spec.head
    if backbone.name != "mobilenet_v1":
        raise ValueError(f"unknown backbone {backbone.name!r}; available: ['mobilenet_v1']")
    return ModelConfig(
        num_classes=num_classes,
        alpha=backbone.alpha,
        min_depth=backbone.min_depth,
        image_size=tuple(spec.image_size),
        head=head.type,
        head_kernel_size=head.kernel_size,
        anchors=spec.anchors,
        activation=backbone.activation,
        padding=backbone.padding,
        extra_depths=tuple(head.extra_depths),
        extra_min_depth=head.extra_min_depth,
        mean=tuple(spec.mean),
        std=tuple(spec.std),
        score_fn=head.score_fn,
        source_layers=tuple(head.source_layers),
    )
