"""The tiny training config the training tests compose (trainer=debug, alpha 0.25 at 96x96 on a
small synthetic set)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from detector.config import TrainConfig, from_hydra, register_schemas

REPO = Path(__file__).resolve().parents[1]
TINY = ("backbone.alpha=0.25", "image_size=[96,96]")


def tiny_train_spec(root: Path, *overrides: str, num_train: int, num_val: int) -> TrainConfig:
    """``train.py trainer=debug`` on the synthetic set generated in ``root`` (seed 3)."""
    register_schemas()
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "detector" / "conf")):
        cfg = compose(
            "train",
            overrides=[
                "trainer=debug",
                f"dataset.root={root}",
                f"dataset.num_train={num_train}",
                f"dataset.num_val={num_val}",
                "dataset.seed=3",
                *TINY,
                *overrides,
            ],
        )
        with open_dict(cfg):
            cfg.pop("hydra", None)
        return from_hydra(cfg)
