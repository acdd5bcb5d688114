"""The dataset-kind registry: every shipped option is a registered kind, and a new kind is one
module (reader + config + entry) plus one YAML file."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from detector.config import from_hydra, register_schemas
from detector.data import (
    DATASETS,
    DatasetConfig,
    DatasetKind,
    SyntheticDatasetConfig,
    dataset_from_config,
    generate_synthetic,
    register_dataset,
)
from detector.data.base import DatasetError

CONF = Path(__file__).resolve().parents[1] / "detector" / "conf"


def test_every_dataset_option_names_a_registered_kind() -> None:
    register_schemas()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        for path in sorted((CONF / "dataset").glob("*.yaml")):
            spec = from_hydra(compose("train", overrides=[f"dataset={path.stem}"]))
            entry = DATASETS[spec.dataset.kind]
            assert type(spec.dataset) is entry.config, path.name
            # The YAML sets only fields of its kind's schema (a typo would not compose).
            names = {f.name for f in dataclasses.fields(entry.config)}
            assert set(OmegaConf.load(path)) - {"defaults"} <= names


def test_kind_specific_key_on_another_kind_fails_at_composition() -> None:
    register_schemas()
    with (
        initialize_config_dir(version_base="1.3", config_dir=str(CONF)),
        pytest.raises(Exception, match="num_train"),
    ):
        compose("train", overrides=["dataset=coco", "dataset.num_train=3"])


def test_bare_base_config_gets_its_kind_defaults(tmp_path: Path) -> None:
    generate_synthetic(tmp_path / "syn", num_train=4, num_val=2, seed=0)
    bare = DatasetConfig(kind="synthetic", root=str(tmp_path / "syn"))
    val = dataset_from_config(bare, "val")
    assert len(val) == 200  # the kind's default num_val (regenerated with the defaults)
    with pytest.raises(DatasetError, match="not supported"):
        dataset_from_config(SyntheticDatasetConfig(root=str(tmp_path / "s"), classes=["x"]), "val")


@dataclass
class _TinyConfig(DatasetConfig):
    kind: str = "tiny_test_kind"
    size: int = 3


def test_a_new_kind_is_one_entry_plus_one_yaml(tmp_path: Path) -> None:
    """A kind registered from outside the package composes from its own YAML and builds."""
    generate_synthetic(tmp_path / "syn", num_train=3, num_val=2, seed=0)
    built: list[tuple[str, int]] = []

    def reader(split: str, *, root: str, size: int) -> object:
        built.append((split, size))
        return DATASETS["synthetic"].reader(split, root=root)

    def options(config: _TinyConfig, split: str) -> tuple[str, dict]:
        return split, {"root": config.root, "size": config.size}

    register_dataset(DatasetKind("tiny_test_kind", _TinyConfig, reader, options))
    try:
        conf = tmp_path / "conf"
        (conf / "dataset").mkdir(parents=True)
        (conf / "dataset" / "tiny.yaml").write_text(
            "defaults:\n  - tiny_test_kind_schema\n"
            f"kind: tiny_test_kind\nroot: {tmp_path / 'syn'}\nsize: 7\n"
        )
        (conf / "root.yaml").write_text(
            "defaults:\n  - eval_schema\n  - dataset: tiny\n  - _self_\n"
        )
        register_schemas()  # stores every registered kind's schema, the new one included
        with initialize_config_dir(version_base="1.3", config_dir=str(conf)):
            spec = from_hydra(compose("root"))
        assert isinstance(spec.dataset, _TinyConfig) and spec.dataset.size == 7
        data = dataset_from_config(spec.dataset, "val")
        assert built == [("val", 7)] and len(data) == 2
        with pytest.raises(ValueError, match=r"must default to .other_name."):
            register_dataset(DatasetKind("other_name", _TinyConfig, reader, options))
    finally:
        DATASETS.pop("tiny_test_kind", None)
