"""COCO-format files written by the tests from the shared real assets (no file is copied).

* :data:`COCO_CATEGORIES`: the 80 official COCO 2017 detection categories with their ids
  (written out here, independently of any model's label file).
* :func:`cartucho_coco_file`: a COCO instances file for the 85 real indoor photos of
  ``datasets/cartucho_map_sample`` whose ground truth is the sample's own boxes (made by its
  authors, independent of our model and of the TFLite model), for the classes that are COCO
  categories; every one of the 80 COCO categories is listed.
* :func:`tflite_interpreter_results`: the real TFLite interpreter's detections (its built-in
  ``TFLite_Detection_PostProcess``) on a COCO file's images, as a COCO results list.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

COCO_CATEGORIES = [
    (1, "person"),
    (2, "bicycle"),
    (3, "car"),
    (4, "motorcycle"),
    (5, "airplane"),
    (6, "bus"),
    (7, "train"),
    (8, "truck"),
    (9, "boat"),
    (10, "traffic light"),
    (11, "fire hydrant"),
    (13, "stop sign"),
    (14, "parking meter"),
    (15, "bench"),
    (16, "bird"),
    (17, "cat"),
    (18, "dog"),
    (19, "horse"),
    (20, "sheep"),
    (21, "cow"),
    (22, "elephant"),
    (23, "bear"),
    (24, "zebra"),
    (25, "giraffe"),
    (27, "backpack"),
    (28, "umbrella"),
    (31, "handbag"),
    (32, "tie"),
    (33, "suitcase"),
    (34, "frisbee"),
    (35, "skis"),
    (36, "snowboard"),
    (37, "sports ball"),
    (38, "kite"),
    (39, "baseball bat"),
    (40, "baseball glove"),
    (41, "skateboard"),
    (42, "surfboard"),
    (43, "tennis racket"),
    (44, "bottle"),
    (46, "wine glass"),
    (47, "cup"),
    (48, "fork"),
    (49, "knife"),
    (50, "spoon"),
    (51, "bowl"),
    (52, "banana"),
    (53, "apple"),
    (54, "sandwich"),
    (55, "orange"),
    (56, "broccoli"),
    (57, "carrot"),
    (58, "hot dog"),
    (59, "pizza"),
    (60, "donut"),
    (61, "cake"),
    (62, "chair"),
    (63, "couch"),
    (64, "potted plant"),
    (65, "bed"),
    (67, "dining table"),
    (70, "toilet"),
    (72, "tv"),
    (73, "laptop"),
    (74, "mouse"),
    (75, "remote"),
    (76, "keyboard"),
    (77, "cell phone"),
    (78, "microwave"),
    (79, "oven"),
    (80, "toaster"),
    (81, "sink"),
    (82, "refrigerator"),
    (84, "book"),
    (85, "clock"),
    (86, "vase"),
    (87, "scissors"),
    (88, "teddy bear"),
    (89, "hair drier"),
    (90, "toothbrush"),
]

# Cartucho sample class names -> COCO category name (only the same concepts; 'coffeetable',
# 'doll', 'cabinetry', 'pillow', ... have no COCO category and are left out of the file).
CARTUCHO_TO_COCO = {
    "person": "person", "backpack": "backpack", "bottle": "bottle", "cup": "cup",
    "bowl": "bowl", "chair": "chair", "sofa": "couch", "pottedplant": "potted plant",
    "bed": "bed", "diningtable": "dining table", "tvmonitor": "tv", "remote": "remote",
    "sink": "sink", "book": "book", "vase": "vase",
}  # fmt: skip


def cartucho_coco_file(shared_data: Path, out: Path) -> tuple[Path, Path]:
    """Write the COCO file of the Cartucho sample; returns ``(ann_file, image_dir)``."""
    import cv2

    root = shared_data / "datasets" / "cartucho_map_sample" / "input"
    image_dir = root / "images-optional"
    ids = {name: cid for cid, name in COCO_CATEGORIES}
    images, annotations = [], []
    for k, gt in enumerate(sorted((root / "ground-truth").glob("*.txt")), start=1):
        file_name = gt.stem + ".jpg"
        h, w = cv2.imread(str(image_dir / file_name)).shape[:2]
        images.append({"id": 1000 + k, "file_name": file_name, "width": w, "height": h})
        for line in gt.read_text().splitlines():
            parts = line.split()
            if not parts or parts[0] not in CARTUCHO_TO_COCO:
                continue
            x1, y1, x2, y2 = (float(v) for v in parts[1:5])
            annotations.append({
                "id": len(annotations) + 1, "image_id": 1000 + k,
                "category_id": ids[CARTUCHO_TO_COCO[parts[0]]],
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
            })  # fmt: skip
    categories = [{"id": cid, "name": name} for cid, name in COCO_CATEGORIES]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"images": images, "annotations": annotations,
                               "categories": categories}))  # fmt: skip
    return out, image_dir


def tflite_interpreter_results(tflite_model: Path, ann_file: Path, image_dir: Path) -> list[dict]:
    """Run the real TFLite interpreter on every image of ``ann_file`` (the preprocessing of the
    shared reference: cv2 BGR -> RGB, INTER_LINEAR resize to the input size, uint8) and return
    all the detections of its built-in post-processing as COCO results (category id = class
    index + 1, the TF label map convention)."""
    import cv2

    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - older TF Lite packaging
        from tflite_runtime.interpreter import Interpreter
    interp = Interpreter(model_path=str(tflite_model))
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    outs = interp.get_output_details()
    _, ih, iw, _ = inp["shape"]
    data = json.loads(ann_file.read_text())
    results: list[dict[str, Any]] = []
    for img in data["images"]:
        bgr = cv2.imread(str(image_dir / img["file_name"]))
        h, w = bgr.shape[:2]
        x = cv2.resize(
            cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (iw, ih), interpolation=cv2.INTER_LINEAR
        )
        interp.set_tensor(inp["index"], x[None].astype(inp["dtype"]))
        interp.invoke()
        boxes, classes, scores, count = (
            np.squeeze(interp.get_tensor(o["index"])) for o in outs[:4]
        )
        for k in range(int(count)):
            y1, x1, y2, x2 = (float(v) for v in boxes[k])
            results.append({
                "image_id": img["id"], "category_id": int(classes[k]) + 1,
                "bbox": [x1 * w, y1 * h, (x2 - x1) * w, (y2 - y1) * h], "score": float(scores[k]),
            })  # fmt: skip
    return results


def pycocotools_ap(ann_file: Path, results: list[dict]) -> dict[str, float]:
    """pycocotools' bbox AP / AP50 of ``results`` on ``ann_file`` (the reference scorer)."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        dt = gt.loadRes(results) if results else COCO()
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"AP": float(ev.stats[0]), "AP50": float(ev.stats[1])}
