"""Detect objects: ``python detect.py checkpoint=<.pt> source=<image|folder|video|camera index>``.

Examples::

    python detect.py checkpoint=outputs/train/<run>/best.pt source=photo.jpg
    python detect.py model=outputs/export/<run>/best.onnx source=images/   # torch-free runtime
    python detect.py checkpoint=best.pt source=clip.mp4 score_thresh=0.5 classes=[dog,person]
    python detect.py checkpoint=best.pt source=0 max_frames=300           # camera 0

Writes annotated images (or ``<video>.mp4``) and ``detections.json`` (COCO results with file
names) into the Hydra run directory and prints one summary line per image.
"""

from detector.cli import detect_main

if __name__ == "__main__":
    detect_main()
