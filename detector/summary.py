"""Print a model summary: ``python -m detector.summary [overrides ...]``.

Takes the same Hydra overrides as ``train.py`` (``backbone.alpha=0.5``, ``head=ssdlite``,
``image_size=[240,320]``, ``experiment=tf_coco`` ...) plus ``num_classes=N`` (default 90, the TF
COCO label map), and prints parameters, mult-adds, input size, every feature map's shape with its
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


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return
    num_classes = 90
    overrides = []
    for arg in args:
        if arg.startswith("num_classes="):
            num_classes = int(arg.split("=", 1)[1])
        else:
            overrides.append(arg)
    from .config import model_config_from

    spec = compose_config(overrides)
    model = build_ssd(model_config_from(spec, num_classes)).eval()
    print(summarize(model))


if __name__ == "__main__":
    main()
