"""Fine-tuning the imported COCO detector on the real raccoon dataset (slow: about 10 minutes).

Acceptance (pretrained-weights issue; the time is printed, not asserted): starting from the TF OD API COCO SSD-MobileNet-v1 converted
from its TFLite file, ``experiment=raccoon_finetune`` on 2 CPU cores for at most 20 minutes reaches
VOC AP@0.5 >= 0.85 on the raccoon test split (``test_labels.csv``).

Then (export issue) the fine-tuned model is exported to int8 ONNX calibrated on the raccoon
training images; on the test split its COCO mAP is at most 1.5 points below the fp32 PyTorch
model's (the change is printed).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from detector.config import from_hydra, register_schemas

REPO = Path(__file__).resolve().parents[1]
register_schemas()

pytestmark = pytest.mark.slow


def test_raccoon_finetune_from_coco(shared_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("tflite")
    from detector.convert import convert_tflite_file
    from detector.engine.train import fit

    tflite_dir = shared_data / "ssd_mobilenet_v1_coco_quant_tflite"
    coco = tmp_path / "coco_ssd_mobilenet_v1.pt"
    convert_tflite_file(tflite_dir / "detect.tflite", coco, tflite_dir / "coco_labels.txt")
    root = shared_data / "datasets" / "raccoon_dataset"
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "detector" / "conf")):
        cfg = compose(
            "train",
            overrides=["experiment=raccoon_finetune", f"dataset.root={root}", f"init={coco}"],
        )
        with open_dict(cfg):
            cfg.pop("hydra", None)
        spec = from_hydra(cfg)
    start = time.perf_counter()
    metrics = fit(spec, tmp_path / "run")
    minutes = (time.perf_counter() - start) / 60
    print(f"raccoon fine-tune: VOC AP@0.5 {metrics['val/mAP']:.4f} in {minutes:.1f} min")
    assert metrics["val/mAP"] >= 0.85  # the time budget is reported, not asserted

    change = int8_map_change(tmp_path / "run" / "best.pt", root, tmp_path / "export")
    assert change["change_points"]["mAP"] >= -1.5, change


def int8_map_change(checkpoint: Path, root: Path, out_dir: Path) -> dict:
    """Export ``checkpoint`` to int8 ONNX calibrated on the raccoon training images and return the
    COCO mAP comparison (PyTorch fp32 vs int8 ONNX Runtime) on the test split."""
    pytest.importorskip("onnxruntime")
    from detector.data import FolderDetection
    from detector.engine.checkpoint import load_detector
    from detector.export import ExportOptions, export_model

    train = FolderDetection(root, "train", split_file=root / "data" / "train_labels.csv")
    test = FolderDetection(root, "test", split_file=root / "data" / "test_labels.csv")
    out_dir.mkdir(parents=True, exist_ok=True)
    lists = {}
    for name, split in (("train", train), ("test", test)):
        lists[name] = out_dir / f"{name}_images.txt"
        lists[name].write_text("\n".join(str(e.path) for e in split.entries) + "\n")
    model, classes = load_detector(checkpoint)
    options = ExportOptions(
        int8=True,
        calibration=str(lists["train"]),
        num_calibration_images=len(train),
        verify_images=str(lists["test"]),
        num_verify_images=len(test),
    )
    result = export_model(model, classes, out_dir, options, name="raccoon", eval_dataset=test)
    change = result.verdicts[-1].map_change
    assert change is not None and change["num_images"] == len(test)
    print(
        f"raccoon int8 ONNX: COCO mAP {100 * change['reference']['mAP']:.2f} -> "
        f"{100 * change['artifact']['mAP']:.2f} ({change['change_points']['mAP']:+.2f} points), "
        f"mAP@0.5 {change['change_points']['mAP50']:+.2f} points on {len(test)} test images"
    )
    return change
