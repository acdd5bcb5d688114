"""Train a MobileNet-SSD detector: ``python train.py [group=option ...] [key=value ...]``.

Examples::

    python train.py                                   # synthetic dataset, small model, ~10 min CPU
    python train.py backbone.alpha=0.5 image_size=[300,300]
    python train.py experiment=voc_ssd300 dataset.root=/data/VOCdevkit
    python train.py resume=outputs/synthetic/<run>/last.pt
    torchrun --nproc_per_node=2 train.py trainer.device=cpu
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from detector.cli import friendly_errors
from detector.config import from_hydra, register_schemas

register_schemas()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@friendly_errors("train.py")
def main(cfg: DictConfig) -> float:
    from detector.engine.train import fit

    spec = from_hydra(cfg)
    metrics = fit(spec, Path(HydraConfig.get().runtime.output_dir))
    return metrics.get("val/mAP", float("nan"))  # the objective for Hydra sweepers


if __name__ == "__main__":
    main()
