"""Detect objects: ``python detect.py checkpoint=<.pt> source=<image|folder|video|camera index>``.

Examples::

    python detect.py checkpoint=outputs/train/<run>/best.pt source=photo.jpg
    python detect.py model=outputs/export/<run>/best.onnx source=images/   # torch-free runtime
    python detect.py checkpoint=best.pt source=clip.mp4 score_thresh=0.5 classes=[dog,person]
    python detect.py checkpoint=best.pt source=0 max_frames=300           # camera 0

Writes annotated images (or ``<video>.mp4``) and ``detections.json`` (COCO results with file
names) into the Hydra run directory and prints one summary line per image.
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from detector.cli import friendly_errors
from detector.predict import register_detect_schema

register_detect_schema()


@hydra.main(version_base="1.3", config_path="conf", config_name="detect")
@friendly_errors("detect.py")
def main(cfg: DictConfig) -> None:
    from omegaconf import OmegaConf

    from detector.predict import run_detect

    spec = OmegaConf.to_object(cfg)
    result = run_detect(spec, HydraConfig.get().runtime.output_dir)
    print(
        f"{len(result['detections'])} detections in {result['num_images']} image(s); "
        f"results in {result['detections_path'].parent}"
    )


if __name__ == "__main__":
    main()
