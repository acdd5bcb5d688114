"""Print a model summary: ``python -m detector.summary [overrides ...]``.

Takes the same Hydra overrides as ``train.py`` (``backbone.alpha=0.5``, ``head=ssdlite``,
``image_size=[240,320]``, ``experiment=tf_coco`` ...) plus ``num_classes=N`` (default: the classes
of the configured dataset, e.g. 5 for the synthetic set, 20 for VOC, 80 for COCO), and prints parameters, mult-adds, input size, every feature map's shape with its
anchors per location, and the total number of anchors.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from .anchors import build_anchor_generator
from .models import SSD, build_ssd, count_mult_adds, count_parameters
from .models.build import ModelConfig

CONF_DIR = Path(__file__).resolve().parent / "conf"


def compose_config(overrides: list[str], config_name: str = "train"):
    """Compose ``conf/<config_name>.yaml`` with Hydra's Compose API and return the typed spec."""
    from hydra import compose, initialize_config_dir

    from .config import from_hydra, register_schemas

    register_schemas()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return from_hydra(compose(config_name, overrides=overrides))


def summarize(model: SSD) -> str:
    """A readable table describing ``model``."""
    config: ModelConfig = model.config
    h, w = config.image_size
    params = count_parameters(model)
    madds = count_mult_adds(model, torch.zeros(1, 3, h, w))
    per_loc = build_anchor_generator(config.anchors).num_anchors_per_location(
        len(model.feature_shapes)
    )
    rows = [
        (
            "model",
            f"SSD-MobileNetV1 ({config.head}), alpha {config.alpha:g}, min_depth {config.min_depth}",
        ),
        ("classes", f"{config.num_classes} (+ background)"),
        (
            "input",
            f"{h}x{w} RGB in [0, 1], normalised inside (mean {config.mean}, std {config.std})",
        ),
        ("parameters", f"{params / 1e6:.3f} M ({params:,})"),
        ("mult-adds", f"{madds / 1e9:.3f} G ({madds:,})"),
        ("anchors", f"{config.anchors.style} preset, scores by {config.score_fn}"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines.append("")
    lines.append(
        f"{'level':>5}  {'channels':>8}  {'feature map':>11}  {'anchors/loc':>11}  {'anchors':>8}"
    )
    total = 0
    for i, ((fh, fw), ch, k) in enumerate(
        zip(model.feature_shapes, model.features.out_channels, per_loc)
    ):
        n = fh * fw * k
        total += n
        lines.append(f"{i:>5}  {ch:>8}  {f'{fh}x{fw}':>11}  {k:>11}  {n:>8}")
    lines.append(f"{'total':>5}  {'':>8}  {'':>11}  {'':>11}  {total:>8}")
    assert total == model.num_anchors
    return "\n".join(lines)


def default_num_classes(spec) -> tuple[int, str]:
    """The class count of the configured dataset without reading it, and where it comes from."""
    cfg = spec.dataset
    if cfg.classes:
        return len(cfg.classes), "dataset.classes"
    if cfg.kind == "synthetic":
        from .data.synthetic import SYNTHETIC_CLASSES

        return len(SYNTHETIC_CLASSES), "the synthetic dataset"
    if cfg.kind == "voc":
        from .data.voc import VOC_CLASSES

        return len(VOC_CLASSES), "VOC"
    if cfg.kind == "widerface":
        return 1, "WIDER FACE"
    if cfg.kind == "coco":
        return 80, "COCO's annotated categories"
    if cfg.kind == "folder" and cfg.labels_file and Path(cfg.labels_file).is_file():
        from .data.folder import read_labels_file

        return len(read_labels_file(cfg.labels_file)), str(cfg.labels_file)
    raise ValueError(f"cannot tell the classes of dataset.kind={cfg.kind}; give num_classes=N")


def _main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return
    num_classes = None
    overrides = []
    for arg in args:
        if arg.startswith("num_classes="):
            value = arg.split("=", 1)[1]
            try:
                num_classes = int(value)
            except ValueError:
                raise ValueError(f"num_classes={value}: must be an integer >= 1") from None
        else:
            overrides.append(arg)
    from .config import model_config_from

    spec = compose_config(overrides)
    source = "num_classes="
    if num_classes is None:
        num_classes, source = default_num_classes(spec)
    model = build_ssd(model_config_from(spec, num_classes)).eval()
    print(summarize(model))
    print(f"\nclasses from {source} ({num_classes}); num_classes=N describes another count")


def main(argv: list[str] | None = None) -> None:
    """``python -m detector.summary`` / ``detector summary``: known errors end with one line."""
    from .errors import friendly_errors

    friendly_errors("detector summary")(_main)(argv)


if __name__ == "__main__":
    main()
