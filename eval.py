"""Evaluate a detector or a results file: COCO mAP (pycocotools protocol) or Pascal VOC AP.

Examples::

    python eval.py checkpoint=outputs/synthetic/<run>/best.pt
    python eval.py checkpoint=best.pt dataset=voc0712 dataset.root=/data/VOCdevkit metric=voc07
    python eval.py dataset=coco dataset.ann_file=instances_val2017.json detections=results.json
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from detector.cli import friendly_errors
from detector.config import from_hydra, register_schemas

register_schemas()


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
@friendly_errors("eval.py")
def main(cfg: DictConfig) -> None:
    from detector.engine.evaluate import evaluate_checkpoint, evaluate_detections_file
    from detector.evaluation import format_per_class_table

    spec = from_hydra(cfg)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    if (spec.checkpoint is None) == (spec.detections is None):
        raise SystemExit(
            "eval.py: give exactly one of checkpoint=<path> or detections=<results.json>"
        )
    if spec.checkpoint is not None:
        metrics = evaluate_checkpoint(spec, out_dir)
    else:
        metrics = evaluate_detections_file(spec, out_dir)
    print(format_per_class_table(metrics, markdown=False))
    headline = {k: metrics[k] for k in ("protocol", "AP", "AP50", "AP75", "mAP") if k in metrics}
    print(json.dumps(headline, indent=2))
    print(f"results in {out_dir}")


if __name__ == "__main__":
    main()
