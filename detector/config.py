"""Typed configuration: the only module that reads Hydra/OmegaConf objects.

Structured-config schemas (registered in Hydra's ConfigStore and used as bases in the ``conf/``
defaults lists) make a misspelt key fail when the config is composed. :meth:`TrainSpec.from_hydra`
turns a composed ``DictConfig`` into frozen, plain dataclasses that the library takes; no
``DictConfig`` travels past the entry scripts and nothing from a checkpoint is ever instantiated.

One schema per group (OmegaConf cannot hold unions of structured configs). Schema fields use
``Optional[...]`` and ``List[...]`` from ``typing`` because OmegaConf reads those annotations.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional  # noqa: UP035 - OmegaConf reads typing generics

from .anchors import AnchorSettings
from .models.build import ModelConfig

__all__ = [
    "AnchorsSchema",
    "AugmentSchema",
    "BackboneSchema",
    "DatasetSchema",
    "EvalSchema",
    "HeadSchema",
    "OptimizerSchema",
    "PostprocessSchema",
    "SchedulerSchema",
    "TrainSchema",
    "TrainerSchema",
    "anchor_settings_from",
    "from_hydra",
    "model_config_from",
    "register_schemas",
    "to_plain",
]


# --------------------------------------------------------------------------- schemas (Hydra side)
@dataclass
class BackboneSchema:
    name: str = "mobilenet_v1"
    alpha: float = 1.0  # width multiplier α (Howard et al. 2017); TF calls it depth_multiplier
    min_depth: int = 8
    activation: str = "relu6"
    padding: str = "torch"  # "tf" for TF "SAME" padding (TF-trained weights)
    pretrained: Optional[str] = None  # ImageNet backbone weights file
    frozen_stages: int = 0  # freeze features[0..frozen_stages-1] (TF Conv2d_0..)


@dataclass
class HeadSchema:
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
class AnchorsSchema:
    """Mirror of :class:`detector.anchors.AnchorSettings` (see it for the meaning of fields)."""

    style: str = "tf"
    min_scale: float = 0.2
    max_scale: float = 0.95
    aspect_ratios: List[float] = field(default_factory=lambda: [1.0, 2.0, 0.5, 3.0, 1.0 / 3.0])
    interpolated_scale_aspect_ratio: float = 1.0
    reduce_boxes_in_lowest_layer: bool = True
    min_sizes: List[float] = field(default_factory=lambda: [0.2, 0.35, 0.5, 0.65, 0.8, 0.95])
    max_sizes: List[float] = field(default_factory=lambda: [0.0, 0.5, 0.65, 0.8, 0.95, 1.0])
    sizes_per_layer: List[int] = field(default_factory=list)
    caffe_aspect_ratios: List[float] = field(
        default_factory=lambda: [2.0, 2.0, 3.0, 2.0, 3.0, 2.0, 3.0, 2.0, 3.0, 2.0, 3.0]
    )
    caffe_aspect_ratio_counts: List[int] = field(default_factory=lambda: [1, 2, 2, 2, 2, 2])
    flip: bool = True
    steps: List[float] = field(default_factory=list)
    offset: float = 0.5
    clip: bool = False


@dataclass
class DatasetSchema:
    kind: str = "synthetic"  # synthetic | coco | voc | folder | widerface
    root: Optional[str] = None  # dataset root (synthetic: where it is generated and cached)
    # COCO / custom COCO JSON
    train_ann_file: Optional[str] = None
    val_ann_file: Optional[str] = None
    train_images: Optional[str] = None
    val_images: Optional[str] = None
    keep_empty: bool = False  # keep images without annotations (training)
    # VOC
    train_years: List[str] = field(default_factory=lambda: ["2007", "2012"])
    train_split: str = "trainval"
    val_years: List[str] = field(default_factory=lambda: ["2007"])
    val_split: str = "test"
    keep_difficult: bool = False
    # custom folders
    labels_file: Optional[str] = None
    train_list: Optional[str] = None
    val_list: Optional[str] = None
    val_ratio: float = 0.1
    # rename/merge XML class names, e.g. {with_mask: face, without_mask: face}
    class_map: Optional[Dict[str, str]] = None
    include_unannotated: bool = False  # images without an XML file are negatives (else left out)
    # WIDER FACE
    min_face_size: float = 0.0  # faces with a shorter side below this (px) are ignored
    max_blur: int = 2  # faces with a blur flag above this (0 clear, 1 normal, 2 heavy) are ignored
    # official eval_tools ground_truth/ (wider_face_val.mat, wider_{easy,medium,hard}_val.mat):
    # eval=widerface then gives easy/medium/hard AP; null: plain AP over the val records
    eval_gt_dir: Optional[str] = None
    # synthetic
    num_train: int = 2000
    num_val: int = 200
    seed: int = 0
    # eval.py: the annotation file a results file is scored against (default: val_ann_file)
    ann_file: Optional[str] = None
    # shared
    classes: Optional[List[str]] = None  # restrict / order classes (None = from the data)
    eval: str = "coco"  # evaluator: coco | voc07 | voc | widerface


@dataclass
class AugmentSchema:
    preset: str = "ssd"  # ssd | ssdlite | none
    p_flip: float = 0.5
    mean_fill: List[int] = field(default_factory=lambda: [127, 127, 127])
    max_zoom_out: float = 4.0
    p_zoom_out: float = 0.5
    p_photometric: float = 0.5


@dataclass
class OptimizerSchema:
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
class SchedulerSchema:
    name: str = "cosine"  # cosine | multistep | constant
    warmup_epochs: float = 1.0
    warmup_factor: float = 0.001
    milestones: List[float] = field(default_factory=lambda: [0.67, 0.89])  # fractions of training
    gamma: float = 0.1
    min_lr_ratio: float = 0.0


@dataclass
class TrainerSchema:
    epochs: int = 20
    batch_size: int = 32
    num_workers: int = 2
    device: str = "auto"  # auto | cpu | cuda | cuda:N
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
class PostprocessSchema:
    score_thresh: float = 0.01
    nms_thresh: float = 0.45
    topk_candidates: int = 400
    max_detections: int = 200


@dataclass
class TrainSchema:
    backbone: BackboneSchema = field(default_factory=BackboneSchema)
    head: HeadSchema = field(default_factory=HeadSchema)
    anchors: AnchorsSchema = field(default_factory=AnchorsSchema)
    dataset: DatasetSchema = field(default_factory=DatasetSchema)
    augment: AugmentSchema = field(default_factory=AugmentSchema)
    optimizer: OptimizerSchema = field(default_factory=OptimizerSchema)
    scheduler: SchedulerSchema = field(default_factory=SchedulerSchema)
    trainer: TrainerSchema = field(default_factory=TrainerSchema)
    postprocess: PostprocessSchema = field(default_factory=PostprocessSchema)
    image_size: List[int] = field(default_factory=lambda: [300, 300])  # (H, W)
    mean: List[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: List[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    seed: int = 0
    resume: Optional[str] = None  # checkpoint to resume exactly (last.pt)
    init: Optional[str] = None  # detector checkpoint to fine-tune from
    name: str = "run"


@dataclass
class EvalSchema:
    """``eval.py``: a checkpoint on a dataset's validation split, or a results file."""

    dataset: DatasetSchema = field(default_factory=DatasetSchema)
    postprocess: PostprocessSchema = field(default_factory=PostprocessSchema)
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
    cs.store(name="train_schema", node=TrainSchema)
    cs.store(name="eval_schema", node=EvalSchema)
    for group, node in (
        ("backbone", BackboneSchema),
        ("head", HeadSchema),
        ("anchors", AnchorsSchema),
        ("dataset", DatasetSchema),
        ("augment", AugmentSchema),
        ("optimizer", OptimizerSchema),
        ("scheduler", SchedulerSchema),
        ("trainer", TrainerSchema),
        ("postprocess", PostprocessSchema),
    ):
        cs.store(group=group, name=f"{group}_schema", node=node)


# ------------------------------------------------------------------------ plain side (library)
def from_hydra(cfg: Any) -> TrainSchema | EvalSchema:
    """Turn a composed Hydra config into the typed :class:`TrainSchema` dataclasses.

    ``OmegaConf.to_object`` validates every value against the schema and returns plain dataclass
    instances (lists, not ListConfig), which is all the library ever sees.
    """
    from omegaconf import OmegaConf

    spec = OmegaConf.to_object(cfg)
    if isinstance(spec, EvalSchema):
        return spec
    if not isinstance(spec, TrainSchema):
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


def anchor_settings_from(anchors: AnchorsSchema) -> AnchorSettings:
    values = {
        k: tuple(v) if isinstance(v, list) else v for k, v in dataclasses.asdict(anchors).items()
    }
    return AnchorSettings(**values)


def model_config_from(spec: TrainSchema, num_classes: int) -> ModelConfig:
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
        anchors=anchor_settings_from(spec.anchors),
        activation=backbone.activation,
        padding=backbone.padding,
        extra_depths=tuple(head.extra_depths),
        extra_min_depth=head.extra_min_depth,
        mean=tuple(spec.mean),
        std=tuple(spec.std),
        score_fn=head.score_fn,
        source_layers=tuple(head.source_layers),
    )
