"""Export a trained detector: ``python export.py checkpoint=<path> [format=onnx] [key=value ...]``.

Examples::

    python export.py checkpoint=outputs/train/<run>/best.pt                    # ONNX, raw outputs
    python export.py checkpoint=best.pt nms=true dynamic_batch=true            # NMS in the graph
    python export.py checkpoint=best.pt int8=true calibration=data/val/images  # int8 (QDQ)
    python export.py checkpoint=best.pt image_size=[320,320] postprocess.score_thresh=0.3

Writes ``<name>.onnx`` and ``<name>.json`` (the sidecar) into the Hydra run directory, runs the
artifact in its runtime against PyTorch and prints the verdict; exits with status 1 and a message
when the request is not supported or an fp32 artifact does not match.
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from detector.export.schema import register_export_schemas

register_export_schemas()  # export_schema, format/format_schema, postprocess/postprocess_schema


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    from detector.export import ExportError, export_checkpoint, format_table
    from detector.export.schema import options_from_hydra

    try:
        checkpoint, options, use_ema = options_from_hydra(cfg)
        result = export_checkpoint(
            checkpoint, HydraConfig.get().runtime.output_dir, options, use_ema=use_ema
        )
    except ExportError as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        if "checkpoint=" in str(exc) and "required" in str(exc):
            print(f"\nformats:\n{format_table()}", file=sys.stderr)
        sys.exit(1)
    print(f"export OK: {result.model_path}")


if __name__ == "__main__":
    main()
