"""Hydra glue of ``detector export`` / ``export.py``: the ConfigStore entries and the one step
from the composed ``DictConfig`` to an :class:`~detector.export.config.ExportConfig`.

``conf/export.yaml`` builds on ``export_schema`` (:class:`ExportConfig`) and ``conf/format/*.yaml``
on ``format_schema`` (:class:`FormatConfig`), so a misspelt key or a wrong type fails when the
config is composed; the schema is the very dataclass the library takes.
"""

from __future__ import annotations

from typing import Any

from .config import ExportConfig, FormatConfig
from .errors import ExportError

__all__ = ["options_from_hydra", "register_export_schemas"]


def register_export_schemas() -> None:
    """Register ``export_schema`` and the ``format`` group's ``format_schema`` (and the shared
    ``postprocess`` group of :func:`detector.config.register_schemas`) in Hydra's ConfigStore."""
    from hydra.core.config_store import ConfigStore

    from ..config import register_schemas

    register_schemas()
    cs = ConfigStore.instance()
    cs.store(name="export_schema", node=ExportConfig)
    cs.store(group="format", name="format_schema", node=FormatConfig)


def options_from_hydra(cfg: Any) -> tuple[str, ExportConfig, bool]:
    """``(checkpoint, config, use_ema)`` from a composed ``export`` config.

    Raises:
        ExportError: no ``checkpoint=``.
    """
    from omegaconf import OmegaConf

    config = OmegaConf.to_object(cfg)
    if not isinstance(config, ExportConfig):
        raise TypeError(f"expected a config built on export_schema, got {type(config).__name__}")
    if not config.checkpoint:
        raise ExportError("checkpoint=<path to a detector checkpoint> is required")
    return config.checkpoint, config, config.use_ema
