"""Compose every config file of every group and every experiment; build the model from each."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException
from omegaconf import open_dict

from detector.config import TrainConfig, from_hydra, model_config_from, register_schemas
from detector.models import build_ssd

CONF = Path(__file__).resolve().parents[1] / "detector" / "conf"
# Groups of train.yaml (``format`` belongs to export.yaml and is tested there).
GROUPS = sorted(
    p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("experiment", "format")
)
GROUP_OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONF / g).glob("*.yaml"))]
EXPERIMENTS = sorted(f.stem for f in (CONF / "experiment").glob("*.yaml"))
# Options that only fit a model of another shape, with the overrides that give it.
COMPANIONS = {("anchors", "face"): ["head.source_layers=[5,11,13]", "head.extra_depths=[256]"]}

register_schemas()


def _compose(overrides: list[str]) -> TrainConfig:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
        HydraConfig().set_config(cfg)  # as under @hydra.main: ${hydra:...} interpolations resolve
        with open_dict(cfg):
            del cfg["hydra"]
        return from_hydra(cfg)


def _build_small(spec: TrainConfig) -> None:
    spec.image_size = [128, 160]
    model = build_ssd(model_config_from(spec, num_classes=3)).eval()
    with torch.no_grad():
        deltas, logits = model(torch.rand(1, 3, 128, 160))
    assert deltas.shape[1] == logits.shape[1] == model.num_anchors
    assert logits.shape[2] == 4


def test_groups_found() -> None:
    assert {
        "backbone",
        "head",
        "anchors",
        "dataset",
        "augment",
        "optimizer",
        "scheduler",
        "trainer",
    } <= set(GROUPS)
    assert {"synthetic", "tf_coco", "voc_ssd300", "ssdlite_coco"} <= set(EXPERIMENTS)


@pytest.mark.parametrize(
    ("group", "option"), GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS]
)
def test_every_group_option(group: str, option: str) -> None:
    spec = _compose([f"{group}={option}", *COMPANIONS.get((group, option), [])])
    assert isinstance(spec, TrainConfig)
    _build_small(spec)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment(experiment: str) -> None:
    spec = _compose([f"experiment={experiment}"])
    assert spec.name
    _build_small(spec)


def test_default_is_synthetic_and_alpha_override() -> None:
    spec = _compose([])
    assert spec.dataset.kind == "synthetic" and spec.name == "synthetic"
    spec = _compose(["backbone.alpha=0.5"])
    assert spec.backbone.alpha == 0.5
    assert model_config_from(spec, 3).alpha == 0.5


def test_misspelt_key_fails_at_composition() -> None:
    with pytest.raises(ConfigCompositionException, match="alhpa"):
        _compose(["backbone.alhpa=0.5"])
    with pytest.raises(ConfigCompositionException):
        _compose(["trainer.epochs=ten"])  # type-checked by the schema


def test_tf_recipe_experiment() -> None:
    spec = _compose(["experiment=tf_coco"])
    config = model_config_from(spec, 90)
    assert config.padding == "tf" and config.score_fn == "sigmoid"
    assert config.image_size == (300, 300) and config.head_kernel_size == 1
    assert spec.optimizer.name == "rmsprop"


FORMATS = sorted(f.stem for f in (CONF / "format").glob("*.yaml"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_export_format_composes(fmt: str) -> None:
    from detector.export.schema import register_export_schemas

    register_export_schemas()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("export", overrides=["checkpoint=model.pt", f"format={fmt}"])
    assert cfg.checkpoint == "model.pt"
